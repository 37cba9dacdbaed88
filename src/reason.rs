//! Why a node runs (or why it does not), as data a person can read.
//!
//! Every changed input is named, not only the first, and each one is
//! followed back through the values it was computed from (a provided value,
//! the provider's attribute) to the place a person edited, with the old and
//! the new value at every step.

use std::fmt::Write as _;
use std::path::PathBuf;

use serde::Serialize;

use crate::provenance::{Input, Inputs};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum Reason {
    /// No record of this node on this host.
    NeverApplied,
    /// The last attempt started and did not finish.
    LastAttemptUnfinished,
    /// `--force`.
    Forced,
    /// A named input differs from the one last applied.
    InputChanged {
        name: String,
        #[serde(serialize_with = "shown_input")]
        old: Option<Box<Input>>,
        #[serde(serialize_with = "shown_input")]
        new: Option<Box<Input>>,
    },
    /// The target is not what tack left there.
    Drift { path: PathBuf, what: String },
    /// The target does not exist.
    Missing { path: PathBuf },
    /// A service or program is not running.
    NotRunning { why: String },
    /// A program runs as another process than the one tack left: something
    /// else restarted it (supervisord after a crash, a person).
    RestartedOutside { old: i32, new: i32 },
    /// Inputs changed, but what the node deploys is the same.
    OutputUnchanged,
}

/// An input as a report shows it: a secret's value and its hash become
/// `(secret)` everywhere in it, as in the text output.
fn shown_input<S: serde::Serializer>(
    input: &Option<Box<Input>>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    fn hide(input: &Input) -> Input {
        Input {
            value: if input.is_sensitive() {
                "(secret)".to_string()
            } else {
                input.value.clone()
            },
            origin: input.origin.clone(),
            via: std::sync::Arc::new(
                input
                    .via
                    .iter()
                    .map(|(k, v)| (k.clone(), hide(v)))
                    .collect(),
            ),
            sensitive: input.sensitive,
        }
    }
    input.as_deref().map(hide).serialize(serializer)
}

/// The input changes between what was applied and what is configured now.
///
/// A changed dependency (`after X`) that another changed dependency also
/// changed through is left out: its story is told once, inside the other.
pub fn input_changes(old: &Inputs, new: &Inputs) -> Vec<Reason> {
    let mut names: Vec<&String> = old.keys().chain(new.keys()).collect();
    names.sort();
    names.dedup();
    let changed =
        |name: &String| old.get(name).map(|i| &i.value) != new.get(name).map(|i| &i.value);
    let changed: Vec<&String> = names.into_iter().filter(|name| changed(name)).collect();
    let told_inside = |name: &String| {
        name.starts_with("after ")
            && changed.iter().any(|other| {
                other.starts_with("after ")
                    && other != &name
                    && new
                        .get(*other)
                        .is_some_and(|input| input.via.contains_key(name))
            })
    };
    changed
        .iter()
        .filter(|name| !told_inside(name))
        .map(|name| Reason::InputChanged {
            name: (*name).clone(),
            old: old.get(*name).cloned().map(Box::new),
            new: new.get(*name).cloned().map(Box::new),
        })
        .collect()
}

impl Reason {
    /// The reason as indented lines, each starting with `indent`.
    pub fn render(&self, indent: &str) -> String {
        let mut out = String::new();
        match self {
            Reason::NeverApplied => line(&mut out, indent, "never applied on this host"),
            Reason::LastAttemptUnfinished => {
                line(&mut out, indent, "the last attempt did not finish")
            }
            Reason::Forced => line(&mut out, indent, "forced with --force"),
            Reason::OutputUnchanged => line(
                &mut out,
                indent,
                "inputs changed, but the output is the same: nothing to do",
            ),
            Reason::NotRunning { why } => line(&mut out, indent, &format!("not running: {why}")),
            Reason::RestartedOutside { old, new } => line(
                &mut out,
                indent,
                &format!("restarted outside tack: {old} -> {new}"),
            ),
            Reason::Missing { path } => line(
                &mut out,
                indent,
                &format!("`{}` is missing", path.display()),
            ),
            Reason::Drift { path, what } => line(
                &mut out,
                indent,
                &format!("`{}` drifted: {what}", path.display()),
            ),
            Reason::InputChanged { name, old, new } => {
                render_change(&mut out, indent, name, old.as_deref(), new.as_deref());
            }
        }
        out
    }
}

