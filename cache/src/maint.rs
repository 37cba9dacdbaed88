//! Maintenance: statistics, full verification and size-bounded eviction.

use std::fmt;
use std::fs::{self, File, Metadata};
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::action::{decode_record, Unusable};
use crate::blob::copy_hashing;
use crate::{Digest, Error, Result, Store, TEMP_PREFIX};

/// Temporary files older than this are leftovers of a crashed writer.
const STALE_TEMP: Duration = Duration::from_secs(3600);

/// What the store holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Number of blobs.
    pub blobs: u64,
    /// Number of action records (under any salt).
    pub actions: u64,
    /// Bytes of all blobs and action records.
    pub bytes: u64,
}

/// What [`Store::gc`] removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GcReport {
    /// Blobs evicted.
    pub blobs_removed: u64,
    /// Action records dropped (dangling or corrupt).
    pub actions_removed: u64,
    /// Stale temporary files of crashed writers removed.
    pub temps_removed: u64,
    /// Bytes of the blobs and records removed.
    pub bytes_freed: u64,
}

/// One problem found by [`Store::verify`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Corruption {
    /// The offending file.
    pub path: PathBuf,
    /// What is wrong with it.
    pub problem: Problem,
}

/// What is wrong with a store file.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Problem {
    /// A blob's content does not hash to its name.
    HashMismatch {
        /// The digest the file name claims.
        expected: Digest,
        /// The digest of the content.
        actual: Digest,
    },
    /// A file whose name is not a digest where one is expected.
    BadName,
    /// The file could not be read.
    Unreadable(String),
    /// An action record that does not decode or fails its checksum.
    BadRecord(String),
    /// An action record references a blob that is not in the store.
    MissingBlob(Digest),
    /// An intact action record whose MAC does not verify under the store's
    /// record key ([`Store::with_record_key`]): a read with that key treats
    /// it as a miss.
    Unauthenticated,
}

impl fmt::Display for Corruption {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path.display(), self.problem)
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::HashMismatch { expected, actual } => {
                write!(f, "content hashes to {actual}, expected {expected}")
            }
            Problem::BadName => f.write_str("not a store entry name"),
            Problem::Unreadable(e) => write!(f, "unreadable: {e}"),
            Problem::BadRecord(why) => write!(f, "bad action record: {why}"),
            Problem::MissingBlob(d) => write!(f, "references missing blob {d}"),
            Problem::Unauthenticated => {
                f.write_str("action record not authenticated by the record key")
            }
        }
    }
}

/// A file found while listing the store.
pub(crate) struct Entry {
    pub(crate) path: PathBuf,
    /// The digest its name spells, if it is a valid name at this place.
    pub(crate) digest: Option<Digest>,
    len: u64,
    mtime: SystemTime,
}

/// Files of one store directory, sorted into entries and temporaries.
#[derive(Default)]
pub(crate) struct Listing {
    pub(crate) entries: Vec<Entry>,
    temps: Vec<(PathBuf, Metadata)>,
}

/// Lists `dir` (absent is empty). Names starting with `.` other than
/// temporaries are ignored; entries that vanish while listing are skipped.
fn list(dir: &Path, shard: Option<&str>, out: &mut Listing) -> Result<()> {
    let rd = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io(dir, e)),
    };
    for ent in rd {
        let ent = ent.map_err(Error::at(dir))?;
        let path = ent.path();
        let md = match fs::symlink_metadata(&path) {
            Ok(md) => md,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(Error::io(path, e)),
        };
        let name = ent.file_name();
        let name = name.to_string_lossy();
        if name.starts_with(TEMP_PREFIX) {
            out.temps.push((path, md));
            continue;
        }
        if name.starts_with('.') {
            continue;
        }
        let digest = Digest::from_hex(&name)
            .ok()
            .filter(|_| md.is_file() && shard.is_none_or(|s| name.starts_with(s)));
        out.entries.push(Entry {
            path,
            digest,
            len: md.len(),
            mtime: md.modified().unwrap_or(SystemTime::UNIX_EPOCH),
        });
    }
    Ok(())
}

