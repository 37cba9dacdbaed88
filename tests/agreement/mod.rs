//! The incremental path (`src/incremental.rs`, `src/manifest.rs`) ends
//! where the full path ends. Each scenario is built twice from scratch,
//! identically; the last run takes the incremental path in one and the
//! full path in the other (`full()` deletes the manifest), and the
//! outcomes are compared: exit code, what ran, summaries, errors, `work/`.
//!
//! These began as a review's reproductions of holes, all fixed since: a
//! state file lost or corrupted by hand, an error on a host the run does
//! not deploy, a component reached on one of its hosts only, a deploy that
//! ran while another looked, a source written twice within one timestamp
//! tick, another machine choosing other hosts. Two need a special machine
//! and are ignored by default: see their docs.

use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::support::{set, Deployment};

const MANIFEST: &str = ".tack/state/dev/.manifest.json";

/// Runs `scenario` twice from scratch, with `take_full` false and true
/// (whether to call [`full`] before its last run), and asserts that both
/// end alike, as `what` describes it.
fn agree<T: PartialEq + std::fmt::Debug>(what: &str, scenario: impl Fn(bool) -> T) {
    let incremental = scenario(false);
    let full = scenario(true);
    assert_eq!(incremental, full, "{what}: incremental vs full");
}

/// Makes the next run take the full path.
fn full(d: &Deployment) {
    fs::remove_file(d.path(MANIFEST)).expect("a manifest to remove");
}

/// The nodes a run printed as run (`Updating`, `Restored`, `Starting`, ...).
fn ran(out: &crate::support::Output) -> Vec<String> {
    out.stdout
        .lines()
        .filter(|line| {
            ["Updating ", "Restored ", "Starting ", "Reloading "]
                .iter()
                .any(|verb| line.starts_with(verb))
        })
        .map(str::to_string)
        .collect()
}

/// The summary line of `host` in a text report.
fn summary<'a>(stdout: &'a str, host: &str) -> &'a str {
    let prefix = format!("{host}: ");
    let line = stdout
        .lines()
        .find(|line| line.starts_with(&prefix) && line.contains(" unchanged"))
        .unwrap_or_else(|| panic!("no summary for {host} in\n{stdout}"));
    // Without the time.
    line.rsplit_once(" in ").map_or(line, |(counts, _)| counts)
}

// ---------------------------------------------------------------------------
// 1. State files changed behind the manifest's back.
// ---------------------------------------------------------------------------

fn with_a_step() -> Deployment {
    let d = Deployment::new()
        .env("dev", "[hosts]\nlocalhost = app, web\n")
        .component(
            "app",
            "
            [file:app.conf]
            content = one

            [command:build]
            run = echo built >> runs; touch out
            outputs = out
            ",
        )
        .component("web", "[file:index.html]\ncontent = hi\n");
    d.tack(&["local", "dev"]).success();
    d
}

/// A component's state file deleted by hand (or lost: the state files are
/// not fsynced, so a power cut can lose one while the manifest survives).
/// Both paths verify the component against the disk: its step has no
/// record, so it runs again, and the file node's record is written anew
/// (the manifest records each state file's stat).
#[test]
fn a_deleted_state_file_is_verified_against_disk() {
    agree("(ran, step runs, state file exists)", |take_full| {
        let d = with_a_step();
        fs::remove_file(d.path(".tack/state/dev/localhost/app.json")).unwrap();
        if take_full {
            full(&d);
        }
        let out = d.tack(&["local", "dev", "--no-cache-read"]).success();
        (
            ran(&out),
            d.read("work/app/runs"),
            d.exists(".tack/state/dev/localhost/app.json"),
        )
    });
}

/// The same through `tack explain ENV NODE` (a dry run): both paths say the
/// step would run (never applied).
#[test]
fn explain_sees_a_deleted_state_file() {
    agree("explain", |take_full| {
        let d = with_a_step();
        fs::remove_file(d.path(".tack/state/dev/localhost/app.json")).unwrap();
        if take_full {
            full(&d);
        }
        let out = d.tack(&["explain", "dev", "app/command:build"]).success();
        let would: Vec<String> = out
            .stdout
            .lines()
            .filter(|line| line.starts_with("Would ") || line.starts_with("    "))
            .map(str::to_string)
            .collect();
        would
    });
}

/// A truncated (corrupt) state file: both paths warn on stderr that it is
/// corrupt and verify the component (its step runs again).
#[test]
fn a_corrupt_state_file_is_reported_and_verified() {
    agree("(ran, warned)", |take_full| {
        let d = with_a_step();
        let state = d.path(".tack/state/dev/localhost/app.json");
        let text = fs::read(&state).unwrap();
        fs::write(&state, &text[..text.len() / 2]).unwrap();
        if take_full {
            full(&d);
        }
        let out = d.tack(&["local", "dev", "--no-cache-read"]).success();
        (ran(&out), out.stderr.contains("is corrupt"))
    });
}

