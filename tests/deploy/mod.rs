//! Deploying with `tack local`: what lands on disk (contents, modes,
//! symlinks), what reruns after an edit and only that, drift repaired,
//! `--dry-run`, `--explain`, `--diff` and `tack explain` changing nothing,
//! sensitive files kept out of the output, state kept in `.tack/` and
//! rebuilt from disk when lost or corrupt, and `tack graph`.

use std::fs;
use std::os::unix::fs::PermissionsExt;

use crate::support::{set, Deployment};

/// db provides its address; app requires it and deploys one of each kind
/// of resource. 7 nodes.
fn hello() -> Deployment {
    Deployment::new()
        .env(
            "dev",
            "
            [environment]
            connect_method = local

            [hosts]
            localhost = db, app

            [component:app]
            greeting = Hello from dev
            ",
        )
        .component(
            "db",
            "
            [attributes]
            port = 5432
            name = hello

            [file:db.conf]
            content =
                listen = 127.0.0.1:{{ port }}
                database = {{ name }}

            [provide:database]
            host = 127.0.0.1
            port = {{ port }}
            name = {{ name }}
            ",
        )
        .component(
            "app",
            "
            [attributes]
            greeting = Hello
            user = world

            [require:database]

            [directory:etc]
            mode = 0750

            [file:etc/app.ini]
            source = app.ini

            [file:bin/hello]
            mode = 0755

            [file:motd]
            content = Welcome, {{ user }}!

            [file:raw.txt]
            template = false

            [symlink:current]
            target = {{ workdir }}/etc
            ",
        )
        .source(
            "app",
            "app.ini",
            "
            greeting = {{ greeting }}
            {% for db in database -%}
            database = postgresql://{{ db.host }}:{{ db.port }}/{{ db.name }}
            {% endfor -%}
            ",
        )
        .source(
            "app",
            "bin/hello",
            "
            #!/bin/sh
            echo hello from {{ workdir }}
            ",
        )
        .source("app", "raw.txt", "{{ x }} stays as written\n")
}

const ALL_NODES: &[&str] = &[
    "Db > File(db.conf)",
    "App > Directory(etc)",
    "App > File(etc/app.ini)",
    "App > File(bin/hello)",
    "App > File(motd)",
    "App > File(raw.txt)",
    "App > Symlink(current)",
];

/// `hello()`, deployed once.
fn deployed() -> Deployment {
    let d = hello();
    d.tack(&["local", "dev"]).success();
    d
}

#[test]
fn first_deploy_writes_contents_and_modes() {
    let d = hello();
    let out = d.tack(&["local", "dev"]).success();

    assert_eq!(
        d.read("work/app/etc/app.ini"),
        "greeting = Hello from dev\ndatabase = postgresql://127.0.0.1:5432/hello\n"
    );
    assert_eq!(d.mode("work/app/etc/app.ini"), 0o644, "the default mode");
    assert!(d.path("work/app/etc").is_dir());
    assert_eq!(d.mode("work/app/etc"), 0o750);
    assert_eq!(
        d.read("work/app/bin/hello"),
        format!(
            "#!/bin/sh\necho hello from {}\n",
            d.path("work/app").display()
        )
    );
    assert_eq!(d.mode("work/app/bin/hello"), 0o755);
    assert_eq!(d.read("work/app/motd"), "Welcome, world!\n");
    assert_eq!(
        d.read("work/app/raw.txt"),
        "{{ x }} stays as written\n",
        "template = false deploys the source as it is"
    );
    assert_eq!(
        fs::read_link(d.path("work/app/current")).unwrap(),
        d.path("work/app/etc")
    );
    assert_eq!(
        d.read("work/db/db.conf"),
        "listen = 127.0.0.1:5432\ndatabase = hello\n"
    );
    assert_eq!(d.mode("work/db/db.conf"), 0o644);

    assert_eq!(out.updated(), set(ALL_NODES), "{out}");
    let updating = out.stdout.lines().filter(|l| l.starts_with("Updating "));
    assert_eq!(
        updating.count(),
        ALL_NODES.len(),
        "one line per node\n{out}"
    );
    assert!(
        out.stdout
            .contains("localhost: 7 updated, 0 unchanged, 0 failed, 0 skipped in "),
        "{out}"
    );
    assert_eq!(out.stderr, "");
}

