//! What tack refuses to do to a host: write through a symlink planted in a
//! work dir, remove anything it did not make, or let a sensitive value out;
//! and what it reports about nodes that are no longer configured.

use crate::support::{files_under, Deployment};

fn app(extra: &str) -> Deployment {
    Deployment::new()
        .env("dev", "[hosts]\nlocalhost = app\n")
        .component(
            "app",
            &format!(
                "
                [attributes]
                greeting = hello

                [directory:etc]

                [file:etc/app.ini]
                content = greeting = {{{{ greeting }}}}

                [file:notes.txt]
                content = notes
                {extra}
                "
            ),
        )
}

#[test]
fn a_symlink_planted_in_the_work_dir_is_not_written_through() {
    let deployment = app("");
    deployment.tack(&["local", "dev"]).success();
    let outside = tempfile::tempdir().unwrap();
    std::fs::remove_dir_all(deployment.path("work/app/etc")).unwrap();
    std::os::unix::fs::symlink(outside.path(), deployment.path("work/app/etc")).unwrap();
    deployment.replace(
        "components/app/component.cfg",
        "greeting = hello",
        "greeting = changed",
    );

    let output = deployment.tack(&["local", "dev"]);
    assert_ne!(output.code, 0, "{output}");
    assert!(output.stdout.contains("is a symlink"), "{output}");
    assert!(
        output.stdout.contains("Failed App > Directory(etc)"),
        "{output}"
    );
    let written: Vec<_> = std::fs::read_dir(outside.path()).unwrap().collect();
    assert!(
        written.is_empty(),
        "nothing may land outside the work dir: {written:?}"
    );
}

#[test]
fn a_removed_resource_is_reported_and_pruned_only_when_asked() {
    let deployment = app("");
    deployment.tack(&["local", "dev"]).success();
    deployment.replace(
        "components/app/component.cfg",
        "[file:notes.txt]\ncontent = notes\n",
        "",
    );

    let output = deployment.tack(&["local", "dev"]).success();
    assert!(
        output.stdout.contains(&format!(
            "No longer configured App > File(notes.txt): `{}` is left in place; --prune removes it\n",
            deployment.path("work/app/notes.txt").display()
        )),
        "{output}"
    );
    assert!(
        output
            .stdout
            .contains(", 0 skipped, 1 no longer configured in "),
        "counted as no longer configured, not unchanged\n{output}"
    );
    assert!(
        deployment.exists("work/app/notes.txt"),
        "a plain deploy removes nothing"
    );

    let output = deployment
        .tack(&["local", "dev", "--prune", "--dry-run"])
        .success();
    assert!(
        output.stdout.contains(&format!(
            "Would prune App > File(notes.txt): would remove `{}` if it is still what tack made\n",
            deployment.path("work/app/notes.txt").display()
        )),
        "{output}"
    );
    let output = deployment.tack(&["local", "dev", "--prune"]).success();
    assert!(
        output.stdout.contains("Pruned App > File(notes.txt)"),
        "{output}"
    );
    assert!(
        output.stdout.contains(", 0 skipped, 1 pruned in "),
        "counted as pruned, not unchanged\n{output}"
    );
    assert!(!deployment.exists("work/app/notes.txt"));
    let output = deployment.tack(&["local", "dev"]).success();
    assert!(
        !output.stdout.contains("notes.txt"),
        "a pruned node is forgotten\n{output}"
    );
}

#[test]
fn prune_keeps_a_file_changed_by_hand_and_anything_tack_did_not_make() {
    let deployment = app("");
    deployment.tack(&["local", "dev"]).success();
    deployment.write("work/app/notes.txt", "my own notes\n");
    deployment.write("work/app/etc/local.ini", "not tack's\n");
    deployment.write("components/app/component.cfg", "[attributes]\n");

    let output = deployment.tack(&["local", "dev", "--prune"]).success();
    assert!(
        output.stdout.contains("Kept App > File(notes.txt)"),
        "{output}"
    );
    assert_eq!(deployment.read("work/app/notes.txt"), "my own notes\n");
    assert!(
        !deployment.exists("work/app/etc/app.ini"),
        "tack's own file is pruned"
    );
    assert_eq!(deployment.read("work/app/etc/local.ini"), "not tack's\n");
    assert!(
        output.stdout.contains("Kept App > Directory(etc)"),
        "{output}"
    );
}

