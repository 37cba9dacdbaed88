//! Running a DAG of nodes on rayon: each node as soon as its dependencies
//! finished, at most `jobs` at a time.
//!
//! Failures are values: a failed node stops its dependents (each reported
//! as skipped, blaming the node that failed), independent nodes still run,
//! and the caller decides the exit code after the join (ripgrep's
//! "errored" flag, not the first `?` in a closure).
//!
//! Once `stopped` says so (tack was interrupted), no node starts any more:
//! the nodes running finish, and every selected node not yet started is
//! left `NotStarted`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Not selected to run, and nothing it depends on failed.
    NotNeeded,
    Done,
    Failed(String),
    /// A node this one depends on failed; the index is the failed node.
    Skipped(usize),
    /// Selected, but the run was stopped before it started.
    NotStarted,
}

struct Run<'a> {
    deps: &'a [Vec<usize>],
    dependents: Vec<Vec<usize>>,
    waiting: Vec<AtomicUsize>,
    selected: &'a [bool],
    outcomes: Vec<Mutex<Option<Outcome>>>,
    work: &'a (dyn Fn(usize) -> Result<(), String> + Sync),
    stopped: &'a (dyn Fn() -> bool + Sync),
    settled: &'a (dyn Fn(usize, &Outcome) + Sync),
}

/// Runs `work` for each selected node in dependency order, until
/// `stopped` returns true; `deps[i]` lists the nodes `i` waits for.
/// Returns one outcome per node.
pub fn run_dag(
    deps: &[Vec<usize>],
    selected: &[bool],
    jobs: usize,
    work: &(dyn Fn(usize) -> Result<(), String> + Sync),
    stopped: &(dyn Fn() -> bool + Sync),
) -> Vec<Outcome> {
    run_dag_observed(deps, selected, jobs, work, stopped, &|_, _| {})
}

/// [`run_dag`], calling `settled` with each node's outcome as soon as it
/// is known (nodes that need nothing first): another host may be waiting
/// for some of them.
pub fn run_dag_observed(
    deps: &[Vec<usize>],
    selected: &[bool],
    jobs: usize,
    work: &(dyn Fn(usize) -> Result<(), String> + Sync),
    stopped: &(dyn Fn() -> bool + Sync),
    settled_now: &(dyn Fn(usize, &Outcome) + Sync),
) -> Vec<Outcome> {
    // Nodes that need nothing and wait only for such nodes are settled up
    // front, without a task each: in a deploy where a few of thousands of
    // nodes run, scheduling the rest cost more than running the few.
    // (Dependencies usually come first, so one pass settles them all; any
    // left over are scheduled like the others, which is merely slower.)
    let mut settled = vec![false; deps.len()];
    for node in 0..deps.len() {
        settled[node] = !selected[node] && deps[node].iter().all(|&dep| dep < node && settled[dep]);
    }
    let mut dependents = vec![Vec::new(); deps.len()];
    for (node, node_deps) in deps.iter().enumerate() {
        for &dep in node_deps {
            if !settled[node] {
                dependents[dep].push(node);
            }
        }
    }
    let run = Run {
        deps,
        dependents,
        waiting: deps
            .iter()
            .map(|d| AtomicUsize::new(d.iter().filter(|&&dep| !settled[dep]).count()))
            .collect(),
        selected,
        outcomes: settled
            .iter()
            .map(|&done| Mutex::new(done.then_some(Outcome::NotNeeded)))
            .collect(),
        work,
        stopped,
        settled: settled_now,
    };
    for (node, &done) in settled.iter().enumerate() {
        if done {
            settled_now(node, &Outcome::NotNeeded);
        }
    }
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(jobs.max(1))
        .build()
        .expect("a thread pool of `jobs` threads");
    pool.scope(|scope| {
        for (node, &done) in settled.iter().enumerate() {
            if !done && run.waiting[node].load(Ordering::Acquire) == 0 {
                let run = &run;
                scope.spawn(move |scope| execute(scope, run, node));
            }
        }
    });
    run.outcomes
        .into_iter()
        .map(|outcome| {
            outcome
                .into_inner()
                .unwrap_or_else(|e| e.into_inner())
                .unwrap_or(Outcome::NotNeeded)
        })
        .collect()
}

