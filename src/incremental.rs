//! A repeated deploy that costs what changed, not what exists.
//!
//! From the manifest of the last clean deploy (see [`crate::manifest`]) a
//! run first looks, in parallel, at every source file's stat and every
//! node's target. That alone is the cost of a no-op: when nothing differs,
//! nothing is configured, rendered or loaded, and nothing is written.
//!
//! Otherwise the components to redo are the *seeds*: those with a source
//! file whose stat changed, those whose `[component:NAME]` overrides
//! changed, and those with a node whose target drifted. A change can reach
//! further only through provide/require, so the run reconfigures the seeds
//! and everything that requires from them, transitively (their templates
//! read the provided values), plus the same-host providers of all those
//! (a barrier node's key includes its providers' node outputs, so their
//! nodes must be in the graph). Only those components are configured, only
//! their state files are loaded and saved, and the executor sees only
//! their nodes; the untouched rest is reported unchanged.
//!
//! The resolved wiring is taken from the manifest instead of being
//! resolved again (which would read every component): it is only used
//! while the environment's settings and hosts are unchanged and every
//! reconfigured component still provides and requires the same keys.
//! Anything the manifest cannot vouch for takes the full path, which is
//! always correct: a changed setting or host list, a component whose nodes
//! or targets changed, a seed on a host this run does not deploy, a file
//! that belongs to no component, a configuration error (so that every
//! error of the environment is reported, not just those of the part), a
//! journal left by a killed run, `--force` and `--prune`.
//!
//! The differential test (`tests/incremental`) checks that this path ends
//! where a fresh deploy ends, over random edits.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::Path;
use std::time::Instant;

use rayon::prelude::*;

use crate::configure::{
    assemble, component_def, component_nodes, environment_def, wiring_signature, Placement,
};
use crate::db::{Database, Deployment, FileStat};
use crate::deploy::{HostReport, NodeReport, Options, Scope};
use crate::environment::EnvironmentDef;
use crate::error::Result;
use crate::fingerprint::Fingerprint;
use crate::graph::HostGraph;
use crate::hosts::{deploy_here, HostJob};
use crate::manifest::{self, Manifest, Pythons};
use crate::report::{Reporter, Summary};
use crate::state::StateStore;

/// How a run went, or why it must take the full path.
pub enum Outcome {
    Done(Vec<HostReport>),
    /// Configure everything: the reason, for `--explain`. Nothing was
    /// written.
    Full(String),
}

/// What a run found by looking at the manifest's files and targets.
struct Look {
    /// Components to redo, by name.
    seeds: BTreeSet<String>,
    /// The environment file as parsed now, if its stat changed.
    environment: Option<EnvironmentDef>,
}

