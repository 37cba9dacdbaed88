//! Restoring a step's outputs from the cache instead of running it.
//!
//! Only steps whose outputs are a pure function of their inputs are
//! cached: a `[command]` that says so with `cache = true` (and names its
//! `outputs`), a `[buildout]` (`bin/`, `parts/`, `eggs/`, `develop-eggs/`,
//! `.installed.cfg` and its venv) and the venv of `[supervisor]`. What a
//! step `creates` (a database, uploaded files) is state: never captured,
//! never restored. Such a step stores what it produced in the
//! content-addressed cache (the `cache` crate) under its *cache key*; a
//! later run of a node with the same cache key, in this checkout or another
//! one sharing the cache directory, restores the outputs instead of
//! running.
//!
//! What a restore promises:
//!
//! * **Never over somebody else's data.** Outputs already on disk are
//!   replaced only if they are exactly what tack recorded after the step's
//!   last run or restore (their tree digest, [`cache::tree_digest`]). If
//!   anything else wrote there since, the step runs instead, and the deploy
//!   says why.
//! * **Only where it works.** Capturing scans the outputs for the absolute
//!   paths of this checkout (its root and the step's work dir), as Nix
//!   scans for store paths. A tree that embeds them (a venv's scripts, a
//!   buildout's) is *bound*: it is stored under a key that includes those
//!   paths and restored only where they are the same. A tree that does not
//!   is relocatable and restores in any checkout.
//! * **Whole or not at all.** Every byte is verified by hash before
//!   anything is replaced; an entry naming a path the step does not declare,
//!   or holding a symlink that dangles or escapes the outputs, is a miss.
//!   A capture that would record such a link is refused with a warning.
//!
//! * **Only what the operator's key vouches for, when there is one.** With
//!   `TACK_CACHE_KEY` set, records are written with a MAC under a key
//!   derived from it, and a record without a valid one (forged with the
//!   public checksum, imported from someone else's archive, dropped into a
//!   shared cache, or written before the key was set) is not restored: the
//!   step runs and the deploy says why. Without the variable, a record is
//!   still checked against the step's declared outputs, and restored files
//!   never get a setuid or setgid bit.
//!
//! The cache key is the node key plus the facts of the host the outputs
//! depend on (the python version a venv was built with) and the version of
//! this scheme: entries written before bound trees were detected carry no
//! binding and are never found.
//!
//! Only outputs of steps come from the cache. What is deployed (files,
//! services) is never taken from it: it is always verified against the
//! disk and the process table.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use cache::{ActionLookup, ActionRecord, Digest, OutputEntry, RecordKey, Store};

use crate::graph::NodeSpec;

/// Mixed into every cache key: bumping it disowns every earlier entry.
const SCHEME: &str = "tack step cache v2 (bound trees)";

/// The environment variable with the operator's secret that authenticates
/// cache records. Not a command-line option: a secret there shows in `ps`.
pub const KEY_VARIABLE: &str = "TACK_CACHE_KEY";

/// The record key from `TACK_CACHE_KEY`, `None` when it is not set. Set
/// but empty is an error: a key nobody meant would authenticate anything
/// written with the same mistake.
pub fn record_key_from_env() -> Result<Option<RecordKey>, String> {
    use std::os::unix::ffi::OsStrExt;
    match std::env::var_os(KEY_VARIABLE) {
        None => Ok(None),
        Some(secret) if secret.is_empty() => Err(format!("`{KEY_VARIABLE}` is set but empty")),
        Some(secret) => Ok(Some(RecordKey::derive(secret.as_bytes()))),
    }
}

/// The cache as a deploy uses it.
pub struct StepCache {
    store: Store,
    /// `--no-cache-read`: run every step and overwrite its entry.
    read: bool,
    /// The deployment root, searched for in captured outputs.
    root: PathBuf,
}

/// A step's outputs, relative to its working directory.
pub struct Outputs<'a> {
    pub cwd: &'a Path,
    pub relative: Vec<String>,
}