fn line(out: &mut String, indent: &str, text: &str) {
    let _ = writeln!(out, "{indent}{text}");
}

/// Values longer than this are elided around the part that changed.
const SHORT: usize = 60;
/// How much unchanged text is kept on each side of a change.
const CONTEXT: usize = 16;
/// How many lines of a multi-line value's diff are shown.
const DIFF_LINES: usize = 8;

/// An absent value.
const NONE: &str = "(none)";

/// The old and new value side by side, on one line: short values as they
/// are, long ones cut to the part that differs with a little context.
fn contrast(old: Option<&Input>, new: Option<&Input>) -> String {
    let (Some(old), Some(new)) = (old, new) else {
        let head =
            |input: Option<&Input>| input.map_or(NONE.to_string(), |i| elide(&i.value, 0, 0));
        return format!("{} -> {}", head(old), head(new));
    };
    let (old, new) = (&old.value, &new.value);
    let old_chars: Vec<char> = old.chars().collect();
    let new_chars: Vec<char> = new.chars().collect();
    let prefix = old_chars
        .iter()
        .zip(&new_chars)
        .take_while(|(a, b)| a == b)
        .count();
    let room = old_chars.len().min(new_chars.len()) - prefix;
    let suffix = old_chars
        .iter()
        .rev()
        .zip(new_chars.iter().rev())
        .take(room)
        .take_while(|(a, b)| a == b)
        .count();
    format!(
        "{} -> {}",
        elide(old, prefix, suffix),
        elide(new, prefix, suffix)
    )
}

/// `value` on one line: as it is when short, else the part between its
/// first `prefix` and last `suffix` characters (the part that changed)
/// with [`CONTEXT`] characters around it, `…` where text was cut.
fn elide(value: &str, prefix: usize, suffix: usize) -> String {
    if value.is_empty() {
        return "\"\"".to_string();
    }
    let chars: Vec<char> = value.chars().collect();
    if chars.len() <= SHORT && !value.contains('\n') {
        return value.to_string();
    }
    let start = prefix.saturating_sub(CONTEXT);
    let changed_end = chars.len() - suffix;
    let end = (changed_end + CONTEXT)
        .min(chars.len())
        .min(start.max(prefix) + SHORT);
    let end = end.max((start + CONTEXT).min(chars.len()));
    let middle: String = chars[start..end].iter().collect();
    let middle = middle.replace('\n', "⏎");
    format!(
        "{}{middle}{}",
        if start > 0 { "…" } else { "" },
        if end < chars.len() { "…" } else { "" }
    )
}

/// A small line diff of two multi-line values, each line starting with
/// `indent`; `None` unless one of them has several lines.
fn line_diff(indent: &str, old: Option<&Input>, new: Option<&Input>) -> Option<String> {
    let (old, new) = (old?.value.as_str(), new?.value.as_str());
    if !old.contains('\n') && !new.contains('\n') {
        return None;
    }
    let diff = similar::TextDiff::from_lines(old, new);
    let mut lines = Vec::new();
    for group in diff.grouped_ops(1) {
        if !lines.is_empty() {
            lines.push(format!("{indent}  …"));
        }
        for op in group {
            for change in diff.iter_changes(&op) {
                let sign = match change.tag() {
                    similar::ChangeTag::Delete => '-',
                    similar::ChangeTag::Insert => '+',
                    similar::ChangeTag::Equal => ' ',
                };
                let text = change.value().trim_end_matches('\n');
                lines.push(format!("{indent}{sign} {text}"));
            }
        }
    }
    let more = lines.len().saturating_sub(DIFF_LINES);
    lines.truncate(DIFF_LINES);
    if more > 0 {
        lines.push(format!("{indent}  … {more} more diff lines"));
    }
    Some(lines.iter().map(|line| format!("{line}\n")).collect())
}

