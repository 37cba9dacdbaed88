//! Blobs: file contents stored under their blake3 digest, verified on read.

use std::fs::{self, File, Permissions};
use std::io::{self, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use tempfile::NamedTempFile;

use crate::{temp_in, Digest, Error, Result, Store};

/// Blobs are never modified in place; read-only guards against accidents.
pub(crate) const BLOB_MODE: u32 = 0o444;
const BUF_SIZE: usize = 64 * 1024;

impl Store {
    /// Stores `data` and returns its digest. Idempotent: if a valid copy is
    /// already present it is only touched (for LRU). Concurrent writers of
    /// the same blob all succeed.
    pub fn put_blob(&self, data: &[u8]) -> Result<Digest> {
        let digest = Digest::of(data);
        let path = self.blob_path(&digest);
        // A present, valid copy is kept; a corrupt one is evicted and rewritten.
        if self.copy_verified(&digest, &mut io::sink(), &path)? {
            return Ok(digest);
        }
        let dir = parent(&path);
        fs::create_dir_all(dir).map_err(Error::at(dir))?;
        let mut tmp = temp_in(dir)?;
        tmp.write_all(data).map_err(Error::at(tmp.path()))?;
        seal(tmp, &path, BLOB_MODE)?;
        Ok(digest)
    }

    /// Stores the contents of the file at `path`, streaming (the file is
    /// read once, hashed while it is copied), and returns its digest.
    pub fn put_file(&self, path: &Path) -> Result<Digest> {
        let mut src = File::open(path).map_err(Error::at(path))?;
        let mut tmp = temp_in(&self.tmp_dir())?;
        let tmp_path = tmp.path().to_path_buf();
        let digest = copy_hashing(&mut src, path, tmp.as_file_mut(), &tmp_path)?;
        let dest = self.blob_path(&digest);
        let dir = parent(&dest);
        fs::create_dir_all(dir).map_err(Error::at(dir))?;
        seal(tmp, &dest, BLOB_MODE)?;
        Ok(digest)
    }

    /// The blob's bytes, re-hashed on this read. `Ok(None)` if it is absent
    /// or its content does not match its digest (the entry is then evicted).
    pub fn get_blob(&self, digest: &Digest) -> Result<Option<Vec<u8>>> {
        let mut buf = Vec::new();
        let path = self.blob_path(digest);
        Ok(self.copy_verified(digest, &mut buf, &path)?.then_some(buf))
    }

    /// Whether a blob file exists, without verifying it.
    pub fn contains_blob(&self, digest: &Digest) -> bool {
        self.blob_path(digest).is_file()
    }

    /// Copies the blob to `dest` with permission bits `mode`, verifying its
    /// hash on the way: the bytes go to a temporary file in `dest`'s
    /// directory, which gets `mode` and is then renamed over `dest`. Returns
    /// `Ok(false)` on a miss (absent or corrupt blob, which is evicted); then
    /// `dest` is untouched. `dest`'s parent directory must exist.
    pub fn restore_blob_to(&self, digest: &Digest, dest: &Path, mode: u32) -> Result<bool> {
        if !self.contains_blob(digest) {
            return Ok(false);
        }
        let mut tmp = temp_in(parent(dest))?;
        let tmp_path = tmp.path().to_path_buf();
        if !self.copy_verified(digest, tmp.as_file_mut(), &tmp_path)? {
            return Ok(false); // `tmp` is removed on drop.
        }
        seal(tmp, dest, mode)?;
        Ok(true)
    }

    /// Marks a blob as recently used for [`Store::gc`]; best effort (a
    /// read-only shared store cannot be touched).
    pub(crate) fn touch_blob(&self, digest: &Digest) {
        if let Ok(file) = File::open(self.blob_path(digest)) {
            let _ = file.set_modified(SystemTime::now());
        }
    }

    pub(crate) fn blob_path(&self, digest: &Digest) -> PathBuf {
        let hex = digest.to_hex();
        self.blobs_dir().join(&hex[..2]).join(hex)
    }

    /// Streams the blob into `dst` while hashing it. `Ok(false)` if the blob
    /// is absent or does not match `digest` (then it is evicted; whatever was
    /// written to `dst` must be discarded by the caller). On a match the blob
    /// is touched so that [`Store::gc`] sees it as recently used.
    pub(crate) fn copy_verified<W: Write>(
        &self,
        digest: &Digest,
        dst: &mut W,
        dst_path: &Path,
    ) -> Result<bool> {
        let path = self.blob_path(digest);
        let mut file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(Error::io(path, e)),
        };
        if copy_hashing(&mut file, &path, dst, dst_path)? != *digest {
            evict(&path);
            return Ok(false);
        }
        // LRU touch; best effort (a read-only shared store cannot be touched).
        let _ = file.set_modified(SystemTime::now());
        Ok(true)
    }
}

/// Removes a corrupt entry. Best effort: a miss is reported either way, and
/// the file may already be gone (another reader evicted it).
pub(crate) fn evict(path: &Path) {
    let _ = fs::remove_file(path);
}

/// Copies `src` to `dst`, returning the blake3 digest of what was copied.
pub(crate) fn copy_hashing<R: Read, W: Write>(
    src: &mut R,
    src_path: &Path,
    dst: &mut W,
    dst_path: &Path,
) -> Result<Digest> {
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; BUF_SIZE];
    loop {
        let n = match src.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Error::io(src_path, e)),
        };
        hasher.update(&buf[..n]);
        dst.write_all(&buf[..n]).map_err(Error::at(dst_path))?;
    }
    dst.flush().map_err(Error::at(dst_path))?;
    Ok(hasher.finalize().into())
}

