//! batou's "Using components" tutorial, end to end with the real programs:
//! `examples/tutorial-component` copied into a temp dir, zc.buildout
//! bootstrapped from PyPI, supervisord built by it and started, running
//! `tick`. Nothing is faked: what these tests check is what a person
//! would see with `supervisorctl` after each deploy.
//!
//! Each test bootstraps buildout once (several seconds), so the story is
//! told by one test in sequence, and the two situations that need their
//! own deployment (a deploy killed halfway, a deleted script) by one each.
//! Every test gives supervisord its own port, so they can run in parallel,
//! and stops everything it started when it ends, passing or failing.

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::support::{set, Deployment, Output};

const EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/tutorial-component");

const TICK_SH: &str = "Tick > File(tick.sh)";
const BUILDOUT_CFG: &str = "Supervisor > Buildout > File(buildout.cfg)";
const BUILDOUT: &str = "Supervisor > Buildout";
const SLOW: &str = "Supervisor > Command(slow)";
const SERVICE: &str = "Supervisor > Service(supervisord)";
const LOG_DIR: &str = "Supervisor > Directory(var/log)";

/// How long supervisord may take to (re)start tick (its `startsecs` is
/// one second) or to go away; far more than it needs on a busy machine.
const PATIENCE: Duration = Duration::from_secs(30);
/// How long a whole deploy may take, a buildout bootstrap included, before
/// a test that watches tack's output gives up.
const DEPLOY_PATIENCE: Duration = Duration::from_secs(600);

/// The tutorial deployed in a temp dir, with the processes it starts
/// stopped when it is dropped.
struct Tutorial {
    /// Declared first, so dropped first: it needs the files still there.
    _processes: Processes,
    d: Deployment,
}

impl Tutorial {
    /// A copy of the example whose supervisord listens on `port`.
    fn new(port: u16) -> Tutorial {
        let d = Deployment::copy_of(Path::new(EXAMPLE));
        let env = d.read("environments/dev.cfg");
        d.write(
            "environments/dev.cfg",
            &format!("{env}\n[component:supervisor]\nport = {port}\n"),
        );
        Tutorial {
            _processes: Processes {
                root: d.path(""),
                supervisor: d.path("work/supervisor"),
            },
            d,
        }
    }

    /// `tack local dev`, which must succeed.
    fn deploy(&self) -> Output {
        self.d.tack(&["local", "dev"]).success()
    }

    /// `bin/supervisorctl ARGS` (the config is baked into the script):
    /// what it printed, errors included.
    fn ctl(&self, args: &[&str]) -> String {
        let output = Command::new(self.d.path("work/supervisor/bin/supervisorctl"))
            .args(args)
            .current_dir(self.d.path("work/supervisor"))
            .stdin(Stdio::null())
            .output()
            .expect("run bin/supervisorctl");
        format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    }

    /// The live process `var/supervisord.pid` names.
    fn supervisord(&self) -> Option<i32> {
        let text = fs::read_to_string(self.d.path("work/supervisor/var/supervisord.pid")).ok()?;
        text.trim().parse().ok().filter(|pid| alive(*pid))
    }

    #[track_caller]
    fn supervisord_pid(&self) -> i32 {
        self.supervisord()
            .unwrap_or_else(|| panic!("supervisord is not running\n{}", self.ctl(&["status"])))
    }

    /// tick's pid if supervisord says it is RUNNING.
    fn tick(&self) -> Option<i32> {
        running_pid(&self.ctl(&["status", "tick"]), "tick")
    }

    /// Waits until supervisord runs tick as a process other than `old`
    /// (the same one is fine with `None`) and returns its pid.
    #[track_caller]
    fn wait_for_tick(&self, old: Option<i32>) -> i32 {
        let mut pid = None;
        let found = wait_until(PATIENCE, || {
            pid = self.tick();
            pid.is_some() && pid != old
        });
        assert!(
            found,
            "tick did not run {} within {PATIENCE:?}\n{}",
            match old {
                Some(old) => format!("as a new process (old pid {old})"),
                None => "at all".to_string(),
            },
            self.ctl(&["status"])
        );
        pid.unwrap()
    }

