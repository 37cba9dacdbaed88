//! The messages between tack and its agent, sent as [`crate::remote::frame`]s.
//!
//! The agent speaks first ([`Hello`]), so the deploying side knows it runs
//! the same binary before it sends anything. After that the deploying side
//! sends [`Request`]s and the agent answers each with [`Response`]s.

use serde::{Deserialize, Serialize};

use crate::fingerprint::Fingerprint;
use crate::remote::plan::{Finished, HostPlan};

/// The agent's first frame: who it is. `exe_hash` is the blake3 of the
/// agent's own executable; the deploying side compares it with its own.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    pub version: String,
    /// `std::env::consts::OS` of the agent's build.
    pub os: String,
    /// `std::env::consts::ARCH` of the agent's build.
    pub arch: String,
    pub exe_hash: String,
    /// The login user's home on the host: a relative `remote_dir` is
    /// below it.
    #[serde(default)]
    pub home: String,
}

/// What the deploying side asks of the agent.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "request", rename_all = "snake_case")]
pub enum Request {
    /// Answered with [`Response::Pong`]: the session is alive.
    Ping,
    /// The agent returns; the session ends.
    Bye,
    /// Deploy this host's plan. The agent answers with output, asks for
    /// contents, reports settled exports, and ends with `Finished` or
    /// `Failed`.
    Deploy(Box<HostPlan>),
    /// The bytes asked for by the last `Want`, in its order: `count` raw
    /// frames follow (see `frame::write_raw`).
    Contents { count: usize },
    /// A component on another host that this host's gates wait for has
    /// settled; `failed` names a node of it that did not finish.
    Settled {
        host: String,
        component: String,
        failed: Option<String>,
    },
    /// The deploying side was interrupted by `signal` (`SIGINT`): start no
    /// more nodes, stop the running steps with it, save the state and
    /// finish.
    Stop { signal: String },
}

/// What the agent answers.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "response", rename_all = "snake_case")]
pub enum Response {
    Pong,
    /// Text for the deploying side's stdout: node lines and the summary.
    Output {
        text: String,
    },
    /// The bytes of these contents, please (answered by `Contents`).
    Want {
        digests: Vec<Fingerprint>,
    },
    /// Every node of an exported component settled.
    Settled {
        component: String,
        failed: Option<String>,
    },
    /// The deploy ran; its report.
    Finished(Box<Finished>),
    /// The deploy could not run, or stopped with an error.
    Failed {
        message: String,
        exit_code: i32,
    },
}
