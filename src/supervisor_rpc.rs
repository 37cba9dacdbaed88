//! Talking to supervisord over its XML-RPC interface (`inet_http_server`),
//! from Rust: one HTTP/1.0 POST per call and a small reader for the
//! response, so observing every program costs one request and no Python
//! process.
//!
//! This module only speaks the protocol. What a program's state means for
//! a deploy is decided in `plan`; starting and waiting happen in `apply`.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use crate::process::Process;

/// How long a connection may take: supervisord runs on this machine.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long one answer may take. `stopProcess` waits for the program to
/// stop (supervisord's `stopwaitsecs`, 10 s by default), so this is longer.
const READ_TIMEOUT: Duration = Duration::from_secs(120);
/// How long answers may stay unreadable while supervisord restarts.
const GARBLED_PATIENCE: Duration = Duration::from_secs(5);
/// How much of a program's stderr log a failure shows.
const LOG_TAIL_BYTES: i64 = 1600;

/// supervisord's fault codes that are not failures for what tack asks.
const FAULT_ALREADY_STARTED: i64 = 60;
const FAULT_NOT_RUNNING: i64 = 70;
/// What supervisord answers while it restarts itself (SIGHUP) or stops.
const FAULT_SHUTDOWN_STATE: i64 = 6;

/// A supervisord reachable at an `http://HOST:PORT` address.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Supervisord {
    pub url: String,
}

/// Why a call did not give an answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RpcError {
    /// Nothing answers at the address (supervisord is not running, or
    /// listens elsewhere).
    Unreachable(String),
    /// supervisord answered with a fault.
    Fault { code: i64, text: String },
    /// Something answered, but not as supervisord does.
    Protocol(String),
}

impl std::fmt::Display for RpcError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RpcError::Unreachable(why) => write!(f, "{why}"),
            RpcError::Fault { code, text } => write!(f, "supervisord says {text} (fault {code})"),
            RpcError::Protocol(why) => write!(f, "{why}"),
        }
    }
}

/// One program as `supervisor.getAllProcessInfo` describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProgramInfo {
    /// `group:name` unless the group has the program's name.
    pub name: String,
    /// `RUNNING`, `STARTING`, `STOPPED`, `BACKOFF`, `FATAL`, `EXITED`, ...
    pub state: String,
    pub pid: i32,
    /// Seconds since the epoch of the last start and stop.
    pub start: i64,
    pub stop: i64,
    /// Why the last spawn failed, if it did.
    pub spawnerr: String,
}

impl ProgramInfo {
    /// The live process supervisord says runs this program, with its start
    /// time from `/proc`, so a later look can tell a restart.
    pub fn process(&self) -> Option<Process> {
        match self.state.as_str() {
            "RUNNING" | "STARTING" | "STOPPING" => Process::find(self.pid),
            _ => None,
        }
    }

    /// `STOPPED since 20:16 UTC`: the state and when it was entered.
    pub fn describe(&self) -> String {
        let since = match self.state.as_str() {
            "STOPPED" | "EXITED" | "FATAL" if self.stop > 0 => self.stop,
            _ => self.start,
        };
        let mut text = if since > 0 {
            format!("{} since {}", self.state, clock_time(since))
        } else {
            self.state.clone()
        };
        if !self.spawnerr.is_empty() {
            text.push_str(&format!(" ({})", self.spawnerr));
        }
        text
    }
}

/// `HH:MM UTC` of a time in seconds since the epoch.
fn clock_time(epoch: i64) -> String {
    let minutes = epoch.rem_euclid(86_400) / 60;
    format!("{:02}:{:02} UTC", minutes / 60, minutes % 60)
}

impl Supervisord {
    pub fn new(url: impl Into<String>) -> Supervisord {
        Supervisord { url: url.into() }
    }

    /// Every program supervisord runs, in one call.
    pub fn all_process_info(&self) -> Result<Vec<ProgramInfo>, RpcError> {
        let answer = self.call("supervisor.getAllProcessInfo", &[])?;
        let Value::Array(items) = answer else {
            return Err(self.unexpected("getAllProcessInfo"));
        };
        items
            .iter()
            .map(|item| program_info(item).ok_or_else(|| self.unexpected("getAllProcessInfo")))
            .collect()
    }

