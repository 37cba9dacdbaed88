//! `[supervisor]`, the prebuilt resource batou users know: supervisor in a
//! venv, `supervisord.conf` written from the programs other components
//! provide, supervisord as a service, and one node per program so that a
//! program restarts by name when, and only when, the component providing
//! it changed.

use std::path::Path;
use std::sync::Arc;

use crate::component::ResourceDef;
use crate::configure::display_name;
use crate::error::ConfigError;
use crate::fingerprint::Fingerprint;
use crate::graph::{Action, Bootstrap, NodeSpec, Reload, ServiceSpec, Watches};
use crate::provenance::{plain_inputs, Input};
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
        let port = field("port", "9001");
        if port.parse::<u16>().is_err() {
            let at = resource
                .field("port")
                .map_or(&resource.location, |f| &f.location);
            return Err(ConfigError::new(
                at.clone(),
                format!("`{port}` is not a port number"),
            ));
        }
        let component = display_name(&self.def.name);
        let workdir = &self.workdir;
        let venv = workdir.join(".venv");
        let version = field("version", SUPERVISOR_VERSION);
        let python = field("python", "python3");
        let timeout = timeout(resource, SERVICE_TIMEOUT_SECS)?;
        let mut nodes = Vec::new();

        let packages = format!("supervisor=={version}");
        let inputs = plain_inputs(&[
            ("kind", "venv"),
            ("python", &python),
            ("packages", &packages),
        ]);
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
        inputs.insert(
            "port".into(),
            match resource.field("port") {
                Some(f) => Input::sourced(f),
                None => Input::plain(&port),
            },
        );
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
            text.push_str(&format!("\n[program:{name}]\ncommand = {command}\nautorestart = true\nredirect_stderr = true\n"));
            for (field, setting) in [
                ("priority", "priority"),
                ("directory", "directory"),
                ("user", "user"),
            ] {
                if let Some(value) = get(field) {
                    text.push_str(&format!("{setting} = {value}\n"));
                }
            }
            for (field, input) in &record.fields {
                let label = format!("var {key}[{}/{}].{field}", record.host, record.component);
                inputs.insert(label, input.clone());
            }
            names.push((name, record.component.clone()));
        }
        inputs.insert(
            "content".into(),
            Input::plain(format!("blake3 {}", Fingerprint::of_bytes(text.as_bytes()))),
        );
        let action = Action::File {
            target: conf.clone(),
            content: Arc::from(text.into_bytes()),
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
                ctl: ctl.clone(),
                name: name.clone(),
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
