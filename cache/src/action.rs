//! Action records: what a node produced, keyed by the node key.
//!
//! On disk a record is one header line and a JSON body:
//!
//! ```text
//! tack-action v1 <checksum-hex>\n
//! {"outputs":[...],"exit_status":0,"tool_version":"..."}
//! ```
//!
//! The checksum is a blake3 (derived-key mode) over the record's file name
//! (the salted key) and the body.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Write};

use serde::{Deserialize, Serialize};

use crate::blob::{evict, seal};
use crate::{temp_in, Digest, Error, Result, Store};

const HEADER: &str = "tack-action v1 ";
const KEY_CONTEXT: &str = "tack cache v1 action key";
const CHECKSUM_CONTEXT: &str = "tack cache v1 action record";
pub(crate) const RECORD_MODE: u32 = 0o444;

/// The cached result of running a node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActionRecord {
    /// The node's outputs, as captured by [`Store::capture_tree`].
    pub outputs: Vec<OutputEntry>,
    /// The exit status the node's command had.
    pub exit_status: i32,
    /// The version of the tool that produced the outputs.
    pub tool_version: String,
    /// The absolute paths the outputs embed, found by scanning them
    /// ([`crate::scan_tree`]): such a record is restored only where these
    /// paths are the same. Empty for outputs that restore anywhere.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub bound_to: Vec<String>,
}

/// One file, symlink or directory of a captured tree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputEntry {
    /// Relative to the tree's root, `/`-separated, no `.` or `..` parts.
    pub path: String,
    /// What is at `path`.
    #[serde(flatten)]
    pub kind: OutputKind,
}

/// What an [`OutputEntry`] is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum OutputKind {
    /// A regular file: its content's blob and its permission bits.
    File {
        /// The blob holding the content.
        digest: Digest,
        /// Permission bits (`mode & 0o7777`).
        mode: u32,
    },
    /// A symlink, kept as a link (never followed).
    Symlink {
        /// The link's target, verbatim.
        target: String,
    },
    /// A directory and its permission bits.
    Dir {
        /// Permission bits (`mode & 0o7777`).
        mode: u32,
    },
}

impl ActionRecord {
    /// The blobs this record references.
    pub fn blobs(&self) -> impl Iterator<Item = &Digest> {
        self.outputs.iter().filter_map(|o| match &o.kind {
            OutputKind::File { digest, .. } => Some(digest),
            _ => None,
        })
    }
}

impl Store {
    /// Stores `record` under the node key `key` (salted), replacing any
    /// earlier record atomically. Store the blobs first
    /// ([`Store::capture_tree`] does); a record whose blobs are missing is
    /// a miss.
    pub fn put_action(&self, key: &Digest, record: &ActionRecord) -> Result<()> {
        let eff = self.action_key(key);
        let path = self.actions_dir().join(eff.to_hex());
        check_manifest(&record.outputs).map_err(|why| Error::invalid(&path, why))?;
        let bytes =
            encode_record(&eff, record).map_err(|e| Error::io(&path, io::Error::other(e)))?;
        let dir = self.actions_dir();
        fs::create_dir_all(&dir).map_err(Error::at(&dir))?;
        let mut tmp = temp_in(&dir)?;
        tmp.write_all(&bytes).map_err(Error::at(tmp.path()))?;
        seal(tmp, &path, RECORD_MODE)
    }

    /// The record stored under `key` with this store's salt. `Ok(None)` if
    /// there is none, if it is corrupt (then it is evicted), or if any blob
    /// it references is missing.
    pub fn get_action(&self, key: &Digest) -> Result<Option<ActionRecord>> {
        let eff = self.action_key(key);
        let path = self.actions_dir().join(eff.to_hex());
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io(path, e)),
        };
        let record = match decode_record(&eff, &bytes) {
            Ok(r) => r,
            Err(_) => {
                evict(&path);
                return Ok(None);
            }
        };
        if record.blobs().all(|d| self.contains_blob(d)) {
            Ok(Some(record))
        } else {
            Ok(None)
        }
    }

    /// The file name of the record for `key`: the key mixed with the salt.
    pub(crate) fn action_key(&self, key: &Digest) -> Digest {
        let mut h = blake3::Hasher::new_derive_key(KEY_CONTEXT);
        h.update(&(self.salt.len() as u64).to_le_bytes());
        h.update(self.salt.as_bytes());
        h.update(key.as_bytes());
        h.finalize().into()
    }
}

fn checksum(eff_key: &Digest, body: &[u8]) -> Digest {
    let mut h = blake3::Hasher::new_derive_key(CHECKSUM_CONTEXT);
    h.update(eff_key.as_bytes());
    h.update(body);
    h.finalize().into()
}

