//! tack deploys components the way a build system builds: every action is a
//! node with a content-addressed key, and a repeated deploy runs only what
//! changed. ARCHITECTURE.md has the map; [`run`] is the entry point.

pub mod apply;
pub mod atomic;
pub mod cache_command;
pub mod cli;
pub mod component;
pub mod configure;
pub mod confined;
pub mod db;
pub mod deploy;
pub mod environment;
pub mod error;
pub mod executor;
pub mod fault;
pub mod fingerprint;
pub mod fleet;
pub mod graph;
pub mod hosts;
pub mod incremental;
pub mod ini_file;
pub mod interrupt;
pub mod lock;
pub mod manifest;
pub mod nodes;
pub mod observe;
pub mod peers;
pub mod plan;
pub mod process;
pub mod provenance;
pub mod prune;
pub mod reason;
pub mod remote;
pub mod report;
pub mod runner;
pub mod secrets;
pub mod secrets_command;
pub mod selection;
pub mod state;
pub mod status_line;
pub mod step_cache;
pub mod supervisor_rpc;
pub mod template;
pub mod timings;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::Parser;

use crate::cli::{Cli, Command, Format, Target};
use crate::configure::{environment_def, host_graph};
use crate::db::{Database, Deployment};
use crate::deploy::{CacheOptions, HostReport, Options};
use crate::environment::{ConnectMethod, EnvironmentDef};
use crate::error::{ConfigError, Error, Result};
use crate::graph::HostGraph;
use crate::prune::Prunable;
use crate::report::Reporter;

/// Runs tack with `args` (program name first) and returns the exit code:
/// 0 on success, 1 when a node failed, 2 when tack stopped before touching
/// the host (bad configuration, bad usage), 128 plus the signal's number
/// when it was interrupted (130 for SIGINT, 143 for SIGTERM).
pub fn run(args: impl IntoIterator<Item = OsString>) -> i32 {
    // First, so that an interrupt never finds a step started without it.
    interrupt::install();
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(error) => {
            let _ = error.print();
            return if error.use_stderr() { 2 } else { 0 };
        }
    };
    match dispatch(cli) {
        Ok(()) => 0,
        Err(error) => {
            eprintln!("error: {error}");
            error.exit_code()
        }
    }
}

fn dispatch(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Local(args) => {
            let options = deploy_options(&args)?;
            if fleet::over_ssh(&options)? {
                eprintln!(
                    "note: `{env}` connects over ssh; `tack local` deploys its hosts that are \
                     this machine (or --host) here, under this directory; `tack deploy {env}` \
                     deploys over ssh",
                    env = options.environment
                );
            }
            deploy(&args.target, &options, args.format)
        }
        Command::Deploy(args) => {
            let local = &args.local;
            let options = deploy_options(local)?;
            if fleet::over_ssh(&options)? {
                if local.cache_dir.is_some() {
                    eprintln!(
                        "warning: --cache-dir (or TACK_CACHE_DIR) names a directory of this \
                         machine; over ssh each host keeps its step cache in its \
                         remote_dir/.tack/cache"
                    );
                }
                fleet::deploy(
                    &local.target,
                    &options,
                    local.jobs,
                    args.host_jobs,
                    local.format,
                )
            } else {
                deploy(&local.target, &options, local.format)
            }
        }
        Command::Explain(args) => {
            let options = Options {
                only: args.node,
                ..options(&args.target, true, true, args.diff)?
            };
            if fleet::over_ssh(&options)? {
                fleet::deploy(&args.target, &options, None, None, args.format)
            } else {
                deploy(&args.target, &options, args.format)
            }
        }
        Command::Cache(args) => cache_command::run(&args),
        Command::Completions { shell } => {
            let mut command = <Cli as clap::CommandFactory>::command();
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut command, "tack", &mut script);
            report::write_out(format_args!("{}", String::from_utf8_lossy(&script)))?;
            Ok(())
        }
        Command::Secrets(args) => secrets_command::run(&args),
        Command::Agent => remote::agent::serve(std::io::stdin(), std::io::stdout()),
        Command::SshPing(args) => remote::ping::run(&args),
        Command::Graph(args) => {
            let options = options(&args.target, true, false, false)?;
            // Over ssh, every host is deployed from here: show them all.
            let every_host = fleet::over_ssh(&options)?;
            for graph in configure_all(&options, &args.target, every_host)?.graphs {
                report::write_out(format_args!("{}", graph.to_dot()))?;
            }
            Ok(())
        }
    }
}

