//! Writing and reading below a directory someone else may write to,
//! without following a path tack did not make.
//!
//! A deploy often runs as root into a work dir an application user owns,
//! and that user can rename and plant symlinks while tack runs. Checking a
//! path for symlinks and then using it by name is a race the user wins
//! (swap a directory for a link between the check and the write). So every
//! operation here walks from a *trusted* directory, one component at a
//! time, with `openat(O_NOFOLLOW | O_DIRECTORY)`, and then acts on names
//! inside the directory it holds open: a temp file is created with
//! `O_EXCL | O_NOFOLLOW`, its mode set with `fchmod` on the open file, and
//! it is renamed with `renameat` within that directory. Whatever the user
//! renames or swaps meanwhile, the write lands in the directory tack
//! opened, and a symlink where a directory of tack's is expected is an
//! error naming it, never a way out.
//!
//! The trusted directory of a node in a component work dir is the parent
//! of the environment's work dir (the deployment root by default): the
//! work dir itself and the component's directory are walked like the rest,
//! so `work/app -> /root-only-dir` is refused too. A target the
//! configuration writes absolute (`/etc/app.conf`) has its parent opened as
//! written, by the administrator's own path; only its last component is
//! never followed.
//!
//! Reads for diffs, hashes and sources take regular files only, opened
//! with `O_NOFOLLOW | O_NONBLOCK` so a FIFO cannot hang a deploy and a
//! device cannot feed it forever, and with a size cap where the caller
//! gives one.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{openat, renameat, OFlag, AT_FDCWD};
use nix::sys::stat::{fchmod, fstat, fstatat, mkdirat, Mode, SFlag};
use nix::unistd::{symlinkat, unlinkat, UnlinkatFlags};

use crate::error::Error;

/// An open directory, and the path it was reached by (for messages).
pub struct Dir {
    fd: OwnedFd,
    path: PathBuf,
}

/// What a name in a [`Dir`] is, without following it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    File,
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

