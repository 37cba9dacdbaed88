//! `[supervisor]`, the prebuilt resource batou users know: supervisor in a
//! venv, `supervisord.conf` written from the programs other components
//! provide, supervisord as a service, and one node per program so that a
//! program restarts by name when, and only when, the component providing
//! it changed.

use std::path::Path;

use crate::component::ResourceDef;
use crate::configure::display_name;
use crate::error::ConfigError;
use crate::error::Location;
use crate::fingerprint::Fingerprint;
use crate::graph::{Action, Bootstrap, NodeSpec, Reload, ServiceSpec, Supervises, Watches};
use crate::provenance::{plain_inputs, Input, Inputs};
use crate::runner::shell_quote;
use crate::template::ContextVar;

use super::{timeout, NodeBuilder, SERVICE_TIMEOUT_SECS, SUPERVISOR_VERSION};

impl NodeBuilder<'_> {
    /// `[supervisor]`: supervisor in a venv, its config rendered from the
    /// required programs, supervisord as a service reloaded with
    /// `supervisorctl update` (which restarts only programs whose config
    /// changed), and one node per program that restarts it by name when
    /// the files of the component providing it changed.
    pub(super) fn supervisor(&self, resource: &ResourceDef) -> Result<Vec<NodeSpec>, ConfigError> {
        let field = |key: &str, default: &str| {
            resource
                .field(key)
                .map_or(default.to_string(), |f| f.value.clone())
        };
        let key = field("programs", "programs");
        let Some(ContextVar::Records(programs)) = self.context.vars.get(&key) else {
            return Err(ConfigError::new(
                resource.location.clone(),
                format!("[supervisor] runs the programs provided for `{key}`: add `[require:{key}]` to this component"),
            ));
        };
        // Settings are templates like every other value: the port can be
        // an attribute, set per environment.
        let mut port_inputs = Inputs::new();
        let port = self
            .rendered(resource, "port", &mut port_inputs)?
            .unwrap_or_else(|| "9001".to_string());
        if port.trim().parse::<u16>().is_err() {
            let at = resource
                .field("port")
                .map_or(&resource.location, |f| &f.location);
            return Err(ConfigError::new(
                at.clone(),
                format!("`{port}` is not a port number"),
            ));
        }
        let port = port.trim().to_string();
        let url = format!("http://127.0.0.1:{port}");
        let mut venv_inputs = Inputs::new();
        let version = self
            .rendered(resource, "version", &mut venv_inputs)?
            .unwrap_or_else(|| SUPERVISOR_VERSION.to_string());
        let python = self
            .rendered(resource, "python", &mut venv_inputs)?
            .unwrap_or_else(|| "python3".to_string());
        let component = display_name(&self.def.name);
        let workdir = &self.workdir;
        let venv = workdir.join(".venv");
        let timeout = timeout(resource, SERVICE_TIMEOUT_SECS)?;
        let mut nodes = Vec::new();

        let packages = format!("supervisor=={version}");
        let mut inputs = plain_inputs(&[
            ("kind", "venv"),
            ("python", &python),
            ("packages", &packages),
        ]);
        // What the settings were rendered from, beside what they became.
        inputs.extend(
            venv_inputs
                .into_iter()
                .filter(|(name, _)| name.starts_with("var ")),
        );
        let bootstrap = Bootstrap {
            python,
            venv: venv.clone(),
            packages: vec![packages],
        };
        let id = format!("{}/venv", self.def.name);
        nodes.push(self.make(
            id,
            format!("{component} > Venv(supervisor=={version})"),
            true,
            Action::Venv(bootstrap),
            inputs,
        ));

        let log_dir = workdir.join("var/log");
        let inputs = plain_inputs(&[("kind", "directory"), ("path", "var/log")]);
        let action = Action::Directory {
            target: log_dir.clone(),
            mode: 0o755,
        };
        let id = format!("{}/directory:var/log", self.def.name);
        nodes.push(self.make(
            id,
            format!("{component} > Directory(var/log)"),
            false,
            action,
            inputs,
        ));

        let conf = workdir.join("etc/supervisord.conf");
        let pidfile = workdir.join("var/supervisord.pid");
        let mut text = format!(
            "; Written by tack from [supervisor] in {file}.\n\
             [supervisord]\nlogfile = {log}/supervisord.log\npidfile = {pid}\nchildlogdir = {log}\ndirectory = {dir}\n\n\
             [inet_http_server]\nport = 127.0.0.1:{port}\n\n\
             [supervisorctl]\nserverurl = http://127.0.0.1:{port}\n\n\
             [rpcinterface:supervisor]\nsupervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface\n",
            file = self.def.file,
            log = log_dir.display(),
            pid = pidfile.display(),
            dir = workdir.display(),
        );
        let mut inputs = plain_inputs(&[("kind", "file"), ("path", "etc/supervisord.conf")]);
        inputs.extend(port_inputs);
        inputs
            .entry("port".into())
            .or_insert_with(|| Input::plain(&port));
        let mut names = Vec::new();
        for record in programs {
            let get = |field: &str| record.fields.get(field).map(|input| input.value.clone());
            let Some(name) = get("name") else {
                return Err(ConfigError::new(
                    resource.location.clone(),
                    format!(
                        "the `{key}` provided by `{}` on `{}` has no `name`",
                        record.component, record.host
                    ),
                ));
            };
            let Some(command) = get("command").or_else(|| get("path")) else {
                return Err(ConfigError::new(
                    resource.location.clone(),
                    format!(
                        "program `{name}` provided by `{}` has no `command` (or `path`)",
                        record.component
                    ),
                ));
            };
            text.push_str(&format!("\n[program:{name}]\ncommand = {command}\n"));
            let mut autostart = true;
            for (field, input) in &record.fields {
                if ["name", "command", "path"].contains(&field.as_str()) {
                    continue;
                }
                let at = input.origin.as_ref().unwrap_or(&resource.location);
                program_option(field, &input.value, at, &name)?;
                if field == "autostart" {
                    autostart = !matches!(input.value.trim(), "false" | "False" | "0");
                }
                text.push_str(&format!("{field} = {}\n", input.value));
            }
            for (field, input) in &record.fields {
                let label = format!("var {key}[{}/{}].{field}", record.host, record.component);
                inputs.insert(label, input.clone());
            }
            // A program configured not to start is not waited for.
            if autostart {
                names.push((name, record.component.clone()));
            }
        }
        inputs.insert(
            "content".into(),
            Input::plain(format!("blake3 {}", Fingerprint::of_bytes(text.as_bytes()))),
        );
        let action = Action::File {
            target: conf.clone(),
            content: crate::graph::Content::new(text.into_bytes()),
            mode: 0o644,
        };
        let id = format!("{}/file:etc/supervisord.conf", self.def.name);
        nodes.push(self.make(
            id,
            format!("{component} > File(etc/supervisord.conf)"),
            false,
            action,
            inputs,
        ));

        // Paths go into shell commands quoted: a checkout at `ci;touch x`
        // must not run `touch`.
        let quoted = |path: &Path| shell_quote(&path.display().to_string());
        let ctl = format!(
            "{} -c {}",
            quoted(&venv.join("bin/supervisorctl")),
            quoted(&conf)
        );
        let inputs = plain_inputs(&[("kind", "service")]);
        let supervises = Supervises {
            url: url.clone(),
            programs: names.iter().map(|(name, _)| name.clone()).collect(),
        };
        let spec = ServiceSpec {
            cwd: workdir.clone(),
            start: format!(
                "{} -c {}",
                quoted(&venv.join("bin/supervisord")),
                quoted(&conf)
            ),
            pidfile,
            reload: Reload::Command(format!("{ctl} update")),
            timeout_secs: timeout,
            supervises: Some(supervises),
        };
        let id = format!("{}/service:supervisord", self.def.name);
        nodes.push(self.make(
            id,
            format!("{component} > Service(supervisord)"),
            true,
            Action::Service(spec),
            inputs,
        ));

        for (name, provider) in names {
            let inputs = plain_inputs(&[("kind", "program"), ("name", &name)]);
            let action = Action::Program {
                cwd: workdir.clone(),
                supervisor: url.clone(),
                name: name.clone(),
                timeout_secs: timeout,
            };
            let id = format!("{}/program:{name}", self.def.name);
            let mut node = self.make(
                id,
                format!("{component} > Program({name})"),
                true,
                action,
                inputs,
            );
            node.watches = Watches::Provider(provider);
            nodes.push(node);
        }
        Ok(nodes)
    }
}