pub(crate) fn encode_record(
    eff_key: &Digest,
    record: &ActionRecord,
) -> Result<Vec<u8>, serde_json::Error> {
    let body = serde_json::to_vec(record)?;
    let mut out = format!("{HEADER}{}\n", checksum(eff_key, &body)).into_bytes();
    out.extend_from_slice(&body);
    Ok(out)
}

/// Decodes and checks a record stored under `eff_key`; the error says why
/// it is unusable.
pub(crate) fn decode_record(eff_key: &Digest, bytes: &[u8]) -> Result<ActionRecord, String> {
    let nl = bytes
        .iter()
        .position(|&b| b == b'\n')
        .ok_or("no header line")?;
    let header = std::str::from_utf8(&bytes[..nl]).map_err(|_| "header is not UTF-8")?;
    let sum = header
        .strip_prefix(HEADER)
        .ok_or_else(|| format!("unknown header {header:?}"))?;
    let sum = Digest::from_hex(sum).map_err(|e| format!("bad checksum field: {e}"))?;
    let body = &bytes[nl + 1..];
    if checksum(eff_key, body) != sum {
        return Err("checksum mismatch".into());
    }
    let record: ActionRecord =
        serde_json::from_slice(body).map_err(|e| format!("undecodable body: {e}"))?;
    check_manifest(&record.outputs)?;
    Ok(record)
}

/// Checks that a manifest is safe to restore: clean relative paths, no
/// duplicates, modes within `0o7777`, and every ancestor that is itself in
/// the manifest is a directory (so nothing is written through a symlink).
/// Returns the entries by path (parents sort before their children).
pub(crate) fn check_manifest(
    outputs: &[OutputEntry],
) -> Result<BTreeMap<&str, &OutputKind>, String> {
    let mut map = BTreeMap::new();
    for o in outputs {
        check_rel(&o.path).map_err(|why| format!("{:?}: {why}", o.path))?;
        if let OutputKind::File { mode, .. } | OutputKind::Dir { mode } = o.kind {
            if mode > 0o7777 {
                return Err(format!("{:?}: mode {mode:o} out of range", o.path));
            }
        }
        if map.insert(o.path.as_str(), &o.kind).is_some() {
            return Err(format!("{:?}: listed twice", o.path));
        }
    }
    for path in map.keys() {
        for (i, _) in path.match_indices('/') {
            match map.get(&path[..i]) {
                None | Some(OutputKind::Dir { .. }) => {}
                Some(_) => {
                    return Err(format!(
                        "{path:?}: parent {:?} is not a directory",
                        &path[..i]
                    ))
                }
            }
        }
    }
    Ok(map)
}

