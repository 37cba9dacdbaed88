//! The node graph of one host: what the configure phase hands to planning.
//!
//! **Architecture Invariant:** a [`HostGraph`] is self-contained. It holds
//! rendered content, resolved values and keys, and nothing that needs the
//! salsa database or the other hosts, so it could be serialized and applied
//! on the host it describes.

use std::path::PathBuf;
use std::sync::Arc;

use crate::fingerprint::{Fingerprint, FingerprintBuilder};
use crate::provenance::Inputs;

/// One resource of one component on one host.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct NodeSpec {
    /// Stable identity in state files and `--force`: `tick/file:tick.sh`.
    pub id: String,
    pub component: String,
    /// batou-style path for people: `Tick > File(tick.sh)`.
    pub display: String,
    pub action: Action,
    pub inputs: Inputs,
    pub key: Fingerprint,
    pub sensitive: bool,
    /// Indexes into [`HostGraph::nodes`] of the nodes this one waits for.
    pub deps: Vec<usize>,
}

/// What a node makes true on the host.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    File {
        target: PathBuf,
        content: Arc<[u8]>,
        mode: u32,
    },
    Directory {
        target: PathBuf,
        mode: u32,
    },
    Symlink {
        target: PathBuf,
        points_to: String,
    },
}

impl Action {
    /// The path this node owns on the host.
    pub fn target(&self) -> &PathBuf {
        match self {
            Action::File { target, .. }
            | Action::Directory { target, .. }
            | Action::Symlink { target, .. } => target,
        }
    }

    /// A hash of what the node puts on the host, independent of how it was
    /// computed: two keys with the same output need no work between them.
    pub fn output(&self) -> Fingerprint {
        let mut builder = FingerprintBuilder::default();
        match self {
            Action::File {
                target,
                content,
                mode,
            } => builder
                .field("file", target.as_os_str().as_encoded_bytes())
                .field("mode", &mode.to_le_bytes())
                .field("content", blake3::hash(content).as_bytes()),
            Action::Directory { target, mode } => builder
                .field("directory", target.as_os_str().as_encoded_bytes())
                .field("mode", &mode.to_le_bytes()),
            Action::Symlink { target, points_to } => builder
                .field("symlink", target.as_os_str().as_encoded_bytes())
                .field("points_to", points_to.as_bytes()),
        };
        builder.finish()
    }
}

/// Every node of one host, dependencies before dependents.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct HostGraph {
    pub environment: String,
    pub host: String,
    pub nodes: Vec<NodeSpec>,
}

impl HostGraph {
    /// The graph as Graphviz dot, for `tack graph`.
    pub fn to_dot(&self) -> String {
        let mut dot = format!("digraph \"{}\" {{\n  rankdir=LR;\n", self.host);
        for (index, node) in self.nodes.iter().enumerate() {
            dot.push_str(&format!(
                "  n{index} [label=\"{}\"];\n",
                node.display.replace('"', "\\\"")
            ));
            for dep in &node.deps {
                dot.push_str(&format!("  n{dep} -> n{index};\n"));
            }
        }
        dot.push_str("}\n");
        dot
    }
}
