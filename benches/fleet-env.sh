# Sourced by the many-hosts benchmarks (benches/fleet-noop.sh,
# benches/batou/fleet.sh): writes the tack deployment they deploy to the
# host aliases host01..hostN of benches/loopback-sshd.sh.
#
#   write_tack_fleet DIR N SSHD_DIR REMOTE_DIR
#
# Every host runs `app` and `web`; host01 also runs `db` and `monitor`:
#
#   db       (host01) schema.sql, a migration run once (`creates`), provides
#            `database`;
#   app      (every host) requires `database` from host01 (scope
#            environment), renders app.ini and settings.json from it, runs
#            a check once (`outputs`; a barrier, so over ssh it waits for
#            db on host01), provides `backend`;
#   web      (every host) requires `backend` on its own host, a directory
#            and a symlink, renders upstream.conf;
#   monitor  (host01) requires `backend` from every host, renders
#            targets.txt and registers it (`outputs`; a barrier that waits
#            for app on every host).
#
# So a no-op checks about 7 nodes per host, and one host (host01) waits for
# every other host's app while every app waits for host01's db. Each host
# deploys to its own REMOTE_DIR/hostNN. The environment is `fleet`.
# benches/batou/fleet.sh writes the same components for batou.

write_tack_fleet() {
    local dir=$1 hosts=$2 sshd=$3 remote=$4 i name
    mkdir -p "$dir/environments" "$dir/components"/{db,app,web,monitor}
    cp "$sshd/ssh_config" "$dir/ssh_config"
    {
        printf '[environment]\nconnect_method = ssh\nssh_config = ssh_config\n\n[hosts]\n'
        for i in $(seq 1 "$hosts"); do
            name=$(printf 'host%02d' "$i")
            if [ "$i" -eq 1 ]; then
                printf '%s = db, app, web, monitor\n' "$name"
            else
                printf '%s = app, web\n' "$name"
            fi
        done
        for i in $(seq 1 "$hosts"); do
            name=$(printf 'host%02d' "$i")
            printf '\n[host:%s]\nremote_dir = %s/%s\n' "$name" "$remote" "$name"
        done
    } >"$dir/environments/fleet.cfg"

    cat >"$dir/components/db/component.cfg" <<'CFG'
[attributes]
schema = 1

[file:schema.sql]
content =
    -- schema version {{ schema }}
    create table if not exists orders (id integer primary key, item text);

[command:migrate]
run = mkdir -p data && cat schema.sql >> data/migrations.log
creates = data/migrations.log

[provide:database]
path = {{ workdir }}/data
schema = {{ schema }}
CFG

    cat >"$dir/components/app/component.cfg" <<'CFG'
[attributes]
port = 8080
workers = 4

[require:database]
scope = environment

[file:app.ini]
content =
    [app]
    host = {{ host }}
    port = {{ port }}
    workers = {{ workers }}
    [database]
    path = {{ database[0].path }}
    schema = {{ database[0].schema }}

[file:settings.json]
content =
    {"host": "{{ host }}", "port": {{ port }}, "schema": {{ database[0].schema }}}

[command:check]
run = grep -q "schema = " app.ini && cp app.ini checked.txt
outputs = checked.txt

[provide:backend]
host = {{ host }}
port = {{ port }}
CFG

    cat >"$dir/components/web/component.cfg" <<'CFG'
[require:backend]

[directory:logs]
mode = 0750

[file:upstream.conf]
content =
    upstream app {
    {% for backend in backend %}    server 127.0.0.1:{{ backend.port }};  # {{ backend.host }}
    {% endfor %}}

[symlink:current]
target = {{ workdir }}/upstream.conf
CFG

    cat >"$dir/components/monitor/component.cfg" <<'CFG'
[require:backend]
scope = environment

[file:targets.txt]
content =
    {% for backend in backend %}{{ backend.host }}:{{ backend.port }}
    {% endfor %}

[command:register]
run = cp targets.txt registered.txt
outputs = registered.txt
CFG
}
