//! The hosts of one run, deployed at once, in order where they meet.
//!
//! Every way tack deploys — the full path and the incremental path of
//! `tack local`, and `tack deploy` over ssh — ends here or in its remote
//! twin: each host's graph runs on a thread of its own, and where a barrier
//! on one host requires from a component on another, it waits at a gate
//! ([`crate::peers::Gate`]) until that component settled there.
//! [`crossings`] finds the gates and what each host must announce;
//! [`Board`] is where settled components are posted and waited for.
//! [`deploy_here`] runs hosts in this process; `fleet` runs them through
//! agents over ssh, with the same crossings, and passes what one agent
//! reports settled to the agents whose gates wait for it.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use crate::configure::{Placement, Wiring};
use crate::deploy::{deploy_host, HostReport, Options, Scope};
use crate::error::Result;
use crate::fingerprint::Fingerprint;
use crate::graph::HostGraph;
use crate::peers::{Gate, Links, Peers};
use crate::report::Reporter;

/// The gates of each host and the components each host announces.
#[derive(Debug, Default)]
pub struct Crossings {
    pub gates: BTreeMap<String, Vec<Gate>>,
    pub exports: BTreeMap<String, Vec<String>>,
}

impl Crossings {
    pub fn gates_of(&self, host: &str) -> &[Gate] {
        self.gates.get(host).map_or(&[], Vec::as_slice)
    }

    pub fn exports_of(&self, host: &str) -> &[String] {
        self.exports.get(host).map_or(&[], Vec::as_slice)
    }
}

/// The gates between `graphs` (the hosts this run deploys, each with the
/// components it configured): a barrier waits for a provider on another
/// host only if that provider's nodes are part of this run; one that is
/// not deployed now was deployed before.
pub fn crossings(wiring: &Wiring, graphs: &[&HostGraph]) -> Crossings {
    let configured: BTreeSet<(&str, &str)> = graphs
        .iter()
        .flat_map(|graph| {
            graph
                .by_component()
                .map(move |(component, _)| (graph.host.as_str(), component))
        })
        .collect();
    let mut crossings = Crossings::default();
    let mut exports: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for graph in graphs {
        let mut waiting: BTreeMap<(String, String), Vec<usize>> = BTreeMap::new();
        for (index, node) in graph.nodes.iter().enumerate() {
            if !node.barrier {
                continue;
            }
            let me = Placement {
                host: graph.host.clone(),
                component: node.component.clone(),
            };
            for provider in wiring.providers_of(&me) {
                let elsewhere = provider.host != graph.host;
                if elsewhere && configured.contains(&(&provider.host, &provider.component)) {
                    waiting
                        .entry((provider.host.clone(), provider.component.clone()))
                        .or_default()
                        .push(index);
                }
            }
        }
        let mut gates = Vec::new();
        for ((host, component), mut nodes) in waiting {
            nodes.dedup();
            exports
                .entry(host.clone())
                .or_default()
                .insert(component.clone());
            gates.push(Gate {
                host,
                component,
                waiting: nodes,
            });
        }
        if !gates.is_empty() {
            crossings.gates.insert(graph.host.clone(), gates);
        }
    }
    crossings.exports = exports
        .into_iter()
        .map(|(host, components)| (host, components.into_iter().collect()))
        .collect();
    crossings
}

/// Where the hosts of a run post their settled components and wait for
/// each other's.
#[derive(Default)]
pub struct Board {
    /// (host, component) -> the node that did not finish, if one.
    settled: Mutex<HashMap<(String, String), Option<String>>>,
    changed: Condvar,
}

impl Board {
    /// Every node of `component` on `host` settled; `failed` names one
    /// that did not finish. A second post of the same component is
    /// ignored: the first one counts.
    pub fn post(&self, host: &str, component: &str, failed: Option<String>) {
        let key = (host.to_string(), component.to_string());
        {
            let mut settled = self.settled.lock().unwrap_or_else(|e| e.into_inner());
            if settled.contains_key(&key) {
                return;
            }
            settled.insert(key, failed.clone());
        }
        self.changed.notify_all();
    }

    /// Fails every component of `exports` that `host` has not posted: its
    /// deploy ended (`why`), and nobody may wait for it forever.
    pub fn post_unsettled(&self, host: &str, exports: &[String], why: &str) {
        for component in exports {
            self.post(host, component, Some(why.to_string()));
        }
    }

    /// Waits until `component` on `host` settled: `Err` names the node of
    /// it that did not finish, or the interrupt that ended the wait.
    pub fn wait(&self, host: &str, component: &str) -> std::result::Result<(), String> {
        let key = (host.to_string(), component.to_string());
        let mut settled = self.settled.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            match settled.get(&key) {
                Some(None) => return Ok(()),
                Some(Some(node)) => return Err(format!("{host}: {node}")),
                None => {}
            }
            if let Some(signal) = crate::interrupt::signal() {
                return Err(format!("interrupted by {}", signal.as_str()));
            }
            settled = self
                .changed
                .wait_timeout(settled, Duration::from_millis(100))
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
}

/// One host deployed in this process.
pub struct HostJob<'a> {
    pub graph: &'a HostGraph,
    pub scope: Scope<'a>,
    pub reporter: Reporter,
}

/// Deploys `jobs` in this process, each host on a thread of its own,
/// meeting at the gates of `crossings`; returns each host's report or
/// error, in the order of `jobs`.
pub fn deploy_here(
    jobs: Vec<HostJob>,
    crossings: &Crossings,
    options: &Options,
) -> Vec<Result<HostReport>> {
    let board = Board::default();
    let alone = Links::alone();
    if jobs.len() == 1 && crossings.gates.is_empty() {
        let job = &jobs[0];
        return vec![deploy_host(
            job.graph,
            job.scope,
            options,
            &job.reporter,
            &alone,
        )];
    }
    std::thread::scope(|scope| {
        let handles: Vec<_> = jobs
            .iter()
            .map(|job| {
                let board = &board;
                let alone = &alone;
                scope.spawn(move || {
                    let host = job.graph.host.as_str();
                    let peers = HerePeers {
                        board,
                        host,
                        gates: crossings.gates_of(host),
                    };
                    let links = Links {
                        gates: crossings.gates_of(host),
                        exports: crossings.exports_of(host),
                        peers: &peers,
                    };
                    // A dry run waits for nothing: nothing runs.
                    let links = if options.dry_run { alone } else { &links };
                    let report = deploy_host(job.graph, job.scope, options, &job.reporter, links);
                    let why = match &report {
                        Ok(_) => "its deploy ended early".to_string(),
                        Err(error) => format!("its deploy failed: {error}"),
                    };
                    board.post_unsettled(host, crossings.exports_of(host), &why);
                    report
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|handle| {
                handle
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            })
            .collect()
    })
}

/// The [`Peers`] of a host deployed in this process: every content is at
/// hand, gates wait on the board.
struct HerePeers<'a> {
    board: &'a Board,
    host: &'a str,
    gates: &'a [Gate],
}

impl Peers for HerePeers<'_> {
    fn contents(&self, wanted: &[Fingerprint]) -> std::result::Result<Vec<Arc<[u8]>>, String> {
        crate::peers::Alone.contents(wanted)
    }

    fn wait(&self, gate: usize) -> std::result::Result<(), String> {
        let gate = &self.gates[gate];
        self.board.wait(&gate.host, &gate.component)
    }

    fn settled(&self, component: &str, failed: Option<String>) {
        self.board.post(self.host, component, failed);
    }
}
