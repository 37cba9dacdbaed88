//! Node keys: what makes a node dirty, and what deliberately does not.
//!
//! # What a key is
//!
//! Every node (one resource of one component on one host) has a *key*: a
//! blake3 hash over its **named inputs** ([`crate::provenance::Inputs`]).
//! The inputs are kept by name in the state file, not only hashed, so that
//! when a key changes tack can say which input changed, from what to what,
//! and where that value came from ([`crate::reason`]).
//!
//! A node also has an *output fingerprint*: a hash of what it puts on the
//! host (for a file: path, mode and content). Two different keys can have
//! the same output (an attribute changed, but the template renders the same
//! text); such a node updates its record and does nothing, and says so.
//! Dependents across nodes read the output fingerprint, never the key, so an
//! unchanged output stops invalidation from spreading.
//!
//! # What goes into a key
//!
//! * `kind` and the resource's own settings (`path`, `mode`, `target`, ...).
//! * `source`: the path and content hash of a source file, or `content`:
//!   inline text (a hash of it when the file is sensitive).
//! * `template`: whether the source is rendered.
//! * `var NAME`: every context variable the template *refers to*, and
//!   nothing else. `var KEY[host/component].FIELD` for each field of each
//!   value provided for a required key. An attribute that no template of a
//!   node reads is not in that node's key.
//! * `after NODE`, for a barrier (command, buildout, service, program):
//!   the output fingerprint of each dependency it *watches*
//!   ([`crate::graph::Watches`]). The input carries the dependency's own
//!   inputs, so an explanation can walk down the chain.
//!
//! Facts of the host are not hashed but *observed*: buildout's python
//! version is recorded after a build and compared on every run, and a
//! service's pid and start time are read from its pid file and `/proc`.
//! A changed fact reruns the node just as a changed key does, with its own
//! reason.
//!
//! # What is deliberately left out
//!
//! * **Locations.** Where a value was written (file, section, line) is kept
//!   beside the value for explanations but is not hashed: moving an
//!   override three lines down, or from the component into the
//!   environment, changes no key unless the value changed.
//! * **The deployment's absolute path**, unless a template reads
//!   `workdir`: then the rendered file really embeds it, and moving the
//!   checkout must rewrite it. Targets inside a work dir enter output
//!   fingerprints by their path relative to it, so keys stay relocatable
//!   and a shared cache can restore a step in another checkout.
//! * **Timestamps.** Neither source mtimes nor deploy times are inputs;
//!   editing a file and undoing the edit changes nothing.
//! * **The tack version.** Keys are recomputed from inputs each run; a new
//!   tack that renders the same output does not redeploy.
//!
//! # Drift is not part of the key
//!
//! A key says what *should* be on the host. Whether it *is* there is
//! observed separately ([`crate::observe`]): stat first, and hash only when
//! the stat differs from the one recorded, as git's index does.
//!
//! # Where state lives
//!
//! `.tack/state/<environment>/<host>/<component>.json`, each written
//! atomically, plus a journal beside them while a deploy runs; see
//! [`crate::state`].
//!
//! # Tracing it
//!
//! `tack local ENV --dry-run --explain` prints, for every node that would
//! run, each input that changed with its old and new value and the place a
//! person edited; `.tack/state/ENV/HOST/COMPONENT.json` shows the recorded
//! inputs.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::provenance::Inputs;

/// A blake3 hash, shown and stored as hex.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Fingerprint(pub [u8; 32]);

impl Fingerprint {
    pub fn of_bytes(bytes: &[u8]) -> Fingerprint {
        Fingerprint(*blake3::hash(bytes).as_bytes())
    }

    pub fn to_hex(self) -> String {
        blake3::Hash::from_bytes(self.0).to_hex().to_string()
    }

    pub fn from_hex(hex: &str) -> Option<Fingerprint> {
        blake3::Hash::from_hex(hex)
            .ok()
            .map(|hash| Fingerprint(*hash.as_bytes()))
    }

    /// A digest of any value with a `Hash` impl, for telling whether a
    /// parsed structure changed between two runs of the *same* tack build
    /// (`Hash` impls may differ between builds; never use it for keys).
    pub fn of_hash<T: std::hash::Hash + ?Sized>(value: &T) -> Fingerprint {
        struct Blake3(blake3::Hasher);
        impl std::hash::Hasher for Blake3 {
            fn write(&mut self, bytes: &[u8]) {
                self.0.update(bytes);
            }
            fn finish(&self) -> u64 {
                0
            }
        }
        let mut hasher = Blake3(blake3::Hasher::new());
        value.hash(&mut hasher);
        Fingerprint(*hasher.0.finalize().as_bytes())
    }

    /// The first 12 hex digits, for people.
    pub fn short(self) -> String {
        self.to_hex()[..12].to_string()
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.short())
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.short())
    }
}

impl Serialize for Fingerprint {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for Fingerprint {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let hex = String::deserialize(deserializer)?;
        Fingerprint::from_hex(&hex).ok_or_else(|| serde::de::Error::custom("invalid fingerprint"))
    }
}

/// Hashes named fields with length framing, so that `("ab", "c")` and
/// `("a", "bc")` never collide.
#[derive(Default)]
pub struct FingerprintBuilder(blake3::Hasher);

impl FingerprintBuilder {
    pub fn field(&mut self, name: &str, value: &[u8]) -> &mut Self {
        for part in [name.as_bytes(), value] {
            self.0.update(&(part.len() as u64).to_le_bytes());
            self.0.update(part);
        }
        self
    }

    pub fn finish(&self) -> Fingerprint {
        Fingerprint(*self.0.finalize().as_bytes())
    }
}

/// The key of a node: its named inputs' values, in name order.
pub fn node_key(inputs: &Inputs) -> Fingerprint {
    let mut builder = FingerprintBuilder::default();
    let dropped = crate::fault::dropped_input();
    for (name, input) in inputs {
        if dropped.is_some_and(|dropped| name.starts_with(dropped)) {
            continue;
        }
        builder.field(name, input.value.as_bytes());
    }
    builder.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Location;
    use crate::provenance::Input;

    fn inputs(pairs: &[(&str, Input)]) -> Inputs {
        pairs
            .iter()
            .map(|(name, input)| (name.to_string(), input.clone()))
            .collect()
    }

    #[test]
    fn locations_are_not_hashed() {
        let here = inputs(&[("var port", Input::at("5432", Location::file("a.cfg")))]);
        let there = inputs(&[(
            "var port",
            Input::at("5432", Location::file("b.cfg").at_line(9)),
        )]);
        assert_eq!(node_key(&here), node_key(&there));
    }

    #[test]
    fn values_are_hashed_with_framing() {
        let a = inputs(&[("ab", Input::plain("c"))]);
        let b = inputs(&[("a", Input::plain("bc"))]);
        assert_ne!(node_key(&a), node_key(&b));
    }

    #[test]
    fn hex_round_trip() {
        let fingerprint = Fingerprint::of_bytes(b"tack");
        assert_eq!(
            Fingerprint::from_hex(&fingerprint.to_hex()),
            Some(fingerprint)
        );
    }
}
