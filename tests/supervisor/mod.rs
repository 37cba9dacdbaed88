//! The prebuilt `[supervisor]` resource, end to end with the real
//! supervisor from PyPI: editing one program's script restarts that
//! program alone, changing one program's priority restarts that one alone
//! (via `supervisorctl update`), and supervisord keeps its pid throughout.
//! A deploy returns when every program it (re)started is RUNNING, or fails
//! with the program's log; a program stopped or restarted outside tack is
//! seen; a supervisord killed with SIGKILL leaves no second instance of a
//! program behind; program options reach supervisord; the port is a
//! template; a program restarts once per deploy.
//!
//! Every test picks free ports and stops everything it started.

use std::fs;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support::{free_port, set, Deployment, Output};
use crate::tutorial::{
    alive, processes_running_from, running_pid, signal, stop_everything, wait_until,
};

const PATIENCE: Duration = Duration::from_secs(30);

/// Components providing programs, and a component running them with
/// `[supervisor]` on a port set for the environment.
struct Supervised {
    _stop: Stop,
    d: Deployment,
    port: u16,
}

struct Stop {
    root: PathBuf,
}

impl Drop for Stop {
    fn drop(&mut self) {
        let work = self.root.join("work/supervisor");
        let ctl = work.join(".venv/bin/supervisorctl");
        stop_everything(&self.root, &work, &ctl, &["-c", "etc/supervisord.conf"]);
    }
}

/// A program that appends `PID GREETING` to `started.log` in its work dir
/// each time it starts, then ticks; `extra` lines join its
/// `[provide:programs]`.
fn program(name: &str, extra: &str) -> String {
    let extra = extra.replace('\n', "\n        ");
    format!(
        "
        [attributes]
        priority = 10

        [file:{name}.sh]
        content =
            #!/bin/sh
            echo \"$$ $GREETING\" >> {{{{ workdir }}}}/started.log
            while true; do echo {name}; sleep 1; done
        mode = 0755

        [provide:programs]
        name = {name}
        priority = {{{{ priority }}}}
        command = {{{{ workdir }}}}/{name}.sh
        {extra}
        "
    )
}

impl Supervised {
    /// tick and tock, plain.
    fn two_programs() -> Supervised {
        Supervised::with(&[("tick", program("tick", "")), ("tock", program("tock", ""))])
    }

    /// The given program components; supervisord's port is an attribute,
    /// set for the environment to a free one.
    fn with(programs: &[(&str, String)]) -> Supervised {
        let port = free_port();
        let names: Vec<&str> = programs.iter().map(|(name, _)| *name).collect();
        let mut d = Deployment::new().env(
            "dev",
            &format!(
                "[hosts]\nlocalhost = {}, supervisor\n\n[component:supervisor]\nport = {port}\n",
                names.join(", ")
            ),
        );
        for (name, text) in programs {
            d = d.component(name, text);
        }
        let d = d.component(
            "supervisor",
            "[attributes]\nport = 9001\n\n[require:programs]\n\n[supervisor]\nport = {{ port }}\n",
        );
        Supervised {
            _stop: Stop { root: d.path("") },
            d,
            port,
        }
    }

    fn deploy(&self) -> Output {
        self.d.tack(&["local", "dev"]).success()
    }

    fn ctl(&self, args: &[&str]) -> String {
        let output = Command::new(self.d.path("work/supervisor/.venv/bin/supervisorctl"))
            .args(["-c", "etc/supervisord.conf"])
            .args(args)
            .current_dir(self.d.path("work/supervisor"))
            .stdin(Stdio::null())
            .output()
            .expect("run supervisorctl");
        format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    }

    fn status(&self) -> String {
        self.ctl(&["status"])
    }

    fn supervisord(&self) -> i32 {
        let text = fs::read_to_string(self.d.path("work/supervisor/var/supervisord.pid")).unwrap();
        let pid = text.trim().parse().unwrap();
        assert!(alive(pid), "supervisord is not running");
        pid
    }

    /// Waits until both programs run and returns (tick, tock) pids.
    #[track_caller]
    fn running(&self) -> (i32, i32) {
        let mut pids = (None, None);
        let up = wait_until(PATIENCE, || {
            let status = self.status();
            pids = (running_pid(&status, "tick"), running_pid(&status, "tock"));
            pids.0.is_some() && pids.1.is_some()
        });
        assert!(up, "tick and tock are not both RUNNING\n{}", self.status());
        (pids.0.unwrap(), pids.1.unwrap())
    }

