//! Action records: what a node produced, keyed by the node key.
//!
//! On disk a record is one header line and a JSON body:
//!
//! ```text
//! tack-action v1 <checksum-hex>[ mac=<mac-hex>]\n
//! {"outputs":[...],"exit_status":0,"tool_version":"..."}
//! ```
//!
//! The checksum is a blake3 (derived-key mode) over the record's file name
//! (the salted key) and the body. It catches damage, not forgery: anyone
//! who can write the store can compute it.
//!
//! # Authentication
//!
//! A store opened with a [`RecordKey`] writes a MAC beside the checksum: a
//! keyed blake3 over the same file name and body, with a key derived from
//! a secret only the operator holds. Such a store takes only records whose
//! MAC verifies under its key; any other record (written without a key,
//! under another key, forged with the public checksum, or from before
//! authentication existed) is [`ActionLookup::Unauthenticated`]: a miss
//! that is reported, never evicted, never an error. A store without a key
//! reads every record whose checksum verifies, MAC or not, as before.

use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::io::{self, Write};

use serde::{Deserialize, Serialize};

use crate::blob::{evict, seal};
use crate::{temp_in, Digest, Error, Result, Store};

const HEADER: &str = "tack-action v1 ";
const KEY_CONTEXT: &str = "tack cache v1 action key";
const CHECKSUM_CONTEXT: &str = "tack cache v1 action record";
const RECORD_KEY_CONTEXT: &str = "tack cache v1 action record authentication key";
const MAC_FIELD: &str = "mac=";
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

/// The key that authenticates action records (see "Authentication" in the
/// module documentation), derived from the operator's secret. Its
/// `Debug` output never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct RecordKey([u8; 32]);

impl RecordKey {
    /// The record key for `secret` (any length; blake3's key derivation
    /// spreads it over 32 bytes, but it is only as hard to guess as it is
    /// long and random).
    pub fn derive(secret: &[u8]) -> RecordKey {
        RecordKey(blake3::derive_key(RECORD_KEY_CONTEXT, secret))
    }
}

impl fmt::Debug for RecordKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RecordKey(..)")
    }
}

/// What [`Store::find_action`] found under a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ActionLookup {
    /// A whole, verified (and, under a record key, authenticated) record
    /// whose blobs are all present.
    Hit(ActionRecord),
    /// No record, a corrupt one (evicted), or one whose blobs are gone.
    Miss,
    /// A record that is intact but carries no MAC that verifies under the
    /// store's record key: not used, and left in place.
    Unauthenticated,
}

/// Why a stored record is not used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Unusable {
    /// It does not decode, fails its checksum or names an unsafe path.
    Corrupt(String),
    /// It is intact, but not authenticated by the key it was checked with.
    Unauthenticated,
}

