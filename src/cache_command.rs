//! `tack cache stats | verify | gc | export | import`: looking after the
//! step cache by hand or from CI.

use std::io::Write;
use std::path::{Path, PathBuf};

use cache::Store;

use crate::cli::{CacheArgs, CacheCommand};
use crate::error::{Error, Result};

/// The cache directory: `--cache-dir`, `TACK_CACHE_DIR`, or the
/// deployment's `.tack/cache`.
pub fn cache_dir(explicit: Option<&Path>, root: &Path) -> PathBuf {
    explicit.map_or_else(|| root.join(".tack").join("cache"), Path::to_path_buf)
}

pub fn run(args: &CacheArgs) -> Result<()> {
    let dir = cache_dir(args.cache_dir.as_deref(), &args.dir);
    let reads_only = !matches!(args.command, CacheCommand::Import { .. });
    if reads_only && !dir.exists() {
        crate::outln!("{}: no cache here yet", dir.display());
        return Ok(());
    }
    // With `TACK_CACHE_KEY`, verify and import hold records to it as a
    // deploy does.
    let key = crate::step_cache::record_key_from_env().map_err(Error::Usage)?;
    let store = Store::open(&dir)
        .map_err(|error| Error::Usage(format!("cannot open the cache: {error}")))?
        .with_record_key(key);
    let failed = |error: cache::Error| Error::Usage(format!("cache `{}`: {error}", dir.display()));
    match &args.command {
        CacheCommand::Stats => {
            let stats = store.stats().map_err(failed)?;
            crate::outln!(
                "{}: {} blobs, {} action records, {}",
                dir.display(),
                stats.blobs,
                stats.actions,
                human_size(stats.bytes)
            );
        }
        CacheCommand::Verify => {
            let (unauthenticated, corruptions): (Vec<_>, Vec<_>) = store
                .verify()
                .map_err(failed)?
                .into_iter()
                .partition(|found| found.problem == cache::Problem::Unauthenticated);
            for corruption in &corruptions {
                crate::outln!("corrupt: {corruption}");
            }
            for record in &unauthenticated {
                crate::outln!(
                    "unauthenticated: {}: no valid MAC for `{}`",
                    record.path.display(),
                    crate::step_cache::KEY_VARIABLE
                );
            }
            if !corruptions.is_empty() {
                return Err(Error::Usage(format!(
                    "{} corrupt entries in `{}` (a deploy treats them as misses and evicts them)",
                    corruptions.len(),
                    dir.display()
                )));
            }
            if !unauthenticated.is_empty() {
                return Err(Error::Usage(format!(
                    "{} records in `{}` are not authenticated by `{}` (a deploy with this key runs their steps instead of restoring them)",
                    unauthenticated.len(),
                    dir.display(),
                    crate::step_cache::KEY_VARIABLE
                )));
            }
            crate::outln!("{}: every entry verifies", dir.display());
        }
        CacheCommand::Gc { max_size } => {
            let limit = parse_size(max_size).ok_or_else(|| {
                Error::Usage(format!("`{max_size}` is not a size such as 500M or 2G"))
            })?;
            let report = store.gc(limit).map_err(failed)?;
            crate::outln!(
                "removed {} blobs and {} records, freed {}",
                report.blobs_removed,
                report.actions_removed,
                human_size(report.bytes_freed)
            );
        }
        CacheCommand::Export { file } => {
            let parent = file
                .parent()
                .filter(|parent| !parent.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            if !parent.is_dir() {
                return Err(Error::Usage(format!(
                    "cannot write `{}`: `{}` is not a directory",
                    file.display(),
                    parent.display()
                )));
            }
            let progress = Progress::on_stderr();
            let report = store.export(file, &|done, total| progress.update(done, total));
            progress.finish(report.is_ok());
            let report = report.map_err(failed)?;
            crate::outln!(
                "exported {} blobs and {} records to `{}` ({}); skipped {} corrupt, {} incomplete",
                report.blobs,
                report.actions,
                file.display(),
                human_size(report.bytes),
                report.skipped_corrupt,
                report.skipped_dangling
            );
        }
        CacheCommand::Import { file } => {
            let progress = Progress::on_stderr();
            let report = store.import(file, &|done, total| progress.update(done, total));
            progress.finish(report.is_ok());
            let report = report.map_err(failed)?;
            let unauthenticated = if store.authenticates() {
                format!(", {} unauthenticated", report.skipped_unauthenticated)
            } else {
                String::new()
            };
            crate::outln!(
                "imported {} blobs and {} records from `{}`; {} already present, skipped {} corrupt, {} incomplete{unauthenticated}",
                report.blobs_added,
                report.actions_added,
                file.display(),
                report.already_present,
                report.skipped_corrupt,
                report.skipped_dangling
            );
        }
    }
    Ok(())
}

/// A progress bar on stderr for long operations, redrawn in place, and
/// only on a terminal: on a pipe or in a CI log each redraw would be
/// another line of `\r` noise. Nothing is drawn until the operation
/// made progress, so an error (an archive that cannot be created) is not
/// preceded by an empty bar; a bar that was drawn is erased before one.
struct Progress {
    terminal: bool,
    drawn: std::cell::Cell<bool>,
    last: std::cell::Cell<Option<std::time::Instant>>,
}

impl Progress {
    /// The time between redraws: fast enough to look alive.
    const EVERY: std::time::Duration = std::time::Duration::from_millis(100);
    const WIDTH: u64 = 30;

    fn on_stderr() -> Progress {
        Progress {
            terminal: std::io::IsTerminal::is_terminal(&std::io::stderr()),
            drawn: std::cell::Cell::new(false),
            last: std::cell::Cell::new(None),
        }
    }

    fn update(&self, done: u64, total: u64) {
        if !self.terminal || done == 0 {
            return;
        }
        let now = std::time::Instant::now();
        let due = self.last.get().is_none_or(|last| now - last >= Self::EVERY);
        if !due && done < total {
            return;
        }
        self.last.set(Some(now));
        let filled = (done * Self::WIDTH)
            .checked_div(total)
            .unwrap_or(Self::WIDTH)
            .min(Self::WIDTH) as usize;
        let bar = format!(
            "{}{}",
            "#".repeat(filled),
            "-".repeat(Self::WIDTH as usize - filled)
        );
        let mut err = std::io::stderr().lock();
        let _ = write!(err, "\r[{bar}] {done}/{total}");
        let _ = err.flush();
        self.drawn.set(true);
    }

    /// Ends the bar's line after success; erases it after an error.
    fn finish(&self, succeeded: bool) {
        if !self.drawn.get() {
            return;
        }
        let mut err = std::io::stderr().lock();
        let _ = if succeeded {
            writeln!(err)
        } else {
            write!(err, "\r\x1b[K")
        };
    }
}

/// `500M`, `2G`, `10K`, `1024`: bytes.
pub fn parse_size(text: &str) -> Option<u64> {
    let text = text.trim();
    let (digits, unit) = match text.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((at, _)) => text.split_at(at),
        None => (text, ""),
    };
    let factor: u64 = match unit.trim().to_ascii_uppercase().trim_end_matches('B') {
        "" => 1,
        "K" => 1 << 10,
        "M" => 1 << 20,
        "G" => 1 << 30,
        "T" => 1 << 40,
        _ => return None,
    };
    digits.parse::<u64>().ok()?.checked_mul(factor)
}

fn human_size(bytes: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < units.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", units[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("500M"), Some(500 << 20));
        assert_eq!(parse_size("2G"), Some(2 << 30));
        assert_eq!(parse_size("1024"), Some(1024));
        assert_eq!(parse_size("10kb"), Some(10 << 10));
        assert_eq!(parse_size("lots"), None);
    }
}