    /// The lines `name` wrote when it started: one per start.
    fn starts(&self, name: &str) -> Vec<String> {
        fs::read_to_string(self.d.path(&format!("work/{name}/started.log")))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// The live processes running `name`'s script.
    fn instances(&self, name: &str) -> Vec<i32> {
        let script = self.d.path(&format!("work/{name}/{name}.sh"));
        processes_running_from(&script)
            .into_iter()
            .filter(|pid| alive(*pid))
            .collect()
    }
}

#[test]
fn a_deploy_returns_when_programs_run_and_a_stopped_one_is_started_by_the_next() {
    let t = Supervised::two_programs();
    t.deploy();
    // No waiting here: when tack returns, supervisord says RUNNING.
    let status = t.status();
    let tick =
        running_pid(&status, "tick").unwrap_or_else(|| panic!("tick is not RUNNING\n{status}"));
    assert!(
        running_pid(&status, "tock").is_some(),
        "tock is not RUNNING\n{status}"
    );
    // The port came from the environment, through the attribute.
    assert!(
        t.d.read("work/supervisor/etc/supervisord.conf")
            .contains(&format!("port = 127.0.0.1:{}", t.port)),
        "{}",
        t.d.read("work/supervisor/etc/supervisord.conf")
    );

    t.ctl(&["stop", "tick"]);
    let out = t.d.tack(&["local", "dev", "--explain"]).success();
    let block = out.block("Starting Supervisor > Program(tick)");
    assert!(block.contains("not running: STOPPED since "), "{out}");
    let status = t.status();
    let started =
        running_pid(&status, "tick").unwrap_or_else(|| panic!("tick is not RUNNING\n{status}"));
    assert_ne!(started, tick);

    // Restarted by someone else: told, and nothing else done.
    t.ctl(&["restart", "tick"]);
    let restarted = running_pid(&t.status(), "tick").expect("tick runs");
    let out = t.deploy();
    assert!(
        out.stdout.contains(&format!(
            "Noticed Supervisor > Program(tick): restarted outside tack: {started} -> {restarted}"
        )),
        "{out}"
    );
    assert_eq!(running_pid(&t.status(), "tick"), Some(restarted));
    let out = t.deploy();
    assert!(!out.stdout.contains("Noticed"), "told once\n{out}");
}

#[test]
fn a_program_that_cannot_start_fails_the_deploy_with_its_log() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let web = format!(
        "
        [provide:programs]
        name = web
        command = python3 -m http.server {port} --bind 127.0.0.1
        startretries = 1
        "
    );
    let t = Supervised::with(&[("tick", program("tick", "")), ("web", web)]);
    let out = t.d.tack(&["local", "dev"]);
    assert_eq!(out.code, 1, "{out}");
    let block = out.block("Failed Supervisor > Service(supervisord)");
    for part in [
        "program `web` did not start: FATAL",
        "its log ends with:",
        "Address already in use",
    ] {
        assert!(block.contains(part), "`{part}` is not in\n{out}");
    }
    assert!(
        out.stdout.contains("Skipped Supervisor > Program(web)"),
        "{out}"
    );

    // The port is free again: the next deploy starts web and returns when
    // it runs.
    drop(taken);
    let out = t.deploy();
    assert!(
        out.stdout.contains("Supervisor > Service(supervisord)"),
        "{out}"
    );
    let status = t.status();
    assert!(running_pid(&status, "web").is_some(), "{status}");
}

#[test]
fn a_supervisord_killed_with_sigkill_leaves_one_instance_of_each_program() {
    let t = Supervised::two_programs();
    t.deploy();
    let supervisord = t.supervisord();
    let (tick, tock) = t.running();

    signal(supervisord, "KILL");
    assert!(
        wait_until(PATIENCE, || !alive(supervisord)),
        "supervisord survived SIGKILL"
    );
    assert!(
        alive(tick) && alive(tock),
        "the programs are orphaned, not gone"
    );

    let out = t.deploy();
    assert!(!alive(tick) && !alive(tock), "the orphans still run\n{out}");
    let (new_tick, new_tock) = t.running();
    assert_eq!(t.instances("tick"), vec![new_tick], "{}", t.status());
    assert_eq!(t.instances("tock"), vec![new_tock], "{}", t.status());
    assert!(
        out.stdout
            .contains("Starting Supervisor > Service(supervisord)"),
        "{out}"
    );
    assert!(
        out.stdout.contains(&format!(
            "stopped what pid {supervisord}, which died, left running: "
        )),
        "{out}"
    );
}