#[test]
fn second_run_changes_nothing() {
    let d = deployed();
    let before = d.snapshot();

    let out = d.tack(&["local", "dev"]).success();

    assert_eq!(out.updated(), set(&[]), "{out}");
    assert!(
        out.stdout
            .contains("localhost: 0 updated, 7 unchanged, 0 failed, 0 skipped in "),
        "{out}"
    );
    let after = d.snapshot();
    assert_eq!(
        before.under("work/").changed(&after.under("work/")),
        set(&[])
    );
}

#[test]
fn override_change_reruns_only_the_files_that_use_it() {
    let d = deployed();
    let before = d.snapshot();

    d.replace(
        "environments/dev.cfg",
        "greeting = Hello from dev",
        "greeting = Hi from dev",
    );
    let out = d.tack(&["local", "dev"]).success();

    assert_eq!(out.updated(), set(&["App > File(etc/app.ini)"]), "{out}");
    assert!(d
        .read("work/app/etc/app.ini")
        .starts_with("greeting = Hi from dev\n"));
    let after = d.snapshot();
    assert_eq!(
        before.under("work/").changed(&after.under("work/")),
        set(&["work/app/etc/app.ini"])
    );
}

#[test]
fn provided_value_flows_to_the_requirer() {
    let d = deployed();
    let before = d.snapshot();

    d.replace("components/db/component.cfg", "port = 5432", "port = 5433");
    let out = d.tack(&["local", "dev"]).success();

    assert_eq!(
        out.updated(),
        set(&["Db > File(db.conf)", "App > File(etc/app.ini)"]),
        "{out}"
    );
    assert_eq!(
        d.read("work/app/etc/app.ini"),
        "greeting = Hello from dev\ndatabase = postgresql://127.0.0.1:5433/hello\n"
    );
    assert_eq!(
        d.read("work/db/db.conf"),
        "listen = 127.0.0.1:5433\ndatabase = hello\n"
    );
    let after = d.snapshot();
    assert_eq!(
        before.under("work/").changed(&after.under("work/")),
        set(&["work/app/etc/app.ini", "work/db/db.conf"])
    );
}

#[test]
fn hand_edited_file_is_repaired() {
    let d = deployed();
    let deployed_text = d.read("work/app/etc/app.ini");

    // Same size, right after the deploy: only the content tells.
    d.replace("work/app/etc/app.ini", "Hello", "Howdy");
    let out = d.tack(&["local", "dev", "--explain"]).success();

    assert_eq!(out.updated(), set(&["App > File(etc/app.ini)"]), "{out}");
    assert_eq!(d.read("work/app/etc/app.ini"), deployed_text);
    let block = out.block("Updating App > File(etc/app.ini)");
    assert!(block.contains("drifted"), "{block}");
}