// ---------------------------------------------------------------------------
// 2. Errors on a host this run does not deploy.
// ---------------------------------------------------------------------------

/// `--host front`: db on front provides `database`, app on back requires it
/// with `scope = environment`. db renames the provided field `url` to
/// `uri` (the provided keys, hence the wiring signature, stay the same).
/// app's template on back now reads an undefined field. Both paths stop
/// with exit code 2 before touching anything: the incremental path
/// configures app@back, which the change reaches, without deploying it.
#[test]
fn an_error_on_a_host_not_deployed_is_reported() {
    agree("(exit code, db.conf)", |take_full| {
        let d = Deployment::new()
            .env("dev", "[hosts]\nfront = db\nback = app\n")
            .component(
                "db",
                "
                [attributes]
                port = 5432

                [provide:database]
                url = postgresql://{{ host }}:{{ port }}/app

                [file:db.conf]
                content = port = {{ port }}
                ",
            )
            .component(
                "app",
                "
                [require:database]
                scope = environment

                [file:app.conf]
                content = {% for db in database %}{{ db.url }}{% endfor %}
                ",
            );
        d.tack(&["local", "dev", "--host", "front"]).success();
        d.replace("components/db/component.cfg", "url =", "uri =");
        d.replace("components/db/component.cfg", "5432", "6000");
        if take_full {
            full(&d);
        }
        let out = d.tack(&["local", "dev", "--host", "front"]);
        (out.code, d.read("work/db/db.conf"))
    });
}

// ---------------------------------------------------------------------------
// 3. A component placed on several hosts, only one placement reached.
// ---------------------------------------------------------------------------

/// app is on hosts a and b (both deployed: `connect_method = local`) and
/// requires `database` from its own host (dba on a, dbb on b); its command
/// does not read it. dba's port changes: app@a is reached, app@b is not,
/// and b's summary still counts app's node as unchanged (the part is kept
/// by placement, not by component name).
///
/// (app runs a command rather than deploying a file: with `connect_method =
/// local`, one path deployed by two hosts is a configuration error.)
fn two_hosts() -> Deployment {
    let mut d = Deployment::new().env("dev", "[hosts]\na = dba, app\nb = dbb, app\n");
    for db in ["dba", "dbb"] {
        d = d.component(
            db,
            "[attributes]\nport = 5432\n\n[provide:database]\nurl = db:{{ port }}\n\n\
             [file:db.conf]\ncontent = {{ port }}\n",
        );
    }
    let d = d.component(
        "app",
        "[require:database]\none = true\n\n[command:hello]\nrun = true\n",
    );
    d.tack(&["local", "dev"]).success();
    d.replace("components/dba/component.cfg", "5432", "6000");
    d
}

/// See [`two_hosts`]: the text summary.
#[test]
fn a_summary_counts_a_component_reached_on_one_of_its_hosts() {
    agree("summaries", |take_full| {
        let d = two_hosts();
        if take_full {
            full(&d);
        }
        let out = d.tack(&["local", "dev"]).success();
        (
            summary(&out.stdout, "a").to_string(),
            summary(&out.stdout, "b").to_string(),
        )
    });
}

/// See [`two_hosts`]: the same through `--format json`, nodes and summary.
#[test]
fn a_json_summary_counts_a_component_reached_on_one_of_its_hosts() {
    agree("JSON hosts", |take_full| {
        let d = two_hosts();
        if take_full {
            full(&d);
        }
        let out = d.tack(&["local", "dev", "--format", "json"]).success();
        let report: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
        let hosts: Vec<(serde_json::Value, Vec<(String, String)>)> = report["hosts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|host| {
                let nodes = host["nodes"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|n| {
                        (
                            n["id"].as_str().unwrap().to_string(),
                            n["outcome"].as_str().unwrap().to_string(),
                        )
                    })
                    .collect();
                (host["summary"].clone(), nodes)
            })
            .collect();
        hosts
    });
}

// ---------------------------------------------------------------------------
// 4. A deploy that finishes while an incremental run looks and configures.
// ---------------------------------------------------------------------------

