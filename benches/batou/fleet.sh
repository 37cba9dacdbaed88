#!/usr/bin/env bash
# A no-op deploy over ssh to 2 (and 20) hosts by batou 2.7.1 and by tack,
# side by side in one run, with the parallel `ssh HOST true` to the same
# hosts as the floor (issue 13; docs/performance.md, "Many hosts over ssh:
# a no-op").
#
# One loopback sshd (benches/loopback-sshd.sh) serves host01..host20. tack
# deploys benches/fleet-env.sh's environment; batou the same components
# written for batou (below): `connect_method = ssh`, `update_method =
# rsync`, so each host gets the deployment by execnet's rsync and runs
# batou from the venv of benches/batou/venv.sh. After an untimed first
# deploy and an untimed no-op of each tool, RUNS rounds, each a no-op of
# tack, a no-op of batou and a parallel `ssh HOST true`, in a rotating
# order. Every run is timed with benches/batou/treetime.py, until the last
# process of its session exited. The script checks that no no-op changed
# anything and prints every run, the medians and the ratios.
#
# Where this setup differs from batou on real machines (all of it in
# docs/performance.md):
#
# * All aliases are one user on one machine, and batou's
#   `target_directory` is one per environment, so every host's checkout is
#   the same directory (the first deploy's rsync of each host writes it,
#   later ones find it current). Each component keeps its work dir per host
#   (`work/COMPONENT/HOST`), as separate machines would.
# * The deployment's `./batou` and `./appenv` run the local venv's batou
#   and python directly (the remote is this machine). batou projects have
#   appenv there, which checks its venv and execs it: one Python start more
#   per call (two per host and deploy) than here, so batou's times here are
#   a lower bound.
#
# Usage: bash benches/batou/fleet.sh [RUNS] [SIZES]   # defaults: 5 "2 20"
set -euo pipefail

cd "$(dirname "$0")/../.."
root=$PWD
runs=${1:-5}
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

# batou 2.7.1 in target/batou/venv.
source "$root/benches/batou/venv.sh"
source "$root/benches/fleet-env.sh"

log "building tack (release)"
cargo build --release --quiet --bin tack
tack=$root/target/release/tack
revision=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
if [ -n "$(git status --porcelain --untracked-files=no 2>/dev/null)" ]; then
    revision="$revision+dirty"
fi

tmp=$(mktemp -d)
logs=$tmp/logs
mkdir -p "$logs"
finish() {
    local code=$?
    kill "$(cat "$tmp/sshd/sshd.pid" 2>/dev/null)" 2>/dev/null || true
    if [ "$code" -eq 0 ]; then
        rm -rf "$tmp"
    else
        log "kept $tmp (logs in $logs)"
    fi
}
trap finish EXIT
trap 'exit 130' INT TERM
bash benches/loopback-sshd.sh "$tmp/sshd"

