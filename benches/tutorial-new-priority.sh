#!/usr/bin/env bash
# The tutorial's own change: tick gets a priority never deployed before, so
# buildout runs and its outputs are captured into a warm step cache (nearly
# every blob already there). Prints, per run, the wall time of the deploy,
# the time of the `Supervisor > Buildout` node and, for a tack that reports
# it (TACK_TIMINGS), the time of the capture inside that node.
#
# With a second tack binary (an older build, say), both run side by side in
# one run, alternating, each on its own copy of the tutorial and port, so
# that the machine's load falls on both alike.
#
# Usage: benches/tutorial-new-priority.sh [RUNS] [OTHER_TACK]
# Needs network access to PyPI for the first deploy of each copy.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet
runs="${1:-5}"
declare -a names=(this) bins=("$PWD/target/release/tack")
if [ -n "${2:-}" ]; then names+=(other); bins+=("$(realpath "$2")"); fi
base="$(mktemp -d)"
now() { date +%s.%N; }
stop() {
  for name in "${names[@]}"; do
    local dir="$base/$name" pid
    pid=$(cat "$dir/work/supervisor/var/supervisord.pid" 2>/dev/null || true)
    "$dir/work/supervisor/bin/supervisorctl" shutdown >/dev/null 2>&1 || true
    for _ in $(seq 100); do [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  done
}
trap stop EXIT
port=19491
for i in "${!names[@]}"; do
  dir="$base/${names[$i]}"
  cp -r examples/tutorial-component "$dir" && rm -rf "$dir/work" "$dir/.tack"
  printf '\n[component:supervisor]\nport = %s\n' "$((port + i))" >> "$dir/environments/dev.cfg"
  "${bins[$i]}" local dev -C "$dir" >/dev/null
done
# One deploy: prints "wall node capture" in seconds (capture empty if the
# binary does not report it).
measure() {
  local bin="$1" dir="$2" start end
  start=$(now)
  TACK_TIMINGS=1 "$bin" local dev -C "$dir" --format json >"$dir.json" 2>"$dir.err"
  end=$(now)
  python3 - "$dir.json" "$dir.err" "$start" "$end" <<'EOF'
import json, re, sys
report = json.load(open(sys.argv[1]))
node = [n for h in report["hosts"] for n in h["nodes"] if n["display"] == "Supervisor > Buildout"][0]
if node["outcome"] not in ("updated", "restored"):
    sys.exit(f"the buildout did not run: {node}")
capture = re.findall(r"timing: capture Supervisor > Buildout: ([0-9.]+) ms", open(sys.argv[2]).read())
print(float(sys.argv[4]) - float(sys.argv[3]), node["seconds"], float(capture[0]) / 1000 if capture else "")
EOF
}
declare -A wall node capture
for run in $(seq "$runs"); do
  priority=$((100 + run))
  line="run $run (priority $priority):"
  for i in "${!names[@]}"; do
    dir="$base/${names[$i]}"
    sed -i "s/^priority = .*/priority = $priority/" "$dir/components/tick/component.cfg"
    read -r w n c < <(measure "${bins[$i]}" "$dir")
    wall[${names[$i]}]+="$w " node[${names[$i]}]+="$n " capture[${names[$i]}]+="$c "
    line+=" ${names[$i]} wall $w s, buildout node $n s${c:+, capture $c s};"
  done
  echo "$line"
done
median() { printf '%s\n' $1 | sort -g | awk '{a[NR]=$1} END {if (NR) print a[int((NR+1)/2)]}'; }
for name in "${names[@]}"; do
  w=$(median "${wall[$name]}") n=$(median "${node[$name]}") c=$(median "${capture[$name]:-}")
  echo "median $name: wall $w s, buildout node $n s${c:+, capture $c s ($(awk "BEGIN {printf \"%.1f\", 100 * $c / ($n - $c)}") % of the buildout run)}"
done
if [ "${#names[@]}" = 2 ]; then
  echo "wall other/this: $(awk "BEGIN {printf \"%.2f\", $(median "${wall[other]}") / $(median "${wall[this]}")}"), buildout node other/this: $(awk "BEGIN {printf \"%.2f\", $(median "${node[other]}") / $(median "${node[this]}")}")"
fi
