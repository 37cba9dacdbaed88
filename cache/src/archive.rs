//! Archives: a whole store in one file, to seed, move or back up a cache.
//!
//! [`Store::export`] writes every valid blob and action record of the
//! store's schema directory into one file; [`Store::import`] adds the
//! entries of such a file to a store. The format is streaming (no index,
//! entries are written and read in one pass), versioned and
//! self-describing:
//!
//! ```text
//! tack-cache-archive v1\n
//! blob <digest-hex> <len>\n<len bytes>        all blobs first, sorted by name
//! action <record-name-hex> <len>\n<len bytes> then all records, sorted by name
//! end <number of entries>\n
//! blake3 <hex>\n                              blake3 of every byte before this line
//! ```
//!
//! Names are 64 lowercase hex digits: a blob's digest, or a record's file
//! name in `actions/` (the salted key), so no name can point outside the
//! store. Lengths are decimal. A record's bytes are the record file as
//! stored (header line and JSON body, see the `action` module). Another
//! version or an unknown entry kind is refused; a format change gets a new
//! version.
//!
//! The trailer checksum is unkeyed: it detects truncation and damage, not
//! deliberate forgery. Trust comes from verifying each entry the way the
//! store always does: blobs are re-hashed against their names, records are
//! checked against their checksums and manifests, on export and on import.
//! Those checks are public too: a store with a record key
//! ([`Store::with_record_key`]) imports only records whose MAC verifies
//! under it, so an archive someone else made cannot carry a forged record
//! into it.
//!
//! # Salt
//!
//! Records are archived under their salted file names (with the records of
//! every salt in the store), and imported under the same names. So an
//! archive moves records between stores opened with the same salt; a store
//! opened with another salt imports them but never finds them (blobs are
//! shared by every salt, as in a store).

use std::collections::HashSet;
use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::action::{decode_record, Unusable, RECORD_MODE};
use crate::blob::{copy_hashing, parent, seal, BLOB_MODE};
use crate::maint::Listing;
use crate::{temp_in, Digest, Error, Result, Store};

const MAGIC: &str = "tack-cache-archive v1";
/// Longest header, entry or trailer line, newline included.
const MAX_LINE: u64 = 128;
/// Records larger than this are refused on import rather than read into memory.
const MAX_RECORD: u64 = 64 << 20;
const BUF_SIZE: usize = 64 * 1024;
const ARCHIVE_MODE: u32 = 0o600;

/// What [`Store::export`] wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExportReport {
    /// Blobs written to the archive.
    pub blobs: u64,
    /// Action records written to the archive.
    pub actions: u64,
    /// Entries left out because they failed verification: a blob whose
    /// content does not match its name, a record that does not decode or
    /// fails its checksum.
    pub skipped_corrupt: u64,
    /// Valid records left out because a blob they reference is not in the
    /// archive (missing or corrupt in the store).
    pub skipped_dangling: u64,
    /// Size of the archive file.
    pub bytes: u64,
}

/// What [`Store::import`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ImportReport {
    /// Blobs added to the store.
    pub blobs_added: u64,
    /// Action records added to the store (or replacing a corrupt one).
    pub actions_added: u64,
    /// Entries the store already had; they are kept as they are.
    pub already_present: u64,
    /// Entries not imported because they failed verification: a blob whose
    /// content does not match its name, a record that does not decode, fails
    /// its checksum or is larger than 64 MiB.
    pub skipped_corrupt: u64,
    /// Valid records not imported because a blob they reference is not in
    /// the store.
    pub skipped_dangling: u64,
    /// Intact records not imported because the store authenticates records
    /// ([`Store::with_record_key`]) and theirs does not verify.
    pub skipped_unauthenticated: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Blob,
    Action,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Blob => "blob",
            Kind::Action => "action",
        }
    }
}

/// What happened to one entry.
enum Outcome {
    Done,
    Present,
    Corrupt,
    Dangling,
    Unauthenticated,
}

