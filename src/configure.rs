//! The configure phase as salsa queries: from files to a [`HostGraph`].
//!
//! ```text
//! environment_def ─┐
//! component_def ───┼─> attributes ─> template_context ─> component_nodes ─> host_graph
//!                  └─> wiring ─────> provided ──────────┘
//! ```
//!
//! Each query is pure over [`SourceFile`](crate::db::SourceFile) inputs and
//! returns errors as values, so a broken component is memoized like any
//! other and the command line reports every broken component at once.
//! [`wiring`] resolves provide/require for the whole environment and refuses
//! cycles before any template is rendered, so the queries below it can
//! follow providers without ever meeting a salsa cycle.
//!
//! **Architecture Invariant:** nothing here writes to disk or looks at
//! what is deployed. `workdir` is computed, never created.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::component::{ComponentDef, Scope};
use crate::db::{Db, Deployment};
use crate::environment::EnvironmentDef;
use crate::error::{ConfigError, Location};
use crate::fingerprint::{node_key, Fingerprint};
use crate::graph::{clashing_owners, Action, HostGraph, NodeSpec, Watches};
use crate::provenance::{Input, Sourced};
use crate::template::{render, ContextVar, ProvidedRecord, TemplateContext};

/// Names every template sees besides attributes; attributes may not use them.
const BUILTIN_VARS: &[&str] = &["workdir", "host", "environment"];

#[salsa::tracked(returns(ref))]
pub fn environment_def(
    db: &dyn Db,
    deployment: Deployment,
) -> Result<Arc<EnvironmentDef>, ConfigError> {
    let name = deployment.environment(db);
    let path = format!("environments/{name}.cfg");
    let text = read_text(db, &path).ok_or_else(|| {
        ConfigError::new(
            Location::file(&path),
            format!("unknown environment `{name}`: `{path}` does not exist"),
        )
    })??;
    EnvironmentDef::parse(name, &path, &text).map(Arc::new)
}

#[salsa::tracked(returns(ref))]
pub fn component_def(
    db: &dyn Db,
    // Components belong to a deployment; the path below is relative to it.
    _deployment: Deployment,
    name: String,
) -> Result<Arc<ComponentDef>, ConfigError> {
    let path = format!("components/{name}/component.cfg");
    let text = read_text(db, &path).ok_or_else(|| {
        ConfigError::new(Location::file(&path), "component file does not exist")
    })??;
    ComponentDef::parse(&name, &path, &text).map(Arc::new)
}

/// A component's attributes after the environment's overrides.
#[salsa::tracked(returns(ref))]
pub fn attributes(
    db: &dyn Db,
    deployment: Deployment,
    component: String,
) -> Result<Arc<BTreeMap<String, Sourced>>, ConfigError> {
    let env = environment_def(db, deployment).clone()?;
    let def = component_def(db, deployment, component.clone()).clone()?;
    let mut merged = def.attributes.clone();
    for (name, value) in &merged {
        let requires = def.requires.iter().any(|require| &require.key == name);
        if BUILTIN_VARS.contains(&name.as_str()) || requires {
            return Err(ConfigError::new(
                value.location.clone(),
                format!("attribute `{name}` would hide the template variable of the same name"),
            ));
        }
    }
    if let Some(overrides) = env.overrides.get(&component) {
        for (name, value) in &overrides.values {
            if !merged.contains_key(name) {
                let known: Vec<&str> = def.attributes.keys().map(String::as_str).collect();
                return Err(ConfigError::new(
                    value.location.clone(),
                    format!(
                        "component `{component}` has no attribute `{name}` (its [attributes]: {})",
                        if known.is_empty() {
                            "none".to_string()
                        } else {
                            known.join(", ")
                        }
                    ),
                ));
            }
            merged.insert(name.clone(), value.clone());
        }
    }
    let secrets_file = crate::secrets::env_file(deployment.environment(db));
    if let Some(clear) = db.source(&secrets_file).contents(db) {
        let values = crate::secrets::component_values(&secrets_file, clear, &component)?;
        for (name, value) in values {
            if !def.secrets.contains(&name) {
                let known: Vec<&str> = def.secrets.iter().map(String::as_str).collect();
                return Err(ConfigError::new(
                    value.location.clone(),
                    format!(
                        "component `{component}` has no secret `{name}` (its [secrets]: {})",
                        if known.is_empty() {
                            "none".to_string()
                        } else {
                            known.join(", ")
                        }
                    ),
                ));
            }
            merged.insert(name, value);
        }
    }
    Ok(Arc::new(merged))
}