/// Deploys what changed since the manifest was written.
pub fn run(
    options: &Options,
    host: Option<&str>,
    reporter_for: &dyn Fn(&str, bool) -> Reporter,
) -> Result<Outcome> {
    let started = Instant::now();
    if !options.force.is_empty() || options.prune {
        return Ok(Outcome::Full(
            "--force and --prune look at everything".into(),
        ));
    }
    let Some(read) = manifest::read(&options.root, &options.environment) else {
        if !crate::state::ever_deployed(&options.root, &options.environment) {
            return Ok(Outcome::Full(format!(
                "`{}` was never deployed here",
                options.environment
            )));
        }
        return Ok(Outcome::Full(
            "no manifest: the last deploy failed, left nodes no longer configured \
             to report, or was made by another tack build"
                .into(),
        ));
    };
    let (mut manifest, written) = read;
    if manifest.host.as_deref() != host || manifest.hostname != crate::observe::hostname() {
        return Ok(Outcome::Full(
            "the last clean deploy chose its hosts with another --host or on another machine"
                .into(),
        ));
    }
    let phase = crate::timings::phase("read manifest", started);
    if let Some(only) = &options.only {
        let mut nodes = manifest
            .hosts
            .iter()
            .flat_map(|host| &host.components)
            .flat_map(|placed| placed.nodes.iter().map(move |node| (placed, node)));
        if !nodes.any(|(placed, node)| crate::selection::selects(only, &node.id, &placed.component))
        {
            // Perhaps a node added since; the full path knows for sure.
            return Ok(Outcome::Full(format!(
                "`{only}` is no node or component of the last clean deploy"
            )));
        }
    }
    if any_journal(options, &manifest) {
        return Ok(Outcome::Full(
            "a deploy was interrupted: its journal is replayed".into(),
        ));
    }
    let look = match look(&options.root, &manifest) {
        Ok(look) => look,
        Err(why) => return Ok(Outcome::Full(why)),
    };
    let phase = crate::timings::phase("look at sources and targets", phase);
    crate::fault::looked();
    if look.seeds.is_empty() && look.environment.is_none() {
        let reports = nothing_to_do(&manifest, options, reporter_for);
        return Ok(Outcome::Done(reports));
    }

    let before = manifest::clock();
    let part = match configure_part(options, &manifest, &look) {
        Ok(part) => part,
        Err(why) => return Ok(Outcome::Full(why)),
    };
    let phase = crate::timings::phase("configure the part", phase);
    if options.explain {
        if let Some(first) = manifest.hosts.first() {
            let changed: Vec<&str> = look.seeds.iter().map(String::as_str).collect();
            let changed = if changed.is_empty() {
                "only the environment file's layout changed".to_string()
            } else {
                format!("changed: {}", changed.join(", "))
            };
            reporter_for(&first.host, false).line(&format!(
                "Configuring {} of {} components ({changed})",
                part.components().len(),
                manifest.components.len(),
            ));
        }
    }

    let _lock = if options.dry_run {
        None
    } else {
        let manifest_path = manifest::path(&options.root, &options.environment);
        let lock = options.lock()?;
        // Another deploy ran since the manifest was read (it forgets the
        // manifest when it starts, and leaves a journal if it was killed):
        // what was looked at is stale.
        if FileStat::of(&manifest_path) != Some(written) || any_journal(options, &manifest) {
            return Ok(Outcome::Full(
                "another deploy ran while this one looked".into(),
            ));
        }
        manifest::forget(&options.root, &options.environment)?;
        Some(lock)
    };

    let several = manifest.hosts.len() > 1;
    let mut jobs = Vec::new();
    for (record, graph) in manifest.hosts.iter().zip(&part.graphs) {
        let untouched = record
            .components
            .iter()
            .filter(|placed| {
                !part.placements.contains(&Placement {
                    host: record.host.clone(),
                    component: placed.component.clone(),
                })
            })
            .map(|placed| placed.nodes.len())
            .sum();
        jobs.push(HostJob {
            graph,
            scope: Scope::Part { untouched },
            reporter: reporter_for(&record.host, several),
        });
    }
    let graphs: Vec<&HostGraph> = part.graphs.iter().collect();
    let crossings = crate::hosts::crossings(&manifest.wiring, &graphs);
    let mut reports = crate::hosts_reports(deploy_here(jobs, &crossings, options))?;
    let phase = crate::timings::phase("deploy", phase);

    let clean = reports.iter().all(HostReport::clean);
    if !options.dry_run && clean && refresh_manifest(&mut manifest, &part, &look, before, &reports)
    {
        manifest.write(&options.environment)?;
        crate::timings::phase("manifest", phase);
    }
    for (record, report) in manifest.hosts.iter().zip(reports.iter_mut()) {
        report.nodes = in_host_order(record, std::mem::take(&mut report.nodes));
    }
    Ok(Outcome::Done(reports))
}

/// A journal means a deploy is running or was killed on one of the hosts.
fn any_journal(options: &Options, manifest: &Manifest) -> bool {
    manifest.hosts.iter().any(|record| {
        StateStore::new(&options.root, &options.environment, &record.host).journal_exists()
    })
}

