//! `tack deploy ENV` of an environment with `connect_method = ssh`: every
//! host over its own ssh session, all at once, configured here.
//!
//! The run has four steps:
//!
//! 1. **Connect.** One ssh session per host, in parallel; each starts
//!    tack's agent there (uploading this binary when the host lacks it,
//!    see [`crate::remote::bootstrap`]). The agent says where the login
//!    user's home is: a relative `remote_dir` is below it. A host that
//!    cannot be reached fails alone, named.
//! 2. **Configure** the whole environment here, once, with each host's
//!    work dirs under its own root. A configuration error stops the run
//!    before any host is touched (exit 2).
//! 3. **Plan.** Each host gets its graph ([`HostPlan`]): rendered contents
//!    known by hash, resolved values, keys. A barrier that requires from a
//!    component on another host waits at a gate for every node of that
//!    component there; the providing host exports the component and says
//!    when it settled, and this side passes that on ([`crate::peers`]).
//! 4. **Deploy.** The plans go out in the order of the host names, each
//!    once the host before holds its deploy lock (two runs of one
//!    environment never each hold a host the other waits for), then `Go`
//!    to all, so no settled component can reach a host before its plan.
//!    One thread per host then prints what the agent reports (its lines
//!    already carry the host's name), sends the file contents it asks for,
//!    and routes settled components. A host whose session ends without a report
//!    fails its exports, so nothing waits for it forever.
//!
//! State, lock and observation stay on each host (`remote_dir/.tack/`):
//! a dry run over ssh is as exact as one on the host and changes nothing
//! there. An interrupt here is passed to every agent (`Stop`), which stops
//! its running steps and saves its state before it reports.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::cli::{Format, Target};
use crate::configure::{environment_def, host_graph, wiring};
use crate::db::{Database, Deployment};
use crate::deploy::{HostReport, Options};
use crate::environment::EnvironmentDef;
use crate::error::{ConfigError, Error, Result};
use crate::fingerprint::Fingerprint;
use crate::graph::{Action, HostGraph};
use crate::remote::bootstrap::{start_agent, Agent, AgentSender};
use crate::remote::plan::{HostPlan, PlanOptions};
use crate::remote::protocol::{Request, Response};
use crate::remote::ssh::Ssh;

/// Whether `tack deploy` of this environment goes over ssh.
pub fn over_ssh(options: &Options) -> Result<bool> {
    let db = Database::with_secrets(&options.root, options.secrets.clone());
    let deployment = plain_deployment(&db, options);
    let env = environment_def(&db, deployment)
        .clone()
        .map_err(|error| crate::unknown_environment_hint(error, &options.root))?;
    Ok(env.connect_method == crate::environment::ConnectMethod::Ssh)
}

fn plain_deployment(db: &Database, options: &Options) -> Deployment {
    Deployment::new(
        db,
        options.root.clone(),
        options.environment.clone(),
        None,
        Default::default(),
    )
}