#[test]
fn a_removed_component_is_reported() {
    let deployment = app("").component("extra", "[file:x.txt]\ncontent = x\n");
    deployment.write("environments/dev.cfg", "[hosts]\nlocalhost = app, extra\n");
    deployment.tack(&["local", "dev"]).success();
    deployment.write("environments/dev.cfg", "[hosts]\nlocalhost = app\n");
    let output = deployment
        .tack(&["local", "dev", "--dry-run", "--prune"])
        .success();
    assert!(
        output.stdout.contains("Would prune Extra > File(x.txt)"),
        "{output}"
    );
    assert!(
        deployment.exists("work/extra/x.txt"),
        "a dry run prunes nothing"
    );
}

#[test]
fn a_planted_symlink_above_a_file_is_refused_even_without_a_directory_resource() {
    let deployment = Deployment::new()
        .env("dev", "[hosts]\nlocalhost = app\n")
        .component(
            "app",
            "[attributes]\nv = 1\n\n[file:conf/app.ini]\ncontent = v={{ v }}\n",
        );
    deployment.tack(&["local", "dev"]).success();
    let outside = tempfile::tempdir().unwrap();
    std::fs::remove_dir_all(deployment.path("work/app/conf")).unwrap();
    std::os::unix::fs::symlink(outside.path(), deployment.path("work/app/conf")).unwrap();
    deployment.replace("components/app/component.cfg", "v = 1", "v = 2");

    let output = deployment.tack(&["local", "dev"]);
    assert_eq!(output.code, 1, "{output}");
    assert!(
        output
            .stdout
            .contains("tack does not follow symlinks it did not make"),
        "{output}"
    );
    assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0);
}

/// A secret and everything computed from it stay out of every output and
/// of tack's state; files that render it are private.
#[test]
fn a_secret_never_appears_in_output_or_state() {
    let deployment = Deployment::new()
        .env(
            "dev",
            "[hosts]\nlocalhost = db, app\n\n[component:db]\npassword = hunter2-override\n",
        )
        .component(
            "db",
            "
            [secrets]
            password = hunter2

            [attributes]
            port = 5432

            [provide:database]
            url = postgres://app:{{ password }}@localhost:{{ port }}/app
            ",
        )
        .component(
            "app",
            "
            [require:database]

            [file:app.ini]
            content = {% for db in database %}url = {{ db.url }}{% endfor %}

            [file:public.txt]
            content = nothing secret here

            [command:check]
            env = URL={% for db in database %}{{ db.url }}{% endfor %}
            run = test -n \"$URL\"
            ",
        );
    let mut seen = String::new();
    for args in [
        &["local", "dev", "--explain", "--diff"][..],
        &["local", "dev", "--format", "json"][..],
    ] {
        let output = deployment.tack(args).success();
        seen.push_str(&output.stdout);
        seen.push_str(&output.stderr);
    }
    assert_eq!(
        deployment.read("work/app/app.ini"),
        "url = postgres://app:hunter2-override@localhost:5432/app\n"
    );
    assert_eq!(
        deployment.mode("work/app/app.ini") & 0o777,
        0o600,
        "a file rendering a secret is private"
    );
    assert_eq!(deployment.mode("work/app/public.txt") & 0o777, 0o644);

    // Change the secret: the file follows, the output still only hashes.
    deployment.replace("environments/dev.cfg", "hunter2-override", "swordfish-2");
    for args in [
        &["explain", "dev", "--diff"][..],
        &["local", "dev", "--explain", "--diff"][..],
    ] {
        let output = deployment.tack(args).success();
        assert!(
            output.stdout.contains("Updating App > File(app.ini)") || args[0] == "explain",
            "{output}"
        );
        seen.push_str(&output.stdout);
        seen.push_str(&output.stderr);
    }
    assert!(
        seen.contains("because secret password (environments/dev.cfg): changed"),
        "changes are named, never shown\n{seen}"
    );
    assert!(
        !seen.contains("blake3") && !seen.contains("keyed"),
        "{seen}"
    );
    for secret in ["hunter2", "swordfish"] {
        assert!(
            !seen.contains(secret),
            "`{secret}` leaked into the output\n{seen}"
        );
        for file in files_under(&deployment.path(".tack")) {
            let text = String::from_utf8_lossy(&std::fs::read(&file).unwrap()).into_owned();
            assert!(
                !text.contains(secret),
                "`{secret}` leaked into {}",
                file.display()
            );
        }
    }
}

