#!/usr/bin/env bash
# The floor for a deploy over ssh (issue 13): the time of `ssh HOST true`
# to 2 and to 20 host aliases of one loopback sshd, all at once, as the
# median of RUNS runs of each. A no-op `tack deploy` to the same hosts is
# compared with it (docs/performance.md, "ssh baseline").
# Usage: benches/ssh-baseline.sh [RUNS]
set -euo pipefail
cd "$(dirname "$0")/.."
runs="${1:-11}"
dir="$(mktemp -d)"
stop() { kill "$(cat "$dir/sshd.pid")" 2>/dev/null || true; rm -rf "$dir"; }
trap stop EXIT
bash benches/loopback-sshd.sh "$dir"
now() { date +%s.%N; }
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR] = $1} END {print a[int((NR + 1) / 2)]}'; }
# `ssh HOST true` to each of the first N aliases in parallel; the seconds
# until the last one returns.
parallel_true() {
  local n=$1 start pids=()
  start=$(now)
  for host in $(seq -f 'host%02g' 1 "$n"); do
    # stderr: the login shell of the remote user may talk there.
    ssh -F "$dir/ssh_config" -T -- "$host" true 2>/dev/null & pids+=($!)
  done
  for pid in "${pids[@]}"; do wait "$pid"; done
  awk "BEGIN {print $(now) - $start}"
}
parallel_true 2 >/dev/null  # warm up: sshd's first fork, the page cache
for n in 2 20; do
  times=()
  for _ in $(seq "$runs"); do times+=("$(parallel_true "$n")"); done
  printf 'ssh HOST true to %2d hosts in parallel: median %.3f s over %d runs (min %.3f, max %.3f)\n' \
    "$n" "$(median "${times[@]}")" "$runs" \
    "$(printf '%s\n' "${times[@]}" | sort -g | head -1)" \
    "$(printf '%s\n' "${times[@]}" | sort -g | tail -1)"
done