    /// Every line tick wrote to its logs (one log per supervisord start or
    /// reload).
    fn tick_log(&self) -> Vec<String> {
        let Ok(entries) = fs::read_dir(self.d.path("work/supervisor/var/log")) else {
            return Vec::new();
        };
        let mut logs: Vec<PathBuf> = entries
            .flatten()
            .map(|entry| entry.path())
            .filter(|path| {
                path.file_name()
                    .and_then(|name| name.to_str())
                    .is_some_and(|name| name.starts_with("tick-stdout---supervisor-"))
            })
            .collect();
        logs.sort();
        logs.iter()
            .flat_map(|log| {
                fs::read_to_string(log)
                    .unwrap_or_default()
                    .lines()
                    .map(str::to_string)
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// Waits until tick writes another line, a date.
    #[track_caller]
    fn wait_for_a_tick(&self) {
        let before = self.tick_log().len();
        let mut log = Vec::new();
        let ticked = wait_until(PATIENCE, || {
            log = self.tick_log();
            log.len() > before && log.last().is_some_and(|line| is_date(line))
        });
        assert!(
            ticked,
            "tick's log did not grow by a date within {PATIENCE:?}: {log:?}\n{}",
            self.ctl(&["status"])
        );
    }

    /// The priorities supervisord has loaded for tick, as `avail` shows
    /// them (`10:10`): what it runs, not what its config file says now.
    fn loaded_priority(&self) -> String {
        let avail = self.ctl(&["avail"]);
        avail
            .lines()
            .find(|line| line.split_whitespace().next() == Some("tick"))
            .and_then(|line| line.split_whitespace().last())
            .unwrap_or_else(|| panic!("no tick in `supervisorctl avail`:\n{avail}"))
            .to_string()
    }

    /// The tick section of the supervisord.conf buildout wrote.
    fn tick_config(&self) -> String {
        let conf = self
            .d
            .read("work/supervisor/parts/supervisor/supervisord.conf");
        let section = conf
            .split_once("[program:tick]")
            .unwrap_or_else(|| panic!("no [program:tick] in supervisord.conf:\n{conf}"))
            .1;
        section.split("\n[").next().unwrap().to_string()
    }
}

/// Stops what a test's deploys started: supervisord with `supervisorctl
/// shutdown`, and then, by force, anything still running from the
/// deployment (a supervisord that would not stop, a tick orphaned when its
/// supervisord was killed).
struct Processes {
    root: PathBuf,
    supervisor: PathBuf,
}

impl Drop for Processes {
    fn drop(&mut self) {
        let ctl = self.supervisor.join("bin/supervisorctl");
        stop_everything(&self.root, &self.supervisor, &ctl, &[]);
    }
}

/// Stops supervisord running from `work` with `ctl ARGS shutdown`, waits
/// for it, then kills by force anything still running from `root`.
pub(crate) fn stop_everything(root: &Path, work: &Path, ctl: &Path, args: &[&str]) {
    if ctl.exists() {
        let _ = Command::new(ctl)
            .args(args)
            .arg("shutdown")
            .current_dir(work)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
    let pid = fs::read_to_string(work.join("var/supervisord.pid"))
        .ok()
        .and_then(|text| text.trim().parse::<i32>().ok());
    if let Some(pid) = pid {
        wait_until(PATIENCE, || !alive(pid));
    }
    for pid in processes_running_from(root) {
        signal(pid, "KILL");
    }
}

/// A tack run in the background, killed if the test ends before it does.
struct Background {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: String,
}

impl Background {
    fn spawn(d: &Deployment, args: &[&str]) -> Background {
        let mut child = d
            .tack_command(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start tack");
        let stdout = child.stdout.take().unwrap();
        let (send, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if send.send(line).is_err() {
                    break;
                }
            }
        });
        Background {
            child,
            lines,
            seen: String::new(),
        }
    }

    /// Waits until tack prints `line`.
    #[track_caller]
    fn wait_for_line(&mut self, line: &str) {
        let deadline = Instant::now() + DEPLOY_PATIENCE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(printed) => {
                    self.seen.push_str(&printed);
                    self.seen.push('\n');
                    if printed == line {
                        return;
                    }
                }
                Err(_) => panic!(
                    "tack ended or took too long without printing `{line}`\n{}",
                    self.seen
                ),
            }
        }
    }

    /// SIGKILL: tack gets no chance to clean up.
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Polls `done` every 50 ms until it holds or `timeout` passed; whether
/// it held.
pub(crate) fn wait_until(timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if done() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Whether `pid` is a live process (a zombie is not).
pub(crate) fn alive(pid: i32) -> bool {
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().next());
    !matches!(state, None | Some("Z"))
}

pub(crate) fn signal(pid: i32, name: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .stderr(Stdio::null())
        .status();
}

/// Every process whose command line names a path under `root`:
/// supervisord (`.../bin/supervisord`) and tick (`.../tick.sh`).
pub(crate) fn processes_running_from(root: &Path) -> Vec<i32> {
    let root = root.display().to_string();
    let me = std::process::id() as i32;
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| *pid != me)
        .filter(|pid| {
            fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|cmdline| String::from_utf8_lossy(&cmdline).contains(&root))
        })
        .collect()
}

