#!/usr/bin/env bash
# Deploys the same generated deployment with batou 2.7.1 and with tack on
# this machine and prints the median wall time of a full deploy (fresh work
# dir) and a no-op redeploy for each, and their ratio.
#
#   bash benches/batou/compare.sh            # 100 components x 10 files = 1k files
#   COMPONENTS=200 FILES=5 RUNS=3 bash benches/batou/compare.sh
#
# It needs python3 (with venv) and PyPI: batou 2.7.1 goes into a venv under
# target/batou/venv. The deployments are written by the deploy bench's
# generator (`cargo bench --bench deploy -- --emit-batou DIR N M`), so both
# tools see the same components, attributes, provide/require wiring and
# templates; the script checks that both deploy byte-identical files.
#
# Timing: each run is started in a new session and timed until every
# process of that session has exited. batou's local connect method does the
# work in a child process (execnet) that can outlive the `batou` command, so
# timing only the parent would flatter it. tack is timed the same way.
set -euo pipefail

cd "$(dirname "$0")/../.."
root=$PWD
components=${COMPONENTS:-100}
files=${FILES:-10}
runs=${RUNS:-5}
out=$root/target/bench-batou
logs=$out/logs
log() { printf '%s\n' "$*" >&2; }

# batou 2.7.1 in target/batou/venv.
source "$root/benches/batou/venv.sh"

log "building tack (release) and the generator"
cargo build --release --quiet --bin tack
cargo bench --quiet --bench deploy --no-run
tack=$root/target/release/tack
# The commit the binary was built from (+dirty: the work tree had changes).
revision=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
if [ -n "$(git status --porcelain --untracked-files=no 2>/dev/null)" ]; then
    revision="$revision+dirty"
fi

# Nothing is deleted before or between timed runs: on ext4 a new file skips
# inodes freed in the last minute, which made a fresh deploy measurably
# slower after a deletion. The last run's trees and every full deploy's work
# dir go to a trash dir that is removed at the end.
trash=$out/trash.$$
mkdir -p "$trash"
for old in tack batou logs; do
    if [ -e "$out/$old" ]; then mv "$out/$old" "$trash/$old"; fi
done
mkdir -p "$logs"
cargo bench --quiet --bench deploy -- --emit-tack "$out/tack" "$components" "$files"
cargo bench --quiet --bench deploy -- --emit-batou "$out/batou" "$components" "$files"

# batou's entry point wants APPENV_BASEDIR, as its own ./batou wrapper sets.
cat >"$out/batou/batou" <<EOF
#!/bin/sh
export APPENV_BASEDIR="\$(cd "\$(dirname "\$0")" && pwd)"
exec "$venv/bin/batou" "\$@"
EOF
chmod +x "$out/batou/batou"
# migrate moves environments/dev.cfg to environments/dev/environment.cfg.
(cd "$out/batou" && ./batou migrate >"$logs/batou-migrate.log" 2>&1)

# benches/batou/treetime.py LOG LOG CMD...: runs CMD in a new session with
# its output in LOG and prints the seconds until every process of that
# session has exited.
treetime=$root/benches/batou/treetime.py

# timed NAME DIR CMD...: one timed run in DIR, its output kept in logs/.
timed() {
    local name=$1 dir=$2
    shift 2
    if ! (cd "$dir" && python3 "$treetime" "$logs/$name.log" "$logs/$name.log" "$@"); then
        log "$name failed; the end of $logs/$name.log:"
        tail -n 30 "$logs/$name.log" >&2
        exit 1
    fi
}

median() { sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

# scenario TOOL: prints "FULL NOOP", each the median of $runs runs.
scenario() {
    local tool=$1 dir=$out/$1 cmd
    if [ "$tool" = batou ]; then
        cmd=(./batou deploy dev)
    else
        cmd=("$tack" local dev -C .)
    fi
    local full=() noop=() i
    for i in $(seq "$runs"); do
        for d in work .tack; do
            if [ -e "$dir/$d" ]; then mv "$dir/$d" "$trash/$tool-$i-${d#.}"; fi
        done
        sync
        full+=("$(timed "$tool-full-$i" "$dir" "${cmd[@]}")")
        log "  $tool full deploy $i: ${full[-1]} s"
    done
    for i in $(seq "$runs"); do
        sync
        noop+=("$(timed "$tool-noop-$i" "$dir" "${cmd[@]}")")
        log "  $tool no-op $i: ${noop[-1]} s"
    done
    printf '%s %s\n' "$(printf '%s\n' "${full[@]}" | median)" \
        "$(printf '%s\n' "${noop[@]}" | median)"
}

total=$((components * files))
log "deploying $components components x $files files ($total files), $runs runs each"
read -r batou_full batou_noop < <(scenario batou)
read -r tack_full tack_noop < <(scenario tack)

# The last no-op of each tool must have changed nothing.
if ! grep -q ' 0 updated,' "$logs/tack-noop-$runs.log"; then
    log "warning: tack's no-op updated something:"
    tail -n 3 "$logs/tack-noop-$runs.log" >&2
fi
if grep -q 'Content(' "$logs/batou-noop-$runs.log"; then
    log "warning: batou's no-op changed content:"
    grep 'Content(' "$logs/batou-noop-$runs.log" | head -n 3 >&2
fi
if diff -r -x .batou-diffs "$out/batou/work" "$out/tack/work" >"$logs/work.diff"; then
    same="byte-identical"
else
    same="DIFFERENT (see $logs/work.diff)"
fi

rm -rf "$trash"
sync

ms() { awk -v s="$1" 'BEGIN { printf (s < 0.1 ? "%.1f ms" : "%.0f ms"), s * 1000 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", a / b }'; }

cat <<EOF

## batou $batou_version vs tack $revision: $total files ($components components x $files files), median of $runs runs, $(nproc) cores

| scenario | batou | tack | batou / tack |
|---|---:|---:|---:|
| full deploy (fresh work dir) | $(ms "$batou_full") | $(ms "$tack_full") | $(ratio "$batou_full" "$tack_full") |
| no-op redeploy | $(ms "$batou_noop") | $(ms "$tack_noop") | $(ratio "$batou_noop" "$tack_noop") |

Deployed files: $same. Logs: ${logs#"$root"/}/.
EOF
