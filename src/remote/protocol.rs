//! The messages between tack and its agent, sent as [`crate::remote::frame`]s.
//!
//! The agent speaks first ([`Hello`]), so the deploying side knows it runs
//! the same binary before it sends anything. After that the deploying side
//! sends [`Request`]s and the agent answers each with [`Response`]s.

use serde::{Deserialize, Serialize};

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
}

/// What the deploying side asks of the agent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "request", rename_all = "snake_case")]
pub enum Request {
    /// Answered with [`Response::Pong`]: the session is alive.
    Ping,
    /// The agent returns; the session ends.
    Bye,
}

/// What the agent answers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "response", rename_all = "snake_case")]
pub enum Response {
    Pong,
}
