//! Looking at declared outputs without storing them: their manifest, the
//! absolute paths their bytes embed, and whether their symlinks resolve.
//!
//! A scan is the cheap half of a capture. It reads every file once, hashing
//! it and searching it for the *needles* the caller names (the absolute
//! paths of the checkout), as Nix scans a build's outputs for store paths:
//! a venv's `pyvenv.cfg` and script shebangs, a buildout's generated
//! scripts, name the directory they were built in, and work only there.
//! Such a tree is *bound* to that place; the caller records it so, and
//! restores it nowhere else. The search runs on the bytes as they stream
//! through the hasher, so it costs no second read.
//!
//! The manifest of a scan is also what a caller compares to decide whether
//! outputs on disk are still the ones it recorded ([`tree_digest`]): a
//! restore must never overwrite what somebody else wrote since.
//!
//! [`check_links`] decides whether a tree's symlinks are whole: each must
//! resolve to an entry of the tree itself or to an absolute path that
//! exists. A link that dangles (`outputs = .venv/bin/python`, a link to
//! `python3` that was not captured) or escapes the tree would restore as a
//! broken program, so such a tree is neither captured nor restored.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path};

use memchr::memmem::Finder;

use crate::{Digest, Error, OutputEntry, OutputKind, Result};

const BUF_SIZE: usize = 64 * 1024;
/// How many links in a row a symlink may take to resolve.
const MAX_HOPS: usize = 40;

/// What [`scan_tree`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scan {
    /// The manifest, sorted by path (parents first), as
    /// [`crate::Store::capture_tree`] would record it.
    pub entries: Vec<OutputEntry>,
    /// Whether a file's content or a symlink's target contains one of the
    /// needles.
    pub bound: bool,
}

/// Scans everything at the relative paths `outputs` under `root`:
/// directories are walked, symlinks read (never followed), files hashed
/// and searched for `needles`. A missing output, a non-UTF-8 name or a
/// special file is an error.
pub fn scan_tree<P: AsRef<Path>>(root: &Path, outputs: &[P], needles: &[&[u8]]) -> Result<Scan> {
    let finders: Vec<Finder> = needles
        .iter()
        .filter(|needle| !needle.is_empty())
        .map(|needle| Finder::new(needle).into_owned())
        .collect();
    let mut walk = Walk {
        root,
        finders: &finders,
        entries: BTreeMap::new(),
        bound: false,
    };
    for out in outputs {
        let rel = rel_string(out.as_ref())?;
        walk.path(rel)?;
    }
    Ok(Scan {
        entries: walk
            .entries
            .into_iter()
            .map(|(path, kind)| OutputEntry { path, kind })
            .collect(),
        bound: walk.bound,
    })
}

struct Walk<'a> {
    root: &'a Path,
    finders: &'a [Finder<'static>],
    entries: BTreeMap<String, OutputKind>,
    bound: bool,
}

impl Walk<'_> {
    fn path(&mut self, rel: String) -> Result<()> {
        let path = self.root.join(&rel);
        let md = fs::symlink_metadata(&path).map_err(Error::at(&path))?;
        let ft = md.file_type();
        let mode = md.mode() & 0o7777;
        let kind = if ft.is_symlink() {
            let target = fs::read_link(&path).map_err(Error::at(&path))?;
            let target = target
                .into_os_string()
                .into_string()
                .map_err(|_| Error::invalid(&path, "symlink target is not UTF-8"))?;
            self.bound |= self
                .finders
                .iter()
                .any(|f| f.find(target.as_bytes()).is_some());
            OutputKind::Symlink { target }
        } else if ft.is_file() {
            let (digest, found) = hash_and_search(&path, self.finders)?;
            self.bound |= found;
            OutputKind::File { digest, mode }
        } else if ft.is_dir() {
            for child in fs::read_dir(&path).map_err(Error::at(&path))? {
                let child = child.map_err(Error::at(&path))?;
                let name = child.file_name();
                let name = name
                    .to_str()
                    .ok_or_else(|| Error::invalid(child.path(), "name is not UTF-8"))?;
                self.path(format!("{rel}/{name}"))?;
            }
            OutputKind::Dir { mode }
        } else {
            return Err(Error {
                path,
                kind: crate::ErrorKind::UnsupportedFileType,
            });
        };
        self.entries.insert(rel, kind);
        Ok(())
    }
}

