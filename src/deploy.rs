//! Deploying one host's graph: load state, plan, run, record.
//!
//! The order matters for crash safety. Nodes about to run are marked
//! unfinished in their components' state files *before* the first one
//! runs; each node is journaled as soon as it finished; the final state is
//! saved at the end.
//! A kill anywhere leaves a state that names every unfinished node, so the
//! next run repairs exactly those. A dry run reads and never writes.
//!
//! An interrupt (SIGINT, SIGTERM, SIGHUP; see `interrupt`) while nodes run
//! is not a kill: no node starts after it, the running steps are stopped,
//! and the state is saved as at the end of any run, the stopped and
//! unstarted nodes still marked unfinished. Its report says so
//! (`HostReport::interrupted`), and the caller goes no further: no prune,
//! no manifest, and `Error::Interrupted` after the report. (The other
//! hosts of the run, deploying at the same time, stop alike.)

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rayon::prelude::*;
use serde::Serialize;

use crate::apply::{apply, Applied, Last};
use crate::atomic::sweep_orphans;
use crate::error::Result;
use crate::executor::{run_dag_observed, Outcome};
use crate::graph::{Action, HostGraph, NodeSpec};
use crate::peers::{Links, Peers};
use crate::plan::{decide, Decision, Verdict};
use crate::prune::{still_running, Prunable, Verdict as PruneVerdict};
use crate::reason::Reason;
use crate::report::{text_diff, Reporter, Summary};
use crate::state::{NodeRecord, StateStore};
use crate::step_cache::StepCache;

/// Outside a work dir (an absolute target), a temp file may belong to
/// another tack deploying elsewhere: only one this old is an orphan.
const ORPHAN_AGE: Duration = Duration::from_secs(600);

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
    /// Where step outputs are cached; `None` for no cache at all.
    pub cache: Option<CacheOptions>,
    /// Remove what nodes no longer configured left behind.
    pub prune: bool,
    /// How long to wait for another tack deploying the same directory.
    pub lock_timeout: Option<std::time::Duration>,
    /// When the run began: a host's summary says how long the run took
    /// until that host was done, configuring included.
    pub started: Instant,
    /// The environment's encrypted secrets, decrypted before configuring.
    pub secrets: std::sync::Arc<crate::secrets::Unlocked>,
    /// The key of the hashes of secrets recorded in state; kept in
    /// `.tack/` by the first deploy that records one; `None` on a host
    /// deployed over ssh, whose secrets were masked where it was
    /// configured.
    pub mask_key: Option<[u8; 32]>,
}

impl Options {
    /// Waits for the deploy lock of the deployment directory, saying for
    /// whom it waits.
    pub fn lock(&self) -> Result<crate::lock::DeployLock> {
        let waiting =
            |holder: &str| eprintln!("waiting for the deploy lock of this directory ({holder})");
        crate::lock::DeployLock::acquire(&self.root, self.lock_timeout, &waiting)
    }

    fn forced(&self, node: &NodeSpec) -> bool {
        self.force
            .iter()
            .any(|wanted| crate::selection::selects(wanted, &node.id, &node.component))
    }

    fn shown(&self, node: &NodeSpec) -> bool {
        self.only
            .as_ref()
            .is_none_or(|only| crate::selection::selects(only, &node.id, &node.component))
    }
}

#[derive(Clone, Debug)]
pub struct CacheOptions {
    pub dir: PathBuf,
    pub salt: Option<String>,
    /// `false` with `--no-cache-read`: run every step, overwrite entries.
    pub read: bool,
}

/// What happened to one host, for the summary and `--format json`.
#[derive(Debug, Serialize, serde::Deserialize)]
pub struct HostReport {
    pub host: String,
    pub dry_run: bool,
    pub summary: Summary,
    pub seconds: f64,
    pub nodes: Vec<NodeReport>,
    /// The state the host was left in (not after a dry run), for the
    /// manifest.
    #[serde(skip)]
    pub state: Option<crate::state::State>,
    /// The signal that stopped this host's deploy: the caller writes no
    /// manifest, and exits as interrupted.
    #[serde(skip)]
    pub interrupted: Option<nix::sys::signal::Signal>,
}