/// Deploys the environment's hosts (or those of `--host`) over ssh.
pub fn deploy(
    target: &Target,
    options: &Options,
    jobs: Option<usize>,
    host_jobs: Option<usize>,
    format: Format,
) -> Result<()> {
    let json = format == Format::Json;
    let started = std::time::Instant::now();
    let db = Database::with_secrets(&options.root, options.secrets.clone());
    let env = environment_def(&db, plain_deployment(&db, options))
        .clone()
        .map_err(|error| crate::unknown_environment_hint(error, &options.root))?;
    let selected = crate::select_hosts(&env, &target.hosts, true)?;

    // 1. Connect: the deployed hosts, and any other whose root is below a
    // home only it can tell.
    let ssh_config = env.ssh_config.as_ref().map(|file| options.root.join(file));
    if let Some(file) = &ssh_config {
        if !file.is_file() {
            let at = env
                .ssh_config_at
                .clone()
                .unwrap_or_else(|| crate::error::Location::file(&env.file));
            return Err(Error::Config(ConfigError::new(
                at,
                format!("ssh_config `{}` is not a file", file.display()),
            )));
        }
    }
    let wanted: Vec<&str> = env
        .hosts
        .iter()
        .filter(|host| selected.contains(&host.name) || !Path::new(&host.remote_dir).is_absolute())
        .map(|host| host.name.as_str())
        .collect();
    let sessions = connect(&wanted, ssh_config.as_deref(), &env, host_jobs);
    let started = crate::timings::phase("connect", started);
    let Reached {
        agents,
        roots,
        unreachable,
    } = reached(&env, sessions);
    for (host, agent) in &agents {
        if let Some(bytes) = agent.uploaded {
            eprintln!(
                "{host}: sent tack to the host ({:.1} MB), which lacked this build",
                bytes as f64 / 1e6
            );
        }
    }

    // 2. Configure everything, here, each host under its own root.
    let deployment = Deployment::new(
        &db,
        options.root.clone(),
        options.environment.clone(),
        None,
        roots.clone(),
    );
    let (graphs, wiring) = match configure(&db, deployment, &env, &selected, options) {
        Ok(configured) => configured,
        Err(error) => {
            say_goodbye(agents);
            return Err(error);
        }
    };
    let started = crate::timings::phase("configure", started);
    if !target.hosts.is_empty() {
        let deployed = wiring
            .placements
            .iter()
            .filter(|placement| selected.contains(&placement.host));
        for placement in deployed {
            let elsewhere = wiring
                .providers_of(placement)
                .filter(|provider| !selected.contains(&provider.host));
            for provider in elsewhere {
                eprintln!(
                    "note: {} on `{}` requires from {} on `{}`, which this run does not \
                     deploy: it gets what that is configured to provide, deployed there or not",
                    placement.component, placement.host, provider.component, provider.host
                );
            }
        }
    }

    // 3. Plan: gates and exports across hosts.
    let mut failed_hosts: BTreeMap<String, String> = BTreeMap::new();
    for host in &selected {
        if let Some(why) = unreachable.get(host) {
            failed_hosts.insert(host.clone(), why.clone());
        }
    }
    for (host, provider) in misconfigured(&env, &wiring, &selected, &unreachable) {
        failed_hosts.entry(host).or_insert_with(|| {
            format!(
                "not deployed: it requires from `{provider}`, which cannot be reached \
                 to learn where its deployment lives"
            )
        });
    }
    let selected_graphs: Vec<&HostGraph> =
        selected.iter().map(|host| graphs[host].as_ref()).collect();
    let crossings = crate::hosts::crossings(&wiring, &selected_graphs);
    let several = selected.len() > 1;
    let run_id = format!(
        "run-{}-{:x}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |since| since.as_nanos())
    );
    let mut plans: BTreeMap<String, HostPlan> = BTreeMap::new();
    for host in &selected {
        if failed_hosts.contains_key(host) {
            continue;
        }
        let root = roots[host].clone();
        plans.insert(
            host.clone(),
            HostPlan {
                work_dir: root.join(&env.work_dir),
                root,
                graph: (*graphs[host]).clone(),
                gates: crossings.gates_of(host).to_vec(),
                exports: crossings.exports_of(host).to_vec(),
                options: PlanOptions {
                    dry_run: options.dry_run,
                    explain: options.explain,
                    diff: options.diff,
                    jobs,
                    force: options.force.clone(),
                    only: options.only.clone(),
                    prune: options.prune,
                    lock_timeout_secs: options.lock_timeout.map(|timeout| timeout.as_secs()),
                    prefix: if several {
                        format!("{host}: ")
                    } else {
                        String::new()
                    },
                    json,
                    run_id: run_id.clone(),
                    no_cache_read: options.cache.as_ref().is_some_and(|cache| !cache.read),
                    cache_salt: options.cache.as_ref().and_then(|cache| cache.salt.clone()),
                },
            },
        );
    }

    // 4. Deploy: every plan out first, each host locking in turn in the
    // order of their names (agents is sorted), then `Go` to all and one
    // thread per host. Two runs of one environment at once thus never
    // each hold a host the other waits for.
    let mut transfers: BTreeMap<String, Transfer> = BTreeMap::new();
    let mut senders: HashMap<String, Mutex<Option<AgentSender>>> = HashMap::new();
    let mut running: Vec<(String, Agent)> = Vec::new();
    for (host, mut agent) in agents {
        let Some(plan) = plans.remove(&host) else {
            // Connected only to learn its home, or not deployed after all.
            let _ = agent.send(&Request::Bye);
            let _ = agent.finish();
            continue;
        };
        let mut sender = agent.take_sender();
        let request = serde_json::to_vec(&Request::Deploy(Box::new(plan)))
            .map_err(|error| Error::Usage(format!("cannot encode the plan of {host}: {error}")))?;
        let sent = match sender.as_mut() {
            Some(sender) => sender.send_encoded(&request),
            None => Err(Error::Remote {
                host: host.clone(),
                message: "the session is closed".into(),
            }),
        };
        match sent.and_then(|()| locked(&mut agent)) {
            Ok(()) => {
                transfers.insert(
                    host.clone(),
                    Transfer {
                        binary_bytes: agent.uploaded.unwrap_or(0),
                        plan_bytes: request.len(),
                        content_bytes: 0,
                    },
                );
                senders.insert(host.clone(), Mutex::new(sender));
                running.push((host, agent));
            }
            Err(error) => {
                failed_hosts.insert(host.clone(), why_host_failed(error));
                drop(sender);
                let _ = agent.finish();
            }
        }
    }
    for sender in senders.values() {
        let mut sender = sender.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(open) = sender.as_mut() {
            if open.send(&Request::Go).is_err() {
                *sender = None;
            }
        }
    }
    let started = crate::timings::phase("send plans and lock", started);
    // Who waits for which (host, component): where settled components go.
    let mut waiting_hosts: BTreeMap<(String, String), BTreeSet<String>> = BTreeMap::new();
    for (host, host_gates) in &crossings.gates {
        for gate in host_gates {
            waiting_hosts
                .entry((gate.host.clone(), gate.component.clone()))
                .or_default()
                .insert(host.clone());
        }
    }
    let route = Routes {
        senders,
        waiting_hosts,
    };
    // Exports of hosts that never started are failed at once.
    for ((provider_host, component), _) in route.waiting_hosts.iter() {
        if let Some(why) = failed_hosts.get(provider_host) {
            route.settle(
                provider_host,
                component,
                Some(format!("its deploy did not run: {why}")),
            );
        }
    }
    type HostOutcome = (String, std::result::Result<HostReport, String>, usize);
    let outcomes: Vec<HostOutcome> = {
        let _executing = (!options.dry_run).then(crate::interrupt::Executing::begin);
        // Dropping `finished` (when every host is done) wakes the watcher
        // at once; a flag it polled would hold the run up to a poll's end.
        let (finished, watching) = std::sync::mpsc::channel::<()>();
        std::thread::scope(|scope| {
            let route = &route;
            scope.spawn(move || pass_on_interrupts(route, watching));
            let handles: Vec<_> = running
                .into_iter()
                .map(|(host, agent)| {
                    let graph = graphs[&host].clone();
                    scope.spawn(move || {
                        let (outcome, sent) = follow(&host, agent, &graph, route, json);
                        (host, outcome, sent)
                    })
                })
                .collect();
            let outcomes = handles
                .into_iter()
                .filter_map(|handle| handle.join().ok())
                .collect();
            drop(finished);
            outcomes
        })
    };
    crate::timings::phase("deploy", started);
    let mut reports = Vec::new();
    // The signal this tack got; else one an agent got on its own.
    let mut interrupted = crate::interrupt::signal();
    for (host, outcome, sent) in outcomes {
        if let Some(transfer) = transfers.get_mut(&host) {
            transfer.content_bytes = sent;
        }
        match outcome {
            Ok(report) => {
                interrupted = interrupted.or(report.interrupted);
                reports.push(report);
            }
            Err(why) => {
                failed_hosts.insert(host, why);
            }
        }
    }
    reports.sort_by(|a, b| a.host.cmp(&b.host));
    if options.explain && !json {
        for (host, transfer) in &transfers {
            let binary = match transfer.binary_bytes {
                0 => String::new(),
                bytes => format!("tack itself ({bytes} bytes), "),
            };
            crate::outln!(
                "{host}: sent {binary}a plan of {} bytes and {} bytes of file contents",
                transfer.plan_bytes,
                transfer.content_bytes
            );
        }
    }
    let run = Run {
        environment: &options.environment,
        reports,
        failed_hosts,
        transfers,
        interrupted,
    };
    conclude(run, json)
}

