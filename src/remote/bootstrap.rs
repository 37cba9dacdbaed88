//! Starting tack's agent on another host over one ssh session, uploading
//! this very binary first when the host does not have it.
//!
//! The session runs [`SCRIPT`] with `sh`: if the host's cache holds an
//! executable named by this binary's blake3 (of the right size and first
//! bytes), it says `have` and execs it as `tack agent`; else it says
//! `need <uname -s> <uname -m>`, reads exactly the binary's size from
//! stdin into a temp file beside the cache entry, and renames it into
//! place before exec'ing it. Here, a `need` from another OS or
//! architecture is refused before a byte is sent. The agent's first frame
//! ([`Hello`]) carries the blake3 of what actually runs; a cached file
//! whose bytes changed is found there, and the agent removes it, so the
//! next start uploads it again.
//!
//! Everything the agent writes to stdout is protocol; ssh's stderr (and
//! the agent's) is collected by a thread, so errors can quote its last
//! line.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::process::{Child, ChildStdin, ChildStdout, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::Error;
use crate::remote::executable::{self, Executable};
use crate::remote::frame;
use crate::remote::protocol::Hello;
use crate::remote::ssh::Ssh;

/// The remote half of the bootstrap, run as `sh -c SCRIPT tack-bootstrap
/// HASH SIZE MAGIC`. One line, without `'` or `!`: the remote login shell
/// (sh, bash, zsh, fish or csh) reads it inside single quotes first.
pub const SCRIPT: &str = concat!(
    "hash=$1; size=$2; magic=$3; ",
    "dir=\"${XDG_CACHE_HOME:-$HOME/.cache}/tack/bin/$hash\"; ",
    "bin=\"$dir/tack\"; ",
    "if [ -x \"$bin\" ] ",
    "&& [ \"$(wc -c < \"$bin\")\" -eq \"$size\" ] ",
    "&& [ \"$(head -c 4 \"$bin\" | od -An -tx1 | tr -d \" \\n\")\" = \"$magic\" ]; ",
    // Each start marks the entry used (its directory's mtime) ...
    "then touch \"$dir\" 2>/dev/null; echo \"tack-bootstrap: have\"; exec \"$bin\" agent; fi; ",
    "mask=$(umask); umask 077; ",
    "mkdir -p \"$dir\" && chmod 700 \"$dir\" || exit 1; ",
    "tmp=\"$dir/.upload.$$\"; ",
    "rm -f \"$tmp\"; ",
    "echo \"tack-bootstrap: need $(uname -s) $(uname -m)\"; ",
    "head -c \"$size\" > \"$tmp\"; ",
    "if [ \"$(wc -c < \"$tmp\")\" -ne \"$size\" ]; ",
    "then rm -f \"$tmp\"; echo \"tack-bootstrap: the upload ended early\" >&2; exit 1; fi; ",
    "chmod 755 \"$tmp\" && mv -f \"$tmp\" \"$bin\" || { rm -f \"$tmp\"; exit 1; }; ",
    // ... and an upload removes the entries of builds unused for 30 days:
    // one per tack build would pile up forever. An agent of such a build
    // still running keeps its (unlinked) binary.
    "find \"${dir%/*}\" -mindepth 1 -maxdepth 1 -type d -name \"[0-9a-f]*\" -mtime +30 ",
    "-exec rm -rf {} + 2>/dev/null; ",
    // The agent deploys with the login's umask, as `tack local` would.
    "umask \"$mask\"; exec \"$bin\" agent",
);

/// The marker before the bootstrap's answer: lines before it (a login
/// shell's greeting from `.bashrc`) are skipped.
const ANSWER: &str = "tack-bootstrap: ";

/// How much a login shell may print before the bootstrap answers.
const MAX_GREETING: u64 = 64 * 1024;

/// How many of ssh's last stderr lines are kept for error messages.
const STDERR_LINES: usize = 50;

/// tack's agent running on a host, over the ssh session that started it.
/// [`Agent::finish`] ends the session and says how it ended.
pub struct Agent {
    /// What the agent said first.
    pub hello: Hello,
    /// The bytes of the binary sent to the host, `None` when it had it.
    pub uploaded: Option<u64>,
    session: Session,
}

impl Agent {
    /// The ssh destination the agent runs on.
    pub fn host(&self) -> &str {
        &self.session.host
    }

