//! Writing below a directory someone else may write to, by descriptor:
//! the staging and commit of a restore ([`crate::Store::restore_tree`]).
//!
//! A step's outputs often live in a work dir an application user owns,
//! and tack restores them as root. Checking a path for symlinks and then
//! renaming or chmodding by that path is a race the user wins (swap a
//! directory for a link between the check and the use). So the restore
//! walks from a directory its caller trusts, one component at a time, with
//! `openat(O_NOFOLLOW | O_DIRECTORY)`, and acts only on names inside the
//! directories it holds open: `mkdirat`, `symlinkat`, files created
//! `O_EXCL | O_NOFOLLOW`, `fchmod` on descriptors, `renameat` between two
//! open directories, `unlinkat`. Whatever is renamed or swapped meanwhile,
//! nothing lands, moves, changes mode or is deleted outside the tree tack
//! opened; a symlink where a directory of the outputs belongs is an error
//! naming it.
//!
//! tack's own `src/confined.rs` does the same for the files it deploys;
//! the cache crate cannot depend on tack, so the few calls a restore needs
//! are here.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{openat, renameat, AtFlags, OFlag, AT_FDCWD};
use nix::sys::stat::{fchmod, fstatat, mkdirat, Mode, SFlag};
use nix::unistd::{symlinkat, unlinkat, UnlinkatFlags};

use crate::{Error, Result};

/// An open directory, and the path it was reached by (for messages).
pub(crate) struct Dir {
    fd: OwnedFd,
    path: PathBuf,
}

/// What a name in a [`Dir`] is, without following it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Dir,
    Symlink,
    Other,
}

fn io_error(errno: Errno) -> io::Error {
    io::Error::from_raw_os_error(errno as i32)
}

fn mode(bits: u32) -> Mode {
    Mode::from_bits_truncate(bits as nix::libc::mode_t)
}

const DIR_FLAGS: OFlag = OFlag::O_RDONLY
    .union(OFlag::O_DIRECTORY)
    .union(OFlag::O_NOFOLLOW)
    .union(OFlag::O_CLOEXEC);

impl Dir {
    /// Opens a directory the caller trusts, following its path as written.
    pub(crate) fn open_trusted(path: &Path) -> Result<Dir> {
        let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
        let fd = openat(AT_FDCWD, path, flags, Mode::empty())
            .map_err(|errno| Error::io(path, io_error(errno)))?;
        Ok(Dir {
            fd,
            path: path.to_path_buf(),
        })
    }

