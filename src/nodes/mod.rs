//! Turning one resource section into the nodes it stands for, with their
//! named inputs.
//!
//! Most resources are one node. `[buildout]` is two: the rendered
//! `buildout.cfg` (a file node of its own, so a change to it is visible and
//! diffable) and the buildout run that depends on it. Called only from the
//! `component_nodes` query: pure, except for reading sources through
//! [`Db::source`].

use std::path::{Component as PathPart, Path, PathBuf};
use std::sync::Arc;

use crate::component::{ComponentDef, ResourceDef, ResourceKind};
use crate::configure::display_name;
use crate::db::Db;
use crate::error::{ConfigError, Location};
use crate::fingerprint::{node_key, Fingerprint};
use crate::graph::{
    Action, Bootstrap, CommandSpec, NodeSpec, Reload, ServiceSpec, Supervises, Watches,
};
use crate::provenance::{
    bounded, mask_sensitive, Input, Inputs, Redactions, Sourced, MAX_VIA_DEPTH,
};
use crate::runner::shell_quote;
use crate::template::{render, ContextVar, TemplateContext};

mod supervisor;

/// What buildout produces in its directory; a missing one reruns it.
const BUILDOUT_OUTPUTS: &[&str] = &["bin", "parts", "eggs", "develop-eggs", ".installed.cfg"];
const BUILDOUT_VERSION: &str = "6.0.1";
/// zc.buildout 6 needs a recent setuptools; pinned so a rebuild is the
/// same build.
const SETUPTOOLS_VERSION: &str = "80.9.0";
/// Installed beside zc.buildout so it can build eggs from sdists; pinned
/// for the same reason.
const WHEEL_VERSION: &str = "0.48.0";
const SUPERVISOR_VERSION: &str = "4.3.0";
const COMMAND_TIMEOUT_SECS: u64 = 3600;
const SERVICE_TIMEOUT_SECS: u64 = 60;

pub struct NodeBuilder<'a> {
    pub db: &'a dyn Db,
    pub def: &'a ComponentDef,
    pub context: &'a Arc<TemplateContext>,
    pub workdir: PathBuf,
    pub work_dir_setting: &'a str,
    /// The environment, whose `secrets/ENV/NAME.age` a `secret:NAME`
    /// source names.
    pub environment: &'a str,
}

