//! The node graph of one host: what the configure phase hands to planning.
//!
//! **Architecture Invariant:** a [`HostGraph`] is self-contained. It holds
//! rendered content, resolved values and keys, and nothing that needs the
//! salsa database or the other hosts, so it could be serialized and applied
//! on the host it describes.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::error::Location;
use crate::fingerprint::{Fingerprint, FingerprintBuilder};
use crate::provenance::Inputs;

/// One resource of one component on one host.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct NodeSpec {
    /// Stable identity in state files and `--force`: `tick/file:tick.sh`.
    pub id: String,
    pub component: String,
    /// batou-style path for people: `Tick > File(tick.sh)`.
    pub display: String,
    pub action: Action,
    pub inputs: Inputs,
    pub key: Fingerprint,
    /// What dependents see of this node: for files, directories and
    /// symlinks a hash of what they put on the host; for commands, builds
    /// and services their key.
    pub output: Fingerprint,
    /// Runs after everything above it in its component and after the
    /// components it requires from.
    pub barrier: bool,
    /// Which of a barrier's dependencies its key reads.
    pub watches: Watches,
    /// The work dir a relative target was resolved in: nothing is written
    /// through a symlink between it and the target.
    pub confined_to: Option<PathBuf>,
    pub sensitive: bool,
    /// The clear secrets this node read, cut out of whatever it reports.
    pub redact: crate::provenance::Redactions,
    /// Indexes into [`HostGraph::nodes`] of the nodes this one waits for.
    pub deps: Vec<usize>,
}

impl NodeSpec {
    /// Marks the node as reading a secret: its output is never shown and
    /// never goes into the step cache, whose blobs other users can read
    /// and whose archives leave the machine.
    pub fn holds_secrets(&mut self) {
        self.sensitive = true;
        if let Action::Command(spec) | Action::Buildout { run: spec, .. } = &mut self.action {
            spec.cacheable = false;
        }
    }
}

/// The dependencies whose outputs are part of a barrier's key. Every
/// barrier *waits* for all of its dependencies; this says which of them
/// make it run again when they change.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Watches {
    /// The nodes above it in its component: a build reruns when its config
    /// changed, not when a program it merely ran after changed.
    Above,
    /// Also every node of the components it requires from: a service runs
    /// the programs they deploy.
    AboveAndProviders,
    /// Only the nodes of this one providing component: a supervised program
    /// restarts when its own files changed, and for nothing else.
    Provider(String),
    /// None: a program under a supervisord `[service]` that reloads (and so
    /// restarts it) whenever anything it runs changed. Its node only sees
    /// to it that the program runs.
    Nothing,
}

/// What a node makes true on the host.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Action {
    File {
        target: PathBuf,
        content: Content,
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
    Command(CommandSpec),
    /// Bootstraps zc.buildout into a venv (unless `command` replaced it) and
    /// runs it.
    Buildout {
        run: CommandSpec,
        bootstrap: Option<Bootstrap>,
    },
    Service(ServiceSpec),
    /// A venv with pinned packages (the prebuilt `[supervisor]`'s
    /// supervisor).
    Venv(Bootstrap),
    /// A program under supervisord, observed each run over supervisord's
    /// XML-RPC interface: started when it is not running, restarted by
    /// name when its own inputs changed.
    Program {
        cwd: PathBuf,
        /// supervisord's address, `http://127.0.0.1:9001`.
        supervisor: String,
        name: String,
        /// How long a (re)start may take to reach RUNNING.
        timeout_secs: u64,
    },
}

/// What a file node writes: its bytes and their blake3 hash.
///
/// A plan sent to a remote host carries only the hash (the bytes are not
/// serialized): the host plans with it, and asks for the bytes of the files
/// it must write, by hash, so a repeated deploy sends none. Two contents
/// are equal when their hashes are.
#[derive(Clone, Serialize, Deserialize)]
pub struct Content {
    digest: Fingerprint,
    #[serde(skip)]
    bytes: Option<Arc<[u8]>>,
}