/// A component placed on a host.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Placement {
    pub host: String,
    pub component: String,
}

/// Provide/require resolved for the whole environment.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Wiring {
    /// Every placement, in the order of `[hosts]`.
    pub placements: Vec<Placement>,
    /// (requirer, key) -> providers, by host then component.
    #[serde(with = "pairs")]
    pub providers: BTreeMap<(Placement, String), Vec<Placement>>,
    /// Per host: its components, providers before requirers.
    pub order: BTreeMap<String, Vec<String>>,
}

/// A map with tuple keys as a list of pairs: JSON keys are strings.
mod pairs {
    use std::collections::BTreeMap;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<K: Serialize, V: Serialize, S: Serializer>(
        map: &BTreeMap<K, V>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(map.iter())
    }

    pub fn deserialize<'de, K, V, D>(deserializer: D) -> Result<BTreeMap<K, V>, D::Error>
    where
        K: Deserialize<'de> + Ord,
        V: Deserialize<'de>,
        D: Deserializer<'de>,
    {
        Ok(Vec::<(K, V)>::deserialize(deserializer)?
            .into_iter()
            .collect())
    }
}

/// What [`wiring`] reads of a component: the keys it provides and what it
/// requires. Two definitions with the same signature wire alike.
pub fn wiring_signature(def: &ComponentDef) -> Fingerprint {
    let provides: Vec<&str> = def.provides.iter().map(|p| p.key.as_str()).collect();
    let requires: Vec<(&str, Scope, bool)> = def
        .requires
        .iter()
        .map(|r| (r.key.as_str(), r.scope, r.one))
        .collect();
    Fingerprint::of_hash(&(provides, requires))
}