/// `cp -a` of a deployment, as a user makes one to try something: the copy
/// must act on itself, never on the original (issue 10, finding 4).
fn copy_deployment(from: &Deployment) -> Deployment {
    let to = Deployment::new();
    let status = std::process::Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", from.root().display()))
        .arg(to.root())
        .status()
        .unwrap();
    assert!(status.success());
    to
}

#[test]
fn a_copied_deployment_prunes_and_repairs_itself_not_the_original() {
    let orig = Deployment::new()
        .env("dev", "[hosts]\nlocalhost = app\n")
        .component(
            "app",
            "
            [file:a.txt]
            content = a

            [file:b.txt]
            content = b

            [command:out]
            run = cat a.txt > out.txt
            outputs = out.txt
            ",
        );
    orig.tack(&["local", "dev"]).success();

    // In an unedited copy, a deleted step output is rebuilt in the copy.
    let copy = copy_deployment(&orig);
    std::fs::remove_file(copy.path("work/app/out.txt")).unwrap();
    let output = copy.tack(&["local", "dev"]).success();
    assert!(output.updated().contains("App > Command(out)"), "{output}");
    assert_eq!(copy.read("work/app/out.txt"), "a\n");

    // Dropping a file in the copy and pruning removes the copy's file.
    copy.replace(
        "components/app/component.cfg",
        "[file:b.txt]\ncontent = b\n",
        "",
    );
    let output = copy.tack(&["local", "dev", "--prune"]).success();
    let pruned = format!(
        "Pruned App > File(b.txt): removed `{}`",
        copy.path("work/app/b.txt").display()
    );
    assert!(output.stdout.contains(&pruned), "{output}");
    assert!(!copy.exists("work/app/b.txt"));
    assert_eq!(
        orig.read("work/app/b.txt"),
        "b\n",
        "the original is untouched"
    );
    assert!(
        !output.stdout.contains(orig.root().to_str().unwrap()),
        "{output}"
    );
    // The state names paths relative to the deployment.
    let state = std::fs::read_to_string(copy.path(".tack/state/dev/localhost/app.json")).unwrap();
    assert!(!state.contains(orig.root().to_str().unwrap()), "{state}");
}

#[test]
fn prune_leaves_a_path_that_a_configured_node_now_owns() {
    // Component `app` moves from host web1 to web2: web1's record of
    // app.conf is stale, but the file is web2's now.
    let d = Deployment::new()
        .env(
            "dev",
            "[environment]\nconnect_method = local\n[hosts]\nweb1 = app\nweb2 = other\n",
        )
        .component("app", "[file:app.conf]\ncontent = app\n")
        .component("other", "[file:other.conf]\ncontent = other\n");
    d.tack(&["local", "dev"]).success();
    d.write(
        "environments/dev.cfg",
        "[environment]\nconnect_method = local\n[hosts]\nweb1 = other\nweb2 = app\n",
    );
    d.tack(&["local", "dev"]).success();
    let output = d.tack(&["local", "dev", "--prune"]).success();
    assert!(
        d.exists("work/app/app.conf"),
        "web2's file was pruned\n{output}"
    );
    assert!(d.exists("work/other/other.conf"), "{output}");
    assert!(
        output
            .stdout
            .contains("Forgot web1: App > File(app.conf): `"),
        "{output}"
    );
    // The stale records are gone: the next run names nothing removed.
    let output = d.tack(&["local", "dev"]).success();
    assert!(!output.stdout.contains("no longer configured"), "{output}");
}

#[test]
fn one_prune_removes_a_directory_with_the_files_in_it() {
    let d = Deployment::new()
        .env("dev", "[hosts]\nlocalhost = app\n")
        .component(
            "app",
            "[file:keep.txt]\ncontent = k\n\n[directory:a]\n\n[file:a/f.txt]\ncontent = f\n\n[directory:a/b]\n\n[file:a/b/g.txt]\ncontent = g\n",
        );
    d.tack(&["local", "dev"]).success();
    d.write(
        "components/app/component.cfg",
        "[file:keep.txt]\ncontent = k\n",
    );
    let output = d.tack(&["local", "dev", "--prune"]).success();
    assert!(!d.exists("work/app/a"), "{output}");
    assert!(!output.stdout.contains("Kept"), "{output}");
    let output = d.tack(&["local", "dev"]).success();
    assert!(!output.stdout.contains("no longer configured"), "{output}");
    assert!(output.stdout.contains("0 updated, 1 unchanged"), "{output}");
}

