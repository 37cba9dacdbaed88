//! Deciding, per node, whether it runs, and why.
//!
//! A node runs when what is on the host differs from what it should be
//! (missing, edited by hand, a changed key with a changed output) or when
//! forced. The reasons say why, and a node that does not run can still
//! have reasons: its inputs changed but its output did not, and that is
//! worth telling. `--dry-run` stops after this step.

use crate::graph::{Action, NodeSpec};
use crate::observe::{observe, Observation, Supervisors};
use crate::process::Process;
use crate::provenance::same_values;
use crate::reason::{input_changes, Reason};
use crate::state::{NodeRecord, Observed};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Deployed as recorded: nothing to do, nothing to record.
    Fresh,
    /// The host is right, the record is not (new key, new stat): update the
    /// record only.
    Record,
    /// Apply the node.
    Run,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    pub verdict: Verdict,
    pub reasons: Vec<Reason>,
    /// For `Record`: what the host has now.
    pub observed: Option<Observed>,
    /// For services: the running process. Running it then means a reload;
    /// `None` means a start. For programs the same, with a restart for a
    /// reload.
    pub running: Option<Process>,
    /// For services: the process recorded at the last run. If it died
    /// uncleanly, a start first stops what it left running.
    pub predecessor: Option<Process>,
}

impl Decision {
    fn new(verdict: Verdict, reasons: Vec<Reason>) -> Decision {
        Decision {
            verdict,
            reasons,
            observed: None,
            running: None,
            predecessor: None,
        }
    }
}

/// What a step `creates`: paths that hold data.
fn creates_of(action: &Action) -> &[std::path::PathBuf] {
    match action {
        Action::Command(spec) | Action::Buildout { run: spec, .. } => &spec.creates,
        _ => &[],
    }
}

