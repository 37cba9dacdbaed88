//! The side effects: making a node's target what it should be.
//!
//! **Architecture Invariant:** this is the only module that changes the
//! deployed world, and every change is atomic per target: files and
//! symlinks are created under a temp name in the same directory and
//! renamed into place.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use crate::atomic::write_atomically;
use crate::error::Error;
use crate::graph::Action;
use crate::observe::observe_written;
use crate::state::Observed;

/// Applies `action`; for files, returns what was written as observed.
pub fn apply(action: &Action) -> Result<Option<Observed>, Error> {
    match action {
        Action::File {
            target,
            content,
            mode,
        } => {
            write_atomically(target, content, *mode, false)?;
            let observed = observe_written(target, content)
                .map_err(|error| Error::io("stat", target, error))?;
            Ok(Some(observed))
        }
        Action::Directory { target, mode } => {
            if fs::symlink_metadata(target).is_ok_and(|meta| !meta.is_dir()) {
                return Err(Error::io(
                    "create directory",
                    target,
                    std::io::Error::other("something else is in the way"),
                ));
            }
            fs::create_dir_all(target)
                .map_err(|error| Error::io("create directory", target, error))?;
            fs::set_permissions(target, fs::Permissions::from_mode(*mode))
                .map_err(|error| Error::io("set the mode of", target, error))?;
            Ok(None)
        }
        Action::Symlink { target, points_to } => {
            replace_symlink(target, points_to)?;
            Ok(None)
        }
    }
}

fn replace_symlink(target: &Path, points_to: &str) -> Result<(), Error> {
    if fs::symlink_metadata(target).is_ok_and(|meta| meta.is_dir()) {
        return Err(Error::io(
            "replace",
            target,
            std::io::Error::other("it is a directory; remove it by hand first"),
        ));
    }
    let dir = target.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir).map_err(|error| Error::io("create directory", dir, error))?;
    // A fresh name per attempt: tempfile reserves it, we swap in a link.
    let placeholder = tempfile::Builder::new()
        .prefix(".tack-")
        .tempfile_in(dir)
        .map_err(|error| Error::io("create a temp file in", dir, error))?;
    let temp = placeholder.path().to_path_buf();
    drop(placeholder);
    std::os::unix::fs::symlink(points_to, &temp)
        .map_err(|error| Error::io("create symlink", &temp, error))?;
    fs::rename(&temp, target).map_err(|error| {
        let _ = fs::remove_file(&temp);
        Error::io("replace", target, error)
    })
}