impl Store {
    /// Writes every blob and action record (of every salt) of this store
    /// into the archive `file` (format in the module documentation),
    /// replacing it atomically: the archive is written to a temporary file
    /// next to `file` and renamed over it. Blobs are re-hashed and records
    /// checked first; a corrupt entry, or a record whose blobs are not
    /// exported, is left out and counted (the store itself is not changed).
    ///
    /// `progress(done, total)` is called with `(0, total)` first, then after
    /// each entry examined, last with `(total, total)`.
    pub fn export(&self, file: &Path, progress: &dyn Fn(u64, u64)) -> Result<ExportReport> {
        let blobs = named(self.list_blobs()?);
        let actions = named(self.list_actions()?);
        let total = (blobs.len() + actions.len()) as u64;
        let mut report = ExportReport::default();
        let mut done = 0;
        progress(0, total);

        let tmp = temp_in(parent(file))?;
        let mut out = Out {
            w: BufWriter::with_capacity(BUF_SIZE, tmp.as_file()),
            hasher: blake3::Hasher::new(),
            len: 0,
            path: tmp.path(),
        };
        out.put(format!("{MAGIC}\n").as_bytes())?;
        let mut exported = HashSet::new();
        for (digest, path) in &blobs {
            match out.blob(digest, path)? {
                Outcome::Done => {
                    exported.insert(*digest);
                    report.blobs += 1;
                }
                Outcome::Corrupt => report.skipped_corrupt += 1,
                _ => {} // vanished since the listing
            }
            done += 1;
            progress(done, total);
        }
        for (key, path) in &actions {
            match fs::read(path) {
                Ok(bytes) => match decode_record(key, &bytes, None) {
                    Err(_) => report.skipped_corrupt += 1,
                    Ok(r) if !r.blobs().all(|d| exported.contains(d)) => {
                        report.skipped_dangling += 1
                    }
                    Ok(_) => {
                        out.header(Kind::Action, key, bytes.len() as u64)?;
                        out.put(&bytes)?;
                        report.actions += 1;
                    }
                },
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io(path, e)),
            }
            done += 1;
            progress(done, total);
        }
        out.put(format!("end {}\n", report.blobs + report.actions).as_bytes())?;
        let sum = out.hasher.finalize();
        out.put(format!("blake3 {sum}\n").as_bytes())?;
        out.w.flush().map_err(Error::at(out.path))?;
        report.bytes = out.len;
        drop(out);
        seal(tmp, file, ARCHIVE_MODE)?;
        Ok(report)
    }

    /// Adds the entries of the archive `file` (written by
    /// [`Store::export`]) to this store. The whole archive is checked first
    /// (format, entry count, trailer checksum): a truncated, damaged or
    /// foreign file is an [`ErrorKind::BadArchive`](crate::ErrorKind) error
    /// naming `file`, and nothing is imported. Then each entry is verified
    /// and written atomically, as the store always does: a blob whose bytes
    /// do not hash to its name, or a record that does not pass the checks of
    /// [`Store::get_action`] (checksum, manifest, its blobs present), is
    /// skipped and counted, and so is a record whose MAC does not verify
    /// when the store authenticates records. Entries the store already has
    /// (a blob file, a record that decodes) are kept, so importing twice is
    /// harmless.
    ///
    /// Records keep their salted names: see "Salt" in the module
    /// documentation. If `file` changes between the check and the import,
    /// every entry is still verified, but the error about the change may come
    /// after some entries were added.
    ///
    /// `progress(done, total)` is called with `(0, total)` once the archive
    /// is checked, then after each entry, last with `(total, total)`.
    pub fn import(&self, file: &Path, progress: &dyn Fn(u64, u64)) -> Result<ImportReport> {
        let total = read_archive(file, &mut |_, _, _| Ok(()))?;
        progress(0, total);
        let mut report = ImportReport::default();
        let mut done = 0;
        read_archive(file, &mut |kind, name, body| {
            let outcome = match kind {
                Kind::Blob => self.import_blob(name, body)?,
                Kind::Action => self.import_action(name, body)?,
            };
            match (outcome, kind) {
                (Outcome::Done, Kind::Blob) => report.blobs_added += 1,
                (Outcome::Done, Kind::Action) => report.actions_added += 1,
                (Outcome::Present, _) => report.already_present += 1,
                (Outcome::Corrupt, _) => report.skipped_corrupt += 1,
                (Outcome::Dangling, _) => report.skipped_dangling += 1,
                (Outcome::Unauthenticated, _) => report.skipped_unauthenticated += 1,
            }
            done += 1;
            progress(done, total);
            Ok(())
        })?;
        Ok(report)
    }

    fn import_blob(&self, digest: &Digest, body: &mut Body) -> Result<Outcome> {
        if self.contains_blob(digest) {
            return Ok(Outcome::Present); // the reader skips the body
        }
        let mut tmp = temp_in(&self.tmp_dir())?;
        let tmp_path = tmp.path().to_path_buf();
        let archive = body.inp.path;
        if copy_hashing(body, archive, tmp.as_file_mut(), &tmp_path)? != *digest {
            return Ok(Outcome::Corrupt); // `tmp` is removed on drop
        }
        let dest = self.blob_path(digest);
        let dir = parent(&dest);
        crate::private_dir(dir).map_err(Error::at(dir))?;
        seal(tmp, &dest, BLOB_MODE)?;
        Ok(Outcome::Done)
    }

    fn import_action(&self, key: &Digest, body: &mut Body) -> Result<Outcome> {
        let dest = self.actions_dir().join(key.to_hex());
        match fs::read(&dest) {
            Ok(old) if decode_record(key, &old, self.record_key.as_ref()).is_ok() => {
                return Ok(Outcome::Present)
            }
            Ok(_) => {} // corrupt: replaced below
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io(dest, e)),
        }
        if body.left > MAX_RECORD {
            return Ok(Outcome::Corrupt);
        }
        let mut bytes = Vec::new();
        let archive = body.inp.path;
        body.read_to_end(&mut bytes).map_err(Error::at(archive))?;
        match decode_record(key, &bytes, self.record_key.as_ref()) {
            Err(Unusable::Corrupt(_)) => return Ok(Outcome::Corrupt),
            Err(Unusable::Unauthenticated) => return Ok(Outcome::Unauthenticated),
            Ok(r) if !r.blobs().all(|d| self.contains_blob(d)) => return Ok(Outcome::Dangling),
            Ok(_) => {}
        }
        let mut tmp = temp_in(&self.actions_dir())?;
        tmp.write_all(&bytes).map_err(Error::at(tmp.path()))?;
        seal(tmp, &dest, RECORD_MODE)?;
        Ok(Outcome::Done)
    }
}