/// The pid in `supervisorctl status` output for `name` if it is RUNNING:
/// `tick   RUNNING   pid 28368, uptime 0:00:02`.
pub(crate) fn running_pid(status: &str, name: &str) -> Option<i32> {
    let line = status
        .lines()
        .find(|line| line.split_whitespace().next() == Some(name))?;
    let mut words = line.split_whitespace().skip(1);
    if words.next() != Some("RUNNING") || words.next() != Some("pid") {
        return None;
    }
    words.next()?.trim_end_matches(',').parse().ok()
}

/// Whether `line` holds a time of day as `date` prints it (`10:03:37`).
fn is_date(line: &str) -> bool {
    line.split_whitespace().any(|word| {
        let bytes = word.as_bytes();
        bytes.len() == 8
            && bytes.iter().enumerate().all(|(i, b)| match i {
                2 | 5 => *b == b':',
                _ => b.is_ascii_digit(),
            })
    })
}

/// The lines saying a node ran or would run (`Updating`, `Starting`,
/// `Reloading`, `Would ...`).
fn actions(out: &Output) -> Vec<&str> {
    out.stdout
        .lines()
        .filter(|line| {
            ["Updating ", "Starting ", "Reloading ", "Would "]
                .iter()
                .any(|verb| line.starts_with(verb))
        })
        .collect()
}

#[track_caller]
fn assert_line(out: &Output, line: &str) {
    assert!(
        out.stdout.lines().any(|printed| printed == line),
        "no line `{line}` in the output\n{out}"
    );
}

#[track_caller]
fn assert_contains(text: &str, part: &str) {
    assert!(text.contains(part), "`{part}` is not in\n{text}");
}