    /// Asks supervisord to start `name` without waiting for it; one that
    /// runs already is fine.
    pub fn start(&self, name: &str) -> Result<(), RpcError> {
        let params = [Value::Str(name.into()), Value::Bool(false)];
        match self.call("supervisor.startProcess", &params) {
            Err(RpcError::Fault { code, .. }) if code == FAULT_ALREADY_STARTED => Ok(()),
            other => other.map(drop),
        }
    }

    /// Stops `name` and waits until it stopped; one that does not run is
    /// fine.
    pub fn stop(&self, name: &str) -> Result<(), RpcError> {
        let params = [Value::Str(name.into()), Value::Bool(true)];
        match self.call("supervisor.stopProcess", &params) {
            Err(RpcError::Fault { code, .. }) if code == FAULT_NOT_RUNNING => Ok(()),
            other => other.map(drop),
        }
    }

    /// The last lines `name` wrote to stderr, or to stdout when its stderr
    /// goes there (`redirect_stderr`); empty if neither can be read.
    pub fn log_tail(&self, name: &str) -> String {
        for method in [
            "supervisor.readProcessStderrLog",
            "supervisor.readProcessStdoutLog",
        ] {
            let params = [
                Value::Str(name.into()),
                Value::Int(-LOG_TAIL_BYTES),
                Value::Int(0),
            ];
            if let Ok(Value::Str(text)) = self.call(method, &params) {
                if !text.trim().is_empty() {
                    return last_lines(&text, 10);
                }
            }
        }
        String::new()
    }

    fn unexpected(&self, method: &str) -> RpcError {
        RpcError::Protocol(format!(
            "`{}` gave an unexpected answer to {method}",
            self.url
        ))
    }

    fn address(&self) -> Result<(SocketAddr, String), RpcError> {
        let rest = self.url.strip_prefix("http://").ok_or_else(|| {
            RpcError::Protocol(format!("`{}` is not an http:// address", self.url))
        })?;
        let host_port = rest.split('/').next().unwrap_or_default();
        let address = host_port
            .to_socket_addrs()
            .ok()
            .and_then(|mut addresses| addresses.next())
            .ok_or_else(|| {
                RpcError::Protocol(format!("`{}` names no address to connect to", self.url))
            })?;
        Ok((address, host_port.to_string()))
    }

