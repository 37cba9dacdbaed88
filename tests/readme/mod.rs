//! The README's examples, run: every ```` ```console ```` block of
//! `README.md` and `docs/*.md`, read at test time, so an example someone
//! adds is tested too and a claim that stops being true fails `cargo test`.
//!
//! A block runs in a temp dir: an empty one, or a copy of the example
//! deployment an HTML comment right above the block names, after the setup
//! commands that comment lists (the reader sees neither):
//!
//! ```text
//! <!-- tested in a copy of examples/tutorial-component, after:
//! $ printf '\n[component:supervisor]\nport = 19105\n' >> environments/dev.cfg
//! -->
//! ```
//!
//! Each `$ ` line runs in turn with `sh -c` in that directory (so `sed -i`
//! edits the copy, and state carries from one command to the next), with
//! `tack` meaning the binary under test. What it prints, stdout and stderr
//! together, must match the lines shown under it up to the next `$ `:
//!
//! * Lines come in entries, a line and the indented lines under it
//!   (reasons, diffs). Nodes finish in parallel, so entries may come in
//!   any order; each shown entry must match one printed entry, and every
//!   printed entry must be shown, unless a line `...` says there is more.
//! * `[..]` in a shown line matches any text. Durations (`in 6.686s`,
//!   `(15s)`) and pids (`pid 10828`) are masked on both sides, so the
//!   README can show real numbers.
//! * `  ... NODE still running (15s)` comes only when a step ran long
//!   enough on this machine: such lines are left out on both sides.
//! * A command whose shown output has a line starting with `error:` must
//!   fail; any other must succeed.
//!
//! A comment that says `with a loopback sshd` starts an OpenSSH server on
//! 127.0.0.1 for the block ([`Sshd`]; host aliases alpha, beta, ...) and
//! gives its ssh config to the commands as `$TACK_TEST_SSH_CONFIG`; without
//! sshd installed such a block is skipped, unless CI requires it.
//!
//! When the block ends, anything still running from its directory (the
//! tutorial's supervisord) is stopped. Commands that should not run in
//! tests (`cargo install`) belong in ```` ```sh ```` blocks.
//!
//! Neither trycmd nor snapbox is used: trycmd runs registered binaries
//! rather than shell lines, compares output in order (a parallel deploy
//! prints its nodes in any order) and has no hidden setup or teardown
//! (a free port, stopping supervisord); what is left, wildcard matching,
//! is a few lines.

use std::fmt::Write as _;
use std::io::{Read, Seek};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support::{Deployment, Sshd};
use crate::tutorial::{alive, processes_running_from, signal, wait_until};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// How long a stopped process may take to go away after SIGTERM.
const STOP_PATIENCE: Duration = Duration::from_secs(10);

/// One ```` ```console ```` block.
#[derive(Debug)]
struct Example {
    /// The document it is in, relative to the repository.
    document: String,
    /// The line its fence opens on.
    line: usize,
    /// The example deployment to copy, relative to the repository.
    copy_of: Option<String>,
    /// The block deploys over ssh to a loopback sshd.
    with_sshd: bool,
    setup: Vec<String>,
    commands: Vec<Shown>,
}

/// A command and what the document shows it printing.
#[derive(Debug)]
struct Shown {
    line: usize,
    command: String,
    output: Vec<String>,
}