/// What went wrong with a host, said after `error: host `H`: `.
fn why_host_failed(error: Error) -> String {
    match error {
        Error::Unreachable { ssh, .. } => format!("cannot reach it: {ssh}"),
        Error::Remote { message, .. } => message,
        other => other.to_string(),
    }
}

/// Waits for the agent to hold its host's deploy lock.
fn locked(agent: &mut Agent) -> Result<()> {
    let host = agent.host().to_string();
    let failed = |message: String| Error::Remote {
        host: host.clone(),
        message,
    };
    match agent.receive::<Response>()? {
        Some(Response::Locked) => Ok(()),
        Some(Response::Failed { message, .. }) => Err(failed(message)),
        Some(other) => Err(failed(format!("its agent answered {other:?} to a plan"))),
        None => Err(failed("its agent ended before it took the lock".into())),
    }
}

/// What went over a host's session: tack's binary when the host lacked
/// it, the plan, and the bytes of the files it wrote.
#[derive(Debug, serde::Serialize)]
struct Transfer {
    binary_bytes: u64,
    plan_bytes: usize,
    content_bytes: usize,
}

/// How a run over ssh ended, host by host.
struct Run<'a> {
    environment: &'a str,
    reports: Vec<HostReport>,
    failed_hosts: BTreeMap<String, String>,
    transfers: BTreeMap<String, Transfer>,
    interrupted: Option<nix::sys::signal::Signal>,
}

