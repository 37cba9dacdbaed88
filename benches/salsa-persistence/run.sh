#!/usr/bin/env bash
# salsa's persisted database vs. recomputing tack's configure phase at 1k,
# 10k and 100k files. Prints a markdown table; docs/salsa-persistence.md
# explains it. Usage: bash benches/salsa-persistence/run.sh
#
# RUNS (default 5) and RUNS_100K (default 3) set the runs per size; WORK
# (default /dev/shm/salsa-persistence) is where deployments and saved
# databases go. The deployments are benches/generate's, the same that
# `cargo bench --bench deploy -- --emit-tack DIR N 10` writes.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
main="$(cd "$here/../.." && pwd)"
export CARGO_TARGET_DIR="$main/target/salsa-persistence"
work="${WORK:-/dev/shm/salsa-persistence}"
runs="${RUNS:-5}"
runs_100k="${RUNS_100K:-3}"

cargo build --release --quiet --manifest-path "$here/Cargo.toml"
bench="$CARGO_TARGET_DIR/release/salsa-persistence-bench"

mkdir -p "$work"
for components in 100 1000 10000; do
    dir="$work/tack-$components"
    if [ ! -e "$dir/.complete" ]; then
        rm -rf "$dir"
        "$bench" --generate "$dir" "$components"
        touch "$dir/.complete"
    fi
done

echo "salsa $(grep -A1 '^name = "salsa"$' "$here/Cargo.lock" | sed -n 's/^version = "\(.*\)"/\1/p'), $(nproc) cores, $(uname -m), deployments and saved databases in $work"
echo
"$bench" --header
"$bench" --measure "$work/tack-100" "$runs" "$work/state-100.json"
"$bench" --measure "$work/tack-1000" "$runs" "$work/state-1000.json"
"$bench" --measure "$work/tack-10000" "$runs_100k" "$work/state-10000.json"
echo
"$bench" --breakdown "$work/tack-1000" "$work/state-1000.json"
"$bench" --breakdown "$work/tack-10000" "$work/state-10000.json"
echo
echo "Without the warm-up after load (1k files):"
RUST_BACKTRACE=0 "$bench" --no-warm-up "$work/tack-100" "$work/state-100.json" 2>&1 \
    | grep -v -e '^note: run with' -e '^$'