/// The entries of a listing whose names are digests, sorted by name.
fn named(listing: Listing) -> Vec<(Digest, PathBuf)> {
    let mut v: Vec<_> = listing
        .entries
        .into_iter()
        .filter_map(|e| Some((e.digest?, e.path)))
        .collect();
    v.sort();
    v
}

/// The archive being written: hashes everything that goes through it.
struct Out<'a> {
    w: BufWriter<&'a File>,
    hasher: blake3::Hasher,
    len: u64,
    path: &'a Path,
}

impl Write for Out<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.w.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.w.flush()
    }
}

impl Out<'_> {
    fn put(&mut self, bytes: &[u8]) -> Result<()> {
        let path = self.path;
        self.write_all(bytes).map_err(Error::at(path))
    }

    fn header(&mut self, kind: Kind, name: &Digest, len: u64) -> Result<()> {
        self.put(format!("{} {name} {len}\n", kind.as_str()).as_bytes())
    }

    /// Appends the blob at `path` if its content hashes to `digest`
    /// (`Done`); if not, takes back what was appended (`Corrupt`). `Present`
    /// if the file is gone.
    fn blob(&mut self, digest: &Digest, path: &Path) -> Result<Outcome> {
        let mut src = match File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Outcome::Present),
            Err(e) => return Err(Error::io(path, e)),
        };
        let len = src.metadata().map_err(Error::at(path))?.len();
        let (mark_hasher, mark_len) = (self.hasher.clone(), self.len);
        self.header(Kind::Blob, digest, len)?;
        let start = self.len;
        let out_path = self.path;
        let actual = copy_hashing(&mut (&mut src).take(len), path, self, out_path)?;
        if actual == *digest && self.len - start == len {
            return Ok(Outcome::Done);
        }
        self.w
            .seek(SeekFrom::Start(mark_len))
            .and_then(|_| self.w.get_ref().set_len(mark_len))
            .map_err(Error::at(out_path))?;
        self.hasher = mark_hasher;
        self.len = mark_len;
        Ok(Outcome::Corrupt)
    }
}

/// The archive being read: hashes every byte of the header and entries.
struct In<'a> {
    src: BufReader<File>,
    hasher: blake3::Hasher,
    path: &'a Path,
}

