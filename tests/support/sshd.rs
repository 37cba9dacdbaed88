//! A real OpenSSH server on 127.0.0.1 for one test, with throwaway host
//! and user keys: the transport is tested against what operators run, not
//! a mock of ssh.
//!
//! Every host alias of [`Sshd::config_path`] (alpha, beta, gamma,
//! host01..host20) reaches this server as the current user; `down` is a
//! port nobody listens on. Two more aliases reach the server on ports of
//! their own: `foreign`, whose sessions find a `uname` saying `Darwin
//! arm64` first in `PATH` (sshd sets it; a client's `PATH` would be
//! reset), and `chatty`, whose sessions print a greeting on stdout before
//! running the command, as a login shell's rc file may. The server sets `XDG_CACHE_HOME` of every
//! session to [`Sshd::remote_cache`], so tests never write the real
//! `~/.cache`. sshd is killed when the value is dropped.
//!
//! Without `/usr/sbin/sshd` the tests are skipped with a note, unless
//! `TACK_REQUIRE_SSH_TESTS=1` (set by `.ci/run`) makes that a failure.

use std::fmt::Write as _;
use std::fs;
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::support::{free_port, Output};

const SSHD: &str = "/usr/sbin/sshd";

/// The aliases of the server in [`Sshd::config_path`].
pub const HOSTS: [&str; 23] = [
    "alpha", "beta", "gamma", "host01", "host02", "host03", "host04", "host05", "host06", "host07",
    "host08", "host09", "host10", "host11", "host12", "host13", "host14", "host15", "host16",
    "host17", "host18", "host19", "host20",
];

/// How long sshd may take to listen.
const STARTUP: Duration = Duration::from_secs(10);

pub struct Sshd {
    dir: TempDir,
    child: Child,
    ports: Ports,
}

/// The ports sshd listens on, each for other sessions.
#[derive(Clone, Copy)]
struct Ports {
    /// Plain sessions: alpha, beta, ... host20.
    main: u16,
    /// Sessions with the fake `uname` of `foreign`.
    foreign: u16,
    /// Sessions that greet first, of `chatty`.
    chatty: u16,
}

impl Sshd {
    /// Whether `test` can run: true when sshd is installed; else says it
    /// was skipped, or fails under `TACK_REQUIRE_SSH_TESTS`.
    pub fn installed(test: &str) -> bool {
        if Path::new(SSHD).exists() {
            return true;
        }
        assert!(
            std::env::var_os("TACK_REQUIRE_SSH_TESTS").is_none(),
            "{test} needs {SSHD}: install openssh-server (apt-get install openssh-server)"
        );
        eprintln!("skipped {test}: needs {SSHD} (openssh-server)");
        false
    }

    /// Keys, configs, and sshd listening on a free port of 127.0.0.1.
    pub fn start() -> Sshd {
        let dir = tempfile::Builder::new()
            .prefix("tack-sshd-")
            .tempdir()
            .expect("create a temp dir");
        keygen(&dir.path().join("host_key"));
        keygen(&dir.path().join("user_key"));
        fs::copy(
            dir.path().join("user_key.pub"),
            dir.path().join("authorized_keys"),
        )
        .expect("write authorized_keys");
        fs::create_dir(dir.path().join("remote-cache")).expect("create remote-cache");
        write_foreign_uname(dir.path());
        // sshd started as root wants its privilege separation directory.
        fs::create_dir_all("/run/sshd").expect("create /run/sshd");
        // A port taken between `free_port` and sshd's bind: try another.
        let mut last_log = String::new();
        for _ in 0..5 {
            let ports = Ports {
                main: free_port(),
                foreign: free_port(),
                chatty: free_port(),
            };
            let config = dir.path().join("sshd_config");
            let text = sshd_config(dir.path(), ports);
            fs::write(&config, text).expect("write sshd_config");
            let log = fs::File::create(dir.path().join("sshd.log")).expect("create sshd.log");
            let mut child = Command::new(SSHD)
                .arg("-D")
                .arg("-e")
                .arg("-f")
                .arg(&config)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("start sshd");
            let listening = [ports.main, ports.foreign, ports.chatty]
                .into_iter()
                .all(|port| wait_for_port(&mut child, port));
            if listening {
                let sshd = Sshd { dir, child, ports };
                sshd.write_client_config();
                return sshd;
            }
            let _ = child.kill();
            let _ = child.wait();
            last_log = fs::read_to_string(dir.path().join("sshd.log")).unwrap_or_default();
        }
        panic!("sshd did not start listening:\n{last_log}");
    }