/// The options of `tack local` and `tack deploy`.
fn deploy_options(args: &cli::LocalArgs) -> Result<Options> {
    let options = options(&args.target, args.dry_run, args.explain, args.diff)?;
    Ok(Options {
        jobs: args.jobs.unwrap_or(options.jobs),
        force: args.force.clone(),
        lock_timeout: args.lock_timeout.map(std::time::Duration::from_secs),
        prune: args.prune,
        cache: Some(CacheOptions {
            dir: cache_command::cache_dir(args.cache_dir.as_deref(), &options.root),
            salt: args.cache_salt.clone(),
            read: !args.no_cache_read,
        }),
        ..options
    })
}

/// The deployment directory, absolute: `workdir` and keys are built on it.
fn deployment_root(target: &Target) -> Result<PathBuf> {
    target
        .dir
        .canonicalize()
        .map_err(|error| Error::io("open deployment directory", &target.dir, error))
}

/// Options of a run; decrypts the environment's secrets first, so a
/// missing identity or a tampered file stops tack before it writes.
fn options(target: &Target, dry_run: bool, explain: bool, diff: bool) -> Result<Options> {
    let root = deployment_root(target)?;
    let secrets = secrets::Unlocked::open(&root, &target.env, target.identity.as_deref())?;
    let mask_key = secrets::mask_key(&root)?;
    provenance::set_mask_key(mask_key);
    Ok(Options {
        secrets: Arc::new(secrets),
        mask_key: Some(mask_key),
        root,
        environment: target.env.clone(),
        dry_run,
        explain,
        diff,
        jobs: std::thread::available_parallelism().map_or(1, |n| n.get()),
        force: Vec::new(),
        only: None,
        started: std::time::Instant::now(),
        lock_timeout: None,
        prune: false,
        cache: None,
    })
}

fn deploy(target: &Target, options: &Options, format: Format) -> Result<()> {
    let json = format == Format::Json;
    let reporter_for = |host: &str, several: bool| {
        let prefix = if several {
            format!("{host}: ")
        } else {
            String::new()
        };
        Reporter::new(options.explain, prefix, &options.root, json)
    };
    let choice = target.host_choice();
    let incremental = incremental::run(options, choice.as_deref(), &reporter_for)?;
    let mut reports = match incremental {
        incremental::Outcome::Done(reports) => reports,
        incremental::Outcome::Full(why) => {
            if options.explain {
                reporter_for("", false).line(&format!("Configuring every component: {why}"));
            }
            deploy_configured(target, options, &reporter_for)?
        }
    };
    let interrupted = reports.iter().find_map(|report| report.interrupted);
    if json {
        // `tack explain ENV NODE` reports that node; the summary stays the
        // host's, as in the text form.
        if let Some(only) = &options.only {
            for report in &mut reports {
                report.nodes.retain(|node| {
                    let component = node.id.split('/').next().unwrap_or_default();
                    selection::selects(only, &node.id, component)
                });
            }
        }
        let mut report = serde_json::json!({
            "environment": options.environment,
            "hosts": reports,
        });
        if let Some(signal) = interrupted {
            report["interrupted"] = signal.as_str().into();
        }
        let text = serde_json::to_string_pretty(&report).unwrap_or_default();
        outln!("{text}");
    }
    run_result(&reports, interrupted, Vec::new())
}

/// How a run ends, from its hosts' reports: interrupted (the signal, and
/// how many nodes it stopped or kept from starting), with `failed_hosts`
/// (hosts over ssh that could not be deployed), with failed nodes, or well.
pub(crate) fn run_result(
    reports: &[HostReport],
    interrupted: Option<nix::sys::signal::Signal>,
    failed_hosts: Vec<String>,
) -> Result<()> {
    if let Some(signal) = interrupted {
        let count = |outcome: &str| {
            let nodes = reports.iter().flat_map(|report| &report.nodes);
            nodes.filter(|node| node.outcome == outcome).count()
        };
        return Err(Error::Interrupted {
            signal,
            stopped: count("interrupted"),
            not_started: count("not started"),
        });
    }
    let failed: usize = reports.iter().map(|r| r.summary.failed).sum();
    let skipped: usize = reports.iter().map(|r| r.summary.skipped).sum();
    if !failed_hosts.is_empty() {
        return Err(Error::HostsFailed {
            hosts: failed_hosts,
            failed,
            skipped,
        });
    }
    if failed > 0 {
        return Err(Error::NodesFailed { failed, skipped });
    }
    Ok(())
}

