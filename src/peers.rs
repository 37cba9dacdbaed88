//! What one host's deploy needs from the rest of a run of many hosts.
//!
//! A host deployed over ssh gets its graph with file contents known only by
//! hash (see [`crate::graph::Content`]) and asks for the bytes of the files
//! it must write. A barrier that requires from a component on *another*
//! host waits for every node of that component there to finish (db
//! migrated on alpha before the app starts on beta): that wait is a
//! [`Gate`]. And a host tells the others when a component they wait for
//! has settled. `deploy::deploy_host` talks to all of that through
//! [`Peers`]; a host deployed alone has none ([`Alone`]).

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::fingerprint::Fingerprint;

/// A component on another host that nodes of this host wait for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gate {
    pub host: String,
    pub component: String,
    /// Indexes into the host graph's nodes of the barriers that wait.
    pub waiting: Vec<usize>,
}

/// What a host's deploy exchanges with the rest of the run.
pub trait Peers: Sync {
    /// The bytes of each content in `wanted`, in order.
    fn contents(&self, wanted: &[Fingerprint]) -> Result<Vec<Arc<[u8]>>, String>;
    /// Blocks until every node of gate `gate`'s component finished on its
    /// host; `Err` names the node that did not.
    fn wait(&self, gate: usize) -> Result<(), String>;
    /// Every node of `component` (exported to other hosts) settled:
    /// `failed` names one that did not finish.
    fn settled(&self, component: &str, failed: Option<String>);
}

/// The gates a host's deploy waits at, the components others wait for,
/// and whom to ask and tell.
pub struct Links<'a> {
    pub gates: &'a [Gate],
    pub exports: &'a [String],
    pub peers: &'a dyn Peers,
}

impl Links<'static> {
    /// A host deployed on its own: every content at hand, nothing to wait
    /// for, no one to tell.
    pub fn alone() -> Links<'static> {
        Links {
            gates: &[],
            exports: &[],
            peers: &Alone,
        }
    }
}

/// The [`Peers`] of a host deployed on its own.
pub struct Alone;

impl Peers for Alone {
    fn contents(&self, wanted: &[Fingerprint]) -> Result<Vec<Arc<[u8]>>, String> {
        match wanted.first() {
            None => Ok(Vec::new()),
            Some(digest) => Err(format!("no content with hash {digest} at hand")),
        }
    }

    fn wait(&self, _gate: usize) -> Result<(), String> {
        Ok(())
    }

    fn settled(&self, _component: &str, _failed: Option<String>) {}
}