impl In<'_> {
    fn bad(&self, why: impl Into<String>) -> Error {
        Error::bad_archive(self.path, why)
    }

    /// One line without its newline; hashed if `hash`.
    fn line(&mut self, hash: bool) -> Result<String> {
        let mut buf = Vec::new();
        (&mut self.src)
            .take(MAX_LINE)
            .read_until(b'\n', &mut buf)
            .map_err(Error::at(self.path))?;
        if buf.pop() != Some(b'\n') {
            return Err(self.bad(if buf.len() as u64 + 1 >= MAX_LINE {
                "line too long"
            } else {
                "truncated: unexpected end of file"
            }));
        }
        if hash {
            self.hasher.update(&buf);
            self.hasher.update(b"\n");
        }
        String::from_utf8(buf).map_err(|_| self.bad("line is not UTF-8"))
    }
}

/// The body of one entry: reads at most its length, hashing what it reads.
struct Body<'a, 'p> {
    inp: &'a mut In<'p>,
    left: u64,
}

impl Read for Body<'_, '_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 || buf.is_empty() {
            return Ok(0);
        }
        let avail = self.inp.src.fill_buf()?;
        if avail.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "truncated: the archive ends inside an entry",
            ));
        }
        let n = (avail.len().min(buf.len()) as u64).min(self.left) as usize;
        buf[..n].copy_from_slice(&avail[..n]);
        self.inp.hasher.update(&avail[..n]);
        self.inp.src.consume(n);
        self.left -= n as u64;
        Ok(n)
    }
}

/// Parses `<kind> <name> <len>`.
fn parse_entry(line: &str) -> Option<(Kind, Digest, u64)> {
    let mut parts = line.split(' ');
    let kind = match parts.next()? {
        "blob" => Kind::Blob,
        "action" => Kind::Action,
        _ => return None,
    };
    let name = Digest::from_hex(parts.next()?).ok()?;
    let len = parse_u64(parts.next()?)?;
    parts.next().is_none().then_some((kind, name, len))
}

/// Decimal digits only (no sign, no spaces).
fn parse_u64(s: &str) -> Option<u64> {
    s.bytes()
        .all(|b| b.is_ascii_digit())
        .then(|| s.parse().ok())
        .flatten()
}

