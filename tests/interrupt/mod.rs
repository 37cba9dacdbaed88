//! Interrupts: SIGINT or SIGTERM to a deploy stops the step it runs (which
//! runs in a process group of its own, out of reach of a Ctrl-C), records
//! it as unfinished and exits as a shell would report it, 130 or 143. The
//! next deploy runs the step once; a daemon tack started keeps running.
//!
//! These tests send real signals to real processes. Every process they
//! start is stopped when the test ends, whatever it asserted.

use std::fs;
use std::io::Read;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;

use crate::support::{Deployment, Output};

/// Long enough that a step still running proves nothing stopped it.
const SLOW: &str = "sleep 30";
/// What "promptly" means on a busy machine.
const PROMPTLY: Duration = Duration::from_secs(5);

/// A daemon, then a step that logs its process group (its shell's pid) to
/// `slow.pids` and sleeps unless `quick` exists, then a file after it.
fn deployment(step: &str) -> Deployment {
    Deployment::new()
        .env("dev", "[hosts]\nlocalhost = app\n")
        .component(
            "app",
            &format!(
                "
                [service:daemon]
                start = sleep 300 & echo $! > daemon.pid
                pidfile = daemon.pid
                reload = touch reloaded

                [command:slow]
                run = {step}echo $$ >> ../../slow.pids; test -e ../../quick || {SLOW}

                [file:after.txt]
                content = after
                "
            ),
        )
}

/// Stops what a test started, however it ends: the daemon and every
/// step's process group the deployment logged.
struct Cleanup<'a>(&'a Deployment);

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        for group in step_groups(self.0) {
            let _ = killpg(group, Signal::SIGKILL);
        }
        if let Some(daemon) = daemon(self.0) {
            let _ = kill(daemon, Signal::SIGKILL);
        }
    }
}

fn step_groups(d: &Deployment) -> Vec<Pid> {
    fs::read_to_string(d.path("slow.pids"))
        .unwrap_or_default()
        .lines()
        .filter_map(|line| line.trim().parse().ok())
        .map(Pid::from_raw)
        .collect()
}

fn daemon(d: &Deployment) -> Option<Pid> {
    let text = fs::read_to_string(d.path("work/app/daemon.pid")).ok()?;
    Some(Pid::from_raw(text.trim().parse().ok()?))
}