/// The blake3 digest of the file at `path`, and whether any finder's
/// needle occurs in it. A needle split across two reads is found: each
/// read is searched together with the tail of the one before.
fn hash_and_search(path: &Path, finders: &[Finder]) -> Result<(Digest, bool)> {
    let mut file = File::open(path).map_err(Error::at(path))?;
    let overlap = finders
        .iter()
        .map(|f| f.needle().len().saturating_sub(1))
        .max()
        .unwrap_or(0);
    let mut hasher = blake3::Hasher::new();
    let mut window: Vec<u8> = Vec::with_capacity(BUF_SIZE + overlap);
    let mut buf = vec![0u8; BUF_SIZE];
    let mut found = false;
    loop {
        let n = match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Error::io(path, e)),
        };
        hasher.update(&buf[..n]);
        if !found && !finders.is_empty() {
            window.extend_from_slice(&buf[..n]);
            found = finders.iter().any(|f| f.find(&window).is_some());
            let keep = window.len().min(overlap);
            window.drain(..window.len() - keep);
        }
    }
    Ok((hasher.finalize().into(), found))
}

/// One digest for a whole manifest: two scans with the same digest saw the
/// same paths, contents, modes and link targets.
pub fn tree_digest(entries: &[OutputEntry]) -> Digest {
    let mut hasher = blake3::Hasher::new_derive_key("tack cache v1 tree digest");
    for entry in entries {
        hasher.update(entry.path.as_bytes());
        hasher.update(b"\0");
        match &entry.kind {
            OutputKind::File { digest, mode } => {
                hasher.update(b"f");
                hasher.update(digest.as_bytes());
                hasher.update(&mode.to_le_bytes());
            }
            OutputKind::Symlink { target } => {
                hasher.update(b"l");
                hasher.update(target.as_bytes());
                hasher.update(b"\0");
            }
            OutputKind::Dir { mode } => {
                hasher.update(b"d");
                hasher.update(&mode.to_le_bytes());
            }
        }
    }
    hasher.finalize().into()
}

/// Checks that every symlink of a manifest meant to live under `root`
/// resolves: within the manifest (following links up to a bound), or to an
/// absolute path outside `root` that exists on this machine. An absolute
/// target inside `root` is resolved in the manifest like a relative one.
/// The error names the first link that does not, and why.
pub fn check_links(entries: &[OutputEntry], root: &Path) -> std::result::Result<(), String> {
    let map: BTreeMap<&str, &OutputKind> = entries
        .iter()
        .map(|entry| (entry.path.as_str(), &entry.kind))
        .collect();
    for entry in entries {
        if let OutputKind::Symlink { target } = &entry.kind {
            resolve(&map, &entry.path, target, root)
                .map_err(|why| format!("symlink `{}` -> `{target}` {why}", entry.path))?;
        }
    }
    Ok(())
}

/// Follows the link at `from` (pointing to `target`) through the manifest.
fn resolve(
    map: &BTreeMap<&str, &OutputKind>,
    from: &str,
    target: &str,
    root: &Path,
) -> std::result::Result<(), String> {
    let (mut from, mut target) = (from.to_string(), target.to_string());
    for _ in 0..MAX_HOPS {
        let relative = if Path::new(&target).is_absolute() {
            match Path::new(&target).strip_prefix(root) {
                Ok(inside) => inside.to_string_lossy().into_owned(),
                Err(_) if Path::new(&target).exists() => return Ok(()),
                Err(_) => return Err("points to an absolute path that does not exist".into()),
            }
        } else {
            let parent = Path::new(&from).parent().unwrap_or(Path::new(""));
            normalize(&parent.join(&target))
                .ok_or_else(|| "points out of the outputs".to_string())?
        };
        match map.get(relative.as_str()) {
            Some(OutputKind::Symlink { target: next }) => {
                from = relative;
                target = next.clone();
            }
            Some(_) => return Ok(()),
            // The root itself, or a directory above the outputs, is not
            // part of them.
            None => return Err("dangles: its target is not among the outputs".into()),
        }
    }
    Err("takes too many links to resolve".into())
}

