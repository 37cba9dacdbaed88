//! `tack agent`: the far end of a session, started by
//! [`crate::remote::bootstrap`] on a host over ssh.
//!
//! The agent's stdout is the protocol channel: it carries frames and
//! nothing else. Nothing of tack may print to stdout while the agent runs
//! (no `outln!`, no `println!`, no report printed as text); whatever it
//! has to report goes back as a [`Response`] frame. Its stderr reaches the
//! deploying side through ssh, which quotes its last line in errors.

use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use crate::error::Error;
use crate::remote::executable;
use crate::remote::frame;
use crate::remote::protocol::{Hello, Request, Response};

/// Greets with [`Hello`], then answers requests until `Bye` or the end of
/// `input`. An agent running from a cache entry whose name is not the
/// hash of what runs (the file was damaged on disk) greets, removes the
/// entry and fails: the deploying side sees the hash and uploads anew next
/// time.
pub fn serve(input: impl Read + Send, output: impl Write + Send) -> Result<(), Error> {
    let mut input = BufReader::new(input);
    let mut output = BufWriter::new(output);
    let own = executable::own().map_err(Error::Agent)?;
    let hello = Hello {
        version: env!("CARGO_PKG_VERSION").to_string(),
        os: std::env::consts::OS.to_string(),
        arch: std::env::consts::ARCH.to_string(),
        exe_hash: own.hash.clone(),
        home: std::env::var("HOME").unwrap_or_default(),
    };
    frame::write_frame(&mut output, &hello).map_err(|error| channel("greet", error))?;
    if let Some(entry) = std::env::current_exe()
        .ok()
        .and_then(|path| corrupt_cache_entry(&path, &own.hash))
    {
        std::fs::remove_file(&entry).map_err(|error| Error::io("remove", &entry, error))?;
        return Err(Error::Agent(format!(
            "`{}` is not the binary its cache entry names (blake3 {}); removed it",
            entry.display(),
            own.hash
        )));
    }
    loop {
        let request = frame::read_frame::<_, Request>(&mut input)
            .map_err(|error| channel("read a request", error))?;
        match request {
            None | Some(Request::Bye) => return Ok(()),
            Some(Request::Ping) => frame::write_frame(&mut output, &Response::Pong)
                .map_err(|error| channel("answer", error))?,
            Some(Request::Deploy(plan)) => {
                crate::remote::deploying::deploy(*plan, &mut input, &mut output);
                return Ok(());
            }
            // Only meaningful during a deploy.
            Some(Request::Contents { .. } | Request::Settled { .. } | Request::Stop { .. }) => {}
        }
    }
}

/// `path` when it is a bootstrap cache entry (`.../tack/bin/<blake3>/tack`)
/// named for another hash than `own_hash`: only a file tack put there
/// itself is ever removed.
fn corrupt_cache_entry(path: &Path, own_hash: &str) -> Option<PathBuf> {
    let named = path.parent()?;
    let hash = named.file_name()?.to_str()?;
    let bin = named.parent()?;
    let is_entry = path.file_name()? == "tack"
        && hash.len() == 64
        && hash.bytes().all(|byte| byte.is_ascii_hexdigit())
        && bin.file_name()? == "bin"
        && bin.parent()?.file_name()? == "tack";
    (is_entry && hash != own_hash).then(|| path.to_path_buf())
}

fn channel(action: &str, error: std::io::Error) -> Error {
    Error::Agent(format!("cannot {action} on the ssh channel: {error}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_agent_greets_answers_pings_and_stops_at_bye() {
        let mut requests = Vec::new();
        frame::write_frame(&mut requests, &Request::Ping).unwrap();
        frame::write_frame(&mut requests, &Request::Ping).unwrap();
        frame::write_frame(&mut requests, &Request::Bye).unwrap();
        frame::write_frame(&mut requests, &Request::Ping).unwrap();
        let mut output = Vec::new();
        serve(requests.as_slice(), &mut output).unwrap();

        let mut output = output.as_slice();
        let hello: Hello = frame::read_frame(&mut output).unwrap().unwrap();
        assert_eq!(hello.exe_hash, executable::own().unwrap().hash);
        assert_eq!(hello.os, std::env::consts::OS);
        for _ in 0..2 {
            let pong: Option<Response> = frame::read_frame(&mut output).unwrap();
            assert!(matches!(pong, Some(Response::Pong)), "{pong:?}");
        }
        let after_bye: Option<Response> = frame::read_frame(&mut output).unwrap();
        assert!(after_bye.is_none(), "nothing is answered after Bye");
    }

    #[test]
    fn the_end_of_input_ends_the_agent() {
        let mut output = Vec::new();
        serve(&b""[..], &mut output).unwrap();
        let mut output = output.as_slice();
        let hello: Option<Hello> = frame::read_frame(&mut output).unwrap();
        assert!(hello.is_some());
    }

    #[test]
    fn only_a_cache_entry_named_for_another_hash_is_corrupt() {
        let own = "a".repeat(64);
        let other = "b".repeat(64);
        let entry = |hash: &str| PathBuf::from(format!("/home/u/.cache/tack/bin/{hash}/tack"));
        assert_eq!(
            corrupt_cache_entry(&entry(&other), &own),
            Some(entry(&other))
        );
        assert_eq!(corrupt_cache_entry(&entry(&own), &own), None);
        let elsewhere = PathBuf::from(format!("/usr/local/bin/{other}/tack"));
        assert_eq!(corrupt_cache_entry(&elsewhere, &own), None);
        assert_eq!(corrupt_cache_entry(Path::new("/usr/bin/tack"), &own), None);
    }
}