    /// Sends one frame to the agent.
    pub fn send<T: Serialize>(&mut self, message: &T) -> Result<(), Error> {
        let sent = match self.session.stdin.as_mut() {
            Some(stdin) => frame::write_frame(stdin, message),
            None => Err(std::io::ErrorKind::BrokenPipe.into()),
        };
        sent.map_err(|error| {
            self.session
                .broken(&format!("cannot send to the agent: {error}"))
        })
    }

    /// Receives one frame from the agent: `None` when it ended the session
    /// cleanly between frames.
    pub fn receive<T: DeserializeOwned>(&mut self) -> Result<Option<T>, Error> {
        match frame::read_frame(&mut self.session.stdout) {
            Ok(message) => Ok(message),
            Err(error) => Err(self
                .session
                .broken(&format!("cannot read from the agent: {error}"))),
        }
    }

    /// Takes the sending half, for a session that sends from other threads
    /// than the one receiving; [`Agent::send`] fails after it. Dropping it
    /// closes the agent's stdin.
    pub fn take_sender(&mut self) -> Option<AgentSender> {
        let stdin = self.session.stdin.take()?;
        Some(AgentSender {
            host: self.session.host.clone(),
            stdin,
        })
    }

    /// The last lines ssh and the agent wrote to stderr, oldest first.
    pub fn stderr_tail(&self) -> Vec<String> {
        self.session.stderr.lines()
    }

    /// Closes the agent's stdin (it returns at the end of its input) and
    /// waits for the session to end: ssh's exit 255 is an unreachable host,
    /// any other failure quotes the last line on stderr.
    pub fn finish(self) -> Result<(), Error> {
        self.session.finish()
    }
}

/// The sending half of an [`Agent`] ([`Agent::take_sender`]).
pub struct AgentSender {
    host: String,
    stdin: BufWriter<ChildStdin>,
}

impl AgentSender {
    /// Sends one frame to the agent.
    pub fn send<T: Serialize>(&mut self, message: &T) -> Result<(), Error> {
        frame::write_frame(&mut self.stdin, message).map_err(|error| self.broken(error))
    }

    /// Sends a message already encoded as JSON (the caller wanted its
    /// size) as one frame.
    pub fn send_encoded(&mut self, json: &[u8]) -> Result<(), Error> {
        frame::write_raw(&mut self.stdin, json)
            .and_then(|()| self.stdin.flush())
            .map_err(|error| self.broken(error))
    }

    /// Sends `bytes` as raw frames after a frame announcing them, flushed
    /// together.
    pub fn send_with_raw<T: Serialize>(
        &mut self,
        message: &T,
        raw: &[std::sync::Arc<[u8]>],
    ) -> Result<(), Error> {
        let mut sent = frame::write_frame(&mut self.stdin, message);
        for bytes in raw {
            sent = sent.and_then(|()| frame::write_raw(&mut self.stdin, bytes));
        }
        sent.and_then(|()| self.stdin.flush())
            .map_err(|error| self.broken(error))
    }

    fn broken(&self, error: std::io::Error) -> Error {
        Error::Remote {
            host: self.host.clone(),
            message: format!("cannot send to the agent: {error}"),
        }
    }
}

/// Starts tack's agent on `ssh`'s host over one ssh session, uploading
/// this binary first when the host's cache lacks it.
pub fn start_agent(ssh: &Ssh) -> Result<Agent, Error> {
    ssh.check()?;
    let host = ssh.destination.clone();
    let own = executable::own().map_err(|message| Error::Remote {
        host: host.clone(),
        message,
    })?;
    let remote_command = format!(
        "exec sh -c '{SCRIPT}' tack-bootstrap {} {} {}",
        own.hash, own.size, own.magic
    );
    let mut child = ssh
        .command(&remote_command)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|error| Error::Remote {
            host: host.clone(),
            message: format!("cannot run `ssh`: {error}"),
        })?;
    let stdin = child.stdin.take().expect("stdin is piped");
    let stdout = child.stdout.take().expect("stdout is piped");
    let stderr = StderrTail::collect(child.stderr.take().expect("stderr is piped"), &host);
    let mut session = Session {
        host,
        child,
        stdin: Some(BufWriter::new(stdin)),
        stdout: BufReader::new(stdout),
        stderr,
    };
    let uploaded = match session.bootstrap_answer()? {
        Answer::Have => None,
        Answer::Need { os, arch } => Some(session.upload(own, &os, &arch)?),
    };
    let hello = session.hello(own)?;
    session.stderr.echo();
    Ok(Agent {
        hello,
        uploaded,
        session,
    })
}

