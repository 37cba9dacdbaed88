#!/usr/bin/env bash
# The seed's tutorial (tick under supervisord, installed by buildout) with
# batou 2.7.1 and with tack, side by side in one run: after an untimed first
# deploy of each (from PyPI), RUNS times each, alternating the two tools:
#
#   (a) a no-op redeploy;
#   (b) a new `priority` for tick, a value never deployed before: buildout
#       rewrites supervisord.conf and supervisord reloads. Both tools must
#       apply it (tick's section of supervisord.conf has the new priority
#       afterwards), and tack must return with tick RUNNING (batou does not
#       wait for it).
#
# It prints every run, the medians, the ratios batou / tack, how tack's new
# priority splits (buildout, capture, reload, wait for RUNNING, the rest)
# and what batou's buildout and reload took, and the load average before
# and after. Usage:
#
#   bash benches/batou/tutorial.sh [RUNS]      # RUNS defaults to 5
#
# tack deploys a copy of examples/tutorial-component; batou a copy of
# benches/batou/tutorial (the seed's Python components, the same pinned
# buildout, and tick.sh from the example), each on its own free port in a
# temp dir that is removed at the end (kept, with its logs, on failure).
# batou 2.7.1 goes into a venv under target/batou/venv, as in
# benches/batou/compare.sh. Every run is timed with benches/batou/treetime.py,
# from the start until the last process of its session exited. Every
# supervisord started here is shut down on exit.
set -euo pipefail

cd "$(dirname "$0")/../.."
root=$PWD
runs=${1:-5}
log() { printf '%s\n' "$*" >&2; }
fail() {
    log "$*"
    exit 1
}

# batou 2.7.1 in target/batou/venv.
source "$root/benches/batou/venv.sh"

log "building tack (release)"
cargo build --release --quiet --bin tack
tack=$root/target/release/tack
revision=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
if [ -n "$(git status --porcelain --untracked-files=no 2>/dev/null)" ]; then
    revision="$revision+dirty"
fi

tmp=$(mktemp -d)
tackdir=$tmp/tack
batoudir=$tmp/batou
logs=$tmp/logs
mkdir -p "$logs"

# Shuts down each supervisord this script started: politely through
# supervisorctl, then by its pidfile if it is still there.
stop_supervisors() {
    local dir pid
    for dir in "$tackdir" "$batoudir"; do
        if [ -x "$dir/work/supervisor/bin/supervisorctl" ]; then
            "$dir/work/supervisor/bin/supervisorctl" shutdown >/dev/null 2>&1 || true
        fi
        pid=$(cat "$dir/work/supervisor/var/supervisord.pid" 2>/dev/null || true)
        for _ in 1 2 3 4 5 6 7 8 9 10; do
            grep -q supervisord "/proc/$pid/cmdline" 2>/dev/null || break
            sleep 0.5
        done
        if [ -n "$pid" ] && grep -q supervisord "/proc/$pid/cmdline" 2>/dev/null; then
            kill "$pid" 2>/dev/null || true
        fi
    done
}
finish() {
    local code=$?
    stop_supervisors
    if [ "$code" -eq 0 ]; then
        rm -rf "$tmp"
    else
        log "kept $tmp (logs in $logs)"
    fi
}
trap finish EXIT
trap 'exit 130' INT TERM

read -r tack_port batou_port < <(python3 -c '
import socket
a, b = socket.socket(), socket.socket()
a.bind(("127.0.0.1", 0)); b.bind(("127.0.0.1", 0))
print(a.getsockname()[1], b.getsockname()[1])')

cp -r examples/tutorial-component "$tackdir"
rm -rf "$tackdir/work" "$tackdir/.tack"
printf '\n[component:supervisor]\nport = %s\n' "$tack_port" >>"$tackdir/environments/dev.cfg"

cp -r benches/batou/tutorial "$batoudir"
cp examples/tutorial-component/components/tick/tick.sh "$batoudir/components/tick/"
printf '\n[component:supervisor]\nport = %s\n' "$batou_port" >>"$batoudir/environments/dev.cfg"
# batou's entry point wants APPENV_BASEDIR, as its own ./batou wrapper sets.
cat >"$batoudir/batou" <<EOF
#!/bin/sh
export APPENV_BASEDIR="\$(cd "\$(dirname "\$0")" && pwd)"
exec "$venv/bin/batou" "\$@"
EOF
chmod +x "$batoudir/batou"
# migrate moves environments/dev.cfg to environments/dev/environment.cfg.
(cd "$batoudir" && ./batou migrate >"$logs/batou-migrate.log" 2>&1)

# timed NAME TOOL [ARGS...]: one timed deploy, its output in logs/NAME.out
# and logs/NAME.err; prints the seconds.
timed() {
    local name=$1 tool=$2 cmd
    shift 2
    if [ "$tool" = batou ]; then
        cmd=(./batou deploy dev)
    else
        cmd=("$tack" local dev -C . "$@")
    fi
    # Only the new priority's runs print where tack's time goes.
    local timings=
    case $name in tack-new-*) timings=1 ;; esac
    sync
    if ! (cd "$tmp/$tool" && TACK_TIMINGS=$timings python3 "$root/benches/batou/treetime.py" \
        "$logs/$name.out" "$logs/$name.err" "${cmd[@]}"); then
        log "$name failed; the end of its output:"
        tail -n 30 "$logs/$name.out" "$logs/$name.err" >&2
        exit 1
    fi
}

