//! The ssh transport against a real OpenSSH server ([`Sshd`]): the
//! bootstrap uploads tack once per binary, finds a damaged copy and
//! replaces it, and an unreachable host or a destination ssh would read as
//! an option fails at once, named. Driven through the hidden
//! `tack ssh-ping HOST`, which starts the agent as a deploy does.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::support::Sshd;

/// The binary under test: what the bootstrap uploads.
fn tack_binary() -> Vec<u8> {
    fs::read(env!("CARGO_BIN_EXE_tack")).expect("read the tack binary")
}

/// Where the remote cache of `sshd` keeps the binary under test.
fn cached_binary(sshd: &Sshd) -> PathBuf {
    let hash = blake3::hash(&tack_binary()).to_hex().to_string();
    sshd.remote_cache().join("tack/bin").join(hash).join("tack")
}

#[test]
fn the_first_start_uploads_tack_and_later_ones_find_it() {
    if !Sshd::installed("the_first_start_uploads_tack_and_later_ones_find_it") {
        return;
    }
    let sshd = Sshd::start();
    let size = tack_binary().len();

    let first = sshd.tack(&["ssh-ping", "alpha"]).success();
    assert!(
        first.stdout.starts_with(&format!(
            "uploaded {size} bytes to alpha\npong from alpha (tack "
        )),
        "{first}"
    );
    let cached = cached_binary(&sshd);
    assert_eq!(fs::read(&cached).unwrap(), tack_binary());
    let mode = |path: &std::path::Path| fs::metadata(path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(cached.parent().unwrap()), 0o700);
    assert_eq!(mode(&cached), 0o755);
    let entries = fs::read_dir(cached.parent().unwrap()).unwrap().count();
    assert_eq!(entries, 1, "the upload's temp file is gone");

    // Another alias of the same server shares the cache: nothing is sent.
    for host in ["alpha", "beta"] {
        let again = sshd.tack(&["ssh-ping", host]).success();
        assert!(
            again.stdout.starts_with(&format!(
                "tack is already on {host}\npong from {host} (tack "
            )),
            "{again}"
        );
    }
}

#[test]
fn a_truncated_binary_in_the_cache_is_uploaded_again() {
    if !Sshd::installed("a_truncated_binary_in_the_cache_is_uploaded_again") {
        return;
    }
    let sshd = Sshd::start();
    sshd.tack(&["ssh-ping", "alpha"]).success();
    let cached = cached_binary(&sshd);
    let whole = tack_binary();
    fs::write(&cached, &whole[..whole.len() / 2]).unwrap();

    let output = sshd.tack(&["ssh-ping", "alpha"]).success();
    assert!(
        output
            .stdout
            .starts_with(&format!("uploaded {} bytes to alpha\n", whole.len())),
        "{output}"
    );
    assert_eq!(fs::read(&cached).unwrap(), whole);
}

#[test]
fn a_corrupted_binary_in_the_cache_is_refused_removed_and_uploaded_next_time() {
    if !Sshd::installed("a_corrupted_binary_in_the_cache_is_refused_removed_and_uploaded_next_time")
    {
        return;
    }
    let sshd = Sshd::start();
    sshd.tack(&["ssh-ping", "alpha"]).success();
    let cached = cached_binary(&sshd);
    // Same size, same first bytes, still runs: one byte of the section
    // header table at the end, which the loader does not read.
    let mut damaged = tack_binary();
    let last = damaged.len() - 1;
    damaged[last] ^= 0xff;
    fs::write(&cached, &damaged).unwrap();

    let output = sshd.tack(&["ssh-ping", "alpha"]);
    assert_eq!(output.code, 2, "{output}");
    assert_eq!(output.stdout, "", "{output}");
    assert!(
        output
            .stderr
            .starts_with("error: host `alpha`: the tack binary in its cache is corrupt (blake3 "),
        "{output}"
    );
    assert!(
        output
            .stderr
            .contains("the agent removed it, and the next start uploads it again"),
        "{output}"
    );
    assert!(!cached.exists(), "the damaged binary is removed");

    let next = sshd.tack(&["ssh-ping", "alpha"]).success();
    assert!(next.stdout.starts_with("uploaded "), "{next}");
    assert_eq!(fs::read(&cached).unwrap(), tack_binary());
}