/// The full path: configure, then deploy each selected host; remember what
/// was configured from when everything finished, for the next no-op run.
fn deploy_configured(
    target: &Target,
    options: &Options,
    reporter_for: &dyn Fn(&str, bool) -> Reporter,
) -> Result<Vec<HostReport>> {
    let started = std::time::Instant::now();
    let before = manifest::clock();
    let configured = configure_all(options, target, false)?;
    let nodes = configured
        .graphs
        .iter()
        .flat_map(|graph| graph.nodes.iter())
        .map(|node| (node.id.as_str(), node.component.as_str()));
    selection::check("--force", &options.force, nodes.clone())?;
    selection::check("NODE", options.only.as_slice(), nodes)?;
    let started = timings::phase("configure", started);
    // Taken after configuring, so a configuration error writes nothing.
    let _lock = if options.dry_run {
        None
    } else {
        let lock = options.lock()?;
        manifest::forget(&options.root, &options.environment)?;
        Some(lock)
    };
    let several = configured.graphs.len() > 1;
    let graphs: Vec<&HostGraph> = configured
        .graphs
        .iter()
        .map(|graph| graph.as_ref())
        .collect();
    let wiring = configure::wiring(&configured.db, configured.deployment)
        .clone()
        .map_err(Error::Configs)?;
    let crossings = hosts::crossings(&wiring, &graphs);
    let jobs = graphs
        .iter()
        .map(|graph| hosts::HostJob {
            graph,
            scope: deploy::Scope::Whole {
                prunable: &configured.prunable,
            },
            reporter: reporter_for(&graph.host, several),
        })
        .collect();
    let reports = hosts_reports(hosts::deploy_here(jobs, &crossings, options))?;
    let started = timings::phase("deploy", started);
    let clean = reports.iter().all(HostReport::clean);
    if !options.dry_run && clean {
        let manifest = manifest::of_full_run(
            &configured.db,
            configured.deployment,
            target.host_choice().as_deref(),
            before,
            &configured.graphs,
            &reports,
        );
        if let Some(manifest) = manifest {
            manifest.write(&options.environment).map_err(|error| {
                let then = "their state is saved; the next run configures every component";
                after_reports(&reports, then, error)
            })?;
        }
        timings::phase("manifest", started);
    }
    Ok(reports)
}

/// The reports of hosts deployed at once; the first error (noting the
/// nodes the other hosts ran) if one failed.
pub(crate) fn hosts_reports(results: Vec<Result<HostReport>>) -> Result<Vec<HostReport>> {
    let mut reports = Vec::new();
    let mut failure = None;
    for result in results {
        match result {
            Ok(report) => reports.push(report),
            Err(error) => {
                failure.get_or_insert(error);
            }
        }
    }
    match failure {
        Some(error) => Err(after_reports(&reports, "their state is saved", error)),
        None => Ok(reports),
    }
}

/// `error`, noting the nodes that changed a host in the runs of `reports`
/// before it (see [`Error::after_nodes_ran`]).
fn after_reports(reports: &[HostReport], then: &str, error: Error) -> Error {
    if matches!(error, Error::AfterNodesRan { .. }) {
        return error;
    }
    let hosts: Vec<&str> = reports.iter().map(|report| report.host.as_str()).collect();
    let ran: Vec<String> = reports
        .iter()
        .flat_map(|report| &report.nodes)
        .filter(|node| {
            !["unchanged", "removed", "failed", "skipped"].contains(&node.outcome.as_str())
        })
        .map(|node| node.display.clone())
        .collect();
    Error::after_nodes_ran(&hosts.join("`, `"), &ran, then, error)
}

/// Configures the whole environment (every host, so provide/require
/// resolves across hosts and every mistake is found) and returns the
/// graphs of the hosts this run deploys. Nothing is written.
/// What configuring produced, and the files it was produced from.
struct Configured {
    graphs: Vec<Arc<HostGraph>>,
    /// What `--prune` may touch, knowing every host's nodes.
    prunable: Prunable,
    db: Database,
    deployment: Deployment,
}

