//! Writing a file so that readers see the old content or the new, never a
//! mix, and a kill at any point leaves no half-written target.
//!
//! The content goes to a temp file in the target's own directory (so the
//! rename stays on one filesystem), gets its mode, and is renamed over the
//! target. A temp file orphaned by a kill is named `.tack-*`;
//! [`sweep_orphans_below`] removes such files from the directory of a node
//! whose last attempt did not finish, through the directory it opened
//! without following a link (see [`crate::confined`]).

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

/// Removes temp files an interrupted write left in tack's own `dir`
/// (`.tack/`), which it trusts: [`sweep_orphans_below`] without a trusted
/// base.
pub fn sweep_orphans(dir: &Path, older_than: Option<std::time::Duration>) {
    sweep_orphans_below(dir, None, older_than)
}

/// Removes temp files an interrupted write left in `dir`; with
/// `older_than`, only those not modified for that long. Below `trusted`
/// (see [`crate::confined::trusted_base`]) `dir` is walked without
/// following a link and the files are removed by name in the directory
/// held open: a link planted on the way is no path to somebody else's
/// `.tack-*` files. A directory that cannot be opened so has nothing of
/// tack's to sweep.
pub fn sweep_orphans_below(
    dir: &Path,
    trusted: Option<&Path>,
    older_than: Option<std::time::Duration>,
) {
    let opened =
        match trusted.and_then(|trusted| Some((trusted, dir.strip_prefix(trusted).ok()?))) {
            Some((trusted, below)) => crate::confined::Dir::open_trusted(trusted)
                .and_then(|base| base.descend(below, None)),
            None => crate::confined::Dir::open_trusted(dir),
        };
    let Ok(opened) = opened else {
        return;
    };
    let Ok(names) = opened.names() else {
        return;
    };
    for name in names {
        let is_ours = name.to_string_lossy().starts_with(".tack-");
        let plain = matches!(
            opened.kind(&name),
            Some(crate::confined::Kind::File | crate::confined::Kind::Symlink)
        );
        let old_enough = older_than.is_none_or(|age| {
            opened
                .modified(&name)
                .and_then(|modified| modified.elapsed().ok())
                .is_some_and(|elapsed| elapsed >= age)
        });
        if is_ours && plain && old_enough {
            let _ = opened.remove_file(&name);
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