    /// One XML-RPC call: an HTTP/1.0 POST to `/RPC2`, read to the end.
    fn call(&self, method: &str, params: &[Value]) -> Result<Value, RpcError> {
        let (address, host) = self.address()?;
        let unreachable = |error: std::io::Error| {
            RpcError::Unreachable(format!(
                "supervisord does not answer at `{}`: {error}",
                self.url
            ))
        };
        let mut stream =
            TcpStream::connect_timeout(&address, CONNECT_TIMEOUT).map_err(unreachable)?;
        stream
            .set_read_timeout(Some(READ_TIMEOUT))
            .map_err(unreachable)?;
        let mut body = format!(
            "<?xml version=\"1.0\"?>\n<methodCall><methodName>{method}</methodName><params>"
        );
        for param in params {
            body.push_str("<param>");
            param.write_xml(&mut body);
            body.push_str("</param>");
        }
        body.push_str("</params></methodCall>\n");
        let request = format!(
            "POST /RPC2 HTTP/1.0\r\nHost: {host}\r\nUser-Agent: tack\r\nContent-Type: text/xml\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(request.as_bytes()).map_err(unreachable)?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).map_err(unreachable)?;
        if response.is_empty() {
            return Err(RpcError::Unreachable(format!(
                "supervisord at `{}` closed the connection without an answer",
                self.url
            )));
        }
        let response = String::from_utf8_lossy(&response);
        let (head, body) = response
            .split_once("\r\n\r\n")
            .ok_or_else(|| self.unexpected(method))?;
        let status = head.lines().next().unwrap_or_default();
        if status.split_whitespace().nth(1) != Some("200") {
            return Err(RpcError::Protocol(format!(
                "`{}` answered {method} with `{status}`",
                self.url
            )));
        }
        match parse_response(body).ok_or_else(|| self.unexpected(method))? {
            // Not an answer about the programs: ask again later.
            Err(RpcError::Fault { code, .. }) if code == FAULT_SHUTDOWN_STATE => Err(
                RpcError::Unreachable(format!("supervisord at `{}` is restarting", self.url)),
            ),
            answer => answer,
        }
    }

    /// The pid of each program that runs now, by name: before a reload
    /// that restarts every program, to know when each was restarted.
    pub fn running_pids(&self) -> BTreeMap<String, i32> {
        self.all_process_info()
            .unwrap_or_default()
            .into_iter()
            .filter(|info| info.state == "RUNNING")
            .map(|info| (info.name, info.pid))
            .collect()
    }

    /// Polls until each of `names` is RUNNING (supervisord's `startsecs`
    /// passed) as a process other than the one `replaced` names for it,
    /// and returns their processes. A program that was not running at the
    /// first look is asked to start once (supervisord leaves one stopped
    /// by hand, or given up, as it is across a reload); one that gives up
    /// (FATAL) or is stopped after that, or is not RUNNING within
    /// `timeout`, is an error with the last lines of its log.
    pub fn wait_until_running(
        &self,
        names: &[String],
        timeout: Duration,
        replaced: &BTreeMap<String, i32>,
    ) -> Result<BTreeMap<String, Process>, String> {
        crate::fault::waiting_for_programs();
        let began = Instant::now();
        let mut first_look = true;
        let mut garbled_since = None;
        loop {
            let seen = match self.all_process_info() {
                Ok(seen) => seen,
                // supervisord starting, or restarting itself on SIGHUP.
                Err(RpcError::Unreachable(_)) if began.elapsed() < timeout => {
                    std::thread::sleep(Duration::from_millis(50));
                    continue;
                }
                // A connection cut while supervisord restarts itself reads
                // as a broken answer; one that stays broken is an error.
                Err(RpcError::Protocol(_))
                    if garbled_since.get_or_insert_with(Instant::now).elapsed()
                        < GARBLED_PATIENCE =>
                {
                    std::thread::sleep(Duration::from_millis(50));
                    continue;
                }
                Err(error) => return Err(error.to_string()),
            };
            garbled_since = None;
            let mut running = BTreeMap::new();
            let mut waiting = Vec::new();
            for name in names {
                let Some(info) = seen.iter().find(|info| &info.name == name) else {
                    return Err(format!(
                        "supervisord at `{}` has no program `{name}`",
                        self.url
                    ));
                };
                let old = replaced.get(name) == Some(&info.pid);
                if info.state == "RUNNING" && !old {
                    if let Some(process) = Process::find(info.pid) {
                        running.insert(name.clone(), process);
                        continue;
                    }
                }
                let stopped = matches!(info.state.as_str(), "STOPPED" | "EXITED" | "FATAL");
                if stopped && first_look {
                    self.start(name).map_err(|error| error.to_string())?;
                } else if matches!(info.state.as_str(), "STOPPED" | "FATAL") {
                    return Err(self.failure(info, "did not start"));
                }
                waiting.push(info);
            }
            if waiting.is_empty() {
                return Ok(running);
            }
            if began.elapsed() > timeout {
                let info = waiting[0];
                return Err(self.failure(
                    info,
                    &format!("is not RUNNING after {}s", timeout.as_secs()),
                ));
            }
            first_look = false;
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `program `tick` did not start: FATAL since ...`, then its log.
    fn failure(&self, info: &ProgramInfo, what: &str) -> String {
        let mut text = format!("program `{}` {what}: {}", info.name, info.describe());
        let tail = self.log_tail(&info.name);
        if !tail.is_empty() {
            text.push_str("\n    its log ends with:");
            for line in tail.lines() {
                text.push_str(&format!("\n      {line}"));
            }
        }
        text
    }
}

fn last_lines(text: &str, count: usize) -> String {
    let lines: Vec<&str> = text.trim_end().lines().collect();
    let from = lines.len().saturating_sub(count);
    lines[from..].join("\n")
}

fn program_info(value: &Value) -> Option<ProgramInfo> {
    let Value::Struct(fields) = value else {
        return None;
    };
    let text = |key: &str| match fields.get(key) {
        Some(Value::Str(text)) => Some(text.clone()),
        _ => None,
    };
    let int = |key: &str| match fields.get(key) {
        Some(Value::Int(number)) => Some(*number),
        _ => None,
    };
    let name = text("name")?;
    let group = text("group").unwrap_or_else(|| name.clone());
    Some(ProgramInfo {
        name: if group == name {
            name
        } else {
            format!("{group}:{name}")
        },
        state: text("statename")?,
        pid: i32::try_from(int("pid")?).ok()?,
        start: int("start").unwrap_or(0),
        stop: int("stop").unwrap_or(0),
        spawnerr: text("spawnerr").unwrap_or_default(),
    })
}

/// The XML-RPC values supervisord sends and takes.
#[derive(Clone, Debug, PartialEq)]
enum Value {
    Int(i64),
    Bool(bool),
    Str(String),
    Double(f64),
    Array(Vec<Value>),
    Struct(BTreeMap<String, Value>),
}

impl Value {
    fn write_xml(&self, out: &mut String) {
        match self {
            Value::Int(number) => out.push_str(&format!("<value><int>{number}</int></value>")),
            Value::Bool(flag) => out.push_str(&format!(
                "<value><boolean>{}</boolean></value>",
                *flag as u8
            )),
            Value::Str(text) => {
                out.push_str(&format!("<value><string>{}</string></value>", escape(text)))
            }
            Value::Double(number) => {
                out.push_str(&format!("<value><double>{number}</double></value>"))
            }
            Value::Array(items) => {
                out.push_str("<value><array><data>");
                for item in items {
                    item.write_xml(out);
                }
                out.push_str("</data></array></value>");
            }
            Value::Struct(fields) => {
                out.push_str("<value><struct>");
                for (name, value) in fields {
                    out.push_str(&format!("<member><name>{}</name>", escape(name)));
                    value.write_xml(out);
                    out.push_str("</member>");
                }
                out.push_str("</struct></value>");
            }
        }
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn unescape(text: &str) -> String {
    text.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&#13;", "\r")
        .replace("&amp;", "&")
}

/// The value of a `methodResponse`, or the fault it carries; `None` if
/// the text is not one.
fn parse_response(body: &str) -> Option<Result<Value, RpcError>> {
    let mut reader = Reader { rest: body };
    reader.skip_declaration();
    reader.open("methodResponse")?;
    if reader.try_open("fault") {
        let Value::Struct(fields) = reader.value()? else {
            return None;
        };
        let code = match fields.get("faultCode") {
            Some(Value::Int(code)) => *code,
            _ => 0,
        };
        let text = match fields.get("faultString") {
            Some(Value::Str(text)) => text.clone(),
            _ => String::new(),
        };
        return Some(Err(RpcError::Fault { code, text }));
    }
    reader.open("params")?;
    reader.open("param")?;
    Some(Ok(reader.value()?))
}

/// A cursor over the XML of one response. It reads the shapes Python's
/// `xmlrpc` writes and nothing more general.
struct Reader<'a> {
    rest: &'a str,
}

impl<'a> Reader<'a> {
    fn skip_declaration(&mut self) {
        self.rest = self.rest.trim_start();
        if self.rest.starts_with("<?") {
            if let Some(end) = self.rest.find("?>") {
                self.rest = &self.rest[end + 2..];
            }
        }
    }

    fn try_open(&mut self, tag: &str) -> bool {
        let trimmed = self.rest.trim_start();
        let open = format!("<{tag}>");
        match trimmed.strip_prefix(open.as_str()) {
            Some(rest) => {
                self.rest = rest;
                true
            }
            None => false,
        }
    }

    fn open(&mut self, tag: &str) -> Option<()> {
        self.try_open(tag).then_some(())
    }

    fn close(&mut self, tag: &str) -> Option<()> {
        self.try_open(&format!("/{tag}")).then_some(())
    }

    /// Text up to the next tag, unescaped.
    fn text(&mut self) -> String {
        let end = self.rest.find('<').unwrap_or(self.rest.len());
        let text = unescape(&self.rest[..end]);
        self.rest = &self.rest[end..];
        text
    }

    fn value(&mut self) -> Option<Value> {
        self.open("value")?;
        let trimmed = self.rest.trim_start();
        // An untyped value is a string.
        if !trimmed.starts_with('<') || trimmed.starts_with("</value>") {
            let text = self.text();
            self.close("value")?;
            return Some(Value::Str(text));
        }
        let value = if self.try_open("string") {
            let text = self.text();
            self.close("string")?;
            Value::Str(text)
        } else if self.try_open("int") || self.try_open("i4") {
            let text = self.text();
            self.try_open("/int");
            self.try_open("/i4");
            Value::Int(text.trim().parse().ok()?)
        } else if self.try_open("boolean") {
            let text = self.text();
            self.close("boolean")?;
            Value::Bool(text.trim() == "1")
        } else if self.try_open("double") {
            let text = self.text();
            self.close("double")?;
            Value::Double(text.trim().parse().ok()?)
        } else if self.try_open("array") {
            self.open("data")?;
            let mut items = Vec::new();
            while !self.try_open("/data") {
                items.push(self.value()?);
            }
            self.close("array")?;
            Value::Array(items)
        } else if self.try_open("struct") {
            let mut fields = BTreeMap::new();
            while self.try_open("member") {
                self.open("name")?;
                let name = self.text();
                self.close("name")?;
                let value = self.value()?;
                self.close("member")?;
                fields.insert(name, value);
            }
            self.close("struct")?;
            Value::Struct(fields)
        } else {
            return None;
        };
        self.close("value")?;
        Some(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL_PROCESS_INFO: &str = "<?xml version='1.0'?>
<methodResponse>
<params>
<param>
<value><array><data>
<value><struct>
<member>
<name>description</name>
<value><string>pid 28368, uptime 0:00:02</string></value>
</member>
<member>
<name>pid</name>
<value><int>28368</int></value>
</member>
<member>
<name>stop</name>
<value><int>0</int></value>
</member>
<member>
<name>spawnerr</name>
<value><string></string></value>
</member>
<member>
<name>name</name>
<value><string>tick</string></value>
</member>
<member>
<name>group</name>
<value><string>tick</string></value>
</member>
<member>
<name>statename</name>
<value><string>RUNNING</string></value>
</member>
<member>
<name>start</name>
<value><int>1764447360</int></value>
</member>
</struct></value>
</data></array></value>
</param>
</params>
</methodResponse>
";

    #[test]
    fn reads_what_get_all_process_info_answers() {
        let Some(Ok(value)) = parse_response(ALL_PROCESS_INFO) else {
            panic!("not parsed");
        };
        let Value::Array(items) = value else {
            panic!("not an array");
        };
        let info = program_info(&items[0]).expect("a program");
        assert_eq!(info.name, "tick");
        assert_eq!(info.state, "RUNNING");
        assert_eq!(info.pid, 28368);
        assert_eq!(info.describe(), "RUNNING since 20:16 UTC");
    }

    #[test]
    fn a_fault_is_an_error_with_its_code() {
        let body = "<?xml version='1.0'?>\n<methodResponse>\n<fault>\n<value><struct>\n<member>\n<name>faultCode</name>\n<value><int>70</int></value>\n</member>\n<member>\n<name>faultString</name>\n<value><string>NOT_RUNNING: tick &amp; co</string></value>\n</member>\n</struct></value>\n</fault>\n</methodResponse>\n";
        assert_eq!(
            parse_response(body),
            Some(Err(RpcError::Fault {
                code: 70,
                text: "NOT_RUNNING: tick & co".into()
            }))
        );
    }

    #[test]
    fn a_request_escapes_its_strings() {
        let mut out = String::new();
        Value::Str("a<b&c".into()).write_xml(&mut out);
        assert_eq!(out, "<value><string>a&lt;b&amp;c</string></value>");
    }
}