/// A pipe with its buffer full: a process writing to it blocks until the
/// reader drains it. Holds run A right after it looked at the manifest and
/// configured its part (its `--explain` line is its first output), before
/// it stats the manifest and takes the lock.
fn full_pipe() -> (std::io::PipeReader, std::io::PipeWriter) {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    let (reader, mut writer) = std::io::pipe().unwrap();
    fcntl(&writer, FcntlArg::F_SETFL(OFlag::O_NONBLOCK)).unwrap();
    let chunk = [b'.'; 4096];
    loop {
        match writer.write(&chunk) {
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(e) => panic!("{e}"),
        }
    }
    // Some room may be left that is smaller than a chunk.
    while writer.write(b".").is_ok() {}
    fcntl(&writer, FcntlArg::F_SETFL(OFlag::empty())).unwrap();
    (reader, writer)
}

/// Whether a thread of `pid` sleeps writing to a pipe.
fn blocked_on_pipe(pid: u32) -> bool {
    let tasks = fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten();
    tasks
        .flatten()
        .any(|task| fs::read_to_string(task.path().join("wchan")).is_ok_and(|w| w.contains("pipe")))
}

/// Starts run A (`local dev --explain`) and holds it on a full pipe after
/// it looked at the manifest and configured its part; runs `b`; lets A
/// finish, which must notice that another deploy ran meanwhile.
fn while_a_run_looks(d: &Deployment, b: impl FnOnce()) {
    let (mut reader, writer) = full_pipe();
    let mut a = d
        .tack_command(&["local", "dev", "--explain"])
        .stdout(writer)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while !blocked_on_pipe(a.id()) {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "A never blocked"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    b();
    let drain = std::thread::spawn(move || {
        let mut all = Vec::new();
        reader.read_to_end(&mut all).unwrap();
        String::from_utf8_lossy(&all)
            .trim_start_matches('.')
            .to_string()
    });
    let status = a.wait().unwrap();
    let a_out = drain.join().unwrap();
    assert!(status.success(), "A: {a_out}");
    assert!(
        a_out.contains("Configuring 1 of 2 components (changed: y)")
            && a_out.contains("Configuring every component: another deploy ran"),
        "A looked incrementally, then took the full path: {a_out}"
    );
}

/// Run A (incremental, an edit to `y`) has read manifest M1 and configured
/// its part when run B (`--force x`, full path) takes the lock, forgets M1,
/// fails in x's step and releases the lock. Holding the lock, A finds the
/// manifest it read gone and takes the full path, so x's step, which B
/// left unfinished, runs again as on the full path.
#[test]
fn a_deploy_that_failed_while_a_run_looked_is_retried() {
    agree("(ran, x's step runs)", |take_full| {
        let d = Deployment::new()
            .env("dev", "[hosts]\nlocalhost = x, y\n")
            .component(
                "x",
                "
                [command:step]
                run = test ! -e ../../fail && echo ran >> runs && touch out
                outputs = out
                ",
            )
            .component(
                "y",
                "[attributes]\nv = 1\n\n[file:y.conf]\ncontent = {{ v }}\n",
            );
        d.tack(&["local", "dev"]).success();
        d.replace("components/y/component.cfg", "v = 1", "v = 2");

        while_a_run_looks(&d, || {
            d.write("fail", "");
            let b = d.tack(&["local", "dev", "--force", "x", "--no-cache-read"]);
            assert_eq!(b.code, 1, "B's forced step fails\n{b}");
            fs::remove_file(d.path("fail")).unwrap();
        });

        if take_full {
            full(&d);
        }
        let out = d.tack(&["local", "dev", "--no-cache-read"]).success();
        (ran(&out), d.read("work/x/runs"))
    });
}

/// The same window with B killed instead of failing (SIGKILL after its
/// first node, the crash harness's switch; with `--jobs 1` that is y's
/// file, and x's forced step never ran). B leaves x's step marked
/// unfinished in x.json and y's file finished in the journal. A, holding
/// the lock, finds the manifest gone and the journal there, takes the full
/// path, replays the journal and runs x's step (the crash-safety promise:
/// the next run repairs exactly what the dead run left unfinished).
#[test]
fn a_deploy_killed_while_a_run_looked_is_repaired() {
    agree("(ran, x's step runs)", |take_full| {
        let d = Deployment::new()
            .env("dev", "[hosts]\nlocalhost = x, y\n")
            .component(
                "x",
                "[command:step]\nrun = echo ran >> runs && touch out\noutputs = out\n",
            )
            .component(
                "y",
                "[attributes]\nv = 1\n\n[file:y.conf]\ncontent = {{ v }}\n",
            );
        d.tack(&["local", "dev"]).success();
        d.replace("components/y/component.cfg", "v = 1", "v = 2");

        while_a_run_looks(&d, || {
            let args = [
                "local",
                "dev",
                "--force",
                "x",
                "--jobs",
                "1",
                "--no-cache-read",
            ];
            let (b, signal) = d.tack_with_env(&args, &[("TACK_TEST_KILL_AFTER_NODES", "1")]);
            assert_eq!(signal, Some(9), "B was killed\n{b}");
            let journal = d.read(".tack/state/dev/localhost.journal");
            assert!(journal.contains("y/file:y.conf"), "{journal}");
            assert!(!journal.contains("x/command:step"), "{journal}");
        });
        assert!(
            !d.exists(".tack/state/dev/localhost.journal"),
            "A replayed B's journal into the state"
        );

        if take_full {
            full(&d);
        }
        let out = d.tack(&["local", "dev", "--no-cache-read"]).success();
        (ran(&out), d.read("work/x/runs"))
    });
}

/// db provides `database`, app and web require it, tools stands alone.
/// app's template is edited, so app is what a run finds changed; db is
/// configured too, as app's provider, and web is not.
fn provider_and_two_requirers() -> Deployment {
    let requirer = |name: &str| {
        format!("[require:database]\none = true\n\n[file:{name}.conf]\ncontent = {name} {{{{ database.port }}}}\n")
    };
    let d = Deployment::new()
        .env("dev", "[hosts]\nlocalhost = db, app, web, tools\n")
        .component(
            "db",
            "[attributes]\nport = 5432\n\n[provide:database]\nport = {{ port }}\n\n\
             [file:db.conf]\ncontent = {{ port }}\n",
        )
        .component("app", &requirer("app"))
        .component("web", &requirer("web"))
        .component("tools", "[file:motd]\ncontent = tools\n");
    d.tack(&["local", "dev"]).success();
    d.replace(
        "components/app/component.cfg",
        "content = app",
        "content = APP",
    );
    d
}

/// Runs `local dev`, stopped after it looked at every file and before it
/// configured (`TACK_TEST_STOP_AFTER_LOOK`), and makes `edit` then.
fn edit_while_stopped_after_look(d: &Deployment, edit: impl FnOnce()) {
    let mut run = d
        .tack_command(&["local", "dev"])
        .env("TACK_TEST_STOP_AFTER_LOOK", "1")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let pid = run.id();
    let started = Instant::now();
    let stopped = || {
        let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        stat.rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('T'))
    };
    while !stopped() {
        assert!(started.elapsed() < Duration::from_secs(20), "never stopped");
        std::thread::sleep(Duration::from_millis(5));
    }
    edit();
    let resumed = Command::new("kill")
        .args(["-CONT", &pid.to_string()])
        .status();
    assert!(resumed.unwrap().success());
    assert!(run.wait().unwrap().success());
}

