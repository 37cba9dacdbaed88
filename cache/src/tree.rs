//! Capturing declared outputs into the store and restoring them.

use std::collections::BTreeMap;
use std::fs::Permissions;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use crate::action::check_manifest;
use crate::confined::{Dir, Kind};
use crate::scan::{check_links, scan_tree};
use crate::{Error, OutputEntry, OutputKind, Result, Store, TEMP_PREFIX};

impl Store {
    /// Stores everything at the relative paths `outputs` under `root` as
    /// blobs and returns the manifest, sorted by path (parents first).
    /// Directories are walked; symlinks are kept as symlinks (never
    /// followed); files and directories keep their permission bits.
    /// Overlapping outputs (`a` and `a/b`) are listed once. A missing
    /// output, a non-UTF-8 name or a special file is an error.
    pub fn capture_tree<P: AsRef<Path>>(
        &self,
        root: &Path,
        outputs: &[P],
    ) -> Result<Vec<OutputEntry>> {
        let scan = scan_tree(root, outputs, &[])?;
        self.store_scanned(root, &scan.entries)?;
        Ok(scan.entries)
    }

    /// Stores the blobs of a manifest [`scan_tree`] made under `root`. A
    /// blob already in the store is only touched (for [`Store::gc`]), never
    /// written again: a repeated capture of a large, mostly unchanged tree
    /// costs its scan and little more. A file that changed since the scan
    /// is an error: the manifest would name content that is not stored.
    pub fn store_scanned(&self, root: &Path, entries: &[OutputEntry]) -> Result<()> {
        for entry in entries {
            if let OutputKind::File { digest, .. } = &entry.kind {
                if self.contains_blob(digest) {
                    self.touch_blob(digest);
                    continue;
                }
                let path = root.join(&entry.path);
                let stored = self.put_file(&path)?;
                if stored != *digest {
                    return Err(Error::invalid(&path, "changed while it was captured"));
                }
            }
        }
        Ok(())
    }

    /// Restores a record's outputs under `root` as [`Store::restore_tree`]
    /// does, but only if the record is whole and stays within what the
    /// step declares: every entry lies at or below one of `declared`
    /// (relative paths), and every symlink resolves within the entries or
    /// to an absolute path that exists here ([`check_links`]). Anything
    /// else is a miss, `Ok(false)`, with nothing changed under `root`.
    ///
    /// `trusted` is a directory above `root` that the caller vouches for:
    /// from it down to `root`, no symlink is followed (see
    /// [`Store::restore_tree_below`]).
    pub fn restore_outputs(
        &self,
        outputs: &[OutputEntry],
        trusted: Option<&Path>,
        root: &Path,
        declared: &[String],
    ) -> Result<bool> {
        let within = |path: &str| {
            declared.iter().any(|d| {
                path == d || (path.starts_with(d.as_str()) && path[d.len()..].starts_with('/'))
            })
        };
        if !outputs.iter().all(|entry| within(&entry.path)) {
            return Ok(false);
        }
        if check_links(outputs, root).is_err() {
            return Ok(false);
        }
        self.restore_tree_below(outputs, trusted, root)
    }

    /// Restores a manifest under `root` (created if needed), verifying
    /// every blob: [`Store::restore_tree_below`] with `root` itself
    /// trusted.
    pub fn restore_tree(&self, outputs: &[OutputEntry], root: &Path) -> Result<bool> {
        self.restore_tree_below(outputs, None, root)
    }

