//! What to do about nodes that were deployed once and are no longer
//! configured: a component removed from the environment, a file resource
//! removed from a component.
//!
//! A deploy reports them and leaves them alone. `--prune` removes what tack
//! itself put there, and only while it is still what tack put there: a
//! file whose content still hashes as recorded, a symlink that still points
//! where tack pointed it, an empty directory, a service process whose pid
//! *and* start time match the record. Anything changed since is left in
//! place and said so.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use crate::confined;
use crate::graph::HostGraph;
use crate::process::Process;
use crate::state::NodeRecord;

/// What `--prune` may touch in this run: paths below the environment's
/// work dir that no configured node owns now, on any host deployed here.
/// A record is only a claim; a path a node deploys now (a file moved to
/// another component or host) is not a leftover, and a path outside the
/// work dir is never removed on a record's word.
#[derive(Debug, Default)]
pub struct Prunable {
    work_dir: PathBuf,
    owned: BTreeSet<PathBuf>,
}

/// What to do with one record of a node no longer configured.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Remove what it left, if it is still what tack left.
    Remove,
    /// Drop the record and touch nothing: a configured node owns the path.
    Forget(String),
    /// Touch nothing and keep the record.
    Keep(String),
}

impl Prunable {
    pub fn new<'a>(work_dir: PathBuf, graphs: impl IntoIterator<Item = &'a HostGraph>) -> Prunable {
        let owned = graphs
            .into_iter()
            .flat_map(|graph| &graph.nodes)
            .filter(|node| node.action.owns_target())
            .map(|node| node.action.target().clone())
            .collect();
        Prunable { work_dir, owned }
    }

    pub fn verdict(&self, record: &NodeRecord) -> Verdict {
        let Some(target) = &record.target else {
            return Verdict::Remove;
        };
        if self.owned.contains(target) {
            return Verdict::Forget(format!(
                "`{}` is deployed by a configured node now; only the old record is dropped",
                target.display()
            ));
        }
        let is_service = record
            .inputs
            .get("kind")
            .is_some_and(|kind| kind.value == "service");
        if !is_service && !target.starts_with(&self.work_dir) {
            return Verdict::Keep(format!(
                "`{}` is outside the work dir `{}`; tack removes nothing there on a record's word, remove it by hand",
                target.display(),
                self.work_dir.display()
            ));
        }
        Verdict::Remove
    }
}

/// The order to prune records in: what lies deepest first, so a directory
/// comes after the files in it and is empty by then.
pub fn deepest_first(records: &mut [(String, NodeRecord)]) {
    let depth = |record: &NodeRecord| {
        record
            .target
            .as_deref()
            .map_or(0, |target: &Path| target.components().count())
    };
    records.sort_by(|(a_id, a), (b_id, b)| depth(b).cmp(&depth(a)).then(a_id.cmp(b_id)));
}

/// Whether pruning `record` changes the host: removes a file, symlink or
/// directory, or stops a service; a step is only forgotten.
pub fn changes_the_host(record: &NodeRecord) -> bool {
    let kind = record.inputs.get("kind").map(|input| input.value.as_str());
    removes_from_disk(record) || kind == Some("service")
}

/// Whether pruning `record` removes something from disk: a file,
/// symlink or directory; a step's work dir and outputs are left in place,
/// and the node is only forgotten.
pub fn removes_from_disk(record: &NodeRecord) -> bool {
    let kind = record.inputs.get("kind").map(|input| input.value.as_str());
    matches!(kind, Some("file" | "symlink" | "directory"))
}

impl Prunable {
    /// Removes what `record` left, if it is still what tack left there:
    /// walked without following a link below the work dir's parent, so a
    /// swapped directory cannot carry the removal elsewhere. What pruning
    /// did, for the report, or why it left the target in place.
    pub fn prune(&self, record: &NodeRecord) -> Result<String, String> {
        let kind = record
            .inputs
            .get("kind")
            .map(|input| input.value.as_str())
            .unwrap_or_default();
        let Some(target) = &record.target else {
            return Ok("forgotten (nothing on disk to remove)".to_string());
        };
        let shown = target.display();
        if kind == "service" {
            return match record.process {
                Some(process) if process.is_alive() && process.belongs_to(&self.work_dir) => {
                    process.signal("TERM")?;
                    Ok(format!("stopped pid {}", process.pid))
                }
                Some(process) if process.is_alive() => Err(format!(
                    "pid {} is not a process of this deployment; left running",
                    process.pid
                )),
                _ => Ok("was not running".to_string()),
            };
        }
        if !["file", "symlink", "directory"].contains(&kind) {
            return Ok(format!("`{shown}` is left in place"));
        }
        let (dir, name) = match confined::parent_of(target, self.work_dir.parent(), false) {
            Ok(found) => found,
            Err(_) if fs::symlink_metadata(target.parent().unwrap_or(target)).is_err() => {
                return Ok(format!("`{shown}` was already gone"))
            }
            Err(error) => return Err(format!("{error}; left in place")),
        };
        let gone = || Ok(format!("`{shown}` was already gone"));
        let removed = |result: Result<(), crate::error::Error>| {
            result
                .map(|()| format!("removed `{shown}`"))
                .map_err(|e| e.to_string())
        };
        match kind {
            "file" => {
                let bytes = match dir.read_regular(&name, None) {
                    Ok(Some(bytes)) => bytes,
                    Ok(None) => return gone(),
                    Err(error) => return Err(format!("{error}; left in place")),
                };
                let expected = record.observed.map(|observed| observed.hash);
                if expected != Some(crate::fingerprint::Fingerprint::of_bytes(&bytes)) {
                    return Err(format!(
                        "`{shown}` changed since tack wrote it; left in place"
                    ));
                }
                removed(dir.remove_file(&name))
            }
            "symlink" => {
                let recorded = record.inputs.get("target").map(|input| input.value.clone());
                match dir.read_link(&name) {
                    None => gone(),
                    Some(found) if Some(found.display().to_string()) == recorded => {
                        removed(dir.remove_file(&name))
                    }
                    Some(_) => Err(format!(
                        "`{shown}` points elsewhere since tack made it; left in place"
                    )),
                }
            }
            _ => match dir.remove_dir(&name) {
                Ok(()) => Ok(format!("removed `{shown}`")),
                Err(nix::errno::Errno::ENOENT) => gone(),
                Err(nix::errno::Errno::ENOTDIR) => {
                    Err(format!("`{shown}` is not a directory; left in place"))
                }
                Err(_) => Err(format!("`{shown}` is not empty; left in place")),
            },
        }
    }
}

/// Whether a recorded service still runs, for the report of a removal.
pub fn still_running(record: &NodeRecord) -> Option<Process> {
    record.process.filter(Process::is_alive)
}