#[test]
fn the_readme_and_docs_examples_run_as_shown() {
    let mut documents = vec![PathBuf::from(ROOT).join("README.md")];
    let mut docs: Vec<PathBuf> = std::fs::read_dir(Path::new(ROOT).join("docs"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "md"))
        .collect();
    docs.sort();
    documents.extend(docs);
    let mut examples = Vec::new();
    for document in &documents {
        let text = std::fs::read_to_string(document).unwrap();
        let name = document.strip_prefix(ROOT).unwrap().display().to_string();
        examples.extend(examples_in(&name, &text));
    }
    assert!(
        examples
            .iter()
            .any(|example| example.document == "README.md"),
        "README.md has no console example"
    );
    let failures: Vec<String> = examples.iter().filter_map(run).collect();
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// The console blocks of a document, with the comment above each.
fn examples_in(document: &str, text: &str) -> Vec<Example> {
    let lines: Vec<&str> = text.lines().collect();
    let mut examples = Vec::new();
    let mut index = 0;
    while index < lines.len() {
        if lines[index].trim_end() != "```console" {
            index += 1;
            continue;
        }
        let start = index;
        let mut body = Vec::new();
        index += 1;
        while index < lines.len() && lines[index].trim_end() != "```" {
            body.push((index + 1, lines[index]));
            index += 1;
        }
        let (copy_of, setup, with_sshd) = directive_above(&lines[..start]);
        examples.push(Example {
            document: document.to_string(),
            line: start + 1,
            copy_of,
            with_sshd,
            setup,
            commands: commands_in(&body),
        });
        index += 1;
    }
    examples
}

/// The deployment to copy, the setup commands and whether an sshd is
/// wanted, from an HTML comment that ends right above a block (blank lines
/// between are fine).
fn directive_above(lines: &[&str]) -> (Option<String>, Vec<String>, bool) {
    let mut end = lines.len();
    while end > 0 && lines[end - 1].trim().is_empty() {
        end -= 1;
    }
    if end == 0 || !lines[end - 1].trim_end().ends_with("-->") {
        return (None, Vec::new(), false);
    }
    let Some(begin) = lines[..end].iter().rposition(|line| line.contains("<!--")) else {
        return (None, Vec::new(), false);
    };
    let comment = lines[begin..end].join("\n");
    let copy_of = comment.split_once("tested in a copy of ").map(|(_, rest)| {
        rest.split_whitespace()
            .next()
            .unwrap_or_default()
            .trim_end_matches([',', '.', ':'])
            .to_string()
    });
    let setup = comment
        .lines()
        .filter_map(|line| line.trim().strip_prefix("$ "))
        .map(str::to_string)
        .collect();
    (copy_of, setup, comment.contains("with a loopback sshd"))
}

/// `$ ` lines (a trailing `\` continues one) and the lines under each.
fn commands_in(body: &[(usize, &str)]) -> Vec<Shown> {
    let mut commands: Vec<Shown> = Vec::new();
    let mut continued = false;
    for &(line, text) in body {
        if continued {
            let shown = commands.last_mut().expect("a command to continue");
            shown.command.push('\n');
            shown.command.push_str(text);
            continued = text.ends_with('\\');
        } else if let Some(command) = text.strip_prefix("$ ") {
            commands.push(Shown {
                line,
                command: command.to_string(),
                output: Vec::new(),
            });
            continued = text.ends_with('\\');
        } else if let Some(shown) = commands.last_mut() {
            shown.output.push(text.to_string());
        }
    }
    for shown in &mut commands {
        while shown
            .output
            .last()
            .is_some_and(|line| line.trim().is_empty())
        {
            shown.output.pop();
        }
    }
    commands
}

/// Runs an example; what went wrong, if anything.
fn run(example: &Example) -> Option<String> {
    let d = match &example.copy_of {
        Some(dir) => Deployment::copy_of(&Path::new(ROOT).join(dir)),
        None => Deployment::new(),
    };
    let _stop = StopEverything(d.root().to_path_buf());
    let sshd = if example.with_sshd {
        let name = format!("{}:{}", example.document, example.line);
        if !Sshd::installed(&name) {
            return None;
        }
        Some(Sshd::start())
    } else {
        None
    };
    let ssh_config = sshd
        .as_ref()
        .map(|sshd| sshd.config_path().display().to_string())
        .unwrap_or_default();
    let bin = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_tack"), bin.path().join("tack")).unwrap();
    let path = format!(
        "{}:{}",
        bin.path().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    for setup in &example.setup {
        let (code, printed) = shell(setup, d.root(), &path, &ssh_config);
        if code != 0 {
            return Some(format!(
                "{}:{}: the setup `{setup}` failed (exit code {code}):\n{printed}",
                example.document, example.line
            ));
        }
    }
    for shown in &example.commands {
        let (code, printed) = shell(&shown.command, d.root(), &path, &ssh_config);
        let should_fail = shown.output.iter().any(|line| line.starts_with("error:"));
        let mut problems = String::new();
        if should_fail != (code != 0) {
            let wanted = if should_fail { "fail" } else { "succeed" };
            let _ = writeln!(problems, "it should {wanted}, but exited with {code}");
        }
        let printed_lines: Vec<String> = printed.lines().map(str::to_string).collect();
        problems.push_str(&differences(&shown.output, &printed_lines));
        if !problems.is_empty() {
            return Some(format!(
                "{}:{}: `$ {}` does not do what the example shows:\n{problems}\
                 --- shown\n{}\n--- printed\n{printed}---",
                example.document,
                shown.line,
                shown.command,
                shown.output.join("\n"),
            ));
        }
    }
    None
}

/// Runs `sh -c command` in `dir`; its exit code and what it printed on
/// stdout and stderr, in the order it printed them.
fn shell(command: &str, dir: &Path, path: &str, ssh_config: &str) -> (i32, String) {
    let mut output = tempfile::tempfile().unwrap();
    let status = Command::new("sh")
        .arg("-c")
        .arg(command)
        .current_dir(dir)
        .env("PATH", path)
        .env("TACK_TEST_SSH_CONFIG", ssh_config)
        .env_remove("TACK_CACHE_DIR")
        .stdin(Stdio::null())
        .stdout(output.try_clone().unwrap())
        .stderr(output.try_clone().unwrap())
        .status()
        .expect("run sh");
    let mut printed = String::new();
    output.rewind().unwrap();
    output.read_to_string(&mut printed).unwrap();
    (status.code().unwrap_or(-1), printed)
}

/// What is wrong with `printed` given `shown`, or nothing: see the module
/// doc for the rules.
fn differences(shown: &[String], printed: &[String]) -> String {
    let more_allowed = shown.iter().any(|line| line.trim() == "...");
    let shown: Vec<String> = shown
        .iter()
        .filter(|line| line.trim() != "..." && !still_running(line))
        .cloned()
        .collect();
    let printed: Vec<String> = printed
        .iter()
        .filter(|line| !still_running(line))
        .cloned()
        .collect();
    let mut left: Vec<Vec<String>> = entries(&printed);
    let mut problems = String::new();
    for entry in entries(&shown) {
        match left
            .iter()
            .position(|printed| entry_matches(&entry, printed))
        {
            Some(found) => {
                left.remove(found);
            }
            None => {
                let _ = writeln!(problems, "shown but not printed:\n  {}", entry.join("\n  "));
            }
        }
    }
    if !more_allowed {
        for entry in left {
            let _ = writeln!(problems, "printed but not shown:\n  {}", entry.join("\n  "));
        }
    }
    problems
}

/// Whether `line` is a long step's `still running` note, whose presence
/// depends on the machine's speed.
fn still_running(line: &str) -> bool {
    line.starts_with("  ... ") && mask(line).ends_with(" still running ([TIME])")
}

/// Lines grouped into entries: a line and the indented lines under it.
fn entries(lines: &[String]) -> Vec<Vec<String>> {
    let mut entries: Vec<Vec<String>> = Vec::new();
    for line in lines {
        match entries.last_mut() {
            Some(entry) if line.starts_with(' ') => entry.push(line.clone()),
            _ => entries.push(vec![line.clone()]),
        }
    }
    entries
}

fn entry_matches(shown: &[String], printed: &[String]) -> bool {
    shown.len() == printed.len()
        && shown
            .iter()
            .zip(printed)
            .all(|(shown, printed)| line_matches(&mask(shown), &mask(printed)))
}

/// Whether `printed` is `shown` with each `[..]` standing for any text.
fn line_matches(shown: &str, printed: &str) -> bool {
    let parts: Vec<&str> = shown.split("[..]").collect();
    let (first, rest) = parts.split_first().expect("split yields a part");
    let Some(mut remaining) = printed.strip_prefix(first) else {
        return false;
    };
    let Some((last, middle)) = rest.split_last() else {
        return remaining.is_empty();
    };
    for part in middle {
        match remaining.find(part) {
            Some(at) => remaining = &remaining[at + part.len()..],
            None => return false,
        }
    }
    remaining.ends_with(last)
}

/// The line with what varies from run to run masked: a number after
/// `pid `, and a duration (`6.686s`, `15s`) after ` in ` or `(`.
fn mask(line: &str) -> String {
    let mut masked = String::new();
    let mut rest = line;
    loop {
        let next = ["pid ", " in ", "("]
            .iter()
            .filter_map(|marker| rest.find(marker).map(|at| at + marker.len()))
            .min();
        let Some(after) = next else {
            masked.push_str(rest);
            return masked;
        };
        let (before, tail) = rest.split_at(after);
        masked.push_str(before);
        let digits = tail
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(tail.len());
        let unit = &tail[digits..];
        let is_pid = before.ends_with("pid ");
        let is_duration =
            unit.starts_with('s') && !unit[1..].starts_with(|c: char| c.is_alphanumeric());
        if digits > 0 && is_pid {
            masked.push_str("[PID]");
            rest = unit;
        } else if digits > 0 && is_duration {
            masked.push_str("[TIME]");
            rest = &unit[1..];
        } else {
            rest = tail;
        }
    }
}

/// Stops what an example left running from its directory: SIGTERM (the
/// tutorial's supervisord stops its programs), then SIGKILL.
struct StopEverything(PathBuf);

impl Drop for StopEverything {
    fn drop(&mut self) {
        let running = processes_running_from(&self.0);
        for &pid in &running {
            signal(pid, "TERM");
        }
        wait_until(STOP_PATIENCE, || running.iter().all(|&pid| !alive(pid)));
        for pid in processes_running_from(&self.0) {
            signal(pid, "KILL");
        }
    }
}

#[test]
fn varying_numbers_are_masked() {
    assert_eq!(
        mask("localhost: 5 updated in 6.686s"),
        "localhost: 5 updated in [TIME]"
    );
    assert_eq!(
        mask("Would reload (pid 10828) Supervisor > Service(supervisord)"),
        "Would reload (pid [PID]) Supervisor > Service(supervisord)"
    );
    assert_eq!(
        mask("  ... X still running (15s)"),
        "  ... X still running ([TIME])"
    );
    for unchanged in [
        "priority (provided as `programs`): 10 -> 20",
        "in 3 seconds",
    ] {
        assert_eq!(mask(unchanged), unchanged);
    }
}

#[test]
fn a_wildcard_matches_any_text_within_a_line() {
    assert!(line_matches(
        "Updating [..] > File([..])",
        "Updating Tick > File(tick.sh)"
    ));
    assert!(!line_matches(
        "Updating [..] > File(x)",
        "Updating Tick > File(tick.sh)"
    ));
    assert!(line_matches("abc", "abc"));
    assert!(!line_matches("abc", "abcd"));
    assert!(line_matches("a[..]", "abcd"));
    assert!(line_matches("a[..]bc", "abc"));
    assert!(!line_matches("a[..]a", "a"));
}

#[test]
fn entries_match_in_any_order_with_their_indented_lines() {
    let lines = |text: &str| text.lines().map(str::to_string).collect::<Vec<_>>();
    let shown = lines("B\n    because b\nA\nsummary");
    assert_eq!(
        differences(&shown, &lines("A\nB\n    because b\nsummary")),
        ""
    );
    assert_ne!(differences(&shown, &lines("A\nB\nsummary")), "");
    assert_ne!(
        differences(&shown, &lines("A\nB\n    because b\nsummary\nC")),
        ""
    );
    assert_eq!(
        differences(&lines("A\n..."), &lines("A\nB\n    because b")),
        ""
    );
    assert_eq!(
        differences(
            &lines("Running X ...\nUpdating X"),
            &lines("Running X ...\n  ... X still running (15s)\nUpdating X")
        ),
        ""
    );
}
