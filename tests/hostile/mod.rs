//! A deploy as root into a work dir that another user can write (issue 15):
//! the application user `nobody` renames, plants symlinks and swaps
//! directories while root's tack runs, and must never steer a write, a
//! chmod, a read or a delete outside the work dir.
//!
//! These tests need root (to deploy as root and to act as `nobody`). CI
//! runs as root and sets `TACK_REQUIRE_ROOT_TESTS=1`, which turns a
//! missing root into a failure; elsewhere they say they were skipped.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::Deployment;

const NOBODY: u32 = 65534;
const NOGROUP: u32 = 65534;
/// How long each race runs: as many deploys as fit.
const RACE: Duration = Duration::from_secs(4);

/// Whether the test may run; false (after saying so) when not root.
fn as_root(test: &str) -> bool {
    // A file this process makes belongs to its effective user.
    let mine = tempfile::tempfile().unwrap().metadata().unwrap().uid();
    if mine == 0 {
        return true;
    }
    assert!(
        std::env::var_os("TACK_REQUIRE_ROOT_TESTS").is_none(),
        "{test} needs root"
    );
    eprintln!("skipped {test}: needs root");
    false
}

/// A deployment whose work dir (and everything in it) belongs to
/// `nobody`, after a first deploy by root.
fn owned_by_nobody(d: &Deployment) {
    fs::set_permissions(d.root(), fs::Permissions::from_mode(0o755)).unwrap();
    chown_tree(&d.path("work"));
}

fn chown_tree(path: &Path) {
    std::os::unix::fs::lchown(path, Some(NOBODY), Some(NOGROUP)).unwrap();
    if fs::symlink_metadata(path).unwrap().is_dir() {
        for entry in fs::read_dir(path).unwrap() {
            chown_tree(&entry.unwrap().path());
        }
    }
}

/// A root-only directory outside the deployment holding `precious`.
fn root_only() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("precious"), "root's\n").unwrap();
    fs::set_permissions(
        dir.path().join("precious"),
        fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o700)).unwrap();
    dir
}

/// What is in `dir` besides `precious`, and `precious`'s mode and text.
fn untouched(dir: &Path) -> bool {
    let names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let precious = dir.join("precious");
    names == ["precious"]
        && fs::read_to_string(&precious).unwrap() == "root's\n"
        && fs::metadata(&precious).unwrap().mode() & 0o7777 == 0o600
        && fs::metadata(dir).unwrap().mode() & 0o7777 == 0o700
}

/// Runs a shell command as `nobody` in `dir` and waits for it.
fn nobody_sh(dir: &Path, command: &str) {
    let status = Command::new("sh")
        .arg("-c")
        .arg(command)
        .current_dir(dir)
        .uid(NOBODY)
        .gid(NOGROUP)
        .status()
        .unwrap();
    assert!(status.success(), "as nobody: {command}");
}

/// Runs a python script as `nobody` in `dir`, in the background.
fn as_nobody(dir: &Path, script: &str) -> Child {
    Command::new("python3")
        .arg("-c")
        .arg(script)
        .current_dir(dir)
        .uid(NOBODY)
        .gid(NOGROUP)
        .stdin(Stdio::null())
        .spawn()
        .unwrap()
}

/// Runs `script` as nobody in `work/app` while root deploys with
/// `--force app` again and again until `RACE` is over, then checks that
/// nothing reached `outside`.
fn race(d: &Deployment, script: &str, outside: &Path) {
    let mut racer = as_nobody(&d.path("work/app"), script);
    let started = Instant::now();
    let mut runs = 0;
    while started.elapsed() < RACE {
        // A deploy may fail when it meets a planted link: that is the point.
        d.tack(&["local", "dev", "--force", "app"]);
        runs += 1;
    }
    racer.wait().unwrap();
    eprintln!("{runs} deploys raced");
    assert!(runs >= 2, "only {runs} deploys ran");
    assert!(untouched(outside), "after {runs} deploys");
}

#[test]
fn a_component_work_dir_swapped_for_a_symlink_is_not_written_through() {
    if !as_root("finding 1") {
        return;
    }
    let d = Deployment::new()
        .env("dev", "[hosts]\nlocalhost = app\n")
        .component("app", "[file:app.ini]\ncontent = port = 8080\n");
    d.tack(&["local", "dev"]).success();
    owned_by_nobody(&d);
    let outside = root_only();
    // nobody: `mv app app.old; ln -s /root-only-dir app`.
    nobody_sh(
        &d.path("work"),
        &format!("mv app app.old && ln -s {} app", outside.path().display()),
    );
    let output = d.tack(&["local", "dev", "--force", "app"]);
    assert_eq!(output.code, 1, "{output}");
    assert!(output.stdout.contains("is a symlink"), "{output}");
    assert!(untouched(outside.path()), "{output}");
}

