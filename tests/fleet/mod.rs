//! `tack deploy ENV` over ssh, against a real OpenSSH server on 127.0.0.1
//! ([`Sshd`]): every host alias reaches it as the current user, and each
//! host keeps its deployment in its own `remote_dir` below one temp dir.
//! Nothing of ssh is mocked.

use std::fs;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::support::{set, snapshot_of, Deployment, Output, Sshd};

/// A deployment whose hosts are reached over the loopback sshd.
struct Fleet {
    d: Deployment,
    sshd: Sshd,
    remote: TempDir,
}

impl Fleet {
    /// `hosts` is the `[hosts]` section's body (`alpha = db`); every host
    /// gets `remote_dir = <temp>/<host>`.
    fn new(hosts: &[(&str, &str)]) -> Fleet {
        let sshd = Sshd::start();
        let remote = tempfile::Builder::new()
            .prefix("tack-remote-")
            .tempdir()
            .expect("create a temp dir");
        let d = Deployment::new();
        let fleet = Fleet { d, sshd, remote };
        fleet.write_env("prod", "ssh", hosts);
        fleet
    }

    fn write_env(&self, name: &str, method: &str, hosts: &[(&str, &str)]) {
        let mut text = format!(
            "[environment]\nconnect_method = {method}\nssh_config = {}\nconnect_timeout = 3\n\n[hosts]\n",
            self.sshd.config_path().display()
        );
        for (host, components) in hosts {
            text.push_str(&format!("{host} = {components}\n"));
        }
        for (host, _) in hosts {
            text.push_str(&format!(
                "\n[host:{host}]\nremote_dir = {}\n",
                self.root_of(host).display()
            ));
        }
        self.d.write(&format!("environments/{name}.cfg"), &text);
    }

    fn root_of(&self, host: &str) -> PathBuf {
        self.remote.path().join(host)
    }

    /// A file of a host's deployment, relative to its `remote_dir`.
    fn remote_path(&self, host: &str, relative: &str) -> PathBuf {
        self.root_of(host).join(relative)
    }

    fn read_remote(&self, host: &str, relative: &str) -> String {
        let path = self.remote_path(host, relative);
        fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
    }

    fn deploy(&self, args: &[&str]) -> Output {
        let mut all = vec!["deploy", "prod"];
        all.extend_from_slice(args);
        self.d.tack(&all)
    }
}

/// A database on alpha that takes a moment to migrate, and an app on beta
/// that may only start once the database is migrated.
fn db_and_app(fleet: &Fleet) {
    fleet.d.write(
        "components/db/component.cfg",
        "[attributes]\nname = shop\n\n\
         [file:db.conf]\ncontent =\n    database = {{ name }}\n\n\
         [command:migrate]\nrun = sleep 1; date +%s%N > migrated.txt\ncreates = migrated.txt\n\n\
         [provide:database]\npath = {{ workdir }}/migrated.txt\n",
    );
    fleet.d.write(
        "components/app/component.cfg",
        "[require:database]\nscope = environment\n\n\
         [file:early.txt]\ncontent = needs nothing\n\n\
         [file:app.ini]\ncontent =\n    db = {{ database[0].path }}\n\n\
         [command:start]\nrun = test -f {{ database[0].path }} && date +%s%N > started.txt\n\
         outputs = started.txt\n",
    );
}

fn nanos(text: &str) -> u128 {
    text.trim()
        .parse()
        .unwrap_or_else(|e| panic!("{text:?}: {e}"))
}