/// `a/./b/../c` as `a/c`; `None` if it climbs above its start.
fn normalize(path: &Path) -> Option<String> {
    let mut parts: Vec<&str> = Vec::new();
    for part in path.components() {
        match part {
            Component::Normal(name) => parts.push(name.to_str()?),
            Component::CurDir => {}
            Component::ParentDir => {
                parts.pop()?;
            }
            Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    Some(parts.join("/"))
}

/// A caller's relative output path as the manifest spells it.
pub(crate) fn rel_string(path: &Path) -> Result<String> {
    let mut parts = Vec::new();
    for c in path.components() {
        match c {
            Component::Normal(p) => parts.push(
                p.to_str()
                    .ok_or_else(|| Error::invalid(path, "not UTF-8"))?,
            ),
            Component::CurDir => {}
            _ => {
                return Err(Error::invalid(
                    path,
                    "output paths must be relative, without `..`",
                ))
            }
        }
    }
    if parts.is_empty() {
        return Err(Error::invalid(path, "empty output path"));
    }
    Ok(parts.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn a_needle_is_found_in_content_and_link_targets_even_across_reads() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let needle = b"/srv/checkout-a";
        // The needle straddles the boundary between the first two reads.
        let mut big = vec![b'x'; BUF_SIZE - 5];
        big.extend_from_slice(needle);
        fs::write(root.join("big"), &big).unwrap();
        fs::write(root.join("plain"), b"nothing here").unwrap();
        symlink("/srv/checkout-a/bin/python", root.join("link")).unwrap();

        assert!(scan_tree(root, &["big"], &[needle]).unwrap().bound);
        assert!(!scan_tree(root, &["plain"], &[needle]).unwrap().bound);
        assert!(scan_tree(root, &["link"], &[needle]).unwrap().bound);
        assert!(
            !scan_tree(root, &["big"], &[b"/srv/checkout-b"])
                .unwrap()
                .bound
        );
    }

    #[test]
    fn links_must_resolve_inside_the_outputs_or_to_an_existing_absolute_path() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::create_dir_all(root.join("venv/bin")).unwrap();
        fs::create_dir_all(root.join("venv/lib")).unwrap();
        symlink("/bin/sh", root.join("venv/bin/python3")).unwrap();
        symlink("python3", root.join("venv/bin/python")).unwrap();
        symlink("lib", root.join("venv/lib64")).unwrap();
        let whole = scan_tree(root, &["venv"], &[]).unwrap();
        assert_eq!(check_links(&whole.entries, root), Ok(()));

        // Only the link, not what it points to: it would dangle.
        let half = scan_tree(root, &["venv/bin/python"], &[]).unwrap();
        let why = check_links(&half.entries, root).unwrap_err();
        assert!(
            why.contains("venv/bin/python") && why.contains("dangles"),
            "{why}"
        );

        symlink("../../elsewhere", root.join("venv/out")).unwrap();
        let escaping = scan_tree(root, &["venv"], &[]).unwrap();
        let why = check_links(&escaping.entries, root).unwrap_err();
        assert!(why.contains("out of the outputs"), "{why}");

        fs::remove_file(root.join("venv/out")).unwrap();
        symlink("/nonexistent/python", root.join("venv/bin/python3x")).unwrap();
        let gone = scan_tree(root, &["venv"], &[]).unwrap();
        let why = check_links(&gone.entries, root).unwrap_err();
        assert!(why.contains("does not exist"), "{why}");
    }

    #[test]
    fn the_tree_digest_sees_content_modes_and_targets() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::create_dir(root.join("out")).unwrap();
        fs::write(root.join("out/a"), b"one").unwrap();
        let before = tree_digest(&scan_tree(root, &["out"], &[]).unwrap().entries);
        assert_eq!(
            before,
            tree_digest(&scan_tree(root, &["out"], &[]).unwrap().entries)
        );
        fs::write(root.join("out/a"), b"two").unwrap();
        let after = tree_digest(&scan_tree(root, &["out"], &[]).unwrap().entries);
        assert_ne!(before, after);
    }
}