    /// The ssh config with the host aliases (`ssh -F`).
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("ssh_config")
    }

    /// `XDG_CACHE_HOME` of every session: tack's binary cache is
    /// `remote_cache()/tack/bin/<hash>/tack`.
    pub fn remote_cache(&self) -> PathBuf {
        self.dir.path().join("remote-cache")
    }

    /// What `ssh -F CONFIG ARGS...` prints on stdout; it must succeed.
    pub fn ssh_output(&self, args: &[&str]) -> String {
        let output = Command::new("ssh")
            .arg("-F")
            .arg(self.config_path())
            .args(args)
            .output()
            .expect("run ssh");
        assert!(output.status.success(), "ssh {args:?}: {output:?}");
        String::from_utf8(output.stdout).expect("ssh printed UTF-8")
    }

    /// `tack SUBCOMMAND -F CONFIG ARGS...`: for `tack ssh-ping`.
    pub fn tack(&self, args: &[&str]) -> Output {
        let (subcommand, args) = args.split_first().expect("a subcommand");
        let output = Command::new(env!("CARGO_BIN_EXE_tack"))
            .arg(subcommand)
            .arg("-F")
            .arg(self.config_path())
            .args(args)
            .output()
            .expect("run tack");
        Output {
            args: args.join(" "),
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    fn write_client_config(&self) {
        let dir = self.dir.path();
        let host_key = fs::read_to_string(dir.join("host_key.pub")).expect("read host key");
        let ports = [self.ports.main, self.ports.foreign, self.ports.chatty];
        let known: String = ports
            .iter()
            .map(|port| format!("[127.0.0.1]:{port} {}\n", host_key.trim()))
            .collect();
        fs::write(dir.join("known_hosts"), known).expect("write known_hosts");
        let user = current_user();
        let mut config = String::new();
        let aliases = [
            (HOSTS.join(" "), self.ports.main),
            ("foreign".to_string(), self.ports.foreign),
            ("chatty".to_string(), self.ports.chatty),
            ("down".to_string(), free_port()),
        ];
        for (names, port) in aliases {
            writeln!(
                config,
                "Host {names}\n    HostName 127.0.0.1\n    Port {port}\n    User {user}\n    \
                 IdentityFile {}\n    IdentitiesOnly yes\n    UserKnownHostsFile {}\n    \
                 StrictHostKeyChecking yes\n    BatchMode yes\n    LogLevel ERROR\n",
                dir.join("user_key").display(),
                dir.join("known_hosts").display(),
            )
            .unwrap();
        }
        fs::write(dir.join("ssh_config"), config).expect("write ssh_config");
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn sshd_config(dir: &Path, ports: Ports) -> String {
    let at = |name: &str| dir.join(name).display().to_string();
    format!(
        "ListenAddress 127.0.0.1\n\
         Port {}\n\
         Port {}\n\
         Port {}\n\
         HostKey {}\n\
         AuthorizedKeysFile {}\n\
         PidFile {}\n\
         UsePAM no\n\
         StrictModes no\n\
         PermitRootLogin prohibit-password\n\
         PasswordAuthentication no\n\
         KbdInteractiveAuthentication no\n\
         SetEnv XDG_CACHE_HOME={cache}\n\
         # 20 hosts at once are 20 unauthenticated connections at once.\n\
         MaxStartups 100:30:200\n\
         LogLevel ERROR\n\
         Match LocalPort {}\n\
         \x20   SetEnv XDG_CACHE_HOME={cache} PATH={}:/usr/bin:/bin\n\
         Match LocalPort {}\n\
         \x20   ForceCommand echo \"Welcome to chatty\"; eval \"$SSH_ORIGINAL_COMMAND\"\n",
        ports.main,
        ports.foreign,
        ports.chatty,
        at("host_key"),
        at("authorized_keys"),
        at("sshd.pid"),
        ports.foreign,
        at("foreign-bin"),
        ports.chatty,
        cache = at("remote-cache"),
    )
}

/// `DIR/foreign-bin/uname`, which says the host is a Mac on arm64.
fn write_foreign_uname(dir: &Path) {
    let bin = dir.join("foreign-bin");
    fs::create_dir(&bin).expect("create foreign-bin");
    let script = "#!/bin/sh\ncase \"$1\" in -s) echo Darwin ;; -m) echo arm64 ;; esac\n";
    fs::write(bin.join("uname"), script).expect("write the foreign uname");
    fs::set_permissions(bin.join("uname"), fs::Permissions::from_mode(0o755))
        .expect("chmod the foreign uname");
}

/// An ed25519 key pair without passphrase at `path` and `path.pub`.
fn keygen(path: &Path) {
    let status = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "tack-test", "-f"])
        .arg(path)
        .stdin(Stdio::null())
        .status()
        .expect("run ssh-keygen");
    assert!(status.success(), "ssh-keygen failed");
}

/// The name the tests log in as: the user running them.
fn current_user() -> String {
    let output = Command::new("id").arg("-un").output().expect("run id -un");
    String::from_utf8(output.stdout).unwrap().trim().to_string()
}

/// Whether sshd accepts connections on `port` before it exits or
/// [`STARTUP`] passes.
fn wait_for_port(child: &mut Child, port: u16) -> bool {
    let deadline = Instant::now() + STARTUP;
    while Instant::now() < deadline {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return true;
        }
        if matches!(child.try_wait(), Ok(Some(_))) {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}