/// What the bootstrap script said about the host's cache.
#[derive(Debug, PartialEq, Eq)]
enum Answer {
    Have,
    /// `uname -s` and `uname -m` of the host.
    Need {
        os: String,
        arch: String,
    },
}

/// One ssh session: the process, its pipes and what it wrote to stderr.
struct Session {
    host: String,
    child: Child,
    /// `None` once closed.
    stdin: Option<BufWriter<ChildStdin>>,
    stdout: BufReader<ChildStdout>,
    stderr: StderrTail,
}

impl Session {
    /// Reads up to the bootstrap's answer, skipping what a login shell
    /// printed before it.
    fn bootstrap_answer(&mut self) -> Result<Answer, Error> {
        let mut read = 0;
        loop {
            let mut line = Vec::new();
            let limit = MAX_GREETING - read;
            let got = (&mut self.stdout)
                .take(limit)
                .read_until(b'\n', &mut line)
                .map_err(|error| self.broken(&format!("cannot read from ssh: {error}")))?;
            if got == 0 {
                return Err(if read >= MAX_GREETING {
                    self.broken("the login shell printed more than 64 KiB before tack's bootstrap")
                } else {
                    self.broken("the session ended before tack's bootstrap answered")
                });
            }
            read += got as u64;
            let line = String::from_utf8_lossy(&line);
            if let Some(answer) = line.trim_end().strip_prefix(ANSWER) {
                return parse_answer(answer).ok_or_else(|| {
                    self.broken(&format!("unexpected bootstrap answer `{answer}`"))
                });
            }
        }
    }

    /// Sends this binary, once the host's platform is this build's;
    /// returns the bytes sent.
    fn upload(&mut self, own: &Executable, os: &str, arch: &str) -> Result<u64, Error> {
        let theirs = rust_platform(os, arch);
        let ours = (std::env::consts::OS, std::env::consts::ARCH);
        if (theirs.0.as_str(), theirs.1.as_str()) != ours {
            let message = format!(
                "it runs {os} {arch} ({}/{}) and this tack is built for {}/{}; \
                 nothing was sent",
                theirs.0, theirs.1, ours.0, ours.1
            );
            // Closing stdin ends the script's `head` short: it removes its
            // temp file and exits.
            let _ = self.end();
            return Err(Error::Remote {
                host: self.host.clone(),
                message,
            });
        }
        let Some(stdin) = self.stdin.as_mut() else {
            return Err(self.broken("the session is closed"));
        };
        let sent = File::open(executable::SELF_EXE)
            .and_then(|file| std::io::copy(&mut file.take(own.size), stdin))
            .and_then(|sent| stdin.flush().map(|()| sent));
        match sent {
            Ok(sent) if sent == own.size => Ok(sent),
            Ok(sent) => Err(self.broken(&format!(
                "sent {sent} of the binary's {} bytes: `{}` got shorter",
                own.size,
                executable::SELF_EXE
            ))),
            Err(error) => Err(self.broken(&format!("the upload broke off: {error}"))),
        }
    }

    /// Reads the agent's greeting and checks that it runs this binary.
    fn hello(&mut self, own: &Executable) -> Result<Hello, Error> {
        let hello = match frame::read_frame::<_, Hello>(&mut self.stdout) {
            Ok(Some(hello)) => hello,
            Ok(None) => return Err(self.broken("the agent ended before it greeted")),
            Err(error) => {
                return Err(self.broken(&format!("the agent's greeting is unreadable: {error}")))
            }
        };
        if hello.exe_hash != own.hash {
            let _ = self.end();
            return Err(Error::Remote {
                host: self.host.clone(),
                message: format!(
                    "the tack binary in its cache is corrupt (blake3 {}, expected {}); \
                     the agent removed it, and the next start uploads it again",
                    hello.exe_hash, own.hash
                ),
            });
        }
        Ok(hello)
    }

    /// Closes stdin and waits for ssh to exit.
    fn end(&mut self) -> std::io::Result<ExitStatus> {
        if let Some(mut stdin) = self.stdin.take() {
            // A flush error means the other end is gone already: what
            // closing is for.
            let _ = stdin.flush();
        }
        self.child.wait()
    }