impl Store {
    /// Lists blobs (and the stray files among them) and their temporaries.
    pub(crate) fn list_blobs(&self) -> Result<Listing> {
        let mut shards = Listing::default();
        list(&self.blobs_dir(), None, &mut shards)?;
        let mut out = Listing {
            entries: Vec::new(),
            temps: shards.temps,
        };
        for shard in shards.entries {
            let name = shard.path.file_name().unwrap_or_default().to_string_lossy();
            let is_shard = name.len() == 2 && name.bytes().all(|b| b.is_ascii_hexdigit());
            if is_shard && shard.path.is_dir() {
                let name = name.into_owned();
                list(&shard.path, Some(&name), &mut out)?;
            } else {
                out.entries.push(Entry {
                    digest: None,
                    ..shard
                });
            }
        }
        Ok(out)
    }

    /// Lists action records (of every salt) and their temporaries.
    pub(crate) fn list_actions(&self) -> Result<Listing> {
        let mut out = Listing::default();
        list(&self.actions_dir(), None, &mut out)?;
        Ok(out)
    }

    /// Counts blobs and records and their bytes (valid names only; nothing
    /// is re-hashed).
    pub fn stats(&self) -> Result<Stats> {
        let mut s = Stats::default();
        for e in self
            .list_blobs()?
            .entries
            .iter()
            .filter(|e| e.digest.is_some())
        {
            s.blobs += 1;
            s.bytes += e.len;
        }
        for e in self
            .list_actions()?
            .entries
            .iter()
            .filter(|e| e.digest.is_some())
        {
            s.actions += 1;
            s.bytes += e.len;
        }
        Ok(s)
    }

    /// Re-hashes every blob and checks every action record (of any salt):
    /// checksum, decoding, its MAC when the store has a record key, and
    /// that its blobs exist. Reports problems; it
    /// does not repair (a corrupt entry is evicted on its next read, a
    /// dangling record by [`Store::gc`]).
    pub fn verify(&self) -> Result<Vec<Corruption>> {
        let mut found = Vec::new();
        let mut report = |path: &Path, problem| {
            found.push(Corruption {
                path: path.to_path_buf(),
                problem,
            })
        };
        for e in self.list_blobs()?.entries {
            let Some(expected) = e.digest else {
                report(&e.path, Problem::BadName);
                continue;
            };
            let actual = File::open(&e.path)
                .map_err(|err| Error::io(&e.path, err))
                .and_then(|mut f| copy_hashing(&mut f, &e.path, &mut io::sink(), &e.path));
            match actual {
                Ok(actual) if actual == expected => {}
                Ok(actual) => report(&e.path, Problem::HashMismatch { expected, actual }),
                Err(err) => report(&e.path, Problem::Unreadable(err.kind.to_string())),
            }
        }
        for e in self.list_actions()?.entries {
            let Some(key) = e.digest else {
                report(&e.path, Problem::BadName);
                continue;
            };
            let record = match fs::read(&e.path) {
                Ok(bytes) => decode_record(&key, &bytes, self.record_key.as_ref()),
                Err(err) => {
                    report(&e.path, Problem::Unreadable(err.to_string()));
                    continue;
                }
            };
            match record {
                Ok(r) => {
                    for d in r.blobs().filter(|d| !self.contains_blob(d)) {
                        report(&e.path, Problem::MissingBlob(*d));
                    }
                }
                Err(Unusable::Corrupt(why)) => report(&e.path, Problem::BadRecord(why)),
                Err(Unusable::Unauthenticated) => report(&e.path, Problem::Unauthenticated),
            }
        }
        Ok(found)
    }

