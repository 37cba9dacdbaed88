//! The salsa database: the deployment's files as inputs.
//!
//! Inputs are the only mutable state of the configure phase. A
//! [`SourceFile`] is created the first time a query asks for a path and
//! holds the bytes read then (or `None` for a missing file), so a query can
//! depend on a file that does not exist yet. Reading the deployment's own
//! sources is the one kind of IO this layer does; it never looks at what is
//! deployed (`work/`, `.tack/`, processes).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use salsa::Setter;

use crate::configure::Wiring;
use crate::secrets::{self, Unlocked};

/// A file of the deployment, by its path relative to the deployment root
/// (`/`-separated, as written in config files and messages).
#[salsa::input(debug)]
pub struct SourceFile {
    #[returns(ref)]
    pub path: String,
    #[returns(ref)]
    pub contents: Option<Arc<[u8]>>,
}

/// What is being configured: a deployment directory and one environment.
#[salsa::input(debug)]
pub struct Deployment {
    #[returns(ref)]
    pub root: PathBuf,
    #[returns(ref)]
    pub environment: String,
    /// The wiring of an earlier run, when the caller has checked that
    /// nothing it was resolved from changed (see `incremental`): resolving
    /// it again would read every component of the environment.
    #[returns(ref)]
    pub recorded_wiring: Option<Arc<Wiring>>,
    /// Where each host reached over ssh keeps the deployment (its
    /// `remote_dir`, made absolute with the login user's home): the root of
    /// that host's work dirs. A host not named here deploys under `root`.
    #[returns(ref)]
    pub host_roots: std::collections::BTreeMap<String, PathBuf>,
}

#[salsa::db]
pub trait Db: salsa::Database {
    /// The file at `path` below the deployment root, read on first use.
    fn source(&self, path: &str) -> SourceFile;
}

#[salsa::db]
#[derive(Clone)]
pub struct Database {
    storage: salsa::Storage<Self>,
    root: PathBuf,
    files: Arc<Mutex<HashMap<String, SourceFile>>>,
    /// The stat of each file taken just before it was read, so the fast
    /// path can tell later whether what is on disk is what was read.
    stats: Arc<Mutex<HashMap<String, Option<FileStat>>>>,
    executed: Option<Arc<Mutex<Vec<String>>>>,
    /// The clear text of the environment's encrypted secrets, read in
    /// place of the files: configuring never sees ciphertext.
    secrets: Arc<Unlocked>,
}

/// Size, mtime, ctime and inode: a file whose stat is unchanged has the
/// content it had (ctime cannot be set back by any user tool).
/// Stored as a JSON array: the manifest holds one per file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(from = "StatFields", into = "StatFields")]
pub struct FileStat {
    pub size: u64,
    pub mtime: (i64, i64),
    pub ctime: (i64, i64),
    pub ino: u64,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct StatFields(u64, (i64, i64), (i64, i64), u64);

impl From<StatFields> for FileStat {
    fn from(StatFields(size, mtime, ctime, ino): StatFields) -> FileStat {
        FileStat {
            size,
            mtime,
            ctime,
            ino,
        }
    }
}

impl From<FileStat> for StatFields {
    fn from(stat: FileStat) -> StatFields {
        StatFields(stat.size, stat.mtime, stat.ctime, stat.ino)
    }
}

impl FileStat {
    pub fn of(path: &Path) -> Option<FileStat> {
        Some(FileStat::from_meta(&std::fs::metadata(path).ok()?))
    }

    pub fn from_meta(meta: &std::fs::Metadata) -> FileStat {
        use std::os::unix::fs::MetadataExt;
        FileStat {
            size: meta.size(),
            mtime: (meta.mtime(), meta.mtime_nsec()),
            ctime: (meta.ctime(), meta.ctime_nsec()),
            ino: meta.ino(),
        }
    }
}

impl Database {
    pub fn new(root: &Path) -> Database {
        Database {
            storage: salsa::Storage::default(),
            root: root.to_path_buf(),
            files: Arc::default(),
            stats: Arc::default(),
            executed: None,
            secrets: Arc::default(),
        }
    }

    /// A database that reads the decrypted `secrets` in place of the
    /// encrypted files they came from.
    pub fn with_secrets(root: &Path, secrets: Arc<Unlocked>) -> Database {
        Database {
            secrets,
            ..Database::new(root)
        }
    }

    /// A database that records the name of every query it executes, for
    /// tests that assert what was recomputed after a change.
    pub fn with_query_log(root: &Path) -> Database {
        let executed: Arc<Mutex<Vec<String>>> = Arc::default();
        let log = executed.clone();
        let storage = salsa::Storage::new(Some(Box::new(move |event: salsa::Event| {
            if let salsa::EventKind::WillExecute { database_key } = event.kind {
                let name = format!("{database_key:?}");
                let name = name.split('(').next().unwrap_or_default().to_string();
                log.lock().unwrap_or_else(|e| e.into_inner()).push(name);
            }
        })));
        Database {
            storage,
            root: root.to_path_buf(),
            files: Arc::default(),
            stats: Arc::default(),
            executed: Some(executed),
            secrets: Arc::default(),
        }
    }

    /// The names of the queries executed since the last call, sorted.
    pub fn take_executed(&self) -> Vec<String> {
        let Some(executed) = &self.executed else {
            return Vec::new();
        };
        let mut names = std::mem::take(&mut *executed.lock().unwrap_or_else(|e| e.into_inner()));
        names.sort();
        names
    }

    /// Every file read so far, with its stat taken before it was read
    /// (`None` for a file found missing), by path.
    pub fn sources(&self) -> Vec<(String, Option<FileStat>)> {
        let stats = self.stats.lock().unwrap_or_else(|e| e.into_inner());
        let mut sources: Vec<(String, Option<FileStat>)> = stats
            .iter()
            .map(|(path, stat)| (path.clone(), *stat))
            .collect();
        sources.sort_by(|a, b| a.0.cmp(&b.0));
        sources
    }

    /// Rereads `path` from disk, starting a new revision if it changed.
    pub fn reload(&mut self, path: &str) {
        let contents = self.read(path);
        let file = self.source(path);
        if file.contents(self) != &contents {
            file.set_contents(self).to(contents);
        }
    }

    /// The bytes of `path`; an encrypted secret only as its clear text,
    /// and as missing when it was not unlocked.
    fn read(&self, path: &str) -> Option<Arc<[u8]>> {
        if secrets::is_encrypted(path) {
            return self.secrets.get(path);
        }
        read(&self.root, path)
    }
}

/// A source of the deployment: the checkout is trusted, so links in it
/// are followed, but only a regular file is read (a FIFO would hang the
/// run, a device would never end).
fn read(root: &Path, path: &str) -> Option<Arc<[u8]>> {
    crate::confined::read_regular_path(&root.join(path), None, true)
        .ok()
        .flatten()
        .map(Arc::from)
}

#[salsa::db]
impl salsa::Database for Database {}

#[salsa::db]
impl Db for Database {
    fn source(&self, path: &str) -> SourceFile {
        let mut files = self.files.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(file) = files.get(path) {
            return *file;
        }
        let stat = FileStat::of(&self.root.join(path));
        let file = SourceFile::new(self, path.to_string(), self.read(path));
        files.insert(path.to_string(), file);
        let mut stats = self.stats.lock().unwrap_or_else(|e| e.into_inner());
        stats.insert(path.to_string(), stat);
        file
    }
}