# The priority in tick's section of the supervisord.conf that buildout wrote.
conf_priority() {
    awk '/^\[program:tick\]/ { p = 1; next } /^\[/ { p = 0 } p && $1 == "priority" { print $3 }' \
        "$tmp/$1/work/supervisor/parts/supervisor/supervisord.conf"
}

set_priority() { # TOOL OLD NEW
    local file pattern
    if [ "$1" = batou ]; then
        file=$batoudir/components/tick/component.py
        pattern="s/priority = Attribute(int, $2)\$/priority = Attribute(int, $3)/"
    else
        file=$tackdir/components/tick/component.cfg
        pattern="s/^priority = $2\$/priority = $3/"
    fi
    sed -i "$pattern" "$file"
    grep -q "$3" "$file" || fail "could not set tick's priority to $3 in $file"
}

log "load before: $(uptime)"
load_before=$(cut -d' ' -f1-3 /proc/loadavg)

log "first deploys (untimed; buildout and supervisor come from PyPI)"
for tool in tack batou; do
    timed "$tool-first" "$tool" >/dev/null
    timed "$tool-second" "$tool" >/dev/null
done
for tool in tack batou; do
    [ "$(conf_priority "$tool")" = 10 ] || fail "$tool's first deploy did not configure tick"
done

# The figures of one tack run with a new priority, from its JSON report and
# its TACK_TIMINGS lines: "BUILDOUT CAPTURE RELOAD WAIT" in seconds, where
# BUILDOUT is the buildout node without its capture.
tack_split() {
    python3 - "$logs/$1.out" "$logs/$1.err" <<'PY'
import json
import re
import sys

report = json.load(open(sys.argv[1]))
hosts = report["hosts"] if isinstance(report, dict) and "hosts" in report else report
nodes = {node["display"]: node for host in hosts for node in host["nodes"]}
buildout = nodes.get("Supervisor > Buildout")
if buildout is None or buildout["outcome"] != "updated":
    sys.exit("buildout did not run: " + repr(buildout and buildout["outcome"]))
timings = {}
for line in open(sys.argv[2]):
    found = re.match(r"timing: (.*): ([0-9.]+) ms$", line.strip())
    if found:
        timings[found.group(1)] = float(found.group(2)) / 1000
try:
    capture = timings["capture Supervisor > Buildout"]
    reload = timings["start or reload Supervisor > Service(supervisord)"]
    wait = timings["wait for RUNNING Supervisor > Service(supervisord)"]
except KeyError as missing:
    sys.exit(f"no TACK_TIMINGS line for {missing} in {sys.argv[2]}")
print(f"{buildout['seconds'] - capture:.4f} {capture:.4f} {reload:.4f} {wait:.4f}")
PY
}

# What batou reported for its buildout's and supervisor's own update, in
# seconds: "BUILDOUT SUPERVISOR".
batou_split() {
    python3 - "$logs/$1.out" "$logs/$1.err" <<'PY'
import re
import sys

text = open(sys.argv[1]).read() + open(sys.argv[2]).read()

# batou prints a component's times only when its verify or update took at
# least 1 s or all of it at least 10 s: a missing update took under 1 s.
def update(component):
    found = re.search(re.escape(component) + r" \[total=[^,]*, verify=[^,]*, update=(?:(\d+)m)?([0-9.]+)s", text)
    if not found:
        return "-"
    return f"{int(found.group(1) or 0) * 60 + float(found.group(2)):.4f}"

print(update("localhost: Supervisor > Buildout"), update("localhost: Supervisor"))
PY
}

tack_noop=() batou_noop=() tack_new=() batou_new=()
t_buildout=() t_capture=() t_reload=() t_wait=() t_rest=() b_buildout=() b_reload=()
# Seconds as ms or s; "-" (a time batou did not print) as "< 1 s".
ms() {
    if [ "$1" = - ]; then
        printf '< 1 s'
        return
    fi
    awk -v s="$1" 'BEGIN { printf (s < 0.1 ? "%.1f ms" : (s < 1 ? "%.0f ms" : "%.2f s")), (s < 1 ? s * 1000 : s) }'
}