/// Stats every source, state file and target, in parallel; `Err` says why
/// the full path must run.
fn look(root: &Path, manifest: &Manifest) -> std::result::Result<Look, String> {
    let environment = manifest.environment_name();
    for record in &manifest.hosts {
        let store = StateStore::new(root, &environment, &record.host);
        if FileStat::of(store.dir()) != record.state_dir {
            return Err(format!(
                "files of `{}` were added or removed by hand",
                store
                    .dir()
                    .strip_prefix(root)
                    .unwrap_or(store.dir())
                    .display()
            ));
        }
    }
    let (changed, drifted) = rayon::join(
        || {
            manifest
                .components
                .par_iter()
                .filter(|(_, record)| {
                    !record
                        .sources
                        .iter()
                        .all(|source| manifest::source_unchanged(root, source))
                })
                .map(|(name, _)| name.clone())
                .collect::<BTreeSet<String>>()
        },
        || {
            let pythons = Pythons::default();
            manifest
                .hosts
                .par_iter()
                .flat_map(|host| {
                    let store = StateStore::new(root, &environment, &host.host);
                    host.components.par_iter().map(move |placed| {
                        let state = FileStat::of(&store.component_file(&placed.component));
                        (placed, state)
                    })
                })
                .filter(|(placed, state)| {
                    *state != placed.state
                        || !placed.nodes.iter().all(|n| n.check.holds(root, &pythons))
                })
                .map(|(placed, _)| placed.component.clone())
                .collect::<BTreeSet<String>>()
        },
    );
    let mut seeds: BTreeSet<String> = changed.into_iter().chain(drifted).collect();
    let file = &manifest.environment.0;
    let environment = if manifest::source_unchanged(root, &manifest.environment) {
        None
    } else {
        let unreadable = || format!("`{file}` cannot be read or parsed");
        let bytes = crate::confined::read_regular_path(&root.join(file), None, true);
        let text = String::from_utf8(bytes.ok().flatten().ok_or_else(unreadable)?)
            .map_err(|_| unreadable())?;
        let env = EnvironmentDef::parse(&environment, file, &text).map_err(|_| unreadable())?;
        if env.settings_digest() != manifest.settings {
            return Err(format!("the settings or hosts of `{file}` changed"));
        }
        for (name, record) in &manifest.components {
            if manifest::overrides_digest(&env, name) != record.overrides {
                seeds.insert(name.clone());
            }
        }
        Some(env)
    };
    Ok(Look { seeds, environment })
}

/// The reports of a run with nothing to do.
fn nothing_to_do(
    manifest: &Manifest,
    options: &Options,
    reporter_for: &dyn Fn(&str, bool) -> Reporter,
) -> Vec<HostReport> {
    let started = options.started;
    let mut reports = Vec::new();
    for record in &manifest.hosts {
        let nodes = in_host_order(record, Vec::new());
        let summary = Summary {
            unchanged: nodes.len(),
            ..Summary::default()
        };
        let elapsed = started.elapsed();
        reporter_for(&record.host, false).line(&summary.line(
            &record.host,
            options.dry_run,
            elapsed,
        ));
        reports.push(HostReport {
            host: record.host.clone(),
            dry_run: options.dry_run,
            summary,
            seconds: elapsed.as_secs_f64(),
            nodes,
            state: None,
            interrupted: None,
        });
    }
    crate::timings::phase("nothing to do", started);
    reports
}

/// The nodes of a host in graph order: the reports of the nodes that were
/// part of the run where they stand, the others unchanged, and any report
/// of a node not configured (removed) at the end.
fn in_host_order(record: &manifest::HostRecord, ran: Vec<NodeReport>) -> Vec<NodeReport> {
    let mut ran: BTreeMap<String, NodeReport> = ran
        .into_iter()
        .map(|report| (report.id.clone(), report))
        .collect();
    let mut nodes = Vec::new();
    for check in record.components.iter().flat_map(|placed| &placed.nodes) {
        let report = ran.remove(&check.id).unwrap_or_else(|| NodeReport {
            id: check.id.clone(),
            display: check.display.clone(),
            outcome: "unchanged".into(),
            reasons: Vec::new(),
            seconds: None,
            error: None,
        });
        nodes.push(report);
    }
    nodes.extend(ran.into_values());
    nodes
}