    /// Shrinks the store to at most `max_bytes` (as counted by
    /// [`Store::stats`]): removes temporaries of crashed writers, evicts the
    /// least recently used blobs (oldest modification time first) until
    /// the store fits, then drops every action record that is corrupt or
    /// references a blob that is gone. Blobs are not re-hashed (use
    /// [`Store::verify`] for that).
    pub fn gc(&self, max_bytes: u64) -> Result<GcReport> {
        let mut report = GcReport::default();
        let blobs = self.list_blobs()?;
        let actions = self.list_actions()?;
        let mut tmp = Listing::default();
        list(&self.tmp_dir(), None, &mut tmp)?;
        let now = SystemTime::now();
        let stale = |md: &Metadata| {
            md.modified()
                .ok()
                .and_then(|m| now.duration_since(m).ok())
                .is_some_and(|age| age > STALE_TEMP)
        };
        for (path, md) in blobs.temps.iter().chain(&actions.temps).chain(&tmp.temps) {
            if stale(md) {
                let removed = if md.is_dir() {
                    fs::remove_dir_all(path)
                } else {
                    fs::remove_file(path)
                };
                if removed.is_ok() {
                    report.temps_removed += 1;
                }
            }
        }

        let mut live: Vec<&Entry> = blobs
            .entries
            .iter()
            .filter(|e| e.digest.is_some())
            .collect();
        let records: Vec<&Entry> = actions
            .entries
            .iter()
            .filter(|e| e.digest.is_some())
            .collect();
        let mut total: u64 = live.iter().chain(&records).map(|e| e.len).sum();
        live.sort_by_key(|e| (e.mtime, e.digest));
        for e in live {
            if total <= max_bytes {
                break;
            }
            match fs::remove_file(&e.path) {
                Ok(()) => {
                    report.blobs_removed += 1;
                    report.bytes_freed += e.len;
                }
                Err(err) if err.kind() == io::ErrorKind::NotFound => {}
                Err(err) => return Err(Error::io(&e.path, err)),
            }
            total -= e.len;
        }

        for e in records {
            let Some(key) = e.digest else { continue };
            let keep = match fs::read(&e.path) {
                Ok(bytes) => decode_record(&key, &bytes, None)
                    .is_ok_and(|r| r.blobs().all(|d| self.contains_blob(d))),
                Err(err) if err.kind() == io::ErrorKind::NotFound => continue,
                Err(err) => return Err(Error::io(&e.path, err)),
            };
            if !keep {
                match fs::remove_file(&e.path) {
                    Ok(()) => {
                        report.actions_removed += 1;
                        report.bytes_freed += e.len;
                    }
                    Err(err) if err.kind() == io::ErrorKind::NotFound => {}
                    Err(err) => return Err(Error::io(&e.path, err)),
                }
            }
        }
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::corrupt;
    use crate::{ActionRecord, OutputEntry, OutputKind};

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        (dir, store)
    }

    fn file_record(d: Digest) -> ActionRecord {
        ActionRecord {
            outputs: vec![OutputEntry {
                path: "f".into(),
                kind: OutputKind::File {
                    digest: d,
                    mode: 0o644,
                },
            }],
            exit_status: 0,
            tool_version: "t".into(),
            bound_to: Vec::new(),
        }
    }

    fn set_age(path: &Path, secs_ago: u64) {
        let t = SystemTime::now() - Duration::from_secs(secs_ago);
        File::open(path).unwrap().set_modified(t).unwrap();
    }

    #[test]
    fn stats_counts_blobs_actions_and_bytes() {
        let (_dir, store) = store();
        assert_eq!(store.stats().unwrap(), Stats::default());
        let d = store.put_blob(b"12345").unwrap();
        store.put_blob(b"abc").unwrap();
        store
            .put_action(&Digest::of(b"k"), &file_record(d))
            .unwrap();
        let rec_len = fs::metadata(
            store
                .actions_dir()
                .join(store.action_key(&Digest::of(b"k")).to_hex()),
        )
        .unwrap()
        .len();
        let s = store.stats().unwrap();
        assert_eq!((s.blobs, s.actions, s.bytes), (2, 1, 8 + rec_len));
    }

    #[test]
    fn verify_clean_store_reports_nothing() {
        let (_dir, store) = store();
        let d = store.put_blob(b"ok").unwrap();
        store
            .put_action(&Digest::of(b"k"), &file_record(d))
            .unwrap();
        assert_eq!(store.verify().unwrap(), []);
    }

    #[test]
    fn verify_reports_corrupted_blob_and_bad_records() {
        let (_dir, store) = store();
        let good = store.put_blob(b"good").unwrap();
        let bad = store.put_blob(b"bad").unwrap();
        corrupt(&store.blob_path(&bad), b"BAD");
        let gone = store.put_blob(b"gone").unwrap();
        store
            .put_action(&Digest::of(b"k1"), &file_record(gone))
            .unwrap();
        fs::remove_file(store.blob_path(&gone)).unwrap();
        store
            .put_action(&Digest::of(b"k2"), &file_record(good))
            .unwrap();
        let rec2 = store
            .actions_dir()
            .join(store.action_key(&Digest::of(b"k2")).to_hex());
        corrupt(&rec2, b"garbage");
        fs::write(store.blobs_dir().join("zz"), b"stray").unwrap();

        let found = store.verify().unwrap();
        assert_eq!(found.len(), 4, "{found:#?}");
        assert!(found.contains(&Corruption {
            path: store.blob_path(&bad),
            problem: Problem::HashMismatch {
                expected: bad,
                actual: Digest::of(b"BAD")
            },
        }));
        assert!(found
            .iter()
            .any(|c| c.problem == Problem::MissingBlob(gone)));
        assert!(found
            .iter()
            .any(|c| c.path == rec2 && matches!(c.problem, Problem::BadRecord(_))));
        assert!(found
            .iter()
            .any(|c| c.path == store.blobs_dir().join("zz") && c.problem == Problem::BadName));
        // verify only reports.
        assert!(store.blob_path(&bad).exists());
        let line = found[0].to_string();
        assert!(
            line.starts_with(&store.path().display().to_string()),
            "{line}"
        );
    }