impl HostReport {
    /// Whether every node it ran finished: only then may a manifest
    /// vouch for the host.
    pub fn clean(&self) -> bool {
        self.summary.failed == 0 && self.summary.skipped == 0 && self.interrupted.is_none()
    }
}

#[derive(Debug, Serialize, serde::Deserialize)]
pub struct NodeReport {
    pub id: String,
    pub display: String,
    /// `updated`, `started`, `reloaded`, `unchanged`, `failed`, `skipped`,
    /// `interrupted` (stopped by a signal), `not started`, or in a dry run `would update`, `would start`, `would reload`.
    pub outcome: String,
    pub reasons: Vec<Reason>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seconds: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// How much of a host a graph holds.
#[derive(Clone, Copy, Debug)]
pub enum Scope<'a> {
    /// Every component: all of the state is loaded, and a journal left by
    /// a killed run is replayed. `prunable` says what `--prune` may touch.
    Whole { prunable: &'a Prunable },
    /// Some components (those a change can reach; see `incremental`): only
    /// their state is loaded and saved, and the summary counts `untouched`
    /// more nodes as unchanged. The caller holds the lock and has seen no
    /// journal.
    Part { untouched: usize },
}

pub fn deploy_host(
    graph: &HostGraph,
    scope: Scope,
    options: &Options,
    reporter: &Reporter,
    links: &Links,
) -> Result<HostReport> {
    let started = Instant::now();
    let store = StateStore::new(&options.root, &graph.environment, &graph.host);
    // A journal left by a killed run is folded into the state at the end
    // of this one, even if nothing else changes.
    let replayed = store.journal_exists();
    let (mut state, warnings) = match scope {
        Scope::Whole { .. } => store.load(),
        // Saving would drop a journal this never replayed.
        Scope::Part { .. } if replayed => {
            return Err(crate::error::Error::Usage(format!(
                "`{}` appeared during a partial deploy; run again",
                store.journal_path().display()
            )))
        }
        Scope::Part { .. } => store.load_components(&graph.components()),
    };
    let untouched = match scope {
        Scope::Whole { .. } => None,
        Scope::Part { untouched } => Some(untouched),
    };
    if let Some(mask_key) = &options.mask_key {
        if !options.dry_run && graph.nodes.iter().any(|node| node.sensitive) {
            crate::secrets::save_mask_key(&options.root, mask_key)?;
        }
    }
    let phase = crate::timings::phase("load state", started);
    for warning in warnings {
        eprintln!("warning: {warning}");
    }

    let supervisors = crate::observe::Supervisors::default();
    let decisions: Vec<Decision> = graph
        .nodes
        .par_iter()
        .map(|node| {
            decide(
                node,
                state.get(&node.id),
                options.forced(node),
                &supervisors,
            )
        })
        .collect();
    let phase = crate::timings::phase("plan", phase);
    // A graph sent over ssh knows its files by hash; the bytes of those
    // this run writes (or diffs) are asked for now.
    let filled = if options.dry_run && !options.diff {
        None
    } else {
        with_contents(graph, &decisions, links.peers)?
    };
    let graph = filled.as_ref().unwrap_or(graph);

    if options.dry_run {
        let mut nodes = Vec::new();
        for (node, decision) in graph.nodes.iter().zip(&decisions) {
            let outcome = if decision.verdict == Verdict::Run {
                let words = Words::of(node, decision);
                if options.shown(node) {
                    let diff = options
                        .diff
                        .then(|| planned_diff(node, &options.root))
                        .flatten();
                    reporter.node(
                        &words.line(true),
                        &node.display,
                        &decision.reasons,
                        diff.as_deref(),
                    );
                }
                format!("would {}", words.verb)
            } else {
                report_unchanged(reporter, options, node, decision);
                "unchanged".to_string()
            };
            nodes.push(node_report(node, decision, outcome, None, None));
        }
        removed(graph, scope, &mut state, options, reporter, &mut nodes);
        return Ok(finish(
            graph,
            untouched,
            reporter,
            nodes,
            true,
            options.started,
        ));
    }

    // From here a signal stops the deploy between nodes rather than
    // ending tack where it stands.
    let _executing = crate::interrupt::Executing::begin();
    let selected: Vec<bool> = decisions
        .iter()
        .map(|d| d.verdict == Verdict::Run)
        .collect();
    // A state write killed halfway leaves a temp file there. A partial
    // deploy never follows a killed one (every deploy forgets the
    // manifest first, so the next run takes the whole host), and need not
    // list the state directory, one file per component, again.
    if matches!(scope, Scope::Whole { .. }) {
        sweep_orphans(store.dir(), None);
        if let Some(dir) = store.dir().parent() {
            sweep_orphans(dir, None);
        }
    }
    if selected.contains(&true) {
        let mut swept = std::collections::BTreeSet::new();
        for (node, decision) in graph.nodes.iter().zip(&decisions) {
            if decision.verdict != Verdict::Run {
                continue;
            }
            // A write killed halfway leaves a temp file beside its target;
            // whether or not this node was ever recorded, its directory is
            // swept before it is written again.
            if let Some(dir) = node
                .action
                .target()
                .parent()
                .filter(|dir| swept.insert(dir.to_path_buf()))
            {
                let anyone_else = node.confined_to.is_none();
                let trusted = crate::confined::trusted_base(node.confined_to.as_deref());
                crate::atomic::sweep_orphans_below(dir, trusted, anyone_else.then_some(ORPHAN_AGE));
            }
            state.mark_unfinished(&node.id);
        }
        store.save(&mut state)?;
    }

    // Opened only when something runs: a no-op creates no cache directory.
    let steps = match (&options.cache, selected.contains(&true)) {
        (Some(cache), true) => {
            match StepCache::open(&cache.dir, cache.salt.as_deref(), cache.read, &options.root) {
                Ok(steps) => Some(steps),
                Err(error) => {
                    eprintln!("warning: {error}; running every step");
                    None
                }
            }
        }
        _ => None,
    };
    let finished: Mutex<Vec<(usize, NodeRecord, Duration, bool)>> = Mutex::new(Vec::new());
    // Nodes that failed while tack was being interrupted: their steps were
    // stopped.
    let stopped: Mutex<Vec<usize>> = Mutex::new(Vec::new());
    // Gates (providers on other hosts) are nodes after the graph's own.
    let count = graph.nodes.len();
    let mut deps: Vec<Vec<usize>> = graph.nodes.iter().map(|node| node.deps.clone()).collect();
    let mut selected = selected;
    for (gate_index, gate) in links.gates.iter().enumerate() {
        for &waiting in &gate.waiting {
            deps[waiting].push(count + gate_index);
        }
        deps.push(Vec::new());
        selected.push(gate.waiting.iter().any(|&waiting| selected[waiting]));
    }
    let exports = Exports::new(graph, links);
    let work = |index: usize| -> std::result::Result<(), String> {
        if index >= count {
            return links.peers.wait(index - count);
        }
        let node = &graph.nodes[index];
        let decision = &decisions[index];
        let began = Instant::now();
        let diff = options
            .diff
            .then(|| planned_diff(node, &options.root))
            .flatten();
        let progress = |elapsed: Duration| {
            let seconds = elapsed.as_secs();
            reporter.line(&format!(
                "  ... {}{} still running ({seconds}s)",
                reporter.prefix, node.display
            ));
        };
        let last = Last {
            record: state.get(&node.id),
            forced: options.forced(node),
        };
        let applied = {
            let _shown = node
                .action
                .runs_a_program()
                .then(|| reporter.step_started(&node.display));
            apply(node, decision, last, steps.as_ref(), &progress).inspect_err(|_| {
                if crate::interrupt::signal().is_some() {
                    stopped
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(index);
                }
            })?
        };
        if let Some(why) = &applied.not_restored {
            reporter.line(&format!(
                "note: {}{}: not restored from the cache: {why}",
                reporter.prefix, node.display
            ));
        }
        if let Some(warning) = &applied.warning {
            reporter.line(&format!(
                "warning: {}{}: {warning}",
                reporter.prefix, node.display
            ));
        }
        let restored = applied.restored;
        let record = record_for(node, applied);
        store
            .journal(&node.id, &record)
            .map_err(|error| error.to_string())?;
        crate::fault::node_finished();
        let took = began.elapsed();
        finished
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((index, record, took, restored));
        let words = if restored {
            Words::RESTORED
        } else {
            Words::of(node, decision)
        };
        let display = if restored {
            format!("{} (from cache)", node.display)
        } else {
            node.display.clone()
        };
        reporter.node(
            &words.line(false),
            &display,
            &decision.reasons,
            diff.as_deref(),
        );
        Ok(())
    };
    let interrupted = || crate::interrupt::signal().is_some();
    // A gate holds a thread while it waits: one more each, so waiting
    // never keeps this host's own nodes from running.
    let jobs = options.jobs + links.gates.len();
    let settled = |index: usize, outcome: &Outcome| exports.settled(graph, index, outcome);
    let mut outcomes = run_dag_observed(&deps, &selected, jobs, &work, &interrupted, &settled);
    let gate_outcomes = outcomes.split_off(count);
    let stopped = stopped.into_inner().unwrap_or_else(|e| e.into_inner());
    let phase = crate::timings::phase("execute", phase);

    let mut durations = vec![None; graph.nodes.len()];
    let mut restored = vec![false; graph.nodes.len()];
    for (index, record, took, from_cache) in
        finished.into_inner().unwrap_or_else(|e| e.into_inner())
    {
        state.insert(graph.nodes[index].id.clone(), record);
        durations[index] = Some(took.as_secs_f64());
        restored[index] = from_cache;
    }
    let mut nodes = Vec::new();
    for (index, outcome) in outcomes.iter().enumerate() {
        let node = &graph.nodes[index];
        let decision = &decisions[index];
        let report = match outcome {
            Outcome::Done => {
                let words = if restored[index] {
                    Words::RESTORED
                } else {
                    Words::of(node, decision)
                };
                let outcome = words.done.to_string();
                node_report(node, decision, outcome, durations[index], None)
            }
            Outcome::NotNeeded => {
                if decision.verdict == Verdict::Record {
                    let seen = Applied {
                        observed: decision.observed,
                        process: decision.running,
                        ..Applied::default()
                    };
                    let mut record = record_for(node, seen);
                    if let Some(old) = state.get(&node.id) {
                        record.produced = old.produced.clone();
                        record.facts = old.facts.clone();
                        record.outputs_tree = old.outputs_tree;
                    }
                    state.insert(node.id.clone(), record);
                }
                report_unchanged(reporter, options, node, decision);
                node_report(node, decision, "unchanged".into(), None, None)
            }
            Outcome::Failed(message) if stopped.contains(&index) => {
                let mut block = format!("Interrupted {}{}\n", reporter.prefix, node.display);
                block.push_str(&format!("    error: {message}\n"));
                reporter.block(&block, &decision.reasons);
                let outcome = "interrupted".into();
                node_report(node, decision, outcome, None, Some(message.clone()))
            }
            Outcome::NotStarted => node_report(node, decision, "not started".into(), None, None),
            Outcome::Failed(message) => {
                let mut block = format!("Failed {}{}\n", reporter.prefix, node.display);
                block.push_str(&format!("    error: {message}\n"));
                reporter.block(&block, &decision.reasons);
                node_report(node, decision, "failed".into(), None, Some(message.clone()))
            }
            Outcome::Skipped(culprit) => {
                // A gate's failure says itself what happened on the other
                // host (`alpha: Db > Command(migrate) failed`).
                let because = match graph.nodes.get(*culprit) {
                    Some(node) => format!("{} failed", node.display),
                    None => match &gate_outcomes[*culprit - count] {
                        Outcome::Failed(message) => message.clone(),
                        _ => "a provider on another host did not finish".to_string(),
                    },
                };
                reporter.line(&format!(
                    "Skipped {}{} (because {because})",
                    reporter.prefix, node.display
                ));
                node_report(node, decision, "skipped".into(), None, Some(because))
            }
        };
        nodes.push(report);
    }
    let signal = crate::interrupt::signal();
    if signal.is_none() {
        removed(graph, scope, &mut state, options, reporter, &mut nodes);
    }
    if state.is_changed() || replayed || !store.exists() {
        store.save(&mut state).map_err(|error| {
            let ran: Vec<String> = graph
                .nodes
                .iter()
                .zip(&outcomes)
                .filter(|(_, outcome)| matches!(outcome, Outcome::Done))
                .map(|(node, _)| node.display.clone())
                .collect();
            let then = "the journal keeps what they did, and the next run records it";
            crate::error::Error::after_nodes_ran(&graph.host, &ran, then, error)
        })?;
    }
    crate::timings::phase("save state", phase);
    let mut report = finish(graph, untouched, reporter, nodes, false, options.started);
    report.state = Some(state);
    report.interrupted = signal;
    Ok(report)
}

/// Reports nodes deployed before and configured no more; with `--prune`
/// removes what they left and forgets them.
fn removed(
    graph: &HostGraph,
    scope: Scope,
    state: &mut crate::state::State,
    options: &Options,
    reporter: &Reporter,
    nodes: &mut Vec<NodeReport>,
) {
    let configured: std::collections::HashSet<&str> =
        graph.nodes.iter().map(|node| node.id.as_str()).collect();
    let mut gone: Vec<(String, NodeRecord)> = state
        .ids()
        .filter(|id| !configured.contains(id.as_str()))
        .filter_map(|id| Some((id.clone(), state.get(id)?.clone())))
        .collect();
    crate::prune::deepest_first(&mut gone);
    let prunable = match scope {
        Scope::Whole { prunable } => Some(prunable),
        Scope::Part { .. } => None,
    };
    for (id, record) in gone {
        let mut report = NodeReport {
            id: id.clone(),
            display: record.display.clone(),
            outcome: "removed".into(),
            reasons: Vec::new(),
            seconds: None,
            error: None,
        };
        let prefix = &reporter.prefix;
        if options.prune && !options.dry_run {
            let done = match prunable.map(|prunable| (prunable, prunable.verdict(&record))) {
                Some((prunable, PruneVerdict::Remove)) => prunable.prune(&record).map(|what| {
                    if crate::prune::changes_the_host(&record) {
                        ("Pruned", "pruned", what)
                    } else {
                        ("Forgot", "forgotten", what)
                    }
                }),
                Some((_, PruneVerdict::Forget(why))) => Ok(("Forgot", "forgotten", why)),
                Some((_, PruneVerdict::Keep(why))) => Err(why),
                None => Err("only a deploy of the whole host prunes".into()),
            };
            match done {
                Ok((verb, outcome, what)) => {
                    reporter.line(&format!("{verb} {prefix}{}: {what}", record.display));
                    report.outcome = outcome.into();
                    state.remove(&id);
                }
                Err(why) => {
                    reporter.line(&format!("Kept {prefix}{}: {why}", record.display));
                    report.error = Some(why);
                }
            }
        } else {
            // Each line says what happens now and, once, what --prune does.
            let running = still_running(&record);
            let line = if options.prune {
                let what = match (&record.target, running) {
                    (_, Some(process)) => format!("would stop pid {}", process.pid),
                    (Some(target), None) if crate::prune::removes_from_disk(&record) => format!(
                        "would remove `{}` if it is still what tack made",
                        target.display()
                    ),
                    (Some(target), None) => {
                        format!("would forget it, leaving `{}` in place", target.display())
                    }
                    (None, None) => "would forget it (nothing on disk)".to_string(),
                };
                format!("Would prune {prefix}{}: {what}", record.display)
            } else {
                let left = match (&record.target, running) {
                    (_, Some(process)) => {
                        format!("pid {} still runs; --prune stops it", process.pid)
                    }
                    (Some(target), None) if crate::prune::removes_from_disk(&record) => format!(
                        "`{}` is left in place; --prune removes it",
                        target.display()
                    ),
                    (Some(target), None) => format!(
                        "`{}` is left in place; --prune forgets the step",
                        target.display()
                    ),
                    (None, None) => "nothing is on disk; --prune forgets it".to_string(),
                };
                format!("No longer configured {prefix}{}: {left}", record.display)
            };
            reporter.line(&line);
        }
        nodes.push(report);
    }
}

fn finish(
    graph: &HostGraph,
    untouched: Option<usize>,
    reporter: &Reporter,
    nodes: Vec<NodeReport>,
    dry_run: bool,
    started: Instant,
) -> HostReport {
    let mut summary = Summary {
        unchanged: untouched.unwrap_or(0),
        ..Summary::default()
    };
    for node in &nodes {
        match node.outcome.as_str() {
            "unchanged" => summary.unchanged += 1,
            "removed" => summary.no_longer_configured += 1,
            "pruned" => summary.pruned += 1,
            "forgotten" => summary.forgotten += 1,
            "failed" => summary.failed += 1,
            "skipped" => summary.skipped += 1,
            "interrupted" | "not started" => summary.interrupted += 1,
            _ => summary.updated += 1,
        }
    }
    let elapsed = started.elapsed();
    reporter.line(&summary.line(&graph.host, dry_run, elapsed));
    HostReport {
        host: graph.host.clone(),
        dry_run,
        summary,
        seconds: elapsed.as_secs_f64(),
        nodes,
        state: None,
        interrupted: None,
    }
}

fn node_report(
    node: &NodeSpec,
    decision: &Decision,
    outcome: String,
    seconds: Option<f64>,
    error: Option<String>,
) -> NodeReport {
    NodeReport {
        id: node.id.clone(),
        display: node.display.clone(),
        outcome,
        reasons: decision.reasons.clone(),
        seconds,
        error,
    }
}

/// With `--explain`, a node that does not run but whose inputs changed
/// says so. A program restarted outside tack is always told: the deploy
/// did not do it, and someone may want to know why it happened.
fn report_unchanged(reporter: &Reporter, options: &Options, node: &NodeSpec, decision: &Decision) {
    if !options.shown(node) {
        return;
    }
    for reason in &decision.reasons {
        if let Reason::Adopted { .. } = reason {
            reporter.node("Adopted", &node.display, &decision.reasons, None);
        }
        if let Reason::RestartedOutside { old, new } = reason {
            reporter.line(&format!(
                "Noticed {}{}: restarted outside tack: {old} -> {new}",
                reporter.prefix, node.display
            ));
        }
    }
    let interesting = decision.reasons.contains(&Reason::OutputUnchanged);
    if options.explain && interesting {
        reporter.node("Unchanged", &node.display, &decision.reasons, None);
    }
}

fn record_for(node: &NodeSpec, applied: Applied) -> NodeRecord {
    NodeRecord {
        display: node.display.clone(),
        target: Some(node.action.target().clone()),
        key: node.key,
        output: node.output,
        inputs: node.inputs.clone(),
        observed: applied.observed,
        process: applied.process,
        produced: applied.produced,
        facts: applied.facts,
        outputs_tree: applied.outputs_tree,
        finished: true,
    }
}

/// What running a node is called, in batou's words where batou has them:
/// `Updating`, and for services `Starting` or `Reloading (pid N)`; the
/// same words end the JSON report's outcomes.
struct Words {
    doing: &'static str,
    verb: &'static str,
    done: &'static str,
    pid: Option<i32>,
}

impl Words {
    const RESTORED: Words = Words {
        doing: "Restored",
        verb: "restore",
        done: "restored",
        pid: None,
    };