/// The sessions that started, and what they told.
struct Reached {
    agents: BTreeMap<String, Agent>,
    /// Every host's root: its absolute `remote_dir`, or its `remote_dir`
    /// below the home its agent told; a root that exists nowhere for a
    /// host that could not tell.
    roots: BTreeMap<String, PathBuf>,
    /// Host -> why it could not be reached.
    unreachable: BTreeMap<String, String>,
}

fn reached(env: &EnvironmentDef, mut sessions: BTreeMap<String, Result<Agent>>) -> Reached {
    let mut unreachable = BTreeMap::new();
    let mut roots = BTreeMap::new();
    for host in &env.hosts {
        let remote_dir = Path::new(&host.remote_dir);
        let root = match sessions.get(&host.name) {
            _ if remote_dir.is_absolute() => Some(remote_dir.to_path_buf()),
            Some(Ok(agent)) if agent.hello.home.starts_with('/') => {
                Some(Path::new(&agent.hello.home).join(remote_dir))
            }
            Some(Ok(_)) => {
                unreachable.insert(
                    host.name.clone(),
                    "its agent did not say where the login user's home is".to_string(),
                );
                None
            }
            _ => None,
        };
        // Configured there, a host is not deployed, nor is one that
        // requires from it ([`misconfigured`]).
        let root = root.unwrap_or_else(|| Path::new("/nonexistent-root-of").join(&host.name));
        roots.insert(host.name.clone(), root);
    }
    let mut agents = BTreeMap::new();
    for (host, session) in std::mem::take(&mut sessions) {
        match session {
            Ok(agent) if !unreachable.contains_key(&host) => {
                agents.insert(host, agent);
            }
            Ok(_) => {}
            Err(error) => {
                unreachable.insert(host, why_host_failed(error));
            }
        }
    }
    Reached {
        agents,
        roots,
        unreachable,
    }
}

/// Every host's graph, by host.
type Graphs = BTreeMap<String, Arc<HostGraph>>;

/// Every host's graph, and the wiring; a configuration error of any host
/// (or a `--force` or NODE that names nothing) stops the run.
fn configure(
    db: &Database,
    deployment: Deployment,
    env: &EnvironmentDef,
    selected: &[String],
    options: &Options,
) -> Result<(Graphs, Arc<crate::configure::Wiring>)> {
    let mut graphs = Graphs::new();
    let mut errors: Vec<ConfigError> = Vec::new();
    for host in &env.hosts {
        match host_graph(db, deployment, host.name.clone()) {
            Ok(graph) => {
                graphs.insert(host.name.clone(), graph.clone());
            }
            Err(host_errors) => {
                for error in host_errors {
                    if !errors.contains(error) {
                        errors.push(error.clone());
                    }
                }
            }
        }
    }
    if !errors.is_empty() {
        return Err(Error::Configs(errors));
    }
    let nodes = selected
        .iter()
        .flat_map(|host| graphs[host].nodes.iter())
        .map(|node| (node.id.as_str(), node.component.as_str()));
    crate::selection::check("--force", &options.force, nodes.clone())?;
    crate::selection::check("NODE", options.only.as_slice(), nodes)?;
    if !options.dry_run
        && selected
            .iter()
            .any(|host| graphs[host].nodes.iter().any(|node| node.sensitive))
    {
        if let Some(mask_key) = &options.mask_key {
            crate::secrets::save_mask_key(&options.root, mask_key)?;
        }
    }
    let wiring = wiring(db, deployment).clone().map_err(Error::Configs)?;
    Ok((graphs, wiring))
}

