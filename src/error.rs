//! The errors a user sees, and where in their files each one points.
//!
//! Configuration problems are data ([`ConfigError`]): queries return them as
//! values, so salsa can memoize a broken component like any other, and the
//! command line prints them in one place. Everything that goes wrong while
//! touching the world is an [`Error`] variant carrying the path involved.
//! Messages are lowercase, name things in backticks and carry no final dot.

use std::fmt;
use std::path::PathBuf;

/// A place in a deployment's files: the file (relative to the deployment
/// root), and where known the section and line.
#[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Location {
    pub file: String,
    pub section: Option<String>,
    pub key: Option<String>,
    pub line: Option<usize>,
}

impl Location {
    pub fn file(file: impl Into<String>) -> Location {
        Location {
            file: file.into(),
            section: None,
            key: None,
            line: None,
        }
    }

    pub fn section(file: impl Into<String>, section: &str, line: usize) -> Location {
        Location {
            file: file.into(),
            section: Some(section.to_string()),
            key: None,
            line: Some(line),
        }
    }

    pub fn key(&self, key: &str, line: usize) -> Location {
        Location {
            key: Some(key.to_string()),
            line: Some(line),
            ..self.clone()
        }
    }

    pub fn at_line(&self, line: usize) -> Location {
        Location {
            line: Some(line),
            ..self.clone()
        }
    }
}

/// `components/db/component.cfg:3 [attributes] port`: the form used in error
/// messages and in explanations.
impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if let Some(section) = &self.section {
            write!(f, " [{section}]")?;
        }
        if let Some(key) = &self.key {
            write!(f, " {key}")?;
        }
        Ok(())
    }
}

/// A problem with the deployment's configuration, found before anything ran.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ConfigError {
    pub location: Location,
    pub message: String,
}

impl ConfigError {
    pub fn new(location: Location, message: impl Into<String>) -> ConfigError {
        ConfigError {
            location,
            message: message.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.location, self.message)
    }
}

impl std::error::Error for ConfigError {}

/// Everything `tack` can fail with, rendered once by [`crate::run`].
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Config(#[from] ConfigError),
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\nerror: "))]
    Configs(Vec<ConfigError>),
    #[error("cannot {action} `{}`: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Usage(String),
    /// An encrypted secret that cannot be read or written; the message
    /// never holds a secret's value.
    #[error("`{file}`: {message}")]
    Secret { file: String, message: String },
    /// ssh could not reach a host (it exited 255): `ssh` is ssh's own
    /// last line on stderr, which says why.
    #[error("cannot reach host `{host}`: {ssh}")]
    Unreachable { host: String, ssh: String },
    /// A host was reached, but starting or talking to its agent failed.
    #[error("host `{host}`: {message}")]
    Remote { host: String, message: String },
    /// `tack agent` could not serve its session (it reports on stderr,
    /// which ssh passes to the deploying side).
    #[error("agent: {0}")]
    Agent(String),
    #[error("{failed} node(s) failed, {skipped} skipped")]
    NodesFailed { failed: usize, skipped: usize },
    /// Hosts of a run over ssh that could not be reached or deployed (each
    /// named on stderr before), besides any nodes that failed elsewhere.
    #[error("{} host(s) failed ({}), {failed} node(s) failed, {skipped} skipped", hosts.len(), hosts.join(", "))]
    HostsFailed {
        hosts: Vec<String>,
        failed: usize,
        skipped: usize,
    },
    /// Something failed after nodes had changed the host: not the exit
    /// code of a deploy that touched nothing, and the message says what ran.
    #[error("{source}\nnote: {ran}")]
    AfterNodesRan { ran: String, source: Box<Error> },
    /// A deploy stopped by SIGINT, SIGTERM or SIGHUP (`interrupt`): the
    /// steps it stopped and the nodes it did not start are recorded as
    /// unfinished.
    #[error("{}", interrupted_message(*signal, *stopped, *not_started))]
    Interrupted {
        signal: nix::sys::signal::Signal,
        stopped: usize,
        not_started: usize,
    },
}

fn interrupted_message(
    signal: nix::sys::signal::Signal,
    stopped: usize,
    not_started: usize,
) -> String {
    let signal = signal.as_str();
    if stopped + not_started == 0 {
        return format!("interrupted by {signal} after every node had finished");
    }
    format!(
        "interrupted by {signal}: {stopped} node(s) stopped, {not_started} not started; \
         they are recorded as unfinished and run on the next deploy"
    )
}

impl Error {
    pub fn io(action: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Error {
        Error::Io {
            action,
            path: path.into(),
            source,
        }
    }

    /// `source`, noting that `ran` (the displays of the nodes that ran on
    /// `host`) changed the host before it, and `then`, what becomes of
    /// that; `source` alone when none ran.
    pub fn after_nodes_ran(host: &str, ran: &[String], then: &str, source: Error) -> Error {
        if ran.is_empty() {
            return source;
        }
        let ran = format!(
            "{} node(s) ran on `{host}` before this: {}; {then}",
            ran.len(),
            ran.join(", ")
        );
        Error::AfterNodesRan {
            ran,
            source: Box::new(source),
        }
    }

    /// The process exit code: 1 for a deploy that ran and failed, 2 for
    /// anything that stopped tack before it touched the host, and for an
    /// interrupt what a shell reports (130 for SIGINT, 143 for SIGTERM).
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::NodesFailed { .. } | Error::HostsFailed { .. } | Error::AfterNodesRan { .. } => {
                1
            }
            Error::Interrupted { signal, .. } => crate::interrupt::exit_code(*signal),
            _ => 2,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
