//! tack's integration tests: each runs the `tack` binary on a deployment
//! written into a temp dir and checks what it prints and leaves on disk.
//!
//! The modules live in directories (`deploy/mod.rs`, not `deploy.rs`) because
//! Cargo would build every `tests/*.rs` as a test crate of its own.

/// `Deployment`: a builder for deployments in temp dirs, running tack on
/// them and snapshotting `work/` and `.tack/`.
mod support;

/// Deploying: contents and modes, incremental reruns, drift, dry runs,
/// explanations, diffs, state.
mod deploy;

/// Bad input: one test per mistake, each refused with its location and
/// nothing changed.
mod errors;

/// The executor: parallelism and order from recorded instants, failure
/// semantics, step outputs, the JSON report.
mod executor;

/// batou's "Using components" tutorial end to end with the real programs:
/// buildout from PyPI builds supervisor, supervisord runs tick, and each
/// edit, kill or deletion leads to exactly the restart it needs.
mod tutorial;

/// What a deploy shows while it runs: start lines, the live status line
/// on a terminal, plain lines on a pipe.
mod output;

/// The README's console examples, run as shown.
mod readme;

/// Locking: one tack per deployment directory at a time.
mod locking;

/// A second user who can write the work dir plants links, swaps
/// directories and races root's deploys, and steers nothing outside it.
mod hostile;

/// Safety: no writes through planted symlinks, removed nodes reported and
/// pruned only as far as tack made them.
mod safety;

/// The no-op fast path never hides a change.
mod fastpath;

/// A change reconfigures only the components it reaches; what the record
/// of the last deploy cannot vouch for takes the full path.
mod partial;

/// The incremental path ends where the full path ends, scenario by
/// scenario: lost state, other hosts, concurrent deploys, racy stats.
mod agreement;

/// The prebuilt `[supervisor]`: per-program restarts with the real
/// supervisor.
mod supervisor;

/// Secrets encrypted with age: interchangeable with the age CLI, refused
/// without an identity, never in clear outside the files that render them.
mod secrets;

/// The step cache: restore instead of rerun, verified, shared.
mod cache;

/// Crash safety: a deploy SIGKILLed after any node or in the middle of any
/// write (first deploy and redeploy) converges on the next run, and never
/// leaves a state that calls an unfinished node done.
mod crash;

/// Incrementality, differentially: after each generated edit an
/// incremental deploy leaves `work/` as a deploy from scratch does and
/// runs exactly the nodes whose output was not already on disk.
mod incremental;

/// Interrupts: SIGINT or SIGTERM stops the running step's process group,
/// records it as unfinished and exits 130 or 143; daemons keep running.
mod interrupt;

/// The ssh transport against a real OpenSSH server on 127.0.0.1: tack
/// uploads itself once, replaces a damaged copy, and names an unreachable
/// host at once.
mod ssh;

// `tack deploy ENV` over ssh: two hosts, gates across them, no-op, dry run,
// failures, kill, lock, and a differential test against a local deploy.
mod fleet;