    /// The error for a session that broke while doing `what`: ssh's exit
    /// 255 is an unreachable host; otherwise `what` and the last line on
    /// stderr.
    fn broken(&mut self, what: &str) -> Error {
        match self.end() {
            Ok(status) => self.ended(status, what),
            Err(error) => Error::Remote {
                host: self.host.clone(),
                message: format!("{what}; waiting for ssh failed: {error}"),
            },
        }
    }

    fn finish(mut self) -> Result<(), Error> {
        match self.end() {
            Ok(status) if status.success() => Ok(()),
            Ok(status) => Err(self.ended(status, "the agent failed")),
            Err(error) => Err(Error::Remote {
                host: self.host.clone(),
                message: format!("waiting for ssh failed: {error}"),
            }),
        }
    }

    fn ended(&mut self, status: ExitStatus, what: &str) -> Error {
        self.stderr.wait();
        let last = self.stderr.last_line();
        if status.code() == Some(255) {
            return Error::Unreachable {
                host: self.host.clone(),
                ssh: last.unwrap_or_else(|| "ssh exited with status 255".to_string()),
            };
        }
        let last = last.unwrap_or_else(|| "nothing on stderr".to_string());
        Error::Remote {
            host: self.host.clone(),
            message: format!("{what} (ssh {status}): {last}"),
        }
    }
}