    fn of(node: &NodeSpec, decision: &Decision) -> Words {
        let (doing, verb, done) = match (&node.action, decision.running) {
            (Action::Service(_), Some(_)) => ("Reloading", "reload", "reloaded"),
            (Action::Service(_) | Action::Program { .. }, None) => ("Starting", "start", "started"),
            (Action::Program { .. }, Some(_)) => ("Restarting", "restart", "restarted"),
            _ => ("Updating", "update", "updated"),
        };
        Words {
            doing,
            verb,
            done,
            pid: decision.running.map(|process| process.pid),
        }
    }

    /// The start of a node's line: `Reloading (pid 42)`, `Would update`.
    fn line(&self, dry_run: bool) -> String {
        let words = if dry_run {
            format!("Would {}", self.verb)
        } else {
            self.doing.to_string()
        };
        match self.pid {
            Some(pid) => format!("{words} (pid {pid})"),
            None => words,
        }
    }
}

/// The diff a file node's write would make, shown relative to the root;
/// never for a sensitive file.
/// The largest file `--diff` reads to show what changed.
const DIFF_CAP: u64 = 1 << 20;

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
    // Read without following a link tack did not make, and only a regular
    // file of a size worth showing: a link to a root-only file or to
    // `/dev/zero` is no diff.
    let trusted = crate::confined::trusted_base(node.confined_to.as_deref());
    let old = crate::confined::parent_of(target, trusted, false)
        .and_then(|(dir, name)| dir.read_regular(&name, Some(DIFF_CAP)))
        .ok()
        .flatten();
    let shown = target
        .strip_prefix(root)
        .unwrap_or(target)
        .display()
        .to_string();
    text_diff(&shown, old.as_deref(), content.bytes()?)
}