/// A clean relative `/`-separated path: non-empty parts, none `.` or `..`.
pub(crate) fn check_rel(path: &str) -> Result<(), &'static str> {
    if path.is_empty() {
        return Err("empty path");
    }
    if path.contains('\0') {
        return Err("NUL in path");
    }
    if path.starts_with('/') {
        return Err("absolute path");
    }
    for part in path.split('/') {
        match part {
            "" => return Err("empty path component"),
            "." | ".." => return Err("`.` or `..` component"),
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::corrupt;

    fn store_at(dir: &std::path::Path, salt: &str) -> Store {
        Store::open_salted(dir, salt).unwrap()
    }

    fn record(store: &Store) -> ActionRecord {
        let d = store.put_blob(b"binary").unwrap();
        ActionRecord {
            outputs: vec![
                OutputEntry {
                    path: "bin".into(),
                    kind: OutputKind::Dir { mode: 0o755 },
                },
                OutputEntry {
                    path: "bin/tool".into(),
                    kind: OutputKind::File {
                        digest: d,
                        mode: 0o755,
                    },
                },
                OutputEntry {
                    path: "bin/alias".into(),
                    kind: OutputKind::Symlink {
                        target: "tool".into(),
                    },
                },
            ],
            exit_status: 0,
            tool_version: "buildout 3.0".into(),
            bound_to: Vec::new(),
        }
    }

    #[test]
    fn action_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_at(dir.path(), "");
        let key = Digest::of(b"node key");
        let rec = record(&store);
        assert_eq!(store.get_action(&key).unwrap(), None);
        store.put_action(&key, &rec).unwrap();
        assert_eq!(store.get_action(&key).unwrap(), Some(rec.clone()));
        // Replacing works.
        let mut rec2 = rec;
        rec2.exit_status = 3;
        store.put_action(&key, &rec2).unwrap();
        assert_eq!(store.get_action(&key).unwrap(), Some(rec2));
    }

    fn record_path(store: &Store, key: &Digest) -> std::path::PathBuf {
        store.actions_dir().join(store.action_key(key).to_hex())
    }

    #[test]
    fn truncated_record_is_a_miss_and_evicted() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_at(dir.path(), "");
        let key = Digest::of(b"k");
        store.put_action(&key, &record(&store)).unwrap();
        let path = record_path(&store, &key);
        let bytes = fs::read(&path).unwrap();
        corrupt(&path, &bytes[..bytes.len() - 5]);
        assert_eq!(store.get_action(&key).unwrap(), None);
        assert!(!path.exists());
    }

    #[test]
    fn corrupted_record_body_or_header_is_a_miss() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_at(dir.path(), "");
        let key = Digest::of(b"k");
        let rec = record(&store);
        for damage in [
            |b: &mut Vec<u8>| *b.last_mut().unwrap() = b'x',
            |b: &mut Vec<u8>| b[3] = b'X',
            |b: &mut Vec<u8>| b.clear(),
            |b: &mut Vec<u8>| b.retain(|&c| c != b'\n'),
        ] {
            store.put_action(&key, &rec).unwrap();
            let path = record_path(&store, &key);
            let mut bytes = fs::read(&path).unwrap();
            damage(&mut bytes);
            corrupt(&path, &bytes);
            assert_eq!(store.get_action(&key).unwrap(), None);
            assert!(!path.exists());
        }
    }

    #[test]
    fn record_moved_to_another_key_is_a_miss() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_at(dir.path(), "");
        let (a, b) = (Digest::of(b"a"), Digest::of(b"b"));
        store.put_action(&a, &record(&store)).unwrap();
        fs::copy(record_path(&store, &a), record_path(&store, &b)).unwrap();
        assert_eq!(store.get_action(&b).unwrap(), None);
        assert!(store.get_action(&a).unwrap().is_some());
    }

    #[test]
    fn missing_blob_makes_the_record_a_miss() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_at(dir.path(), "");
        let key = Digest::of(b"k");
        let rec = record(&store);
        store.put_action(&key, &rec).unwrap();
        let blob = *rec.blobs().next().unwrap();
        fs::remove_file(store.blob_path(&blob)).unwrap();
        assert_eq!(store.get_action(&key).unwrap(), None);
        // The record itself is kept (gc drops it); putting the blob back revives it.
        store.put_blob(b"binary").unwrap();
        assert_eq!(store.get_action(&key).unwrap(), Some(rec));
    }

    #[test]
    fn salt_isolates_records_but_shares_blobs() {
        let dir = tempfile::tempdir().unwrap();
        let plain = store_at(dir.path(), "");
        let a = store_at(dir.path(), "tack-1");
        let b = store_at(dir.path(), "tack-2");
        let key = Digest::of(b"k");
        let rec = record(&a);
        a.put_action(&key, &rec).unwrap();
        assert_eq!(a.get_action(&key).unwrap(), Some(rec.clone()));
        assert_eq!(b.get_action(&key).unwrap(), None);
        assert_eq!(plain.get_action(&key).unwrap(), None);
        // Reopening with the same salt finds it again; blobs are shared.
        assert_eq!(
            store_at(dir.path(), "tack-1").get_action(&key).unwrap(),
            Some(rec.clone())
        );
        assert!(b.get_blob(rec.blobs().next().unwrap()).unwrap().is_some());
    }

    #[test]
    fn put_action_rejects_unsafe_paths() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_at(dir.path(), "");
        let key = Digest::of(b"k");
        for bad in ["", "/etc/passwd", "a/../b", "./a", "a//b", "a/"] {
            let rec = ActionRecord {
                outputs: vec![OutputEntry {
                    path: bad.into(),
                    kind: OutputKind::Dir { mode: 0o755 },
                }],
                exit_status: 0,
                tool_version: String::new(),
                bound_to: Vec::new(),
            };
            let err = store.put_action(&key, &rec).unwrap_err();
            assert!(
                matches!(err.kind, crate::ErrorKind::InvalidPath(_)),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn manifest_rejects_writing_through_a_symlink() {
        let outputs = vec![
            OutputEntry {
                path: "a".into(),
                kind: OutputKind::Symlink {
                    target: "/etc".into(),
                },
            },
            OutputEntry {
                path: "a/passwd".into(),
                kind: OutputKind::Dir { mode: 0o755 },
            },
        ];
        assert!(check_manifest(&outputs).is_err());
    }

    #[test]
    fn record_json_is_readable() {
        let rec = ActionRecord {
            outputs: vec![OutputEntry {
                path: "bin/x".into(),
                kind: OutputKind::File {
                    digest: Digest::of(b""),
                    mode: 0o755,
                },
            }],
            exit_status: 0,
            tool_version: "1".into(),
            bound_to: Vec::new(),
        };
        let json = serde_json::to_string(&rec).unwrap();
        assert!(
            json.contains(r#""path":"bin/x","type":"file","digest":""#),
            "{json}"
        );
        assert_eq!(serde_json::from_str::<ActionRecord>(&json).unwrap(), rec);
    }
}