impl Dir {
    /// Opens a directory the caller trusts, following its path as written.
    pub fn open_trusted(path: &Path) -> Result<Dir, Error> {
        let fd = openat(
            AT_FDCWD,
            path,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|errno| Error::io("open directory", path, io_error(errno)))?;
        Ok(Dir {
            fd,
            path: path.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The directory `relative` below this one, each part opened without
    /// following a symlink. With `create`, missing parts are made with
    /// that mode (before the umask, which can only take bits away).
    pub fn descend(&self, relative: &Path, create: Option<u32>) -> Result<Dir, Error> {
        let mut dir = Dir {
            fd: self
                .fd
                .try_clone()
                .map_err(|e| Error::io("open", &self.path, e))?,
            path: self.path.clone(),
        };
        for part in relative.components() {
            match part {
                Component::Normal(name) => dir = dir.child(name, create)?,
                Component::CurDir => {}
                _ => {
                    return Err(Error::io(
                        "open",
                        self.path.join(relative),
                        io::Error::other("the path leaves the directory it is confined to"),
                    ))
                }
            }
        }
        Ok(dir)
    }

    fn child(&self, name: &OsStr, create: Option<u32>) -> Result<Dir, Error> {
        let path = self.path.join(name);
        let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let opened = match openat(self.fd.as_fd(), name, flags, Mode::empty()) {
            Err(Errno::ENOENT) if create.is_some() => {
                match mkdirat(self.fd.as_fd(), name, mode(create.unwrap_or(0o755))) {
                    Ok(()) | Err(Errno::EEXIST) => {}
                    Err(errno) => {
                        return Err(Error::io("create directory", &path, io_error(errno)))
                    }
                }
                openat(self.fd.as_fd(), name, flags, Mode::empty())
            }
            other => other,
        };
        match opened {
            Ok(fd) => Ok(Dir { fd, path }),
            Err(Errno::ELOOP | Errno::ENOTDIR) => Err(self.refused(name)),
            Err(errno) => Err(Error::io("open directory", &path, io_error(errno))),
        }
    }

    /// The error for a name where a directory of tack's belongs.
    fn refused(&self, name: &OsStr) -> Error {
        let path = self.path.join(name);
        let what = match self.kind(name) {
            Some(Kind::Symlink) => {
                "it is a symlink, and tack does not follow symlinks it did not make"
            }
            _ => "it is not a directory",
        };
        Error::io("open directory", &path, io::Error::other(what))
    }

    /// What `name` is, not following it; `None` if it does not exist.
    pub fn kind(&self, name: &OsStr) -> Option<Kind> {
        let stat = fstatat(
            self.fd.as_fd(),
            name,
            nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .ok()?;
        let format = SFlag::from_bits_truncate(stat.st_mode & SFlag::S_IFMT.bits());
        Some(match format {
            SFlag::S_IFREG => Kind::File,
            SFlag::S_IFDIR => Kind::Dir,
            SFlag::S_IFLNK => Kind::Symlink,
            _ => Kind::Other,
        })
    }

    /// A fresh temp name in this directory, created by `make` (which
    /// fails with EEXIST if the name is taken).
    fn temp_name<T>(
        &self,
        mut make: impl FnMut(&OsStr) -> Result<T, Errno>,
    ) -> Result<(OsString, T), Error> {
        for _ in 0..64 {
            let name = OsString::from(format!(".tack-{:016x}", rand_u64()));
            match make(&name) {
                Ok(made) => return Ok((name, made)),
                Err(Errno::EEXIST) => continue,
                Err(errno) => {
                    return Err(Error::io(
                        "create a temp file in",
                        &self.path,
                        io_error(errno),
                    ))
                }
            }
        }
        Err(Error::io(
            "create a temp file in",
            &self.path,
            io::Error::other("no free temp name"),
        ))
    }

    /// Writes `content` to `name` atomically with `mode`: a temp file made
    /// here (never through a link), its mode set on the open file, renamed
    /// over `name` (which replaces a symlink there rather than following
    /// it). `durable` fsyncs before the rename.
    pub fn write_file(
        &self,
        name: &OsStr,
        content: &[u8],
        mode_bits: u32,
        durable: bool,
    ) -> Result<(), Error> {
        let flags =
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let (temp, fd) =
            self.temp_name(|temp| openat(self.fd.as_fd(), temp, flags, mode(0o600)))?;
        let temp_path = self.path.join(&temp);
        let result = (|| {
            let mut file = File::from(fd);
            file.write_all(content)
                .map_err(|e| Error::io("write", &temp_path, e))?;
            fchmod(file.as_fd(), mode(mode_bits))
                .map_err(|errno| Error::io("set the mode of", &temp_path, io_error(errno)))?;
            if durable {
                file.sync_all()
                    .map_err(|e| Error::io("sync", &temp_path, e))?;
            }
            crate::fault::mid_write();
            self.rename_into_place(&temp, name)
        })();
        if result.is_err() {
            let _ = unlinkat(
                self.fd.as_fd(),
                temp.as_os_str(),
                UnlinkatFlags::NoRemoveDir,
            );
        }
        result
    }

    fn rename_into_place(&self, temp: &OsStr, name: &OsStr) -> Result<(), Error> {
        renameat(self.fd.as_fd(), temp, self.fd.as_fd(), name)
            .map_err(|errno| Error::io("replace", self.path.join(name), io_error(errno)))
    }

    /// Makes `name` a directory with exactly `mode`: created if missing,
    /// its mode set on the opened directory. A symlink or a file there is
    /// an error.
    pub fn make_dir(&self, name: &OsStr, mode_bits: u32) -> Result<(), Error> {
        let dir = self.child(name, Some(mode_bits))?;
        fchmod(dir.fd.as_fd(), mode(mode_bits))
            .map_err(|errno| Error::io("set the mode of", &dir.path, io_error(errno)))
    }

    /// Makes `name` a symlink to `points_to`, replacing a file or symlink
    /// there atomically; a directory there is an error.
    pub fn replace_symlink(&self, name: &OsStr, points_to: &str) -> Result<(), Error> {
        if self.kind(name) == Some(Kind::Dir) {
            return Err(Error::io(
                "replace",
                self.path.join(name),
                io::Error::other("it is a directory; remove it by hand first"),
            ));
        }
        let (temp, ()) = self.temp_name(|temp| symlinkat(points_to, self.fd.as_fd(), temp))?;
        self.rename_into_place(&temp, name).inspect_err(|_| {
            let _ = unlinkat(
                self.fd.as_fd(),
                temp.as_os_str(),
                UnlinkatFlags::NoRemoveDir,
            );
        })
    }

    /// The content of the regular file `name`, not following a symlink,
    /// not blocking on a FIFO; `Ok(None)` if it does not exist. A file of
    /// another kind, or larger than `cap` bytes, is an error.
    pub fn read_regular(&self, name: &OsStr, cap: Option<u64>) -> Result<Option<Vec<u8>>, Error> {
        let path = self.path.join(name);
        let flags = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC;
        let fd = match openat(self.fd.as_fd(), name, flags, Mode::empty()) {
            Ok(fd) => fd,
            Err(Errno::ENOENT) => return Ok(None),
            Err(Errno::ELOOP) => {
                return Err(Error::io(
                    "read",
                    &path,
                    io::Error::other("it is a symlink"),
                ))
            }
            Err(errno) => return Err(Error::io("read", &path, io_error(errno))),
        };
        read_open_regular(fd, &path, cap).map(Some)
    }

    /// Where the symlink `name` points; `None` if it is not a symlink.
    pub fn read_link(&self, name: &OsStr) -> Option<PathBuf> {
        nix::fcntl::readlinkat(self.fd.as_fd(), name)
            .ok()
            .map(PathBuf::from)
    }

    /// Removes the file or symlink `name` from this directory.
    pub fn remove_file(&self, name: &OsStr) -> Result<(), Error> {
        match unlinkat(self.fd.as_fd(), name, UnlinkatFlags::NoRemoveDir) {
            Ok(()) | Err(Errno::ENOENT) => Ok(()),
            Err(errno) => Err(Error::io("remove", self.path.join(name), io_error(errno))),
        }
    }

    /// Removes the empty directory `name` from this directory.
    pub fn remove_dir(&self, name: &OsStr) -> Result<(), Errno> {
        unlinkat(self.fd.as_fd(), name, UnlinkatFlags::RemoveDir)
    }

    /// Removes `name` and, if it is a directory, everything in it,
    /// descending only through directories opened without following a
    /// link: a link inside is removed as a link, never followed. Gone
    /// already is fine.
    pub fn remove_tree(&self, name: &OsStr) -> Result<(), Error> {
        match self.kind(name) {
            None => Ok(()),
            Some(Kind::Dir) => {
                let dir = self.child(name, None)?;
                for entry in dir.names()? {
                    dir.remove_tree(&entry)?;
                }
                match self.remove_dir(name) {
                    Ok(()) | Err(Errno::ENOENT) => Ok(()),
                    Err(errno) => Err(Error::io("remove", self.path.join(name), io_error(errno))),
                }
            }
            Some(_) => self.remove_file(name),
        }
    }

    /// The names in this directory (without `.` and `..`), read through a
    /// descriptor of their own: a duplicate of this one would share, and
    /// move, its read position.
    pub fn names(&self) -> Result<Vec<OsString>, Error> {
        use std::os::unix::ffi::OsStrExt;
        let failed = |errno| Error::io("list", &self.path, io_error(errno));
        let mut listing = nix::dir::Dir::openat(
            self.fd.as_fd(),
            ".",
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(failed)?;
        let mut names = Vec::new();
        for entry in listing.iter() {
            let name = entry.map_err(failed)?.file_name().to_bytes().to_vec();
            if name != b"." && name != b".." {
                names.push(OsStr::from_bytes(&name).to_os_string());
            }
        }
        Ok(names)
    }

    /// When `name` (not followed) was last modified; `None` if it does
    /// not exist.
    pub fn modified(&self, name: &OsStr) -> Option<std::time::SystemTime> {
        let stat = fstatat(
            self.fd.as_fd(),
            name,
            nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .ok()?;
        let since_epoch = std::time::Duration::new(
            u64::try_from(stat.st_mtime).ok()?,
            u32::try_from(stat.st_mtime_nsec).ok()?,
        );
        std::time::UNIX_EPOCH.checked_add(since_epoch)
    }
}

/// Reads an open file if it is a regular file of at most `cap` bytes.
fn read_open_regular(fd: OwnedFd, path: &Path, cap: Option<u64>) -> Result<Vec<u8>, Error> {
    let stat = fstat(fd.as_fd()).map_err(|errno| Error::io("read", path, io_error(errno)))?;
    if SFlag::from_bits_truncate(stat.st_mode & SFlag::S_IFMT.bits()) != SFlag::S_IFREG {
        return Err(Error::io(
            "read",
            path,
            io::Error::other("it is not a regular file"),
        ));
    }
    let size = stat.st_size as u64;
    if let Some(cap) = cap.filter(|cap| size > *cap) {
        return Err(Error::io(
            "read",
            path,
            io::Error::other(format!("it is larger than {cap} bytes")),
        ));
    }
    let mut bytes = Vec::with_capacity(size as usize);
    let mut file = File::from(fd);
    // The file may grow after the stat: never past the cap.
    Read::take(&mut file, cap.unwrap_or(u64::MAX))
        .read_to_end(&mut bytes)
        .map_err(|e| Error::io("read", path, e))?;
    Ok(bytes)
}

/// Reads a regular file by a path tack does not confine (its own state, a
/// source of the deployment): no FIFO, device or directory; with
/// `follow` false, a symlink as the last component is refused too.
pub fn read_regular_path(
    path: &Path,
    cap: Option<u64>,
    follow: bool,
) -> Result<Option<Vec<u8>>, Error> {
    let mut flags = OFlag::O_RDONLY | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC;
    if !follow {
        flags |= OFlag::O_NOFOLLOW;
    }
    match openat(AT_FDCWD, path, flags, Mode::empty()) {
        Ok(fd) => read_open_regular(fd, path, cap).map(Some),
        Err(Errno::ENOENT) => Ok(None),
        Err(Errno::ELOOP) => Err(Error::io("read", path, io::Error::other("it is a symlink"))),
        Err(errno) => Err(Error::io("read", path, io_error(errno))),
    }
}

/// The directory below which a node's target is walked without following
/// links: the parent of the environment's work dir, given the component
/// work dir `confined_to` of a target inside one.
pub fn trusted_base(confined_to: Option<&Path>) -> Option<&Path> {
    confined_to.and_then(Path::parent).and_then(Path::parent)
}

/// Where `target` lives: its parent directory, opened safely, and its
/// name. Below `trusted` (see [`trusted_base`]) no symlink is followed;
/// a target outside it has its parent opened by the path as written.
/// With `create`, missing directories on the way are made (0755 before
/// the umask).
pub fn parent_of(
    target: &Path,
    trusted: Option<&Path>,
    create: bool,
) -> Result<(Dir, OsString), Error> {
    let name = target
        .file_name()
        .ok_or_else(|| {
            Error::io(
                "open",
                target,
                io::Error::other("the path has no file name"),
            )
        })?
        .to_os_string();
    let parent = target.parent().unwrap_or(Path::new("/"));
    let dir = match trusted.filter(|trusted| parent.starts_with(trusted)) {
        Some(trusted) => {
            let below = parent.strip_prefix(trusted).unwrap_or(Path::new(""));
            Dir::open_trusted(trusted)?.descend(below, create.then_some(0o755))?
        }
        None => {
            if create {
                std::fs::create_dir_all(parent)
                    .map_err(|e| Error::io("create directory", parent, e))?;
            }
            Dir::open_trusted(parent)?
        }
    };
    Ok((dir, name))
}

/// Random enough for temp names: blake3 of the time, the pid and a counter.
fn rand_u64() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut hasher = blake3::Hasher::new();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    hasher.update(&now.as_nanos().to_le_bytes());
    hasher.update(&std::process::id().to_le_bytes());
    hasher.update(&COUNTER.fetch_add(1, Ordering::Relaxed).to_le_bytes());
    let hash = hasher.finalize();
    u64::from_le_bytes(hash.as_bytes()[..8].try_into().unwrap_or([0; 8]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::{symlink, PermissionsExt};

    #[test]
    fn a_symlinked_directory_on_the_way_is_refused_and_nothing_lands_behind_it() {
        let root = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        fs::create_dir_all(root.path().join("work")).unwrap();
        symlink(outside.path(), root.path().join("work/app")).unwrap();
        let confined = root.path().join("work/app");
        let target = confined.join("app.ini");
        let error = parent_of(&target, trusted_base(Some(&confined)), true)
            .err()
            .expect("a symlinked work dir must be refused");
        assert!(error.to_string().contains("is a symlink"), "{error}");
        assert_eq!(fs::read_dir(outside.path()).unwrap().count(), 0);
    }

    #[test]
    fn a_write_sets_the_mode_on_the_file_and_replaces_a_planted_link() {
        let root = tempfile::tempdir().unwrap();
        let secret = root.path().join("secret");
        fs::write(&secret, b"root only").unwrap();
        fs::set_permissions(&secret, fs::Permissions::from_mode(0o600)).unwrap();
        let confined = root.path().join("work/app");
        let target = confined.join("app.ini");
        let (dir, name) = parent_of(&target, trusted_base(Some(&confined)), true).unwrap();
        symlink(&secret, &target).unwrap();
        dir.write_file(&name, b"new", 0o644, false).unwrap();
        assert_eq!(fs::read(&target).unwrap(), b"new");
        assert!(!fs::symlink_metadata(&target)
            .unwrap()
            .file_type()
            .is_symlink());
        assert_eq!(fs::read(&secret).unwrap(), b"root only");
        let mode = fs::metadata(&secret).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(
            fs::metadata(&target).unwrap().permissions().mode() & 0o777,
            0o644
        );
    }

    #[test]
    fn a_tree_is_removed_without_following_a_link_in_it() {
        let root = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        fs::write(outside.path().join("keep"), b"x").unwrap();
        fs::create_dir_all(root.path().join("venv/bin")).unwrap();
        fs::write(root.path().join("venv/bin/python"), b"x").unwrap();
        symlink(outside.path(), root.path().join("venv/lib")).unwrap();
        let dir = Dir::open_trusted(root.path()).unwrap();
        dir.remove_tree(OsStr::new("venv")).unwrap();
        assert!(!root.path().join("venv").exists());
        assert!(outside.path().join("keep").exists());
        dir.remove_tree(OsStr::new("venv")).unwrap();
    }

    #[test]
    fn reads_take_regular_files_only() {
        let dir = tempfile::tempdir().unwrap();
        let opened = Dir::open_trusted(dir.path()).unwrap();
        fs::write(dir.path().join("f"), b"x").unwrap();
        symlink("/etc/passwd", dir.path().join("link")).unwrap();
        nix::unistd::mkfifo(&dir.path().join("fifo"), Mode::from_bits_truncate(0o600)).unwrap();
        assert_eq!(
            opened.read_regular(OsStr::new("f"), None).unwrap(),
            Some(b"x".to_vec())
        );
        assert_eq!(opened.read_regular(OsStr::new("gone"), None).unwrap(), None);
        assert!(opened.read_regular(OsStr::new("link"), None).is_err());
        assert!(opened.read_regular(OsStr::new("fifo"), None).is_err());
        assert!(opened.read_regular(OsStr::new("f"), Some(0)).is_err());
        assert!(read_regular_path(Path::new("/dev/zero"), Some(1 << 20), true).is_err());
    }
}
