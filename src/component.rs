//! `components/NAME/component.cfg`: a component's attributes, the values it
//! provides and requires, and its resources in the order they are written.
//!
//! This module only reads and validates the file. Rendering templates and
//! resolving provided values happen in [`crate::configure`].

use std::collections::BTreeMap;

use crate::environment::unknown_key;
use crate::error::{ConfigError, Location};
use crate::ini_file::{IniDocument, IniSection};
use crate::provenance::Sourced;

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ComponentDef {
    pub name: String,
    /// `components/NAME/component.cfg`.
    pub file: String,
    /// `components/NAME`, where sources are found.
    pub dir: String,
    pub attributes: BTreeMap<String, Sourced>,
    /// Attributes from `[secrets]`: never shown, logged or stored in
    /// clear, and whatever reads them is sensitive too.
    pub secrets: std::collections::BTreeSet<String>,
    pub resources: Vec<ResourceDef>,
    pub provides: Vec<ProvideDef>,
    pub requires: Vec<RequireDef>,
}

/// The kinds of section that become nodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ResourceKind {
    File,
    Directory,
    Symlink,
    Command,
    Buildout,
    Service,
    Supervisor,
}

impl ResourceKind {
    fn from_section(kind: &str) -> Option<ResourceKind> {
        match kind {
            "file" => Some(ResourceKind::File),
            "directory" => Some(ResourceKind::Directory),
            "symlink" => Some(ResourceKind::Symlink),
            "command" => Some(ResourceKind::Command),
            "buildout" => Some(ResourceKind::Buildout),
            "service" => Some(ResourceKind::Service),
            "supervisor" => Some(ResourceKind::Supervisor),
            _ => None,
        }
    }

    /// A barrier runs after every resource above it in its component and
    /// after the components it requires from; everything below waits for it.
    pub fn is_barrier(self) -> bool {
        matches!(
            self,
            ResourceKind::Command
                | ResourceKind::Buildout
                | ResourceKind::Service
                | ResourceKind::Supervisor
        )
    }

    /// `[buildout]` stands alone; every other kind names a path or a name.
    fn takes_argument(self) -> bool {
        !matches!(self, ResourceKind::Buildout | ResourceKind::Supervisor)
    }

    fn required_keys(self) -> &'static [&'static str] {
        match self {
            ResourceKind::Symlink => &["target"],
            ResourceKind::Command => &["run"],
            ResourceKind::Service => &["start", "pidfile"],
            _ => &[],
        }
    }

    /// The word used in node ids and state: `file`, `directory`, `symlink`.
    pub fn id(self) -> &'static str {
        match self {
            ResourceKind::File => "file",
            ResourceKind::Directory => "directory",
            ResourceKind::Symlink => "symlink",
            ResourceKind::Command => "command",
            ResourceKind::Buildout => "buildout",
            ResourceKind::Service => "service",
            ResourceKind::Supervisor => "supervisor",
        }
    }

    /// The word used in display names, batou-style: `File(tick.sh)`.
    pub fn title(self) -> &'static str {
        match self {
            ResourceKind::File => "File",
            ResourceKind::Directory => "Directory",
            ResourceKind::Symlink => "Symlink",
            ResourceKind::Command => "Command",
            ResourceKind::Buildout => "Buildout",
            ResourceKind::Service => "Service",
            ResourceKind::Supervisor => "Supervisor",
        }
    }

    fn keys(self) -> &'static [&'static str] {
        match self {
            ResourceKind::File => &["source", "content", "mode", "template", "sensitive"],
            ResourceKind::Directory => &["mode"],
            ResourceKind::Symlink => &["target"],
            ResourceKind::Command => &[
                "run", "cwd", "env", "outputs", "creates", "cache", "timeout",
            ],
            ResourceKind::Buildout => &[
                "config",
                "version",
                "python",
                "setuptools",
                "command",
                "timeout",
            ],
            ResourceKind::Service => &[
                "start",
                "pidfile",
                "reload",
                "timeout",
                "supervisor",
                "programs",
            ],
            ResourceKind::Supervisor => &["version", "python", "port", "programs", "timeout"],
        }
    }
}

/// One `[kind:NAME]` section that becomes a node.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ResourceDef {
    pub kind: ResourceKind,
    /// The part after the colon: a path for files, directories and
    /// symlinks, a name for commands and services, empty for `[buildout]`.
    pub name: String,
    pub location: Location,
    pub fields: BTreeMap<String, Sourced>,
}