/// db's port is edited after the run looked: the run deploys the new port
/// to db and app, which it configures, but not to web. The manifest must
/// not vouch for db's new file then, or web would never be updated: the
/// next run updates web, as the full path would.
#[test]
fn a_provider_edited_after_the_look_reaches_every_requirer_next_time() {
    let d = provider_and_two_requirers();
    edit_while_stopped_after_look(&d, || {
        d.replace("components/db/component.cfg", "5432", "6000");
    });
    assert_eq!(d.read("work/web/web.conf"), "web 5432\n");
    let next = d.tack(&["local", "dev"]).success();
    assert_eq!(d.read("work/web/web.conf"), "web 6000\n", "{next}");
    assert_eq!(d.read("work/app/app.conf"), "APP 6000\n");
}

/// The same with db's port overridden in the environment file after the
/// run looked.
#[test]
fn an_override_added_after_the_look_reaches_every_requirer_next_time() {
    let d = provider_and_two_requirers();
    edit_while_stopped_after_look(&d, || {
        let env = d.read("environments/dev.cfg");
        d.write(
            "environments/dev.cfg",
            &format!("{env}\n[component:db]\nport = 8000\n"),
        );
    });
    let next = d.tack(&["local", "dev"]).success();
    assert_eq!(d.read("work/web/web.conf"), "web 8000\n", "{next}");
    assert_eq!(d.read("work/db/db.conf"), "8000\n");
}

// ---------------------------------------------------------------------------
// 5. The racy rule.
// ---------------------------------------------------------------------------

/// A directory on a file system with one-second timestamps (ext4 with
/// 128-byte inodes, ext3, FAT, some network file systems), from
/// `TACK_TEST_COARSE_DIR`, e.g.:
///
/// ```sh
/// truncate -s 64M /tmp/coarse.img && mkfs.ext4 -q -F -I 128 /tmp/coarse.img
/// mkdir -p /mnt/coarse && mount -o loop /tmp/coarse.img /mnt/coarse
/// TACK_TEST_COARSE_DIR=/mnt/coarse cargo test --test integration agreement -- --ignored
/// ```
fn coarse_dir() -> Option<PathBuf> {
    let dir = PathBuf::from(std::env::var_os("TACK_TEST_COARSE_DIR")?);
    let probe = dir.join(format!("probe-{}", std::process::id()));
    fs::write(&probe, "x").ok()?;
    let nanos = {
        use std::os::unix::fs::MetadataExt;
        fs::metadata(&probe).ok()?.mtime_nsec()
    };
    let _ = fs::remove_file(&probe);
    (nanos == 0).then_some(dir)
}

