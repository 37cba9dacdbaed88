//! Deploying to other hosts: tack reaches a host with the system's ssh
//! ([`ssh`]), starts itself there as an agent, uploading its own binary
//! when the host lacks it ([`bootstrap`]), and talks to it in
//! length-prefixed JSON frames ([`frame`], [`protocol`]) over that one
//! session. [`agent`] is the far end.

pub mod agent;
pub mod bootstrap;
pub mod deploying;
pub mod executable;
pub mod frame;
pub mod ping;
pub mod plan;
pub mod protocol;
pub mod ssh;