/// The components of this host that nodes on other hosts wait for, and
/// how many of each one's nodes have yet to settle.
struct Exports<'a> {
    peers: &'a dyn Peers,
    /// Component -> nodes not settled yet, and the first that failed.
    pending: std::collections::HashMap<&'a str, Mutex<(usize, Option<String>)>>,
}

impl<'a> Exports<'a> {
    fn new(graph: &'a HostGraph, links: &'a Links) -> Exports<'a> {
        let mut pending = std::collections::HashMap::new();
        for component in links.exports {
            let nodes = graph
                .nodes
                .iter()
                .filter(|node| &node.component == component)
                .count();
            if nodes == 0 {
                links.peers.settled(component, None);
            } else {
                pending.insert(component.as_str(), Mutex::new((nodes, None)));
            }
        }
        Exports {
            peers: links.peers,
            pending,
        }
    }

    fn settled(&self, graph: &HostGraph, index: usize, outcome: &Outcome) {
        let Some(node) = graph.nodes.get(index) else {
            return;
        };
        let Some(pending) = self.pending.get(node.component.as_str()) else {
            return;
        };
        let mut pending = pending.lock().unwrap_or_else(|e| e.into_inner());
        let (left, failed) = &mut *pending;
        let what = match outcome {
            Outcome::Done | Outcome::NotNeeded => None,
            Outcome::Failed(_) => Some("failed"),
            Outcome::Skipped(_) => Some("was skipped"),
            Outcome::NotStarted => Some("did not start"),
        };
        if let (Some(what), None) = (what, &failed) {
            *failed = Some(format!("{} {what}", node.display));
        }
        *left -= 1;
        if *left == 0 {
            self.peers.settled(&node.component, failed.take());
        }
    }
}