#[test]
fn an_unreachable_host_fails_at_once_naming_it_and_ssh_s_reason() {
    if !Sshd::installed("an_unreachable_host_fails_at_once_naming_it_and_ssh_s_reason") {
        return;
    }
    let sshd = Sshd::start();
    let started = Instant::now();
    let output = sshd.tack(&["ssh-ping", "down"]);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(output.code, 2, "{output}");
    assert_eq!(output.stdout, "", "{output}");
    assert!(
        output
            .stderr
            .starts_with("error: cannot reach host `down`: ssh: connect to host 127.0.0.1 port "),
        "{output}"
    );
    assert!(output.stderr.contains("Connection refused"), "{output}");
}

#[test]
fn a_destination_starting_with_a_dash_is_refused_before_ssh_runs() {
    if !Sshd::installed("a_destination_starting_with_a_dash_is_refused_before_ssh_runs") {
        return;
    }
    let sshd = Sshd::start();
    let planted = sshd.remote_cache().join("planted");
    let option = format!("-oProxyCommand=touch {}", planted.display());
    let output = sshd.tack(&["ssh-ping", "--", &option]);
    assert_eq!(output.code, 2, "{output}");
    assert_eq!(
        output.stderr,
        format!(
            "error: ssh destination `{option}` starts with `-`: ssh would read it as an option\n"
        )
    );
    assert!(!planted.exists(), "ssh ran the option's command");
}

#[test]
fn a_host_of_another_platform_is_refused_before_the_binary_is_sent() {
    if !Sshd::installed("a_host_of_another_platform_is_refused_before_the_binary_is_sent") {
        return;
    }
    let sshd = Sshd::start();
    let output = sshd.tack(&["ssh-ping", "foreign"]);
    assert_eq!(output.code, 2, "{output}");
    assert_eq!(
        output.stderr,
        format!(
            "error: host `foreign`: it runs Darwin arm64 (macos/aarch64) and this tack is built \
             for {}/{}; nothing was sent\n",
            std::env::consts::OS,
            std::env::consts::ARCH
        )
    );
    let entry = cached_binary(&sshd).parent().unwrap().to_path_buf();
    let left: Vec<_> = fs::read_dir(&entry).unwrap().collect();
    assert!(left.is_empty(), "left in the cache: {left:?}");
}

#[test]
fn what_a_login_shell_prints_before_the_bootstrap_is_skipped() {
    if !Sshd::installed("what_a_login_shell_prints_before_the_bootstrap_is_skipped") {
        return;
    }
    let sshd = Sshd::start();
    let greeting = sshd.ssh_output(&["chatty", "true"]);
    assert_eq!(greeting, "Welcome to chatty\n", "the fixture greets");
    let first = sshd.tack(&["ssh-ping", "chatty"]).success();
    assert!(first.stdout.starts_with("uploaded "), "{first}");
    let again = sshd.tack(&["ssh-ping", "chatty"]).success();
    assert!(
        again
            .stdout
            .starts_with("tack is already on chatty\npong from chatty"),
        "{again}"
    );
}

/// Every tack build leaves an entry in the host's cache; an upload removes
/// the entries of builds not started there for 30 days, and keeps the
/// others (another version still in use).
#[test]
fn an_upload_removes_the_entries_of_builds_unused_for_thirty_days() {
    if !Sshd::installed("an_upload_removes_the_entries_of_builds_unused_for_thirty_days") {
        return;
    }
    let sshd = Sshd::start();
    let bin = sshd.remote_cache().join("tack/bin");
    let old = bin.join("0123456789abcdef".repeat(4));
    let recent = bin.join("fedcba9876543210".repeat(4));
    for entry in [&old, &recent] {
        fs::create_dir_all(entry).unwrap();
        fs::write(entry.join("tack"), "an older build").unwrap();
    }
    let status = std::process::Command::new("touch")
        .args(["-d", "40 days ago"])
        .arg(&old)
        .status()
        .unwrap();
    assert!(status.success());
    let first = sshd.tack(&["ssh-ping", "alpha"]).success();
    assert!(first.stdout.starts_with("uploaded "), "{first}");
    assert!(!old.exists(), "an entry unused for 40 days is kept");
    assert!(recent.join("tack").exists(), "a recent entry was removed");
    assert!(cached_binary(&sshd).exists());
}