fn run_tack(root: &Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_tack"))
        .args(args)
        .current_dir(root)
        .env_remove("TACK_CACHE_DIR")
        .output()
        .unwrap()
}

fn write(root: &Path, path: &str, text: &str) {
    let path = root.join(path);
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, text).unwrap();
}

fn mtime_secs(path: &Path) -> i64 {
    use std::os::unix::fs::MetadataExt;
    fs::metadata(path).unwrap().mtime()
}

/// Whether the racy edit could be staged: `app.conf.in` written (same size)
/// twice within one timestamp tick, tack reading it in between, and the
/// manifest written in a later tick. Returns the final content of
/// `app.conf.in` and of the deployed `app.conf` after one more run.
fn racy_edit(dir: &Path, take_full: bool) -> Option<(String, String)> {
    let root = tempfile::Builder::new()
        .prefix("tack-racy-")
        .tempdir_in(dir)
        .unwrap();
    let root = root.path().canonicalize().unwrap();
    write(&root, "environments/dev.cfg", "[hosts]\nlocalhost = app\n");
    write(
        &root,
        "components/app/component.cfg",
        "[file:app.conf]\nsource = app.conf.in\n\n[command:wait]\nrun = touch started; sleep 1.5\n",
    );
    write(&root, "components/app/app.conf.in", "v=0\n");
    assert!(run_tack(&root, &["local", "dev"]).status.success());
    fs::remove_file(root.join("work/app/started")).unwrap();

    // Just after a second starts, so that tack reads within it.
    while SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_millis()
        > 20
    {
        std::thread::sleep(Duration::from_millis(5));
    }
    let source = root.join("components/app/app.conf.in");
    fs::write(&source, "v=1\n").unwrap();
    let tick = mtime_secs(&source);
    let mut deploy = Command::new(env!("CARGO_BIN_EXE_tack"))
        .args(["local", "dev"])
        .current_dir(&root)
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    // `started` exists once app.conf was rendered (from v=1) and written.
    while !root.join("work/app/started").exists() {
        std::thread::sleep(Duration::from_millis(2));
    }
    fs::write(&source, "v=2\n").unwrap();
    let same_tick = mtime_secs(&source) == tick;
    assert!(deploy.wait().unwrap().success());
    if !same_tick || mtime_secs(&root.join(MANIFEST)) <= tick {
        return None;
    }
    if take_full {
        fs::remove_file(root.join(MANIFEST)).unwrap();
    }
    assert!(run_tack(&root, &["local", "dev"]).status.success());
    Some((
        fs::read_to_string(&source).unwrap(),
        fs::read_to_string(root.join("work/app/app.conf")).unwrap(),
    ))
}

/// A source edited twice within one timestamp tick (same size), with tack
/// reading it in between, keeps the stat tack recorded. The manifest does
/// not vouch for a stat from the tick configuring began in unless the file
/// still has the configured content once the tick passed, so the next run
/// deploys the second edit, as the full path does. Needs a file system
/// with coarse timestamps (see [`coarse_dir`]).
#[test]
#[ignore = "needs a file system with 1 s timestamps in TACK_TEST_COARSE_DIR"]
fn a_racily_clean_source_is_checked_by_content() {
    let dir = coarse_dir().expect("TACK_TEST_COARSE_DIR: a dir with 1 s timestamps");
    let mut outcomes = Vec::new();
    for take_full in [false, true] {
        let outcome = (0..5).find_map(|_| racy_edit(&dir, take_full));
        outcomes.push(outcome.expect("the racy edit could not be staged"));
    }
    assert_eq!(
        outcomes[1].1, "v=2\n",
        "the full path deploys the last edit"
    );
    assert_eq!(
        outcomes[0], outcomes[1],
        "(source, deployed): incremental vs full"
    );
}

// ---------------------------------------------------------------------------
// 6. Which hosts a run deploys.
// ---------------------------------------------------------------------------

