//! A deployment in a temp dir, the `tack` binary run on it, and ways to
//! look at what it left on disk.
//!
//! ```ignore
//! let d = Deployment::new()
//!     .env("dev", "[hosts]\nlocalhost = app\n")
//!     .component("app", "[file:app.ini]\n")
//!     .source("app", "app.ini", "port = 8080\n");
//! d.tack(&["local", "dev"]).success();
//! assert_eq!(d.read("work/app/app.ini"), "port = 8080\n");
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use tempfile::TempDir;

mod sshd;
pub use sshd::Sshd;

/// Longer than the coarsest file timestamp clock (one jiffy at HZ=100), so
/// that a write after [`Deployment::snapshot`] or [`Deployment::mtime`]
/// always shows as a new mtime.
const TIMESTAMP_TICK: Duration = Duration::from_millis(25);

/// A deployment directory: `environments/`, `components/`, and after a
/// deploy `work/` and `.tack/`. Removed when dropped.
pub struct Deployment {
    _dir: TempDir,
    root: PathBuf,
}

impl Deployment {
    pub fn new() -> Deployment {
        let dir = tempfile::Builder::new()
            .prefix("tack-test-")
            .tempdir()
            .expect("create a temp dir");
        // tack canonicalizes the deployment root; so do we, for `workdir`.
        let root = dir.path().canonicalize().expect("canonicalize temp dir");
        Deployment { _dir: dir, root }
    }

    /// Writes `environments/NAME.cfg` (unindented).
    pub fn env(self, name: &str, text: &str) -> Deployment {
        self.write(&format!("environments/{name}.cfg"), &unindent(text));
        self
    }

    /// Writes `components/NAME/component.cfg` (unindented).
    pub fn component(self, name: &str, text: &str) -> Deployment {
        self.write(&format!("components/{name}/component.cfg"), &unindent(text));
        self
    }

    /// Writes a source file beside a component's `component.cfg` (unindented).
    pub fn source(self, component: &str, file: &str, text: &str) -> Deployment {
        self.write(&format!("components/{component}/{file}"), &unindent(text));
        self
    }

    /// A copy of the deployment in `dir` (an example's), without what a
    /// deploy there left behind (`work/`, `.tack/`).
    pub fn copy_of(dir: &Path) -> Deployment {
        let d = Deployment::new();
        copy_tree(dir, &d.root, &["work", ".tack"]);
        d
    }

    /// `tack ARGS` in the deployment directory, not started yet: for a
    /// test that watches or interrupts a run.
    pub fn tack_command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_tack"));
        command
            .args(args)
            .current_dir(&self.root)
            .env_remove("TACK_CACHE_DIR")
            .env_remove("TACK_CACHE_KEY");
        command
    }

    /// Runs `tack ARGS` in the deployment directory.
    pub fn tack(&self, args: &[&str]) -> Output {
        self.tack_with_env(args, &[]).0
    }

    /// Runs `tack ARGS` with extra environment variables, such as the
    /// fault injection switches of a debug build (`src/fault.rs`); returns
    /// also the signal that killed tack, if one did (its exit code is then
    /// -1).
    pub fn tack_with_env(&self, args: &[&str], vars: &[(&str, &str)]) -> (Output, Option<i32>) {
        let output = self
            .tack_command(args)
            .envs(vars.iter().copied())
            .output()
            .expect("run tack");
        let printed = Output {
            args: args.join(" "),
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        };
        (printed, output.status.signal())
    }

    /// The deployment directory, canonicalized as tack sees it.
    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn path(&self, relative: &str) -> PathBuf {
        self.root.join(relative)
    }

    pub fn exists(&self, relative: &str) -> bool {
        fs::symlink_metadata(self.path(relative)).is_ok()
    }

    pub fn read(&self, relative: &str) -> String {
        fs::read_to_string(self.path(relative)).unwrap_or_else(|e| panic!("read {relative}: {e}"))
    }

    /// Writes `text` as it is, creating parent directories.
    pub fn write(&self, relative: &str, text: &str) {
        let path = self.path(relative);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, text).unwrap_or_else(|e| panic!("write {relative}: {e}"));
    }

    /// Replaces `from` by `to` in a file, which must contain `from`: the
    /// edit a person makes between two deploys.
    pub fn replace(&self, relative: &str, from: &str, to: &str) {
        let text = self.read(relative);
        assert!(
            text.contains(from),
            "`{from}` is not in {relative}:\n{text}"
        );
        self.write(relative, &text.replacen(from, to, 1));
    }

    /// Permission bits, as `ls -l` shows them: 0o644, 0o755, ...
    pub fn mode(&self, relative: &str) -> u32 {
        let meta = fs::symlink_metadata(self.path(relative))
            .unwrap_or_else(|e| panic!("stat {relative}: {e}"));
        meta.mode() & 0o7777
    }

    /// Modification time in nanoseconds.
    pub fn mtime(&self, relative: &str) -> i128 {
        let meta = fs::symlink_metadata(self.path(relative))
            .unwrap_or_else(|e| panic!("stat {relative}: {e}"));
        std::thread::sleep(TIMESTAMP_TICK);
        nanos(meta.mtime(), meta.mtime_nsec())
    }

    /// Every file, directory and symlink under `work/` and `.tack/`.
    pub fn snapshot(&self) -> Snapshot {
        let mut entries = BTreeMap::new();
        for top in ["work", ".tack"] {
            collect(&self.root, &self.path(top), &mut entries);
        }
        std::thread::sleep(TIMESTAMP_TICK);
        Snapshot(entries)
    }
}