impl NodeBuilder<'_> {
    /// The nodes of `resource`, in order, with `deps` left empty.
    pub fn build(&self, resource: &ResourceDef) -> Result<Vec<NodeSpec>, ConfigError> {
        let mut inputs = Inputs::new();
        inputs.insert("kind".into(), Input::plain(resource.kind.id()));
        match resource.kind {
            ResourceKind::File => {
                let target = self.target(resource, &mut inputs)?;
                let sensitive = resource.flag("sensitive", false)?;
                let content = self.file_content(resource, &mut inputs)?;
                // A file that renders a secret is as secret as a file
                // marked sensitive: no diff, not readable by others.
                let sensitive = sensitive || inputs.values().any(Input::is_sensitive);
                if sensitive {
                    // What a secret file reads is as secret as the file:
                    // `make` hashes every input flagged so. What it is
                    // (kind, path, template) is not secret.
                    for (name, input) in inputs.iter_mut() {
                        if !["kind", "path", "template"].contains(&name.as_str()) {
                            input.sensitive = true;
                        }
                    }
                }
                let mode = mode(resource, if sensitive { 0o600 } else { 0o644 }, &mut inputs)?;
                let action = Action::File {
                    target,
                    content: crate::graph::Content::new(content),
                    mode,
                };
                Ok(vec![self.node(resource, action, inputs, sensitive)])
            }
            ResourceKind::Directory => {
                let target = self.target(resource, &mut inputs)?;
                let mode = mode(resource, 0o755, &mut inputs)?;
                let action = Action::Directory { target, mode };
                Ok(vec![self.node(resource, action, inputs, false)])
            }
            ResourceKind::Symlink => {
                let target = self.target(resource, &mut inputs)?;
                let points_to = self
                    .rendered(resource, "target", &mut inputs)?
                    .unwrap_or_default();
                let action = Action::Symlink { target, points_to };
                Ok(vec![self.node(resource, action, inputs, false)])
            }
            ResourceKind::Command => {
                let run = self.command_spec(resource, &mut inputs)?;
                Ok(vec![self.node(
                    resource,
                    Action::Command(run),
                    inputs,
                    false,
                )])
            }
            ResourceKind::Buildout => self.buildout(resource, inputs),
            ResourceKind::Supervisor => self.supervisor(resource),
            ResourceKind::Service => {
                let start = self
                    .rendered(resource, "start", &mut inputs)?
                    .unwrap_or_default();
                self.no_secret_in_argv(resource, "start", &inputs)?;
                let pidfile = self
                    .rendered(resource, "pidfile", &mut inputs)?
                    .unwrap_or_default();
                let at = resource
                    .field("pidfile")
                    .map_or(&resource.location, |f| &f.location);
                let pidfile = self.path(&pidfile, at)?;
                let reload = match self.rendered(resource, "reload", &mut inputs)? {
                    None => Reload::Signal("HUP".into()),
                    Some(reload) => match reload.strip_prefix("signal:") {
                        Some(name) => {
                            let name = name.trim().trim_start_matches("SIG").to_string();
                            if format!("SIG{name}")
                                .parse::<nix::sys::signal::Signal>()
                                .is_err()
                            {
                                let at = resource
                                    .field("reload")
                                    .map_or(&resource.location, |f| &f.location);
                                let name = Redactions::of(inputs.values()).apply(&name);
                                return Err(ConfigError::new(
                                    at.clone(),
                                    format!("unknown signal `{name}`; write e.g. `signal:HUP`"),
                                ));
                            }
                            Reload::Signal(name)
                        }
                        None => {
                            self.no_secret_in_argv(resource, "reload", &inputs)?;
                            Reload::Command(reload)
                        }
                    },
                };
                let timeout_secs = timeout(resource, SERVICE_TIMEOUT_SECS)?;
                let supervises = self.supervises(resource, &mut inputs)?;
                let programs = supervises
                    .as_ref()
                    .map(|supervises| self.supervised_programs(supervises, timeout_secs))
                    .unwrap_or_default();
                let spec = ServiceSpec {
                    cwd: self.workdir.clone(),
                    start,
                    pidfile,
                    reload,
                    timeout_secs,
                    supervises,
                };
                let service = self.node(resource, Action::Service(spec), inputs, false);
                Ok(std::iter::once(service).chain(programs).collect())
            }
        }
    }

    /// A `[service]` that is a supervisord (`supervisor = URL`): where it
    /// answers, and the programs provided for its `programs` key (default
    /// `programs`), which a start or reload waits for.
    fn supervises(
        &self,
        resource: &ResourceDef,
        inputs: &mut Inputs,
    ) -> Result<Option<Supervises>, ConfigError> {
        let Some(url) = self.rendered(resource, "supervisor", inputs)? else {
            if let Some(field) = resource.field("programs") {
                return Err(ConfigError::new(
                    field.location.clone(),
                    "`programs` names what a supervisord runs: set `supervisor = http://HOST:PORT` too",
                ));
            }
            return Ok(None);
        };
        let at = resource
            .field("supervisor")
            .map_or(&resource.location, |f| &f.location);
        let address = url.strip_prefix("http://").unwrap_or_default();
        let port = address.rsplit_once(':').map(|(_, port)| port);
        if port.is_none_or(|port| port.trim_end_matches('/').parse::<u16>().is_err()) {
            return Err(ConfigError::new(
                at.clone(),
                format!("`{url}` is not supervisord's address; write `http://127.0.0.1:PORT` as in its `[inet_http_server]`"),
            ));
        }
        let key = resource
            .field("programs")
            .map_or("programs".to_string(), |f| f.value.clone());
        let Some(ContextVar::Records(records)) = self.context.vars.get(&key) else {
            return Err(ConfigError::new(
                at.clone(),
                format!("a supervisord runs the programs provided for `{key}`: add `[require:{key}]` to this component"),
            ));
        };
        let mut programs = Vec::new();
        for record in records {
            let Some(name) = record.fields.get("name") else {
                return Err(ConfigError::new(
                    at.clone(),
                    format!(
                        "the `{key}` provided by `{}` on `{}` has no `name`",
                        record.component, record.host
                    ),
                ));
            };
            programs.push(name.value.clone());
        }
        Ok(Some(Supervises {
            url: url.trim_end_matches('/').to_string(),
            programs,
        }))
    }

    /// One node per program of a supervisord `[service]`, which sees to it
    /// that the program runs. It restarts nothing by itself: the service
    /// reloads when anything it runs changed.
    fn supervised_programs(&self, supervises: &Supervises, timeout_secs: u64) -> Vec<NodeSpec> {
        let component = display_name(&self.def.name);
        supervises
            .programs
            .iter()
            .map(|name| {
                let mut inputs = Inputs::new();
                inputs.insert("kind".into(), Input::plain("program"));
                inputs.insert("name".into(), Input::plain(name));
                let action = Action::Program {
                    cwd: self.workdir.clone(),
                    supervisor: supervises.url.clone(),
                    name: name.clone(),
                    timeout_secs,
                };
                let mut node = self.make(
                    format!("{}/program:{name}", self.def.name),
                    format!("{component} > Program({name})"),
                    true,
                    action,
                    inputs,
                );
                node.watches = Watches::Nothing;
                node
            })
            .collect()
    }

    /// `[buildout]`: its rendered config as a file node, then the run.
    fn buildout(
        &self,
        resource: &ResourceDef,
        mut inputs: Inputs,
    ) -> Result<Vec<NodeSpec>, ConfigError> {
        let config = resource
            .field("config")
            .map_or("buildout.cfg".to_string(), |f| f.value.clone());
        let config_at = resource
            .field("config")
            .map_or(&resource.location, |f| &f.location);
        let mut file_inputs = Inputs::new();
        file_inputs.insert("kind".into(), Input::plain("file"));
        file_inputs.insert("path".into(), Input::at(&config, config_at.clone()));
        let file_resource = ResourceDef {
            kind: ResourceKind::File,
            name: config.clone(),
            location: resource.location.clone(),
            fields: [(
                "source".to_string(),
                Sourced::new(config.clone(), config_at.clone()),
            )]
            .into(),
        };
        let content = self.file_content(&file_resource, &mut file_inputs)?;
        file_inputs.insert("mode".into(), Input::plain("0644"));
        let file = Action::File {
            target: self.path(&config, config_at)?,
            content: crate::graph::Content::new(content),
            mode: 0o644,
        };
        let mut file_node = self.node(&file_resource, file, file_inputs, false);
        file_node.display = format!(
            "{} > Buildout > File({config})",
            display_name(&self.def.name)
        );
        file_node.id = format!("{}/buildout:{config}", self.def.name);

        let setting = |key: &str, default: &str| -> (String, Option<Location>) {
            match resource.field(key) {
                Some(field) => (field.value.clone(), Some(field.location.clone())),
                None => (default.to_string(), None),
            }
        };
        let venv = self.workdir.join(".venv");
        let mut record = |name: &str, (value, at): (String, Option<Location>)| {
            let input = match at {
                Some(at) => Input::at(&value, at),
                None => Input::plain(&value),
            };
            inputs.insert(name.to_string(), input);
            value
        };
        let python = record("python", setting("python", "python3"));
        let version = record("version", setting("version", BUILDOUT_VERSION));
        let setuptools = record("setuptools", setting("setuptools", SETUPTOOLS_VERSION));
        let (run, bootstrap) = match self.rendered(resource, "command", &mut inputs)? {
            Some(command) => (command, None),
            None => {
                let buildout = venv.join("bin").join("buildout");
                let bootstrap = Bootstrap {
                    python,
                    venv,
                    packages: vec![
                        format!("zc.buildout=={version}"),
                        format!("setuptools=={setuptools}"),
                        format!("wheel=={WHEEL_VERSION}"),
                    ],
                };
                (
                    format!(
                        "{} -c {}",
                        shell_quote(&buildout.display().to_string()),
                        shell_quote(&config)
                    ),
                    Some(bootstrap),
                )
            }
        };
        let outputs = BUILDOUT_OUTPUTS
            .iter()
            .map(|o| self.workdir.join(o))
            .collect();
        let spec = CommandSpec {
            cwd: self.workdir.clone(),
            run,
            env: Vec::new(),
            outputs,
            creates: Vec::new(),
            cacheable: true,
            timeout_secs: timeout(resource, COMMAND_TIMEOUT_SECS)?,
        };
        let mut run_node = self.node(
            resource,
            Action::Buildout {
                run: spec,
                bootstrap,
            },
            inputs,
            false,
        );
        run_node.display = format!("{} > Buildout", display_name(&self.def.name));
        Ok(vec![file_node, run_node])
    }

    fn command_spec(
        &self,
        resource: &ResourceDef,
        inputs: &mut Inputs,
    ) -> Result<CommandSpec, ConfigError> {
        let run = self.rendered(resource, "run", inputs)?.unwrap_or_default();
        self.no_secret_in_argv(resource, "run", inputs)?;
        let cwd = match self.rendered(resource, "cwd", inputs)? {
            Some(cwd) => {
                let at = resource
                    .field("cwd")
                    .map_or(&resource.location, |f| &f.location);
                self.path(&cwd, at)?
            }
            None => self.workdir.clone(),
        };
        let mut env = Vec::new();
        for line in self
            .rendered(resource, "env", inputs)?
            .unwrap_or_default()
            .lines()
        {
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            let Some((name, value)) = line.split_once('=') else {
                let at = resource
                    .field("env")
                    .map_or(&resource.location, |f| &f.location);
                let line = Redactions::of(inputs.values()).apply(line);
                return Err(ConfigError::new(
                    at.clone(),
                    format!("`{line}` is not NAME=VALUE"),
                ));
            };
            env.push((name.trim().to_string(), value.trim().to_string()));
        }
        let outputs = self.paths(resource, "outputs", inputs)?;
        let creates = self.paths(resource, "creates", inputs)?;
        let at = |key: &str| {
            resource
                .field(key)
                .map_or(&resource.location, |f| &f.location)
                .clone()
        };
        if let Some((made, held)) = overlap(&outputs, &creates) {
            return Err(ConfigError::new(
                at("creates"),
                format!(
                    "`{}` is under `outputs` and `creates` (`{}`): a step's outputs may be restored from the cache, what it creates holds data and never is; name each path once",
                    held.display(),
                    made.display()
                ),
            ));
        }
        let cacheable = resource.flag("cache", false)?;
        if cacheable && outputs.is_empty() {
            return Err(ConfigError::new(
                at("cache"),
                "`cache = true` needs `outputs`: the paths the step makes from its inputs alone",
            ));
        }
        Ok(CommandSpec {
            cwd,
            run,
            env,
            outputs,
            creates,
            cacheable,
            timeout_secs: timeout(resource, COMMAND_TIMEOUT_SECS)?,
        })
    }

    /// A whitespace-separated list of paths, rendered.
    fn paths(
        &self,
        resource: &ResourceDef,
        key: &str,
        inputs: &mut Inputs,
    ) -> Result<Vec<PathBuf>, ConfigError> {
        let at = resource
            .field(key)
            .map_or(&resource.location, |f| &f.location);
        self.rendered(resource, key, inputs)?
            .unwrap_or_default()
            .split_whitespace()
            .map(|path| self.path(path, at))
            .collect()
    }

    fn node(
        &self,
        resource: &ResourceDef,
        action: Action,
        inputs: Inputs,
        sensitive: bool,
    ) -> NodeSpec {
        let component = &self.def.name;
        let kind = resource.kind;
        let (id, display) = if resource.name.is_empty() {
            (
                format!("{component}/{}", kind.id()),
                format!("{} > {}", display_name(component), kind.title()),
            )
        } else {
            (
                format!("{component}/{}:{}", kind.id(), resource.name),
                format!(
                    "{} > {}({})",
                    display_name(component),
                    kind.title(),
                    resource.name
                ),
            )
        };
        let watches = if kind == ResourceKind::Service {
            Watches::AboveAndProviders
        } else {
            Watches::Above
        };
        let mut node = self.make(id, display, kind.is_barrier(), action, inputs);
        node.watches = watches;
        if sensitive {
            node.holds_secrets();
        }
        node
    }

    /// A node with the given identity; `deps` are filled in by the caller.
    fn make(
        &self,
        id: String,
        display: String,
        barrier: bool,
        action: Action,
        inputs: Inputs,
    ) -> NodeSpec {
        let redact = Redactions::of(inputs.values());
        // Secrets and what was computed from them leave as hashes only,
        // and the story of each value only so far back.
        let inputs = bounded(&mask_sensitive(&inputs), MAX_VIA_DEPTH);
        let key = node_key(&inputs);
        let confined_to = action
            .target()
            .starts_with(&self.workdir)
            .then(|| self.workdir.clone());
        let output = if barrier {
            key
        } else {
            action.output(confined_to.as_deref())
        };
        let mut node = NodeSpec {
            id,
            component: self.def.name.clone(),
            confined_to,
            display,
            output,
            key,
            barrier,
            watches: Watches::Above,
            action,
            sensitive: false,
            redact,
            inputs,
            deps: Vec::new(),
        };
        if node.inputs.values().any(|input| input.sensitive) {
            node.holds_secrets();
        }
        node
    }

    /// A command line is in the process arguments, which every user of
    /// the machine can read (`ps`): a secret must reach a command through
    /// its environment instead.
    fn no_secret_in_argv(
        &self,
        resource: &ResourceDef,
        key: &str,
        inputs: &Inputs,
    ) -> Result<(), ConfigError> {
        let Some(field) = resource.field(key) else {
            return Ok(());
        };
        if !inputs.get(key).is_some_and(Input::is_sensitive) {
            return Ok(());
        }
        let mut secrets: Vec<&str> = inputs
            .iter()
            .filter(|(_, input)| input.is_sensitive())
            .filter_map(|(name, _)| name.strip_prefix("var "))
            .filter(|var| field.value.contains(*var))
            .collect();
        secrets.dedup();
        Err(ConfigError::new(
            field.location.clone(),
            format!(
                "`{key}` renders the secret `{}`: a command line can be read by every user \
                 of the machine (`ps`); pass it in the environment instead (`env = \
                 SECRET=...` of a [command], then \"$SECRET\") or in a file the program reads",
                secrets.join("`, `")
            ),
        ))
    }

    /// Renders the field `key` as a template, recording it and the
    /// variables it read as inputs.
    fn rendered(
        &self,
        resource: &ResourceDef,
        key: &str,
        inputs: &mut Inputs,
    ) -> Result<Option<String>, ConfigError> {
        let Some(field) = resource.field(key) else {
            return Ok(None);
        };
        let rendered = render(&field.value, &field.location, self.context)?;
        // Text rendered from a secret is as secret as the secret.
        let secret = rendered.inputs.values().any(Input::is_sensitive);
        inputs.extend(rendered.inputs);
        let input = Input::at(&rendered.text, field.location.clone()).secret(secret);
        inputs.insert(key.to_string(), input);
        Ok(Some(rendered.text))
    }

    /// The text a file resource deploys, recording its inputs.
    fn file_content(
        &self,
        resource: &ResourceDef,
        inputs: &mut Inputs,
    ) -> Result<Vec<u8>, ConfigError> {
        let secret_source = resource
            .field("source")
            .and_then(|source| source.value.strip_prefix("secret:"));
        // An encrypted file (a TLS key, a keytab) is deployed as it is
        // unless asked otherwise.
        let template = resource.flag("template", secret_source.is_none())?;
        inputs.insert("template".into(), Input::plain(template.to_string()));
        let (raw, origin) = if let Some(content) = resource.field("content") {
            inputs.insert(
                "content".into(),
                Input::at(&content.value, content.location.clone()),
            );
            let mut text = content.value.clone().into_bytes();
            if !text.is_empty() && !text.ends_with(b"\n") {
                text.push(b'\n');
            }
            (text, content.location.clone())
        } else if let Some(name) = secret_source {
            let at = resource
                .field("source")
                .map_or(&resource.location, |f| &f.location);
            let path = crate::secrets::secret_file(self.environment, name.trim());
            let bytes = self.db.source(&path).contents(self.db).clone().ok_or_else(|| {
                ConfigError::new(
                    at.clone(),
                    format!("secret file `{path}` does not exist; make it with `tack secrets edit {} --file {}`", self.environment, name.trim()),
                )
            })?;
            let hash = Fingerprint::of_bytes(&bytes);
            inputs.insert(
                "source".into(),
                Input::at(format!("blake3 {hash}"), Location::file(&path)).secret(true),
            );
            (bytes.to_vec(), Location::file(&path))
        } else {
            let (name, at) = match resource.field("source") {
                Some(source) => (source.value.clone(), source.location.clone()),
                None if Path::new(&resource.name).is_absolute() => {
                    let name = Path::new(&resource.name).file_name().map_or_else(
                        || resource.name.clone(),
                        |n| n.to_string_lossy().to_string(),
                    );
                    (name, resource.location.clone())
                }
                None => (resource.name.clone(), resource.location.clone()),
            };
            let path = format!("{}/{name}", self.def.dir);
            if climbs_out(&path) {
                return Err(ConfigError::new(
                    at,
                    format!("source `{name}` leaves the deployment; sources live in it"),
                ));
            }
            let bytes = self
                .db
                .source(&path)
                .contents(self.db)
                .clone()
                .ok_or_else(|| {
                    ConfigError::new(at, format!("source file `{path}` does not exist"))
                })?;
            let hash = Fingerprint::of_bytes(&bytes);
            inputs.insert(
                "source".into(),
                Input::at(format!("blake3 {hash}"), Location::file(&path)),
            );
            (bytes.to_vec(), Location::file(&path))
        };
        if !template {
            return Ok(raw);
        }
        let text = String::from_utf8(raw).map_err(|_| {
            ConfigError::new(
                origin.clone(),
                "is not UTF-8 text and cannot be a template; set `template = false`",
            )
        })?;
        let rendered = render(&text, &origin, self.context)?;
        inputs.extend(rendered.inputs);
        Ok(rendered.text.into_bytes())
    }

    /// The path a file, directory or symlink resource owns, recorded as
    /// its `path` input.
    fn target(&self, resource: &ResourceDef, inputs: &mut Inputs) -> Result<PathBuf, ConfigError> {
        inputs.insert(
            "path".into(),
            Input::at(&resource.name, resource.location.clone()),
        );
        self.path(&resource.name, &resource.location)
    }

    /// A path relative to the component's work dir unless written
    /// absolute; a relative path may not climb out of the work dir.
    fn path(&self, path: &str, at: &Location) -> Result<PathBuf, ConfigError> {
        let relative = Path::new(path);
        if relative.is_absolute() {
            return Ok(relative.to_path_buf());
        }
        if relative
            .components()
            .any(|part| matches!(part, PathPart::ParentDir))
        {
            return Err(ConfigError::new(
                at.clone(),
                format!(
                    "path `{path}` escapes the work dir `{}/{}`; write an absolute path to leave it",
                    self.work_dir_setting, self.def.name
                ),
            ));
        }
        Ok(self.workdir.join(relative))
    }
}