#[test]
fn two_hosts_deploy_at_once_and_a_barrier_waits_for_its_provider_on_the_other() {
    if !Sshd::installed(
        "two_hosts_deploy_at_once_and_a_barrier_waits_for_its_provider_on_the_other",
    ) {
        return;
    }
    let fleet = Fleet::new(&[("alpha", "db"), ("beta", "app")]);
    db_and_app(&fleet);
    let out = fleet.deploy(&[]).success();
    assert_eq!(
        out.updated(),
        set(&[
            "alpha: Db > File(db.conf)",
            "alpha: Db > Command(migrate)",
            "beta: App > File(early.txt)",
            "beta: App > File(app.ini)",
            "beta: App > Command(start)",
        ]),
        "{out}"
    );
    // Each host's files are in its own remote_dir, none here.
    assert_eq!(
        fleet.read_remote("alpha", "work/db/db.conf"),
        "database = shop\n"
    );
    let db = fleet.remote_path("alpha", "work/db/migrated.txt");
    assert_eq!(
        fleet.read_remote("beta", "work/app/app.ini"),
        format!("db = {}\n", db.display())
    );
    assert!(
        !fleet.d.exists("work"),
        "nothing is deployed on the deploying machine"
    );
    assert!(fleet.remote_path("beta", ".tack/state/prod/beta").is_dir());
    // beta's start found alpha's migrated database: it waited for it.
    let migrated = nanos(&fleet.read_remote("alpha", "work/db/migrated.txt"));
    let started = nanos(&fleet.read_remote("beta", "work/app/started.txt"));
    assert!(
        started >= migrated,
        "app started before the db was migrated\n{out}"
    );
    // beta's file that needs nothing did not wait for alpha's second.
    let early = out
        .stdout
        .find("Updating beta: App > File(early.txt)")
        .unwrap();
    let migrate = out
        .stdout
        .find("Updating alpha: Db > Command(migrate)")
        .unwrap();
    assert!(
        early < migrate,
        "beta waited for alpha without reason\n{out}"
    );
    assert!(
        out.stdout.contains("alpha: 2 updated, 0 unchanged"),
        "{out}"
    );
    assert!(out.stdout.contains("beta: 3 updated, 0 unchanged"), "{out}");
}

#[test]
fn a_repeated_deploy_over_ssh_runs_nothing_and_sends_only_the_plan() {
    if !Sshd::installed("a_repeated_deploy_over_ssh_runs_nothing_and_sends_only_the_plan") {
        return;
    }
    let fleet = Fleet::new(&[("alpha", "db"), ("beta", "app")]);
    db_and_app(&fleet);
    let transfers = |out: &Output| -> serde_json::Value {
        let report: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
        report["transfers"].clone()
    };
    let first = fleet.deploy(&["--format", "json"]).success();
    assert!(
        transfers(&first)["beta"]["content_bytes"].as_u64().unwrap() > 0,
        "{first}"
    );
    let before = snapshot_of(fleet.remote.path());
    let again = fleet.deploy(&["--format", "json"]).success();
    let report: serde_json::Value = serde_json::from_str(&again.stdout).unwrap();
    for host in report["hosts"].as_array().unwrap() {
        assert_eq!(host["summary"]["updated"], 0, "{again}");
        for node in host["nodes"].as_array().unwrap() {
            assert_eq!(node["outcome"], "unchanged", "{again}");
        }
    }
    for host in ["alpha", "beta"] {
        assert_eq!(transfers(&again)[host]["content_bytes"], 0, "{again}");
        assert!(transfers(&again)[host]["plan_bytes"].as_u64().unwrap() > 0);
    }
    // The lock file names its holder on every run that may write.
    let mut changed = before.changed(&snapshot_of(fleet.remote.path()));
    changed.retain(|path| !path.ends_with(".tack/lock"));
    assert!(changed.is_empty(), "a no-op changed {changed:?}");
}

#[test]
fn dry_run_explain_over_ssh_names_old_and_new_and_changes_nothing_there() {
    if !Sshd::installed("dry_run_explain_over_ssh_names_old_and_new_and_changes_nothing_there") {
        return;
    }
    let fleet = Fleet::new(&[("alpha", "db"), ("beta", "app")]);
    db_and_app(&fleet);
    fleet.deploy(&[]).success();
    fleet
        .d
        .replace("components/db/component.cfg", "name = shop", "name = store");
    let before = snapshot_of(fleet.remote.path());
    let out = fleet
        .deploy(&["--dry-run", "--explain", "--diff"])
        .success();
    assert_eq!(
        out.would_update(),
        set(&["alpha: Db > File(db.conf)", "alpha: Db > Command(migrate)"]),
        "{out}"
    );
    let block = out.block("Would update alpha: Db > File(db.conf)");
    assert!(
        block.contains(
            "components/db/component.cfg:2 [attributes] name (template variable `name`): shop -> store"
        ),
        "{block}"
    );
    assert!(
        block.contains("-database = shop\n") && block.contains("+database = store\n"),
        "{block}"
    );
    assert!(
        out.stdout.contains("beta: 0 would update, 3 unchanged"),
        "{out}"
    );
    let changed = before.changed(&snapshot_of(fleet.remote.path()));
    assert!(changed.is_empty(), "a dry run changed {changed:?}");
    // The deploy that follows does what the dry run said.
    let out = fleet.deploy(&[]).success();
    assert_eq!(
        out.updated(),
        set(&["alpha: Db > File(db.conf)", "alpha: Db > Command(migrate)"]),
        "{out}"
    );
}

