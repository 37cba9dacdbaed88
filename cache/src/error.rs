//! The store's error type: every error names the path it is about.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

/// Result with the store's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A failed store operation and the path it concerned.
///
/// Cache misses (absent or corrupt entries) are not errors; they are
/// `Ok(None)` / `Ok(false)`.
#[derive(Debug)]
pub struct Error {
    /// The file or directory the operation was about.
    pub path: PathBuf,
    /// What went wrong.
    pub kind: ErrorKind,
}

/// What went wrong.
#[derive(Debug)]
#[non_exhaustive]
pub enum ErrorKind {
    /// An I/O error from the operating system.
    Io(io::Error),
    /// A path given to the store, or recorded in a manifest, is not a clean
    /// relative `/`-separated UTF-8 path, or the manifest is inconsistent.
    InvalidPath(String),
    /// An output is neither a regular file, a directory nor a symlink.
    UnsupportedFileType,
    /// A cache archive (see [`Store::import`](crate::Store::import)) is not
    /// one, has an unsupported version, is truncated or fails its checksum.
    BadArchive(String),
}

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, e: io::Error) -> Error {
        Error {
            path: path.into(),
            kind: ErrorKind::Io(e),
        }
    }

    /// A closure for `map_err` that attaches `path` to an I/O error.
    pub(crate) fn at(path: &Path) -> impl FnOnce(io::Error) -> Error + '_ {
        move |e| Error::io(path, e)
    }

    pub(crate) fn invalid(path: impl Into<PathBuf>, why: impl Into<String>) -> Error {
        Error {
            path: path.into(),
            kind: ErrorKind::InvalidPath(why.into()),
        }
    }

    pub(crate) fn bad_archive(path: impl Into<PathBuf>, why: impl Into<String>) -> Error {
        Error {
            path: path.into(),
            kind: ErrorKind::BadArchive(why.into()),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path.display(), self.kind)
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ErrorKind::Io(e) => write!(f, "{e}"),
            ErrorKind::InvalidPath(why) => write!(f, "invalid path: {why}"),
            ErrorKind::UnsupportedFileType => {
                f.write_str("not a regular file, directory or symlink")
            }
            ErrorKind::BadArchive(why) => write!(f, "bad cache archive: {why}"),
        }
    }
}

// The I/O message is already part of `Display`, so `source` stays `None`
// to keep error chains from printing it twice.
impl std::error::Error for Error {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names_the_path() {
        let e = Error::io("/x/y", io::Error::new(io::ErrorKind::NotFound, "gone"));
        assert_eq!(e.to_string(), "/x/y: gone");
        let e = Error::invalid("a/../b", "`..` is not allowed");
        assert_eq!(e.to_string(), "a/../b: invalid path: `..` is not allowed");
    }
}