/// The selected hosts that require anything from a host whose root no one
/// could tell (unreachable, with a `remote_dir` below its home), each with
/// that host: what they render of it (its `workdir`) would be wrong.
fn misconfigured(
    env: &EnvironmentDef,
    wiring: &crate::configure::Wiring,
    selected: &[String],
    unreachable: &BTreeMap<String, String>,
) -> Vec<(String, String)> {
    let rootless = |host: &str| {
        unreachable.contains_key(host)
            && env
                .host(host)
                .is_some_and(|def| !Path::new(&def.remote_dir).is_absolute())
    };
    let mut found = Vec::new();
    for placement in &wiring.placements {
        if !selected.contains(&placement.host) || rootless(&placement.host) {
            continue;
        }
        let provider = wiring
            .providers_of(placement)
            .find(|provider| provider.host != placement.host && rootless(&provider.host));
        if let Some(provider) = provider {
            found.push((placement.host.clone(), provider.host.clone()));
        }
    }
    found
}

/// Starts an agent on each of `hosts` at once.
/// Starts an agent on each of `hosts`, at most `at_once` sessions being
/// set up at a time (all when `None`): a bastion in front of many hosts
/// refuses logins beyond its `MaxStartups`.
fn connect(
    hosts: &[&str],
    ssh_config: Option<&Path>,
    env: &EnvironmentDef,
    at_once: Option<usize>,
) -> BTreeMap<String, Result<Agent>> {
    let queue = Mutex::new(hosts.iter());
    let connected = Mutex::new(BTreeMap::new());
    let workers = at_once.unwrap_or(hosts.len()).clamp(1, hosts.len().max(1));
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| loop {
                let Some(host) = queue.lock().unwrap_or_else(|e| e.into_inner()).next() else {
                    return;
                };
                let ssh = Ssh {
                    destination: host.to_string(),
                    config: ssh_config.map(Path::to_path_buf),
                    connect_timeout: Duration::from_secs(env.connect_timeout_secs),
                };
                let agent = start_agent(&ssh);
                connected
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(host.to_string(), agent);
            });
        }
    });
    connected.into_inner().unwrap_or_else(|e| e.into_inner())
}

fn say_goodbye(agents: BTreeMap<String, Agent>) {
    for (_, mut agent) in agents {
        let _ = agent.send(&Request::Bye);
        let _ = agent.finish();
    }
}

/// Where settled components go: to the hosts whose gates wait for them.
struct Routes {
    senders: HashMap<String, Mutex<Option<AgentSender>>>,
    waiting_hosts: BTreeMap<(String, String), BTreeSet<String>>,
}

impl Routes {
    fn send(&self, host: &str, message: &Request) {
        if let Some(sender) = self.senders.get(host) {
            let mut sender = sender.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(open) = sender.as_mut() {
                if open.send(message).is_err() {
                    *sender = None;
                }
            }
        }
    }

    fn settle(&self, host: &str, component: &str, failed: Option<String>) {
        let key = (host.to_string(), component.to_string());
        for waiting in self.waiting_hosts.get(&key).into_iter().flatten() {
            self.send(
                waiting,
                &Request::Settled {
                    host: host.to_string(),
                    component: component.to_string(),
                    failed: failed.clone(),
                },
            );
        }
    }

    /// Closes the session's sending half: the agent ends after its report.
    fn close(&self, host: &str) {
        if let Some(sender) = self.senders.get(host) {
            let mut sender = sender.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(mut open) = sender.take() {
                let _ = open.send(&Request::Bye);
            }
        }
    }
}

