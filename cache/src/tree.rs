//! Capturing declared outputs into the store and restoring them.

use std::collections::BTreeMap;
use std::fs::{self, DirBuilder, File, Permissions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use tempfile::TempDir;

use crate::action::check_manifest;
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
    pub fn restore_outputs(
        &self,
        outputs: &[OutputEntry],
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
        self.restore_tree(outputs, root)
    }

    /// Restores a manifest under `root` (created if needed), verifying
    /// every blob. Returns `Ok(false)` on a miss (a blob absent or
    /// corrupt); then nothing under `root` has changed.
    ///
    /// Everything is first built in a staging directory inside `root`; only
    /// when all of it has been verified is each top-level entry of the
    /// manifest (one with no ancestor in the manifest) renamed over its
    /// destination, replacing what was there. Directory modes are applied
    /// last, deepest first. An I/O error during that final phase can leave
    /// some entries replaced and others not, but never a partial file.
    pub fn restore_tree(&self, outputs: &[OutputEntry], root: &Path) -> Result<bool> {
        let map = check_manifest(outputs).map_err(|why| Error::invalid(root, why))?;
        refuse_symlinked_dirs(root, map.keys().copied())?;
        // Cheap early miss before copying anything.
        for kind in map.values() {
            if let OutputKind::File { digest, .. } = kind {
                if !self.contains_blob(digest) {
                    return Ok(false);
                }
            }
        }
        let root_existed = fs::symlink_metadata(root).is_ok();
        fs::create_dir_all(root).map_err(Error::at(root))?;
        let staged = self.stage_tree(&map, root);
        if !root_existed && !matches!(staged, Ok(Some(_))) {
            let _ = fs::remove_dir(root); // only if still empty
        }
        let Some(stage) = staged? else {
            return Ok(false);
        };
        commit(&map, &stage, root)?;
        Ok(true)
    }

    /// Builds the manifest in a staging directory inside `root`, verifying
    /// every blob. `Ok(None)` on a miss (the staging directory is removed).
    fn stage_tree(
        &self,
        map: &BTreeMap<&str, &OutputKind>,
        root: &Path,
    ) -> Result<Option<TempDir>> {
        let stage = tempfile::Builder::new()
            .prefix(&format!("{TEMP_PREFIX}restore-"))
            .tempdir_in(root)
            .map_err(Error::at(root))?;
        for (&rel, kind) in map {
            let path = stage.path().join(rel);
            if let Some(parent) = path.parent() {
                // Ancestors not in the manifest (a bare `bin/tool` output).
                fs::create_dir_all(parent).map_err(Error::at(parent))?;
            }
            match kind {
                OutputKind::Dir { .. } => DirBuilder::new()
                    .mode(0o700)
                    .create(&path)
                    .map_err(Error::at(&path))?,
                OutputKind::Symlink { target } => {
                    std::os::unix::fs::symlink(target, &path).map_err(Error::at(&path))?
                }
                OutputKind::File { digest, mode } => {
                    let mut file = File::options()
                        .write(true)
                        .create_new(true)
                        .mode(0o600)
                        .open(&path)
                        .map_err(Error::at(&path))?;
                    if !self.copy_verified(digest, &mut file, &path)? {
                        return Ok(None); // `stage` is removed on drop.
                    }
                    // Never a setuid or setgid bit: a record is no reason
                    // to hand out privileges.
                    file.set_permissions(Permissions::from_mode(*mode & 0o777))
                        .map_err(Error::at(&path))?;
                }
            }
        }
        Ok(Some(stage))
    }
}

/// Moves each top-level entry of the staged tree into place, then applies
/// directory modes, deepest first.
fn commit(map: &BTreeMap<&str, &OutputKind>, stage: &TempDir, root: &Path) -> Result<()> {
    for (&rel, kind) in map {
        let has_ancestor = rel
            .match_indices('/')
            .any(|(i, _)| map.contains_key(&rel[..i]));
        if has_ancestor {
            continue;
        }
        let dest = root.join(rel);
        if let Some(parent) = dest.parent() {
            fs::create_dir_all(parent).map_err(Error::at(parent))?;
        }
        let staged = stage.path().join(rel);
        remove_blocking(&dest, matches!(kind, OutputKind::Dir { .. }))?;
        fs::rename(&staged, &dest).map_err(Error::at(&dest))?;
    }
    for (&rel, kind) in map.iter().rev() {
        if let OutputKind::Dir { mode } = kind {
            let dest = root.join(rel);
            fs::set_permissions(&dest, Permissions::from_mode(*mode & 0o1777))
                .map_err(Error::at(&dest))?;
        }
    }
    Ok(())
}

/// A restore writes below `root` through the directories its entries
/// name; a symlink planted where one of them should be (`build -> /etc`)
/// would carry the write, or the removal of what is in the way, out of
/// `root`. Such a link is an error naming it.
fn refuse_symlinked_dirs<'a>(root: &Path, paths: impl Iterator<Item = &'a str>) -> Result<()> {
    let mut checked = std::collections::BTreeSet::new();
    for rel in paths {
        for (i, _) in rel.match_indices('/') {
            let dir = &rel[..i];
            if !checked.insert(dir) {
                continue;
            }
            let path = root.join(dir);
            if fs::symlink_metadata(&path).is_ok_and(|md| md.file_type().is_symlink()) {
                return Err(Error::invalid(
                    &path,
                    "is a symlink where a directory of the outputs belongs; not restoring through it",
                ));
            }
        }
    }
    Ok(())
}

/// Removes what is at `dest` if a rename onto it would fail: a directory
/// (rename cannot replace a non-empty one), or anything when the new entry
/// is a directory. A file or symlink replaced by a file or symlink is left
/// for the rename, which swaps it atomically.
fn remove_blocking(dest: &Path, new_is_dir: bool) -> Result<()> {
    let result = match fs::symlink_metadata(dest) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => Err(e),
        Ok(md) if md.is_dir() => fs::remove_dir_all(dest),
        Ok(_) if new_is_dir => fs::remove_file(dest),
        Ok(_) => Ok(()),
    };
    result.map_err(Error::at(dest))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::corrupt;
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
            .restore_outputs(&manifest, &dst, &declared(&["bin", "eggs.txt"]))
            .unwrap());
        assert!(!dst.join("bin").exists());
        assert!(store
            .restore_outputs(&manifest, &dst, &declared(&["bin", "parts", "eggs.txt"]))
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