/// Gives a finished temporary file its mode and renames it to `dest`.
pub(crate) fn seal(tmp: NamedTempFile, dest: &Path, mode: u32) -> Result<()> {
    tmp.as_file()
        .set_permissions(Permissions::from_mode(mode))
        .map_err(Error::at(tmp.path()))?;
    tmp.persist(dest).map_err(|e| Error::io(dest, e.error))?;
    Ok(())
}

/// The directory a path lives in (`.` for a bare file name).
pub(crate) fn parent(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::corrupt;
    use std::sync::Barrier;

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        (dir, store)
    }

    #[test]
    fn round_trip() {
        let (_dir, store) = store();
        let d = store.put_blob(b"hello").unwrap();
        assert_eq!(d, Digest::of(b"hello"));
        assert_eq!(store.get_blob(&d).unwrap().as_deref(), Some(&b"hello"[..]));
        let hex = d.to_hex();
        let path = store.path().join("blobs").join(&hex[..2]).join(&hex);
        assert!(path.is_file());
        // Idempotent.
        assert_eq!(store.put_blob(b"hello").unwrap(), d);
        assert_eq!(store.get_blob(&Digest::of(b"other")).unwrap(), None);
    }

    #[test]
    fn empty_blob_round_trips() {
        let (_dir, store) = store();
        let d = store.put_blob(b"").unwrap();
        assert_eq!(store.get_blob(&d).unwrap(), Some(Vec::new()));
    }

    #[test]
    fn put_file_streams_and_matches_put_blob() {
        let (dir, store) = store();
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let src = dir.path().join("src.bin");
        fs::write(&src, &data).unwrap();
        let d = store.put_file(&src).unwrap();
        assert_eq!(d, Digest::of(&data));
        assert_eq!(store.get_blob(&d).unwrap(), Some(data));
        // Nothing left behind in tmp/.
        assert_eq!(fs::read_dir(store.tmp_dir()).unwrap().count(), 0);
    }

    #[test]
    fn put_file_missing_source_names_it() {
        let (dir, store) = store();
        let missing = dir.path().join("nope");
        let err = store.put_file(&missing).unwrap_err();
        assert_eq!(err.path, missing);
    }

    #[test]
    fn corrupted_blob_is_a_miss_and_evicted() {
        let (_dir, store) = store();
        let d = store.put_blob(b"precious").unwrap();
        let path = store.blob_path(&d);
        corrupt(&path, b"precioux");
        assert_eq!(store.get_blob(&d).unwrap(), None);
        assert!(!path.exists(), "corrupt blob must be evicted");
        // A later put heals it.
        store.put_blob(b"precious").unwrap();
        assert!(store.get_blob(&d).unwrap().is_some());
    }

    #[test]
    fn put_blob_rewrites_a_corrupt_copy() {
        let (_dir, store) = store();
        let d = store.put_blob(b"content").unwrap();
        corrupt(&store.blob_path(&d), b"");
        assert_eq!(store.put_blob(b"content").unwrap(), d);
        assert_eq!(
            store.get_blob(&d).unwrap().as_deref(),
            Some(&b"content"[..])
        );
    }

    #[test]
    fn concurrent_puts_of_the_same_blob_both_succeed() {
        let (_dir, store) = store();
        let data: Vec<u8> = (0..2_000_000u32).map(|i| (i * 7) as u8).collect();
        let barrier = Barrier::new(2);
        let digests: Vec<Digest> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..2)
                .map(|_| {
                    s.spawn(|| {
                        barrier.wait();
                        let mut last = None;
                        for _ in 0..5 {
                            last = Some(store.put_blob(&data).unwrap());
                        }
                        last.unwrap()
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert_eq!(digests[0], digests[1]);
        assert_eq!(store.get_blob(&digests[0]).unwrap(), Some(data));
        let shard = parent(&store.blob_path(&digests[0])).to_path_buf();
        assert_eq!(
            fs::read_dir(shard).unwrap().count(),
            1,
            "no temp files left"
        );
    }

    #[test]
    fn restore_blob_to_sets_mode_and_replaces() {
        let (dir, store) = store();
        let d = store.put_blob(b"#!/bin/sh\n").unwrap();
        let dest = dir.path().join("tool.sh");
        fs::write(&dest, b"old").unwrap();
        assert!(store.restore_blob_to(&d, &dest, 0o750).unwrap());
        assert_eq!(fs::read(&dest).unwrap(), b"#!/bin/sh\n");
        let mode = fs::metadata(&dest).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o750);
    }

    #[test]
    fn restore_blob_to_miss_leaves_dest_alone() {
        let (dir, store) = store();
        let out = dir.path().join("out");
        fs::create_dir(&out).unwrap();
        let dest = out.join("file");
        // Absent blob.
        assert!(!store
            .restore_blob_to(&Digest::of(b"x"), &dest, 0o644)
            .unwrap());
        assert!(!dest.exists());
        // Corrupt blob: the old destination survives and no temp is left.
        fs::write(&dest, b"old").unwrap();
        let d = store.put_blob(b"new").unwrap();
        corrupt(&store.blob_path(&d), b"bad");
        assert!(!store.restore_blob_to(&d, &dest, 0o644).unwrap());
        assert_eq!(fs::read(&dest).unwrap(), b"old");
        assert_eq!(fs::read_dir(&out).unwrap().count(), 1);
        assert!(!store.contains_blob(&d));
    }
}