log "measuring, $runs runs of each, alternating tack and batou"
priority=10
for i in $(seq "$runs"); do
    # Alternate which tool goes first, so neither always follows the other.
    if [ $((i % 2)) -eq 1 ]; then order=(tack batou); else order=(batou tack); fi
    old=$priority
    priority=$((priority + 1))
    for tool in "${order[@]}"; do
        seconds=$(timed "$tool-noop-$i" "$tool")
        if [ "$tool" = tack ]; then
            grep -q ' 0 updated,' "$logs/tack-noop-$i.out" ||
                fail "tack's no-op $i updated something: $(tail -n 1 "$logs/tack-noop-$i.out")"
            tack_noop+=("$seconds")
        else
            ! grep -q '🚀' "$logs/batou-noop-$i.out" ||
                fail "batou's no-op $i updated something: $(grep '🚀' "$logs/batou-noop-$i.out" | head -n 3)"
            batou_noop+=("$seconds")
        fi
    done
    for tool in "${order[@]}"; do
        set_priority "$tool" "$old" "$priority"
        if [ "$tool" = tack ]; then
            seconds=$(timed "tack-new-$i" tack --format json)
            # Asked at once: tack returns only when tick is RUNNING again.
            state=$("$tackdir/work/supervisor/bin/supervisorctl" status tick 2>&1 || true)
            case $state in
            *RUNNING*) ;;
            *) fail "tick is not RUNNING when tack returned: $state" ;;
            esac
            tack_new+=("$seconds")
            read -r b c r w < <(tack_split "tack-new-$i") || fail "tack-new-$i: no split (above)"
            t_buildout+=("$b") t_capture+=("$c") t_reload+=("$r") t_wait+=("$w")
            t_rest+=("$(awk -v a="$seconds" -v b="$b" -v c="$c" -v r="$r" -v w="$w" 'BEGIN { printf "%.4f", a - b - c - r - w }')")
        else
            seconds=$(timed "batou-new-$i" batou)
            batou_new+=("$seconds")
            read -r b r < <(batou_split "batou-new-$i")
            b_buildout+=("$b") b_reload+=("$r")
        fi
        got=$(conf_priority "$tool")
        [ "$got" = "$priority" ] ||
            fail "$tool did not apply priority $priority: supervisord.conf says ${got:-nothing}"
    done
    log "  run $i: no-op tack $(ms "${tack_noop[-1]}"), batou $(ms "${batou_noop[-1]}");" \
        "priority $priority: tack $(ms "${tack_new[-1]}"), batou $(ms "${batou_new[-1]}")"
done

log "load after: $(uptime)"
load_after=$(cut -d' ' -f1-3 /proc/loadavg)

# The median of the numbers given; "-" (not known) counts as less than
# any, which is what it means for batou's split (under 1 s).
median() { printf '%s\n' "$@" | sed 's/^-$/-1/' | sort -g | awk '{ v[NR] = $1 } END { m = v[int((NR + 1) / 2)]; print (m < 0 ? "-" : m) }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", a / b }'; }
ratio2() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }

cat <<EOF

## The tutorial: batou $batou_version vs tack $revision, $runs runs each, alternating, $(nproc) cores

Load average (1, 5, 15 min) before: $load_before; after: $load_after.

| run | no-op: tack | no-op: batou | new priority: tack | new priority: batou | tack: buildout | tack: capture | tack: reload | tack: wait for RUNNING | tack: rest | batou: buildout | batou: reload |
|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|
EOF
for i in $(seq 0 $((runs - 1))); do
    printf '| %s (priority %s) | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' \
        "$((i + 1))" "$((11 + i))" "$(ms "${tack_noop[i]}")" "$(ms "${batou_noop[i]}")" \
        "$(ms "${tack_new[i]}")" "$(ms "${batou_new[i]}")" "$(ms "${t_buildout[i]}")" \
        "$(ms "${t_capture[i]}")" "$(ms "${t_reload[i]}")" "$(ms "${t_wait[i]}")" \
        "$(ms "${t_rest[i]}")" "$(ms "${b_buildout[i]}")" "$(ms "${b_reload[i]}")"
done
tn=$(median "${tack_noop[@]}") bn=$(median "${batou_noop[@]}")
tc=$(median "${tack_new[@]}") bc=$(median "${batou_new[@]}")
printf '| **median** | **%s** | **%s** | **%s** | **%s** | **%s** | **%s** | **%s** | **%s** | **%s** | **%s** | **%s** |\n' \
    "$(ms "$tn")" "$(ms "$bn")" "$(ms "$tc")" "$(ms "$bc")" \
    "$(ms "$(median "${t_buildout[@]}")")" "$(ms "$(median "${t_capture[@]}")")" \
    "$(ms "$(median "${t_reload[@]}")")" "$(ms "$(median "${t_wait[@]}")")" \
    "$(ms "$(median "${t_rest[@]}")")" "$(ms "$(median "${b_buildout[@]}")")" \
    "$(ms "$(median "${b_reload[@]}")")"

cat <<EOF

batou / tack, medians: no-op **$(ratio "$bn" "$tn")x** (target: at least 100x);
new priority **$(ratio2 "$bc" "$tc")x** (target: at least 1.00x, tack no slower).
Per-run ratios, no-op: $(for i in $(seq 0 $((runs - 1))); do printf '%s ' "$(ratio "${batou_noop[i]}" "${tack_noop[i]}")"; done)
new priority: $(for i in $(seq 0 $((runs - 1))); do printf '%s ' "$(ratio2 "${batou_new[i]}" "${tack_new[i]}")"; done)
EOF