/// The part of the deployment a run reconfigures.
struct Part {
    db: Database,
    deployment: Deployment,
    /// The placements configured and deployed.
    placements: BTreeSet<Placement>,
    /// One graph per host of the manifest, in its order.
    graphs: Vec<HostGraph>,
}

impl Part {
    /// The components of its placements.
    fn components(&self) -> BTreeSet<&str> {
        self.placements
            .iter()
            .map(|p| p.component.as_str())
            .collect()
    }
}

/// Configures the seeds, what requires from them and their same-host
/// providers; `Err` says why the manifest cannot vouch for the rest.
fn configure_part(
    options: &Options,
    manifest: &Manifest,
    look: &Look,
) -> std::result::Result<Part, String> {
    let wiring = &manifest.wiring;
    let deployed: BTreeSet<&str> = manifest.hosts.iter().map(|h| h.host.as_str()).collect();
    let placed_on_deployed = |component: &str| {
        wiring
            .placements
            .iter()
            .any(|p| p.component == component && deployed.contains(p.host.as_str()))
    };
    if let Some(seed) = look.seeds.iter().find(|seed| !placed_on_deployed(seed)) {
        return Err(format!(
            "`{seed}` changed, and no host this run deploys has it"
        ));
    }

    // Seeds, then everything requiring from them, on any host.
    let mut requirers: BTreeMap<&Placement, Vec<&Placement>> = BTreeMap::new();
    for ((requirer, _), providers) in &wiring.providers {
        for provider in providers {
            requirers.entry(provider).or_default().push(requirer);
        }
    }
    let mut reached: BTreeSet<&Placement> = BTreeSet::new();
    let mut queue: VecDeque<&Placement> = wiring
        .placements
        .iter()
        .filter(|p| look.seeds.contains(&p.component))
        .collect();
    while let Some(placement) = queue.pop_front() {
        if reached.insert(placement) {
            queue.extend(requirers.get(placement).into_iter().flatten());
        }
    }
    // Of those on deployed hosts, their same-host providers.
    let mut queue: VecDeque<&Placement> = reached
        .iter()
        .copied()
        .filter(|p| deployed.contains(p.host.as_str()))
        .collect();
    let mut part: BTreeSet<&Placement> = BTreeSet::new();
    while let Some(placement) = queue.pop_front() {
        if part.insert(placement) {
            queue.extend(
                wiring
                    .providers_of(placement)
                    .filter(|p| p.host == placement.host),
            );
        }
    }

    let db = Database::with_secrets(&options.root, options.secrets.clone());
    let deployment = Deployment::new(
        &db,
        options.root.clone(),
        options.environment.clone(),
        Some(wiring.clone()),
        Default::default(),
    );
    let configuration_error = || "the configuration has an error".to_string();
    if let Some(env) = &look.environment {
        // The environment file is read again by the queries; it must say
        // what was looked at.
        let now = environment_def(&db, deployment)
            .as_ref()
            .map_err(|_| configuration_error())?;
        if now.as_ref() != env {
            return Err(format!("`{}` changed while it was read", env.file));
        }
    }
    let components: BTreeSet<&String> = part.iter().map(|p| &p.component).collect();
    for component in components {
        let def = component_def(&db, deployment, component.clone())
            .as_ref()
            .map_err(|_| configuration_error())?;
        let recorded = manifest.components.get(component).map(|c| c.signature);
        if Some(wiring_signature(def)) != recorded {
            return Err(format!("`{component}` provides or requires other keys"));
        }
    }
    // What a change reaches on a host this run does not deploy is not
    // deployed, but it is configured: the full path would report its errors.
    for placement in reached
        .iter()
        .filter(|p| !deployed.contains(p.host.as_str()))
    {
        let configured = component_nodes(
            &db,
            deployment,
            placement.host.clone(),
            placement.component.clone(),
        );
        if configured.is_err() {
            return Err(configuration_error());
        }
    }
    let mut graphs = Vec::new();
    for record in &manifest.hosts {
        let order: Vec<String> = wiring
            .order
            .get(&record.host)
            .ok_or_else(configuration_error)?
            .iter()
            .filter(|component| {
                part.contains(&Placement {
                    host: record.host.clone(),
                    component: (*component).clone(),
                })
            })
            .cloned()
            .collect();
        let graph =
            assemble(&db, deployment, &record.host, &order).map_err(|_| configuration_error())?;
        // Each shape once: a part can hold most of a large deployment.
        let now: BTreeMap<&str, Fingerprint> = graph
            .by_component()
            .map(|(component, nodes)| (component, manifest::shape(nodes)))
            .collect();
        let recorded: BTreeMap<&str, Fingerprint> = record
            .components
            .iter()
            .map(|placed| (placed.component.as_str(), placed.shape))
            .collect();
        let no_nodes = manifest::shape([]);
        let reshaped = order.iter().find(|component| {
            let shape = |shapes: &BTreeMap<&str, Fingerprint>| {
                shapes.get(component.as_str()).copied().unwrap_or(no_nodes)
            };
            shape(&now) != shape(&recorded)
        });
        if let Some(component) = reshaped {
            return Err(format!(
                "`{component}` has other resources or targets than before"
            ));
        }
        graphs.push(graph);
    }
    Ok(Part {
        db,
        deployment,
        placements: part.into_iter().cloned().collect(),
        graphs,
    })
}

