//! What the deploying machine sends a host's agent: the host's graph,
//! configured centrally, with what the agent needs to deploy it alone.
//!
//! A plan is self-contained: rendered contents (known by hash until the
//! agent asks for their bytes), resolved values and keys, the host's own
//! root, and the gates and exports that order it against the other hosts
//! of the run ([`crate::peers`]). The agent needs no access to the
//! deployment's sources, nor to the other hosts.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::deploy::HostReport;
use crate::graph::HostGraph;
use crate::peers::Gate;

/// One host's part of a run.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct HostPlan {
    /// Where the deployment lives on the host: `.tack/` (state, lock, step
    /// cache) is below it.
    pub root: PathBuf,
    /// The environment's work dir on the host; `--prune` acts only inside.
    pub work_dir: PathBuf,
    pub graph: HostGraph,
    pub gates: Vec<Gate>,
    pub exports: Vec<String>,
    pub options: PlanOptions,
}

/// The options of the run that the host's deploy obeys.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PlanOptions {
    pub dry_run: bool,
    pub explain: bool,
    pub diff: bool,
    /// `None`: as many as the host has cores.
    pub jobs: Option<usize>,
    pub force: Vec<String>,
    pub only: Option<String>,
    pub prune: bool,
    pub lock_timeout_secs: Option<u64>,
    /// Put before each node in the host's lines: `alpha: `.
    pub prefix: String,
    /// `--format json`: no lines, only the report.
    pub json: bool,
    /// Names this run in the hosts' lock files: a host whose lock this
    /// same run holds (two names for one machine) is an error, not a wait.
    pub run_id: String,
    /// `--no-cache-read`: run every step that has to run, and write its
    /// cache entry anew.
    pub no_cache_read: bool,
    /// `--cache-salt`.
    pub cache_salt: Option<String>,
}

/// How a host's deploy ended, when it ran at all.
#[derive(Debug, Serialize, Deserialize)]
pub struct Finished {
    pub report: HostReport,
    /// The name of the signal that stopped it (`SIGINT`), if one did.
    pub interrupted: Option<String>,
}