/// Runs tack under another host name (a UTS namespace; needs root).
fn tack_as(d: &Deployment, hostname: &str, args: &[&str]) -> Option<crate::support::Output> {
    let script = format!("hostname {hostname} && exec \"$0\" \"$@\"",);
    let output = Command::new("unshare")
        .arg("-u")
        .arg("sh")
        .arg("-c")
        .arg(script)
        .arg(env!("CARGO_BIN_EXE_tack"))
        .args(args)
        .current_dir(d.root())
        .env_remove("TACK_CACHE_DIR")
        .output()
        .ok()?;
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    if stderr.contains("unshare failed") || stderr.contains("hostname:") {
        return None;
    }
    Some(crate::support::Output {
        args: args.join(" "),
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr,
    })
}

/// `connect_method = ssh` without `--host` deploys the hosts that name this
/// machine. The manifest records the machine's name, so the same
/// deployment directory used from another machine (a shared checkout) or
/// after a host name change takes the full path and deploys beta, the host
/// that names this machine now.
#[test]
#[ignore = "needs root for a UTS namespace (unshare -u)"]
fn another_machine_chooses_its_own_hosts() {
    agree("(exit code, updated, web deployed)", |take_full| {
        let d = Deployment::new()
            .env(
                "dev",
                "[environment]\nconnect_method = ssh\n\n[hosts]\nalpha = app\nbeta = web\n",
            )
            .component("app", "[file:app.conf]\ncontent = a\n")
            .component("web", "[file:web.conf]\ncontent = w\n");
        let first = tack_as(&d, "alpha", &["local", "dev"]).expect("a UTS namespace");
        assert_eq!(first.updated(), set(&["App > File(app.conf)"]), "{first}");
        if take_full {
            full(&d);
        }
        let out = tack_as(&d, "beta", &["local", "dev"]).unwrap();
        (out.code, out.updated(), d.exists("work/web/web.conf"))
    });
}

// ---------------------------------------------------------------------------
// 7. More cases with the same outcome on both paths.
// ---------------------------------------------------------------------------

/// What a run ended with, comparable across two deployment directories:
/// exit code, the lines of nodes that ran (pids and times left out), the
/// summary lines, `error:` lines, and every path under `work/` with its
/// content, mode or symlink target.
#[derive(Debug, PartialEq, Eq)]
struct Ending {
    code: i32,
    ran: Vec<String>,
    summaries: Vec<String>,
    errors: Vec<String>,
    work: Vec<(String, String)>,
}

fn ending(d: &Deployment, out: &crate::support::Output) -> Ending {
    use std::os::unix::fs::MetadataExt;
    let root = format!("{}/", d.root().display());
    let mut ran: Vec<String> = ran(out)
        .into_iter()
        .map(|line| match line.split_once(" (pid ") {
            Some((verb, rest)) => format!("{verb}{}", rest.split_once(')').unwrap().1),
            None => line,
        })
        .collect();
    ran.sort();
    let summaries = out
        .stdout
        .lines()
        .filter(|line| line.contains(" unchanged"))
        .map(|line| {
            line.rsplit_once(" in ")
                .map_or(line, |(c, _)| c)
                .to_string()
        })
        .collect();
    let errors = out
        .stderr
        .lines()
        .filter(|line| line.starts_with("error") || line.starts_with("warning"))
        .map(|line| line.replace(&root, ""))
        .collect();
    let mut work = Vec::new();
    let mut stack = vec![d.path("work")];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            let name = path.strip_prefix(d.root()).unwrap().display().to_string();
            let meta = fs::symlink_metadata(&path).unwrap();
            let what = if meta.is_symlink() {
                format!("-> {}", fs::read_link(&path).unwrap().display())
            } else if meta.is_dir() {
                stack.push(path.clone());
                format!("dir {:o}", meta.mode() & 0o7777)
            } else if name.ends_with(".pid") {
                "a pid".to_string()
            } else {
                let text = String::from_utf8_lossy(&fs::read(&path).unwrap()).replace(&root, "");
                format!("{:o} {text}", meta.mode() & 0o7777)
            };
            work.push((name, what));
        }
    }
    work.sort();
    Ending {
        code: out.code,
        ran,
        summaries,
        errors,
        work,
    }
}

/// Builds a deployment, deploys it (and again: a no-op), edits it, and runs
/// `args` once on the incremental path and once (in an identical copy) on
/// the full path. Returns both endings and the incremental run's stdout.
fn differential(
    build: impl Fn() -> Deployment,
    edit: impl Fn(&Deployment),
    args: &[&str],
) -> (Ending, Ending, String) {
    let mut endings = Vec::new();
    let mut stdout = String::new();
    for take_full in [false, true] {
        let d = build();
        d.tack(&["local", "dev"]).success();
        d.tack(&["local", "dev"]).success();
        edit(&d);
        if take_full {
            full(&d);
        }
        let out = d.tack(args);
        if !take_full {
            stdout = out.stdout.clone();
        }
        endings.push(ending(&d, &out));
        stop_services(&d);
    }
    let full = endings.pop().unwrap();
    (endings.pop().unwrap(), full, stdout)
}