/// Passes an interrupt of this tack on to every agent, once; returns when
/// `finished` is closed (every host is done).
fn pass_on_interrupts(route: &Routes, finished: std::sync::mpsc::Receiver<()>) {
    loop {
        if let Some(signal) = crate::interrupt::signal() {
            let stop = Request::Stop {
                signal: signal.as_str().to_string(),
            };
            for host in route.senders.keys() {
                route.send(host, &stop);
            }
            return;
        }
        match finished.recv_timeout(Duration::from_millis(50)) {
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            Ok(()) | Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return,
        }
    }
}

/// Follows one host's deploy to its end: prints its lines, answers its
/// requests for contents, routes its settled components.
fn follow(
    host: &str,
    mut agent: Agent,
    graph: &HostGraph,
    route: &Routes,
    json: bool,
) -> (std::result::Result<HostReport, String>, usize) {
    let mut sent_bytes = 0;
    let contents: HashMap<Fingerprint, Arc<[u8]>> = graph
        .nodes
        .iter()
        .filter_map(|node| match &node.action {
            Action::File { content, .. } => Some((content.digest(), Arc::from(content.bytes()?))),
            _ => None,
        })
        .collect();
    let mut exports_left: BTreeSet<String> = route
        .waiting_hosts
        .keys()
        .filter(|(provider_host, _)| provider_host == host)
        .map(|(_, component)| component.clone())
        .collect();
    let outcome = loop {
        match agent.receive::<Response>() {
            Ok(Some(Response::Output { text })) => {
                if !json {
                    let _ = crate::report::write_out(format_args!("{text}"));
                }
            }
            Ok(Some(Response::Want { digests })) => {
                let wanted: Option<Vec<Arc<[u8]>>> = digests
                    .iter()
                    .map(|digest| contents.get(digest).cloned())
                    .collect();
                let Some(wanted) = wanted else {
                    break Err("its agent asked for a content this run does not deploy".into());
                };
                let sender = route.senders.get(host);
                let mut sender = sender.map(|s| s.lock().unwrap_or_else(|e| e.into_inner()));
                let sent = match sender.as_mut().and_then(|sender| sender.as_mut()) {
                    Some(open) => open.send_with_raw(
                        &Request::Contents {
                            count: wanted.len(),
                        },
                        &wanted,
                    ),
                    None => Err(Error::Usage("the session is closed".into())),
                };
                if let Err(error) = sent {
                    break Err(why_host_failed(error));
                }
                sent_bytes += wanted.iter().map(|bytes| bytes.len()).sum::<usize>();
            }
            Ok(Some(Response::Settled { component, failed })) => {
                exports_left.remove(&component);
                route.settle(host, &component, failed);
            }
            Ok(Some(Response::Finished(finished))) => {
                let mut report = finished.report;
                report.interrupted = finished
                    .interrupted
                    .and_then(|name| name.parse::<nix::sys::signal::Signal>().ok());
                break Ok(report);
            }
            Ok(Some(Response::Failed { message, .. })) => break Err(message),
            Ok(Some(Response::Pong | Response::Locked)) => {}
            Ok(None) => {
                let tail = agent.stderr_tail();
                let last = tail
                    .last()
                    .map(String::as_str)
                    .unwrap_or("nothing on stderr");
                break Err(format!("its agent ended without a report: {last}"));
            }
            Err(error) => break Err(why_host_failed(error)),
        }
    };
    for component in exports_left {
        route.settle(host, &component, Some("its deploy ended early".into()));
    }
    route.close(host);
    // How the session ended says nothing the report does not.
    let _ = agent.finish();
    (outcome, sent_bytes)
}

/// Prints the end of the run and decides the exit code.
fn conclude(run: Run, json: bool) -> Result<()> {
    let Run {
        environment,
        reports,
        failed_hosts,
        transfers,
        interrupted,
    } = run;
    if json {
        let mut report = serde_json::json!({
            "environment": environment,
            "hosts": reports,
            "failed_hosts": failed_hosts,
            "transfers": transfers,
        });
        if let Some(signal) = interrupted {
            report["interrupted"] = signal.as_str().into();
        }
        let text = serde_json::to_string_pretty(&report).unwrap_or_default();
        crate::outln!("{text}");
    }
    for (host, why) in &failed_hosts {
        eprintln!("error: host `{host}`: {why}");
    }
    crate::run_result(&reports, interrupted, failed_hosts.into_keys().collect())
}