/// Starts `tack local dev` and waits until the step of run number `run`
/// has logged its process group; returns tack and that group.
fn deploy_until_the_step_runs(d: &Deployment, run: usize) -> (Child, Pid) {
    let mut tack = d
        .tack_command(&["local", "dev"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start tack");
    let started = Instant::now();
    loop {
        if let Some(&group) = step_groups(d).get(run - 1) {
            // The shell wrote its pid; give it a moment to reach `sleep`.
            std::thread::sleep(Duration::from_millis(200));
            return (tack, group);
        }
        if let Ok(Some(status)) = tack.try_wait() {
            panic!("tack ended ({status}) before the step ran");
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the step did not start within 30s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits up to `limit` for tack to exit and returns what it printed; if it
/// does not exit in time it is killed and the test fails.
fn exited_within(mut tack: Child, limit: Duration) -> (Output, Duration) {
    let started = Instant::now();
    let status = loop {
        if let Some(status) = tack.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > limit {
            let _ = tack.kill();
            let _ = tack.wait();
            panic!("tack did not exit within {limit:?} of the signal");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let took = started.elapsed();
    let (mut stdout, mut stderr) = (String::new(), String::new());
    tack.stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    tack.stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    let output = Output {
        args: "local dev".into(),
        code: status.code().unwrap_or(-1),
        stdout,
        stderr,
    };
    (output, took)
}

fn signal(tack: &Child, signal: Signal) {
    kill(Pid::from_raw(tack.id() as i32), signal).expect("signal tack");
}

/// Whether any process of `group` is left (a zombie is not).
fn group_is_gone(group: Pid) -> bool {
    let started = Instant::now();
    while started.elapsed() < PROMPTLY {
        if killpg(group, None) == Err(Errno::ESRCH) || only_zombies_in(group) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

fn only_zombies_in(group: Pid) -> bool {
    let Ok(entries) = fs::read_dir("/proc") else {
        return false;
    };
    entries.flatten().all(|entry| {
        let Ok(stat) = fs::read_to_string(entry.path().join("stat")) else {
            return true;
        };
        let Some((_, fields)) = stat.rsplit_once(')') else {
            return true;
        };
        let fields: Vec<&str> = fields.split_whitespace().collect();
        // After the name: state, ppid, pgrp.
        fields.get(2) != Some(&group.as_raw().to_string().as_str()) || fields[0] == "Z"
    })
}

fn is_alive(pid: Pid) -> bool {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let state = stat.rsplit_once(')').map(|(_, fields)| fields.trim_start());
    state.is_some_and(|fields| !fields.starts_with('Z'))
}

/// What every interrupt test checks after tack exited: the right code,
/// promptly, the step's group gone, the interrupted step named, the
/// daemon untouched.
fn assert_interrupted(d: &Deployment, out: &Output, took: Duration, group: Pid, code: i32) {
    assert_eq!(out.code, code, "{out}");
    assert!(took < PROMPTLY, "tack took {took:?} to exit\n{out}");
    assert!(
        group_is_gone(group),
        "the step's process group {group} still runs\n{out}"
    );
    assert!(
        out.stdout.contains("Interrupted App > Command(slow)"),
        "{out}"
    );
    let daemon = daemon(d).expect("the daemon's pid file");
    assert!(is_alive(daemon), "the daemon {daemon} was stopped\n{out}");
}

/// The next deploy runs the interrupted step exactly once and succeeds,
/// and the one after runs nothing.
fn assert_the_next_deploy_runs_it_once(d: &Deployment, runs_before: usize) {
    d.write("quick", "");
    let next = d.tack(&["local", "dev"]).success();
    assert!(next.updated().contains("App > Command(slow)"), "{next}");
    assert_eq!(step_groups(d).len(), runs_before + 1, "{next}");
    let again = d.tack(&["local", "dev"]).success();
    assert!(again.updated().is_empty(), "{again}");
    assert_eq!(step_groups(d).len(), runs_before + 1, "{again}");
}

#[test]
fn sigint_stops_the_running_step_and_the_next_deploy_runs_it_once() {
    let d = deployment("");
    let _cleanup = Cleanup(&d);
    let (tack, group) = deploy_until_the_step_runs(&d, 1);
    signal(&tack, Signal::SIGINT);
    let (out, took) = exited_within(tack, Duration::from_secs(20));
    assert_interrupted(&d, &out, took, group, 130);
    assert!(out.stderr.contains("interrupted by SIGINT"), "{out}");
    // No node started after the signal.
    assert!(!d.exists("work/app/after.txt"), "{out}");

    let explained = d.tack(&["explain", "dev"]).success();
    assert_eq!(
        explained.would_update(),
        ["App > Command(slow)", "App > File(after.txt)"]
            .map(String::from)
            .into(),
        "{explained}"
    );
    assert_the_next_deploy_runs_it_once(&d, 1);
}

#[test]
fn sigterm_stops_a_rerun_step_and_leaves_it_recorded_unfinished() {
    let d = deployment("");
    let _cleanup = Cleanup(&d);
    d.write("quick", "");
    d.tack(&["local", "dev"]).success();
    fs::remove_file(d.path("quick")).unwrap();
    // An edit that makes the step run again; and the daemon must start in
    // the interrupted deploy itself.
    d.replace(
        "components/app/component.cfg",
        "echo $$",
        "echo rerun >/dev/null; echo $$",
    );
    kill(daemon(&d).unwrap(), Signal::SIGKILL).unwrap();
    fs::remove_file(d.path("work/app/daemon.pid")).unwrap();

    let (tack, group) = deploy_until_the_step_runs(&d, 2);
    assert!(is_alive(daemon(&d).unwrap()), "the daemon was restarted");
    signal(&tack, Signal::SIGTERM);
    let (out, took) = exited_within(tack, Duration::from_secs(20));
    assert_interrupted(&d, &out, took, group, 143);
    assert!(out.stderr.contains("interrupted by SIGTERM"), "{out}");

    let explained = d.tack(&["explain", "dev", "app"]).success();
    assert!(
        explained
            .stdout
            .contains("Would update App > Command(slow)\n    the last attempt did not finish\n"),
        "{explained}"
    );
    assert_the_next_deploy_runs_it_once(&d, 2);
}

#[test]
fn a_second_signal_kills_a_step_that_ignores_the_first() {
    let d = deployment("trap '' INT TERM; ");
    let _cleanup = Cleanup(&d);
    let (tack, group) = deploy_until_the_step_runs(&d, 1);
    signal(&tack, Signal::SIGINT);
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        killpg(group, None).is_ok(),
        "the step ignores SIGINT and should still run"
    );
    signal(&tack, Signal::SIGINT);
    let (out, took) = exited_within(tack, Duration::from_secs(20));
    assert_interrupted(&d, &out, took, group, 130);
    assert!(
        out.stdout.contains("did not stop on SIGINT; killed"),
        "{out}"
    );
    assert_the_next_deploy_runs_it_once(&d, 1);
}

#[test]
fn a_step_that_ignores_the_signal_is_killed_after_the_grace_period() {
    let d = deployment("trap '' INT TERM; ");
    let _cleanup = Cleanup(&d);
    let (tack, group) = deploy_until_the_step_runs(&d, 1);
    signal(&tack, Signal::SIGTERM);
    // The grace period is ten seconds.
    let (out, took) = exited_within(tack, Duration::from_secs(30));
    assert_eq!(out.code, 143, "{out}");
    assert!(took >= Duration::from_secs(9), "killed after only {took:?}");
    assert!(group_is_gone(group), "{out}");
    assert!(
        out.stdout.contains("did not stop on SIGTERM; killed"),
        "{out}"
    );
}

#[test]
fn a_signal_while_waiting_for_the_lock_exits_at_once() {
    let d = deployment("");
    let _cleanup = Cleanup(&d);
    let (first, group) = deploy_until_the_step_runs(&d, 1);
    let waiting = d
        .tack_command(&["local", "dev"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start tack");
    // Long enough to configure and block on the lock.
    std::thread::sleep(Duration::from_secs(1));
    signal(&waiting, Signal::SIGTERM);
    let (out, took) = exited_within(waiting, PROMPTLY);
    assert_eq!(out.code, 143, "{out}");
    assert!(took < PROMPTLY, "{out}");
    assert!(out.stderr.contains("waiting for the deploy lock"), "{out}");
    // The deploy holding the lock runs on, untouched.
    assert!(killpg(group, None).is_ok(), "{out}");
    signal(&first, Signal::SIGTERM);
    let (first, _) = exited_within(first, Duration::from_secs(20));
    assert_eq!(first.code, 143, "{first}");
}

#[test]
fn an_interrupted_json_deploy_still_reports_what_it_stopped() {
    let d = deployment("");
    let _cleanup = Cleanup(&d);
    let mut tack = d
        .tack_command(&["local", "dev", "--format", "json"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start tack");
    while step_groups(&d).is_empty() {
        assert!(tack.try_wait().unwrap().is_none(), "tack ended early");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(200));
    signal(&tack, Signal::SIGTERM);
    let (out, _) = exited_within(tack, Duration::from_secs(20));
    assert_eq!(out.code, 143, "{out}");
    let report: serde_json::Value = serde_json::from_str(&out.stdout).expect("a JSON report");
    assert_eq!(report["interrupted"], "SIGTERM", "{out}");
    let outcomes: Vec<(String, String)> = report["hosts"][0]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|node| {
            let text = |key: &str| node[key].as_str().unwrap().to_string();
            (text("display"), text("outcome"))
        })
        .collect();
    let outcome = |display: &str| {
        outcomes
            .iter()
            .find(|(shown, _)| shown == display)
            .map(|(_, outcome)| outcome.as_str())
    };
    assert_eq!(outcome("App > Service(daemon)"), Some("started"), "{out}");
    assert_eq!(outcome("App > Command(slow)"), Some("interrupted"), "{out}");
    assert_eq!(
        outcome("App > File(after.txt)"),
        Some("not started"),
        "{out}"
    );
    assert_eq!(report["hosts"][0]["summary"]["interrupted"], 2, "{out}");
}

#[test]
fn an_interrupt_stops_every_host_and_exits_as_interrupted() {
    // `connect_method = local` deploys the three hosts here, all at once:
    // a quick one, one whose step is interrupted, and a third whose file
    // comes after a step of its own that is still running then, and must
    // not be written.
    let d = Deployment::new()
        .env(
            "dev",
            "[environment]\nconnect_method = local\n\n[hosts]\nfirst = quick\nsecond = slow\nthird = later\n",
        )
        .component("quick", "[file:quick.txt]\ncontent = quick\n")
        .component(
            "slow",
            &format!("[command:slow]\nrun = echo $$ >> ../../slow.pids; {SLOW}\n"),
        )
        .component(
            "later",
            "[command:first]\nrun = sleep 30\n\n[file:later.txt]\ncontent = later\n",
        );
    let _cleanup = Cleanup(&d);
    let (tack, group) = deploy_until_the_step_runs(&d, 1);
    signal(&tack, Signal::SIGTERM);
    let (out, took) = exited_within(tack, Duration::from_secs(20));
    assert_eq!(out.code, 143, "{out}");
    assert!(took < PROMPTLY, "{out}");
    assert!(group_is_gone(group), "{out}");
    assert!(d.exists("work/quick/quick.txt"), "{out}");
    assert!(!d.exists("work/later/later.txt"), "{out}");
    assert!(
        out.stdout
            .contains("Interrupted second: Slow > Command(slow)"),
        "{out}"
    );
    assert!(
        out.stdout
            .contains("Interrupted third: Later > Command(first)"),
        "{out}"
    );
}

/// tack waits for signals in a thread of its own; what it starts must not
/// inherit any of that: a step that is one program gets the signal
/// itself, and stops at once.
#[test]
fn a_step_that_execs_one_program_stops_on_the_signal_at_once() {
    let d = deployment("").component(
        "app",
        "[command:slow]\nrun = echo $$ >> ../../slow.pids; exec sleep 30\n",
    );
    let _cleanup = Cleanup(&d);
    let (tack, group) = deploy_until_the_step_runs(&d, 1);
    signal(&tack, Signal::SIGTERM);
    let (out, took) = exited_within(tack, Duration::from_secs(20));
    assert_eq!(out.code, 143, "{out}");
    assert!(took < PROMPTLY, "tack took {took:?} to exit\n{out}");
    assert!(out.stdout.contains("stopped by SIGTERM"), "{out}");
    assert!(group_is_gone(group), "{out}");
}

/// A daemon tack started answers SIGTERM like any other: tack's way of
/// waiting for signals leaves nothing blocked in what it starts.
#[test]
fn a_daemon_started_by_tack_stops_on_sigterm() {
    let d = deployment("");
    let _cleanup = Cleanup(&d);
    d.write("quick", "");
    d.tack(&["local", "dev"]).success();
    let daemon = daemon(&d).expect("the daemon's pid file");
    kill(daemon, Signal::SIGTERM).unwrap();
    let started = Instant::now();
    while is_alive(daemon) && started.elapsed() < PROMPTLY {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!is_alive(daemon), "the daemon {daemon} ignored SIGTERM");
}
