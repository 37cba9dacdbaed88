//! What was applied on this host, kept between runs.
//!
//! State lives in `.tack/state/<environment>/<host>.json`: for each node
//! the key and named inputs last applied, the output fingerprint, what was
//! observed on disk right after (stat and content hash), and whether the
//! last attempt finished. It is written atomically (temp file in the same
//! directory, fsync, rename), so a reader sees the old state or the new
//! one, never half of each.
//!
//! While a deploy runs, each finished node is appended to a journal beside
//! the state file (`<host>.journal`, one JSON record per line). Before any
//! node runs, the nodes about to run are marked unfinished in the state
//! file. A deploy killed at any point therefore leaves: the state file
//! naming every node it was about to touch as unfinished, and the journal
//! naming exactly those that finished. Loading replays the journal over the
//! state; a torn last line is ignored, which only means that node runs
//! again. A corrupt state file is discarded with a warning: everything is
//! then verified against the disk, never trusted blindly.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::atomic::write_atomically;
use crate::error::{Error, Result};
use crate::fingerprint::Fingerprint;
use crate::process::Process;
use crate::provenance::Inputs;

/// Bumped when the layout changes; an older file is then discarded.
const FORMAT: u32 = 1;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct State {
    pub format: u32,
    pub nodes: BTreeMap<String, NodeRecord>,
}

impl Default for State {
    fn default() -> State {
        State {
            format: FORMAT,
            nodes: BTreeMap::new(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    pub display: String,
    /// What the node owns on the host (for `--prune`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<PathBuf>,
    pub key: Fingerprint,
    pub output: Fingerprint,
    pub inputs: Inputs,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed: Option<Observed>,
    /// For services: the process started or reloaded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub process: Option<Process>,
    /// For steps: what they produced, checked for existence each run.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub produced: Vec<PathBuf>,
    /// Facts of the host the node read, such as a python version.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub facts: BTreeMap<String, String>,
    pub finished: bool,
}

/// What a file looked like right after tack wrote or verified it. If a
/// later stat matches, the content is trusted without reading it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Observed {
    pub size: u64,
    pub mtime: (i64, i64),
    pub ctime: (i64, i64),
    pub ino: u64,
    pub mode: u32,
    pub hash: Fingerprint,
}

/// The state of one environment on one host, and its journal.
pub struct StateStore {
    file: PathBuf,
    journal_path: PathBuf,
    journal: Mutex<Option<File>>,
}

#[derive(Serialize, Deserialize)]
struct JournalEntry {
    id: String,
    record: NodeRecord,
}

impl StateStore {
    pub fn new(root: &Path, environment: &str, host: &str) -> StateStore {
        let dir = root.join(".tack").join("state").join(environment);
        StateStore {
            file: dir.join(format!("{host}.json")),
            journal_path: dir.join(format!("{host}.journal")),
            journal: Mutex::new(None),
        }
    }

    pub fn path(&self) -> &Path {
        &self.file
    }

    /// A journal means a deploy is running here or was killed.
    pub fn journal_exists(&self) -> bool {
        self.journal_path.exists()
    }

    /// The last state, with the journal of an interrupted run replayed.
    /// Returns warnings for a reader, never fails on bad content.
    pub fn load(&self) -> (State, Vec<String>) {
        let mut warnings = Vec::new();
        let mut state = match fs::read(&self.file) {
            Ok(bytes) => match serde_json::from_slice::<State>(&bytes) {
                Ok(state) if state.format == FORMAT => state,
                Ok(_) => {
                    warnings.push(format!(
                        "`{}` has an older format; verifying everything against disk",
                        self.file.display()
                    ));
                    State::default()
                }
                Err(error) => {
                    warnings.push(format!(
                        "`{}` is corrupt ({error}); verifying everything against disk",
                        self.file.display()
                    ));
                    State::default()
                }
            },
            Err(_) => State::default(),
        };
        if let Ok(file) = File::open(&self.journal_path) {
            for line in BufReader::new(file).lines() {
                let Ok(line) = line else { break };
                // A torn last line is expected after a kill: that node reruns.
                let Ok(entry) = serde_json::from_str::<JournalEntry>(&line) else {
                    break;
                };
                state.nodes.insert(entry.id, entry.record);
            }
        }
        (state, warnings)
    }

    /// Saves `state` atomically and drops the journal it supersedes.
    pub fn save(&self, state: &State) -> Result<()> {
        let mut state_bytes = serde_json::to_vec(state)
            .map_err(|error| Error::io("serialize", &self.file, std::io::Error::other(error)))?;
        state_bytes.push(b'\n');
        write_atomically(&self.file, &state_bytes, 0o600, true)?;
        *self.journal.lock().unwrap_or_else(|e| e.into_inner()) = None;
        match fs::remove_file(&self.journal_path) {
            Ok(()) => Ok(()),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(error) => Err(Error::io("remove", &self.journal_path, error)),
        }
    }

    /// Appends one finished node to the journal.
    pub fn journal(&self, id: &str, record: &NodeRecord) -> Result<()> {
        let mut journal = self.journal.lock().unwrap_or_else(|e| e.into_inner());
        if journal.is_none() {
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.journal_path)
                .map_err(|error| Error::io("open", &self.journal_path, error))?;
            *journal = Some(file);
        }
        let entry = JournalEntry {
            id: id.to_string(),
            record: record.clone(),
        };
        let mut line = serde_json::to_vec(&entry).map_err(|error| {
            Error::io(
                "serialize",
                &self.journal_path,
                std::io::Error::other(error),
            )
        })?;
        line.push(b'\n');
        if let Some(file) = journal.as_mut() {
            file.write_all(&line)
                .map_err(|error| Error::io("append to", &self.journal_path, error))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(display: &str, finished: bool) -> NodeRecord {
        NodeRecord {
            display: display.into(),
            target: None,
            key: Fingerprint::of_bytes(display.as_bytes()),
            output: Fingerprint::default(),
            inputs: Inputs::new(),
            observed: None,
            process: None,
            produced: Vec::new(),
            facts: BTreeMap::new(),
            finished,
        }
    }

    #[test]
    fn journal_is_replayed_and_a_torn_line_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::new(dir.path(), "dev", "localhost");
        let mut state = State::default();
        state.nodes.insert("a".into(), record("A", false));
        state.nodes.insert("b".into(), record("B", false));
        store.save(&state).unwrap();
        store.journal("a", &record("A", true)).unwrap();
        let mut journal = OpenOptions::new()
            .append(true)
            .open(&store.journal_path)
            .unwrap();
        journal.write_all(b"{\"id\":\"b\",\"rec").unwrap();

        let (loaded, warnings) = StateStore::new(dir.path(), "dev", "localhost").load();
        assert!(warnings.is_empty());
        assert!(loaded.nodes["a"].finished);
        assert!(
            !loaded.nodes["b"].finished,
            "a torn entry must not count as finished"
        );
    }

    #[test]
    fn corrupt_state_is_discarded_with_a_warning() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::new(dir.path(), "dev", "localhost");
        fs::create_dir_all(store.path().parent().unwrap()).unwrap();
        fs::write(store.path(), b"{\"format\": 1, \"nodes\": {").unwrap();
        let (state, warnings) = store.load();
        assert!(state.nodes.is_empty());
        assert!(warnings[0].contains("corrupt"), "{warnings:?}");
    }
}
