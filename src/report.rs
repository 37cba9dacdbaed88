//! What a deploy prints: one batou-style line per node that ran, reasons
//! under it with `--explain`, a diff with `--diff`, and a summary line.
//!
//! Nodes finish on several threads; every block of text for one node is
//! written under one lock, so lines from parallel nodes never interleave.
//!
//! A step that runs a program says so when it starts (`Running NODE ...`)
//! as well as when it ends, and on a terminal stays on the live status line
//! (`status_line`) while it runs.

use std::io::Write;
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use similar::TextDiff;

use crate::reason::Reason;
use crate::status_line::{Shown, StatusLine};

/// `println!` for tack's output, in a function returning tack's `Result`:
/// a closed stdout (`tack ... | head`) ends the output, not the program;
/// any other failure to write (a full disk) is an error.
#[macro_export]
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::report::write_out(format_args!("{}\n", format_args!($($arg)*)))?
    };
}

/// Writes to stdout; see [`outln!`].
pub fn write_out(text: std::fmt::Arguments) -> crate::error::Result<()> {
    match std::io::stdout().lock().write_fmt(text) {
        Err(error) if error.kind() != std::io::ErrorKind::BrokenPipe => Err(
            crate::error::Error::io("write to", Path::new("standard output"), error),
        ),
        _ => Ok(()),
    }
}

/// batou caps diffs at 200 lines; so do we.
const DIFF_LINES: usize = 200;

pub struct Reporter {
    /// stdout, or for a host deployed over ssh the frames that carry its
    /// lines to the machine that runs the deploy.
    out: Mutex<Box<dyn Write + Send>>,
    pub explain: bool,
    pub prefix: String,
    /// Shown as relative paths in reasons.
    root: String,
    /// `--format json` prints one report at the end, nothing on the way.
    quiet: bool,
    /// What runs now, on a terminal.
    status: StatusLine,
}

impl Reporter {
    pub fn new(explain: bool, prefix: String, root: &Path, quiet: bool) -> Reporter {
        Reporter::to(Box::new(std::io::stdout()), explain, prefix, root, quiet)
    }

    /// A reporter writing to `out` instead of stdout.
    pub fn to(
        out: Box<dyn Write + Send>,
        explain: bool,
        prefix: String,
        root: &Path,
        quiet: bool,
    ) -> Reporter {
        Reporter {
            out: Mutex::new(out),
            explain,
            prefix,
            root: format!("{}/", root.display()),
            quiet,
            status: StatusLine::on_stderr(),
        }
    }

    /// Prints `Running NODE ...` and shows the node on the status line
    /// until the returned guard is dropped.
    pub fn step_started(&self, display: &str) -> Shown<'_> {
        self.line(&format!("Running {}{display} ...", self.prefix));
        self.status.show(&format!("{}{display}", self.prefix))
    }

    /// Prints `verb display`, then reasons and a diff as asked.
    pub fn node(&self, verb: &str, display: &str, reasons: &[Reason], diff: Option<&str>) {
        let mut block = format!("{verb} {}{display}\n", self.prefix);
        block.push_str(&self.reasons(reasons));
        if let Some(diff) = diff {
            block.push_str(diff);
        }
        self.write(&block);
    }

    /// Prints `text` followed by the reasons, as one block.
    pub fn block(&self, text: &str, reasons: &[Reason]) {
        self.write(&format!("{text}{}", self.reasons(reasons)));
    }

    fn reasons(&self, reasons: &[Reason]) -> String {
        if !self.explain {
            return String::new();
        }
        let text: String = reasons.iter().map(|reason| reason.render("    ")).collect();
        text.replace(&self.root, "")
    }

    pub fn line(&self, text: &str) {
        self.write(&format!("{text}\n"));
    }

    fn write(&self, text: &str) {
        if self.quiet {
            return;
        }
        let mut out = self.out.lock().unwrap_or_else(|e| e.into_inner());
        self.status.suspend(|| {
            // A closed pipe (`tack ... | head`) is not a deploy failure.
            let _ = out.write_all(text.as_bytes());
            let _ = out.flush();
        });
    }
}

/// A unified diff of a text file's old and new content, indented, capped.
/// `None` when either side is not UTF-8 text.
pub fn text_diff(path: &str, old: Option<&[u8]>, new: &[u8]) -> Option<String> {
    let old = std::str::from_utf8(old.unwrap_or_default()).ok()?;
    let new = std::str::from_utf8(new).ok()?;
    let diff = TextDiff::from_lines(old, new);
    let text = diff
        .unified_diff()
        .context_radius(3)
        .header(&format!("{path} (deployed)"), &format!("{path} (new)"))
        .to_string();
    let lines: Vec<&str> = text.lines().collect();
    let mut shown: String = lines
        .iter()
        .take(DIFF_LINES)
        .map(|line| format!("    {line}\n"))
        .collect();
    if lines.len() > DIFF_LINES {
        shown.push_str(&format!(
            "    ... {} more diff lines\n",
            lines.len() - DIFF_LINES
        ));
    }
    Some(shown)
}

/// Counts for the summary line.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Summary {
    pub updated: usize,
    pub unchanged: usize,
    pub failed: usize,
    pub skipped: usize,
    /// Deployed once, configured no more, and left in place.
    pub no_longer_configured: usize,
    /// Deployed once, configured no more, and removed by `--prune`.
    pub pruned: usize,
    /// Deployed once, configured no more, and dropped from the state by
    /// `--prune` without touching the host (see `prune`).
    pub forgotten: usize,
    /// Stopped or not started because tack was interrupted.
    pub interrupted: usize,
}

impl Summary {
    pub fn line(&self, host: &str, dry_run: bool, elapsed: Duration) -> String {
        let seconds = elapsed.as_secs_f64();
        // Counted only when there are any: most runs have none.
        let mut gone = String::new();
        if self.pruned > 0 {
            gone.push_str(&format!(", {} pruned", self.pruned));
        }
        if self.forgotten > 0 {
            gone.push_str(&format!(", {} forgotten", self.forgotten));
        }
        if self.no_longer_configured > 0 {
            gone.push_str(&format!(
                ", {} no longer configured",
                self.no_longer_configured
            ));
        }
        if dry_run {
            format!(
                "{host}: {} would update, {} unchanged{gone} (dry run: nothing changed) in {seconds:.3}s",
                self.updated, self.unchanged
            )
        } else {
            if self.interrupted > 0 {
                gone.push_str(&format!(", {} interrupted", self.interrupted));
            }
            format!(
                "{host}: {} updated, {} unchanged, {} failed, {} skipped{gone} in {seconds:.3}s",
                self.updated, self.unchanged, self.failed, self.skipped
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diff_shows_changed_lines() {
        let diff = text_diff(
            "etc/app.ini",
            Some(b"port = 5432\nhost = db\n"),
            b"port = 5433\nhost = db\n",
        )
        .unwrap();
        assert!(diff.contains("    -port = 5432\n"), "{diff}");
        assert!(diff.contains("    +port = 5433\n"), "{diff}");
    }

    #[test]
    fn binary_content_has_no_diff() {
        assert_eq!(text_diff("a", Some(&[0xff, 0xfe]), b"x"), None);
    }
}
