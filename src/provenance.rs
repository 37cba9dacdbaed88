//! Values that remember where they came from.
//!
//! Every value a node reads is kept as an [`Input`]: what it is now, the
//! place in the deployment's files where a person can change it, and the
//! inputs it was computed from. A provided value rendered from the
//! provider's attributes carries those attributes in `via`, so an
//! explanation can walk from a deployed file back to the line someone
//! edited. Only `value` is hashed into a node's key; `origin` and `via`
//! exist to explain.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::error::Location;

/// A string read from a config file, with its location.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Sourced {
    pub value: String,
    pub location: Location,
}

impl Sourced {
    pub fn new(value: impl Into<String>, location: Location) -> Sourced {
        Sourced {
            value: value.into(),
            location,
        }
    }
}

/// One named input of a node, or of a value a node read.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Input {
    pub value: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<Location>,
    /// Shared, not copied: a value passed along a chain of 2,000
    /// components carries the whole chain, and a copy per link would cost
    /// memory quadratic in its length.
    #[serde(default, skip_serializing_if = "no_via")]
    pub via: Arc<BTreeMap<String, Input>>,
    /// A secret, or computed from one: its value is hashed before it
    /// leaves the configure phase ([`mask_sensitive`]). Set on every input
    /// whose story holds a secret ([`Input::with_via`] carries it up), so
    /// asking needs no walk down a story that may be 20,000 links long.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub sensitive: bool,
}

impl Input {
    pub fn plain(value: impl Into<String>) -> Input {
        Input {
            value: value.into(),
            origin: None,
            via: Arc::default(),
            sensitive: false,
        }
    }

    pub fn sourced(sourced: &Sourced) -> Input {
        Input {
            value: sourced.value.clone(),
            origin: Some(sourced.location.clone()),
            via: Arc::default(),
            sensitive: false,
        }
    }

    pub fn at(value: impl Into<String>, origin: Location) -> Input {
        Input {
            value: value.into(),
            origin: Some(origin),
            via: Arc::default(),
            sensitive: false,
        }
    }

    /// This input as computed from `via`: a secret if anything in `via` is.
    pub fn with_via(mut self, via: BTreeMap<String, Input>) -> Input {
        self.sensitive |= via.values().any(Input::is_sensitive);
        self.via = Arc::new(via);
        self
    }

    /// The same input with its value, and every value it came from,
    /// replaced by a hash: still a key input, never shown.
    pub fn masked(&self) -> Input {
        Input {
            value: mask(&self.value),
            origin: self.origin.clone(),
            via: Arc::new(
                self.via
                    .iter()
                    .map(|(name, input)| (name.clone(), input.masked()))
                    .collect(),
            ),
            sensitive: true,
        }
    }

    pub fn secret(mut self, sensitive: bool) -> Input {
        self.sensitive = sensitive;
        self
    }

    /// Whether this value or anything it came from is a secret.
    pub fn is_sensitive(&self) -> bool {
        self.sensitive
    }
}

/// `inputs` with every sensitive value, and every value computed from one,
/// replaced by its hash: what may be shown, stored and keyed.
pub fn mask_sensitive(inputs: &Inputs) -> Inputs {
    inputs
        .iter()
        .map(|(name, input)| {
            // Nothing below a value that is not sensitive is: it is
            // shared as it is.
            let input = if input.is_sensitive() {
                input.masked()
            } else {
                input.clone()
            };
            (name.clone(), input)
        })
        .collect()
}

/// How many steps back a node keeps where its values came from. Explain
/// follows a value back this far; a longer story (a value passed along a
/// chain of hundreds of components) would make every record along the
/// chain carry the chain, and nest deeper than a state file may.
pub const MAX_VIA_DEPTH: usize = 24;

/// `inputs` with where each value came from kept `depth` steps back at
/// most. Only values are keyed, so this changes no key.
pub fn bounded(inputs: &Inputs, depth: usize) -> Inputs {
    inputs
        .iter()
        .map(|(name, input)| {
            let via = if depth == 0 {
                Arc::default()
            } else if !deeper_than(input, depth) {
                input.via.clone()
            } else {
                Arc::new(bounded(&input.via, depth - 1))
            };
            (
                name.clone(),
                Input {
                    via,
                    ..input.clone()
                },
            )
        })
        .collect()
}

