//! `tack ssh-ping HOST` (hidden): starts the agent on a host the way a
//! deploy will, pings it and says whether the binary was uploaded. It is
//! how the tests drive the transport with the real `tack` binary (the test
//! binary cannot stand in for it: the bootstrap uploads the running
//! executable), and how an operator checks that a host is reachable.

use std::time::{Duration, Instant};

use crate::cli::SshPingArgs;
use crate::error::Error;
use crate::outln;
use crate::remote::bootstrap;
use crate::remote::protocol::{Request, Response};
use crate::remote::ssh::Ssh;

pub fn run(args: &SshPingArgs) -> Result<(), Error> {
    let started = Instant::now();
    let ssh = Ssh {
        destination: args.host.clone(),
        config: args.ssh_config.clone(),
        connect_timeout: Duration::from_secs(args.connect_timeout),
    };
    let mut agent = bootstrap::start_agent(&ssh)?;
    match agent.uploaded {
        Some(bytes) => outln!("uploaded {bytes} bytes to {}", ssh.destination),
        None => outln!("tack is already on {}", ssh.destination),
    }
    agent.send(&Request::Ping)?;
    let answer: Option<Response> = agent.receive()?;
    if !matches!(answer, Some(Response::Pong)) {
        return Err(Error::Remote {
            host: ssh.destination,
            message: format!("the agent answered {answer:?} to a ping"),
        });
    }
    let hello = agent.hello.clone();
    agent.send(&Request::Bye)?;
    agent.finish()?;
    outln!(
        "pong from {} (tack {}, {} {}) in {} ms",
        ssh.destination,
        hello.version,
        hello.os,
        hello.arch,
        started.elapsed().as_millis()
    );
    Ok(())
}