#[test]
fn supervisor_runs_tick_and_is_reloaded_only_when_something_it_runs_changed() {
    let t = Tutorial::new(19101);

    // 1. The first deploy builds supervisor and starts it; tick ticks.
    let out = t.deploy();
    assert_eq!(
        out.updated(),
        set(&[TICK_SH, BUILDOUT_CFG, LOG_DIR, BUILDOUT]),
        "{out}"
    );
    assert_line(&out, &format!("Starting {SERVICE}"));
    let supervisord = t.supervisord_pid();
    // No waiting: tack returned when supervisord said tick is RUNNING.
    let tick = t
        .tick()
        .unwrap_or_else(|| panic!("tick is not RUNNING\n{}", t.ctl(&["status"])));
    t.wait_for_a_tick();
    assert_eq!(t.loaded_priority(), "10:10");
    // Every package of the bootstrap is pinned: a rebuild next month is
    // the same build.
    let venv_python = t.d.path("work/supervisor/.venv/bin/python");
    let listed = Command::new(&venv_python)
        .args([
            "-m",
            "pip",
            "list",
            "--format=freeze",
            "--disable-pip-version-check",
        ])
        .output()
        .expect("run the bootstrap venv's pip");
    let listed = String::from_utf8_lossy(&listed.stdout);
    for pin in [
        "pip==26.3",
        "wheel==0.48.0",
        "setuptools==80.9.0",
        "zc.buildout==6.0.1",
    ] {
        assert!(
            listed.lines().any(|line| line == pin),
            "no `{pin}` in\n{listed}"
        );
    }
    let marker = t.d.read("work/supervisor/.venv/.tack-bootstrap");
    for pin in ["pip==26.3", "wheel==0.48.0"] {
        assert!(
            marker.lines().any(|line| line == pin),
            "no `{pin}` in\n{marker}"
        );
    }

    // 2. Deploying again changes nothing and restarts nothing.
    let out = t.deploy();
    assert!(actions(&out).is_empty(), "a no-op redeploy acted\n{out}");
    assert_eq!(t.supervisord_pid(), supervisord);
    assert_eq!(t.tick(), Some(tick), "{}", t.ctl(&["status"]));

    // tick is stopped by hand: the next deploy asks supervisord, starts
    // tick and returns when it runs again.
    t.ctl(&["stop", "tick"]);
    let out = t.d.tack(&["local", "dev", "--explain"]).success();
    let block = out.block("Starting Supervisor > Program(tick)");
    assert_contains(&block, "not running: STOPPED since ");
    assert_eq!(actions(&out).len(), 1, "{out}");
    let tick = t
        .tick()
        .unwrap_or_else(|| panic!("tick is not RUNNING\n{}", t.ctl(&["status"])));
    assert_eq!(t.supervisord_pid(), supervisord);

    // 3. tick's priority changes: buildout rewrites supervisord.conf and
    // supervisord reloads it, keeping its pid and restarting tick.
    t.d.replace(
        "components/tick/component.cfg",
        "priority = 10",
        "priority = 20",
    );
    let explained = t.d.tack(&["explain", "dev"]).success();
    let block = explained.block(&format!("Would reload (pid {supervisord}) {SERVICE}"));
    for part in [
        "Supervisor > Buildout changed",
        "[provide:programs] priority",
        "10 -> 20",
        "[attributes] priority",
    ] {
        assert_contains(&block, part);
    }
    assert_contains(&t.tick_config(), "priority = 10");
    assert_eq!(t.tick(), Some(tick), "explaining restarted tick");

    let out = t.deploy();
    assert_eq!(out.updated(), set(&[BUILDOUT_CFG, BUILDOUT]), "{out}");
    assert_line(&out, &format!("Reloading (pid {supervisord}) {SERVICE}"));
    // The reload restarted tick before tack returned.
    let reloaded_tick = t
        .tick()
        .filter(|pid| *pid != tick)
        .unwrap_or_else(|| panic!("tick was not restarted\n{}", t.ctl(&["status"])));
    assert_eq!(t.supervisord_pid(), supervisord, "a reload keeps the pid");
    assert_contains(&t.tick_config(), "priority = 20");
    assert_eq!(t.loaded_priority(), "20:20");
    t.wait_for_a_tick();
    let tick = reloaded_tick;

    // 4. tick.sh changes: only the file is written and supervisord
    // reloaded so that tick runs the new script; buildout does not run.
    let script = t.d.read("components/tick/tick.sh");
    t.d.write(
        "components/tick/tick.sh",
        &format!("{script}# Edited after the first deploy.\n"),
    );
    let out = t.deploy();
    assert_eq!(out.updated(), set(&[TICK_SH]), "{out}");
    assert_line(&out, &format!("Reloading (pid {supervisord}) {SERVICE}"));
    assert_eq!(actions(&out).len(), 2, "{out}");
    assert_contains(
        &t.d.read("work/tick/tick.sh"),
        "# Edited after the first deploy.",
    );
    let reloaded_tick = t.wait_for_tick(Some(tick));
    assert_eq!(t.supervisord_pid(), supervisord, "a reload keeps the pid");
    t.wait_for_a_tick();
    let tick = reloaded_tick;

    // 5. supervisord dies (SIGKILL: its pid file stays behind, naming a
    // dead process, and its tick runs on, orphaned): the next deploy stops
    // the orphan and starts supervisord again, and only it.
    signal(supervisord, "KILL");
    assert!(
        wait_until(PATIENCE, || !alive(supervisord)),
        "supervisord survived SIGKILL"
    );
    assert!(alive(tick), "tick is orphaned, not gone");
    let out = t.deploy();
    assert_eq!(
        actions(&out),
        [format!("Starting {SERVICE}").as_str()],
        "{out}"
    );
    assert_contains(
        &out.stdout,
        &format!("stopped what pid {supervisord}, which died, left running: {tick} (tick.sh)"),
    );
    assert!(!alive(tick), "the orphaned tick still runs");
    let restarted = t.supervisord_pid();
    assert_ne!(restarted, supervisord);
    let new_tick = t.wait_for_tick(Some(tick));
    let ticks: Vec<i32> = processes_running_from(&t.d.path("work/tick/tick.sh"))
        .into_iter()
        .filter(|pid| alive(*pid))
        .collect();
    assert_eq!(ticks, vec![new_tick], "exactly one tick runs");
    t.wait_for_a_tick();
    assert_eq!(t.loaded_priority(), "20:20");

    // And after all that, a deploy is a no-op again.
    let out = t.deploy();
    assert!(actions(&out).is_empty(), "a no-op redeploy acted\n{out}");
    assert_eq!(t.supervisord_pid(), restarted);
}