fn execute<'s>(scope: &rayon::Scope<'s>, run: &'s Run<'s>, node: usize) {
    let blame = run.deps[node]
        .iter()
        .find_map(|&dep| match outcome(run, dep) {
            Some(Outcome::Failed(_)) => Some(dep),
            Some(Outcome::Skipped(culprit)) => Some(culprit),
            _ => None,
        });
    let result = match blame {
        _ if run.selected[node] && (run.stopped)() => Outcome::NotStarted,
        Some(culprit) => Outcome::Skipped(culprit),
        None if run.selected[node] => match (run.work)(node) {
            Ok(()) => Outcome::Done,
            Err(message) => Outcome::Failed(message),
        },
        None => Outcome::NotNeeded,
    };
    (run.settled)(node, &result);
    *run.outcomes[node].lock().unwrap_or_else(|e| e.into_inner()) = Some(result);
    for &dependent in &run.dependents[node] {
        if run.waiting[dependent].fetch_sub(1, Ordering::AcqRel) == 1 {
            scope.spawn(move |scope| execute(scope, run, dependent));
        }
    }
}

fn outcome(run: &Run<'_>, node: usize) -> Option<Outcome> {
    run.outcomes[node]
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dependents_of_a_failure_are_skipped_and_independent_nodes_run() {
        // 0 -> 1 -> 2, and 3 on its own; 1 fails.
        let deps = vec![vec![], vec![0], vec![1], vec![]];
        let ran = Mutex::new(Vec::new());
        let outcomes = run_dag(
            &deps,
            &[true; 4],
            2,
            &|node| {
                ran.lock().unwrap().push(node);
                if node == 1 {
                    Err("boom".into())
                } else {
                    Ok(())
                }
            },
            &|| false,
        );
        assert_eq!(
            outcomes,
            [
                Outcome::Done,
                Outcome::Failed("boom".into()),
                Outcome::Skipped(1),
                Outcome::Done
            ]
        );
        assert!(!ran.lock().unwrap().contains(&2));
    }

    #[test]
    fn a_dependency_finishes_before_its_dependent_starts() {
        let deps: Vec<Vec<usize>> = (0..50)
            .map(|i| if i == 0 { vec![] } else { vec![i - 1] })
            .collect();
        let order = Mutex::new(Vec::new());
        run_dag(
            &deps,
            &[true; 50],
            4,
            &|node| {
                order.lock().unwrap().push(node);
                Ok(())
            },
            &|| false,
        );
        assert_eq!(*order.lock().unwrap(), (0..50).collect::<Vec<_>>());
    }

    #[test]
    fn unselected_nodes_do_not_run() {
        let deps = vec![vec![], vec![0]];
        let outcomes = run_dag(&deps, &[false, true], 1, &|_| Ok(()), &|| false);
        assert_eq!(outcomes, [Outcome::NotNeeded, Outcome::Done]);
    }

    #[test]
    fn once_stopped_no_node_starts_and_the_running_one_finishes() {
        // 0 -> 1 -> 2, with one job; the stop comes while 0 runs.
        let deps = vec![vec![], vec![0], vec![1]];
        let stop = std::sync::atomic::AtomicBool::new(false);
        let ran = Mutex::new(Vec::new());
        let outcomes = run_dag(
            &deps,
            &[true; 3],
            1,
            &|node| {
                ran.lock().unwrap().push(node);
                stop.store(true, Ordering::SeqCst);
                Ok(())
            },
            &|| stop.load(Ordering::SeqCst),
        );
        assert_eq!(
            outcomes,
            [Outcome::Done, Outcome::NotStarted, Outcome::NotStarted]
        );
        assert_eq!(*ran.lock().unwrap(), [0]);
    }
}