/// Kills the `sleep` daemons the service tests start.
fn stop_services(d: &Deployment) {
    for pidfile in crate::support::files_under(&d.path("work")) {
        if pidfile.extension().is_some_and(|e| e == "pid") {
            if let Ok(pid) = fs::read_to_string(&pidfile) {
                let _ = Command::new("kill").arg(pid.trim()).status();
            }
        }
    }
}

/// `source = ../shared/x`: the path is filed under the reading component
/// and stat'ed through `..`, so an edit of the shared file is seen.
#[test]
fn a_source_outside_the_component_dir() {
    let (incremental, full, stdout) = differential(
        || {
            Deployment::new()
                .env("dev", "[hosts]\nlocalhost = app, web\n")
                .component("app", "[file:app.conf]\nsource = ../shared/app.conf\n")
                .source("shared", "app.conf", "one\n")
                .component("web", "[file:index.html]\ncontent = hi\n")
        },
        |d| d.write("components/shared/app.conf", "two\n"),
        &["local", "dev", "--explain"],
    );
    assert!(
        stdout.contains("Configuring 1 of 2 components (changed: app)"),
        "{stdout}"
    );
    assert_eq!(incremental, full);
}

/// A service in `app` watches its same-host provider `db` (`after NODE`):
/// an edit of db alone reloads app's service on both paths; a component
/// with no nodes in between (`glue` provides what app requires, from db)
/// carries the change.
#[test]
fn a_barrier_watching_a_provider_through_a_component_without_nodes() {
    let (incremental, full, stdout) = differential(
        || {
            Deployment::new()
                .env("dev", "[hosts]\nlocalhost = db, glue, app, web\n")
                .component(
                    "db",
                    "[attributes]\nport = 1\n\n[provide:database]\nport = {{ port }}\n\n[file:db.conf]\ncontent = {{ port }}\n",
                )
                .component(
                    "glue",
                    "[require:database]\none = true\n\n[provide:dsn]\nurl = db:{{ database.port }}\n",
                )
                .component(
                    "app",
                    "[require:dsn]\none = true\n\n[require:database]\none = true\n\n\
                     [file:app.conf]\ncontent = {{ dsn.url }}\n\n\
                     [service:daemon]\nstart = sleep 30 & echo $! > daemon.pid\npidfile = daemon.pid\nreload = touch reloaded\n",
                )
                .component("web", "[file:index.html]\ncontent = hi\n")
        },
        |d| d.replace("components/db/component.cfg", "port = 1", "port = 2"),
        &["local", "dev", "--explain"],
    );
    assert!(
        stdout.contains("Configuring 3 of 4 components (changed: db)"),
        "{stdout}"
    );
    assert!(
        incremental
            .ran
            .iter()
            .any(|l| l.starts_with("Reloading App > Service(daemon)")),
        "{incremental:?}"
    );
    assert_eq!(incremental, full);
}

/// Environment file: a comment, an override moved below another section
/// and one added; then hosts reordered (full path, says why).
#[test]
fn environment_edits() {
    let build = || {
        Deployment::new()
            .env(
                "dev",
                "[hosts]\nlocalhost = app, web\n\n[component:app]\nv = 2\n",
            )
            .component(
                "app",
                "[attributes]\nv = 1\n\n[file:app.conf]\ncontent = {{ v }}\n",
            )
            .component(
                "web",
                "[attributes]\nw = 1\n\n[file:web.conf]\ncontent = {{ w }}\n",
            )
    };
    let (incremental, full, stdout) = differential(
        build,
        |d| {
            d.write(
                "environments/dev.cfg",
                "; a comment\n[hosts]\nlocalhost = app, web\n\n[component:web]\nw = 3\n\n[component:app]\nv = 2\n",
            )
        },
        &["local", "dev", "--explain"],
    );
    assert!(stdout.contains("Configuring 2 of 2 components"), "{stdout}");
    assert_eq!(incremental, full);

    let (incremental, full, stdout) = differential(
        build,
        |d| {
            d.write(
                "environments/dev.cfg",
                "[hosts]\nlocalhost = web, app\n\n[component:app]\nv = 2\n",
            )
        },
        &["local", "dev", "--explain"],
    );
    assert!(
        stdout.contains("Configuring every component: the settings or hosts"),
        "{stdout}"
    );
    assert_eq!(incremental, full);
}

