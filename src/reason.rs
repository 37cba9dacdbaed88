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

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
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
        old: Option<Box<Input>>,
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

fn show(input: Option<&Input>) -> String {
    match input {
        None => "(none)".to_string(),
        Some(input) => quote(&input.value),
    }
}

/// Short values as they are; long or multi-line ones elided.
fn quote(value: &str) -> String {
    let first = value.lines().next().unwrap_or_default();
    if value.contains('\n') || first.chars().count() > 60 {
        let cut: String = first.chars().take(40).collect();
        format!("{cut}…")
    } else if value.is_empty() {
        "\"\"".to_string()
    } else {
        value.to_string()
    }
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
    line(
        out,
        indent,
        &format!("{label}: {} -> {}", show(old), show(new)),
    );
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