/// Every file, directory and symlink under `dir` (a host's `remote_dir`),
/// by path relative to it.
pub fn snapshot_of(dir: &Path) -> Snapshot {
    let mut entries = BTreeMap::new();
    for child in fs::read_dir(dir).into_iter().flatten().flatten() {
        collect(dir, &child.path(), &mut entries);
    }
    std::thread::sleep(TIMESTAMP_TICK);
    Snapshot(entries)
}

/// Copies the files and directories under `from` into `to`, leaving out
/// the top-level entries named in `skip`. Symlinks are not expected in a
/// deployment's sources and are refused.
fn copy_tree(from: &Path, to: &Path, skip: &[&str]) {
    fs::create_dir_all(to).unwrap_or_else(|e| panic!("create {}: {e}", to.display()));
    for entry in fs::read_dir(from).unwrap_or_else(|e| panic!("read {}: {e}", from.display())) {
        let entry = entry.unwrap();
        if skip.iter().any(|name| entry.file_name() == *name) {
            continue;
        }
        let kind = entry.file_type().unwrap();
        let target = to.join(entry.file_name());
        if kind.is_dir() {
            copy_tree(&entry.path(), &target, &[]);
        } else if kind.is_file() {
            fs::copy(entry.path(), &target)
                .unwrap_or_else(|e| panic!("copy {}: {e}", entry.path().display()));
        } else {
            panic!(
                "{} is neither a file nor a directory",
                entry.path().display()
            );
        }
    }
}

fn nanos(seconds: i64, nanoseconds: i64) -> i128 {
    i128::from(seconds) * 1_000_000_000 + i128::from(nanoseconds)
}

fn collect(root: &Path, path: &Path, entries: &mut BTreeMap<String, Entry>) {
    let Ok(meta) = fs::symlink_metadata(path) else {
        return;
    };
    let name = path.strip_prefix(root).unwrap().display().to_string();
    let mode = meta.mode() & 0o7777;
    let mtime_ns = nanos(meta.mtime(), meta.mtime_nsec());
    let entry = if meta.is_symlink() {
        Entry::Symlink {
            target: fs::read_link(path).unwrap(),
            mtime_ns,
            inode: meta.ino(),
        }
    } else if meta.is_dir() {
        for child in fs::read_dir(path).unwrap() {
            collect(root, &child.unwrap().path(), entries);
        }
        Entry::Directory { mode }
    } else {
        Entry::File {
            content: String::from_utf8_lossy(&fs::read(path).unwrap()).into_owned(),
            mode,
            mtime_ns,
            inode: meta.ino(),
        }
    };
    entries.insert(name, entry);
}

/// What was on disk at one moment, by path relative to the deployment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot(pub BTreeMap<String, Entry>);