/// Symlink, directory and file drift in an untouched component, seen by
/// the target checks; `--dry-run` and `--format json` agree too.
#[test]
fn drift_of_symlinks_directories_and_files() {
    let build = || {
        Deployment::new()
            .env("dev", "[hosts]\nlocalhost = app, web\n")
            .component(
                "app",
                "[directory:etc]\nmode = 0750\n\n[file:etc/app.conf]\ncontent = one\n\n[symlink:current]\ntarget = etc/app.conf\n",
            )
            .component("web", "[file:index.html]\ncontent = hi\n")
    };
    let edit = |d: &Deployment| {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(d.path("work/app/etc"), fs::Permissions::from_mode(0o700)).unwrap();
        fs::remove_file(d.path("work/app/current")).unwrap();
        std::os::unix::fs::symlink("elsewhere", d.path("work/app/current")).unwrap();
    };
    let (incremental, full, _) = differential(build, edit, &["local", "dev", "--dry-run"]);
    assert_eq!(incremental, full);
    let (incremental, full, _) = differential(build, edit, &["local", "dev"]);
    assert_eq!(incremental, full);
    let (incremental, full, _) = differential(build, edit, &["local", "dev", "--format", "json"]);
    assert_eq!(incremental, full);
}

/// A partial run whose node fails exits 1 like the full path, forgets the
/// manifest, and the run after it (full) retries exactly that node.
#[test]
fn a_failure_in_a_partial_run_and_the_run_after_it() {
    let build = || {
        Deployment::new()
            .env("dev", "[hosts]\nlocalhost = app, web\n")
            .component(
                "app",
                "[attributes]\nv = 1\n\n[file:app.conf]\ncontent = {{ v }}\n\n\
                 [command:check]\nrun = test ! -e ../../fail && cat app.conf > checked\noutputs = checked\n",
            )
            .component("web", "[file:index.html]\ncontent = hi\n")
    };
    let edit = |d: &Deployment| {
        d.replace("components/app/component.cfg", "v = 1", "v = 2");
        d.write("fail", "");
    };
    let (incremental, from_scratch, _) =
        differential(build, edit, &["local", "dev", "--no-cache-read"]);
    assert_eq!(incremental.code, 1);
    assert_eq!(incremental, from_scratch);

    for take_full in [false, true] {
        let d = build();
        d.tack(&["local", "dev"]).success();
        edit(&d);
        if take_full {
            full(&d);
        }
        assert_eq!(d.tack(&["local", "dev", "--no-cache-read"]).code, 1);
        assert!(!d.exists(MANIFEST));
        fs::remove_file(d.path("fail")).unwrap();
        let out = d
            .tack(&["local", "dev", "--no-cache-read", "--explain"])
            .success();
        assert_eq!(ran(&out), ["Updating App > Command(check)"], "{out}");
    }
}

/// A symlink whose target renders a secret is masked in the state; the
/// manifest's check compares a hash of the link's target, so a repeated
/// run is still a no-op.
#[test]
fn a_secret_symlink_allows_a_no_op() {
    let d = Deployment::new()
        .env("dev", "[hosts]\nlocalhost = app\n")
        .component(
            "app",
            "[secrets]\ntoken = abc\n\n[symlink:current]\ntarget = {{ token }}\n",
        );
    d.tack(&["local", "dev"]).success();
    d.tack(&["local", "dev"]).success();
    let out = d.tack(&["local", "dev", "--explain"]).success();
    assert!(!out.stdout.contains("Configuring"), "not a no-op:\n{out}");
}

/// `tack explain ENV NODE` on a partial run prints what the full path
/// prints for that node (besides the line saying which path ran).
#[test]
fn explain_of_one_node_in_a_partial_run() {
    agree("outcome", |take_full| {
        let d = Deployment::new()
            .env("dev", "[hosts]\nlocalhost = db, app, web\n")
            .component(
                "db",
                "[attributes]\nport = 1\n\n[provide:database]\nport = {{ port }}\n\n[file:db.conf]\ncontent = {{ port }}\n",
            )
            .component(
                "app",
                "[require:database]\none = true\n\n[file:app.conf]\ncontent = {{ database.port }}\n",
            )
            .component("web", "[file:index.html]\ncontent = hi\n");
        d.tack(&["local", "dev"]).success();
        d.replace("components/db/component.cfg", "port = 1", "port = 2");
        if take_full {
            full(&d);
        }
        let out = d.tack(&["explain", "dev", "app/file:app.conf"]).success();
        let lines: Vec<String> = out
            .stdout
            .lines()
            .filter(|line| !line.starts_with("Configuring"))
            .map(|line| {
                line.rsplit_once(" in ")
                    .map_or(line, |(c, _)| c)
                    .to_string()
            })
            .collect();
        lines
    });
}
