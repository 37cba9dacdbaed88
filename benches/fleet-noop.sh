#!/usr/bin/env bash
# A no-op `tack deploy` over ssh to 2 and to 20 hosts against the floor of
# any deploy over ssh: `ssh HOST true` to the same hosts, all at once
# (issue 13; docs/performance.md, "Many hosts over ssh: a no-op").
#
# One loopback sshd (benches/loopback-sshd.sh) serves the aliases
# host01..host20; the deployment is benches/fleet-env.sh's (a few
# components per host, cross-host provide/require both ways), each host in
# its own remote_dir. For each size: an untimed first deploy and an
# untimed no-op (the warm-up: the agent binary is in the remote cache
# after it), then RUNS rounds, each a timed no-op of tack and a timed
# parallel `ssh HOST true`, alternating which goes first. Every tack run
# has TACK_TIMINGS=1; the script prints each run, the medians, the ratio
# tack / ssh, the median of each of tack's phases, and the load average
# before and after. It checks that every no-op updated nothing on every
# host.
#
# Usage: bash benches/fleet-noop.sh [RUNS] [SIZES]   # defaults: 11 "2 20"
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
runs=${1:-11}
sizes=${2:-2 20}
log() { printf '%s\n' "$*" >&2; }
fail() {
    log "$*"
    exit 1
}

# benches/loopback-sshd.sh has the aliases host01..host20.
for n in $sizes; do
    [[ $n =~ ^[0-9]+$ ]] && [ "$n" -ge 1 ] && [ "$n" -le 20 ] ||
        fail "SIZES are numbers of hosts from 1 to 20, not \`$n\`"
done

log "building tack (release)"
cargo build --release --quiet --bin tack
tack=$root/target/release/tack
revision=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
if [ -n "$(git status --porcelain --untracked-files=no 2>/dev/null)" ]; then
    revision="$revision+dirty"
fi

tmp=$(mktemp -d)
finish() {
    local code=$?
    kill "$(cat "$tmp/sshd/sshd.pid" 2>/dev/null)" 2>/dev/null || true
    if [ "$code" -eq 0 ]; then
        rm -rf "$tmp"
    else
        log "kept $tmp"
    fi
}
trap finish EXIT
trap 'exit 130' INT TERM
bash benches/loopback-sshd.sh "$tmp/sshd"
source benches/fleet-env.sh

now() { date +%s.%N; }
median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
ms() { awk -v s="$1" 'BEGIN { printf "%.0f ms", s * 1000 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }

# `ssh HOST true` to host01..hostN in parallel: the seconds until the last
# one returned.
parallel_true() {
    local n=$1 start pids=() host
    start=$(now)
    for host in $(seq -f 'host%02g' 1 "$n"); do
        ssh -F "$tmp/sshd/ssh_config" -T -- "$host" true 2>/dev/null &
        pids+=($!)
    done
    for pid in "${pids[@]}"; do wait "$pid" || fail "ssh HOST true failed for one of $n hosts"; done
    awk -v a="$start" -v b="$(now)" 'BEGIN { print b - a }'
}

# One no-op of the deployment in DIR to N hosts: prints the seconds, its
# output and TACK_TIMINGS lines in OUT.out and OUT.err.
tack_noop() {
    local dir=$1 n=$2 out=$3 start seconds
    start=$(now)
    (cd "$dir" && TACK_TIMINGS=1 "$tack" deploy fleet >"$out.out" 2>"$out.err") ||
        fail "tack deploy failed: $(tail -n 5 "$out.out" "$out.err")"
    seconds=$(awk -v a="$start" -v b="$(now)" 'BEGIN { print b - a }')
    [ "$(grep -c ' 0 updated, ' "$out.out")" -eq "$n" ] && ! grep -q '^Updating\|^Running' "$out.out" ||
        fail "the no-op did something: $(cat "$out.out")"
    echo "$seconds"
}

# The ms of PHASE in a TACK_TIMINGS output.
phase() { sed -n "s/^timing: $1: \([0-9.]*\) ms$/\1/p" "$2"; }

log "load before: $(uptime)"
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
parallel_true 2 >/dev/null # sshd's first fork, the page cache

results=() per_run=()
for n in $sizes; do
    dir=$tmp/deploy-$n
    write_tack_fleet "$dir" "$n" "$tmp/sshd" "$tmp/remote-$n"
    log "$n hosts: first deploy and a no-op (untimed)"
    (cd "$dir" && "$tack" deploy fleet >"$tmp/first-$n.out" 2>&1) ||
        fail "the first deploy failed: $(tail -n 20 "$tmp/first-$n.out")"
    tack_noop "$dir" "$n" "$tmp/warm-$n" >/dev/null
    tack_times=() ssh_times=() connect=() configure=() send=() deploy=()
    for i in $(seq "$runs"); do
        if [ $((i % 2)) -eq 1 ]; then order=(tack ssh); else order=(ssh tack); fi
        for what in "${order[@]}"; do
            if [ "$what" = tack ]; then
                tack_times+=("$(tack_noop "$dir" "$n" "$tmp/noop-$n-$i")")
                connect+=("$(phase connect "$tmp/noop-$n-$i.err")")
                configure+=("$(phase configure "$tmp/noop-$n-$i.err")")
                send+=("$(phase 'send plans and lock' "$tmp/noop-$n-$i.err")")
                deploy+=("$(phase deploy "$tmp/noop-$n-$i.err")")
            else
                ssh_times+=("$(parallel_true "$n")")
            fi
        done
        log "  run $i: tack $(ms "${tack_times[-1]}"), ssh HOST true $(ms "${ssh_times[-1]}")" \
            "(connect ${connect[-1]} ms, configure ${configure[-1]} ms, send plans and lock ${send[-1]} ms, deploy ${deploy[-1]} ms)"
    done
    t=$(median "${tack_times[@]}") s=$(median "${ssh_times[@]}")
    results+=("$(printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s |' "$n" "$runs" \
        "$(ms "$t")" "$(ms "$s")" "$(ratio "$t" "$s")" \
        "$(median "${connect[@]}")" "$(median "${configure[@]}")" \
        "$(median "${send[@]}")" "$(median "${deploy[@]}")")")
    per_run+=("$n hosts, tack (ms): $(printf '%s\n' "${tack_times[@]}" | awk '{ printf "%.0f ", $1 * 1000 }')")
    per_run+=("$n hosts, ssh (ms):  $(printf '%s\n' "${ssh_times[@]}" | awk '{ printf "%.0f ", $1 * 1000 }')")
    per_run+=("$n hosts, tack / ssh: $(for i in $(seq 0 $((runs - 1))); do printf '%s ' "$(ratio "${tack_times[i]}" "${ssh_times[i]}")"; done)")
done

log "load after: $(uptime)"
load_after=$(cut -d' ' -f1-3 /proc/loadavg)

cat <<EOF

## A no-op over ssh: tack $revision, medians of $runs runs, $(nproc) cores

Load average (1, 5, 15 min) before: $load_before; after: $load_after.
tack's phases (TACK_TIMINGS=1) in ms.

| hosts | runs | tack no-op | ssh HOST true, parallel | tack / ssh | tack: connect | tack: configure | tack: send plans and lock | tack: deploy |
|---:|---:|---:|---:|---:|---:|---:|---:|---:|
EOF
printf '%s\n' "${results[@]}"
printf '\nPer run, in order:\n\n'
printf '    %s\n' "${per_run[@]}"