fn configure_all(options: &Options, target: &Target, every_host: bool) -> Result<Configured> {
    let root = &options.root;
    let db = Database::with_secrets(root, options.secrets.clone());
    let deployment = Deployment::new(
        &db,
        root.to_path_buf(),
        target.env.clone(),
        None,
        Default::default(),
    );
    let env = environment_def(&db, deployment)
        .clone()
        .map_err(|error| unknown_environment_hint(error, root))?;
    let mut graphs = Vec::new();
    let mut errors: Vec<ConfigError> = Vec::new();
    for host in &env.hosts {
        match host_graph(&db, deployment, host.name.clone()) {
            Ok(graph) => graphs.push(graph.clone()),
            Err(host_errors) => {
                for error in host_errors {
                    if !errors.contains(error) {
                        errors.push(error.clone());
                    }
                }
            }
        }
    }
    if env.connect_method == ConnectMethod::Local {
        errors.extend(shared_targets(&graphs));
    }
    if !errors.is_empty() {
        return Err(Error::Configs(errors));
    }
    let selected = select_hosts(&env, &target.hosts, every_host)?;
    let prunable = Prunable::new(
        root.join(&env.work_dir),
        graphs.iter().map(|graph| graph.as_ref()),
    );
    Ok(Configured {
        prunable,
        graphs: graphs
            .into_iter()
            .filter(|graph| selected.contains(&graph.host))
            .collect(),
        db,
        deployment,
    })
}

/// `connect_method = local` deploys every host to this machine: a path
/// owned by nodes of two hosts would be rewritten by each in turn, on
/// every run.
fn shared_targets(graphs: &[Arc<HostGraph>]) -> Vec<ConfigError> {
    let owned = graphs
        .iter()
        .flat_map(|graph| graph.nodes.iter().map(|node| (graph.host.as_str(), node)));
    graph::clashing_owners(owned)
        .into_iter()
        // Within a host, `configure::assemble` reports them.
        .filter(|[(host, _), (other_host, _)]| host != other_host)
        .map(|[(host, other), (other_host, node)]| {
            ConfigError::new(
                node.defined_at(),
                format!(
                    "{} on host `{host}` and {} on host `{other_host}` both deploy `{}`: \
                     connect_method = local deploys every host to this machine",
                    other.display,
                    node.display,
                    node.action.target().display()
                ),
            )
        })
        .collect()
}

/// The hosts a run deploys, in the order of `[hosts]`: those of
/// `--host`, else every host when `every_host` (`tack deploy`) or the
/// environment connects locally, else the hosts naming this machine.
pub(crate) fn select_hosts(
    env: &EnvironmentDef,
    wanted: &[String],
    every_host: bool,
) -> Result<Vec<String>> {
    let names: Vec<String> = env.hosts.iter().map(|host| host.name.clone()).collect();
    if !wanted.is_empty() {
        if let Some(unknown) = wanted.iter().find(|wanted| !names.contains(wanted)) {
            return Err(Error::Usage(format!(
                "host `{unknown}` is not in {} (hosts: {})",
                env.file,
                names.join(", ")
            )));
        }
        return Ok(names
            .into_iter()
            .filter(|name| wanted.contains(name))
            .collect());
    }
    if every_host || env.connect_method == ConnectMethod::Local {
        return Ok(names);
    }
    let hostname = observe::hostname();
    let short = hostname.split('.').next().unwrap_or_default().to_string();
    let local: Vec<String> = names
        .iter()
        .filter(|name| {
            ["localhost", "127.0.0.1", hostname.as_str(), short.as_str()].contains(&name.as_str())
        })
        .cloned()
        .collect();
    if local.is_empty() {
        return Err(Error::Usage(format!(
            "no host of {} is this machine (`{hostname}`); pick one with --host (hosts: {})",
            env.file,
            names.join(", ")
        )));
    }
    Ok(local)
}

/// Adds the environments that do exist to an unknown-environment error.
pub(crate) fn unknown_environment_hint(mut error: ConfigError, root: &Path) -> Error {
    if error.message.starts_with("unknown environment") {
        let mut known: Vec<String> = std::fs::read_dir(root.join("environments"))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|entry| {
                let name = entry.file_name().to_string_lossy().to_string();
                name.strip_suffix(".cfg").map(str::to_string)
            })
            .collect();
        known.sort();
        let known = if known.is_empty() {
            "none".to_string()
        } else {
            known.join(", ")
        };
        error.message = format!("{} (known environments: {known})", error.message);
    }
    Error::Config(error)
}