#[salsa::tracked(returns(ref))]
pub fn wiring(db: &dyn Db, deployment: Deployment) -> Result<Arc<Wiring>, Vec<ConfigError>> {
    if let Some(recorded) = deployment.recorded_wiring(db) {
        return Ok(recorded.clone());
    }
    let env = environment_def(db, deployment)
        .clone()
        .map_err(|e| vec![e])?;
    let mut errors = Vec::new();
    let mut defs: BTreeMap<String, Arc<ComponentDef>> = BTreeMap::new();
    let mut wiring = Wiring::default();
    for host in &env.hosts {
        for name in &host.components {
            wiring.placements.push(Placement {
                host: host.name.clone(),
                component: name.clone(),
            });
            if defs.contains_key(name) {
                continue;
            }
            match component_def(db, deployment, name.clone()) {
                Ok(def) => {
                    defs.insert(name.clone(), def.clone());
                }
                Err(error) if error.message == "component file does not exist" => {
                    errors.push(ConfigError::new(
                        host.location.clone(),
                        format!(
                            "unknown component `{name}`: `{}` does not exist",
                            error.location.file
                        ),
                    ));
                }
                Err(error) => errors.push(error.clone()),
            }
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }

    // Each key's providers, found once: looking them up per requirer would
    // make wiring quadratic in the number of components.
    let mut providing: BTreeMap<&str, BTreeSet<&Placement>> = BTreeMap::new();
    for placement in &wiring.placements {
        for provide in &defs[&placement.component].provides {
            providing
                .entry(provide.key.as_str())
                .or_default()
                .insert(placement);
        }
    }
    for requirer in &wiring.placements {
        for require in &defs[&requirer.component].requires {
            let providers: Vec<Placement> = providing
                .get(require.key.as_str())
                .into_iter()
                .flatten()
                .filter(|p| require.scope == Scope::Environment || p.host == requirer.host)
                .map(|p| (*p).clone())
                .collect();
            if providers.is_empty() {
                let elsewhere: Vec<String> = providing
                    .get(require.key.as_str())
                    .into_iter()
                    .flatten()
                    .map(|p| format!("{} on {}", p.component, p.host))
                    .collect();
                let hint = if elsewhere.is_empty() {
                    "no component of the environment provides it".to_string()
                } else {
                    format!(
                        "provided only by {} (use scope = environment)",
                        elsewhere.join(", ")
                    )
                };
                errors.push(ConfigError::new(
                    require.location.clone(),
                    format!(
                        "nothing provides `{}` for component `{}` on host `{}`: {hint}",
                        require.key, requirer.component, requirer.host
                    ),
                ));
                continue;
            }
            if require.one && providers.len() > 1 {
                let names: Vec<String> = providers
                    .iter()
                    .map(|p| format!("{} ({})", p.component, defs[&p.component].file))
                    .collect();
                errors.push(ConfigError::new(
                    require.location.clone(),
                    format!(
                        "`{}` requires one `{}`, but {} provide it: {}",
                        requirer.component,
                        require.key,
                        providers.len(),
                        names.join(", ")
                    ),
                ));
                continue;
            }
            wiring
                .providers
                .insert((requirer.clone(), require.key.clone()), providers);
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    if let Some(cycle) = find_cycle(&wiring) {
        let steps: Vec<String> = cycle
            .windows(2)
            .map(|pair| {
                let (from, to) = (&pair[0], &pair[1]);
                let key = wiring
                    .providers
                    .iter()
                    .find(|((requirer, _), providers)| requirer == from && providers.contains(to))
                    .map(|((_, key), _)| key.clone())
                    .unwrap_or_default();
                let require = defs[&from.component].requires.iter().find(|r| r.key == key);
                let at = require.map(|r| r.location.to_string()).unwrap_or_default();
                format!(
                    "`{}` requires `{key}` ({at}) from `{}`",
                    from.component, to.component
                )
            })
            .collect();
        let first = &cycle[0];
        let location = Location::file(&defs[&first.component].file);
        return Err(vec![ConfigError::new(
            location,
            format!("provide/require cycle: {}", steps.join(", ")),
        )]);
    }

    for host in &env.hosts {
        wiring.order.insert(
            host.name.clone(),
            order_components(&wiring, &host.name, &host.components),
        );
    }
    Ok(Arc::new(wiring))
}

impl Wiring {
    /// Every placement `requirer` requires from, over all its keys.
    pub fn providers_of<'a>(
        &'a self,
        requirer: &'a Placement,
    ) -> impl Iterator<Item = &'a Placement> + 'a {
        self.providers
            .range((requirer.clone(), String::new())..)
            .take_while(move |((r, _), _)| r == requirer)
            .flat_map(|(_, providers)| providers.iter())
    }
}

/// A placement path `a -> b -> ... -> a` if requirements loop.
///
/// A depth-first search with an explicit stack, so a chain of 100k
/// requirements neither overflows the thread's stack nor takes quadratic
/// time: each placement is entered once, and whether a provider is on the
/// current path is a map lookup.
fn find_cycle(wiring: &Wiring) -> Option<Vec<Placement>> {
    let mut done: BTreeSet<&Placement> = BTreeSet::new();
    for start in &wiring.placements {
        if done.contains(start) {
            continue;
        }
        // The current path, each with the providers still to visit, and
        // where on the path each placement stands.
        let mut path: Vec<(&Placement, Box<dyn Iterator<Item = &Placement> + '_>)> =
            vec![(start, Box::new(wiring.providers_of(start)))];
        let mut on_path: HashMap<&Placement, usize> = HashMap::from([(start, 0)]);
        while let Some((node, providers)) = path.last_mut() {
            let node = *node;
            match providers.next() {
                Some(provider) => {
                    if let Some(&at) = on_path.get(provider) {
                        let mut cycle: Vec<Placement> =
                            path[at..].iter().map(|(p, _)| (*p).clone()).collect();
                        cycle.push(provider.clone());
                        return Some(cycle);
                    }
                    if !done.contains(provider) {
                        on_path.insert(provider, path.len());
                        path.push((provider, Box::new(wiring.providers_of(provider))));
                    }
                }
                None => {
                    path.pop();
                    on_path.remove(node);
                    done.insert(node);
                }
            }
        }
    }
    None
}

/// The components of `host`, each after the ones on the same host it
/// requires from, otherwise in the order written. Iterative, for the same
/// reason as [`find_cycle`]; the wiring has no cycle by then.
fn order_components(wiring: &Wiring, host: &str, listed: &[String]) -> Vec<String> {
    let mut ordered = Vec::new();
    let mut placed: BTreeSet<String> = BTreeSet::new();
    for name in listed {
        if !placed.insert(name.clone()) {
            continue;
        }
        // Each entry: a component and its same-host providers still to place.
        let providers = |name: &str| -> std::vec::IntoIter<String> {
            let me = Placement {
                host: host.to_string(),
                component: name.to_string(),
            };
            wiring
                .providers_of(&me)
                .filter(|p| p.host == host)
                .map(|p| p.component.clone())
                .collect::<Vec<_>>()
                .into_iter()
        };
        let mut stack = vec![(name.clone(), providers(name))];
        while let Some((current, pending)) = stack.last_mut() {
            match pending.next() {
                Some(provider) => {
                    if placed.insert(provider.clone()) {
                        let next = providers(&provider);
                        stack.push((provider, next));
                    }
                }
                None => {
                    ordered.push(current.clone());
                    stack.pop();
                }
            }
        }
    }
    ordered
}

/// The absolute work dir of a component on a host:
/// `<root>/<work_dir>/<component>`, where the root is the host's own when it
/// is reached over ssh.
fn workdir(
    db: &dyn Db,
    deployment: Deployment,
    env: &EnvironmentDef,
    host: &str,
    component: &str,
) -> PathBuf {
    let root = deployment
        .host_roots(db)
        .get(host)
        .unwrap_or_else(|| deployment.root(db));
    root.join(&env.work_dir).join(component)
}

#[salsa::tracked(returns(ref))]
pub fn template_context(
    db: &dyn Db,
    deployment: Deployment,
    host: String,
    component: String,
) -> Result<Arc<TemplateContext>, ConfigError> {
    let env = environment_def(db, deployment).clone()?;
    let def = component_def(db, deployment, component.clone()).clone()?;
    let wiring = wiring(db, deployment)
        .clone()
        .map_err(|errors| errors[0].clone())?;
    let mut vars = BTreeMap::new();
    for (name, value) in attributes(db, deployment, component.clone())
        .clone()?
        .iter()
    {
        let secret = def.secrets.contains(name);
        let input = Input::sourced(value).secret(secret);
        vars.insert(name.clone(), ContextVar::Text(input));
    }
    let workdir = workdir(db, deployment, &env, &host, &component);
    let builtins = [
        ("workdir", workdir.display().to_string()),
        ("host", host.clone()),
        ("environment", env.name.clone()),
    ];
    for (name, value) in builtins {
        vars.insert(name.to_string(), ContextVar::Text(Input::plain(value)));
    }
    let me = Placement {
        host: host.clone(),
        component: component.clone(),
    };
    for require in &def.requires {
        let providers = wiring
            .providers
            .get(&(me.clone(), require.key.clone()))
            .cloned()
            .unwrap_or_default();
        let mut records = Vec::new();
        for provider in providers {
            let values = provided(
                db,
                deployment,
                provider.host.clone(),
                provider.component.clone(),
            )
            .clone()?;
            if let Some(fields) = values.get(&require.key) {
                records.push(ProvidedRecord {
                    host: provider.host.clone(),
                    component: provider.component.clone(),
                    fields: fields.clone(),
                });
            }
        }
        let var = match (require.one, records.pop()) {
            (true, Some(record)) => ContextVar::Record(record),
            (_, last) => {
                records.extend(last);
                ContextVar::Records(records)
            }
        };
        vars.insert(require.key.clone(), var);
    }
    Ok(Arc::new(TemplateContext { vars }))
}

/// Key -> field -> value: what one placed component provides.
pub type ProvidedValues = BTreeMap<String, BTreeMap<String, Input>>;

/// The values a placed component provides: key -> field -> value, each
/// rendered with the provider's own context.
#[salsa::tracked(returns(ref))]
pub fn provided(
    db: &dyn Db,
    deployment: Deployment,
    host: String,
    component: String,
) -> Result<Arc<ProvidedValues>, ConfigError> {
    let def = component_def(db, deployment, component.clone()).clone()?;
    let context = template_context(db, deployment, host, component).clone()?;
    let mut values = BTreeMap::new();
    for provide in &def.provides {
        let mut fields = BTreeMap::new();
        for (name, template) in &provide.fields {
            let rendered = render(&template.value, &template.location, &context)?;
            let input =
                Input::at(rendered.text, template.location.clone()).with_via(rendered.inputs);
            fields.insert(name.clone(), input);
        }
        values.insert(provide.key.clone(), fields);
    }
    Ok(Arc::new(values))
}

/// The nodes of one placed component, in the order written, each with its
/// rendered content, named inputs and key. `deps` are indexes within the
/// component; [`host_graph`] shifts them and adds the edges to providers.
#[salsa::tracked(returns(ref))]
pub fn component_nodes(
    db: &dyn Db,
    deployment: Deployment,
    host: String,
    component: String,
) -> Result<Arc<Vec<NodeSpec>>, ConfigError> {
    let env = environment_def(db, deployment).clone()?;
    let def = component_def(db, deployment, component.clone()).clone()?;
    let context = template_context(db, deployment, host.clone(), component.clone()).clone()?;
    let builder = crate::nodes::NodeBuilder {
        db,
        def: &def,
        context: &context,
        workdir: workdir(db, deployment, &env, &host, &component),
        work_dir_setting: &env.work_dir,
        environment: &env.name,
    };
    let mut nodes: Vec<NodeSpec> = Vec::new();
    let mut edges = LocalEdges::default();
    for resource in &def.resources {
        for mut node in builder.build(resource)? {
            node.deps = edges.deps(&nodes, &node);
            edges.add(nodes.len(), &node);
            nodes.push(node);
        }
    }
    Ok(Arc::new(nodes))
}

/// Edges inside a component: a barrier waits for everything above it;
/// anything else waits for the last barrier above it and for the nearest
/// directory resource that contains its target. The last barrier and the
/// directories are kept as nodes are added, so a component of many files
/// does not rescan everything above each one.
#[derive(Default)]
struct LocalEdges {
    last_barrier: Option<usize>,
    directories: Vec<usize>,
}

impl LocalEdges {
    fn add(&mut self, index: usize, node: &NodeSpec) {
        if node.barrier {
            self.last_barrier = Some(index);
        }
        if matches!(node.action, Action::Directory { .. }) {
            self.directories.push(index);
        }
    }

    fn deps(&self, above: &[NodeSpec], node: &NodeSpec) -> Vec<usize> {
        if node.barrier {
            // Programs under one supervisord restart independently.
            let sibling = |other: &NodeSpec| {
                matches!(node.action, Action::Program { .. })
                    && matches!(other.action, Action::Program { .. })
            };
            return (0..above.len()).filter(|&i| !sibling(&above[i])).collect();
        }
        let target = node.action.target();
        let directory = self
            .directories
            .iter()
            .map(|&index| (index, above[index].action.target()))
            .filter(|(_, dir)| target.starts_with(dir) && target != *dir)
            .max_by_key(|(_, dir)| dir.components().count())
            .map(|(index, _)| index);
        let mut deps: Vec<usize> = self.last_barrier.into_iter().chain(directory).collect();
        deps.sort_unstable();
        deps.dedup();
        deps
    }
}

/// `tick` -> `Tick`, `my_app` -> `MyApp`: the batou-style class name.
pub fn display_name(component: &str) -> String {
    component
        .split(['_', '-'])
        .map(|part| {
            let mut chars = part.chars();
            match chars.next() {
                Some(first) => first.to_uppercase().chain(chars).collect::<String>(),
                None => String::new(),
            }
        })
        .collect()
}

/// Every node of `host`, components ordered providers first. Barrier nodes
/// also wait for every node of the components they require from on this
/// host. The outputs of a barrier's dependencies in its own component (and,
/// for a service, in its providers) become named inputs (`after NODE`),
/// carrying that node's inputs so an explanation can follow the chain.
#[salsa::tracked(returns(ref))]
pub fn host_graph(
    db: &dyn Db,
    deployment: Deployment,
    host: String,
) -> Result<Arc<HostGraph>, Vec<ConfigError>> {
    let wiring = wiring(db, deployment).clone()?;
    let components = wiring.order.get(&host).cloned().unwrap_or_default();
    assemble(db, deployment, &host, &components).map(Arc::new)
}

/// The graph of `components` of `host` (in wiring order, each after the
/// same-host components it requires from, which must be among them): all
/// of the host for [`host_graph`], the part a change reaches for an
/// incremental run. The nodes of a component come out the same either way.
pub fn assemble(
    db: &dyn Db,
    deployment: Deployment,
    host: &str,
    components: &[String],
) -> Result<HostGraph, Vec<ConfigError>> {
    let env = environment_def(db, deployment)
        .clone()
        .map_err(|e| vec![e])?;
    let wiring = wiring(db, deployment).clone()?;
    let mut graph = HostGraph {
        environment: env.name.clone(),
        host: host.to_string(),
        nodes: Vec::new(),
    };
    let mut errors = Vec::new();
    let mut ranges: BTreeMap<String, std::ops::Range<usize>> = BTreeMap::new();
    for component in components {
        let nodes = match component_nodes(db, deployment, host.to_string(), component.clone()) {
            Ok(nodes) => nodes,
            Err(error) => {
                errors.push(error.clone());
                continue;
            }
        };
        let offset = graph.nodes.len();
        let me = Placement {
            host: host.to_string(),
            component: component.clone(),
        };
        let providers: BTreeSet<String> = wiring
            .providers_of(&me)
            .filter(|provider| provider.host == host)
            .map(|provider| provider.component.clone())
            .collect();
        for node in nodes.iter() {
            let mut node = node.clone();
            node.deps = node.deps.iter().map(|dep| dep + offset).collect();
            if node.barrier {
                for provider in &providers {
                    node.deps
                        .extend(ranges.get(provider).cloned().unwrap_or_default());
                }
                node.deps.sort_unstable();
                node.deps.dedup();
                for &dep in &node.deps {
                    let dep = &graph.nodes[dep];
                    let watched = match &node.watches {
                        Watches::Above => dep.component == node.component,
                        Watches::AboveAndProviders => true,
                        Watches::Provider(provider) => &dep.component == provider,
                        Watches::Nothing => false,
                    };
                    if !watched {
                        continue;
                    }
                    let after = Input::plain(dep.output.to_hex()).with_via(dep.inputs.clone());
                    node.inputs.insert(format!("after {}", dep.display), after);
                }
                if node.inputs.values().any(Input::is_sensitive) {
                    node.holds_secrets();
                }
                node.key = node_key(&node.inputs);
                node.output = node.key;
            }
            graph.nodes.push(node);
        }
        ranges.insert(component.clone(), offset..graph.nodes.len());
    }
    for [(_, other), (_, node)] in clashing_owners(graph.nodes.iter().map(|node| ((), node))) {
        errors.push(ConfigError::new(
            node.defined_at(),
            format!(
                "{} ({}) and {} both deploy `{}`",
                other.display,
                other.defined_at(),
                node.display,
                node.action.target().display()
            ),
        ));
    }
    if errors.is_empty() {
        Ok(graph)
    } else {
        Err(errors)
    }
}

/// The text of a deployment file: `None` if missing, an error naming the
/// line of the first byte that is not UTF-8.
fn read_text(db: &dyn Db, path: &str) -> Option<Result<String, ConfigError>> {
    let bytes = db.source(path).contents(db).clone()?;
    Some(String::from_utf8(bytes.to_vec()).map_err(|error| {
        let valid = &bytes[..error.utf8_error().valid_up_to()];
        let line = valid.iter().filter(|byte| **byte == b'\n').count() + 1;
        let column = valid.len()
            - valid
                .iter()
                .rposition(|byte| *byte == b'\n')
                .map_or(0, |at| at + 1)
            + 1;
        let byte = bytes[valid.len()];
        ConfigError::new(
            Location::file(path).at_line(line),
            format!("is not UTF-8 text: byte 0x{byte:02x} at column {column}"),
        )
    }))
}

/// Which queries re-execute after an edit: incrementality is asserted
/// from salsa's event log, not assumed.
#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;
    use crate::db::Database;

    struct Fixture {
        dir: tempfile::TempDir,
        db: Database,
        deployment: Deployment,
    }

    impl Fixture {
        fn new() -> Fixture {
            let dir = tempfile::tempdir().unwrap();
            let files = [
                ("environments/dev.cfg", "[hosts]\nlocalhost = tick, supervisor, other\n"),
                (
                    "components/tick/component.cfg",
                    "[attributes]\npriority = 10\nunused = a\n\n[file:tick.sh]\nmode = 0755\n\n[provide:programs]\nname = tick\npriority = {{ priority }}\n",
                ),
                ("components/tick/tick.sh", "#!/bin/sh\necho tick\n"),
                (
                    "components/supervisor/component.cfg",
                    "[require:programs]\n\n[file:supervisord.conf]\n",
                ),
                (
                    "components/supervisor/supervisord.conf",
                    "{% for p in programs %}[program:{{ p.name }}]\npriority = {{ p.priority }}\n{% endfor %}",
                ),
                ("components/other/component.cfg", "[file:other.txt]\ncontent = other\n"),
            ];
            for (path, text) in files {
                let path = dir.path().join(path);
                fs::create_dir_all(path.parent().unwrap()).unwrap();
                fs::write(path, text).unwrap();
            }
            let db = Database::with_query_log(dir.path());
            let deployment = Deployment::new(
                &db,
                dir.path().to_path_buf(),
                "dev".to_string(),
                None,
                Default::default(),
            );
            Fixture {
                dir,
                db,
                deployment,
            }
        }

        fn configure(&self) -> Arc<HostGraph> {
            host_graph(&self.db, self.deployment, "localhost".into())
                .clone()
                .unwrap()
        }

        fn edit(&mut self, path: &str, from: &str, to: &str) {
            let full = self.dir.path().join(path);
            let text = fs::read_to_string(&full).unwrap().replace(from, to);
            fs::write(full, text).unwrap();
            self.db.reload(path);
        }

        /// The queries executed since the last call, with how often.
        fn executed(&self) -> Vec<String> {
            let mut counts: BTreeMap<String, usize> = BTreeMap::new();
            for name in self.db.take_executed() {
                *counts.entry(name).or_default() += 1;
            }
            counts
                .into_iter()
                .map(|(name, count)| format!("{name} x{count}"))
                .collect()
        }
    }

    #[test]
    fn a_provided_attribute_reaches_the_requirer_and_nothing_else() {
        let mut fixture = Fixture::new();
        fixture.configure();
        fixture.executed();

        fixture.edit(
            "components/tick/component.cfg",
            "priority = 10",
            "priority = 20",
        );
        let graph = fixture.configure();
        let conf = graph
            .nodes
            .iter()
            .find(|node| node.id == "supervisor/file:supervisord.conf")
            .unwrap();
        let Action::File { content, .. } = &conf.action else {
            panic!("a file node")
        };
        assert!(String::from_utf8_lossy(content.bytes().unwrap()).contains("priority = 20"));
        // Tick's file does not read `priority`: its nodes are rebuilt but
        // equal, and `other` is never looked at again.
        assert_eq!(
            fixture.executed(),
            [
                "attributes x1",
                "component_def x1",
                "component_nodes x2",
                "host_graph x1",
                "provided x1",
                "template_context x2",
                "wiring x1",
            ]
        );
    }

    #[test]
    fn an_attribute_no_template_reads_stops_before_the_graph() {
        let mut fixture = Fixture::new();
        fixture.configure();
        fixture.executed();

        fixture.edit("components/tick/component.cfg", "unused = a", "unused = b");
        fixture.configure();
        let executed = fixture.executed();
        assert!(
            !executed.iter().any(|q| q.starts_with("host_graph")),
            "{executed:?}"
        );
        assert!(
            executed.contains(&"template_context x1".to_string()),
            "{executed:?}"
        );
    }

    #[test]
    fn a_source_file_edit_rerenders_only_its_component() {
        let mut fixture = Fixture::new();
        fixture.configure();
        fixture.executed();

        fixture.edit("components/tick/tick.sh", "echo tick", "echo tock");
        fixture.configure();
        assert_eq!(fixture.executed(), ["component_nodes x1", "host_graph x1"]);
    }

    #[test]
    fn an_environment_comment_changes_nothing_downstream() {
        let mut fixture = Fixture::new();
        fixture.configure();
        fixture.executed();

        let path = "environments/dev.cfg";
        let full = fixture.dir.path().join(path);
        let text = fs::read_to_string(&full).unwrap() + "; a comment at the end\n";
        fs::write(full, text).unwrap();
        fixture.db.reload(path);
        fixture.configure();
        assert_eq!(fixture.executed(), ["environment_def x1"]);
    }
}