#[test]
fn program_options_reach_supervisord() {
    let t = Supervised::with(&[(
        "tick",
        program(
            "tick",
            "environment = GREETING=\"hello from tack\"\nstartsecs = 2\nstopasgroup = true",
        ),
    )]);
    t.deploy();
    let conf = t.d.read("work/supervisor/etc/supervisord.conf");
    for line in ["startsecs = 2", "stopasgroup = true"] {
        assert!(conf.contains(line), "{conf}");
    }
    assert!(
        !conf.contains("autorestart"),
        "supervisord's default\n{conf}"
    );
    assert_eq!(t.starts("tick").len(), 1);
    assert!(
        t.starts("tick")[0].ends_with(" hello from tack"),
        "{:?}",
        t.starts("tick")
    );
}

#[test]
fn an_unknown_program_option_is_a_configuration_error() {
    let d = Deployment::new()
        .env("dev", "[hosts]\nlocalhost = tick, supervisor\n")
        .component("tick", &program("tick", "startsec = 2"))
        .component("supervisor", "[require:programs]\n\n[supervisor]\n");
    let out = d.tack(&["local", "dev"]);
    assert_eq!(out.code, 2, "{out}");
    assert!(
        out.stderr.contains(
            "components/tick/component.cfg:15 [provide:programs] startsec: unknown supervisord program option `startsec` for program `tick`"
        ),
        "{out}"
    );
    assert!(!d.exists("work"), "nothing is written");
}

#[test]
fn a_change_to_a_program_and_its_config_restarts_it_once() {
    let t = Supervised::two_programs();
    t.deploy();
    let (tick, tock) = t.running();
    assert_eq!(t.starts("tick").len(), 1);

    // Its priority (its section of supervisord.conf: `update` restarts it)
    // and its script (its component: its node restarts it) at once.
    t.d.replace(
        "components/tick/component.cfg",
        "priority = 10",
        "priority = 20",
    );
    t.d.replace(
        "components/tick/component.cfg",
        "echo tick;",
        "echo tick again;",
    );
    let out = t.deploy();
    let (new_tick, same_tock) = t.running();
    assert_eq!(t.starts("tick").len(), 2, "{:?}\n{out}", t.starts("tick"));
    assert_ne!(new_tick, tick);
    assert_eq!(same_tock, tock, "tock kept running");
    assert!(
        out.stdout.contains(&format!(
            "Restarting (pid {tick}) Supervisor > Program(tick)"
        )),
        "{out}"
    );
}

/// tack killed (SIGKILL) while it waits for programs to be RUNNING, after
/// starting supervisord and after restarting a program: the next deploy
/// finishes the job, with one supervisord and one instance of each
/// program, and the one after is a no-op.
#[test]
fn a_deploy_killed_while_it_waits_for_running_converges() {
    const KILL: &str = "TACK_TEST_KILL_WHILE_WAITING";
    let t = Supervised::two_programs();
    let (out, signal) = t.d.tack_with_env(&["local", "dev"], &[(KILL, "1")]);
    assert_eq!(signal, Some(9), "the switch did not fire\n{out}");
    let first = t.supervisord();

    let out = t.deploy();
    assert_eq!(t.supervisord(), first, "supervisord kept its pid\n{out}");
    let (tick, tock) = t.running();
    assert_eq!(t.instances("tick"), vec![tick]);
    assert_eq!(t.instances("tock"), vec![tock]);

    t.d.replace(
        "components/tick/component.cfg",
        "echo tick;",
        "echo tick again;",
    );
    let (out, signal) = t.d.tack_with_env(&["local", "dev"], &[(KILL, "1")]);
    assert_eq!(signal, Some(9), "the switch did not fire\n{out}");
    // Once the program the killed run restarted is up, the next deploy
    // restarts it again: it cannot know the restart happened after the
    // script was written.
    let (killed_run_tick, _) = t.running();
    let explained = t.d.tack(&["explain", "dev"]).success();
    let block = explained.block(&format!(
        "Would restart (pid {killed_run_tick}) Supervisor > Program(tick)"
    ));
    assert!(
        block.contains("the last attempt did not finish"),
        "{explained}"
    );

    let out = t.deploy();
    let (new_tick, same_tock) = t.running();
    assert_eq!(same_tock, tock, "tock kept running\n{out}");
    assert_eq!(t.instances("tick"), vec![new_tick]);
    assert_eq!(t.supervisord(), first);
    let out = t.deploy();
    assert!(
        out.updated().is_empty() && !out.stdout.contains("Restarting"),
        "{out}"
    );
}