fn render_change(
    out: &mut String,
    indent: &str,
    name: &str,
    old: Option<&Input>,
    new: Option<&Input>,
) {
    if let Some(dependency) = name.strip_prefix("after ") {
        line(out, indent, &format!("{dependency} changed"));
        if let (Some(old), Some(new)) = (old, new) {
            render_via(out, indent, old, new);
        }
        return;
    }
    let origin = new.or(old).and_then(|input| input.origin.as_ref());
    let what = match (name.strip_prefix("var "), origin) {
        // A value a person wrote: show it where they wrote it.
        (_, Some(origin)) if origin.key.is_some() => origin.to_string(),
        (Some(var), _) => format!("template variable `{var}`"),
        (None, Some(origin)) => format!("{name} ({origin})"),
        (None, None) => name.to_string(),
    };
    let label = match name.strip_prefix("var ") {
        // `KEY[host/component].FIELD`: a value another component provided.
        Some(var) if origin.is_some_and(|o| o.key.is_some()) => match var.split_once('[') {
            Some((key, _)) => format!("{what} (provided as `{key}`)"),
            None => format!("{what} (template variable `{var}`)"),
        },
        _ => what,
    };
    if new.or(old).is_some_and(Input::is_sensitive) {
        // Neither a secret nor its hash is shown: a hash of a short
        // password gives it away. Where it changed is enough to act on.
        let label = match (name.strip_prefix("var "), origin) {
            (Some(var), Some(origin)) if !var.contains('[') => {
                format!("secret {var} ({})", origin.file)
            }
            _ => label,
        };
        line(out, indent, &format!("{label}: changed"));
    } else {
        match line_diff(&format!("{indent}    "), old, new) {
            Some(diff) => {
                line(out, indent, &format!("{label}:"));
                out.push_str(&diff);
            }
            None => line(out, indent, &format!("{label}: {}", contrast(old, new))),
        }
    }
    if let (Some(old), Some(new)) = (old, new) {
        render_via(out, indent, old, new);
    }
}

/// The changes among the inputs a value was computed from, one level down.
fn render_via(out: &mut String, indent: &str, old: &Input, new: &Input) {
    let deeper = format!("{indent}  ");
    for change in input_changes(&old.via, &new.via) {
        if let Reason::InputChanged { name, old, new } = change {
            out.push_str(&format!("{deeper}because "));
            let mut nested = String::new();
            render_change(&mut nested, &deeper, &name, old.as_deref(), new.as_deref());
            out.push_str(nested.trim_start());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Location;
    use std::collections::BTreeMap;

    #[test]
    fn provided_value_chains_to_the_attribute_a_person_edited() {
        let attribute = |value: &str| {
            Input::at(
                value,
                Location::section("components/db/component.cfg", "attributes", 1).key("port", 2),
            )
        };
        let provided = |value: &str, port: &str| {
            let mut via = BTreeMap::new();
            via.insert("var port".to_string(), attribute(port));
            Input::at(
                value,
                Location::section("components/db/component.cfg", "provide:database", 4)
                    .key("port", 5),
            )
            .with_via(via)
        };
        let reason = Reason::InputChanged {
            name: "var database[localhost/db].port".into(),
            old: Some(Box::new(provided("5432", "5432"))),
            new: Some(Box::new(provided("5433", "5433"))),
        };
        assert_eq!(
            reason.render("    "),
            "    components/db/component.cfg:5 [provide:database] port (provided as `database`): 5432 -> 5433\n      because components/db/component.cfg:2 [attributes] port (template variable `port`): 5432 -> 5433\n"
        );
    }

    #[test]
    fn a_long_value_is_elided_around_the_change() {
        let dsn = |db: &str| {
            Input::plain(format!(
                "postgres://user@db.internal.example.com:5432/{db}?sslmode=require"
            ))
        };
        assert_eq!(
            contrast(Some(&dsn("app_production")), Some(&dsn("app_staging"))),
            "…le.com:5432/app_production?sslmode=require -> …le.com:5432/app_staging?sslmode=require"
        );
        assert_eq!(
            contrast(None, Some(&Input::plain("short"))),
            "(none) -> short"
        );
    }

    #[test]
    fn a_multi_line_value_shows_a_small_diff() {
        let old = Input::plain("one\ntwo\nthree\nfour\nfive");
        let new = Input::plain("one\ntwo\nTHREE\nfour\nfive");
        let reason = Reason::InputChanged {
            name: "run".into(),
            old: Some(Box::new(old)),
            new: Some(Box::new(new)),
        };
        assert_eq!(
            reason.render(""),
            "run:\n      two\n    - three\n    + THREE\n      four\n"
        );
    }

    #[test]
    fn only_changed_inputs_are_reasons() {
        let mut old = Inputs::new();
        old.insert("mode".into(), Input::plain("0644"));
        old.insert("kind".into(), Input::plain("file"));
        let mut new = old.clone();
        new.insert("mode".into(), Input::plain("0755"));
        let changes = input_changes(&old, &new);
        assert_eq!(changes.len(), 1);
        assert_eq!(changes[0].render(""), "mode: 0644 -> 0755\n");
    }
}