    #[test]
    fn verify_with_a_record_key_reports_unauthenticated_records() {
        let (dir, store) = store();
        let d = store.put_blob(b"ok").unwrap();
        store
            .put_action(&Digest::of(b"k"), &file_record(d))
            .unwrap();
        let keyed = Store::open(dir.path())
            .unwrap()
            .with_record_key(Some(crate::RecordKey::derive(b"secret")));
        let found = keyed.verify().unwrap();
        assert_eq!(found.len(), 1, "{found:#?}");
        assert_eq!(found[0].problem, Problem::Unauthenticated);
        // Without the key the same record verifies; gc keeps it either way.
        assert_eq!(store.verify().unwrap(), []);
        assert_eq!(keyed.gc(u64::MAX).unwrap(), GcReport::default());
        keyed
            .put_action(&Digest::of(b"k"), &file_record(d))
            .unwrap();
        assert_eq!(keyed.verify().unwrap(), []);
    }

    #[test]
    fn gc_shrinks_under_the_limit_evicting_oldest_first() {
        let (_dir, store) = store();
        let blobs: Vec<Digest> = (0..5u8)
            .map(|i| store.put_blob(&[i; 1000]).unwrap())
            .collect();
        // blobs[0] oldest ... blobs[4] newest.
        for (i, d) in blobs.iter().enumerate() {
            set_age(&store.blob_path(d), 1000 - i as u64 * 100);
        }
        let old_key = Digest::of(b"old");
        let new_key = Digest::of(b"new");
        store.put_action(&old_key, &file_record(blobs[0])).unwrap();
        store.put_action(&new_key, &file_record(blobs[4])).unwrap();
        let before = store.stats().unwrap();
        assert!(before.bytes > 5000);

        let report = store.gc(2800).unwrap();
        let after = store.stats().unwrap();
        assert!(after.bytes <= 2800, "{after:?}");
        assert_eq!(report.blobs_removed, 3);
        assert_eq!(report.actions_removed, 1);
        assert_eq!(report.bytes_freed, before.bytes - after.bytes);
        assert!(!store.contains_blob(&blobs[0]));
        assert!(store.contains_blob(&blobs[3]) && store.contains_blob(&blobs[4]));
        assert_eq!(store.get_action(&old_key).unwrap(), None);
        assert!(store.get_action(&new_key).unwrap().is_some());
        // Under the limit, gc removes nothing.
        assert_eq!(store.gc(u64::MAX).unwrap(), GcReport::default());
    }

    #[test]
    fn reading_a_blob_protects_it_from_gc() {
        let (_dir, store) = store();
        let a = store.put_blob(&[1; 1000]).unwrap();
        let b = store.put_blob(&[2; 1000]).unwrap();
        set_age(&store.blob_path(&a), 500);
        set_age(&store.blob_path(&b), 100);
        assert!(store.get_blob(&a).unwrap().is_some()); // touches a
        store.gc(1500).unwrap();
        assert!(store.contains_blob(&a));
        assert!(!store.contains_blob(&b));
    }

    #[test]
    fn gc_removes_stale_temporaries_only() {
        let (_dir, store) = store();
        let stale = store.tmp_dir().join(".tmp-stale");
        let fresh = store.tmp_dir().join(".tmp-fresh");
        fs::write(&stale, b"x").unwrap();
        fs::write(&fresh, b"x").unwrap();
        set_age(&stale, 2 * 3600);
        let report = store.gc(u64::MAX).unwrap();
        assert_eq!(report.temps_removed, 1);
        assert!(!stale.exists() && fresh.exists());
    }
}
