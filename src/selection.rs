//! What a user names on the command line to pick nodes: `--force NODE`
//! and `tack explain ENV NODE` take a node id (`tick/file:tick.sh`) or a
//! component name (`tick`).
//!
//! A name that matches nothing is a typo, and silently forcing or
//! explaining nothing would look like success: [`check`] refuses it and
//! lists the ids and components closest to what was typed.

use std::collections::BTreeSet;

use crate::error::{Error, Result};

/// How many close matches an error lists.
const MAX_SUGGESTIONS: usize = 5;

/// Whether `wanted` names the node `id` of `component`.
pub fn selects(wanted: &str, id: &str, component: &str) -> bool {
    wanted == id || wanted == component
}

/// Checks that every name in `wanted` (given with `flag`, e.g.
/// `--force`) names one of `nodes`, `(id, component)` pairs.
pub fn check<'a>(
    flag: &str,
    wanted: &[String],
    nodes: impl Iterator<Item = (&'a str, &'a str)> + Clone,
) -> Result<()> {
    for name in wanted {
        if nodes
            .clone()
            .any(|(id, component)| selects(name, id, component))
        {
            continue;
        }
        let candidates: BTreeSet<&str> = nodes
            .clone()
            .flat_map(|(id, component)| [id, component])
            .collect();
        let close = close_matches(name, &candidates);
        let hint = if close.is_empty() {
            let components: BTreeSet<&str> =
                nodes.clone().map(|(_, component)| component).collect();
            format!(
                "components: {}",
                components.into_iter().collect::<Vec<_>>().join(", ")
            )
        } else {
            format!(
                "did you mean {}?",
                close
                    .iter()
                    .map(|candidate| format!("`{candidate}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        };
        return Err(Error::Usage(format!(
            "{flag} `{name}` matches no node id or component ({hint})"
        )));
    }
    Ok(())
}

/// The candidates closest to `name`: those containing it, and those within
/// a few edits of it (a third of its length, at least two), nearest first.
fn close_matches<'a>(name: &str, candidates: &BTreeSet<&'a str>) -> Vec<&'a str> {
    let budget = (name.chars().count() / 3).max(2);
    let mut scored: Vec<(usize, &str)> = candidates
        .iter()
        .filter_map(|candidate| {
            let distance = edit_distance(name, candidate);
            if candidate.contains(name) || distance <= budget {
                Some((distance, *candidate))
            } else {
                None
            }
        })
        .collect();
    scored.sort();
    scored
        .into_iter()
        .take(MAX_SUGGESTIONS)
        .map(|(_, candidate)| candidate)
        .collect()
}

/// Levenshtein distance over characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, a_char) in a.chars().enumerate() {
        let mut current = vec![i + 1];
        for (j, b_char) in b.iter().enumerate() {
            let substitution = previous[j] + usize::from(a_char != *b_char);
            current.push(substitution.min(previous[j + 1] + 1).min(current[j] + 1));
        }
        previous = current;
    }
    previous[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edit_distance_counts_single_edits() {
        assert_eq!(edit_distance("tick", "tick"), 0);
        assert_eq!(edit_distance("tikc", "tick"), 2);
        assert_eq!(edit_distance("tck", "tick"), 1);
        assert_eq!(edit_distance("", "ab"), 2);
    }

    #[test]
    fn a_typo_lists_the_close_ids() {
        let nodes = [("tick/file:tick.sh", "tick"), ("tock/file:tock.sh", "tock")];
        let error = check("--force", &["tik".to_string()], nodes.iter().copied()).unwrap_err();
        assert_eq!(
            error.to_string(),
            "--force `tik` matches no node id or component (did you mean `tick`, `tock`?)"
        );
        assert!(check("--force", &["tock".to_string()], nodes.iter().copied()).is_ok());
    }
}