impl Content {
    pub fn new(bytes: impl Into<Arc<[u8]>>) -> Content {
        let bytes = bytes.into();
        Content {
            digest: Fingerprint::of_bytes(&bytes),
            bytes: Some(bytes),
        }
    }

    pub fn digest(&self) -> Fingerprint {
        self.digest
    }

    /// The bytes, unless this content came over the wire and its bytes
    /// have not been [`filled`](Content::fill) yet.
    pub fn bytes(&self) -> Option<&[u8]> {
        self.bytes.as_deref()
    }

    /// Supplies the bytes of a content known by hash; `false` (and nothing
    /// kept) when they do not hash to it.
    pub fn fill(&mut self, bytes: Arc<[u8]>) -> bool {
        if Fingerprint::of_bytes(&bytes) != self.digest {
            return false;
        }
        self.bytes = Some(bytes);
        true
    }
}

impl PartialEq for Content {
    fn eq(&self, other: &Content) -> bool {
        self.digest == other.digest
    }
}

impl Eq for Content {}

impl std::hash::Hash for Content {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.digest.hash(state);
    }
}

impl std::fmt::Debug for Content {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Content({})", self.digest)
    }
}

/// A shell step: `sh -c run` in `cwd`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct CommandSpec {
    pub cwd: PathBuf,
    pub run: String,
    pub env: Vec<(String, String)>,
    /// Paths the step must produce; missing later means it runs again.
    pub outputs: Vec<PathBuf>,
    /// Paths the step makes once and then holds data in (a database):
    /// missing means it runs again, but they are never captured, restored
    /// or pruned.
    pub creates: Vec<PathBuf>,
    /// `outputs` are a pure function of the step's inputs (`cache = true`,
    /// and always for a buildout): they may be restored from the step cache
    /// instead of running the step.
    pub cacheable: bool,
    pub timeout_secs: u64,
}

/// A venv with pinned packages, made with the host's python.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Bootstrap {
    pub python: String,
    pub venv: PathBuf,
    pub packages: Vec<String>,
}

/// The pip every venv is upgraded to before its packages are installed
/// (the one a python ships may be too old for them); pinned, so a venv
/// built next month is the same build. 26.3 installs on python 3.9 and up.
pub const BOOTSTRAP_PIP_VERSION: &str = "26.3";

impl Bootstrap {
    /// What the venv's marker file says once it is built with `python`
    /// at `version`: any difference means it must be built again.
    /// The venv's own path is part of it: a venv's scripts and
    /// `pyvenv.cfg` name the directory it was made in, so one copied or
    /// restored from elsewhere is built again.
    pub fn marker(&self, version: &str) -> String {
        format!(
            "python {version}\nvenv {}\npip=={BOOTSTRAP_PIP_VERSION}\n{}\n",
            self.venv.display(),
            self.packages.join("\n")
        )
    }

    pub fn marker_path(&self) -> PathBuf {
        self.venv.join(".tack-bootstrap")
    }
}

/// A daemon known by its pid file.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ServiceSpec {
    pub cwd: PathBuf,
    pub start: String,
    pub pidfile: PathBuf,
    pub reload: Reload,
    pub timeout_secs: u64,
    /// For a supervisord: where it answers and the programs it must run,
    /// which a start or reload waits for.
    pub supervises: Option<Supervises>,
}

/// The programs a supervisord runs, and its XML-RPC address.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Supervises {
    pub url: String,
    pub programs: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Reload {
    /// `signal:HUP`: the signal's name without `SIG`.
    Signal(String),
    Command(String),
}

impl Action {
    /// The path this node is about: the target of a file, directory or
    /// symlink, the working directory of a command, the pid file of a
    /// service.
    pub fn target(&self) -> &PathBuf {
        match self {
            Action::File { target, .. }
            | Action::Directory { target, .. }
            | Action::Symlink { target, .. } => target,
            Action::Command(spec) | Action::Buildout { run: spec, .. } => &spec.cwd,
            Action::Service(spec) => &spec.pidfile,
            Action::Venv(bootstrap) => &bootstrap.venv,
            Action::Program { cwd, .. } => cwd,
        }
    }