impl ResourceDef {
    pub fn field(&self, key: &str) -> Option<&Sourced> {
        self.fields.get(key)
    }

    /// A boolean field: `true`/`false`, `yes`/`no`, `1`/`0`.
    pub fn flag(&self, key: &str, default: bool) -> Result<bool, ConfigError> {
        match self.fields.get(key) {
            None => Ok(default),
            Some(sourced) => parse_bool(sourced),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ProvideDef {
    pub key: String,
    pub location: Location,
    /// Field name -> template, in file order.
    pub fields: Vec<(String, Sourced)>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Scope {
    /// Providers on the same host (the default).
    Host,
    /// Providers on every host of the environment.
    Environment,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RequireDef {
    pub key: String,
    pub location: Location,
    pub scope: Scope,
    /// `one = true`: exactly one provider, seen by templates as one map
    /// rather than a list (batou's `require_one`).
    pub one: bool,
}

const SECTION_KINDS: &str =
    "[attributes], [secrets], [file:PATH], [directory:PATH], [symlink:PATH], \
    [command:NAME], [buildout], [service:NAME], [supervisor], [provide:KEY], [require:KEY]";

impl ComponentDef {
    pub fn parse(name: &str, file: &str, text: &str) -> Result<ComponentDef, ConfigError> {
        let doc = IniDocument::parse(file, text)?;
        // Most likely a file not yet written or saved empty by mistake: a
        // deploy that quietly does nothing for it would look like success.
        if doc.sections.is_empty() {
            return Err(ConfigError::new(
                Location::file(file),
                "has no sections: a component needs at least one \
                 (`[attributes]`, `[file:PATH]`, `[provide:KEY]`, ...)",
            ));
        }
        let dir = file
            .rsplit_once('/')
            .map_or(String::new(), |(dir, _)| dir.to_string());
        let mut component = ComponentDef {
            name: name.to_string(),
            file: file.to_string(),
            dir,
            attributes: BTreeMap::new(),
            secrets: std::collections::BTreeSet::new(),
            resources: Vec::new(),
            provides: Vec::new(),
            requires: Vec::new(),
        };
        // The resources seen so far, by kind and name: a set, so a component
        // of 100k resources parses in linear time.
        let mut seen = std::collections::HashSet::new();
        for section in &doc.sections {
            component.read_section(section, &mut seen)?;
        }
        Ok(component)
    }

    fn read_section(
        &mut self,
        section: &IniSection,
        seen: &mut std::collections::HashSet<(ResourceKind, String)>,
    ) -> Result<(), ConfigError> {
        let location = section.location(&self.file);
        let fields = || -> BTreeMap<String, Sourced> { section.sourced(&self.file) };
        let (kind, argument) = match section.name.split_once(':') {
            Some((kind, argument)) => (kind.trim(), Some(argument.trim())),
            None => (section.name.trim(), None),
        };
        match (kind, argument) {
            ("attributes" | "secrets", None) => {
                for (name, value) in fields() {
                    if self.attributes.contains_key(&name) {
                        return Err(ConfigError::new(
                            value.location,
                            format!("`{name}` is both an attribute and a secret"),
                        ));
                    }
                    if kind == "secrets" {
                        self.secrets.insert(name.clone());
                    }
                    self.attributes.insert(name, value);
                }
            }
            ("provide", Some(key)) => {
                check_key_name(key, &location)?;
                if self.provides.iter().any(|provide| provide.key == key) {
                    return Err(ConfigError::new(
                        location,
                        format!("`{key}` is provided twice"),
                    ));
                }
                let fields = section.sourced(&self.file);
                self.provides.push(ProvideDef {
                    key: key.to_string(),
                    location,
                    fields,
                });
            }
            ("require", Some(key)) => {
                check_key_name(key, &location)?;
                let mut scope = Scope::Host;
                let mut one = false;
                for entry in &section.entries {
                    let at = location.key(&entry.key, entry.line);
                    match (entry.key.as_str(), entry.value.as_str()) {
                        ("scope", "host") => scope = Scope::Host,
                        ("scope", "environment") => scope = Scope::Environment,
                        ("scope", other) => {
                            return Err(ConfigError::new(
                                at,
                                format!(
                                    "unknown scope `{other}`; expected `host` or `environment`"
                                ),
                            ))
                        }
                        ("one", _) => {
                            one = parse_bool(&Sourced::new(entry.value.clone(), at))?;
                        }
                        (other, _) => return Err(unknown_key(at, other, &["scope", "one"])),
                    }
                }
                self.requires.push(RequireDef {
                    one,
                    key: key.to_string(),
                    location,
                    scope,
                });
            }
            (kind, argument) if ResourceKind::from_section(kind).is_some() => {
                let kind = ResourceKind::from_section(kind).unwrap_or(ResourceKind::File);
                let argument = match (kind.takes_argument(), argument) {
                    (true, Some(argument)) if !argument.is_empty() => argument,
                    (true, _) => {
                        return Err(ConfigError::new(
                            location,
                            format!(
                                "write `[{}:NAME]`: a path or name is required after the colon",
                                kind.id()
                            ),
                        ))
                    }
                    (false, None) => "",
                    (false, Some(_)) => {
                        return Err(ConfigError::new(
                            location,
                            format!("write `[{}]` without a name", kind.id()),
                        ))
                    }
                };
                for entry in &section.entries {
                    if !kind.keys().contains(&entry.key.as_str()) {
                        let at = location.key(&entry.key, entry.line);
                        return Err(unknown_key(at, &entry.key, kind.keys()));
                    }
                }
                if !seen.insert((kind, argument.to_string())) {
                    return Err(ConfigError::new(location, "resource defined twice"));
                }
                let resource = ResourceDef {
                    kind,
                    name: argument.to_string(),
                    location: location.clone(),
                    fields: fields(),
                };
                for required in kind.required_keys() {
                    if resource.field(required).is_none() {
                        return Err(ConfigError::new(
                            resource.location,
                            format!("`{required}` is required in a [{}] section", kind.id()),
                        ));
                    }
                }
                if resource.field("source").is_some() && resource.field("content").is_some() {
                    return Err(ConfigError::new(
                        resource.location,
                        "give either `source` or `content`, not both",
                    ));
                }
                resource.flag("template", true)?;
                resource.flag("sensitive", false)?;
                self.resources.push(resource);
            }
            _ => {
                return Err(ConfigError::new(
                    location,
                    format!("unknown section kind; a component has {SECTION_KINDS}"),
                ))
            }
        }
        Ok(())
    }
}

fn check_key_name(key: &str, location: &Location) -> Result<(), ConfigError> {
    let valid = key
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if valid {
        Ok(())
    } else {
        Err(ConfigError::new(
            location.clone(),
            format!("`{key}` is not a valid key: templates see it as a variable, so use letters, digits and `_`"),
        ))
    }
}

pub fn parse_bool(sourced: &Sourced) -> Result<bool, ConfigError> {
    match sourced.value.to_ascii_lowercase().as_str() {
        "true" | "yes" | "on" | "1" => Ok(true),
        "false" | "no" | "off" | "0" => Ok(false),
        other => Err(ConfigError::new(
            sourced.location.clone(),
            format!("expected `true` or `false`, found `{other}`"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "components/tick/component.cfg";

    #[test]
    fn tutorial_tick_component() {
        let text = "[attributes]\npriority = 10\n\n[file:tick.sh]\nmode = 0755\n\n[provide:programs]\nname = tick\npriority = {{ priority }}\ncommand = {{ workdir }}/tick.sh\n";
        let component = ComponentDef::parse("tick", FILE, text).unwrap();
        assert_eq!(component.dir, "components/tick");
        assert_eq!(component.attributes["priority"].value, "10");
        assert_eq!(component.resources[0].kind, ResourceKind::File);
        assert_eq!(component.resources[0].name, "tick.sh");
        assert_eq!(component.provides[0].fields[1].1.value, "{{ priority }}");
    }

    #[test]
    fn unknown_section_kind() {
        let err = ComponentDef::parse("x", FILE, "[attributes]\n\n[frobnicate:a]\n").unwrap_err();
        assert_eq!(err.location.line, Some(3));
        assert!(err.message.starts_with("unknown section kind"), "{err}");
    }

    #[test]
    fn unknown_key_in_a_file_section() {
        let err = ComponentDef::parse("x", FILE, "[file:a]\nmdoe = 0644\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            "components/tick/component.cfg:2 [file:a] mdoe: unknown key `mdoe`; expected one of: source, content, mode, template, sensitive"
        );
    }

    #[test]
    fn bad_flag() {
        let err = ComponentDef::parse("x", FILE, "[file:a]\ntemplate = maybe\n").unwrap_err();
        assert!(err.message.contains("expected `true` or `false`"), "{err}");
    }
}