# write_batou_fleet DIR N TARGET: benches/fleet-env.sh's components for
# batou, deployed to host01..hostN with the checkout in TARGET.
write_batou_fleet() {
    local dir=$1 hosts=$2 target=$3 i name
    mkdir -p "$dir/environments" "$dir/components"/{db,app,web,monitor}
    cp "$tmp/sshd/ssh_config" "$dir/ssh_config"
    {
        printf '[environment]\nconnect_method = ssh\nupdate_method = rsync\n'
        printf 'target_directory = %s\n\n[hosts]\n' "$target"
        for i in $(seq 1 "$hosts"); do
            name=$(printf 'host%02d' "$i")
            if [ "$i" -eq 1 ]; then
                printf '%s = db, app, web, monitor\n' "$name"
            else
                printf '%s = app, web\n' "$name"
            fi
        done
    } >"$dir/environments/fleet.cfg"

    # Each component works in work/COMPONENT/HOST: every host's checkout
    # is one directory here, unlike on separate machines.
    cat >"$dir/components/db/component.py" <<'PY'
import os

from batou import UpdateNeeded
from batou.component import Attribute, Component
from batou.lib.file import File


class Migrate(Component):
    def verify(self):
        if not os.path.exists("data/migrations.log"):
            raise UpdateNeeded()

    def update(self):
        self.cmd("mkdir -p data && cat schema.sql >> data/migrations.log")


class Db(Component):
    schema = Attribute(int, 1)

    def configure(self):
        self.workdir = os.path.join(self.workdir, self.host.name)
        self += File(
            "schema.sql",
            content="-- schema version {{component.schema}}\n"
            "create table if not exists orders (id integer primary key, item text);\n",
        )
        self += Migrate()
        self.provide("database", dict(path=self.workdir + "/data", schema=self.schema))
PY

    cat >"$dir/components/app/component.py" <<'PY'
import os

from batou.component import Attribute, Component
from batou.lib.file import File


class Check(Component):
    def verify(self):
        self.assert_file_is_current("checked.txt", ["app.ini"])

    def update(self):
        self.cmd('grep -q "schema = " app.ini && cp app.ini checked.txt')


class App(Component):
    port = Attribute(int, 8080)
    workers = Attribute(int, 4)

    def configure(self):
        self.workdir = os.path.join(self.workdir, self.host.name)
        self.database = self.require_one("database")
        self += File(
            "app.ini",
            content="[app]\nhost = {{component.host.name}}\nport = {{component.port}}\n"
            "workers = {{component.workers}}\n[database]\n"
            "path = {{component.database.path}}\nschema = {{component.database.schema}}\n",
        )
        self += File(
            "settings.json",
            content='{"host": "{{component.host.name}}", "port": {{component.port}}, '
            '"schema": {{component.database.schema}}}\n',
        )
        self += Check()
        self.provide("backend", dict(host=self.host.name, port=self.port))
PY

    cat >"$dir/components/web/component.py" <<'PY'
import os

from batou.component import Component
from batou.lib.file import Directory, File, Symlink


class Web(Component):
    def configure(self):
        self.workdir = os.path.join(self.workdir, self.host.name)
        self.backends = self.require("backend", host=self.host)
        self += Directory("logs")
        self += File(
            "upstream.conf",
            content="upstream app {\n{% for backend in component.backends %}"
            "    server 127.0.0.1:{{backend.port}};  # {{backend.host}}\n{% endfor %}}\n",
        )
        self += Symlink("current", source="upstream.conf")
PY

    cat >"$dir/components/monitor/component.py" <<'PY'
import os

from batou.component import Component
from batou.lib.file import File


class Register(Component):
    def verify(self):
        self.assert_file_is_current("registered.txt", ["targets.txt"])

    def update(self):
        self.cmd("cp targets.txt registered.txt")


class Monitor(Component):
    def configure(self):
        self.workdir = os.path.join(self.workdir, self.host.name)
        self.backends = sorted(self.require("backend"), key=lambda b: b["host"])
        self += File(
            "targets.txt",
            content="{% for backend in component.backends %}"
            "{{backend.host}}:{{backend.port}}\n{% endfor %}\n",
        )
        self += Register()
PY

    # batou's entry point wants APPENV_BASEDIR, as appenv sets it; the
    # remote side runs `./batou --help` and then `./appenv python`.
    cat >"$dir/batou" <<EOF
#!/bin/sh
export APPENV_BASEDIR="\$(cd "\$(dirname "\$0")" && pwd)"
exec "$venv/bin/batou" "\$@"
EOF
    cat >"$dir/appenv" <<EOF
#!/bin/sh
# \`appenv python ARGS\`: the deployment's python, as appenv runs it.
[ "\$1" = python ] && shift
exec "$venv/bin/python" "\$@"
EOF
    chmod +x "$dir/batou" "$dir/appenv"
    # migrate moves environments/fleet.cfg to environments/fleet/environment.cfg.
    (cd "$dir" && ./batou migrate >"$logs/batou-migrate-$hosts.log" 2>&1) ||
        fail "batou migrate failed: $(tail -n 20 "$logs/batou-migrate-$hosts.log")"
}

# timed NAME DIR CMD...: one timed run in DIR, its output in logs/NAME.out;
# prints the seconds.
timed() {
    local name=$1 dir=$2
    shift 2
    if ! (cd "$dir" && python3 "$root/benches/batou/treetime.py" \
        "$logs/$name.out" "$logs/$name.out" "$@"); then
        log "$name failed; the end of its output:"
        tail -n 30 "$logs/$name.out" >&2
        exit 1
    fi
}

# `ssh HOST true` to host01..hostN in parallel, timed as the tools are.
parallel_true_script() {
    local n=$1 host
    printf 'for host in %s; do ssh -F %q -T -- "$host" true 2>/dev/null & done; wait\n' \
        "$(seq -f 'host%02g' -s ' ' 1 "$n")" "$tmp/sshd/ssh_config"
}

tack_noop() { # NAME DIR N
    timed "$1" "$2" "$tack" deploy fleet
    [ "$(grep -c ' 0 updated, ' "$logs/$1.out")" -eq "$3" ] ||
        fail "tack's no-op $1 did something: $(cat "$logs/$1.out")"
}

