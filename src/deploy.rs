//! Deploying one host's graph: load state, plan, run, record.
//!
//! The order matters for crash safety. Nodes about to run are marked
//! unfinished in the state file *before* the first one runs; each node is
//! journaled as soon as it finished; the final state is saved at the end.
//! A kill anywhere leaves a state that names every unfinished node, so the
//! next run repairs exactly those. A dry run reads and never writes.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Instant;

use rayon::prelude::*;

use crate::apply::{apply, Applied};
use crate::atomic::sweep_orphans;
use crate::error::{Error, Result};
use crate::executor::{run_dag, Outcome};
use crate::graph::{Action, HostGraph, NodeSpec};
use crate::plan::{decide, Decision, Verdict};
use crate::reason::Reason;
use crate::report::{text_diff, Reporter, Summary};
use crate::state::{NodeRecord, StateStore};

/// Validated settings of one `tack local` run.
#[derive(Clone, Debug)]
pub struct Options {
    pub root: PathBuf,
    pub environment: String,
    pub dry_run: bool,
    pub explain: bool,
    pub diff: bool,
    pub jobs: usize,
    pub force: Vec<String>,
    /// Report only this node id or component (for `tack explain ENV NODE`).
    pub only: Option<String>,
}

impl Options {
    fn forced(&self, node: &NodeSpec) -> bool {
        self.force
            .iter()
            .any(|f| f == &node.id || f == &node.component)
    }

    fn shown(&self, node: &NodeSpec) -> bool {
        self.only
            .as_ref()
            .is_none_or(|only| only == &node.id || only == &node.component)
    }
}

pub fn deploy_host(graph: &HostGraph, options: &Options, reporter: &Reporter) -> Result<Summary> {
    let started = Instant::now();
    let store = StateStore::new(&options.root, &graph.environment, &graph.host);
    let (mut state, warnings) = store.load();
    for warning in warnings {
        eprintln!("warning: {warning}");
    }

    let decisions: Vec<Decision> = graph
        .nodes
        .par_iter()
        .map(|node| decide(node, state.nodes.get(&node.id), options.forced(node)))
        .collect();

    let mut summary = Summary::default();
    if options.dry_run {
        for (node, decision) in graph.nodes.iter().zip(&decisions) {
            match decision.verdict {
                Verdict::Run => {
                    summary.updated += 1;
                    if options.shown(node) {
                        let diff = options
                            .diff
                            .then(|| planned_diff(node, &options.root))
                            .flatten();
                        reporter.node(
                            &verb(node, decision, true),
                            &node.display,
                            &decision.reasons,
                            diff.as_deref(),
                        );
                    }
                }
                _ => {
                    summary.unchanged += 1;
                    report_unchanged(reporter, options, node, decision);
                }
            }
        }
        reporter.line(&summary.line(&graph.host, true, started.elapsed()));
        return Ok(summary);
    }

    let selected: Vec<bool> = decisions
        .iter()
        .map(|d| d.verdict == Verdict::Run)
        .collect();
    if selected.contains(&true) {
        for (node, decision) in graph.nodes.iter().zip(&decisions) {
            if decision.verdict != Verdict::Run {
                continue;
            }
            if decision.reasons.contains(&Reason::LastAttemptUnfinished) {
                if let Some(dir) = node.action.target().parent() {
                    sweep_orphans(dir);
                }
            }
            if let Some(record) = state.nodes.get_mut(&node.id) {
                record.finished = false;
            }
        }
        store.save(&state)?;
    }

    let finished: Mutex<Vec<(usize, NodeRecord)>> = Mutex::new(Vec::new());
    let deps: Vec<Vec<usize>> = graph.nodes.iter().map(|node| node.deps.clone()).collect();
    let work = |index: usize| -> std::result::Result<(), String> {
        let node = &graph.nodes[index];
        let decision = &decisions[index];
        let diff = (options.diff && !node.sensitive)
            .then(|| planned_diff(node, &options.root))
            .flatten();
        let progress = |elapsed: std::time::Duration| {
            let seconds = elapsed.as_secs();
            reporter.line(&format!(
                "  ... {}{} still running ({seconds}s)",
                reporter.prefix, node.display
            ));
        };
        let applied = apply(&node.action, decision, &progress)?;
        let record = record_for(node, applied);
        store
            .journal(&node.id, &record)
            .map_err(|error| error.to_string())?;
        finished
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((index, record));
        reporter.node(
            &verb(node, decision, false),
            &node.display,
            &decision.reasons,
            diff.as_deref(),
        );
        Ok(())
    };
    let outcomes = run_dag(&deps, &selected, options.jobs, &work);

    for (index, record) in finished.into_inner().unwrap_or_else(|e| e.into_inner()) {
        state.nodes.insert(graph.nodes[index].id.clone(), record);
    }
    for (index, outcome) in outcomes.iter().enumerate() {
        let node = &graph.nodes[index];
        let decision = &decisions[index];
        match outcome {
            Outcome::Done => summary.updated += 1,
            Outcome::NotNeeded => {
                summary.unchanged += 1;
                if decision.verdict == Verdict::Record {
                    let seen = Applied {
                        observed: decision.observed,
                        process: decision.running,
                        ..Applied::default()
                    };
                    let mut record = record_for(node, seen);
                    if let Some(old) = state.nodes.get(&node.id) {
                        record.produced = old.produced.clone();
                        record.facts = old.facts.clone();
                    }
                    state.nodes.insert(node.id.clone(), record);
                }
                report_unchanged(reporter, options, node, decision);
            }
            Outcome::Failed(message) => {
                summary.failed += 1;
                reporter.node("Failed", &node.display, &decision.reasons, None);
                reporter.line(&format!("    error: {message}"));
            }
            Outcome::Skipped(culprit) => {
                summary.skipped += 1;
                let because = format!("(because {} failed)", graph.nodes[*culprit].display);
                reporter.line(&format!(
                    "Skipped {}{} {because}",
                    reporter.prefix, node.display
                ));
            }
        }
    }
    // Nodes that are gone from the configuration are forgotten; removing
    // what they deployed is `--prune`'s job, not a side effect of a deploy.
    state
        .nodes
        .retain(|id, _| graph.nodes.iter().any(|node| &node.id == id));
    let changed = summary.updated > 0 || decisions.iter().any(|d| d.verdict == Verdict::Record);
    if changed || summary.failed > 0 || !store.path().exists() {
        store.save(&state)?;
    }
    reporter.line(&summary.line(&graph.host, false, started.elapsed()));
    if summary.failed > 0 {
        return Err(Error::NodesFailed {
            failed: summary.failed,
            skipped: summary.skipped,
        });
    }
    Ok(summary)
}

