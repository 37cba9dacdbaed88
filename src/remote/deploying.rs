//! The agent's side of a deploy: one host's [`HostPlan`] run by
//! `deploy::deploy_host` on this host, as `tack local` would run it, with
//! its lines, its requests for file contents and its settled exports
//! carried back over the session, and the other hosts' settled components
//! (for its gates) and an interrupt carried in.
//!
//! Three threads share the session: this one deploys; a writer owns the
//! output and sends every [`Response`] the deploy queues (so lines from
//! parallel nodes never interleave inside a frame); a reader takes the
//! deploying side's messages. The deploying side going away (the end of
//! the input) is an interrupt, as a hangup is for `tack local`: no node
//! starts after it, the running steps are stopped, and the state is saved
//! with them marked unfinished, so the next deploy repairs exactly those.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::sync::mpsc::{channel, Sender};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::deploy::{deploy_host, CacheOptions, Options, Scope};
use crate::error::{Error, Result};
use crate::fingerprint::Fingerprint;
use crate::peers::{Links, Peers};
use crate::prune::Prunable;
use crate::remote::frame;
use crate::remote::plan::{Finished, HostPlan};
use crate::remote::protocol::{Request, Response};
use crate::report::Reporter;

/// Deploys `plan`, reading the deploying side's messages from `input` and
/// answering on `output`, until the deploying side says `Bye` or goes
/// away after the deploy finished.
pub fn deploy(plan: HostPlan, input: &mut (impl Read + Send), output: &mut (impl Write + Send)) {
    let (outbox, queued) = channel::<Response>();
    let inbox = Inbox::default();
    std::thread::scope(|scope| {
        scope.spawn(move || {
            for message in queued {
                if frame::write_frame(output, &message).is_err() {
                    // The deploying side is gone; the reader sees it too.
                    break;
                }
            }
        });
        scope.spawn(|| read_messages(input, &inbox));
        let answer = match run(&plan, &outbox, &inbox) {
            Ok(finished) => Response::Finished(Box::new(finished)),
            Err(error) => Response::Failed {
                message: error.to_string(),
                exit_code: error.exit_code(),
            },
        };
        inbox.done();
        let _ = outbox.send(answer);
        drop(outbox);
    });
}

fn run(plan: &HostPlan, outbox: &Sender<Response>, inbox: &Inbox) -> Result<Finished> {
    let options = &plan.options;
    let root = &plan.root;
    if !options.dry_run {
        std::fs::create_dir_all(root).map_err(|error| Error::io("create", root, error))?;
    }
    let options = Options {
        root: root.clone(),
        environment: plan.graph.environment.clone(),
        dry_run: options.dry_run,
        explain: options.explain,
        diff: options.diff,
        jobs: options
            .jobs
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())),
        force: options.force.clone(),
        only: options.only.clone(),
        cache: Some(CacheOptions {
            dir: crate::cache_command::cache_dir(None, root),
            salt: None,
            read: true,
        }),
        prune: options.prune,
        lock_timeout: options.lock_timeout_secs.map(Duration::from_secs),
        started: Instant::now(),
        secrets: Arc::default(),
        // Secrets are configured and masked on the deploying machine.
        mask_key: None,
    };
    let _lock = if options.dry_run {
        None
    } else {
        Some(options.lock()?)
    };
    let reporter = Reporter::to(
        Box::new(Lines::new(outbox.clone())),
        options.explain,
        plan.options.prefix.clone(),
        root,
        plan.options.json,
    );
    let prunable = Prunable::new(plan.work_dir.clone(), [&plan.graph]);
    let peers = AgentPeers {
        outbox: Mutex::new(outbox.clone()),
        inbox,
        gates: plan
            .gates
            .iter()
            .map(|gate| (gate.host.clone(), gate.component.clone()))
            .collect(),
    };
    let links = Links {
        gates: &plan.gates,
        exports: &plan.exports,
        peers: &peers,
    };
    let report = deploy_host(
        &plan.graph,
        Scope::Whole {
            prunable: &prunable,
        },
        &options,
        &reporter,
        &links,
    )?;
    Ok(Finished {
        interrupted: report.interrupted.map(|signal| signal.as_str().to_string()),
        report,
    })
}