/// Whether the story of `input` goes more than `depth` steps back; looks
/// no further than that.
fn deeper_than(input: &Input, depth: usize) -> bool {
    match depth {
        0 => !input.via.is_empty(),
        _ => input.via.values().any(|via| deeper_than(via, depth - 1)),
    }
}

/// The key of the hashes [`mask`] makes: one per deployment, set once
/// before configuring ([`set_mask_key`]), kept in `.tack/` with mode 0600.
static MASK_KEY: std::sync::OnceLock<[u8; 32]> = std::sync::OnceLock::new();

/// Sets the key of [`mask`] for this process; the first call wins, as a
/// process configures one deployment.
pub fn set_mask_key(key: [u8; 32]) {
    let _ = MASK_KEY.set(key);
}

/// How a sensitive value is kept: `(sensitive, keyed 0123456789abcdef)`, a
/// blake3 keyed with the deployment's own key. A plain hash of a short
/// password is reversed by guessing in seconds; this one tells only
/// whether the value changed, and only to someone holding the key.
/// Output never shows it ([`crate::reason`] says `changed`).
pub fn mask(value: &str) -> String {
    if value.starts_with("(sensitive, ") {
        return value.to_string();
    }
    let key = MASK_KEY.get().copied().unwrap_or([0; 32]);
    let hash = blake3::keyed_hash(&key, value.as_bytes()).to_hex();
    format!("(sensitive, keyed {})", &hash[..16])
}

/// The clear values of the secrets something read, to cut out of any text
/// it reports: an error next to a secret, the output of a failed step
/// that printed one. Its `Debug` shows only how many there are.
#[derive(Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Redactions(Vec<String>);

impl std::fmt::Debug for Redactions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Redactions({})", self.0.len())
    }
}

impl Redactions {
    /// Every sensitive value in `inputs`, and in what they came from.
    pub fn of<'a>(inputs: impl IntoIterator<Item = &'a Input>) -> Redactions {
        fn collect(input: &Input, into: &mut Vec<String>) {
            // Nothing below an input that is not sensitive is: a long
            // story of plain values is not walked.
            if !input.sensitive {
                return;
            }
            if !input.value.is_empty() {
                into.push(input.value.clone());
            }
            for via in input.via.values() {
                collect(via, into);
            }
        }
        let mut values = Vec::new();
        for input in inputs {
            collect(input, &mut values);
        }
        // Longest first, so a value containing another is cut whole.
        values.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        values.dedup();
        Redactions(values)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// `text` with every secret value replaced by `(secret)`.
    pub fn apply(&self, text: &str) -> String {
        let mut text = text.to_string();
        for value in &self.0 {
            if text.contains(value.as_str()) {
                text = text.replace(value.as_str(), "(secret)");
            }
        }
        text
    }
}

/// The named inputs of one node, in a stable order.
pub type Inputs = BTreeMap<String, Input>;

/// Whether `a` and `b` hold the same values, down through every value
/// they came from (`via`), places aside. The key hashes only the top
/// values, so two input sets with one key can still tell different stories
/// of how those values came about.
pub fn same_values(a: &Inputs, b: &Inputs) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|((name_a, a), (name_b, b))| {
            name_a == name_b
                && a.value == b.value
                && a.sensitive == b.sensitive
                && same_values(&a.via, &b.via)
        })
}

/// Inputs of plain values with no place in a file behind them.
pub fn plain_inputs(pairs: &[(&str, &str)]) -> Inputs {
    pairs
        .iter()
        .map(|(name, value)| (name.to_string(), Input::plain(*value)))
        .collect()
}

fn no_via(via: &Arc<BTreeMap<String, Input>>) -> bool {
    via.is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A value computed from a secret, through a plain value, is a secret,
    /// and the secret is redacted from what reads the value.
    #[test]
    fn a_secret_deep_in_a_story_is_carried_up_to_every_value_computed_from_it() {
        let secret = Input::plain("hunter2").secret(true);
        let middle =
            Input::plain("user:hunter2").with_via(BTreeMap::from([("var pw".to_string(), secret)]));
        let top = Input::plain("url").with_via(BTreeMap::from([("var auth".to_string(), middle)]));
        assert!(top.is_sensitive());
        assert_eq!(
            Redactions::of([&top]).apply("hunter2 and user:hunter2"),
            "(secret) and (secret)"
        );

        let plain =
            Input::plain("a").with_via(BTreeMap::from([("var b".to_string(), Input::plain("b"))]));
        assert!(!plain.is_sensitive());
        assert!(Redactions::of([&plain]).is_empty());
    }
}
