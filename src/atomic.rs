//! Writing a file so that readers see the old content or the new, never a
//! mix, and a kill at any point leaves no half-written target.
//!
//! The content goes to a temp file in the target's own directory (so the
//! rename stays on one filesystem), gets its mode, and is renamed over the
//! target. A temp file orphaned by a kill is named `.tack-*`;
//! [`sweep_orphans`] removes such files from the directory of a node whose
//! last attempt did not finish.

use std::fs;
use std::os::unix::fs::DirBuilderExt;
use std::path::Path;

use crate::error::{Error, Result};

/// Writes `content` to `path` atomically with `mode`, creating parent
/// directories. `durable` also fsyncs the data before the rename, for
/// tack's own state, where a power loss must not leave an empty file.
/// The temp file is made and chmodded through its descriptor, and renamed
/// within the directory tack opened (see [`crate::confined`]).
pub fn write_atomically(path: &Path, content: &[u8], mode: u32, durable: bool) -> Result<()> {
    let (dir, name) = crate::confined::parent_of(path, None, true)?;
    dir.write_file(&name, content, mode, durable)
}

/// Writes one of tack's own files (state, manifest): mode 0600 in
/// directories made 0700, whatever the umask.
pub fn write_private(path: &Path, content: &[u8]) -> Result<()> {
    if let Some(dir) = path.parent() {
        private_dir(dir)?;
    }
    write_atomically(path, content, 0o600, false)
}

/// Makes `dir` and its missing parents with mode 0700 (what the umask
/// leaves of it): tack's own directories are nobody else's business.
pub fn private_dir(dir: &Path) -> Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|error| Error::io("create directory", dir, error))
}

/// Removes the file at `path`; one already gone is fine.
pub fn remove_if_present(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Err(error) if error.kind() != std::io::ErrorKind::NotFound => {
            Err(Error::io("remove", path, error))
        }
        _ => Ok(()),
    }
}

/// Removes temp files an interrupted write left in `dir`; with
/// `older_than`, only those not modified for that long.
pub fn sweep_orphans(dir: &Path, older_than: Option<std::time::Duration>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let is_ours = entry.file_name().to_string_lossy().starts_with(".tack-");
        let Ok(meta) = entry.metadata() else { continue };
        let old_enough = older_than.is_none_or(|age| {
            meta.modified()
                .ok()
                .and_then(|modified| modified.elapsed().ok())
                .is_some_and(|elapsed| elapsed >= age)
        });
        let plain = meta.is_file() || meta.file_type().is_symlink();
        if is_ours && plain && old_enough {
            let _ = fs::remove_file(entry.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn replaces_content_and_sets_mode_without_leftovers() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("sub/app.ini");
        write_atomically(&target, b"old", 0o644, false).unwrap();
        write_atomically(&target, b"new", 0o755, false).unwrap();
        assert_eq!(fs::read(&target).unwrap(), b"new");
        let mode = fs::metadata(&target).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o755);
        let names: Vec<_> = fs::read_dir(target.parent().unwrap())
            .unwrap()
            .map(|entry| entry.unwrap().file_name())
            .collect();
        assert_eq!(names, ["app.ini"]);
    }
}