#[test]
fn an_unreachable_host_fails_alone_and_named() {
    if !Sshd::installed("an_unreachable_host_fails_alone_and_named") {
        return;
    }
    let fleet = Fleet::new(&[("alpha", "db"), ("down", "other")]);
    db_and_app(&fleet);
    fleet.d.write(
        "components/other/component.cfg",
        "[file:x.txt]\ncontent = x\n",
    );
    let started = Instant::now();
    let out = fleet.deploy(&[]);
    assert_eq!(out.code, 1, "{out}");
    assert!(started.elapsed() < Duration::from_secs(20), "{out}");
    assert!(
        out.stderr.contains("error: host `down`: cannot reach it"),
        "{out}"
    );
    assert!(out.stderr.contains("1 host(s) failed (down)"), "{out}");
    assert!(out.stdout.contains("alpha: 2 updated"), "{out}");
    assert_eq!(
        fleet.read_remote("alpha", "work/db/db.conf"),
        "database = shop\n"
    );
}

#[test]
fn a_provider_failing_on_one_host_skips_its_dependents_on_the_other() {
    if !Sshd::installed("a_provider_failing_on_one_host_skips_its_dependents_on_the_other") {
        return;
    }
    let fleet = Fleet::new(&[("alpha", "db"), ("beta", "app")]);
    db_and_app(&fleet);
    fleet.d.replace(
        "components/db/component.cfg",
        "run = sleep 1; date",
        "run = exit 3; date",
    );
    let out = fleet.deploy(&[]);
    assert_eq!(out.code, 1, "{out}");
    assert!(
        out.stdout.contains("Failed alpha: Db > Command(migrate)"),
        "{out}"
    );
    assert!(
        out.stdout.contains(
            "Skipped beta: App > Command(start) (because alpha: Db > Command(migrate) failed)"
        ),
        "{out}"
    );
    assert!(
        out.updated().contains("beta: App > File(early.txt)"),
        "{out}"
    );
    assert!(!fleet.remote_path("beta", "work/app/started.txt").exists());
    // Fixed, the next deploy runs what was skipped.
    fleet.d.replace(
        "components/db/component.cfg",
        "run = exit 3; date",
        "run = sleep 1; date",
    );
    let out = fleet.deploy(&[]).success();
    assert!(
        out.updated().contains("beta: App > Command(start)"),
        "{out}"
    );
}

