#!/usr/bin/env bash
# The tutorial (examples/tutorial-component) on this machine, after a first
# deploy: the median wall time of a no-op, and of a new `priority` for tick
# (a value never deployed before: buildout rewrites supervisord.conf,
# supervisord reloads, tack waits until tick is RUNNING again), with how
# the latter splits into buildout, the reload and the wait for RUNNING
# (from `--format json`), and the rest (looking, configuring, recording).
# Needs python3 and PyPI for the first deploy.
# Usage: benches/tutorial-programs.sh [RUNS]
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet --bin tack
tack="$PWD/target/release/tack"
runs="${1:-5}"
dir="$(mktemp -d)/tutorial"
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
now() { date +%s.%N; }
stop() {
  "$dir/work/supervisor/bin/supervisorctl" shutdown >/dev/null 2>&1 || true
}
trap stop EXIT
cp -r examples/tutorial-component "$dir" && rm -rf "$dir/work" "$dir/.tack"
printf '\n[component:supervisor]\nport = %s\n' "$port" >> "$dir/environments/dev.cfg"
"$tack" local dev -C "$dir" >/dev/null
"$tack" local dev -C "$dir" >/dev/null
noop=() change=() buildout=() service=()
priority=10
for _ in $(seq "$runs"); do
  start=$(now); "$tack" local dev -C "$dir" >"$dir.out"; noop+=("$(awk "BEGIN {print $(now) - $start}")")
  grep -q " 0 updated" "$dir.out" || { echo "the no-op updated something:"; cat "$dir.out"; exit 1; }
  old=$priority; priority=$((priority + 1))
  sed -i "s/^priority = $old\$/priority = $priority/" "$dir/components/tick/component.cfg"
  start=$(now); "$tack" local dev -C "$dir" --format json >"$dir.json"; change+=("$(awk "BEGIN {print $(now) - $start}")")
  read -r b s < <(python3 - "$dir.json" <<'PY'
import json, sys
report = json.load(open(sys.argv[1]))
hosts = report["hosts"] if isinstance(report, dict) and "hosts" in report else report
nodes = {node["display"]: node for host in hosts for node in host["nodes"]}
def took(name):
    return nodes[name].get("seconds") or 0
print(took("Supervisor > Buildout"), took("Supervisor > Service(supervisord)"))
PY
)
  buildout+=("$b") service+=("$s")
  echo "no-op ${noop[-1]} s; priority $priority: ${change[-1]} s (buildout $b s, reload and wait $s s)"
done
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
n=$(median "${noop[@]}") c=$(median "${change[@]}") b=$(median "${buildout[@]}") s=$(median "${service[@]}")
echo "median no-op $n s; new priority $c s: buildout $b s, reload and wait for RUNNING $s s, rest $(awk "BEGIN {printf \"%.3f\", $c - $b - $s}") s"