/// `graph` with the bytes of every file it will write (or diff) filled
/// in, asked of `peers`; `None` when it has them all already.
fn with_contents(
    graph: &HostGraph,
    decisions: &[Decision],
    peers: &dyn Peers,
) -> Result<Option<HostGraph>> {
    let lacking = |node: &NodeSpec| match &node.action {
        Action::File { content, .. } if content.bytes().is_none() => Some(content.digest()),
        _ => None,
    };
    let mut wanted: Vec<crate::fingerprint::Fingerprint> = graph
        .nodes
        .iter()
        .zip(decisions)
        .filter(|(_, decision)| decision.verdict == Verdict::Run)
        .filter_map(|(node, _)| lacking(node))
        .collect();
    wanted.sort_unstable();
    wanted.dedup();
    if wanted.is_empty() {
        return Ok(None);
    }
    let bytes = peers
        .contents(&wanted)
        .map_err(|message| crate::error::Error::Usage(format!("{}: {message}", graph.host)))?;
    let arrived: std::collections::HashMap<_, _> = wanted.into_iter().zip(bytes).collect();
    let mut filled = graph.clone();
    for node in &mut filled.nodes {
        if let Action::File { content, .. } = &mut node.action {
            if let Some(bytes) = arrived.get(&content.digest()) {
                if !content.fill(bytes.clone()) {
                    return Err(crate::error::Error::Usage(format!(
                        "{}: the content sent for {} does not match its hash",
                        graph.host, node.display
                    )));
                }
            }
        }
    }
    Ok(Some(filled))
}
