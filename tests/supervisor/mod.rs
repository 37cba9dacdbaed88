//! The prebuilt `[supervisor]` resource with two programs, end to end with
//! the real supervisor from PyPI: editing one program's script restarts
//! that program alone, changing one program's priority restarts that one
//! alone (via `supervisorctl update`), and supervisord keeps its pid
//! throughout.

use std::fs;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support::{set, Deployment, Output};
use crate::tutorial::{alive, running_pid, stop_everything, wait_until};

const PATIENCE: Duration = Duration::from_secs(30);

/// tick and tock, each providing a program, and a component running them
/// with `[supervisor]` on `port`.
struct TwoPrograms {
    _stop: Stop,
    d: Deployment,
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

fn program(name: &str) -> String {
    format!(
        "
        [attributes]
        priority = 10

        [file:{name}.sh]
        content =
            #!/bin/sh
            while true; do echo {name}; sleep 1; done
        mode = 0755

        [provide:programs]
        name = {name}
        priority = {{{{ priority }}}}
        command = {{{{ workdir }}}}/{name}.sh
        "
    )
}

impl TwoPrograms {
    fn new(port: u16) -> TwoPrograms {
        let d = Deployment::new()
            .env("dev", "[hosts]\nlocalhost = tick, tock, supervisor\n")
            .component("tick", &program("tick"))
            .component("tock", &program("tock"))
            .component(
                "supervisor",
                &format!("[require:programs]\n\n[supervisor]\nport = {port}\n"),
            );
        TwoPrograms {
            _stop: Stop { root: d.path("") },
            d,
        }
    }

    fn deploy(&self) -> Output {
        self.d.tack(&["local", "dev"]).success()
    }

    fn status(&self) -> String {
        let output = Command::new(self.d.path("work/supervisor/.venv/bin/supervisorctl"))
            .args(["-c", "etc/supervisord.conf", "status"])
            .current_dir(self.d.path("work/supervisor"))
            .stdin(Stdio::null())
            .output()
            .expect("run supervisorctl");
        String::from_utf8_lossy(&output.stdout).into_owned()
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
}

#[test]
fn changing_one_program_restarts_only_that_one() {
    let t = TwoPrograms::new(19111);
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
    assert_eq!(
        out.updated(),
        set(&["Tick > File(tick.sh)", "Supervisor > Program(tick)"]),
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