/// Brings the manifest up to date after a clean run of `part`; `false`
/// if it cannot vouch for the result (then it stays forgotten).
fn refresh_manifest(
    manifest: &mut Manifest,
    part: &Part,
    look: &Look,
    before: manifest::Stamp,
    reports: &[HostReport],
) -> bool {
    let root = manifest.root.clone();
    let read = manifest::vouched(&root, &part.db, before);
    let env_read = read
        .iter()
        .find(|(path, _)| path == &manifest.environment.0);
    match (&look.environment, env_read) {
        // Unchanged when looked at: configuring must have read it so.
        (None, Some(env_read)) if env_read != &manifest.environment => return false,
        (None, _) => {}
        (Some(_), None) => return false,
        (Some(env), Some(env_read)) => {
            manifest.environment = env_read.clone();
            for (name, record) in manifest.components.iter_mut() {
                record.overrides = manifest::overrides_digest(env, name);
            }
        }
    }
    let Some(mut by_component) = manifest::sources_by_component(&read, &manifest.environment.0)
    else {
        return false;
    };
    let Ok(env) = environment_def(&part.db, part.deployment) else {
        return false;
    };
    for component in part.components() {
        let Ok(def) = component_def(&part.db, part.deployment, component.to_string()) else {
            return false;
        };
        let sources = by_component.remove(component).unwrap_or_default();
        // A component configured only because the part needed it (a
        // provider of a changed one) must have been read as looked at:
        // if it changed in between, what requires from it outside the
        // part was not configured again.
        let recorded = manifest.components.get(component).map(|c| &c.sources);
        if !look.seeds.contains(component) && recorded != Some(&sources) {
            return false;
        }
        let record = manifest::component_record(env, def, sources);
        manifest.components.insert(component.to_string(), record);
    }
    for ((record, graph), report) in manifest.hosts.iter_mut().zip(&part.graphs).zip(reports) {
        let Some(new) = manifest::host_record(&root, graph, report) else {
            return false;
        };
        record.state_dir = new.state_dir;
        let mut placed: BTreeMap<String, manifest::PlacedRecord> = new
            .components
            .into_iter()
            .map(|placed| (placed.component.clone(), placed))
            .collect();
        for old in record.components.iter_mut() {
            if let Some(new) = placed.remove(&old.component) {
                *old = new;
            }
        }
    }
    true
}
