//! Writing a file so that readers see the old content or the new, never a
//! mix, and a kill at any point leaves no half-written target.
//!
//! The content goes to a temp file in the target's own directory (so the
//! rename stays on one filesystem), gets its mode, and is renamed over the
//! target. A temp file orphaned by a kill is named `.tack-*`;
//! [`sweep_orphans`] removes such files from the directory of a node whose
//! last attempt did not finish.

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use crate::error::{Error, Result};

/// Writes `content` to `path` atomically with `mode`, creating parent
/// directories. `durable` also fsyncs the data before the rename, for
/// tack's own state, where a power loss must not leave an empty file.
pub fn write_atomically(path: &Path, content: &[u8], mode: u32, durable: bool) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir).map_err(|error| Error::io("create directory", dir, error))?;
    let mut temp = tempfile::Builder::new()
        .prefix(".tack-")
        .tempfile_in(dir)
        .map_err(|error| Error::io("create a temp file in", dir, error))?;
    temp.write_all(content)
        .map_err(|error| Error::io("write", temp.path(), error))?;
    fs::set_permissions(temp.path(), fs::Permissions::from_mode(mode))
        .map_err(|error| Error::io("set the mode of", temp.path(), error))?;
    if durable {
        temp.as_file()
            .sync_all()
            .map_err(|error| Error::io("sync", temp.path(), error))?;
    }
    crate::fault::mid_write();
    temp.persist(path)
        .map_err(|error| Error::io("replace", path, error.error))?;
    Ok(())
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