    /// Restores a manifest under `root` (created if needed), verifying
    /// every blob. Returns `Ok(false)` on a miss (a blob absent or
    /// corrupt); then nothing under `root` has changed.
    ///
    /// Everything is first built in a staging directory inside `root`; only
    /// when all of it has been verified is each top-level entry of the
    /// manifest (one with no ancestor in the manifest) renamed over its
    /// destination, and what was in the way moved into the staging
    /// directory, which is removed at the end. Directory modes are applied
    /// last, deepest first. An I/O error during that final phase can leave
    /// some entries replaced and others not, but never a partial file.
    ///
    /// Someone else may write `root` meanwhile (see the `confined`
    /// module): the walk from `trusted` (or from `root` when `None` or not
    /// above it) and everything below `root` goes by descriptor, never
    /// following a symlink, so a link planted where a directory of the
    /// outputs belongs is an error naming it, and nothing is written,
    /// moved, chmodded or removed outside `root`.
    pub fn restore_tree_below(
        &self,
        outputs: &[OutputEntry],
        trusted: Option<&Path>,
        root: &Path,
    ) -> Result<bool> {
        let map = check_manifest(outputs).map_err(|why| Error::invalid(root, why))?;
        // Cheap early miss before creating or copying anything.
        for kind in map.values() {
            if let OutputKind::File { digest, .. } = kind {
                if !self.contains_blob(digest) {
                    return Ok(false);
                }
            }
        }
        let (dir, made) = Dir::open_below(trusted, root, 0o755)?;
        let restored = self.restore_into(&map, &dir);
        if let Some((parent, name)) = made {
            if !matches!(restored, Ok(true)) {
                parent.remove_empty_dir(name);
            }
        }
        restored
    }

    /// Stages, verifies and commits the manifest in the open `root`.
    fn restore_into(&self, map: &BTreeMap<&str, &OutputKind>, root: &Dir) -> Result<bool> {
        let tops = top_level(map);
        // A link on the way to an output fails the restore before anything
        // is staged; the commit walks without following links again.
        for rel in &tops {
            if let Some((parent, _)) = rel.rsplit_once('/') {
                root.check_walk(parent)?;
            }
        }
        let (stage_name, stage) = make_stage(root)?;
        let restored = (|| {
            let new = stage.child("new", Some(0o700))?;
            if !self.stage_tree(map, &new)? {
                return Ok(false);
            }
            let old = stage.child("old", Some(0o700))?;
            commit(map, &tops, root, &new, &old)?;
            Ok(true)
        })();
        // The staged tree on a miss, what the commit replaced on success:
        // removed through the descriptor of the stage, which is tack's.
        let emptied = stage.empty();
        root.remove_empty_dir(&stage_name);
        let restored = restored?;
        emptied?;
        Ok(restored)
    }

    /// Builds the manifest in the staging directory `new`, verifying
    /// every blob. `Ok(false)` on a miss.
    fn stage_tree(&self, map: &BTreeMap<&str, &OutputKind>, new: &Dir) -> Result<bool> {
        // Entries come parents first; consecutive ones often share a parent.
        let mut parent: Option<(&str, Dir)> = None;
        for (&rel, kind) in map {
            let (parent_rel, name) = rel.rsplit_once('/').unwrap_or(("", rel));
            let dir = match &parent {
                Some((open, dir)) if *open == parent_rel => dir,
                _ => {
                    // Ancestors not in the manifest (a bare `bin/tool` output)
                    // are made here.
                    let dir = new.descend(parent_rel, Some(0o700))?;
                    &parent.insert((parent_rel, dir)).1
                }
            };
            match kind {
                OutputKind::Dir { .. } => dir.make_dir(name, 0o700)?,
                OutputKind::Symlink { target } => dir.make_symlink(name, target)?,
                OutputKind::File { digest, mode } => {
                    let mut file = dir.create_file(name)?;
                    let path = dir.path().join(name);
                    if !self.copy_verified(digest, &mut file, &path)? {
                        return Ok(false);
                    }
                    // Never a setuid or setgid bit: a record is no reason
                    // to hand out privileges.
                    file.set_permissions(Permissions::from_mode(*mode & 0o777))
                        .map_err(Error::at(&path))?;
                }
            }
        }
        Ok(true)
    }
}

/// The entries of a manifest with no ancestor in it: what the commit
/// renames into place.
fn top_level<'a>(map: &BTreeMap<&'a str, &OutputKind>) -> Vec<&'a str> {
    map.keys()
        .copied()
        .filter(|rel| {
            !rel.match_indices('/')
                .any(|(i, _)| map.contains_key(&rel[..i]))
        })
        .collect()
}