#[test]
fn a_temp_file_swapped_for_a_link_never_gets_a_chmod_through_it() {
    if !as_root("finding 2") {
        return;
    }
    // A large file, so that each write leaves its temp file in place long
    // enough to be swapped.
    let big = "x".repeat(30 << 20);
    let d = Deployment::new()
        .env("dev", "[hosts]\nlocalhost = app\n")
        .component("app", "[file:big.bin]\ntemplate = false\nmode = 0644\n");
    d.write("components/app/big.bin", &big);
    d.tack(&["local", "dev"]).success();
    owned_by_nobody(&d);
    let outside = root_only();
    let precious = outside.path().join("precious");
    // Make the root-only file reachable by name for the link; its mode
    // must stay 0600 whatever happens.
    let script = format!(
        "import os, time\n\
         end = time.time() + {secs}\n\
         while time.time() < end:\n\
         \x20   for name in os.listdir('.'):\n\
         \x20       if name.startswith('.tack-') and not name.endswith('.x'):\n\
         \x20           try:\n\
         \x20               os.rename(name, name + '.x')\n\
         \x20               os.symlink('{precious}', name)\n\
         \x20           except OSError:\n\
         \x20               pass\n",
        secs = RACE.as_secs() + 1,
        precious = precious.display()
    );
    race(&d, &script, outside.path());
}

#[test]
fn a_directory_exchanged_with_a_symlink_mid_deploy_never_leaks_a_write() {
    if !as_root("finding 3") {
        return;
    }
    let mut cfg = String::from("[directory:d]\nmode = 0777\n\n");
    for i in 0..300 {
        cfg.push_str(&format!("[file:d/f{i}.txt]\ncontent = {i}\n\n"));
    }
    let d = Deployment::new()
        .env("dev", "[hosts]\nlocalhost = app\n")
        .component("app", &cfg);
    d.tack(&["local", "dev"]).success();
    owned_by_nobody(&d);
    let outside = root_only();
    // nobody swaps `d` and a link to the root-only dir, atomically and
    // over and over (renameat2 with RENAME_EXCHANGE).
    let script = format!(
        "import ctypes, os, time\n\
         libc = ctypes.CDLL(None, use_errno=True)\n\
         os.symlink('{outside}', 'evil')\n\
         end = time.time() + {secs}\n\
         while time.time() < end:\n\
         \x20   libc.renameat2(-100, b'd', -100, b'evil', 2)\n",
        outside = outside.path().display(),
        secs = RACE.as_secs() + 1
    );
    race(&d, &script, outside.path());
}

#[test]
fn a_restore_never_deletes_through_a_planted_symlink() {
    if !as_root("finding 4") {
        return;
    }
    let d = Deployment::new()
        .env("dev", "[hosts]\nlocalhost = app\n")
        .component(
            "app",
            "[attributes]\nv = 1\n\n[command:build]\nrun = mkdir -p build/out && echo {{ v }} > build/out/a\noutputs = build/out\ncache = true\n",
        );
    d.tack(&["local", "dev"]).success();
    d.replace("components/app/component.cfg", "v = 1", "v = 2");
    d.tack(&["local", "dev"]).success();
    owned_by_nobody(&d);
    let outside = tempfile::tempdir().unwrap();
    fs::create_dir(outside.path().join("out")).unwrap();
    fs::write(outside.path().join("out/precious.txt"), "keep\n").unwrap();
    nobody_sh(
        &d.path("work/app"),
        &format!("rm -rf build && ln -s {} build", outside.path().display()),
    );
    // Back to v = 1: its outputs are in the cache.
    d.replace("components/app/component.cfg", "v = 2", "v = 1");
    let output = d.tack(&["local", "dev"]);
    assert!(!output.stdout.contains("Restored"), "{output}");
    assert_eq!(
        fs::read_to_string(outside.path().join("out/precious.txt")).unwrap(),
        "keep\n",
        "{output}"
    );
}