/// Reads the deploying side's messages into `inbox` until `Bye` or the end
/// of the input.
fn read_messages(input: &mut impl Read, inbox: &Inbox) {
    loop {
        let request = frame::read_frame::<_, Request>(input);
        let request = match request {
            Ok(Some(request)) => request,
            Ok(None) | Err(_) => {
                inbox.gone();
                return;
            }
        };
        match request {
            Request::Bye => {
                inbox.gone();
                return;
            }
            Request::Contents { count } => {
                let mut contents = Vec::with_capacity(count);
                for _ in 0..count {
                    match frame::read_raw(input) {
                        Ok(bytes) => contents.push(Arc::from(bytes)),
                        Err(_) => {
                            inbox.gone();
                            return;
                        }
                    }
                }
                inbox.update(|state| state.contents = Some(contents));
            }
            Request::Settled {
                host,
                component,
                failed,
            } => inbox.update(|state| {
                state.settled.insert((host, component), failed);
            }),
            Request::Stop { signal } => {
                let signal = signal.parse().unwrap_or(nix::sys::signal::Signal::SIGHUP);
                inbox.stop(signal);
            }
            // Not asked during a deploy; a newer tack would not send them.
            Request::Ping | Request::Deploy(_) => {}
        }
    }
}

/// What the reader has received, for the deploy's threads to wait on.
#[derive(Default)]
struct Inbox {
    state: Mutex<InboxState>,
    changed: Condvar,
}

#[derive(Default)]
struct InboxState {
    contents: Option<Vec<Arc<[u8]>>>,
    /// (host, component) -> the node that did not finish, if one.
    settled: HashMap<(String, String), Option<String>>,
    /// The deploying side went away or said goodbye.
    gone: bool,
    /// The deploy finished: the deploying side going away now is no
    /// interrupt.
    done: bool,
}

impl Inbox {
    fn update(&self, change: impl FnOnce(&mut InboxState)) {
        change(&mut self.state.lock().unwrap_or_else(|e| e.into_inner()));
        self.changed.notify_all();
    }

    fn gone(&self) {
        let was_done = {
            let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
            state.gone = true;
            state.done
        };
        self.changed.notify_all();
        if !was_done {
            self.stop(nix::sys::signal::Signal::SIGHUP);
        }
    }

    fn done(&self) {
        self.update(|state| state.done = true);
    }

    /// Stops the deploy as `signal` stops `tack local`: the deploying
    /// side's interrupt, or a hangup when it went away.
    fn stop(&self, signal: nix::sys::signal::Signal) {
        let _ = nix::sys::signal::kill(nix::unistd::getpid(), signal);
    }

    /// Waits until `ready` returns something, checking for an interrupt
    /// and for the deploying side going away now and then.
    fn wait_for<T>(
        &self,
        mut ready: impl FnMut(&mut InboxState) -> Option<T>,
    ) -> Result<T, String> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if let Some(value) = ready(&mut state) {
                return Ok(value);
            }
            if state.gone {
                return Err("the deploying side went away".into());
            }
            if let Some(signal) = crate::interrupt::signal() {
                return Err(format!("interrupted by {}", signal.as_str()));
            }
            state = self
                .changed
                .wait_timeout(state, Duration::from_millis(100))
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
}

/// The [`Peers`] of a host deployed by an agent: everything goes through
/// the deploying side.
struct AgentPeers<'a> {
    outbox: Mutex<Sender<Response>>,
    inbox: &'a Inbox,
    /// Each gate's (host, component).
    gates: Vec<(String, String)>,
}

impl AgentPeers<'_> {
    fn send(&self, message: Response) -> Result<(), String> {
        let outbox = self.outbox.lock().unwrap_or_else(|e| e.into_inner());
        outbox
            .send(message)
            .map_err(|_| "the session is closed".to_string())
    }
}

impl Peers for AgentPeers<'_> {
    fn contents(&self, wanted: &[Fingerprint]) -> Result<Vec<Arc<[u8]>>, String> {
        self.inbox.update(|state| state.contents = None);
        self.send(Response::Want {
            digests: wanted.to_vec(),
        })?;
        let contents = self.inbox.wait_for(|state| state.contents.take())?;
        if contents.len() != wanted.len() {
            return Err(format!(
                "asked for {} contents, got {}",
                wanted.len(),
                contents.len()
            ));
        }
        Ok(contents)
    }

    fn wait(&self, gate: usize) -> Result<(), String> {
        let key = &self.gates[gate];
        let failed = self
            .inbox
            .wait_for(|state| state.settled.get(key).cloned())?;
        match failed {
            None => Ok(()),
            Some(node) => Err(format!("{}: {node}", key.0)),
        }
    }

    fn settled(&self, component: &str, failed: Option<String>) {
        let _ = self.send(Response::Settled {
            component: component.to_string(),
            failed,
        });
    }
}

/// The report's lines as `Output` frames, one per block the reporter
/// flushes.
struct Lines {
    outbox: Sender<Response>,
    pending: Vec<u8>,
}

impl Lines {
    fn new(outbox: Sender<Response>) -> Lines {
        Lines {
            outbox,
            pending: Vec::new(),
        }
    }
}

impl Write for Lines {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.pending.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let text = String::from_utf8_lossy(&std::mem::take(&mut self.pending)).into_owned();
        self.outbox
            .send(Response::Output { text })
            .map_err(|_| std::io::ErrorKind::BrokenPipe.into())
    }
}
