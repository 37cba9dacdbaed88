//! What was applied on this host, kept between runs.
//!
//! State lives in `.tack/state/<environment>/<host>/<component>.json`, one
//! file per component: for each node the key and named inputs last
//! applied, the output fingerprint, what was observed on disk right after
//! (stat and content hash), and whether the last attempt finished. One
//! file per component keeps a deploy that touches one component from
//! reading and rewriting the records of all the others (at 10k files the
//! whole state is megabytes of JSON). Each file is replaced atomically
//! (temp file in the same directory, rename), so a reader sees the old
//! records of a component or the new ones, never half of each.
//!
//! While a deploy runs, each finished node is appended to a journal beside
//! the state directory (`<host>.journal`, one JSON record per line). Before
//! any node runs, the nodes about to run are marked unfinished in their
//! component's file. A deploy killed at any point therefore leaves: the
//! state naming every node it was about to touch as unfinished, and the
//! journal naming exactly those that finished. Loading replays the journal
//! over the state; a torn last line is ignored, which only means that node
//! runs again. The journal is removed only after every changed component
//! file is written, so a kill while saving replays it again next time.
//!
//! A corrupt or truncated file (a power cut can leave one: the files are
//! not fsynced) is discarded with a warning: the records of that component
//! are then verified against the disk, never trusted blindly. A state
//! written by an older tack as one `<host>.json` is read once and split.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::atomic::{private_dir, remove_if_present, write_private};
use crate::error::{Error, Result};
use crate::fingerprint::Fingerprint;
use crate::process::Process;
use crate::provenance::Inputs;

/// Bumped when the layout of a record changes; a file of another format
/// is then discarded. Splitting the state into a file per component kept
/// the records as they were, so both layouts are format 1.
const FORMAT: u32 = 1;

/// The records of some or all components of one host, in memory.
#[derive(Clone, Debug, Default)]
pub struct State {
    nodes: BTreeMap<String, NodeRecord>,
    /// Components whose records differ from their file.
    changed: BTreeSet<String>,
}

/// One file: the records of one component (or, in the old layout, of all).
///
/// Paths inside the deployment are written relative to its root, so a
/// copied or moved deployment acts on itself; `root` says where the file
/// was written. Records read from a file written at another root (or
/// before roots were recorded) are verified, never trusted: their stats,
/// processes and the outputs they saw outside this root are dropped.
#[derive(Serialize, Deserialize)]
struct StateFile {
    format: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    root: Option<PathBuf>,
    nodes: BTreeMap<String, NodeRecord>,
}

/// The component a node id belongs to: ids are `component/resource`.
pub fn component_of(id: &str) -> &str {
    id.split('/').next().unwrap_or(id)
}