#[test]
fn a_restore_that_meets_a_planted_symlink_fails_rather_than_run_the_step_through_it() {
    if !as_root("finding 4, the fallback") {
        return;
    }
    let d = Deployment::new()
        .env("dev", "[hosts]\nlocalhost = app\n")
        .component(
            "app",
            "[attributes]\nv = 1\n\n[command:build]\nrun = mkdir -p build/out && echo {{ v }} > build/out/a\noutputs = build/out\ncache = true\n",
        );
    d.tack(&["local", "dev"]).success();
    d.replace("components/app/component.cfg", "v = 1", "v = 2");
    d.tack(&["local", "dev"]).success();
    owned_by_nobody(&d);
    // A link to a root-only directory with no `out` in it: nothing there
    // for the restore to overwrite, so only the link stops it.
    let outside = root_only();
    nobody_sh(
        &d.path("work/app"),
        &format!("rm -rf build && ln -s {} build", outside.path().display()),
    );
    d.replace("components/app/component.cfg", "v = 2", "v = 1");
    let output = d.tack(&["local", "dev"]);
    assert_eq!(output.code, 1, "{output}");
    assert!(
        output
            .stdout
            .contains("is a symlink where a directory of the outputs belongs"),
        "{output}"
    );
    assert!(
        untouched(outside.path()),
        "the step ran through the link:\n{output}"
    );
}

#[test]
fn a_restore_racing_a_planted_symlink_never_writes_outside() {
    if !as_root("finding 4, the race") {
        return;
    }
    // The step works only while `ready` exists: once the cache holds its
    // outputs, every forced deploy restores them, and a deploy that finds
    // the cache unusable fails instead of running a shell command as root
    // through whatever nobody planted.
    let shared = tempfile::tempdir().unwrap();
    let ready = shared.path().join("ready");
    fs::write(&ready, "").unwrap();
    let d = Deployment::new()
        .env("dev", "[hosts]\nlocalhost = app\n")
        .component(
            "app",
            &format!(
                "[command:build]\nrun = test -e {ready} && mkdir -p build/out && echo built > build/out/a\noutputs = build/out\ncache = true\n",
                ready = ready.display()
            ),
        );
    d.tack(&["local", "dev"]).success();
    fs::remove_file(&ready).unwrap();
    owned_by_nobody(&d);
    let outside = root_only();
    // nobody exchanges `build` with a link to the root-only directory, and
    // `build/out` with a link too whenever `build` is its own directory,
    // atomically and over and over.
    let script = format!(
        "import ctypes, os, time\n\
         libc = ctypes.CDLL(None, use_errno=True)\n\
         os.symlink('{outside}', 'evil')\n\
         end = time.time() + {secs}\n\
         while time.time() < end:\n\
         \x20   libc.renameat2(-100, b'build', -100, b'evil', 2)\n\
         \x20   try:\n\
         \x20       os.symlink('{outside}', 'build/evil')\n\
         \x20   except OSError:\n\
         \x20       pass\n\
         \x20   libc.renameat2(-100, b'build/out', -100, b'build/evil', 2)\n",
        outside = outside.path().display(),
        secs = RACE.as_secs() + 1
    );
    let mut racer = as_nobody(&d.path("work/app"), &script);
    let started = Instant::now();
    let (mut runs, mut restored) = (0, 0);
    while started.elapsed() < RACE {
        let output = d.tack(&["local", "dev", "--force", "app"]);
        runs += 1;
        restored += usize::from(output.stdout.contains("Restored"));
    }
    racer.wait().unwrap();
    eprintln!("{runs} deploys raced, {restored} restored");
    assert!(restored >= 2, "only {restored} of {runs} deploys restored");
    assert!(untouched(outside.path()), "after {runs} deploys");
}

/// A work dir `work/` owned by nobody, in which nobody made `app` a link
/// to `outside`, before root's first deploy.
fn work_dir_linked_by_nobody(d: &Deployment, outside: &Path) {
    fs::set_permissions(d.root(), fs::Permissions::from_mode(0o755)).unwrap();
    fs::create_dir(d.path("work")).unwrap();
    chown_tree(&d.path("work"));
    nobody_sh(&d.path("work"), &format!("ln -s {} app", outside.display()));
}

#[test]
fn the_orphan_sweep_never_deletes_through_a_swapped_work_dir() {
    if !as_root("the orphan sweep") {
        return;
    }
    let d = Deployment::new()
        .env("dev", "[hosts]\nlocalhost = app\n")
        .component("app", "[file:app.ini]\ncontent = port = 8080\n");
    let outside = root_only();
    // A root file that looks like one of tack's temp files.
    let lookalike = outside.path().join(".tack-0123456789abcdef");
    fs::write(&lookalike, "root's too\n").unwrap();
    work_dir_linked_by_nobody(&d, outside.path());
    let output = d.tack(&["local", "dev"]);
    assert_eq!(output.code, 1, "{output}");
    assert!(output.stdout.contains("is a symlink"), "{output}");
    assert_eq!(
        fs::read_to_string(&lookalike).ok().as_deref(),
        Some("root's too\n"),
        "{output}"
    );
}

