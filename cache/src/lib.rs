//! tack's content-addressed store.
//!
//! A [`Store`] keeps two kinds of entries under one directory (normally
//! `.tack/cache`, or a shared folder given by `--cache-dir`):
//!
//! * **blobs**: file contents named by their blake3 [`Digest`];
//! * **action records** ([`ActionRecord`]): what a node produced (its output
//!   files, symlinks and directories, with modes and blob digests), keyed by
//!   the node key the caller computes.
//!
//! # Layout
//!
//! ```text
//! <dir>/v1/blobs/ab/abcdef...      one blob, named by its 64-hex-digit digest
//! <dir>/v1/actions/<key-hex>       one action record (see below for the key)
//! <dir>/v1/tmp/                    temporary files of streaming writes
//! ```
//!
//! The `v1` level is the schema version. A store that changes the layout or
//! the record encoding uses a new version directory and ignores the old one.
//! Directories are created on demand. Temporary files start with `.tmp-`;
//! everything that lists the store skips names starting with `.`.
//!
//! # Verification on read
//!
//! Nothing read from the store is trusted. [`Store::get_blob`],
//! [`Store::restore_blob_to`] and [`Store::restore_tree`] re-hash every byte
//! they hand out; a blob whose content does not match its name is a miss
//! and is evicted. An action record carries a blake3 checksum of its body
//! (over the record's file name, so a record copied to another key fails
//! too); a record that does not decode, does not match its checksum, or
//! names an unsafe path is a miss and is evicted. A record that references a
//! blob that is gone is a miss as well (it is left for [`Store::gc`]). So a
//! torn write after a crash, a disk error or a hand-edited file costs a
//! rerun, never a wrong result. Eviction is best effort: in a store shared
//! by several processes it can race with a concurrent rewrite of the same
//! entry, which again costs only a miss.
//!
//! The checksum is public: whoever can write the store (or hand it an
//! archive) can forge a record that verifies. A store given a
//! [`RecordKey`] ([`Store::with_record_key`]) writes a MAC into every
//! record and uses only records whose MAC verifies under that key; see the
//! `action` module.
//!
//! # Atomic writes
//!
//! Every entry is written to a temporary file on the same filesystem and
//! renamed into place, so readers see either the old entry, no entry, or the
//! whole new one. Blobs are immutable by construction: two processes writing
//! the same blob write the same bytes, and the second rename simply replaces
//! the first. Restored files go to a temporary file next to the destination,
//! get their mode, and are renamed over the destination. The store does not
//! `fsync`; verification on read is what makes a torn entry harmless.
//!
//! # Salt
//!
//! [`Store::open_salted`] mixes a salt into the file name of every action
//! record (`blake3-derive-key(salt, key)`), like the salt of the Remote
//! Execution API: records written under another salt are simply never found.
//! Changing the salt (for example with a format or tool change that the node
//! keys do not capture) disowns every earlier record at once while the blobs
//! stay shared. Disowned records are not deleted; [`Store::gc`] drops them
//! only once their blobs are gone.
//!
//! # Eviction
//!
//! [`Store::gc`] evicts the least recently used blobs (by modification
//! time; a verified read or a repeated put touches it, since `atime` is
//! unreliable on `noatime`/`relatime` mounts) until the store fits a size
//! limit, then drops action records whose blobs are gone.
//!
//! # Archives
//!
//! [`Store::export`] writes every valid entry into one streaming,
//! checksummed file and [`Store::import`] adds such a file's entries to a
//! store, verifying each one; see the `archive` module for the format.
//! Records travel under their salted names, so they are found only by a
//! store opened with the same salt.
//!
//! # What it deliberately does not do
//!
//! * No locking and no index file: the file system is the index, and every
//!   operation is safe to run concurrently with others (worst case a miss).
//! * No compression, no chunking, no deduplication below whole files.
//! * No remote protocol; sharing is a shared or restored directory, or an
//!   archive file.
//! * No ownership, timestamps, xattrs or hard links in captured trees: only
//!   content, the permission bits (`mode & 0o7777`) and symlink targets.
//! * No durability guarantee (`fsync`): a cache entry lost in a crash is a
//!   miss.
//! * Unix only (modes and symlinks).

#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::fs;
use std::path::{Path, PathBuf};