/// A fresh staging directory in `root`, mode 0700, opened without
/// following a link and checked to be this process's own (someone who can
/// write `root` could put a directory of theirs under its name between
/// the `mkdir` and the `open`).
fn make_stage(root: &Dir) -> Result<(String, Dir)> {
    for attempt in 0u32..64 {
        let name = format!("{TEMP_PREFIX}restore-{:016x}", unique(attempt));
        match root.make_dir(&name, 0o700) {
            Ok(()) => {}
            Err(error) if matches!(&error.kind, crate::ErrorKind::Io(e) if e.kind() == io::ErrorKind::AlreadyExists) => {
                continue
            }
            Err(error) => return Err(error),
        }
        let stage = root.child(&name, None)?;
        if !stage.is_own() {
            return Err(Error::invalid(
                stage.path(),
                "was replaced by a directory of another user while tack restored into it",
            ));
        }
        return Ok((name, stage));
    }
    Err(Error::invalid(
        root.path(),
        "no free name for a staging directory",
    ))
}

/// Different for every call in this process, and between processes.
fn unique(attempt: u32) -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut hasher = blake3::Hasher::new();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    hasher.update(&now.as_nanos().to_le_bytes());
    hasher.update(&std::process::id().to_le_bytes());
    hasher.update(&COUNTER.fetch_add(1, Ordering::Relaxed).to_le_bytes());
    hasher.update(&attempt.to_le_bytes());
    let hash = hasher.finalize();
    let mut first = [0; 8];
    first.copy_from_slice(&hash.as_bytes()[..8]);
    u64::from_le_bytes(first)
}