/// With `--explain`, a node that does not run but whose inputs changed
/// says so.
fn report_unchanged(reporter: &Reporter, options: &Options, node: &NodeSpec, decision: &Decision) {
    let interesting = decision.reasons.contains(&Reason::OutputUnchanged);
    if options.explain && interesting && options.shown(node) {
        reporter.node("Unchanged", &node.display, &decision.reasons, None);
    }
}

fn record_for(node: &NodeSpec, applied: Applied) -> NodeRecord {
    NodeRecord {
        display: node.display.clone(),
        key: node.key,
        output: node.output,
        inputs: node.inputs.clone(),
        observed: applied.observed,
        process: applied.process,
        produced: applied.produced,
        facts: applied.facts,
        finished: true,
    }
}

/// What a node does, in batou's words where batou has them: `Updating`,
/// and for services `Starting` or `Reloading (pid N)`.
fn verb(node: &NodeSpec, decision: &Decision, dry_run: bool) -> String {
    let (doing, would, pid) = match (&node.action, decision.running) {
        (Action::Service(_), Some(process)) => ("Reloading", "reload", Some(process.pid)),
        (Action::Service(_), None) => ("Starting", "start", None),
        _ => ("Updating", "update", None),
    };
    let verb = if dry_run {
        format!("Would {would}")
    } else {
        doing.to_string()
    };
    match pid {
        Some(pid) => format!("{verb} (pid {pid})"),
        None => verb,
    }
}

/// The diff a file node's write would make, shown relative to the root.
fn planned_diff(node: &NodeSpec, root: &Path) -> Option<String> {
    if node.sensitive {
        return None;
    }
    let Action::File {
        target, content, ..
    } = &node.action
    else {
        return None;
    };
    let old = std::fs::read(target).ok();
    let shown = target
        .strip_prefix(root)
        .unwrap_or(target)
        .display()
        .to_string();
    text_diff(&shown, old.as_deref(), content)
}
