#!/usr/bin/env bash
# The floor for a deploy over ssh (issue 13): the time of `ssh HOST true`
# to 2 and to 20 host aliases of one loopback sshd, all at once, as the
# median of RUNS runs of each. A no-op `tack deploy` to the same hosts is
# compared with it (docs/performance.md, "ssh baseline"). Beside it, the
# same with the release build's `tack ssh-ping HOST` (its binary already
# in the host's cache): ssh plus the bootstrap, the agent's start and one
# ping, without any deploy.
# Usage: benches/ssh-baseline.sh [RUNS]
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet
tack="$PWD/target/release/tack"
runs="${1:-11}"
dir="$(mktemp -d)"
stop() { kill "$(cat "$dir/sshd.pid")" 2>/dev/null || true; rm -rf "$dir"; }
trap stop EXIT
bash benches/loopback-sshd.sh "$dir"
now() { date +%s.%N; }
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR] = $1} END {print a[int((NR + 1) / 2)]}'; }
# COMMAND HOST for each of the first N aliases in parallel; the seconds
# until the last one returns.
parallel() {
  local n=$1 start pids=()
  shift
  start=$(now)
  for host in $(seq -f 'host%02g' 1 "$n"); do
    # stderr: the login shell of the remote user may talk there.
    "$@" "$host" >/dev/null 2>&1 & pids+=($!)
  done
  for pid in "${pids[@]}"; do wait "$pid"; done
  awk "BEGIN {print $(now) - $start}"
}
ssh_true() { ssh -F "$dir/ssh_config" -T -- "$1" true; }
ssh_ping() { "$tack" ssh-ping -F "$dir/ssh_config" "$1"; }
# Warm up: sshd's first fork, the page cache, and tack's binary uploaded.
parallel 2 ssh_true >/dev/null
ssh_ping host01 >/dev/null
for what in ssh_true ssh_ping; do
  label="ssh HOST true"
  [ "$what" = ssh_true ] || label="tack ssh-ping HOST"
  for n in 2 20; do
    times=()
    for _ in $(seq "$runs"); do times+=("$(parallel "$n" "$what")"); done
    printf '%s to %2d hosts in parallel: median %.3f s over %d runs (min %.3f, max %.3f)\n' \
      "$label" "$n" "$(median "${times[@]}")" "$runs" \
      "$(printf '%s\n' "${times[@]}" | sort -g | head -1)" \
      "$(printf '%s\n' "${times[@]}" | sort -g | tail -1)"
  done
done
