//! `environments/NAME.cfg`: which components go on which hosts, and the
//! attribute overrides that make this environment differ from others.

use std::collections::BTreeMap;

use crate::error::{ConfigError, Location};
use crate::ini_file::{IniDocument, IniSection};
use crate::provenance::Sourced;

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct EnvironmentDef {
    pub name: String,
    pub file: String,
    pub connect_method: ConnectMethod,
    /// Relative to the deployment root unless absolute.
    pub work_dir: String,
    /// `connect_method = ssh`: the ssh config file passed to `ssh -F`,
    /// relative to the deployment root unless absolute; `None` lets
    /// `~/.ssh/config` apply.
    pub ssh_config: Option<String>,
    /// `connect_method = ssh`: how long ssh may take to connect to a host
    /// (its `ConnectTimeout`) before that host fails.
    pub connect_timeout_secs: u64,
    pub hosts: Vec<HostDef>,
    /// Component name -> attribute -> overriding value.
    pub overrides: BTreeMap<String, Overrides>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ConnectMethod {
    Local,
    Ssh,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct HostDef {
    pub name: String,
    pub components: Vec<String>,
    pub location: Location,
    /// `[host:NAME] remote_dir`: where the deployment lives on that host
    /// over ssh, absolute or relative to the login user's home.
    pub remote_dir: String,
}

/// Where a deployment lives on a host reached over ssh, unless its
/// `[host:NAME]` says otherwise: relative to the login user's home.
pub const DEFAULT_REMOTE_DIR: &str = "deployment";

/// The default of `connect_timeout`, in seconds.
pub const DEFAULT_CONNECT_TIMEOUT_SECS: u64 = 10;

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Overrides {
    pub location: Location,
    pub values: BTreeMap<String, Sourced>,
}

impl EnvironmentDef {
    /// A digest of everything but the overrides: settings and hosts, not
    /// where they are written. Two environments with the same digest place
    /// the same components alike; an incremental run compares it.
    pub fn settings_digest(&self) -> crate::fingerprint::Fingerprint {
        let EnvironmentDef {
            name,
            file,
            connect_method,
            work_dir,
            ssh_config,
            connect_timeout_secs,
            hosts,
            overrides: _,
        } = self;
        let hosts: Vec<(&String, &Vec<String>, &String)> = hosts
            .iter()
            .map(|h| (&h.name, &h.components, &h.remote_dir))
            .collect();
        crate::fingerprint::Fingerprint::of_hash(&(
            (name, file, connect_method, work_dir),
            (ssh_config, connect_timeout_secs, hosts),
        ))
    }
}

const ENVIRONMENT_KEYS: &[&str] = &[
    "connect_method",
    "work_dir",
    "ssh_config",
    "connect_timeout",
];
const HOST_KEYS: &[&str] = &["remote_dir"];

impl EnvironmentDef {
    pub fn parse(name: &str, file: &str, text: &str) -> Result<EnvironmentDef, ConfigError> {
        let doc = IniDocument::parse(file, text)?;
        let mut env = EnvironmentDef {
            name: name.to_string(),
            file: file.to_string(),
            connect_method: ConnectMethod::Local,
            work_dir: "work".to_string(),
            ssh_config: None,
            connect_timeout_secs: DEFAULT_CONNECT_TIMEOUT_SECS,
            hosts: Vec::new(),
            overrides: BTreeMap::new(),
        };
        let mut saw_hosts = false;
        let mut host_sections = Vec::new();
        for section in &doc.sections {
            let location = section.location(file);
            match section.name.split_once(':') {
                None if section.name == "environment" => env.read_settings(section, file)?,
                None if section.name == "hosts" => {
                    saw_hosts = true;
                    env.read_hosts(section, file)?;
                }
                Some(("host", host)) => host_sections.push((host.trim(), section)),
                Some(("component", component)) => {
                    let component = component.trim();
                    if !is_name(component) {
                        return Err(ConfigError::new(
                            location,
                            format!("`{component}` is not a valid component name"),
                        ));
                    }
                    let values = section.sourced(file);
                    env.overrides.insert(
                        component.to_string(),
                        Overrides {
                            location: location.clone(),
                            values,
                        },
                    );
                }
                _ => {
                    return Err(ConfigError::new(
                        location,
                        "unknown section; an environment has [environment], [hosts], [host:NAME] and [component:NAME]",
                    ))
                }
            }
        }
        if !saw_hosts || env.hosts.is_empty() {
            return Err(ConfigError::new(
                Location::file(file),
                "no hosts: add a [hosts] section such as `localhost = mycomponent`",
            ));
        }
        for (host, section) in host_sections {
            env.read_host(host, section, file)?;
        }
        let placed: std::collections::HashSet<&String> =
            env.hosts.iter().flat_map(|host| &host.components).collect();
        for (component, overrides) in &env.overrides {
            if !placed.contains(component) {
                return Err(ConfigError::new(
                    overrides.location.clone(),
                    format!("component `{component}` is not placed on any host in [hosts]"),
                ));
            }
        }
        Ok(env)
    }

    fn read_settings(&mut self, section: &IniSection, file: &str) -> Result<(), ConfigError> {
        for entry in &section.entries {
            let at = section.location(file).key(&entry.key, entry.line);
            match entry.key.as_str() {
                "connect_method" => {
                    self.connect_method = match entry.value.as_str() {
                        "local" => ConnectMethod::Local,
                        "ssh" => ConnectMethod::Ssh,
                        other => {
                            return Err(ConfigError::new(
                                at,
                                format!(
                                    "unknown connect_method `{other}`; expected `local` or `ssh`"
                                ),
                            ))
                        }
                    }
                }
                "work_dir" => {
                    if entry.value.is_empty() {
                        return Err(ConfigError::new(at, "work_dir must not be empty"));
                    }
                    self.work_dir = entry.value.clone();
                }
                "ssh_config" => {
                    if entry.value.is_empty() {
                        return Err(ConfigError::new(at, "ssh_config must not be empty"));
                    }
                    self.ssh_config = Some(entry.value.clone());
                }
                "connect_timeout" => {
                    self.connect_timeout_secs = match entry.value.parse::<u64>() {
                        Ok(seconds) if seconds > 0 => seconds,
                        _ => {
                            return Err(ConfigError::new(
                                at,
                                format!(
                                    "connect_timeout `{}` is not a number of seconds above 0",
                                    entry.value
                                ),
                            ))
                        }
                    }
                }
                other => return Err(unknown_key(at, other, ENVIRONMENT_KEYS)),
            }
        }
        Ok(())
    }

    fn read_hosts(&mut self, section: &IniSection, file: &str) -> Result<(), ConfigError> {
        for entry in &section.entries {
            let at = section.location(file).key(&entry.key, entry.line);
            if !is_host_name(&entry.key) {
                return Err(ConfigError::new(
                    at,
                    format!(
                        "`{}` is not a host name (letters, digits, `-`, `_` and `.`, not first)",
                        entry.key
                    ),
                ));
            }
            let mut components = Vec::new();
            // Checked against a set: a host may list thousands.
            let mut listed = std::collections::HashSet::new();
            for name in entry.value.split([',', '\n']).map(str::trim) {
                if name.is_empty() {
                    continue;
                }
                if !is_name(name) {
                    return Err(ConfigError::new(
                        at,
                        format!("`{name}` is not a valid component name"),
                    ));
                }
                if !listed.insert(name) {
                    return Err(ConfigError::new(
                        at,
                        format!("component `{name}` is listed twice for this host"),
                    ));
                }
                components.push(name.to_string());
            }
            self.hosts.push(HostDef {
                name: entry.key.clone(),
                components,
                location: at,
                remote_dir: DEFAULT_REMOTE_DIR.to_string(),
            });
        }
        Ok(())
    }

    /// `[host:NAME]`: settings of one host of `[hosts]`.
    fn read_host(
        &mut self,
        name: &str,
        section: &IniSection,
        file: &str,
    ) -> Result<(), ConfigError> {
        let location = section.location(file);
        let Some(host) = self.hosts.iter_mut().find(|host| host.name == name) else {
            return Err(ConfigError::new(
                location,
                format!("host `{name}` is not in [hosts]"),
            ));
        };
        for entry in &section.entries {
            let at = location.clone().key(&entry.key, entry.line);
            match entry.key.as_str() {
                "remote_dir" => {
                    let dir = entry.value.trim_end_matches('/');
                    let parts = std::path::Path::new(dir).components();
                    if dir.is_empty()
                        || parts
                            .into_iter()
                            .any(|part| matches!(part, std::path::Component::ParentDir))
                    {
                        return Err(ConfigError::new(
                            at,
                            format!(
                                "remote_dir `{}` must be a directory path without `..`",
                                entry.value
                            ),
                        ));
                    }
                    host.remote_dir = dir.to_string();
                }
                other => return Err(unknown_key(at, other, HOST_KEYS)),
            }
        }
        Ok(())
    }

    pub fn host(&self, name: &str) -> Option<&HostDef> {
        self.hosts.iter().find(|host| host.name == name)
    }
}

/// Host names name directories under `.tack/state/ENV/`: letters, digits,
/// `-`, `_` and dots, never first, so none is `..` or a hidden file.
pub fn is_host_name(name: &str) -> bool {
    !name.starts_with(['.', '-'])
        && !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// Component names become directory names and display names: keep them to
/// letters, digits, `-` and `_`.
pub fn is_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

pub fn unknown_key(at: Location, key: &str, known: &[&str]) -> ConfigError {
    ConfigError::new(
        at,
        format!("unknown key `{key}`; expected one of: {}", known.join(", ")),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "environments/dev.cfg";

    #[test]
    fn hosts_and_overrides() {
        let env = EnvironmentDef::parse(
            "dev",
            FILE,
            "[environment]\nconnect_method = local\n\n[hosts]\nlocalhost = tick, supervisor\n\n[component:tick]\npriority = 20\n",
        )
        .unwrap();
        assert_eq!(env.hosts[0].components, vec!["tick", "supervisor"]);
        let priority = &env.overrides["tick"].values["priority"];
        assert_eq!(priority.value, "20");
        assert_eq!(
            priority.location.to_string(),
            "environments/dev.cfg:8 [component:tick] priority"
        );
    }

    #[test]
    fn unknown_section_names_file_and_line() {
        let err =
            EnvironmentDef::parse("dev", FILE, "[hosts]\nlocalhost = a\n[frob]\n").unwrap_err();
        assert_eq!(err.location.line, Some(3));
        assert!(err.to_string().contains("[frob]"), "{err}");
    }

    #[test]
    fn override_of_a_component_on_no_host() {
        let err = EnvironmentDef::parse(
            "dev",
            FILE,
            "[hosts]\nlocalhost = a\n[component:b]\nx = 1\n",
        )
        .unwrap_err();
        assert!(err.message.contains("not placed on any host"), "{err}");
    }

    #[test]
    fn unknown_setting() {
        let err =
            EnvironmentDef::parse("dev", FILE, "[environment]\nplatform = x\n[hosts]\nh = a\n")
                .unwrap_err();
        assert!(err.to_string().contains("unknown key `platform`"), "{err}");
    }
}
