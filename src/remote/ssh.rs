//! How tack reaches another host: the system's OpenSSH client, never an
//! SSH library of its own.
//!
//! A host name is an ssh destination, resolved by OpenSSH as an operator's
//! own `ssh HOST` would: their config (or `-F FILE`), agent, ProxyJump and
//! known_hosts all apply. tack adds only what a program that cannot answer
//! prompts needs: no TTY (`-T`), no password or host key prompt
//! (`BatchMode=yes`), and a bound on the wait for an unreachable host
//! (`ConnectTimeout`).

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use crate::error::Error;

/// One host, as ssh will be asked to reach it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ssh {
    /// An ssh destination: a host alias, `host`, `user@host`.
    pub destination: String,
    /// An ssh config file passed as `-F` (else ssh reads its own defaults).
    pub config: Option<PathBuf>,
    /// How long ssh waits for the TCP connection (`ConnectTimeout`).
    pub connect_timeout: Duration,
}

impl Ssh {
    /// A destination with the default connect timeout and ssh's own config.
    pub fn new(destination: impl Into<String>) -> Ssh {
        Ssh {
            destination: destination.into(),
            config: None,
            connect_timeout: Duration::from_secs(10),
        }
    }

    /// Refuses a destination ssh would read as something else: one
    /// starting with `-` is an option to ssh (`-oProxyCommand=...` runs a
    /// command here), and an empty one or one with control characters
    /// is no host name anyone meant.
    pub fn check(&self) -> Result<(), Error> {
        let destination = &self.destination;
        if destination.is_empty() {
            return Err(Error::Usage(
                "an ssh destination cannot be empty".to_string(),
            ));
        }
        if destination.starts_with('-') {
            return Err(Error::Usage(format!(
                "ssh destination `{destination}` starts with `-`: ssh would read it as an option"
            )));
        }
        if destination
            .chars()
            .any(|c| c.is_control() || c.is_whitespace())
        {
            return Err(Error::Usage(format!(
                "ssh destination `{}` contains whitespace or control characters",
                destination.escape_default()
            )));
        }
        Ok(())
    }

    /// `ssh [-F config] -T -o BatchMode=yes -o ConnectTimeout=N -- DEST
    /// remote_command`, not started. The caller checks the destination
    /// first ([`Ssh::check`]); `--` keeps ssh from reading it as an
    /// option even so.
    pub fn command(&self, remote_command: &str) -> Command {
        let mut command = Command::new("ssh");
        // A process group of its own: Ctrl-C at the terminal reaches tack,
        // which asks each agent to stop and waits for its report, and not
        // ssh, which would cut the session under it.
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        if let Some(config) = &self.config {
            command.arg("-F").arg(config);
        }
        // ssh takes whole seconds; a timeout below one second means one.
        let seconds = self.connect_timeout.as_secs().max(1);
        command
            .arg("-T")
            .args(["-o", "BatchMode=yes"])
            .arg("-o")
            .arg(format!("ConnectTimeout={seconds}"))
            .arg("--")
            .arg(&self.destination)
            .arg(remote_command);
        command
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arguments(command: &Command) -> Vec<String> {
        command
            .get_args()
            .map(|arg| arg.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn the_command_is_batch_mode_without_tty_and_ends_options_before_the_host() {
        let ssh = Ssh {
            destination: "alpha".to_string(),
            config: Some(PathBuf::from("/etc/tack/ssh_config")),
            connect_timeout: Duration::from_secs(3),
        };
        let command = ssh.command("true");
        assert_eq!(command.get_program(), "ssh");
        assert_eq!(
            arguments(&command),
            [
                "-F",
                "/etc/tack/ssh_config",
                "-T",
                "-o",
                "BatchMode=yes",
                "-o",
                "ConnectTimeout=3",
                "--",
                "alpha",
                "true"
            ]
        );
    }

    #[test]
    fn without_a_config_ssh_reads_its_own() {
        let command = Ssh::new("deploy@beta").command("true");
        assert_eq!(arguments(&command)[0], "-T");
        assert!(!arguments(&command).contains(&"-F".to_string()));
    }

    #[test]
    fn destinations_ssh_would_misread_are_refused() {
        for bad in ["-oProxyCommand=touch /tmp/x", "", "al pha", "alpha\nbeta"] {
            let error = Ssh::new(bad).check().unwrap_err();
            assert!(matches!(error, Error::Usage(_)), "{bad:?}: {error}");
        }
        Ssh::new("deploy@alpha.example.com").check().unwrap();
    }
}