#[test]
fn tack_killed_mid_deploy_over_ssh_converges_on_the_next_run() {
    if !Sshd::installed("tack_killed_mid_deploy_over_ssh_converges_on_the_next_run") {
        return;
    }
    let fleet = Fleet::new(&[("alpha", "slow")]);
    fleet.d.write(
        "components/slow/component.cfg",
        "[file:before.txt]\ncontent = before\n\n\
         [command:build]\nrun = touch started; sleep 37; echo built > built.txt\noutputs = built.txt\n\n\
         [file:after.txt]\ncontent = after\n",
    );
    let mut tack = fleet
        .d
        .tack_command(&["deploy", "prod"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = fleet.remote_path("alpha", "work/slow/started");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !started.exists() {
        assert!(Instant::now() < deadline, "the step never started");
        std::thread::sleep(Duration::from_millis(50));
    }
    tack.kill().unwrap();
    tack.wait().unwrap();
    // The agent lost its deploying side: it stops the step (well before
    // the sleep would end) and saves the state; the next deploy repairs
    // the rest.
    let deadline = Instant::now() + Duration::from_secs(20);
    while still_running("sleep 37") {
        assert!(Instant::now() < deadline, "the agent left its step running");
        std::thread::sleep(Duration::from_millis(100));
    }
    fleet
        .d
        .replace("components/slow/component.cfg", "sleep 37", "sleep 0");
    let out = fleet.deploy(&[]).success();
    assert!(out.updated().contains("Slow > Command(build)"), "{out}");
    assert!(out.updated().contains("Slow > File(after.txt)"), "{out}");
    assert_eq!(fleet.read_remote("alpha", "work/slow/built.txt"), "built\n");
    assert_eq!(fleet.read_remote("alpha", "work/slow/after.txt"), "after\n");
    let again = fleet.deploy(&[]).success();
    assert!(again.updated().is_empty(), "{again}");
}

#[test]
fn two_deploys_of_one_environment_at_once_take_turns_on_each_host() {
    if !Sshd::installed("two_deploys_of_one_environment_at_once_take_turns_on_each_host") {
        return;
    }
    let fleet = Fleet::new(&[("alpha", "slow")]);
    fleet.d.write(
        "components/slow/component.cfg",
        "[command:build]\nrun = touch started; sleep 3; echo built > built.txt\noutputs = built.txt\n",
    );
    let first = fleet
        .d
        .tack_command(&["deploy", "prod"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = fleet.remote_path("alpha", "work/slow/started");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !started.exists() {
        assert!(Instant::now() < deadline, "the step never started");
        std::thread::sleep(Duration::from_millis(50));
    }
    let impatient = fleet.deploy(&["--lock-timeout", "0"]);
    assert_eq!(impatient.code, 1, "{impatient}");
    assert!(impatient.stderr.contains("host `alpha`"), "{impatient}");
    assert!(impatient.stderr.contains("lock"), "{impatient}");
    let first = first.wait_with_output().unwrap();
    assert!(first.status.success());
    // One that waits gets its turn, and finds nothing left to do.
    let patient = fleet.deploy(&[]).success();
    assert!(patient.updated().is_empty(), "{patient}");
}

/// The same deployment over ssh and with `connect_method = local`, after
/// each edit of a random sequence: the hosts' trees are byte for byte the
/// ones deployed locally.
#[test]
fn a_random_edit_sequence_over_ssh_ends_where_a_local_deploy_ends() {
    if !Sshd::installed("a_random_edit_sequence_over_ssh_ends_where_a_local_deploy_ends") {
        return;
    }
    let fleet = Fleet::new(&[("alpha", "a"), ("beta", "b")]);
    let local = Deployment::new();
    local.write(
        "environments/prod.cfg",
        "[environment]\nconnect_method = local\n\n[hosts]\nalpha = a\nbeta = b\n",
    );
    let mut seed: u64 = 0x5eed_1234_abcd_0001;
    let mut next = move |below: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % below
    };
    let mut files_a = vec![0u64];
    let mut value = 0;
    for step in 0..8 {
        match next(4) {
            0 => value = next(1000),
            1 => files_a.push(next(1000)),
            2 if files_a.len() > 1 => {
                files_a.remove(0);
            }
            _ => value += 1,
        }
        let mut a =
            format!("[attributes]\nvalue = {value}\n\n[provide:shared]\nvalue = {{{{ value }}}}\n");
        for file in &files_a {
            a.push_str(&format!(
                "\n[file:f{file}.txt]\ncontent = {file} {{{{ value }}}}\nmode = 0640\n"
            ));
        }
        let b = "[require:shared]\nscope = environment\n\n\
                 [directory:data]\nmode = 0750\n\n\
                 [file:data/seen.txt]\ncontent = {{ shared[0].value }}\n\n\
                 [command:copy]\nrun = cat data/seen.txt > copy.txt\noutputs = copy.txt\n";
        for deployment in [&fleet.d, &local] {
            deployment.write("components/a/component.cfg", &a);
            deployment.write("components/b/component.cfg", b);
        }
        fleet.deploy(&["--prune"]).success();
        local.tack(&["local", "prod", "--prune"]).success();
        for (host, component) in [("alpha", "a"), ("beta", "b")] {
            let over_ssh = snapshot_of(&fleet.remote_path(host, &format!("work/{component}")));
            let here = snapshot_of(&local.path(&format!("work/{component}")));
            assert_eq!(
                contents(&over_ssh),
                contents(&here),
                "step {step}: {host}'s work/{component} differs"
            );
        }
    }
}

/// Whether a process whose command line contains `text` runs.
fn still_running(text: &str) -> bool {
    fs::read_dir("/proc").unwrap().flatten().any(|entry| {
        fs::read(entry.path().join("cmdline"))
            .map(|cmdline| {
                String::from_utf8_lossy(&cmdline)
                    .replace('\0', " ")
                    .contains(text)
            })
            .unwrap_or(false)
    })
}

/// Paths, kinds, modes and contents of a snapshot, without times and
/// inodes.
fn contents(snapshot: &crate::support::Snapshot) -> Vec<(String, String)> {
    use crate::support::Entry;
    snapshot
        .0
        .iter()
        .map(|(path, entry)| {
            let what = match entry {
                Entry::File { content, mode, .. } => format!("file {mode:o} {content}"),
                Entry::Directory { mode } => format!("dir {mode:o}"),
                Entry::Symlink { target, .. } => format!("link {}", target.display()),
            };
            (path.clone(), what)
        })
        .collect()
}

/// What crosses each host's session, captured by an `ssh` first in `PATH`
/// that copies its stdin: a secret of a component on beta goes only to
/// beta, and only as the bytes of the file that renders it.
#[test]
fn a_secret_travels_only_to_the_host_that_uses_it() {
    if !Sshd::installed("a_secret_travels_only_to_the_host_that_uses_it") {
        return;
    }
    let fleet = Fleet::new(&[("alpha", "db"), ("beta", "app")]);
    db_and_app(&fleet);
    fleet.d.write(
        "components/app/component.cfg",
        "[secrets]\npassword = hunter2-in-the-clear\n\n\
         [file:app.ini]\ncontent = password = {{ password }}\n",
    );
    let capture = tempfile::tempdir().unwrap();
    let bin = tempfile::tempdir().unwrap();
    let wrapper = bin.path().join("ssh");
    fs::write(
        &wrapper,
        "#!/bin/sh\n\
         dest=; after=\n\
         for a in \"$@\"; do\n\
         if [ -n \"$after\" ] && [ -z \"$dest\" ]; then dest=$a; fi\n\
         [ \"$a\" = \"--\" ] && after=1\n\
         done\n\
         tee -a \"$CAPTURE/$dest.in\" | /usr/bin/ssh \"$@\"\n",
    )
    .unwrap();
    fs::set_permissions(
        &wrapper,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let path = format!(
        "{}:{}",
        bin.path().display(),
        std::env::var("PATH").unwrap()
    );
    let out = fleet
        .d
        .tack_command(&["deploy", "prod"])
        .env("PATH", path)
        .env("CAPTURE", capture.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let sent = |host: &str| fs::read(capture.path().join(format!("{host}.in"))).unwrap();
    let secret = b"hunter2-in-the-clear";
    let contains = |haystack: &[u8]| haystack.windows(secret.len()).any(|w| w == secret);
    assert!(!sent("alpha").is_empty(), "the capture saw alpha's session");
    assert!(
        !contains(&sent("alpha")),
        "alpha's session carried beta's secret"
    );
    assert!(contains(&sent("beta")), "beta's session carried its file");
    assert_eq!(
        fleet.read_remote("beta", "work/app/app.ini"),
        "password = hunter2-in-the-clear\n"
    );
    let alpha = snapshot_of(&fleet.root_of("alpha"));
    let everywhere: String = contents(&alpha).into_iter().map(|(_, what)| what).collect();
    assert!(!everywhere.contains("hunter2"), "alpha holds beta's secret");
}

/// Ctrl-C (here SIGINT to tack alone) stops every host: each agent stops
/// its running step and saves its state, and tack exits 130 once they
/// reported; the next deploy runs the step again.
#[test]
fn an_interrupt_stops_every_host_and_the_next_deploy_finishes() {
    if !Sshd::installed("an_interrupt_stops_every_host_and_the_next_deploy_finishes") {
        return;
    }
    let fleet = Fleet::new(&[("alpha", "slow"), ("beta", "slow")]);
    fleet.d.write(
        "components/slow/component.cfg",
        "[command:build]\nrun = touch started; sleep 41; echo built > built.txt\noutputs = built.txt\n",
    );
    let tack = fleet
        .d
        .tack_command(&["deploy", "prod"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    for host in ["alpha", "beta"] {
        while !fleet.remote_path(host, "work/slow/started").exists() {
            assert!(
                Instant::now() < deadline,
                "the step never started on {host}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    let pid = nix::unistd::Pid::from_raw(tack.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).unwrap();
    let started = Instant::now();
    let out = tack.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{stdout}{stderr}");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{stdout}{stderr}"
    );
    assert!(
        stdout.contains("Interrupted alpha: Slow > Command(build)"),
        "{stdout}{stderr}"
    );
    assert!(
        stdout.contains("Interrupted beta: Slow > Command(build)"),
        "{stdout}{stderr}"
    );
    assert!(!still_running("sleep 41"), "a step outlived the interrupt");
    fleet
        .d
        .replace("components/slow/component.cfg", "sleep 41", "sleep 0");
    let out = fleet.deploy(&[]).success();
    assert!(
        out.updated().contains("alpha: Slow > Command(build)"),
        "{out}"
    );
    assert!(
        out.updated().contains("beta: Slow > Command(build)"),
        "{out}"
    );
}

/// `--host-jobs 1` sets up one session at a time, and every host still
/// deploys, in order where one requires from another.
#[test]
fn host_jobs_limits_the_sessions_set_up_at_once_and_every_host_deploys() {
    if !Sshd::installed("host_jobs_limits_the_sessions_set_up_at_once_and_every_host_deploys") {
        return;
    }
    let fleet = Fleet::new(&[("alpha", "db"), ("beta", "app"), ("gamma", "other")]);
    db_and_app(&fleet);
    fleet.d.write(
        "components/other/component.cfg",
        "[file:x.txt]\ncontent = x\n",
    );
    let out = fleet.deploy(&["--host-jobs", "1"]).success();
    for line in ["alpha: 2 updated", "beta: 3 updated", "gamma: 1 updated"] {
        assert!(out.stdout.contains(line), "{out}");
    }
    let refused = fleet.deploy(&["--host-jobs", "0"]);
    assert_eq!(refused.code, 2, "{refused}");
}

/// A host that requires from an unreachable host whose `remote_dir` is
/// below a home it never told is not deployed: its app.ini would name a
/// path that exists nowhere. One that needs nothing of it deploys.
#[test]
fn a_host_requiring_from_an_unreachable_host_of_unknown_root_is_not_deployed() {
    if !Sshd::installed("a_host_requiring_from_an_unreachable_host_of_unknown_root_is_not_deployed")
    {
        return;
    }
    let fleet = Fleet::new(&[("down", "db"), ("alpha", "app"), ("beta", "other")]);
    db_and_app(&fleet);
    // Only a file, no step: nothing on alpha would wait for `down`.
    fleet.d.write(
        "components/app/component.cfg",
        "[require:database]\nscope = environment\n\n\
         [file:app.ini]\ncontent = db = {{ database[0].path }}\n",
    );
    fleet.d.write(
        "components/other/component.cfg",
        "[file:x.txt]\ncontent = x\n",
    );
    let env = fleet.d.read("environments/prod.cfg");
    let relative = env.replace(
        &format!("remote_dir = {}", fleet.root_of("down").display()),
        "remote_dir = shop",
    );
    assert_ne!(env, relative);
    fleet.d.write("environments/prod.cfg", &relative);
    let out = fleet.deploy(&[]);
    assert_eq!(out.code, 1, "{out}");
    assert!(
        out.stderr.contains(
            "error: host `alpha`: not deployed: it requires from `down`, which cannot be reached"
        ),
        "{out}"
    );
    assert!(
        out.stderr.contains("error: host `down`: cannot reach it"),
        "{out}"
    );
    assert!(!fleet.root_of("alpha").exists(), "alpha was written to");
    assert_eq!(fleet.read_remote("beta", "work/other/x.txt"), "x\n");
}