/// Whether a path relative to the deployment root climbs above it.
fn climbs_out(path: &str) -> bool {
    let mut depth = 0usize;
    for part in Path::new(path).components() {
        match part {
            PathPart::Normal(_) => depth += 1,
            PathPart::ParentDir if depth == 0 => return true,
            PathPart::ParentDir => depth -= 1,
            PathPart::RootDir | PathPart::Prefix(_) => return true,
            PathPart::CurDir => {}
        }
    }
    false
}

/// A path of `a` and one of `b` where one is the other or lies inside it.
fn overlap<'a>(a: &'a [PathBuf], b: &'a [PathBuf]) -> Option<(&'a PathBuf, &'a PathBuf)> {
    a.iter()
        .flat_map(|x| b.iter().map(move |y| (x, y)))
        .find(|(x, y)| x.starts_with(y) || y.starts_with(x))
}

fn mode(resource: &ResourceDef, default: u32, inputs: &mut Inputs) -> Result<u32, ConfigError> {
    let Some(sourced) = resource.field("mode") else {
        inputs.insert("mode".into(), Input::plain(format!("{default:04o}")));
        return Ok(default);
    };
    let digits = sourced.value.trim_start_matches("0o");
    let mode = u32::from_str_radix(digits, 8)
        .ok()
        .filter(|mode| *mode <= 0o7777)
        .ok_or_else(|| {
            ConfigError::new(
                sourced.location.clone(),
                format!("`{}` is not an octal file mode such as 0644", sourced.value),
            )
        })?;
    inputs.insert(
        "mode".into(),
        Input::at(format!("{mode:04o}"), sourced.location.clone()),
    );
    Ok(mode)
}

fn timeout(resource: &ResourceDef, default: u64) -> Result<u64, ConfigError> {
    match resource.field("timeout") {
        None => Ok(default),
        Some(field) => field
            .value
            .trim()
            .trim_end_matches('s')
            .parse()
            .map_err(|_| {
                ConfigError::new(
                    field.location.clone(),
                    format!("`{}` is not a number of seconds", field.value),
                )
            }),
    }
}