/// Where a lookup found an entry that can be restored here.
pub struct Hit {
    record: ActionRecord,
}

/// What the cache has for a step here.
pub enum Lookup {
    Hit(Hit),
    Miss,
    /// An entry for this step that `TACK_CACHE_KEY` does not authenticate.
    Unauthenticated,
}

impl StepCache {
    pub fn open(
        dir: &Path,
        salt: Option<&str>,
        read: bool,
        root: &Path,
    ) -> Result<StepCache, String> {
        let key = record_key_from_env()?;
        let store = match salt {
            Some(salt) => Store::open_salted(dir, salt),
            None => Store::open(dir),
        }
        .map_err(|error| format!("cannot open the cache: {error}"))?
        .with_record_key(key);
        Ok(StepCache {
            store,
            read,
            root: root.to_path_buf(),
        })
    }

    pub fn key(node: &NodeSpec, facts: &BTreeMap<String, String>) -> Digest {
        let mut hasher = blake3::Hasher::new();
        hasher.update(SCHEME.as_bytes());
        hasher.update(&node.key.0);
        for (name, value) in facts {
            hasher.update(format!("\0{name}={value}").as_bytes());
        }
        Digest::from(hasher.finalize())
    }

    /// The places a bound tree of a step in `cwd` embeds: the deployment
    /// root and the step's work dir (which may lie outside the root).
    fn place(&self, cwd: &Path) -> Vec<String> {
        vec![self.root.display().to_string(), cwd.display().to_string()]
    }

    /// The key a tree bound to `place` is stored under.
    fn bound_key(key: &Digest, place: &[String]) -> Digest {
        let mut hasher = blake3::Hasher::new();
        hasher.update(key.as_bytes());
        for path in place {
            hasher.update(b"\0");
            hasher.update(path.as_bytes());
        }
        Digest::from(hasher.finalize())
    }

    /// An entry for `key` that may be restored at `outputs.cwd`: one that
    /// restores anywhere, or one bound to exactly this place. Failing that,
    /// whether an entry was there that the record key does not vouch for.
    pub fn lookup(&self, key: &Digest, outputs: &Outputs) -> Lookup {
        if !self.read {
            return Lookup::Miss;
        }
        let place = self.place(outputs.cwd);
        let mut unauthenticated = false;
        let mut find = |key: &Digest, fits: &dyn Fn(&ActionRecord) -> bool| match self
            .store
            .find_action(key)
        {
            Ok(ActionLookup::Hit(record)) => Some(record).filter(|record| fits(record)),
            Ok(ActionLookup::Unauthenticated) => {
                unauthenticated = true;
                None
            }
            Ok(ActionLookup::Miss) | Err(_) => None,
        };
        let found = find(key, &|record| record.bound_to.is_empty()).or_else(|| {
            find(&Self::bound_key(key, &place), &|record| {
                record.bound_to == place
            })
        });
        match found {
            Some(record) => Lookup::Hit(Hit { record }),
            None if unauthenticated => Lookup::Unauthenticated,
            None => Lookup::Miss,
        }
    }

    /// Restores a hit; the tree digest of what is now on disk, or `None` on
    /// a miss (a blob gone or corrupt, an entry that is not whole, an I/O
    /// error while staging), when nothing was changed. From `trusted` (see
    /// [`crate::confined::trusted_base`]) down, no symlink is followed: one
    /// planted where a directory of the outputs belongs is an error naming
    /// it, not a miss, since running the step instead would write through
    /// it.
    pub fn restore(
        &self,
        hit: &Hit,
        outputs: &Outputs,
        trusted: Option<&Path>,
    ) -> Result<Option<Digest>, String> {
        match self.store.restore_outputs(
            &hit.record.outputs,
            trusted,
            outputs.cwd,
            &outputs.relative,
        ) {
            Ok(true) => Ok(Some(cache::tree_digest(&hit.record.outputs))),
            Ok(false) => Ok(None),
            Err(error) if matches!(error.kind, cache::ErrorKind::InvalidPath(_)) => Err(format!(
                "cannot restore the outputs from the cache: {error}"
            )),
            Err(_) => Ok(None),
        }
    }