/// Reads the whole archive at `path`, handing each entry's body to `visit`
/// (what it does not read is skipped), and checks the framing, the entry
/// count and the trailer checksum. Returns the number of entries.
fn read_archive(
    path: &Path,
    visit: &mut dyn FnMut(Kind, &Digest, &mut Body) -> Result<()>,
) -> Result<u64> {
    let file = File::open(path).map_err(Error::at(path))?;
    let mut inp = In {
        src: BufReader::with_capacity(BUF_SIZE, file),
        hasher: blake3::Hasher::new(),
        path,
    };
    let magic = inp.line(true)?;
    if magic != MAGIC {
        return Err(inp.bad(match magic.strip_prefix("tack-cache-archive ") {
            Some(v) => format!("unsupported version {v:?}"),
            None => "not a tack cache archive".into(),
        }));
    }
    let mut count = 0;
    let mut last = Kind::Blob;
    loop {
        let line = inp.line(true)?;
        if let Some(n) = line.strip_prefix("end ") {
            if parse_u64(n) != Some(count) {
                return Err(inp.bad(format!("{count} entries, but the end line says {n:?}")));
            }
            break;
        }
        let (kind, name, len) =
            parse_entry(&line).ok_or_else(|| inp.bad(format!("bad entry line {line:?}")))?;
        if kind < last {
            return Err(inp.bad("a blob after action records"));
        }
        last = kind;
        let mut body = Body {
            inp: &mut inp,
            left: len,
        };
        visit(kind, &name, &mut body)?;
        match io::copy(&mut body, &mut io::sink()) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                return Err(inp.bad(e.to_string()))
            }
            Err(e) => return Err(Error::io(path, e)),
        }
        count += 1;
    }
    let expected = inp.hasher.finalize();
    let trailer = inp.line(false)?;
    if trailer != format!("blake3 {expected}") {
        return Err(inp.bad("checksum mismatch: the archive is damaged"));
    }
    if !inp.src.fill_buf().map_err(Error::at(path))?.is_empty() {
        return Err(inp.bad("data after the checksum"));
    }
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::corrupt;
    use crate::{ActionRecord, ErrorKind};
    use std::cell::RefCell;
    use std::os::unix::fs::PermissionsExt;

    const SALT: &str = "tack-test";

    fn open(dir: &Path) -> Store {
        Store::open_salted(dir, SALT).unwrap()
    }

    fn no_progress(_: u64, _: u64) {}

    /// A store holding one captured tree under the node key `k`; returns the
    /// key and the record.
    fn populated(dir: &Path) -> (Store, Digest, ActionRecord) {
        let store = open(&dir.join("cache"));
        let src = dir.join("src");
        fs::create_dir_all(src.join("out/bin")).unwrap();
        fs::write(src.join("out/bin/tool"), b"#!/bin/sh\necho hi\n").unwrap();
        fs::set_permissions(src.join("out/bin/tool"), fs::Permissions::from_mode(0o755)).unwrap();
        fs::write(src.join("out/data.txt"), b"hello archive").unwrap();
        std::os::unix::fs::symlink("bin/tool", src.join("out/alias")).unwrap();
        let outputs = store.capture_tree(&src, &["out"]).unwrap();
        let record = ActionRecord {
            outputs,
            exit_status: 0,
            tool_version: "t 1".into(),
            bound_to: Vec::new(),
        };
        let key = Digest::of(b"k");
        store.put_action(&key, &record).unwrap();
        (store, key, record)
    }

    /// Recomputes the trailer of an archive edited in a test.
    fn reseal(bytes: &mut Vec<u8>) {
        bytes.truncate(bytes.len() - "blake3 \n".len() - 64);
        let sum = blake3::hash(bytes);
        bytes.extend_from_slice(format!("blake3 {sum}\n").as_bytes());
    }

    fn find(haystack: &[u8], needle: &[u8]) -> usize {
        haystack
            .windows(needle.len())
            .position(|w| w == needle)
            .unwrap()
    }

    #[test]
    fn export_then_import_round_trips_and_restores() {
        let dir = tempfile::tempdir().unwrap();
        let (store, key, record) = populated(dir.path());
        let file = dir.path().join("cache.tca");
        let calls = RefCell::new(Vec::new());
        let report = store
            .export(&file, &|d, t| calls.borrow_mut().push((d, t)))
            .unwrap();
        assert_eq!((report.blobs, report.actions), (2, 1), "{report:?}");
        assert_eq!(report.bytes, fs::metadata(&file).unwrap().len());
        assert_eq!(calls.borrow().first(), Some(&(0, 3)));
        assert_eq!(calls.borrow().last(), Some(&(3, 3)));
        assert!(calls.borrow().windows(2).all(|w| w[0].0 <= w[1].0));
        let bytes = fs::read(&file).unwrap();
        assert!(bytes.starts_with(b"tack-cache-archive v1\nblob "));
        // Only the archive is left next to it.
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 3);

        let fresh = open(&dir.path().join("fresh"));
        let calls = RefCell::new(Vec::new());
        let report = fresh
            .import(&file, &|d, t| calls.borrow_mut().push((d, t)))
            .unwrap();
        assert_eq!(
            report,
            ImportReport {
                blobs_added: 2,
                actions_added: 1,
                ..ImportReport::default()
            }
        );
        assert_eq!(calls.borrow().last(), Some(&(3, 3)));
        let got = fresh.get_action(&key).unwrap().expect("record imported");
        assert_eq!(got, record);
        let dest = dir.path().join("restored");
        assert!(fresh.restore_tree(&got.outputs, &dest).unwrap());
        assert_eq!(
            fs::read(dest.join("out/bin/tool")).unwrap(),
            b"#!/bin/sh\necho hi\n"
        );
        assert_eq!(
            fs::read_link(dest.join("out/alias")).unwrap(),
            Path::new("bin/tool")
        );
        assert_eq!(fresh.verify().unwrap(), []);
        assert_eq!(fresh.stats().unwrap(), store.stats().unwrap());
    }

    #[test]
    fn records_keep_their_salt() {
        let dir = tempfile::tempdir().unwrap();
        let (store, key, _) = populated(dir.path());
        let file = dir.path().join("a.tca");
        store.export(&file, &no_progress).unwrap();
        let other = Store::open_salted(&dir.path().join("other"), "another salt").unwrap();
        other.import(&file, &no_progress).unwrap();
        assert_eq!(other.get_action(&key).unwrap(), None);
        let same = open(&dir.path().join("other"));
        assert!(same.get_action(&key).unwrap().is_some());
    }

    #[test]
    fn export_skips_and_counts_corrupt_entries() {
        let dir = tempfile::tempdir().unwrap();
        let (store, key, _) = populated(dir.path());
        let bad = store.put_blob(b"will rot").unwrap();
        corrupt(&store.blob_path(&bad), b"has rotted");
        let rotten_key = Digest::of(b"rotten");
        store.put_action(&rotten_key, &record_of(bad)).unwrap();
        let junk = store.actions_dir().join(Digest::of(b"junk").to_hex());
        fs::write(&junk, b"not a record").unwrap();

        let file = dir.path().join("a.tca");
        let report = store.export(&file, &no_progress).unwrap();
        assert_eq!(
            (
                report.blobs,
                report.actions,
                report.skipped_corrupt,
                report.skipped_dangling
            ),
            (2, 1, 2, 1),
            "{report:?}"
        );
        // Export does not repair or evict.
        assert!(store.blob_path(&bad).exists() && junk.exists());

        let fresh = open(&dir.path().join("fresh"));
        let report = fresh.import(&file, &no_progress).unwrap();
        assert_eq!((report.blobs_added, report.actions_added), (2, 1));
        assert!(fresh.get_action(&key).unwrap().is_some());
        assert_eq!(fresh.get_action(&rotten_key).unwrap(), None);
        assert!(!fresh.contains_blob(&bad));
    }

    /// A record of one file with content `d`.
    fn record_of(d: Digest) -> ActionRecord {
        ActionRecord {
            outputs: vec![crate::OutputEntry {
                path: "f".into(),
                kind: crate::OutputKind::File {
                    digest: d,
                    mode: 0o644,
                },
            }],
            exit_status: 0,
            tool_version: "t".into(),
            bound_to: Vec::new(),
        }
    }

    fn assert_refused(file: &Path, dir: &Path) {
        let fresh = open(&dir.join("fresh"));
        let err = fresh.import(file, &no_progress).unwrap_err();
        assert_eq!(err.path, file, "{err}");
        assert!(matches!(err.kind, ErrorKind::BadArchive(_)), "{err}");
        assert_eq!(fresh.stats().unwrap(), crate::Stats::default());
    }

    #[test]
    fn truncated_archive_is_refused_and_nothing_imported() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _, _) = populated(dir.path());
        let file = dir.path().join("a.tca");
        store.export(&file, &no_progress).unwrap();
        let bytes = fs::read(&file).unwrap();
        let cut = dir.path().join("cut.tca");
        for len in [0, 10, 30, 100, find(&bytes, b"hello archive") + 3]
            .into_iter()
            .chain(bytes.len() - 80..bytes.len())
        {
            fs::write(&cut, &bytes[..len]).unwrap();
            assert_refused(&cut, dir.path());
        }
    }

    #[test]
    fn tampered_archive_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _, _) = populated(dir.path());
        let file = dir.path().join("a.tca");
        store.export(&file, &no_progress).unwrap();
        let bytes = fs::read(&file).unwrap();
        let evil = dir.path().join("evil.tca");
        let body = find(&bytes, b"hello archive");
        for at in [
            0,
            5,
            body,
            body + 12,
            find(&bytes, b"\"exit_status\""),
            bytes.len() - 2,
        ] {
            let mut b = bytes.clone();
            b[at] ^= 1;
            fs::write(&evil, &b).unwrap();
            assert_refused(&evil, dir.path());
        }
        let mut b = bytes.clone();
        b.extend_from_slice(b"more");
        fs::write(&evil, &b).unwrap();
        assert_refused(&evil, dir.path());
        let mut b = bytes;
        b[MAGIC.len() - 1] = b'9'; // tack-cache-archive v9
        fs::write(&evil, &b).unwrap();
        assert_refused(&evil, dir.path());
    }

    #[test]
    fn import_verifies_entries_of_a_well_formed_archive() {
        let dir = tempfile::tempdir().unwrap();
        let (store, key, _) = populated(dir.path());
        let file = dir.path().join("a.tca");
        store.export(&file, &no_progress).unwrap();
        // A blob that does not match its name, with a valid trailer: the
        // blob is skipped, and the record needing it is dangling.
        let mut bytes = fs::read(&file).unwrap();
        let at = find(&bytes, b"hello archive");
        bytes[at] = b'j';
        reseal(&mut bytes);
        let forged = dir.path().join("forged.tca");
        fs::write(&forged, &bytes).unwrap();
        let fresh = open(&dir.path().join("fresh"));
        let report = fresh.import(&forged, &no_progress).unwrap();
        assert_eq!(
            report,
            ImportReport {
                blobs_added: 1,
                skipped_corrupt: 1,
                skipped_dangling: 1,
                ..ImportReport::default()
            }
        );
        assert_eq!(fresh.get_action(&key).unwrap(), None);
        // A record that fails its checksum is skipped too.
        let mut bytes = fs::read(&file).unwrap();
        let at = find(&bytes, b"\"exit_status\":0") + 14;
        bytes[at] = b'1';
        reseal(&mut bytes);
        fs::write(&forged, &bytes).unwrap();
        let report = fresh.import(&forged, &no_progress).unwrap();
        assert_eq!((report.blobs_added, report.skipped_corrupt), (1, 1));
        assert_eq!(fresh.get_action(&key).unwrap(), None);
        assert_eq!(fs::read_dir(fresh.tmp_dir()).unwrap().count(), 0);
    }

    #[test]
    fn importing_twice_is_idempotent() {
        let dir = tempfile::tempdir().unwrap();
        let (store, key, _) = populated(dir.path());
        let file = dir.path().join("a.tca");
        store.export(&file, &no_progress).unwrap();
        let fresh = open(&dir.path().join("fresh"));
        // An entry of its own survives; a corrupt copy of the record is healed.
        let own = fresh.put_blob(b"mine").unwrap();
        fresh.import(&file, &no_progress).unwrap();
        let stats = fresh.stats().unwrap();
        let record = fresh.actions_dir().join(fresh.action_key(&key).to_hex());
        corrupt(&record, b"garbage");
        let report = fresh.import(&file, &no_progress).unwrap();
        assert_eq!(
            report,
            ImportReport {
                already_present: 2,
                actions_added: 1,
                ..ImportReport::default()
            }
        );
        let report = fresh.import(&file, &no_progress).unwrap();
        assert_eq!(
            report,
            ImportReport {
                already_present: 3,
                ..ImportReport::default()
            }
        );
        assert_eq!(fresh.stats().unwrap(), stats);
        assert!(fresh.contains_blob(&own));
        assert!(fresh.get_action(&key).unwrap().is_some());
        // Importing a store's own export changes nothing either.
        let report = store.import(&file, &no_progress).unwrap();
        assert_eq!(report.already_present, 3);
    }

    #[test]
    fn a_store_with_a_record_key_imports_only_records_it_authenticated() {
        let dir = tempfile::tempdir().unwrap();
        // `populated` writes its record without a key: to a keyed store it
        // is a forgery.
        let (store, key, record) = populated(dir.path());
        let forged = dir.path().join("forged.tca");
        store.export(&forged, &no_progress).unwrap();
        let secret = crate::RecordKey::derive(b"secret");
        let keyed = open(&dir.path().join("keyed")).with_record_key(Some(secret.clone()));
        let report = keyed.import(&forged, &no_progress).unwrap();
        assert_eq!(
            report,
            ImportReport {
                blobs_added: 2,
                skipped_unauthenticated: 1,
                ..ImportReport::default()
            }
        );
        assert_eq!(keyed.get_action(&key).unwrap(), None);

        // A record written under the same key travels.
        let signer = open(&dir.path().join("signer")).with_record_key(Some(secret));
        for digest in record.blobs() {
            let blob = store.get_blob(digest).unwrap().unwrap();
            signer.put_blob(&blob).unwrap();
        }
        signer.put_action(&key, &record).unwrap();
        let signed = dir.path().join("signed.tca");
        signer.export(&signed, &no_progress).unwrap();
        let report = keyed.import(&signed, &no_progress).unwrap();
        assert_eq!(report.actions_added, 1, "{report:?}");
        assert_eq!(keyed.get_action(&key).unwrap(), Some(record));
    }

    #[test]
    fn empty_store_exports_an_empty_archive() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir.path().join("cache"));
        let file = dir.path().join("a.tca");
        let report = store.export(&file, &no_progress).unwrap();
        assert_eq!((report.blobs, report.actions), (0, 0));
        let text = fs::read_to_string(&file).unwrap();
        assert!(
            text.starts_with("tack-cache-archive v1\nend 0\nblake3 "),
            "{text}"
        );
        assert_eq!(
            store.import(&file, &no_progress).unwrap(),
            ImportReport::default()
        );
    }
}