/// A deploy killed after buildout wrote the new supervisord.conf but
/// before supervisord was told: the reload is owed, and the next deploy
/// pays it although nothing changed since. A three-second step between
/// buildout and the service gives the kill a window that does not race.
#[test]
fn a_reload_owed_by_a_killed_deploy_happens_on_the_next_one() {
    let t = Tutorial::new(19102);
    t.d.replace(
        "components/supervisor/component.cfg",
        "[service:supervisord]",
        "[command:slow]\nrun = sleep 3\n\n[service:supervisord]",
    );
    let out = t.deploy();
    assert_eq!(
        out.updated(),
        set(&[TICK_SH, BUILDOUT_CFG, LOG_DIR, BUILDOUT, SLOW]),
        "{out}"
    );
    let supervisord = t.supervisord_pid();
    let tick = t.wait_for_tick(None);

    t.d.replace(
        "components/tick/component.cfg",
        "priority = 10",
        "priority = 20",
    );
    let mut run = Background::spawn(&t.d, &["local", "dev"]);
    run.wait_for_line(&format!("Updating {BUILDOUT}"));
    run.kill();

    // The new config is on disk, supervisord still runs the old one.
    assert_contains(&t.tick_config(), "priority = 20");
    assert_eq!(t.supervisord_pid(), supervisord);
    assert_eq!(t.loaded_priority(), "10:10", "supervisord was reloaded");
    assert_eq!(t.tick(), Some(tick), "tick was restarted");

    let explained = t.d.tack(&["explain", "dev"]).success();
    explained.block(&format!("Would reload (pid {supervisord}) {SERVICE}"));
    let out = t.deploy();
    assert_line(&out, &format!("Reloading (pid {supervisord}) {SERVICE}"));
    // What finished before the kill is not done again.
    assert_eq!(out.updated(), set(&[SLOW]), "{out}");
    t.wait_for_tick(Some(tick));
    assert_eq!(t.supervisord_pid(), supervisord, "a reload keeps the pid");
    assert_eq!(t.loaded_priority(), "20:20");

    let out = t.deploy();
    assert!(actions(&out).is_empty(), "a no-op redeploy acted\n{out}");
}

/// A script buildout made is deleted by hand: buildout's outputs come back
/// (from the cache, which holds them since the first deploy, verified);
/// supervisord, whose config did not change, keeps running untouched.
#[test]
fn a_deleted_buildout_script_is_rebuilt() {
    let t = Tutorial::new(19103);
    t.deploy();
    let supervisord = t.supervisord_pid();
    let tick = t.wait_for_tick(None);

    fs::remove_file(t.d.path("work/supervisor/bin/supervisord")).unwrap();
    let explained = t.d.tack(&["explain", "dev"]).success();
    let block = explained.block(&format!("Would update {BUILDOUT}"));
    assert_contains(&block, "bin/supervisord` is missing");

    // What is left of the buildout is not the tree tack recorded, so the
    // cache never writes over it: buildout runs and makes the script again.
    let out = t.deploy();
    assert_eq!(actions(&out), [format!("Updating {BUILDOUT}")], "{out}");
    assert_contains(&out.stdout, "not restored from the cache");
    assert!(t.d.exists("work/supervisor/bin/supervisord"));
    assert_eq!(t.supervisord_pid(), supervisord);
    assert_eq!(t.tick(), Some(tick), "{}", t.ctl(&["status"]));

    let out = t.deploy();
    assert!(actions(&out).is_empty(), "a no-op redeploy acted\n{out}");
}

/// A CI runner's fresh checkout at the same path, with `.tack/cache`
/// restored: the buildout (whose scripts embed absolute paths, so it is
/// cached per path) comes from the cache instead of PyPI, and supervisord
/// comes up from the restored scripts.
#[test]
fn a_fresh_checkout_restores_its_buildout_from_the_cache() {
    let t = Tutorial::new(19104);
    t.deploy();
    let pid = t.supervisord_pid();
    t.ctl(&["shutdown"]);
    assert!(
        wait_until(PATIENCE, || !alive(pid)),
        "supervisord did not stop"
    );
    fs::remove_dir_all(t.d.path("work")).unwrap();
    fs::remove_dir_all(t.d.path(".tack/state")).unwrap();

    let out = t.deploy();
    assert_line(&out, "Restored Supervisor > Buildout (from cache)");
    assert_line(&out, &format!("Starting {SERVICE}"));
    t.wait_for_tick(None);
    let again = t.deploy();
    assert!(actions(&again).is_empty(), "{again}");
}