    /// Whether a restore may replace what is at the outputs now: nothing is
    /// there, or exactly the tree tack recorded (`recorded`). Otherwise why
    /// not, for the report.
    pub fn may_replace(outputs: &Outputs, recorded: Option<&Digest>) -> Result<(), String> {
        let present: Vec<&String> = outputs
            .relative
            .iter()
            .filter(|rel| std::fs::symlink_metadata(outputs.cwd.join(rel)).is_ok())
            .collect();
        if present.is_empty() {
            return Ok(());
        }
        let listed = present
            .iter()
            .map(|rel| format!("`{rel}`"))
            .collect::<Vec<_>>()
            .join(", ");
        let Some(recorded) = recorded else {
            return Err(format!(
                "{listed} exist but tack has no record of making them here; running the step instead"
            ));
        };
        let now = cache::scan_tree(outputs.cwd, &outputs.relative, &[])
            .map(|scan| cache::tree_digest(&scan.entries));
        match now {
            Ok(now) if now == *recorded => Ok(()),
            _ => Err(format!(
                "{listed} changed since tack recorded them; running the step instead of overwriting them"
            )),
        }
    }

    /// Stores what a step produced and returns its tree digest. Storing
    /// can fail without failing the deploy: then the digest comes with a
    /// warning for the caller.
    pub fn save(&self, key: &Digest, outputs: &Outputs) -> (Option<Digest>, Option<String>) {
        let place = self.place(outputs.cwd);
        let needles: Vec<&[u8]> = place.iter().map(|p| p.as_bytes()).collect();
        let scan = match cache::scan_tree(outputs.cwd, &outputs.relative, &needles) {
            Ok(scan) => scan,
            Err(error) => return (None, Some(format!("cannot cache the outputs: {error}"))),
        };
        let digest = cache::tree_digest(&scan.entries);
        if let Err(why) = cache::check_links(&scan.entries, outputs.cwd) {
            return (Some(digest), Some(format!("not cached: {why}")));
        }
        let stored = self.store_record(key, outputs.cwd, scan.entries, scan.bound, place);
        (Some(digest), stored.err())
    }

    fn store_record(
        &self,
        key: &Digest,
        cwd: &Path,
        entries: Vec<OutputEntry>,
        bound: bool,
        place: Vec<String>,
    ) -> Result<(), String> {
        let cannot = |error: cache::Error| format!("cannot cache the outputs: {error}");
        self.store.store_scanned(cwd, &entries).map_err(cannot)?;
        let (key, bound_to) = if bound {
            (Self::bound_key(key, &place), place)
        } else {
            (*key, Vec::new())
        };
        let record = ActionRecord {
            outputs: entries,
            exit_status: 0,
            tool_version: env!("CARGO_PKG_VERSION").to_string(),
            bound_to,
        };
        self.store.put_action(&key, &record).map_err(cannot)
    }
}

impl<'a> Outputs<'a> {
    /// The outputs of a step relative to its working directory, or `None`
    /// if it declares none or one lies outside it: then it is not cached.
    pub fn of(cwd: &'a Path, outputs: &[PathBuf]) -> Option<Outputs<'a>> {
        if outputs.is_empty() {
            return None;
        }
        let relative = outputs
            .iter()
            .map(|output| {
                let rel = output.strip_prefix(cwd).ok()?;
                let parts: Option<Vec<&str>> = rel.iter().map(|p| p.to_str()).collect();
                Some(parts?.join("/")).filter(|rel| !rel.is_empty())
            })
            .collect::<Option<Vec<String>>>()?;
        Some(Outputs { cwd, relative })
    }
}