#[test]
fn chmod_by_hand_is_repaired() {
    let d = deployed();

    fs::set_permissions(
        d.path("work/app/bin/hello"),
        fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    fs::set_permissions(d.path("work/app/etc"), fs::Permissions::from_mode(0o777)).unwrap();
    let out = d.tack(&["local", "dev"]).success();

    assert_eq!(
        out.updated(),
        set(&["App > File(bin/hello)", "App > Directory(etc)"]),
        "{out}"
    );
    assert_eq!(d.mode("work/app/bin/hello"), 0o755);
    assert_eq!(d.mode("work/app/etc"), 0o750);
}

#[test]
fn deleted_file_and_symlink_are_recreated() {
    let d = deployed();

    fs::remove_file(d.path("work/app/motd")).unwrap();
    fs::remove_file(d.path("work/app/current")).unwrap();
    let out = d.tack(&["local", "dev"]).success();

    assert_eq!(
        out.updated(),
        set(&["App > File(motd)", "App > Symlink(current)"]),
        "{out}"
    );
    assert_eq!(d.read("work/app/motd"), "Welcome, world!\n");
    assert_eq!(
        fs::read_link(d.path("work/app/current")).unwrap(),
        d.path("work/app/etc")
    );
}

#[test]
fn dry_run_before_the_first_deploy_creates_nothing() {
    let d = hello();

    let out = d.tack(&["local", "dev", "--dry-run"]).success();

    assert_eq!(out.would_update(), set(ALL_NODES), "{out}");
    assert_eq!(out.updated(), set(&[]), "{out}");
    assert!(!d.exists("work"), "--dry-run created work/");
    assert!(!d.exists(".tack"), "--dry-run created .tack/");
}

#[test]
fn dry_run_changes_nothing() {
    let d = deployed();
    d.replace("components/db/component.cfg", "port = 5432", "port = 5433");
    d.write("work/app/motd", "edited by hand\n");
    let before = d.snapshot();

    let out = d.tack(&["local", "dev", "--dry-run"]).success();

    assert_eq!(
        out.would_update(),
        set(&[
            "Db > File(db.conf)",
            "App > File(etc/app.ini)",
            "App > File(motd)"
        ]),
        "{out}"
    );
    assert_eq!(out.updated(), set(&[]), "{out}");
    assert_eq!(before.changed(&d.snapshot()), set(&[]));

    // Nothing was recorded either: the real run still has all of it to do.
    let out = d.tack(&["local", "dev"]).success();
    assert_eq!(
        out.updated(),
        set(&[
            "Db > File(db.conf)",
            "App > File(etc/app.ini)",
            "App > File(motd)"
        ]),
        "{out}"
    );
}

#[test]
fn explain_names_the_attribute_behind_a_provided_value() {
    let d = deployed();
    d.replace("components/db/component.cfg", "port = 5432", "port = 5433");
    let before = d.snapshot();

    let out = d
        .tack(&["local", "dev", "--dry-run", "--explain"])
        .success();

    let block = out.block("Would update App > File(etc/app.ini)");
    assert!(
        block.lines().any(|line| {
            line.contains("components/db/component.cfg:2 [attributes] port")
                && line.contains("5432 -> 5433")
        }),
        "the root cause, where a person changed it:\n{block}"
    );
    assert!(
        block.lines().any(|line| {
            line.contains("components/db/component.cfg:12 [provide:database] port")
                && line.contains("5432 -> 5433")
        }),
        "the provided value it reached the requirer through:\n{block}"
    );
    let block = out.block("Would update Db > File(db.conf)");
    assert!(
        block.contains("components/db/component.cfg:2 [attributes] port")
            && block.contains("5432 -> 5433"),
        "{block}"
    );
    assert_eq!(before.changed(&d.snapshot()), set(&[]));
}

#[test]
fn explain_names_the_environment_override() {
    let d = deployed();
    d.replace(
        "environments/dev.cfg",
        "greeting = Hello from dev",
        "greeting = Hi from dev",
    );
    let before = d.snapshot();

    let out = d
        .tack(&["local", "dev", "--dry-run", "--explain"])
        .success();

    assert_eq!(
        out.would_update(),
        set(&["App > File(etc/app.ini)"]),
        "{out}"
    );
    let block = out.block("Would update App > File(etc/app.ini)");
    assert!(
        block.lines().any(|line| {
            line.contains("environments/dev.cfg:8 [component:app] greeting")
                && line.contains("Hello from dev -> Hi from dev")
        }),
        "{block}"
    );
    assert_eq!(before.changed(&d.snapshot()), set(&[]));
}

#[test]
fn explain_command_is_a_dry_run_with_explanations() {
    let d = deployed();
    d.replace("components/db/component.cfg", "port = 5432", "port = 5433");
    d.write("work/app/motd", "edited by hand\n");
    let before = d.snapshot();

    let explain = d.tack(&["explain", "dev"]).success();
    let local = d
        .tack(&["local", "dev", "--dry-run", "--explain"])
        .success();

    assert_eq!(untimed(&explain.stdout), untimed(&local.stdout));
    assert_eq!(explain.would_update().len(), 3, "{explain}");
    assert_eq!(before.changed(&d.snapshot()), set(&[]));
}

/// The output without the wall time of the summary line.
fn untimed(stdout: &str) -> String {
    stdout
        .lines()
        .map(|line| match line.rsplit_once(" in ") {
            Some((head, time)) if time.ends_with('s') => head,
            _ => line,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn diff_shows_the_changed_lines() {
    let d = deployed();
    d.replace(
        "environments/dev.cfg",
        "greeting = Hello from dev",
        "greeting = Hi from dev",
    );

    let out = d.tack(&["local", "dev", "--diff"]).success();

    let block = out.block("Updating App > File(etc/app.ini)");
    let lines: Vec<&str> = block.lines().map(str::trim_start).collect();
    assert!(lines.contains(&"-greeting = Hello from dev"), "{block}");
    assert!(lines.contains(&"+greeting = Hi from dev"), "{block}");
    assert!(
        !lines.iter().any(|line| line.starts_with("-database")),
        "an unchanged line shown as removed:\n{block}"
    );
}

/// app deploys `secret.conf` (sensitive) with a password overridden in dev.
fn with_secret() -> Deployment {
    Deployment::new()
        .env(
            "dev",
            "
            [hosts]
            localhost = app

            [component:app]
            password = hunter2
            ",
        )
        .component(
            "app",
            "
            [attributes]
            password = changeme

            [file:secret.conf]
            content = password={{ password }}
            sensitive = true

            [file:token]
            content = tok-1111
            sensitive = true
            ",
        )
}

#[test]
fn sensitive_file_shows_no_diff() {
    let d = with_secret();
    let out = d.tack(&["local", "dev", "--diff"]).success();
    assert_eq!(d.read("work/app/secret.conf"), "password=hunter2\n");
    assert_eq!(
        d.mode("work/app/secret.conf"),
        0o600,
        "sensitive defaults to 0600"
    );
    assert!(!out.stdout.contains("hunter2"), "{out}");

    d.replace("environments/dev.cfg", "hunter2", "swordfish");
    let out = d.tack(&["local", "dev", "--diff"]).success();

    assert_eq!(out.updated(), set(&["App > File(secret.conf)"]), "{out}");
    assert_eq!(d.read("work/app/secret.conf"), "password=swordfish\n");
    for secret in ["hunter2", "swordfish"] {
        assert!(!out.stdout.contains(secret), "{secret} shown\n{out}");
        assert!(!out.stderr.contains(secret), "{secret} shown\n{out}");
    }
}

#[test]
fn explain_hides_sensitive_inline_content() {
    let d = with_secret();
    d.tack(&["local", "dev"]).success();

    d.replace("components/app/component.cfg", "tok-1111", "tok-2222");
    let out = d
        .tack(&["local", "dev", "--dry-run", "--explain", "--diff"])
        .success();

    assert_eq!(out.would_update(), set(&["App > File(token)"]), "{out}");
    for secret in ["tok-1111", "tok-2222"] {
        assert!(!out.stdout.contains(secret), "{secret} shown\n{out}");
        assert!(!out.stderr.contains(secret), "{secret} shown\n{out}");
    }
}

#[test]
fn explain_hides_the_value_of_a_sensitive_file() {
    let d = with_secret();
    d.tack(&["local", "dev"]).success();

    d.replace("environments/dev.cfg", "hunter2", "swordfish");
    let out = d
        .tack(&["local", "dev", "--dry-run", "--explain", "--diff"])
        .success();

    assert_eq!(
        out.would_update(),
        set(&["App > File(secret.conf)"]),
        "{out}"
    );
    for secret in ["hunter2", "swordfish"] {
        assert!(!out.stdout.contains(secret), "{secret} shown\n{out}");
        assert!(!out.stderr.contains(secret), "{secret} shown\n{out}");
    }
}

#[test]
fn same_rendered_output_is_not_rewritten() {
    let d = Deployment::new()
        .env("dev", "[hosts]\nlocalhost = app\n")
        .component(
            "app",
            "
            [attributes]
            code = ab

            [file:length.txt]
            content = {{ code|length }}

            [file:code.txt]
            content = {{ code }}
            ",
        );
    d.tack(&["local", "dev"]).success();
    let mtime = d.mtime("work/app/length.txt");
    let before = d.snapshot();

    d.replace("components/app/component.cfg", "code = ab", "code = cd");
    let out = d.tack(&["local", "dev", "--explain"]).success();

    assert_eq!(out.updated(), set(&["App > File(code.txt)"]), "{out}");
    assert_eq!(d.read("work/app/length.txt"), "2\n");
    assert_eq!(
        d.mtime("work/app/length.txt"),
        mtime,
        "length.txt was rewritten"
    );
    assert_eq!(
        before.under("work/").changed(&d.snapshot().under("work/")),
        set(&["work/app/code.txt"])
    );
    let block = out.block("Unchanged App > File(length.txt)");
    assert!(block.contains("ab -> cd"), "{block}");
    assert!(block.contains("the output is the same"), "{block}");
}

#[test]
fn state_is_kept_and_rebuilt_from_disk() {
    let d = deployed();
    assert!(d.exists(".tack/state/dev/localhost/app.json"));

    fs::remove_dir_all(d.path(".tack")).unwrap();
    d.write("work/app/motd", "edited by hand\n");
    let before = d.snapshot();
    let out = d.tack(&["local", "dev"]).success();

    assert_eq!(
        out.updated(),
        set(&["App > File(motd)"]),
        "only what differs on disk is rewritten\n{out}"
    );
    assert_eq!(
        before.under("work/").changed(&d.snapshot().under("work/")),
        set(&["work/app/motd"])
    );
    assert_eq!(d.read("work/app/motd"), "Welcome, world!\n");
    assert!(d.exists(".tack/state/dev/localhost/app.json"));

    let out = d.tack(&["local", "dev"]).success();
    assert_eq!(out.updated(), set(&[]), "{out}");
}

#[test]
fn corrupt_state_is_discarded_with_a_warning() {
    let d = deployed();
    d.write(
        ".tack/state/dev/localhost/app.json",
        "{\"format\": 1, \"nodes\": {gar",
    );
    d.write("work/app/motd", "edited by hand\n");

    let out = d.tack(&["local", "dev"]).success();

    assert!(out.stderr.contains("warning:"), "{out}");
    assert!(out.stderr.contains("app.json"), "{out}");
    assert_eq!(out.updated(), set(&["App > File(motd)"]), "{out}");
    assert_eq!(d.read("work/app/motd"), "Welcome, world!\n");

    let out = d.tack(&["local", "dev"]).success();
    assert_eq!(out.stderr, "", "the state was written anew");
    assert_eq!(out.updated(), set(&[]), "{out}");
}

#[test]
fn graph_prints_every_node() {
    let d = hello();

    let out = d.tack(&["graph", "dev"]).success();

    assert!(out.stdout.starts_with("digraph"), "{out}");
    for node in ALL_NODES {
        assert!(out.stdout.contains(&format!("\"{node}\"")), "{node}\n{out}");
    }
    assert!(
        out.stdout.contains(" -> "),
        "etc/app.ini waits for etc\n{out}"
    );
    assert!(!d.exists("work") && !d.exists(".tack"));
}

/// `tack ... | head`: when the reader of stdout is gone, tack's output
/// ends there; the deploy is not a crash.
#[test]
fn a_closed_stdout_ends_the_output_not_the_run() {
    let d = hello();
    for args in [
        &["local", "dev", "--format", "json"][..],
        &["graph", "dev"][..],
        &["cache", "stats"][..],
    ] {
        let mut child = d
            .tack_command(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "tack {args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "tack {args:?}: {stderr}");
    }
    assert_eq!(d.read("work/app/motd"), "Welcome, world!\n");
}

/// Output that cannot be written for another reason (a full disk) is an
/// error: a script must not read an empty report as success.
#[test]
fn output_to_a_full_disk_is_an_error() {
    let d = hello();
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .unwrap();
    let out = d
        .tack_command(&["graph", "dev"])
        .stdout(full)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("standard output"), "{stderr}");
}

/// `[require:KEY] one = true`: the one provider's fields as a map.
#[test]
fn a_single_required_value_is_a_map() {
    let deployment = Deployment::new()
        .env("dev", "[hosts]\nlocalhost = app, db\n")
        .component("db", "[attributes]\nport = 5432\n\n[provide:database]\nurl = postgres://db:{{ port }}\n")
        .component("app", "[require:database]\none = true\n\n[file:app.ini]\ncontent = url = {{ database.url }}\n");
    deployment.tack(&["local", "dev"]).success();
    assert_eq!(
        deployment.read("work/app/app.ini"),
        "url = postgres://db:5432\n"
    );
    deployment.replace("components/db/component.cfg", "5432", "5433");
    let output = deployment.tack(&["local", "dev", "--explain"]).success();
    assert!(
        output.stdout.contains("Updating App > File(app.ini)"),
        "{output}"
    );
    assert!(
        output
            .stdout
            .contains("[attributes] port (template variable `port`): 5432 -> 5433"),
        "{output}"
    );
}

/// Inline content keeps the indentation of its continuation lines: all of
/// it when the value starts beside its key, all but the indentation its
/// lines share when it starts on the next line (README "The files").
#[test]
fn inline_content_keeps_its_indentation() {
    let d = Deployment::new()
        .env("dev", "[hosts]\nlocalhost = app\n")
        .component(
            "app",
            "
            [file:beside.yaml]
            content = top:
              a:
                  b: 1

            [file:below.sh]
            content =
                if true; then
                    echo yes
                fi
            ",
        );
    d.tack(&["local", "dev"]).success();
    assert_eq!(d.read("work/app/beside.yaml"), "top:\n  a:\n      b: 1\n");
    assert_eq!(
        d.read("work/app/below.sh"),
        "if true; then\n    echo yes\nfi\n"
    );
}

/// An I/O error after nodes changed the host is not "stopped before
/// touching the host" (exit 2): it exits 1 and names the nodes that ran,
/// and the next run records them from the journal without running them.
#[test]
fn an_io_error_after_nodes_ran_exits_1_and_says_what_ran() {
    let state = "../../.tack/state/dev/localhost/app.json";
    let d = Deployment::new()
        .env("dev", "[hosts]\nlocalhost = app\n")
        .component(
            "app",
            &format!(
                "[file:a.txt]\ncontent = a\n\n[command:break]\nrun = rm -f {state} && mkdir -p {state}/x\n"
            ),
        );
    let out = d.tack(&["local", "dev"]);
    assert_eq!(out.code, 1, "{out}");
    assert!(out.stderr.contains("app.json`: Is a directory"), "{out}");
    assert!(
        out.stderr.contains(
            "note: 2 node(s) ran on `localhost` before this: App > File(a.txt), App > Command(break); \
             the journal keeps what they did, and the next run records it"
        ),
        "{out}"
    );

    std::fs::remove_dir_all(d.path(".tack/state/dev/localhost/app.json")).unwrap();
    let again = d.tack(&["local", "dev"]).success();
    assert_eq!(again.updated(), set(&[]), "{again}");
}

/// Explain compares with the last applied state: a source change applied
/// a deploy ago (reformatted, same output, so the command did not rerun)
/// is not a reason again when a later attribute change reruns the command.
#[test]
fn explain_shows_only_what_differs_from_the_last_applied_state() {
    let d = Deployment::new()
        .env("dev", "[hosts]\nlocalhost = a\n")
        .component(
            "a",
            "[attributes]\nx = 1\ny = 2\n\n[file:f.txt]\n\n[command:c]\nrun = cat f.txt > out.txt\n",
        )
        .source("a", "f.txt", "x={{ x }} y={{ y }}\n");
    d.tack(&["local", "dev"]).success();
    d.replace("components/a/f.txt", "{{ x }}", "{{x}}");
    d.tack(&["local", "dev"]).success();
    d.replace("components/a/component.cfg", "y = 2", "y = 3");
    let out = d.tack(&["explain", "dev"]).success();
    assert_eq!(
        out.block("Would update A > Command(c)"),
        "Would update A > Command(c)\n    A > File(f.txt) changed\n      because components/a/component.cfg:3 [attributes] y (template variable `y`): 2 -> 3\n",
        "{out}"
    );
    assert!(!out.stdout.contains("source"), "{out}");
}

/// A long value is shown around the part that changed, not cut from the
/// end; a multi-line value as a small diff of its lines.
#[test]
fn explain_elides_around_the_change_and_diffs_lines() {
    let d = Deployment::new()
        .env("dev", "[hosts]\nlocalhost = a\n")
        .component(
            "a",
            "
            [attributes]
            dsn = postgres://user@db.internal.example.com:5432/app_production?sslmode=require

            [file:app.ini]
            content = dsn = {{ dsn }}

            [command:c]
            run =
                echo one
                echo two
                echo three
                echo four
            ",
        );
    d.tack(&["local", "dev"]).success();
    d.replace(
        "components/a/component.cfg",
        "app_production",
        "app_staging",
    );
    d.replace("components/a/component.cfg", "echo three", "echo THREE");
    let out = d.tack(&["explain", "dev"]).success();
    assert_eq!(
        out.block("Would update A > File(app.ini)"),
        "Would update A > File(app.ini)
    components/a/component.cfg:2 [attributes] dsn (template variable `dsn`): \
…le.com:5432/app_production?sslmode=require -> …le.com:5432/app_staging?sslmode=require
",
        "{out}"
    );
    assert!(
        out.block("Would update A > Command(c)").ends_with(
            "    components/a/component.cfg:8 [command:c] run:
          echo two
        - echo three
        + echo THREE
          echo four
"
        ),
        "{out}"
    );
}

/// `tack explain --format json` prints one report with the reasons, and
/// with NODE only that node's.
#[test]
fn explain_prints_json() {
    let d = deployed();
    d.replace("components/app/component.cfg", "Welcome", "Hello");
    let out = d.tack(&["explain", "dev", "--format", "json"]).success();
    let report: serde_json::Value = serde_json::from_str(&out.stdout).expect("one JSON report");
    assert_eq!(report["environment"], "dev", "{out}");
    let nodes = report["hosts"][0]["nodes"].as_array().unwrap();
    let motd = nodes
        .iter()
        .find(|node| node["id"] == "app/file:motd")
        .expect("the motd node");
    assert_eq!(motd["outcome"], "would update", "{out}");
    assert_eq!(motd["reasons"][0]["reason"], "input_changed", "{out}");

    let out = d
        .tack(&["explain", "dev", "app/file:motd", "--format", "json"])
        .success();
    let report: serde_json::Value = serde_json::from_str(&out.stdout).expect("one JSON report");
    let ids: Vec<&str> = report["hosts"][0]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|node| node["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["app/file:motd"], "{out}");
}

/// Every argument's `--help` says what it is, once, in the words of the
/// command it belongs to.
#[test]
fn help_texts_say_what_each_argument_does() {
    let d = Deployment::new();
    let help = |args: &[&str]| {
        let mut args = args.to_vec();
        args.push("--help");
        d.tack(&args).success().stdout
    };
    let gc = help(&["cache", "gc"]);
    assert!(
        gc.contains("--max-size <SIZE>  The most the cache may hold"),
        "{gc}"
    );
    let export = help(&["cache", "export"]);
    assert!(export.contains("<FILE>  The archive to write"), "{export}");
    let import = help(&["cache", "import"]);
    assert!(
        import.contains("<FILE>  An archive written by `tack cache export`"),
        "{import}"
    );
    for command in ["explain", "graph"] {
        let text = help(&[command]);
        assert!(text.contains("--host <HOST>      Only this host"), "{text}");
        assert!(!text.contains("Deploy"), "{text}");
    }
    let local = help(&["local"]);
    assert!(
        local.contains("-C, --directory <DIR>         The deployment directory [default: .]\n"),
        "{local}"
    );
    assert!(
        local.contains("--no-cache-read           Do not restore step outputs from the cache"),
        "{local}"
    );
}

/// `tack completions SHELL` prints a completion script; the bash one,
/// sourced, completes `tack lo` to `local`.
#[test]
fn completions_print_a_script_that_completes() {
    let d = Deployment::new();
    let bash = d.tack(&["completions", "bash"]).success().stdout;
    let script = d.path("tack.bash");
    fs::write(&script, &bash).unwrap();
    let completed = std::process::Command::new("bash")
        .arg("-c")
        .arg(format!(
            "source {}; COMP_WORDS=(tack lo); COMP_CWORD=1; _tack tack lo tack; echo \"${{COMPREPLY[@]}}\"",
            script.display()
        ))
        .output()
        .expect("run bash");
    assert_eq!(String::from_utf8_lossy(&completed.stdout), "local\n");
    let zsh = d.tack(&["completions", "zsh"]).success().stdout;
    assert!(zsh.starts_with("#compdef tack\n"), "{zsh}");
    let fish = d.tack(&["completions", "fish"]).success().stdout;
    assert!(fish.contains("complete -c tack"), "{fish}");
}

/// The README's install step: `cargo install --path .` puts a `tack` on
/// the PATH of whoever runs it (here into a temp root, from the build
/// this test suite already made: `--locked` and the dev profile find it
/// fresh, so nothing is rebuilt under the other tests' feet).
#[test]
fn cargo_install_installs_tack() {
    let root = tempfile::tempdir().unwrap();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let installed = std::process::Command::new(cargo)
        .args([
            "install",
            "--path",
            ".",
            "--debug",
            "--locked",
            "--offline",
            "--root",
        ])
        .arg(root.path())
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run cargo install");
    assert!(
        installed.status.success(),
        "{}",
        String::from_utf8_lossy(&installed.stderr)
    );
    let version = std::process::Command::new(root.path().join("bin/tack"))
        .arg("--version")
        .output()
        .expect("run the installed tack");
    assert_eq!(
        String::from_utf8_lossy(&version.stdout),
        format!("tack {}\n", env!("CARGO_PKG_VERSION"))
    );
}

/// A value passed along a chain of 100 components: the state of the last
/// ones must still read back (serde_json refuses nesting deeper than 128),
/// so a second deploy finds everything as it left it.
#[test]
fn a_value_passed_along_a_long_chain_keeps_a_state_that_reads_back() {
    let links = 100;
    let mut d = Deployment::new();
    let names: Vec<String> = (0..links).map(|i| format!("c{i}")).collect();
    d = d.env(
        "dev",
        &format!("[hosts]\nlocalhost = {}\n", names.join(", ")),
    );
    d = d.component(
        "c0",
        "[attributes]\nseed = start\n\n[provide:k0]\nv = {{ seed }}\n",
    );
    for i in 1..links {
        let previous = i - 1;
        d = d.component(
            &format!("c{i}"),
            &format!(
                "[require:k{previous}]\n\n[provide:k{i}]\nv = {{{{ k{previous}[0].v }}}}\n\n[file:f.txt]\ncontent = {{{{ k{previous}[0].v }}}}\n"
            ),
        );
    }
    d.tack(&["local", "dev"]).success();
    assert_eq!(d.read(&format!("work/c{}/f.txt", links - 1)), "start\n");
    let again = d.tack(&["local", "dev", "--explain"]).success();
    assert!(!again.stderr.contains("corrupt"), "{again}");
    assert!(again.stdout.contains("0 updated"), "{again}");
    d.replace(
        "components/c0/component.cfg",
        "seed = start",
        "seed = changed",
    );
    let explained = d
        .tack(&["explain", "dev", &format!("c{}", links - 1)])
        .success();
    assert!(
        explained
            .stdout
            .contains("[provide:k98] v (provided as `k98`): start -> changed"),
        "{explained}"
    );
}

/// `connect_method = local` deploys every host here, all at once; a barrier
/// requiring from a component of another host waits until that component
/// finished there, whatever the order of `[hosts]` (it used to follow that
/// order, and the app started before the database it needs).
#[test]
fn hosts_deploy_at_once_and_meet_where_one_requires_from_another() {
    let d = Deployment::new()
        .env(
            "dev",
            "[environment]\nconnect_method = local\n\n[hosts]\nbeta = app\nalpha = db\n",
        )
        .component(
            "db",
            "[command:migrate]\nrun = sleep 1; date +%s%N > migrated.txt\ncreates = migrated.txt\n\n\
             [provide:database]\npath = {{ workdir }}/migrated.txt\n",
        )
        .component(
            "app",
            "[require:database]\nscope = environment\n\n\
             [file:early.txt]\ncontent = early\n\n\
             [command:start]\nrun = test -f {{ database[0].path }} && date +%s%N > started.txt\n\
             outputs = started.txt\n",
        );
    let out = d.tack(&["local", "dev"]).success();
    assert_eq!(
        out.updated(),
        set(&[
            "alpha: Db > Command(migrate)",
            "beta: App > File(early.txt)",
            "beta: App > Command(start)",
        ]),
        "{out}"
    );
    let migrated: u128 = d.read("work/db/migrated.txt").trim().parse().unwrap();
    let started: u128 = d.read("work/app/started.txt").trim().parse().unwrap();
    assert!(started >= migrated, "{out}");
    // beta's first file did not wait for alpha.
    let early = out
        .stdout
        .find("Updating beta: App > File(early.txt)")
        .unwrap();
    let migrate = out
        .stdout
        .find("Updating alpha: Db > Command(migrate)")
        .unwrap();
    assert!(early < migrate, "{out}");
}

/// `--host` repeats: the hosts named are deployed, the others are not,
/// and a name not in `[hosts]` is refused before anything runs.
#[test]
fn host_repeats_to_deploy_several_hosts_of_an_environment() {
    let d = Deployment::new()
        .env(
            "dev",
            "[environment]\nconnect_method = local\n\n[hosts]\na = one\nb = two\nc = three\n",
        )
        .component("one", "[file:one.txt]\ncontent = 1\n")
        .component("two", "[file:two.txt]\ncontent = 2\n")
        .component("three", "[file:three.txt]\ncontent = 3\n");
    let out = d
        .tack(&["local", "dev", "--host", "c", "--host", "a"])
        .success();
    assert_eq!(
        out.updated(),
        set(&["a: One > File(one.txt)", "c: Three > File(three.txt)"]),
        "{out}"
    );
    assert!(!d.exists("work/two"), "{out}");
    let refused = d.tack(&["local", "dev", "--host", "a", "--host", "d"]);
    assert_eq!(refused.code, 2, "{refused}");
    assert!(refused.stderr.contains("host `d` is not in"), "{refused}");
    assert!(!d.exists("work/two"));
}