#[test]
fn a_copied_deployment_never_signals_the_original_daemon() {
    // A daemon started from the work dir (its cwd), reloaded with HUP,
    // which would end a `sleep`: the copy must start its own.
    let orig = Deployment::new()
        .env("dev", "[hosts]\nlocalhost = app\n")
        .component(
            "app",
            "
            [attributes]
            greeting = hello

            [file:app.conf]
            content = {{ greeting }}

            [service:daemon]
            start = sh -c 'sleep 300 > /dev/null 2>&1 & echo $! > daemon.pid'
            pidfile = daemon.pid
            reload = signal:HUP
            ",
        );
    orig.tack(&["local", "dev"]).success();
    let pid_of = |d: &Deployment| -> i32 { d.read("work/app/daemon.pid").trim().parse().unwrap() };
    let original = pid_of(&orig);
    let alive = |pid: i32| nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok();

    let copy = copy_deployment(&orig);
    copy.replace(
        "components/app/component.cfg",
        "greeting = hello",
        "greeting = copy",
    );
    let explained = copy.tack(&["explain", "dev"]).success();
    assert!(
        explained.stdout.contains(&format!(
            "not running: pid {original} in `work/app/daemon.pid` is not a process of this deployment"
        )),
        "{explained}"
    );
    let output = copy.tack(&["local", "dev"]).success();
    assert!(
        output.stdout.contains("Starting App > Service(daemon)"),
        "{output}"
    );
    let own = pid_of(&copy);
    assert_ne!(own, original);
    assert!(
        alive(original),
        "the original's daemon got a signal\n{output}"
    );
    for pid in [original, own] {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

/// A step no longer configured leaves its work dir in place: the report
/// says `--prune` forgets it, and `--prune` forgets it and counts it so,
/// never as pruned.
#[test]
fn a_step_no_longer_configured_is_forgotten_not_pruned() {
    let d = Deployment::new()
        .env("dev", "[hosts]\nlocalhost = app\n")
        .component(
            "app",
            "[file:a.txt]\ncontent = a\n\n[command:build]\nrun = echo built > built.txt\noutputs = built.txt\n",
        );
    d.tack(&["local", "dev"]).success();
    d.write(
        "components/app/component.cfg",
        "[file:a.txt]\ncontent = a\n",
    );
    let out = d.tack(&["local", "dev"]).success();
    assert!(
        out.stdout.contains(&format!(
            "No longer configured App > Command(build): `{}` is left in place; --prune forgets the step",
            d.path("work/app").display()
        )),
        "{out}"
    );
    let out = d.tack(&["local", "dev", "--prune"]).success();
    assert!(
        out.stdout.contains(&format!(
            "Forgot App > Command(build): `{}` is left in place",
            d.path("work/app").display()
        )),
        "{out}"
    );
    assert!(out.stdout.contains("1 forgotten"), "{out}");
    assert!(!out.stdout.contains("pruned"), "{out}");
    assert_eq!(d.read("work/app/built.txt"), "built\n");
}

/// A step that `creates` data, deployed again after tack's state was lost
/// (`.tack/` wiped, the environment renamed): what it created exists, so
/// it is taken as done, not run over the data a second time.
#[test]
fn a_step_whose_data_exists_is_adopted_when_its_state_was_lost() {
    let d = Deployment::new()
        .env("dev", "[hosts]\nlocalhost = db\n")
        .component(
            "db",
            "[command:migrate]\nrun = mkdir -p data && echo migration >> data/log\ncreates = data/log\n",
        );
    d.tack(&["local", "dev"]).success();
    std::fs::remove_dir_all(d.path(".tack")).unwrap();
    let out = d.tack(&["local", "dev", "--explain"]).success();
    assert!(
        out.stdout.contains("Adopted Db > Command(migrate)"),
        "{out}"
    );
    assert!(
        out.stdout.contains("what it creates exists (`")
            && out
                .stdout
                .contains("taken as done, not run over it (--force runs it)"),
        "{out}"
    );
    assert_eq!(d.read("work/db/data/log"), "migration\n", "{out}");
    // Recorded now: the next deploy has nothing to say.
    let out = d.tack(&["local", "dev"]).success();
    assert!(!out.stdout.contains("Adopted"), "{out}");
    let out = d.tack(&["local", "dev", "--force", "db"]).success();
    assert!(out.updated().contains("Db > Command(migrate)"), "{out}");
    assert_eq!(d.read("work/db/data/log"), "migration\nmigration\n");
}