/// Moves each top-level entry of the staged tree `new` into place under
/// `root`, what was in its way into `old`, then applies directory modes,
/// deepest first. Every directory on the way is opened without following
/// a link.
fn commit(
    map: &BTreeMap<&str, &OutputKind>,
    tops: &[&str],
    root: &Dir,
    new: &Dir,
    old: &Dir,
) -> Result<()> {
    for (index, &rel) in tops.iter().enumerate() {
        let (parent_rel, name) = rel.rsplit_once('/').unwrap_or(("", rel));
        let dest = root.descend(parent_rel, Some(0o755))?;
        let staged = new.descend(parent_rel, None)?;
        let new_is_dir = matches!(map.get(rel), Some(OutputKind::Dir { .. }));
        // A rename replaces a file or symlink atomically, but not a
        // directory that holds anything, nor anything by a directory.
        match dest.kind(name) {
            Some(Kind::Dir) => dest.rename_to(name, old, &index.to_string())?,
            Some(_) if new_is_dir => dest.rename_to(name, old, &index.to_string())?,
            _ => {}
        }
        staged.rename_to(name, &dest, name)?;
    }
    for (&rel, kind) in map.iter().rev() {
        if let OutputKind::Dir { mode } = kind {
            root.descend(rel, None)?.set_mode(*mode & 0o1777)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::corrupt;
    use std::fs;
    use std::os::unix::fs::symlink;
    use std::os::unix::fs::MetadataExt;

    fn mode_of(p: &Path) -> u32 {
        fs::symlink_metadata(p).unwrap().mode() & 0o7777
    }

    /// src/bin/tool (0755), src/bin/alias -> tool, src/bin/data (0640),
    /// src/parts/sub (dir 0750)/x, src/eggs.txt (0600)
    fn sample_tree(root: &Path) {
        fs::create_dir_all(root.join("bin")).unwrap();
        fs::create_dir_all(root.join("parts/sub")).unwrap();
        fs::write(root.join("bin/tool"), b"#!/bin/sh\necho hi\n").unwrap();
        fs::set_permissions(root.join("bin/tool"), Permissions::from_mode(0o755)).unwrap();
        symlink("tool", root.join("bin/alias")).unwrap();
        fs::write(root.join("bin/data"), b"data").unwrap();
        fs::set_permissions(root.join("bin/data"), Permissions::from_mode(0o640)).unwrap();
        fs::write(root.join("parts/sub/x"), b"x").unwrap();
        fs::set_permissions(root.join("parts/sub"), Permissions::from_mode(0o750)).unwrap();
        fs::write(root.join("eggs.txt"), b"eggs").unwrap();
        fs::set_permissions(root.join("eggs.txt"), Permissions::from_mode(0o600)).unwrap();
    }

    fn setup() -> (tempfile::TempDir, Store, Vec<OutputEntry>) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("cache")).unwrap();
        let src = dir.path().join("src");
        sample_tree(&src);
        let manifest = store
            .capture_tree(&src, &["bin", "parts", "eggs.txt", "bin/tool"])
            .unwrap();
        (dir, store, manifest)
    }

    #[test]
    fn capture_lists_everything_once_sorted() {
        let (_dir, _store, manifest) = setup();
        let paths: Vec<&str> = manifest.iter().map(|o| o.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "bin",
                "bin/alias",
                "bin/data",
                "bin/tool",
                "eggs.txt",
                "parts",
                "parts/sub",
                "parts/sub/x"
            ]
        );
        assert_eq!(
            manifest[1].kind,
            OutputKind::Symlink {
                target: "tool".into()
            }
        );
        assert_eq!(
            manifest[3].kind,
            OutputKind::File {
                digest: crate::Digest::of(b"#!/bin/sh\necho hi\n"),
                mode: 0o755
            }
        );
    }

    #[test]
    fn capture_restore_round_trip() {
        let (dir, store, manifest) = setup();
        let dst = dir.path().join("dst");
        assert!(store.restore_tree(&manifest, &dst).unwrap());
        assert_eq!(
            fs::read(dst.join("bin/tool")).unwrap(),
            b"#!/bin/sh\necho hi\n"
        );
        assert_eq!(mode_of(&dst.join("bin/tool")), 0o755);
        assert_eq!(mode_of(&dst.join("bin/data")), 0o640);
        assert_eq!(mode_of(&dst.join("eggs.txt")), 0o600);
        assert_eq!(mode_of(&dst.join("parts/sub")), 0o750);
        assert_eq!(
            fs::read_link(dst.join("bin/alias")).unwrap(),
            Path::new("tool")
        );
        assert_eq!(fs::read(dst.join("parts/sub/x")).unwrap(), b"x");
        // Capturing the restored tree gives the same manifest.
        let again = store
            .capture_tree(&dst, &["bin", "parts", "eggs.txt"])
            .unwrap();
        assert_eq!(again, manifest);
        // No staging directory left behind.
        let names: Vec<_> = fs::read_dir(&dst)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 3, "{names:?}");
    }

    #[test]
    fn restore_replaces_existing_outputs() {
        let (dir, store, manifest) = setup();
        let dst = dir.path().join("dst");
        fs::create_dir_all(dst.join("bin/stale")).unwrap();
        fs::write(dst.join("bin/tool"), b"old").unwrap();
        fs::create_dir(dst.join("eggs.txt")).unwrap(); // a dir where a file goes
        fs::write(dst.join("unrelated"), b"keep").unwrap();
        assert!(store.restore_tree(&manifest, &dst).unwrap());
        assert!(!dst.join("bin/stale").exists());
        assert_eq!(fs::read(dst.join("eggs.txt")).unwrap(), b"eggs");
        assert_eq!(fs::read(dst.join("unrelated")).unwrap(), b"keep");
    }

    #[test]
    fn restore_with_corrupt_blob_leaves_destination_untouched() {
        let (dir, store, manifest) = setup();
        let dst = dir.path().join("dst");
        fs::create_dir_all(dst.join("bin")).unwrap();
        fs::write(dst.join("bin/tool"), b"old tool").unwrap();
        let data = manifest.iter().find(|o| o.path == "parts/sub/x").unwrap();
        let OutputKind::File { digest, .. } = &data.kind else {
            panic!()
        };
        corrupt(&store.blob_path(digest), b"y");
        assert!(!store.restore_tree(&manifest, &dst).unwrap());
        let names: Vec<_> = fs::read_dir(&dst)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["bin"]);
        let names: Vec<_> = fs::read_dir(dst.join("bin"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["tool"]);
        assert_eq!(fs::read(dst.join("bin/tool")).unwrap(), b"old tool");
        assert!(!store.contains_blob(digest), "corrupt blob evicted");
    }

    #[test]
    fn failed_restore_into_new_root_removes_the_root() {
        let (dir, store, manifest) = setup();
        let OutputKind::File { digest, .. } = &manifest.last().unwrap().kind else {
            panic!()
        };
        corrupt(&store.blob_path(digest), b"y");
        let dst = dir.path().join("new/dst");
        assert!(!store.restore_tree(&manifest, &dst).unwrap());
        assert!(!dst.exists());
    }

    #[test]
    fn restore_with_missing_blob_creates_nothing() {
        let (dir, store, manifest) = setup();
        fs::remove_dir_all(store.blobs_dir()).unwrap();
        let dst = dir.path().join("dst");
        assert!(!store.restore_tree(&manifest, &dst).unwrap());
        assert!(!dst.exists());
    }

    #[test]
    fn capture_rejects_bad_outputs() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("cache")).unwrap();
        for bad in ["../x", "/abs", ""] {
            let err = store.capture_tree(dir.path(), &[bad]).unwrap_err();
            assert!(
                matches!(err.kind, crate::ErrorKind::InvalidPath(_)),
                "{bad}: {err}"
            );
        }
        let err = store.capture_tree(dir.path(), &["missing"]).unwrap_err();
        assert_eq!(err.path, dir.path().join("missing"));
    }

    #[test]
    fn top_level_symlink_output_is_kept_as_link() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("cache")).unwrap();
        symlink("/nonexistent/target", dir.path().join("link")).unwrap();
        let m = store.capture_tree(dir.path(), &["./link"]).unwrap();
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].path, "link");
        let dst = dir.path().join("dst");
        assert!(store.restore_tree(&m, &dst).unwrap());
        assert_eq!(
            fs::read_link(dst.join("link")).unwrap(),
            Path::new("/nonexistent/target")
        );
    }

    #[test]
    fn restore_outputs_takes_only_declared_whole_trees_and_drops_setuid() {
        let (dir, store, manifest) = setup();
        let dst = dir.path().join("dst");
        let declared = |names: &[&str]| names.iter().map(|n| n.to_string()).collect::<Vec<_>>();
        // `parts` is in the record but not declared: a miss.
        assert!(!store
            .restore_outputs(&manifest, None, &dst, &declared(&["bin", "eggs.txt"]))
            .unwrap());
        assert!(!dst.join("bin").exists());
        assert!(store
            .restore_outputs(
                &manifest,
                None,
                &dst,
                &declared(&["bin", "parts", "eggs.txt"])
            )
            .unwrap());

        let src = dir.path().join("suid");
        fs::create_dir_all(&src).unwrap();
        fs::write(src.join("tool"), b"x").unwrap();
        fs::set_permissions(src.join("tool"), Permissions::from_mode(0o4755)).unwrap();
        let suid = store.capture_tree(&src, &["tool"]).unwrap();
        let out = dir.path().join("suid-out");
        assert!(store.restore_tree(&suid, &out).unwrap());
        assert_eq!(mode_of(&out.join("tool")), 0o755);
    }

    #[test]
    fn restore_refuses_a_symlink_where_an_output_directory_belongs() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("cache")).unwrap();
        let src = dir.path().join("src");
        fs::create_dir_all(src.join("build/out")).unwrap();
        fs::write(src.join("build/out/a"), b"a").unwrap();
        let manifest = store.capture_tree(&src, &["build/out"]).unwrap();
        // Someone replaced `build` by a link to a directory holding data.
        let dst = dir.path().join("dst");
        let precious = dir.path().join("precious");
        fs::create_dir_all(precious.join("out")).unwrap();
        fs::write(precious.join("out/precious.txt"), b"keep").unwrap();
        fs::create_dir_all(&dst).unwrap();
        symlink(&precious, dst.join("build")).unwrap();
        assert!(store.restore_tree(&manifest, &dst).is_err());
        assert_eq!(
            fs::read(precious.join("out/precious.txt")).unwrap(),
            b"keep"
        );
    }

    #[test]
    fn a_repeated_capture_writes_no_blob_again() {
        let (dir, store, manifest) = setup();
        let OutputKind::File { digest, .. } = &manifest[3].kind else {
            panic!()
        };
        let before = fs::symlink_metadata(store.blob_path(digest)).unwrap().ino();
        let again = store
            .capture_tree(&dir.path().join("src"), &["bin", "parts", "eggs.txt"])
            .unwrap();
        assert_eq!(again, manifest);
        let after = fs::symlink_metadata(store.blob_path(digest)).unwrap().ino();
        assert_eq!(before, after, "the blob was replaced, not kept");
    }
}
