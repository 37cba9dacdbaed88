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

use std::fs;

use crate::process::Process;
use crate::state::NodeRecord;

/// What pruning one record did, for the report.
pub fn prune(record: &NodeRecord) -> Result<String, String> {
    let kind = record
        .inputs
        .get("kind")
        .map(|input| input.value.as_str())
        .unwrap_or_default();
    let Some(target) = &record.target else {
        return Ok("forgotten (nothing on disk to remove)".to_string());
    };
    let shown = target.display();
    match kind {
        "file" => {
            let Ok(bytes) = fs::read(target) else {
                return Ok(format!("`{shown}` was already gone"));
            };
            let expected = record.observed.map(|observed| observed.hash);
            if expected != Some(crate::fingerprint::Fingerprint::of_bytes(&bytes)) {
                return Err(format!(
                    "`{shown}` changed since tack wrote it; left in place"
                ));
            }
            fs::remove_file(target).map_err(|e| format!("cannot remove `{shown}`: {e}"))?;
            Ok(format!("removed `{shown}`"))
        }
        "symlink" => {
            let recorded = record.inputs.get("target").map(|input| input.value.clone());
            match fs::read_link(target) {
                Err(_) => Ok(format!("`{shown}` was already gone")),
                Ok(found) if Some(found.display().to_string()) == recorded => {
                    fs::remove_file(target).map_err(|e| format!("cannot remove `{shown}`: {e}"))?;
                    Ok(format!("removed `{shown}`"))
                }
                Ok(_) => Err(format!(
                    "`{shown}` points elsewhere since tack made it; left in place"
                )),
            }
        }
        "directory" => match fs::remove_dir(target) {
            Ok(()) => Ok(format!("removed `{shown}`")),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                Ok(format!("`{shown}` was already gone"))
            }
            Err(_) => Err(format!("`{shown}` is not empty; left in place")),
        },
        "service" => match record.process {
            Some(process) if process.is_alive() => {
                process.signal("TERM")?;
                Ok(format!("stopped pid {}", process.pid))
            }
            _ => Ok("was not running".to_string()),
        },
        _ => Ok("forgotten".to_string()),
    }
}

/// Whether a recorded service still runs, for the report of a removal.
pub fn still_running(record: &NodeRecord) -> Option<Process> {
    record.process.filter(Process::is_alive)
}