pub fn decide(
    node: &NodeSpec,
    record: Option<&NodeRecord>,
    forced: bool,
    supervisors: &Supervisors,
) -> Decision {
    let output = node.output;
    // A record whose inputs tell an older story than the node's (the same
    // key, reached through other values: a template's source reformatted
    // without changing what it renders) is brought up to date, so that a
    // later explanation compares with what was last applied, not with
    // what was applied before that.
    let same_story = |record: &NodeRecord| same_values(&record.inputs, &node.inputs);
    let unchanged_output = record.filter(|r| r.finished && r.output == output);
    let trusted = crate::confined::trusted_base(node.confined_to.as_deref());
    let observation = observe(&node.action, unchanged_output, supervisors, trusted);

    let mut reasons = Vec::new();
    match record {
        None => reasons.push(Reason::NeverApplied),
        Some(record) => {
            if !record.finished {
                reasons.push(Reason::LastAttemptUnfinished);
            }
            if record.key != node.key {
                reasons.extend(input_changes(&record.inputs, &node.inputs));
            }
        }
    }
    if forced {
        reasons.push(Reason::Forced);
    }
    if let Action::Program { .. } = node.action {
        return decide_program(node, record, observation, reasons);
    }
    let path = node.action.target().clone();
    let running = |process: Process| {
        let recorded = record.and_then(|r| r.process);
        // The same pid with another start time is another process.
        let reused =
            recorded.is_some_and(|r| r.pid == process.pid && r.start_time != process.start_time);
        // A process no record vouches for is adopted only if it is this
        // deployment's: a copied pid file names the original's daemon.
        let foreign = recorded != Some(process)
            && matches!(&node.action, Action::Service(spec) if !process.belongs_to(&spec.cwd));
        (!reused && !foreign).then_some(process)
    };
    let mut decision = match observation {
        Observation::Running(process) => match running(process) {
            Some(process) if reasons.is_empty() => {
                let same = record.is_some_and(|r| r.process == Some(process) && same_story(r));
                Decision {
                    verdict: if same {
                        Verdict::Fresh
                    } else {
                        Verdict::Record
                    },
                    reasons,
                    observed: None,
                    running: Some(process),
                    predecessor: None,
                }
            }
            Some(process) => Decision {
                verdict: Verdict::Run,
                reasons,
                observed: None,
                running: Some(process),
                predecessor: None,
            },
            None => {
                let reused = record
                    .and_then(|r| r.process)
                    .is_some_and(|r| r.pid == process.pid);
                let why = if reused {
                    format!("pid {} is now another process", process.pid)
                } else {
                    format!(
                        "pid {} in `{}` is not a process of this deployment",
                        process.pid,
                        path.display()
                    )
                };
                reasons.push(Reason::NotRunning { why });
                Decision::new(Verdict::Run, reasons)
            }
        },
        Observation::Unanswering(process, why) => {
            reasons.push(Reason::NotRunning {
                why: format!("pid {} runs, but {why}", process.pid),
            });
            Decision {
                verdict: Verdict::Run,
                reasons,
                observed: None,
                running: Some(process),
                predecessor: None,
            }
        }
        // Only programs are observed so; `decide_program` decides them.
        Observation::NotRunning(_) | Observation::Unobservable => {
            Decision::new(Verdict::Record, reasons)
        }
        Observation::Missing if matches!(node.action, Action::Service(_)) => {
            reasons.push(Reason::NotRunning {
                why: format!("no live process in `{}`", path.display()),
            });
            Decision::new(Verdict::Run, reasons)
        }
        Observation::Matches(observed) if forced => Decision {
            verdict: Verdict::Run,
            reasons,
            observed,
            running: None,
            predecessor: None,
        },
        // A step that holds data (`creates`) with no record here, whose
        // paths all exist: its state was lost, or it ran by hand. Running
        // it again could run a migration twice; it is taken as done.
        Observation::Matches(observed)
            if record.is_none() && !forced && !creates_of(&node.action).is_empty() =>
        {
            Decision {
                verdict: Verdict::Record,
                reasons: vec![Reason::Adopted {
                    paths: creates_of(&node.action).to_vec(),
                }],
                observed,
                running: None,
                predecessor: None,
            }
        }
        // A step's outputs existing says nothing about whether they are
        // current: with any reason at all, it runs.
        Observation::Matches(_) if !node.action.owns_target() && !reasons.is_empty() => {
            Decision::new(Verdict::Run, reasons)
        }
        Observation::Matches(observed) => {
            let key_changed = record.is_some_and(|r| r.key != node.key);
            if key_changed && record.is_some_and(|r| r.output == output) {
                reasons.push(Reason::OutputUnchanged);
            }
            let same_record = record.is_some_and(|r| {
                r.finished
                    && r.key == node.key
                    && r.output == output
                    && r.observed == observed
                    && same_story(r)
            });
            let verdict = if same_record {
                Verdict::Fresh
            } else {
                Verdict::Record
            };
            Decision {
                verdict,
                reasons,
                observed,
                running: None,
                predecessor: None,
            }
        }
        Observation::Missing => {
            if record.is_some() {
                reasons.push(Reason::Missing { path });
            }
            Decision::new(Verdict::Run, reasons)
        }
        Observation::Differs(differences) => {
            // With the output unchanged since the last apply, a difference
            // can only come from outside: drift. Otherwise the changed
            // inputs already explain it.
            let adopting = record.is_none() && node.action.owns_target();
            if unchanged_output.is_some() || adopting {
                for what in differences {
                    reasons.push(Reason::Drift {
                        path: path.clone(),
                        what,
                    });
                }
            }
            Decision::new(Verdict::Run, reasons)
        }
    };
    if let Action::Service(_) = node.action {
        decision.predecessor = record.and_then(|record| record.process);
    }
    decision
}

/// A supervised program: started when supervisord does not run it,
/// restarted when its own inputs changed (or forced), and recorded with
/// the process supervisord runs it as, so that a restart nobody asked tack
/// for is noticed.
fn decide_program(
    node: &NodeSpec,
    record: Option<&NodeRecord>,
    observation: Observation,
    mut reasons: Vec<Reason>,
) -> Decision {
    match observation {
        Observation::Running(process) => {
            let recorded = record.and_then(|record| record.process);
            if let Some(old) = recorded.filter(|old| *old != process) {
                reasons.push(Reason::RestartedOutside {
                    old: old.pid,
                    new: process.pid,
                });
            }
            // supervisord starts a program it is newly configured with, and
            // restarts one that died: neither needs tack to restart it.
            let wanted = reasons.iter().any(|reason| {
                !matches!(
                    reason,
                    Reason::NeverApplied | Reason::RestartedOutside { .. }
                )
            });
            let verdict = if wanted {
                Verdict::Run
            } else if record
                .is_some_and(|r| r.finished && r.key == node.key && r.process == Some(process))
            {
                Verdict::Fresh
            } else {
                Verdict::Record
            };
            Decision {
                verdict,
                reasons,
                observed: None,
                running: Some(process),
                predecessor: None,
            }
        }
        Observation::NotRunning(why) => {
            reasons.push(Reason::NotRunning { why });
            Decision::new(Verdict::Run, reasons)
        }
        Observation::Differs(whys) => {
            for why in whys {
                reasons.push(Reason::NotRunning { why });
            }
            Decision::new(Verdict::Run, reasons)
        }
        // Its supervisord does not run yet: the service node starts it and
        // waits for every program it runs.
        _ => Decision::new(Verdict::Record, reasons),
    }
}