    /// Whether applying this runs a program (a command, buildout, a venv
    /// bootstrap, a service, a supervised program), which can take long:
    /// such a step says when it starts, not only when it ends. Files,
    /// directories and symlinks take no time worth announcing.
    pub fn runs_a_program(&self) -> bool {
        !self.owns_target()
    }

    /// Whether this node is the one owner of its target path.
    pub fn owns_target(&self) -> bool {
        matches!(
            self,
            Action::File { .. } | Action::Directory { .. } | Action::Symlink { .. }
        )
    }

    /// A hash of what a file, directory or symlink puts on the host,
    /// independent of how it was computed: two keys with the same output
    /// need no work between them. A target inside `base` (the component's
    /// work dir) is hashed by its path relative to it, so a checkout moved
    /// elsewhere has the same outputs unless a file's content embeds the
    /// path: that keeps keys relocatable for the cache.
    pub fn output(&self, base: Option<&Path>) -> Fingerprint {
        let path = |target: &PathBuf| -> Vec<u8> {
            let relative = base.and_then(|base| target.strip_prefix(base).ok());
            relative
                .unwrap_or(target)
                .as_os_str()
                .as_encoded_bytes()
                .to_vec()
        };
        let mut builder = FingerprintBuilder::default();
        match self {
            Action::File {
                target,
                content,
                mode,
            } => builder
                .field("file", &path(target))
                .field("mode", &mode.to_le_bytes())
                .field("content", &content.digest().0),
            Action::Directory { target, mode } => builder
                .field("directory", &path(target))
                .field("mode", &mode.to_le_bytes()),
            Action::Symlink { target, points_to } => builder
                .field("symlink", &path(target))
                .field("points_to", points_to.as_bytes()),
            // What a step produces is not known before it runs; its key
            // stands for it (see `NodeSpec::output`).
            Action::Command(_)
            | Action::Buildout { .. }
            | Action::Service(_)
            | Action::Venv(_)
            | Action::Program { .. } => builder.field("step", &[]),
        };
        builder.finish()
    }
}

/// Every node of one host, dependencies before dependents.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct HostGraph {
    pub environment: String,
    pub host: String,
    pub nodes: Vec<NodeSpec>,
}

/// The nodes that own a path a node before them owns, each paired with
/// that earlier owner (the latest one), in order; `T` says where a node
/// comes from, such as its host.
pub fn clashing_owners<'a, T: Copy>(
    nodes: impl IntoIterator<Item = (T, &'a NodeSpec)>,
) -> Vec<[(T, &'a NodeSpec); 2]> {
    let mut owners: std::collections::BTreeMap<&Path, (T, &NodeSpec)> = Default::default();
    let mut clashes = Vec::new();
    for (from, node) in nodes {
        if node.action.owns_target() {
            if let Some(earlier) = owners.insert(node.action.target(), (from, node)) {
                clashes.push([earlier, (from, node)]);
            }
        }
    }
    clashes
}

impl NodeSpec {
    /// Where the node is configured: the section that names its path, or
    /// else its component's file.
    pub fn defined_at(&self) -> Location {
        self.inputs
            .get("path")
            .and_then(|path| path.origin.clone())
            .unwrap_or_else(|| {
                Location::file(format!("components/{}/component.cfg", self.component))
            })
    }
}

impl HostGraph {
    /// Each component's nodes, in graph order: `configure::assemble`
    /// places the nodes of a component together.
    pub fn by_component(&self) -> impl Iterator<Item = (&str, &[NodeSpec])> {
        self.nodes
            .chunk_by(|a, b| a.component == b.component)
            .map(|nodes| (nodes[0].component.as_str(), nodes))
    }

    /// The components with nodes in this graph.
    pub fn components(&self) -> Vec<String> {
        self.by_component()
            .map(|(component, _)| component.to_string())
            .collect()
    }

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