/// A directory's mtime is left out: it moves whenever a file inside is
/// replaced, and that file shows up as changed itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Entry {
    File {
        content: String,
        mode: u32,
        mtime_ns: i128,
        inode: u64,
    },
    Directory {
        mode: u32,
    },
    Symlink {
        target: PathBuf,
        mtime_ns: i128,
        inode: u64,
    },
}

impl Snapshot {
    /// The paths created, removed or touched in any way between `self`
    /// and `later`.
    pub fn changed(&self, later: &Snapshot) -> BTreeSet<String> {
        let paths: BTreeSet<&String> = self.0.keys().chain(later.0.keys()).collect();
        paths
            .into_iter()
            .filter(|path| self.0.get(*path) != later.0.get(*path))
            .cloned()
            .collect()
    }

    /// Only the entries below `prefix` (such as `work/`).
    pub fn under(&self, prefix: &str) -> Snapshot {
        Snapshot(
            self.0
                .iter()
                .filter(|(path, _)| path.starts_with(prefix))
                .map(|(path, entry)| (path.clone(), entry.clone()))
                .collect(),
        )
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// What one run of tack printed, and its exit code.
pub struct Output {
    pub args: String,
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    /// Asserts exit code 0.
    #[track_caller]
    pub fn success(self) -> Output {
        assert_eq!(self.code, 0, "tack {} failed\n{self}", self.args);
        self
    }

    /// The nodes printed as `Updating NODE`.
    pub fn updated(&self) -> BTreeSet<String> {
        self.nodes("Updating ")
    }

    /// The nodes printed as `Would update NODE`.
    pub fn would_update(&self) -> BTreeSet<String> {
        self.nodes("Would update ")
    }

    fn nodes(&self, verb: &str) -> BTreeSet<String> {
        self.stdout
            .lines()
            .filter_map(|line| line.strip_prefix(verb))
            .map(str::to_string)
            .collect()
    }

    /// The line `header` and the indented lines under it (reasons, diff).
    #[track_caller]
    pub fn block(&self, header: &str) -> String {
        let mut lines = self.stdout.lines().skip_while(|line| *line != header);
        let first = lines
            .next()
            .unwrap_or_else(|| panic!("no line `{header}` in the output\n{self}"));
        let mut block = format!("{first}\n");
        for line in lines.take_while(|line| line.starts_with(' ')) {
            block.push_str(line);
            block.push('\n');
        }
        block
    }
}

impl fmt::Display for Output {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "exit code: {}\n--- stdout\n{}--- stderr\n{}---",
            self.code, self.stdout, self.stderr
        )
    }
}

/// A set of strings, to compare with [`Output::updated`] and
/// [`Snapshot::changed`].
pub fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|item| item.to_string()).collect()
}

/// Strips the first line if empty and the indentation common to all
/// non-blank lines, keeping deeper indents (INI continuation lines):
/// lets tests write files inline at the indentation of the code.
pub fn unindent(text: &str) -> String {
    let text = text.strip_prefix('\n').unwrap_or(text);
    // The line holding the closing quote is only indentation.
    let text = match text.rsplit_once('\n') {
        Some((body, last)) if last.trim().is_empty() => body,
        _ => text,
    };
    let indent = text
        .lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| line.len() - line.trim_start().len())
        .min()
        .unwrap_or(0);
    text.lines()
        .map(|line| format!("{}\n", line.get(indent..).unwrap_or("").trim_end()))
        .collect()
}

#[test]
fn unindent_keeps_continuation_lines() {
    assert_eq!(
        unindent(
            "
            [file:a]
            content =
                one
                two
            "
        ),
        "[file:a]\ncontent =\n    one\n    two\n"
    );
    assert_eq!(unindent("x = 1\n"), "x = 1\n");
}

/// Every file (and symlink) below `dir`, recursively.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if entry.file_type().is_ok_and(|kind| kind.is_dir()) {
            files.extend(files_under(&path));
        } else {
            files.push(path);
        }
    }
    files
}

/// A TCP port on 127.0.0.1 that nothing listens on right now, for a
/// supervisord or a program of a test.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("bind a free port")
        .port()
}
