#!/usr/bin/env bash
# The tutorial deployed in a fresh checkout, with a cold step cache and
# with a warm one (the cache of an earlier deploy restored, as CI does),
# at the same path, which a buildout needs (its scripts embed paths).
# Prints each run and the medians; needs network access to PyPI for the
# cold runs. Usage: benches/tutorial-cache.sh [RUNS]
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet
tack="$PWD/target/release/tack"
runs="${1:-3}"
dir="$(mktemp -d)/tutorial"
port=19391
now() { date +%s.%N; }
stop() {
  local pid
  pid=$(cat "$dir/work/supervisor/var/supervisord.pid" 2>/dev/null || true)
  "$dir/work/supervisor/bin/supervisorctl" shutdown >/dev/null 2>&1 || true
  # Wait until it is gone and its port is free again.
  for _ in $(seq 100); do [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
}
trap stop EXIT
cold=() warm=()
for _ in $(seq "$runs"); do
  rm -rf "$dir" && cp -r examples/tutorial-component "$dir" && rm -rf "$dir/work" "$dir/.tack"
  printf '\n[component:supervisor]\nport = %s\n' "$port" >> "$dir/environments/dev.cfg"
  start=$(now); "$tack" local dev -C "$dir" >/dev/null; cold+=("$(awk "BEGIN {print $(now) - $start}")")
  stop
  # A fresh checkout at the same path with only the cache restored.
  mv "$dir/.tack/cache" "$dir.cache" && rm -rf "$dir/work" "$dir/.tack"
  mkdir -p "$dir/.tack" && mv "$dir.cache" "$dir/.tack/cache"
  start=$(now); "$tack" local dev -C "$dir" >"$dir.out"; warm+=("$(awk "BEGIN {print $(now) - $start}")")
  grep -q "Restored Supervisor > Buildout (from cache)" "$dir.out" || { echo "warm run did not restore:"; cat "$dir.out"; exit 1; }
  stop
  echo "cold ${cold[-1]} s, warm ${warm[-1]} s"
done
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
c=$(median "${cold[@]}") w=$(median "${warm[@]}")
echo "median cold $c s, warm $w s, cold/warm $(awk "BEGIN {printf \"%.1f\", $c / $w}")"