batou_noop() { # NAME DIR
    timed "$1" "$2" ./batou deploy fleet
    grep -q 'DEPLOYMENT FINISHED' "$logs/$1.out" ||
        fail "batou's no-op $1 did not finish: $(tail -n 30 "$logs/$1.out")"
    ! grep -q '🚀' "$logs/$1.out" ||
        fail "batou's no-op $1 updated something: $(grep '🚀' "$logs/$1.out" | head -n 5)"
}

median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
ms() { awk -v s="$1" 'BEGIN { printf "%.0f ms", s * 1000 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }

log "load before: $(uptime)"
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
results=() per_run=()
for n in $sizes; do
    tackdir=$tmp/tack-$n
    batoudir=$tmp/batou-$n
    write_tack_fleet "$tackdir" "$n" "$tmp/sshd" "$tmp/tack-remote-$n"
    write_batou_fleet "$batoudir" "$n" "$tmp/batou-remote-$n"
    parallel_true_script "$n" >"$tmp/true-$n.sh"

    log "$n hosts: first deploys and a no-op of each (untimed)"
    timed "tack-first-$n" "$tackdir" "$tack" deploy fleet >/dev/null
    timed "batou-first-$n" "$batoudir" ./batou deploy fleet >/dev/null
    grep -q 'DEPLOYMENT FINISHED' "$logs/batou-first-$n.out" ||
        fail "batou's first deploy did not finish: $(tail -n 30 "$logs/batou-first-$n.out")"
    tack_noop "tack-warm-$n" "$tackdir" "$n" >/dev/null
    batou_noop "batou-warm-$n" "$batoudir" >/dev/null
    # Both deployed the same thing (the work dirs differ, so compare
    # what names no path).
    for i in $(seq 1 "$n"); do
        name=$(printf 'host%02d' "$i")
        cmp -s "$tmp/tack-remote-$n/$name/work/app/settings.json" \
            "$tmp/batou-remote-$n/work/app/$name/settings.json" ||
            fail "$name: tack's and batou's settings.json differ"
    done
    cmp -s "$tmp/tack-remote-$n/host01/work/monitor/registered.txt" \
        "$tmp/batou-remote-$n/work/monitor/host01/registered.txt" ||
        fail "tack's and batou's registered.txt differ"

    tack_times=() batou_times=() ssh_times=()
    for i in $(seq "$runs"); do
        case $((i % 3)) in
        1) order=(tack batou ssh) ;;
        2) order=(batou ssh tack) ;;
        0) order=(ssh tack batou) ;;
        esac
        for what in "${order[@]}"; do
            case $what in
            tack) tack_times+=("$(tack_noop "tack-noop-$n-$i" "$tackdir" "$n")") ;;
            batou) batou_times+=("$(batou_noop "batou-noop-$n-$i" "$batoudir")") ;;
            ssh) ssh_times+=("$(timed "ssh-$n-$i" "$tmp" bash "$tmp/true-$n.sh")") ;;
            esac
        done
        log "  run $i: tack $(ms "${tack_times[-1]}"), batou $(ms "${batou_times[-1]}")," \
            "ssh HOST true $(ms "${ssh_times[-1]}")"
    done
    t=$(median "${tack_times[@]}") b=$(median "${batou_times[@]}") s=$(median "${ssh_times[@]}")
    results+=("$(printf '| %s | %s | %s | %s | %s | %s | %s | %s |' "$n" "$runs" \
        "$(ms "$t")" "$(ms "$b")" "$(ms "$s")" \
        "$(ratio "$t" "$s")" "$(ratio "$b" "$s")" "$(ratio "$b" "$t")")")
    for tool in tack batou ssh; do
        declare -n times="${tool}_times"
        per_run+=("$n hosts, $tool (ms): $(printf '%s\n' "${times[@]}" | awk '{ printf "%.0f ", $1 * 1000 }')")
        unset -n times
    done
done
log "load after: $(uptime)"
load_after=$(cut -d' ' -f1-3 /proc/loadavg)

cat <<EOF

## A no-op over ssh: batou $batou_version vs tack $revision, medians of $runs runs, $(nproc) cores

Load average (1, 5, 15 min) before: $load_before; after: $load_after.

| hosts | runs | tack no-op | batou no-op | ssh HOST true, parallel | tack / ssh | batou / ssh | batou / tack |
|---:|---:|---:|---:|---:|---:|---:|---:|
EOF
printf '%s\n' "${results[@]}"
printf '\nPer run, in order:\n\n'
printf '    %s\n' "${per_run[@]}"