/// An agent dropped without [`Agent::finish`] (an error elsewhere ended
/// the work) has its session ended rather than left running: stdin is
/// closed and ssh killed if it is still there.
impl Drop for Session {
    fn drop(&mut self) {
        drop(self.stdin.take());
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// `have` or `need OS ARCH`.
fn parse_answer(answer: &str) -> Option<Answer> {
    let words: Vec<&str> = answer.split_whitespace().collect();
    match words.as_slice() {
        ["have"] => Some(Answer::Have),
        ["need", os, arch] => Some(Answer::Need {
            os: os.to_string(),
            arch: arch.to_string(),
        }),
        _ => None,
    }
}

/// `uname -s` and `uname -m` as Rust names them
/// (`std::env::consts::OS` and `ARCH`).
fn rust_platform(os: &str, arch: &str) -> (String, String) {
    let os = match os {
        "Linux" => "linux",
        "Darwin" => "macos",
        "FreeBSD" => "freebsd",
        "OpenBSD" => "openbsd",
        "NetBSD" => "netbsd",
        "DragonFly" => "dragonfly",
        "SunOS" => "solaris",
        other => return (other.to_lowercase(), rust_arch(arch).to_string()),
    };
    (os.to_string(), rust_arch(arch).to_string())
}

fn rust_arch(arch: &str) -> &str {
    match arch {
        "x86_64" | "amd64" => "x86_64",
        "aarch64" | "arm64" | "aarch64_be" => "aarch64",
        "i386" | "i486" | "i586" | "i686" | "x86" => "x86",
        "ppc64" | "ppc64le" => "powerpc64",
        "ppc" => "powerpc",
        "mips64" => "mips64",
        arm if arm.starts_with("armv") || arm == "arm" => "arm",
        other => other,
    }
}

/// ssh's stderr, read by a thread of its own (a full pipe would stall
/// ssh), keeping the last [`STDERR_LINES`] lines.
/// Once the agent greeted, what it writes to stderr (a warning about its
/// state, a wait for its lock) is passed on to tack's stderr as it comes,
/// prefixed with the host's name: before, it is ssh's and the bootstrap's
/// talk, which errors quote.
struct StderrTail {
    lines: Arc<Mutex<VecDeque<String>>>,
    reader: Option<JoinHandle<()>>,
    echo: Arc<std::sync::atomic::AtomicBool>,
}

impl StderrTail {
    fn collect(stderr: impl Read + Send + 'static, host: &str) -> StderrTail {
        let lines = Arc::new(Mutex::new(VecDeque::new()));
        let kept = Arc::clone(&lines);
        let echo = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let echoing = Arc::clone(&echo);
        let host = host.to_string();
        let reader = std::thread::spawn(move || {
            let mut stderr = BufReader::new(stderr);
            let mut line = Vec::new();
            while matches!(stderr.read_until(b'\n', &mut line), Ok(n) if n > 0) {
                let text = String::from_utf8_lossy(&line).trim_end().to_string();
                line.clear();
                if echoing.load(std::sync::atomic::Ordering::SeqCst) {
                    let _ = writeln!(std::io::stderr(), "{host}: {text}");
                }
                let mut kept = kept.lock().unwrap_or_else(|poison| poison.into_inner());
                if kept.len() == STDERR_LINES {
                    kept.pop_front();
                }
                kept.push_back(text);
            }
        });
        StderrTail {
            lines,
            reader: Some(reader),
            echo,
        }
    }

    /// From now on, passes each line on as it comes.
    fn echo(&self) {
        self.echo.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// Waits until ssh closed its stderr (it has exited).
    fn wait(&mut self) {
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
    }

    fn lines(&self) -> Vec<String> {
        let lines = self
            .lines
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        lines.iter().cloned().collect()
    }

    /// The last line that says something.
    fn last_line(&self) -> Option<String> {
        let lines = self.lines();
        lines.into_iter().rev().find(|line| !line.trim().is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_script_survives_any_login_shell_quoting() {
        assert!(!SCRIPT.contains('\''), "a single quote ends the quoting");
        assert!(!SCRIPT.contains('!'), "csh expands history in quotes");
        assert!(!SCRIPT.contains('\n'), "csh refuses newlines in quotes");
    }

    /// The script, run by the local `sh` with a fake `$HOME`: the
    /// answers and the cache it leaves, without ssh.
    #[test]
    fn the_script_uploads_into_a_private_directory_then_finds_the_binary() {
        let home = tempfile::tempdir().unwrap();
        let binary = b"#!/bin/sh\necho ran \"$@\"\n";
        let hash = blake3::hash(binary).to_hex().to_string();
        let run = |stdin: &[u8]| {
            let mut child = std::process::Command::new("sh")
                .args(["-c", SCRIPT, "tack-bootstrap", &hash])
                .arg(binary.len().to_string())
                .arg("23212f62") // `#!/b`
                .env("HOME", home.path())
                .env_remove("XDG_CACHE_HOME")
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .unwrap();
            child.stdin.take().unwrap().write_all(stdin).unwrap();
            let output = child.wait_with_output().unwrap();
            assert!(output.status.success(), "{output:?}");
            String::from_utf8(output.stdout).unwrap()
        };
        let uname = |flag: &str| {
            let output = std::process::Command::new("uname").arg(flag).output();
            String::from_utf8(output.unwrap().stdout)
                .unwrap()
                .trim()
                .to_string()
        };
        assert_eq!(
            run(binary),
            format!(
                "tack-bootstrap: need {} {}\nran agent\n",
                uname("-s"),
                uname("-m")
            )
        );
        assert_eq!(run(b""), "tack-bootstrap: have\nran agent\n");
        let dir = home.path().join(".cache/tack/bin").join(&hash);
        use std::os::unix::fs::PermissionsExt;
        let mode =
            |path: &std::path::Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&dir.join("tack")), 0o755);
        assert_eq!(
            std::fs::read_dir(&dir).unwrap().count(),
            1,
            "no temp file left"
        );
    }

    #[test]
    fn answers_are_have_or_need_with_a_platform() {
        assert_eq!(parse_answer("have"), Some(Answer::Have));
        assert_eq!(
            parse_answer("need Linux x86_64"),
            Some(Answer::Need {
                os: "Linux".to_string(),
                arch: "x86_64".to_string()
            })
        );
        assert_eq!(parse_answer("need Linux"), None);
        assert_eq!(parse_answer("maybe"), None);
    }

    #[test]
    fn uname_names_map_to_rust_names() {
        let pairs = [
            (("Linux", "x86_64"), ("linux", "x86_64")),
            (("Linux", "aarch64"), ("linux", "aarch64")),
            (("Darwin", "arm64"), ("macos", "aarch64")),
            (("FreeBSD", "amd64"), ("freebsd", "x86_64")),
            (("Linux", "armv7l"), ("linux", "arm")),
            (("Linux", "i686"), ("linux", "x86")),
        ];
        for ((os, arch), (rust_os, rust_arch)) in pairs {
            assert_eq!(
                rust_platform(os, arch),
                (rust_os.to_string(), rust_arch.to_string())
            );
        }
    }
}