/// A no-op starts no process: the venv's python version comes from its
/// `pyvenv.cfg`, not from running `python3 --version` (through a pyenv
/// shim alone that takes 50 ms). A `python3` first on PATH that logs
/// its calls shows it.
#[test]
fn a_no_op_runs_no_python() {
    let t = Supervised::two_programs();
    t.deploy();
    t.running();
    let shims = t.d.path("shims");
    fs::create_dir_all(&shims).unwrap();
    let calls = t.d.path("python-calls.log");
    let real = Command::new("sh")
        .args(["-c", "command -v python3"])
        .output()
        .expect("find python3");
    let real = String::from_utf8_lossy(&real.stdout).trim().to_string();
    let shim = shims.join("python3");
    fs::write(
        &shim,
        format!(
            "#!/bin/sh\necho \"$@\" >> {}\nexec {real} \"$@\"\n",
            calls.display()
        ),
    )
    .unwrap();
    Command::new("chmod")
        .arg("755")
        .arg(&shim)
        .status()
        .unwrap();
    let path = format!(
        "{}:{}",
        shims.display(),
        std::env::var("PATH").unwrap_or_default()
    );

    let (out, _) = t.d.tack_with_env(&["local", "dev"], &[("PATH", &path)]);
    let out = out.success();
    assert!(out.updated().is_empty(), "{out}");
    assert!(
        !calls.exists(),
        "the no-op ran python3: {}",
        fs::read_to_string(&calls).unwrap_or_default()
    );
}

#[test]
fn changing_one_program_restarts_only_that_one() {
    let t = Supervised::two_programs();
    let first = t.deploy();
    assert!(
        first
            .stdout
            .contains("Starting Supervisor > Service(supervisord)"),
        "{first}"
    );
    let supervisord = t.supervisord();
    let (tick, tock) = t.running();

    // A no-op changes nothing and restarts nothing.
    let noop = t.deploy();
    assert!(noop.updated().is_empty(), "{noop}");
    assert_eq!(t.running(), (tick, tock));

    // tick's script changes: tick restarts by name, tock keeps running.
    t.d.replace(
        "components/tick/component.cfg",
        "echo tick;",
        "echo tick again;",
    );
    let out = t.deploy();
    assert_eq!(out.updated(), set(&["Tick > File(tick.sh)"]), "{out}");
    assert!(
        out.stdout.contains(&format!(
            "Restarting (pid {tick}) Supervisor > Program(tick)"
        )),
        "{out}"
    );
    let (new_tick, same_tock) = t.running();
    assert_ne!(new_tick, tick, "tick restarted");
    assert_eq!(same_tock, tock, "tock kept running");
    assert_eq!(t.supervisord(), supervisord, "supervisord kept its pid");

    // tock's priority changes: its config entry changes, `update` restarts
    // tock alone.
    t.d.replace(
        "components/tock/component.cfg",
        "priority = 10",
        "priority = 30",
    );
    let out = t.deploy();
    assert!(
        out.updated()
            .contains("Supervisor > File(etc/supervisord.conf)"),
        "{out}"
    );
    assert!(
        out.stdout.contains(&format!(
            "Reloading (pid {supervisord}) Supervisor > Service(supervisord)"
        )),
        "{out}"
    );
    let mut now = (0, 0);
    let restarted = wait_until(PATIENCE, || {
        now = t.running();
        now.1 != tock
    });
    assert!(restarted, "tock restarted\n{}", t.status());
    assert_eq!(now.0, new_tick, "tick kept running");
    assert_eq!(t.supervisord(), supervisord, "supervisord kept its pid");
}
