//! Restoring a step's outputs from the cache instead of running it.
//!
//! A step that declares outputs (`[command]` with `outputs`, `[buildout]`'s
//! `bin/`, `parts/`, `eggs/`, `develop-eggs/`, `.installed.cfg` and its
//! venv, `[supervisor]`'s venv) stores what it produced in the
//! content-addressed cache (the `cache` crate) under its *cache key*; a
//! later run of a node with the same cache key, in this checkout or another
//! one sharing the cache directory, restores the outputs instead of
//! running. Every restored byte is verified by hash; a miss or a corrupt
//! entry means the step runs.
//!
//! The cache key is the node key plus the facts of the host the outputs
//! depend on (the python version a venv was built with). Node keys hash
//! targets relative to the work dir, so they do not contain the checkout's
//! absolute path unless a node really depends on it: a command whose
//! inputs do not mention `workdir` is *relocatable* and restores in any
//! checkout; a buildout, whose rendered `buildout.cfg` and generated
//! scripts embed absolute paths, restores only at the same path (the usual
//! case for a CI runner's fresh checkout).
//!
//! Only outputs of steps come from the cache. What is deployed (files,
//! services) is never taken from it: it is always verified against the
//! disk and the process table.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use cache::{ActionRecord, Digest, Store};

use crate::graph::NodeSpec;

/// The cache as a deploy uses it.
pub struct StepCache {
    store: Store,
    /// `--no-cache-read`: run every step and overwrite its entry.
    read: bool,
}

impl StepCache {
    pub fn open(dir: &Path, salt: Option<&str>, read: bool) -> Result<StepCache, String> {
        let store = match salt {
            Some(salt) => Store::open_salted(dir, salt),
            None => Store::open(dir),
        }
        .map_err(|error| format!("cannot open the cache: {error}"))?;
        Ok(StepCache { store, read })
    }

    /// The outputs of a step relative to its working directory, or `None`
    /// if it declares none or one lies outside it: then it is not cached.
    pub fn relative_outputs(cwd: &Path, outputs: &[PathBuf]) -> Option<Vec<PathBuf>> {
        if outputs.is_empty() {
            return None;
        }
        outputs
            .iter()
            .map(|output| output.strip_prefix(cwd).ok().map(Path::to_path_buf))
            .collect()
    }

    pub fn key(node: &NodeSpec, facts: &BTreeMap<String, String>) -> Digest {
        let mut hasher = blake3::Hasher::new();
        hasher.update(&node.key.0);
        for (name, value) in facts {
            hasher.update(format!("\0{name}={value}").as_bytes());
        }
        Digest::from(hasher.finalize())
    }

    /// Restores the outputs recorded under `key` into `cwd`; whether it did.
    pub fn restore(&self, key: &Digest, cwd: &Path) -> bool {
        if !self.read {
            return false;
        }
        match self.store.get_action(key) {
            Ok(Some(record)) => self
                .store
                .restore_tree(&record.outputs, cwd)
                .unwrap_or(false),
            _ => false,
        }
    }

    /// Stores what a step produced; a failure to cache is a warning for
    /// the caller, never a failed deploy.
    pub fn save(&self, key: &Digest, cwd: &Path, outputs: &[PathBuf]) -> Result<(), String> {
        let entries = self
            .store
            .capture_tree(cwd, outputs)
            .map_err(|error| format!("cannot cache the outputs: {error}"))?;
        let record = ActionRecord {
            outputs: entries,
            exit_status: 0,
            tool_version: env!("CARGO_PKG_VERSION").to_string(),
        };
        self.store
            .put_action(key, &record)
            .map_err(|error| format!("cannot cache the outputs: {error}"))
    }
}