/// supervisord's `[program:x]` options (supervisor 4), which pass through
/// from `[provide:programs]` as written; `name` and `command` are tack's.
const PROGRAM_OPTIONS: &[&str] = &[
    "priority",
    "autostart",
    "startsecs",
    "startretries",
    "autorestart",
    "exitcodes",
    "stopsignal",
    "stopwaitsecs",
    "stopasgroup",
    "killasgroup",
    "user",
    "redirect_stderr",
    "stdout_logfile",
    "stdout_logfile_maxbytes",
    "stdout_logfile_backups",
    "stdout_capture_maxbytes",
    "stdout_events_enabled",
    "stdout_syslog",
    "stderr_logfile",
    "stderr_logfile_maxbytes",
    "stderr_logfile_backups",
    "stderr_capture_maxbytes",
    "stderr_events_enabled",
    "stderr_syslog",
    "environment",
    "directory",
    "umask",
    "serverurl",
];

/// Checks one provided program option: supervisord must know it, tack
/// must be able to observe the program by its name, and the value must
/// stay on its line of `supervisord.conf`.
fn program_option(
    field: &str,
    value: &str,
    at: &Location,
    program: &str,
) -> Result<(), ConfigError> {
    if ["process_name", "numprocs", "numprocs_start"].contains(&field) {
        return Err(ConfigError::new(
            at.clone(),
            format!("`{field}` would run program `{program}` under other names than its own, which tack cannot observe; provide one program per process"),
        ));
    }
    if !PROGRAM_OPTIONS.contains(&field) {
        return Err(ConfigError::new(
            at.clone(),
            format!(
                "unknown supervisord program option `{field}` for program `{program}`; expected one of: name, command, {}",
                PROGRAM_OPTIONS.join(", ")
            ),
        ));
    }
    if value.contains('\n') {
        return Err(ConfigError::new(
            at.clone(),
            format!("`{field}` of program `{program}` spans several lines; supervisord reads one"),
        ));
    }
    Ok(())
}