/// A stand-in for python: answers `--version`, makes a "venv" with
/// `-m venv DIR` (itself as `DIR/bin/python`), and does nothing else.
fn fake_python(dir: &Path) -> std::path::PathBuf {
    let python = dir.join("python");
    fs::write(
        &python,
        "#!/bin/sh\n\
         if [ \"$1\" = --version ]; then echo 'Python 3.11.7'; exit 0; fi\n\
         if [ \"$1\" = -m ] && [ \"$2\" = venv ]; then mkdir -p \"$3/bin\" && cp \"$0\" \"$3/bin/python\"; fi\n",
    )
    .unwrap();
    fs::set_permissions(&python, fs::Permissions::from_mode(0o755)).unwrap();
    python
}

fn with_venv(python: &Path) -> Deployment {
    Deployment::new()
        .env("dev", "[hosts]\nlocalhost = tick, app\n")
        .component(
            "tick",
            "[provide:programs]\nname = tick\ncommand = /bin/sleep 600\n",
        )
        .component(
            "app",
            &format!(
                "[require:programs]\n\n[supervisor]\nport = {port}\npython = {python}\n",
                port = crate::support::free_port(),
                python = python.display()
            ),
        )
}

#[test]
fn a_venv_is_never_removed_through_a_swapped_work_dir() {
    if !as_root("the venv through a link") {
        return;
    }
    let tools = tempfile::tempdir().unwrap();
    let d = with_venv(&fake_python(tools.path()));
    let outside = root_only();
    // Root's own venv-looking directory behind the link.
    fs::create_dir(outside.path().join(".venv")).unwrap();
    fs::write(outside.path().join(".venv/keep"), "root's\n").unwrap();
    work_dir_linked_by_nobody(&d, outside.path());
    let output = d.tack(&["local", "dev"]);
    assert_eq!(output.code, 1, "{output}");
    assert!(output.stdout.contains("is a symlink"), "{output}");
    assert_eq!(
        fs::read_to_string(outside.path().join(".venv/keep"))
            .ok()
            .as_deref(),
        Some("root's\n"),
        "{output}"
    );
    assert!(
        !outside.path().join(".venv/.tack-bootstrap").exists(),
        "{output}"
    );
}

#[test]
fn a_fifo_as_the_venv_marker_hangs_nothing() {
    if !as_root("a FIFO as the venv marker") {
        return;
    }
    let tools = tempfile::tempdir().unwrap();
    let d = with_venv(&fake_python(tools.path()));
    // The fake venv has no supervisord: the deploy fails after the venv.
    d.tack(&["local", "dev"]);
    assert!(d.exists("work/app/.venv/.tack-bootstrap"));
    owned_by_nobody(&d);
    nobody_sh(
        &d.path("work/app/.venv"),
        "rm .tack-bootstrap && mkfifo .tack-bootstrap",
    );
    let (_, text) = run_bounded(&d, &["local", "dev"]);
    let marker = fs::symlink_metadata(d.path("work/app/.venv/.tack-bootstrap")).unwrap();
    assert!(marker.is_file(), "the venv was rebuilt:\n{text}");
}

#[test]
fn a_forged_record_never_makes_prune_delete_outside_the_work_dir() {
    if !as_root("finding 5") {
        return;
    }
    let d = Deployment::new()
        .env("dev", "[hosts]\nlocalhost = app\n")
        .component(
            "app",
            "[file:a.txt]\ncontent = a\n\n[file:b.txt]\ncontent = b\n",
        );
    d.tack(&["local", "dev"]).success();
    let outside = root_only();
    let precious = outside.path().join("precious");
    // Point b.txt's record at the root-only file, with that file's hash,
    // then drop b.txt from the configuration and prune.
    let state_path = d.path(".tack/state/dev/localhost/app.json");
    let mut state: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(&state_path).unwrap()).unwrap();
    let record = &mut state["nodes"]["app/file:b.txt"];
    record["target"] = serde_json::json!(precious);
    let hash = blake3::hash(b"root's\n").to_hex().to_string();
    record["observed"]["hash"] = serde_json::json!(hash);
    fs::write(&state_path, serde_json::to_vec(&state).unwrap()).unwrap();
    d.write(
        "components/app/component.cfg",
        "[file:a.txt]\ncontent = a\n",
    );
    let output = d.tack(&["local", "dev", "--prune"]);
    assert!(untouched(outside.path()), "{output}");
    assert!(output.stdout.contains("outside the work dir"), "{output}");
}