    /// Opens `root` by walking from `trusted` (a prefix of it the caller
    /// vouches for) without following a link, making missing directories
    /// with mode `create` (before the umask). A `root` outside `trusted`,
    /// or no `trusted`, is opened as written. Also, when `root` itself was
    /// made here, its parent and name, so a failed restore can take it
    /// back.
    pub(crate) fn open_below(
        trusted: Option<&Path>,
        root: &Path,
        create: u32,
    ) -> Result<(Dir, Option<(Dir, OsString)>)> {
        let base = trusted.filter(|trusted| root.starts_with(trusted) && root != *trusted);
        let (parent, name) = match (base, root.parent(), root.file_name()) {
            (Some(base), Some(parent), Some(name)) => {
                let below = parent.strip_prefix(base).unwrap_or(Path::new(""));
                (Dir::open_trusted(base)?.descend(below, Some(create))?, name)
            }
            (None, Some(parent), Some(name)) if std::fs::symlink_metadata(root).is_err() => {
                std::fs::create_dir_all(parent).map_err(Error::at(parent))?;
                (Dir::open_trusted(parent)?, name)
            }
            _ => return Ok((Dir::open_trusted(root)?, None)),
        };
        let existed = parent.kind(name).is_some();
        let dir = parent.child(name, Some(create))?;
        Ok((dir, (!existed).then(|| (parent, name.to_os_string()))))
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// The directory at the relative `/`-separated `relative` below this
    /// one, each part opened without following a link; missing parts made
    /// with `create`.
    pub(crate) fn descend(&self, relative: impl AsRef<Path>, create: Option<u32>) -> Result<Dir> {
        let relative = relative.as_ref();
        let mut dir = self.try_clone()?;
        for part in relative.components() {
            match part {
                Component::Normal(name) => dir = dir.child(name, create)?,
                Component::CurDir => {}
                _ => {
                    return Err(Error::invalid(
                        self.path.join(relative),
                        "leaves the directory it is confined to",
                    ))
                }
            }
        }
        Ok(dir)
    }

    /// Walks `relative` as [`Dir::descend`] does without making anything:
    /// an error if a part of it is a link or not a directory; a missing
    /// part ends the walk (there is nothing to follow).
    pub(crate) fn check_walk(&self, relative: &str) -> Result<()> {
        let mut dir = self.try_clone()?;
        for name in relative.split('/').filter(|name| !name.is_empty()) {
            if dir.kind(name).is_none() {
                return Ok(());
            }
            dir = dir.child(name, None)?;
        }
        Ok(())
    }

    fn try_clone(&self) -> Result<Dir> {
        Ok(Dir {
            fd: self.fd.try_clone().map_err(Error::at(&self.path))?,
            path: self.path.clone(),
        })
    }

    /// The directory `name` in this one, not following a link; made with
    /// `create` if missing.
    pub(crate) fn child(&self, name: impl AsRef<OsStr>, create: Option<u32>) -> Result<Dir> {
        let name = name.as_ref();
        let path = self.path.join(name);
        let opened = match openat(self.fd.as_fd(), name, DIR_FLAGS, Mode::empty()) {
            Err(Errno::ENOENT) if create.is_some() => {
                match mkdirat(self.fd.as_fd(), name, mode(create.unwrap_or(0o700))) {
                    Ok(()) | Err(Errno::EEXIST) => {}
                    Err(errno) => return Err(Error::io(&path, io_error(errno))),
                }
                openat(self.fd.as_fd(), name, DIR_FLAGS, Mode::empty())
            }
            other => other,
        };
        match opened {
            Ok(fd) => Ok(Dir { fd, path }),
            Err(Errno::ELOOP | Errno::ENOTDIR) => Err(Error::invalid(
                &path,
                match self.kind(name) {
                    Some(Kind::Symlink) => {
                        "is a symlink where a directory of the outputs belongs; not restoring through it"
                    }
                    _ => "is not a directory, where a directory of the outputs belongs",
                },
            )),
            Err(errno) => Err(Error::io(&path, io_error(errno))),
        }
    }

    /// What `name` is, not following it; `None` if it does not exist.
    pub(crate) fn kind(&self, name: impl AsRef<OsStr>) -> Option<Kind> {
        let name = name.as_ref();
        let stat = fstatat(self.fd.as_fd(), name, AtFlags::AT_SYMLINK_NOFOLLOW).ok()?;
        Some(
            match SFlag::from_bits_truncate(stat.st_mode & SFlag::S_IFMT.bits()) {
                SFlag::S_IFDIR => Kind::Dir,
                SFlag::S_IFLNK => Kind::Symlink,
                _ => Kind::Other,
            },
        )
    }

    /// Makes the directory `name` (mode before the umask).
    pub(crate) fn make_dir(&self, name: &str, mode_bits: u32) -> Result<()> {
        mkdirat(self.fd.as_fd(), name, mode(mode_bits))
            .map_err(|errno| Error::io(self.path.join(name), io_error(errno)))
    }

    /// Makes `name` a symlink to `target`.
    pub(crate) fn make_symlink(&self, name: &str, target: &str) -> Result<()> {
        symlinkat(target, self.fd.as_fd(), name)
            .map_err(|errno| Error::io(self.path.join(name), io_error(errno)))
    }

    /// Creates the new file `name` (never through a link), mode 0600.
    pub(crate) fn create_file(&self, name: &str) -> Result<File> {
        let flags =
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        openat(self.fd.as_fd(), name, flags, mode(0o600))
            .map(File::from)
            .map_err(|errno| Error::io(self.path.join(name), io_error(errno)))
    }

    /// Whether this directory belongs to this process's effective user.
    pub(crate) fn is_own(&self) -> bool {
        nix::sys::stat::fstat(self.fd.as_fd())
            .is_ok_and(|stat| stat.st_uid == nix::unistd::geteuid().as_raw())
    }

    /// Sets this directory's mode on its descriptor.
    pub(crate) fn set_mode(&self, mode_bits: u32) -> Result<()> {
        fchmod(self.fd.as_fd(), mode(mode_bits))
            .map_err(|errno| Error::io(&self.path, io_error(errno)))
    }

    /// Moves `name` in this directory to `to_name` in `to`.
    pub(crate) fn rename_to(&self, name: &str, to: &Dir, to_name: &str) -> Result<()> {
        renameat(self.fd.as_fd(), name, to.fd.as_fd(), to_name)
            .map_err(|errno| Error::io(to.path.join(to_name), io_error(errno)))
    }

    /// Removes the file or link `name`; gone already is fine.
    pub(crate) fn remove_file(&self, name: impl AsRef<OsStr>) -> Result<()> {
        let name = name.as_ref();
        match unlinkat(self.fd.as_fd(), name, UnlinkatFlags::NoRemoveDir) {
            Ok(()) | Err(Errno::ENOENT) => Ok(()),
            Err(errno) => Err(Error::io(self.path.join(name), io_error(errno))),
        }
    }

    /// Removes the empty directory `name`; a missing or non-empty one is
    /// left (somebody else's by then).
    pub(crate) fn remove_empty_dir(&self, name: impl AsRef<OsStr>) {
        let name = name.as_ref();
        let _ = unlinkat(self.fd.as_fd(), name, UnlinkatFlags::RemoveDir);
    }

    /// Removes the directory `name` and everything in it, descending only
    /// through directories opened without following a link: a link inside
    /// is removed as a link, never followed.
    pub(crate) fn remove_tree(&self, name: impl AsRef<OsStr>) -> Result<()> {
        let name = name.as_ref();
        match self.kind(name) {
            None => Ok(()),
            Some(Kind::Dir) => {
                self.child(name, None)?.empty()?;
                match unlinkat(self.fd.as_fd(), name, UnlinkatFlags::RemoveDir) {
                    Ok(()) | Err(Errno::ENOENT) => Ok(()),
                    Err(errno) => Err(Error::io(self.path.join(name), io_error(errno))),
                }
            }
            Some(_) => self.remove_file(name),
        }
    }

    /// Removes everything in this directory (see [`Dir::remove_tree`]).
    pub(crate) fn empty(&self) -> Result<()> {
        for name in self.names()? {
            self.remove_tree(&name)?;
        }
        Ok(())
    }

    /// The names in this directory, read through a descriptor of its own
    /// (a duplicate of this one would share, and move, its read position).
    fn names(&self) -> Result<Vec<OsString>> {
        let mut listing = nix::dir::Dir::openat(
            self.fd.as_fd(),
            ".",
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|errno| Error::io(&self.path, io_error(errno)))?;
        let mut names = Vec::new();
        for entry in listing.iter() {
            let entry = entry.map_err(|errno| Error::io(&self.path, io_error(errno)))?;
            let name = entry.file_name().to_bytes();
            if name != b"." && name != b".." {
                names.push(OsStr::from_bytes(name).to_os_string());
            }
        }
        Ok(names)
    }
}
