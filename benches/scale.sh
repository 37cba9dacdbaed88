#!/usr/bin/env bash
# Configure at scale (issue 15): generates deployments far larger than any
# real one and times `tack local dev --dry-run` on each (configure and plan,
# nothing written), beside a baseline measured in the same run: the time to
# `cat` the generated files, i.e. to read every byte tack has to read.
#
#   resources  one component of RESOURCES (100,000) [file] resources
#   chain      a provide/require chain of CHAIN (20,000) components, each
#              passing on the value it requires and deploying it in a file
#   keys       one [attributes] section of KEYS (40,000) keys
#
# Prints each run, then per case the median of RUNS runs of each and their
# ratio. A linear configure keeps the ratio flat as the sizes grow; the
# quadratic one this guards against took 100 s for 100,000 resources.
#
#   benches/scale.sh [RUNS]              every case, 3 runs each
#   RESOURCES=200000 benches/scale.sh 1  a larger size, one run
#   CASES="chain" benches/scale.sh       only these cases
#
# Not a test: nothing asserts a time. Needs python3 for the generator.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet
tack="$PWD/target/release/tack"
runs="${1:-3}"
resources="${RESOURCES:-100000}"
chain="${CHAIN:-20000}"
keys="${KEYS:-40000}"
cases="${CASES:-resources chain keys}"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

# Writes the deployment of case $1 (size $2) into directory $3.
generate() {
  python3 - "$1" "$2" "$3" <<'EOF'
import os, sys
case, size, root = sys.argv[1], int(sys.argv[2]), sys.argv[3]

def write(path, text):
    path = os.path.join(root, path)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)

if case == "resources":
    write("environments/dev.cfg", "[hosts]\nlocalhost = app\n")
    write("components/app/component.cfg", "[attributes]\ncolor = blue\n\n" + "".join(
        f"[file:f{i:06}.txt]\ncontent = {{{{ color }}}} {i}\n\n" for i in range(size)))
elif case == "chain":
    names = [f"c{i:05}" for i in range(size)]
    write("environments/dev.cfg", "[hosts]\nlocalhost = " + ", ".join(names) + "\n")
    write("components/c00000/component.cfg",
          "[attributes]\nseed = start\n\n[provide:k0]\nv = {{ seed }}\n")
    for i in range(1, size):
        write(f"components/{names[i]}/component.cfg",
              f"[require:k{i - 1}]\n\n[provide:k{i}]\nv = {{{{ k{i - 1}[0].v }}}}\n\n"
              f"[file:f.txt]\ncontent = {{{{ k{i - 1}[0].v }}}}\n")
elif case == "keys":
    write("environments/dev.cfg", "[hosts]\nlocalhost = app\n")
    write("components/app/component.cfg", "[attributes]\n" + "".join(
        f"key{i} = value {i}\n" for i in range(size)) + "\n[file:app.ini]\ncontent = {{ key0 }}\n")
else:
    sys.exit(f"unknown case {case}")
EOF
}

now() { date +%s.%N; }
since() { awk "BEGIN {printf \"%.3f\", $(now) - $1}"; }
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

for case in $cases; do
  case "$case" in
    resources) size="$resources" ;;
    chain) size="$chain" ;;
    keys) size="$keys" ;;
    *) echo "unknown case $case" >&2; exit 2 ;;
  esac
  dir="$tmp/$case"
  generate "$case" "$size" "$dir"
  files=$(find "$dir" -name '*.cfg' | wc -l)
  bytes=$(find "$dir" -name '*.cfg' -exec cat {} + | wc -c)
  echo "$case: $size ($files files, $bytes bytes)"
  cat_times=() tack_times=()
  for _ in $(seq "$runs"); do
    start=$(now); find "$dir" -name '*.cfg' -exec cat {} + >/dev/null; cat_times+=("$(since "$start")")
    start=$(now)
    if ! "$tack" local dev --dry-run -C "$dir" >"$tmp/out" 2>&1; then
      echo "tack failed on $case:"; tail -5 "$tmp/out"; exit 1
    fi
    tack_times+=("$(since "$start")")
    echo "  cat ${cat_times[-1]} s, tack --dry-run ${tack_times[-1]} s"
  done
  c=$(median "${cat_times[@]}") t=$(median "${tack_times[@]}")
  echo "  median: cat $c s, tack --dry-run $t s, ratio $(awk "BEGIN {printf \"%.0f\", $t / ($c > 0 ? $c : 0.001)}")"
done