impl fmt::Display for Unusable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Unusable::Corrupt(why) => f.write_str(why),
            Unusable::Unauthenticated => f.write_str("not authenticated by the record key"),
        }
    }
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
        let bytes = encode_record(&eff, record, self.record_key.as_ref())
            .map_err(|e| Error::io(&path, io::Error::other(e)))?;
        let dir = self.actions_dir();
        crate::private_dir(&dir).map_err(Error::at(&dir))?;
        let mut tmp = temp_in(&dir)?;
        tmp.write_all(&bytes).map_err(Error::at(tmp.path()))?;
        seal(tmp, &path, RECORD_MODE)
    }

    /// The record stored under `key` with this store's salt. `Ok(None)` if
    /// there is none, if it is corrupt (then it is evicted), if it is not
    /// authenticated under the store's record key, or if any blob it
    /// references is missing.
    pub fn get_action(&self, key: &Digest) -> Result<Option<ActionRecord>> {
        Ok(match self.find_action(key)? {
            ActionLookup::Hit(record) => Some(record),
            ActionLookup::Miss | ActionLookup::Unauthenticated => None,
        })
    }

    /// The record stored under `key` with this store's salt, or why there
    /// is none to use: [`Store::get_action`] for a caller that reports an
    /// unauthenticated record.
    pub fn find_action(&self, key: &Digest) -> Result<ActionLookup> {
        let eff = self.action_key(key);
        let path = self.actions_dir().join(eff.to_hex());
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(ActionLookup::Miss),
            Err(e) => return Err(Error::io(path, e)),
        };
        let record = match decode_record(&eff, &bytes, self.record_key.as_ref()) {
            Ok(r) => r,
            // Another key's record, or an old one: somebody else's, kept.
            Err(Unusable::Unauthenticated) => return Ok(ActionLookup::Unauthenticated),
            Err(Unusable::Corrupt(_)) => {
                evict(&path);
                return Ok(ActionLookup::Miss);
            }
        };
        if record.blobs().all(|d| self.contains_blob(d)) {
            Ok(ActionLookup::Hit(record))
        } else {
            Ok(ActionLookup::Miss)
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

/// The MAC of a record body stored under `eff_key`.
fn mac(key: &RecordKey, eff_key: &Digest, body: &[u8]) -> Digest {
    let mut h = blake3::Hasher::new_keyed(&key.0);
    h.update(eff_key.as_bytes());
    h.update(body);
    h.finalize().into()
}

pub(crate) fn encode_record(
    eff_key: &Digest,
    record: &ActionRecord,
    key: Option<&RecordKey>,
) -> Result<Vec<u8>, serde_json::Error> {
    let body = serde_json::to_vec(record)?;
    let mut header = format!("{HEADER}{}", checksum(eff_key, &body));
    if let Some(key) = key {
        header.push_str(&format!(" {MAC_FIELD}{}", mac(key, eff_key, &body)));
    }
    let mut out = format!("{header}\n").into_bytes();
    out.extend_from_slice(&body);
    Ok(out)
}

/// Decodes and checks a record stored under `eff_key`, and with `key`
/// that its MAC verifies under it; the error says why it is unusable. The
/// checksum comes first, so a damaged record is corrupt whatever the key;
/// the MAC is checked before the body is parsed, so nothing a forger wrote
/// is looked at under a key.
pub(crate) fn decode_record(
    eff_key: &Digest,
    bytes: &[u8],
    key: Option<&RecordKey>,
) -> Result<ActionRecord, Unusable> {
    let corrupt = |why: String| Unusable::Corrupt(why);
    let nl = bytes
        .iter()
        .position(|&b| b == b'\n')
        .ok_or_else(|| corrupt("no header line".into()))?;
    let header =
        std::str::from_utf8(&bytes[..nl]).map_err(|_| corrupt("header is not UTF-8".into()))?;
    let fields = header
        .strip_prefix(HEADER)
        .ok_or_else(|| corrupt(format!("unknown header {header:?}")))?;
    let (sum, stored_mac) = match fields.split_once(' ') {
        None => (fields, None),
        Some((sum, field)) => {
            let hex = field
                .strip_prefix(MAC_FIELD)
                .ok_or_else(|| corrupt(format!("unknown header field {field:?}")))?;
            let stored =
                Digest::from_hex(hex).map_err(|e| corrupt(format!("bad MAC field: {e}")))?;
            (sum, Some(stored))
        }
    };
    let sum = Digest::from_hex(sum).map_err(|e| corrupt(format!("bad checksum field: {e}")))?;
    let body = &bytes[nl + 1..];
    if checksum(eff_key, body) != sum {
        return Err(corrupt("checksum mismatch".into()));
    }
    if let Some(key) = key {
        // blake3's `Hash` compares in constant time.
        let expected = blake3::Hash::from(*mac(key, eff_key, body).as_bytes());
        if stored_mac.is_none_or(|stored| expected != blake3::Hash::from(*stored.as_bytes())) {
            return Err(Unusable::Unauthenticated);
        }
    }
    let record: ActionRecord =
        serde_json::from_slice(body).map_err(|e| corrupt(format!("undecodable body: {e}")))?;
    check_manifest(&record.outputs).map_err(corrupt)?;
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

    fn keyed(dir: &std::path::Path, secret: &[u8]) -> Store {
        store_at(dir, "").with_record_key(Some(RecordKey::derive(secret)))
    }

    #[test]
    fn a_record_key_takes_only_records_it_authenticated() {
        let dir = tempfile::tempdir().unwrap();
        let key = Digest::of(b"k");
        let plain = store_at(dir.path(), "");
        let ours = keyed(dir.path(), b"our secret");
        let theirs = keyed(dir.path(), b"their secret");
        let rec = record(&plain);

        // A record without a MAC (a forged one, or one from before keys)
        // is not used under a key, and is left in place.
        plain.put_action(&key, &rec).unwrap();
        assert_eq!(
            ours.find_action(&key).unwrap(),
            ActionLookup::Unauthenticated
        );
        assert_eq!(ours.get_action(&key).unwrap(), None);
        assert!(record_path(&plain, &key).exists());

        // Another key's record neither.
        theirs.put_action(&key, &rec).unwrap();
        assert_eq!(
            ours.find_action(&key).unwrap(),
            ActionLookup::Unauthenticated
        );
        assert_eq!(
            theirs.find_action(&key).unwrap(),
            ActionLookup::Hit(rec.clone())
        );
        // Without a key, a keyed record reads as any other.
        assert_eq!(plain.get_action(&key).unwrap(), Some(rec.clone()));

        // Its own key's record is a hit.
        ours.put_action(&key, &rec).unwrap();
        assert_eq!(
            ours.find_action(&key).unwrap(),
            ActionLookup::Hit(rec.clone())
        );

        // A MAC copied onto another body, or edited, does not verify.
        let path = record_path(&ours, &key);
        let bytes = fs::read(&path).unwrap();
        let text = String::from_utf8(bytes.clone()).unwrap();
        let (header, _) = text.split_once('\n').unwrap();
        let mac = header.split_once(" mac=").unwrap().1;
        let mut forged = rec.clone();
        forged.exit_status = 7;
        let forged_bytes = encode_record(&ours.action_key(&key), &forged, None).unwrap();
        let forged_text = String::from_utf8(forged_bytes).unwrap();
        let (forged_header, forged_body) = forged_text.split_once('\n').unwrap();
        corrupt(
            &path,
            format!("{forged_header} mac={mac}\n{forged_body}").as_bytes(),
        );
        assert_eq!(
            ours.find_action(&key).unwrap(),
            ActionLookup::Unauthenticated
        );

        // A damaged keyed record is corrupt, whatever the key: evicted.
        ours.put_action(&key, &rec).unwrap();
        let mut damaged = fs::read(&path).unwrap();
        *damaged.last_mut().unwrap() = b'x';
        corrupt(&path, &damaged);
        assert_eq!(ours.find_action(&key).unwrap(), ActionLookup::Miss);
        assert!(!path.exists());
    }

    #[test]
    fn a_keyed_record_moved_to_another_key_is_a_miss() {
        let dir = tempfile::tempdir().unwrap();
        let ours = keyed(dir.path(), b"secret");
        let (a, b) = (Digest::of(b"a"), Digest::of(b"b"));
        ours.put_action(&a, &record(&ours)).unwrap();
        fs::copy(record_path(&ours, &a), record_path(&ours, &b)).unwrap();
        assert_eq!(ours.find_action(&b).unwrap(), ActionLookup::Miss);
    }

    #[test]
    fn a_record_key_never_shows_in_debug_output() {
        let store = keyed(tempfile::tempdir().unwrap().path(), b"secret");
        let shown = format!("{store:?}");
        assert!(shown.contains("record_key: Some(RecordKey(..))"), "{shown}");
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
