//! One deployment directory is deployed by one tack at a time: a second
//! tack waits for the first and says for whom it waits, and a lock left by
//! a dead tack is taken over.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::Deployment;

fn slow_deployment() -> Deployment {
    Deployment::new()
        .env("dev", "[hosts]\nlocalhost = slow\n")
        .component(
            "slow",
            "
            [command:wait]
            run = touch ../../started; while [ ! -f ../../release ]; do sleep 0.05; done
            ",
        )
}

/// A deployment and a tack deploying it that holds the lock until
/// `release` is written.
fn holding_the_lock() -> (Deployment, Child) {
    let deployment = slow_deployment();
    let first = Command::new(env!("CARGO_BIN_EXE_tack"))
        .args(["local", "dev"])
        .current_dir(deployment.path(""))
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !deployment.exists("started") {
        assert!(
            Instant::now() < deadline,
            "the first tack never started its step"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    (deployment, first)
}

#[test]
fn a_second_tack_waits_for_the_first_and_both_succeed() {
    let (deployment, mut first) = holding_the_lock();
    let tack = env!("CARGO_BIN_EXE_tack");
    let second = Command::new(tack)
        .args(["local", "dev", "--force", "slow"])
        .current_dir(deployment.path(""))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The second waits while the first holds the lock; release the first.
    std::thread::sleep(Duration::from_millis(300));
    deployment.write("release", "");
    assert!(first.wait().unwrap().success());
    let second = second.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(second.status.success(), "{stderr}");
    let holder = format!(
        "waiting for the deploy lock of this directory (pid {}",
        first.id()
    );
    assert!(
        stderr.contains(&holder),
        "the waiting tack names the holder: {stderr}"
    );
}

#[test]
fn lock_timeout_gives_up_with_a_clear_error() {
    let (deployment, mut first) = holding_the_lock();
    let second = deployment.tack(&["local", "dev", "--lock-timeout", "0"]);
    deployment.write("release", "");
    assert!(first.wait().unwrap().success());
    assert_eq!(second.code, 2, "{second}");
    assert!(second.stderr.contains("--lock-timeout"), "{second}");
}

#[test]
fn a_stale_lock_of_a_dead_process_is_taken_over() {
    let deployment = Deployment::new()
        .env("dev", "[hosts]\nlocalhost = app\n")
        .component("app", "[file:a.txt]\ncontent = a\n");
    deployment.write(".tack/lock", "pid 999999 since 1\n");
    deployment
        .tack(&["local", "dev", "--lock-timeout", "1"])
        .success();
    assert!(deployment.exists("work/app/a.txt"));
}