mod action;
mod archive;
mod blob;
mod confined;
mod digest;
mod error;
mod maint;
mod scan;
mod tree;

pub use action::{ActionLookup, ActionRecord, OutputEntry, OutputKind, RecordKey};
pub use archive::{ExportReport, ImportReport};
pub use digest::{Digest, ParseDigestError};
pub use error::{Error, ErrorKind, Result};
pub use maint::{Corruption, GcReport, Problem, Stats};
pub use scan::{check_links, scan_tree, tree_digest, Scan};

/// The schema version: the name of the directory under the store root.
pub const SCHEMA: &str = "v1";

/// Prefix of every temporary file or directory the store creates.
pub(crate) const TEMP_PREFIX: &str = ".tmp-";

/// A content-addressed store rooted at a directory. Cheap to clone; holds no
/// open files and no locks, so it is safe to share between threads and
/// processes.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
    salt: String,
    /// With a key, records are written with a MAC and read only if theirs
    /// verifies.
    record_key: Option<RecordKey>,
}

impl Store {
    /// Opens (creating on demand) the store under `dir`, without a salt.
    pub fn open(dir: &Path) -> Result<Store> {
        Store::open_salted(dir, "")
    }

    /// Opens (creating on demand) the store under `dir`; `salt` is mixed
    /// into every action record key, so records written under any other
    /// salt are invisible.
    pub fn open_salted(dir: &Path, salt: &str) -> Result<Store> {
        let store = Store {
            root: dir.join(SCHEMA),
            salt: salt.to_owned(),
            record_key: None,
        };
        for d in [store.blobs_dir(), store.actions_dir(), store.tmp_dir()] {
            crate::private_dir(&d).map_err(Error::at(&d))?;
        }
        Ok(store)
    }

    /// This store, authenticating action records with `key`: records it
    /// writes carry a MAC, and records it reads are used only if their MAC
    /// verifies (`None`: no MAC written or required).
    pub fn with_record_key(self, key: Option<RecordKey>) -> Store {
        Store {
            record_key: key,
            ..self
        }
    }

    /// Whether records are authenticated ([`Store::with_record_key`]).
    pub fn authenticates(&self) -> bool {
        self.record_key.is_some()
    }

    /// The versioned root directory (`<dir>/v1`).
    pub fn path(&self) -> &Path {
        &self.root
    }

    /// The salt this store was opened with (`""` for none).
    pub fn salt(&self) -> &str {
        &self.salt
    }

    pub(crate) fn blobs_dir(&self) -> PathBuf {
        self.root.join("blobs")
    }

    pub(crate) fn actions_dir(&self) -> PathBuf {
        self.root.join("actions")
    }

    pub(crate) fn tmp_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }
}

/// Makes a directory of the store and its missing parents with mode 0700
/// (what the umask leaves of it): a cache can hold what a step made from
/// secrets, and nobody else needs to look in.
pub(crate) fn private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

/// A named temporary file in `dir`, removed on drop unless persisted.
pub(crate) fn temp_in(dir: &Path) -> Result<tempfile::NamedTempFile> {
    tempfile::Builder::new()
        .prefix(TEMP_PREFIX)
        .tempfile_in(dir)
        .map_err(Error::at(dir))
}

#[cfg(test)]
pub(crate) mod testutil {
    use std::fs::{self, Permissions};
    use std::os::unix::fs::PermissionsExt;
    use std::path::Path;

    /// Overwrites a read-only store file in place, as a disk error would.
    pub(crate) fn corrupt(path: &Path, bytes: &[u8]) {
        fs::set_permissions(path, Permissions::from_mode(0o644)).unwrap();
        fs::write(path, bytes).unwrap();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_creates_versioned_layout() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("cache")).unwrap();
        assert_eq!(store.path(), dir.path().join("cache/v1"));
        assert!(store.blobs_dir().is_dir());
        assert!(store.actions_dir().is_dir());
        assert!(store.tmp_dir().is_dir());
        // Opening again is fine.
        Store::open(&dir.path().join("cache")).unwrap();
    }

    #[test]
    fn open_reports_the_path_on_failure() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("file");
        fs::write(&file, b"x").unwrap();
        let err = Store::open(&file).unwrap_err();
        assert!(err.path.starts_with(&file), "{err}");
        assert!(matches!(err.kind, ErrorKind::Io(_)));
    }
}