impl State {
    pub fn get(&self, id: &str) -> Option<&NodeRecord> {
        self.nodes.get(id)
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    pub fn ids(&self) -> impl Iterator<Item = &String> {
        self.nodes.keys()
    }

    pub fn insert(&mut self, id: String, record: NodeRecord) {
        if self.nodes.get(&id) != Some(&record) {
            self.changed.insert(component_of(&id).to_string());
            self.nodes.insert(id, record);
        }
    }

    pub fn remove(&mut self, id: &str) -> Option<NodeRecord> {
        let removed = self.nodes.remove(id);
        if removed.is_some() {
            self.changed.insert(component_of(id).to_string());
        }
        removed
    }

    /// Marks a recorded node as being rerun: if the deploy dies before it
    /// finished, the next run knows it did not.
    pub fn mark_unfinished(&mut self, id: &str) {
        if let Some(record) = self.nodes.get_mut(id).filter(|record| record.finished) {
            record.finished = false;
            self.changed.insert(component_of(id).to_string());
        }
    }

    /// Whether anything differs from the files.
    pub fn is_changed(&self) -> bool {
        !self.changed.is_empty()
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
    /// For cached steps: the tree digest of their outputs as the last run
    /// or restore left them. A restore replaces only exactly that.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outputs_tree: Option<cache::Digest>,
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

impl Observed {
    /// The part of it a stat shows, without the content hash.
    pub fn file_stat(&self) -> crate::db::FileStat {
        crate::db::FileStat {
            size: self.size,
            mtime: self.mtime,
            ctime: self.ctime,
            ino: self.ino,
        }
    }
}

/// The state of one environment on one host, and its journal.
pub struct StateStore {
    root: PathBuf,
    dir: PathBuf,
    /// The single file of the old layout.
    legacy: PathBuf,
    journal_path: PathBuf,
    journal: Mutex<Option<File>>,
}

/// One journal line; its paths are relative like a state file's, and
/// `root` says where it was written.
#[derive(Serialize, Deserialize)]
struct JournalEntry {
    id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    root: Option<PathBuf>,
    record: NodeRecord,
}

/// Whether `environment` was ever deployed from `root`: a deploy that
/// ran anything left its state directory.
pub fn ever_deployed(root: &Path, environment: &str) -> bool {
    environment_dir(root, environment).exists()
}

fn environment_dir(root: &Path, environment: &str) -> PathBuf {
    root.join(".tack").join("state").join(environment)
}

impl StateStore {
    pub fn new(root: &Path, environment: &str, host: &str) -> StateStore {
        let dir = environment_dir(root, environment);
        StateStore {
            root: root.to_path_buf(),
            dir: dir.join(host),
            legacy: dir.join(format!("{host}.json")),
            journal_path: dir.join(format!("{host}.journal")),
            journal: Mutex::new(None),
        }
    }

    /// The deployment root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The directory of the component files.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Whether any state was ever saved here.
    pub fn exists(&self) -> bool {
        self.dir.exists() || self.legacy.exists()
    }

    pub fn component_file(&self, component: &str) -> PathBuf {
        self.dir.join(format!("{component}.json"))
    }

    pub fn journal_path(&self) -> &Path {
        &self.journal_path
    }

    /// A journal means a deploy is running here or was killed.
    pub fn journal_exists(&self) -> bool {
        self.journal_path.exists()
    }

    /// The whole last state, with the journal of an interrupted run
    /// replayed. Returns warnings for a reader, never fails on bad content.
    pub fn load(&self) -> (State, Vec<String>) {
        let mut components: Vec<String> = fs::read_dir(&self.dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|entry| {
                let name = entry.file_name().to_string_lossy().to_string();
                name.strip_suffix(".json").map(str::to_string)
            })
            .filter(|name| crate::environment::is_name(name))
            .collect();
        components.sort();
        let (mut state, mut warnings) = self.load_components(&components);
        if let Some(legacy) = read_state_file(&self.legacy, &self.root, &mut warnings) {
            // Split into component files at the next save.
            for (id, record) in legacy {
                if !state.nodes.contains_key(&id) {
                    state.changed.insert(component_of(&id).to_string());
                    state.nodes.insert(id, record);
                }
            }
        }
        self.replay_journal(&mut state);
        (state, warnings)
    }

    /// The records of `components` only, for a run that touches just
    /// those. The journal is not replayed: a run that finds one loads all.
    pub fn load_components(&self, components: &[String]) -> (State, Vec<String>) {
        let loaded: Vec<(BTreeMap<String, NodeRecord>, Vec<String>)> = components
            .par_iter()
            .map(|component| {
                let mut warnings = Vec::new();
                let path = self.component_file(component);
                let mut nodes =
                    read_state_file(&path, &self.root, &mut warnings).unwrap_or_default();
                // A record filed under another component is not trusted.
                nodes.retain(|id, _| component_of(id) == component);
                (nodes, warnings)
            })
            .collect();
        let mut state = State::default();
        let mut warnings = Vec::new();
        for (nodes, more) in loaded {
            state.nodes.extend(nodes);
            warnings.extend(more);
        }
        warnings.dedup();
        (state, warnings)
    }

    fn replay_journal(&self, state: &mut State) {
        // A regular file only: a FIFO planted here must not hang the run.
        let Ok(Some(bytes)) = crate::confined::read_regular_path(&self.journal_path, None, false)
        else {
            return;
        };
        for line in BufReader::new(bytes.as_slice()).lines() {
            let Ok(line) = line else { break };
            // A torn last line is expected after a kill: that node reruns.
            let Ok(entry) = serde_json::from_str::<JournalEntry>(&line) else {
                break;
            };
            let record = from_disk(entry.record, &self.root, entry.root.as_deref());
            state.insert(entry.id, record);
        }
    }

    /// Writes the file of every changed component (removing the file of a
    /// component with no records left), then drops the journal and the old
    /// single file they supersede.
    pub fn save(&self, state: &mut State) -> Result<()> {
        let changed: Vec<String> = std::mem::take(&mut state.changed).into_iter().collect();
        let written: Vec<Result<()>> = changed
            .par_iter()
            .map(|component| {
                let path = self.component_file(component);
                let prefix = format!("{component}/");
                let nodes: BTreeMap<String, NodeRecord> = state
                    .nodes
                    .range(prefix.clone()..)
                    .take_while(|(id, _)| id.starts_with(&prefix))
                    .map(|(id, record)| (id.clone(), to_disk(record, &self.root)))
                    .collect();
                if nodes.is_empty() {
                    return remove_if_present(&path);
                }
                let file = StateFile {
                    format: FORMAT,
                    root: Some(self.root.clone()),
                    nodes,
                };
                let mut bytes = serde_json::to_vec(&file)
                    .map_err(|error| Error::io("serialize", &path, std::io::Error::other(error)))?;
                bytes.push(b'\n');
                write_private(&path, &bytes)
            })
            .collect();
        if let Some(error) = written.into_iter().find_map(Result::err) {
            // Written again next time; the journal still covers them.
            state.changed.extend(changed);
            return Err(error);
        }
        private_dir(&self.dir)?;
        *self.journal.lock().unwrap_or_else(|e| e.into_inner()) = None;
        remove_if_present(&self.journal_path)?;
        remove_if_present(&self.legacy)
    }

    /// Appends one finished node to the journal.
    pub fn journal(&self, id: &str, record: &NodeRecord) -> Result<()> {
        let mut journal = self.journal.lock().unwrap_or_else(|e| e.into_inner());
        if journal.is_none() {
            if let Some(dir) = self.journal_path.parent() {
                private_dir(dir)?;
            }
            // Never through a link, never readable by others.
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .mode(0o600)
                .custom_flags(nix::libc::O_NOFOLLOW)
                .open(&self.journal_path)
                .map_err(|error| Error::io("open", &self.journal_path, error))?;
            *journal = Some(file);
        }
        let entry = JournalEntry {
            id: id.to_string(),
            root: Some(self.root.clone()),
            record: to_disk(record, &self.root),
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

/// The records of one state file; `None` if it is missing, and with a
/// warning if it cannot be trusted.
/// A record as a file keeps it: paths below `root` relative to it.
fn to_disk(record: &NodeRecord, root: &Path) -> NodeRecord {
    let relative = |path: &PathBuf| {
        path.strip_prefix(root)
            .map_or(path.clone(), Path::to_path_buf)
    };
    NodeRecord {
        target: record.target.as_ref().map(relative),
        produced: record.produced.iter().map(relative).collect(),
        ..record.clone()
    }
}

/// A record read from a file written at `written_at`, for a deployment at
/// `root`: relative paths are below `root`. From anywhere else, nothing
/// it observed is trusted.
fn from_disk(record: NodeRecord, root: &Path, written_at: Option<&Path>) -> NodeRecord {
    let absolute = |path: PathBuf| {
        if path.is_relative() {
            root.join(path)
        } else {
            path
        }
    };
    let mut record = NodeRecord {
        target: record.target.map(absolute),
        produced: record.produced.into_iter().map(absolute).collect(),
        ..record
    };
    if written_at != Some(root) {
        record.observed = None;
        record.process = None;
        record.outputs_tree = None;
        record.produced.retain(|path| path.starts_with(root));
    }
    record
}

fn read_state_file(
    path: &Path,
    root: &Path,
    warnings: &mut Vec<String>,
) -> Option<BTreeMap<String, NodeRecord>> {
    let bytes = match crate::confined::read_regular_path(path, None, false) {
        Ok(Some(bytes)) => bytes,
        Ok(None) => return None,
        Err(error) => {
            warnings.push(format!(
                "cannot read `{}` ({error}); verifying its nodes against disk",
                path.display()
            ));
            return None;
        }
    };
    match serde_json::from_slice::<StateFile>(&bytes) {
        Ok(file) if file.format == FORMAT => {
            let written_at = file.root.as_deref();
            if let Some(elsewhere) = written_at.filter(|at| *at != root) {
                // Said once per directory, not once per component file.
                let dir = path.parent().unwrap_or(path);
                warnings.push(format!(
                    "the state in `{}` was written for the deployment at `{}`; verifying its nodes against this one",
                    dir.display(),
                    elsewhere.display()
                ));
            }
            Some(
                file.nodes
                    .into_iter()
                    .map(|(id, record)| (id, from_disk(record, root, written_at)))
                    .collect(),
            )
        }
        Ok(_) => {
            warnings.push(format!(
                "`{}` has another format; verifying its nodes against disk",
                path.display()
            ));
            None
        }
        Err(error) => {
            warnings.push(format!(
                "`{}` is corrupt ({error}); verifying its nodes against disk",
                path.display()
            ));
            None
        }
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
            outputs_tree: None,
            finished,
        }
    }

    #[test]
    fn journal_is_replayed_and_a_torn_line_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::new(dir.path(), "dev", "localhost");
        let mut state = State::default();
        state.insert("app/a".into(), record("A", false));
        state.insert("app/b".into(), record("B", false));
        store.save(&mut state).unwrap();
        store.journal("app/a", &record("A", true)).unwrap();
        let mut journal = OpenOptions::new()
            .append(true)
            .open(&store.journal_path)
            .unwrap();
        journal.write_all(b"{\"id\":\"app/b\",\"rec").unwrap();

        let (loaded, warnings) = StateStore::new(dir.path(), "dev", "localhost").load();
        assert!(warnings.is_empty());
        assert!(loaded.nodes["app/a"].finished);
        assert!(
            !loaded.nodes["app/b"].finished,
            "a torn entry must not count as finished"
        );
    }

    #[test]
    fn each_component_has_its_file_and_only_changed_ones_are_written() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::new(dir.path(), "dev", "localhost");
        let mut state = State::default();
        state.insert("app/a".into(), record("A", true));
        state.insert("db/b".into(), record("B", true));
        store.save(&mut state).unwrap();
        let db_file = store.dir().join("db.json");
        let written = fs::metadata(&db_file).unwrap().modified().unwrap();

        let (mut state, _) = store.load_components(&["app".to_string()]);
        assert_eq!(state.ids().collect::<Vec<_>>(), ["app/a"]);
        state.insert("app/c".into(), record("C", true));
        store.save(&mut state).unwrap();

        assert_eq!(fs::metadata(&db_file).unwrap().modified().unwrap(), written);
        let (all, warnings) = store.load();
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(all.ids().collect::<Vec<_>>(), ["app/a", "app/c", "db/b"]);

        let mut all = all;
        all.remove("db/b");
        store.save(&mut all).unwrap();
        assert!(!db_file.exists(), "a component with no records has no file");
    }

    #[test]
    fn the_single_file_of_older_versions_is_split() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::new(dir.path(), "dev", "localhost");
        let old = StateFile {
            format: FORMAT,
            root: None,
            nodes: [("app/a".to_string(), record("A", true))].into(),
        };
        let legacy = dir.path().join(".tack/state/dev/localhost.json");
        fs::create_dir_all(legacy.parent().unwrap()).unwrap();
        fs::write(&legacy, serde_json::to_vec(&old).unwrap()).unwrap();

        let (mut state, _) = store.load();
        assert!(state.get("app/a").is_some());
        store.save(&mut state).unwrap();
        assert!(!legacy.exists());
        assert!(store.dir().join("app.json").exists());
    }

    #[test]
    fn corrupt_state_is_discarded_with_a_warning() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::new(dir.path(), "dev", "localhost");
        fs::create_dir_all(store.dir()).unwrap();
        fs::write(
            store.dir().join("app.json"),
            b"{\"format\": 1, \"nodes\": {",
        )
        .unwrap();
        let (state, warnings) = store.load();
        assert!(state.is_empty());
        assert!(warnings[0].contains("corrupt"), "{warnings:?}");
    }
}