#[test]
fn diff_and_dry_run_never_read_through_a_link_nor_forever() {
    if !as_root("finding 6") {
        return;
    }
    let d = Deployment::new()
        .env("dev", "[hosts]\nlocalhost = app\n")
        .component(
            "app",
            "[file:app.ini]\ncontent = port = 8080\n\n[file:zero.bin]\ncontent = z\n",
        );
    d.tack(&["local", "dev"]).success();
    owned_by_nobody(&d);
    let outside = root_only();
    nobody_sh(
        &d.path("work/app"),
        &format!(
            "rm app.ini zero.bin && ln -s {}/precious app.ini && ln -s /dev/zero zero.bin",
            outside.path().display()
        ),
    );
    let (_, text) = run_bounded(&d, &["local", "dev", "--dry-run", "--diff"]);
    assert!(
        !text.contains("root's"),
        "a root-only file was shown:\n{text}"
    );

    // A source that climbs out of the deployment is refused.
    let d = Deployment::new()
        .env("dev", "[hosts]\nlocalhost = app\n")
        .component("app", "[file:x]\nsource = ../../../../../../etc/shadow\n");
    let output = d.tack(&["local", "dev", "--dry-run", "--diff"]);
    assert_eq!(output.code, 2, "{output}");
    assert!(output.stderr.contains("leaves the deployment"), "{output}");
}

#[test]
fn odd_names_modes_links_and_fifos_are_refused_or_harmless() {
    if !as_root("finding 7") {
        return;
    }
    let d = Deployment::new()
        .env("dev", "[hosts]\nlocalhost = app\n")
        .component("app", "[file:a.txt]\ncontent = a\n\n[command:step]\nrun = echo ran > out\noutputs = out\ncache = true\n");
    // An environment name that climbs out of environments/ is refused.
    let output = d.tack(&["local", "../../elsewhere/x"]);
    assert_eq!(output.code, 2, "{output}");
    assert!(!d.exists(".tack"), "{output}");

    // umask 000: tack's own directories and files are private anyway.
    let output = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "umask 000 && exec {} local dev",
            env!("CARGO_BIN_EXE_tack")
        ))
        .current_dir(d.root())
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    for dir in [
        ".tack",
        ".tack/state",
        ".tack/state/dev",
        ".tack/state/dev/localhost",
        ".tack/cache",
        ".tack/cache/v1/blobs",
    ] {
        assert_eq!(d.mode(dir) & 0o777, 0o700, "{dir}");
    }
    for file in [".tack/lock", ".tack/state/dev/localhost/app.json"] {
        assert_eq!(d.mode(file) & 0o777, 0o600, "{file}");
    }
    assert_eq!(d.mode("work") & 0o777, 0o755);
    assert_eq!(d.mode("work/app") & 0o777, 0o755);

    // The lock as a symlink is not opened through.
    let outside = root_only();
    fs::remove_file(d.path(".tack/lock")).unwrap();
    std::os::unix::fs::symlink(outside.path().join("precious"), d.path(".tack/lock")).unwrap();
    let output = d.tack(&["local", "dev", "--force", "app"]);
    assert_eq!(output.code, 2, "{output}");
    assert!(untouched(outside.path()), "{output}");
    fs::remove_file(d.path(".tack/lock")).unwrap();

    // A FIFO as a state file or as a source does not hang the run.
    let fifo = |path: &Path| {
        let _ = fs::remove_file(path);
        nix::unistd::mkfifo(path, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    };
    fifo(&d.path(".tack/state/dev/localhost/app.json"));
    let output = run_bounded(&d, &["local", "dev"]);
    assert_eq!(output.0, Some(0), "{}", output.1);
    fifo(&d.path("components/app/a.txt"));
    d.write(
        "components/app/component.cfg",
        "[file:a.txt]\n\n[command:step]\nrun = echo ran > out\noutputs = out\ncache = true\n",
    );
    let output = run_bounded(&d, &["local", "dev"]);
    assert_eq!(output.0, Some(2), "{}", output.1);
}

/// Runs tack, killing it if it takes more than 20 seconds: exit code and
/// what it printed.
fn run_bounded(d: &Deployment, args: &[&str]) -> (Option<i32>, String) {
    let mut child = d
        .tack_command(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > Duration::from_secs(20) {
            child.kill().unwrap();
            panic!("tack {args:?} hung");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let output = child.wait_with_output().unwrap();
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned()
            + &String::from_utf8_lossy(&output.stderr),
    )
}
