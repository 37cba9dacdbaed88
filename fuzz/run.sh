#!/usr/bin/env bash
# Builds the fuzz targets with cargo-fuzz on the stable toolchain and runs
# each one for a bounded time. See docs/fuzzing.md.
#
#   fuzz/run.sh                    every target, FUZZ_SECONDS (60) each
#   fuzz/run.sh ini template       only these targets
#   fuzz/run.sh --build-only       build every target, run nothing (CI)
#   fuzz/run.sh --regressions      replay fuzz/regressions/TARGET/* once
#                                  each: exit 0 only when none fails
#
# Environment:
#   FUZZ_SECONDS    seconds per target (default 60)
#   FUZZ_MAX_LEN    largest input in bytes (default 4096)
#   FUZZ_TIMEOUT    seconds one input may take before it counts as a hang
#                   (default 5)
#   FUZZ_SANITIZER  none (default; works on stable) or address (needs
#                   RUSTC_BOOTSTRAP=1, which this script then sets)
#   FUZZ_KEEP_GOING 1: do not stop at the first crash, hang or OOM
#                   (libFuzzer's -fork=1 -ignore_crashes ...), to find
#                   more than one problem per target in one run
#
# The committed corpus (fuzz/corpus/TARGET) is only read: what the fuzzer
# finds goes to a temporary directory removed at the end. Crashes and hangs
# are written to fuzz/artifacts/TARGET/ and the script exits non-zero; a
# log per target is kept in fuzz/artifacts/TARGET.log.
set -euo pipefail
cd "$(dirname "$0")"

ALL_TARGETS=(ini environment component template)
CARGO_FUZZ_VERSION="0.13"

build_only=false
regressions=false
targets=()
for arg in "$@"; do
    case "$arg" in
        --build-only) build_only=true ;;
        --regressions) regressions=true ;;
        -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) targets+=("$arg") ;;
    esac
done
if [ ${#targets[@]} -eq 0 ]; then
    targets=("${ALL_TARGETS[@]}")
fi

seconds="${FUZZ_SECONDS:-60}"
max_len="${FUZZ_MAX_LEN:-4096}"
timeout="${FUZZ_TIMEOUT:-5}"
sanitizer="${FUZZ_SANITIZER:-none}"

# cargo-fuzz from crates.io, once per machine. With `--sanitizer none` it
# passes no -Z flag to rustc, so the stable toolchain builds the targets
# (coverage instrumentation is -Cpasses=sancov-module and -Cllvm-args, both
# stable); only a real sanitizer needs RUSTC_BOOTSTRAP.
if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked --version "^$CARGO_FUZZ_VERSION"
fi
if [ "$sanitizer" != none ]; then
    export RUSTC_BOOTSTRAP=1
fi
fuzz=(cargo fuzz)
build_flags=(--sanitizer "$sanitizer")

if $build_only; then
    if [ $# -eq 1 ]; then
        # Every target in one cargo build.
        "${fuzz[@]}" build "${build_flags[@]}"
    else
        for target in "${targets[@]}"; do
            "${fuzz[@]}" build "${build_flags[@]}" "$target"
        done
    fi
    exit 0
fi

# Every input that once crashed, hung or ran a target out of memory, run
# once: an open bug's inputs fail until it is fixed, a fixed one's guard
# against its return (fuzz/regressions/README.md, docs/fuzzing.md).
if $regressions; then
    failed=()
    for target in "${targets[@]}"; do
        [ -d "regressions/$target" ] || continue
        "${fuzz[@]}" build "${build_flags[@]}" "$target"
        binary="target/$(rustc -vV | sed -n 's/^host: //p')/release/$target"
        for input in "regressions/$target"/*; do
            [ "$(basename "$input")" = README.md ] && continue
            if "$binary" -timeout="$timeout" -rss_limit_mb=2048 "$input" >"$input.log.tmp" 2>&1; then
                echo "ok      $input"
            else
                echo "FAILED  $input:"
                awk '/panicked at/ { print; getline; print } /ERROR: libFuzzer|^SUMMARY/' \
                    "$input.log.tmp" | sed 's/^/    /'
                failed+=("$input")
            fi
            rm -f "$input.log.tmp"
        done
    done
    if [ ${#failed[@]} -ne 0 ]; then
        echo "${#failed[@]} regression input(s) still fail" >&2
        exit 1
    fi
    exit 0
fi

keep_going=()
if [ "${FUZZ_KEEP_GOING:-0}" = 1 ]; then
    keep_going=(-fork=1 -ignore_crashes=1 -ignore_timeouts=1 -ignore_ooms=1)
fi

work="$(mktemp -d "${TMPDIR:-/tmp}/tack-fuzz.XXXXXX")"
trap 'rm -rf "$work"' EXIT
mkdir -p artifacts

failed=()
summary=()
for target in "${targets[@]}"; do
    "${fuzz[@]}" build "${build_flags[@]}" "$target"
    mkdir -p "$work/$target"
    log="artifacts/$target.log"
    echo "== fuzzing $target for ${seconds}s (log: fuzz/$log)"
    # New inputs go to the first corpus directory only: the temporary one.
    # Anything found is written to artifacts/TARGET/ (crash-*, timeout-*,
    # oom-*); in keep-going mode libFuzzer exits 0 even then, so count them.
    found_before="$(find "artifacts/$target" -type f 2>/dev/null | wc -l)"
    started="$(date +%s)"
    status=0
    "${fuzz[@]}" run "${build_flags[@]}" "$target" "$work/$target" "corpus/$target" -- \
        -max_total_time="$seconds" \
        -timeout="$timeout" \
        -max_len="$max_len" \
        -print_final_stats=1 \
        ${keep_going[@]+"${keep_going[@]}"} \
        >"$log" 2>&1 || status=$?
    elapsed=$(($(date +%s) - started))
    found=$(($(find "artifacts/$target" -type f 2>/dev/null | wc -l) - found_before))
    runs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)"
    if [ -z "$runs" ]; then # fork mode prints no final stats
        runs="$(grep -oE '^#[0-9]+' "$log" | tail -1 | tr -d '#' || true)"
    fi
    cov="$(grep -oE 'cov: [0-9]+ ft: [0-9]+ corp: [0-9]+(/[0-9]+[a-zA-Z]*)?' "$log" | tail -1 || true)"
    line="$target: ${runs:-?} runs in ${elapsed}s, $cov, exit $status, $found new artifact(s)"
    if [ "$status" -ne 0 ] || [ "$found" -gt 0 ]; then
        failed+=("$target")
        line="$line -- FAILED, see fuzz/$log and fuzz/artifacts/$target/"
        awk '/panicked at/ { print; getline; print } /ERROR: libFuzzer|^SUMMARY|Test unit written/' "$log" | sort -u
    fi
    echo "$line"
    summary+=("$line")
done

echo
echo "== summary"
printf '%s\n' "${summary[@]}"
if [ ${#failed[@]} -ne 0 ]; then
    echo "failed: ${failed[*]}" >&2
    exit 1
fi
