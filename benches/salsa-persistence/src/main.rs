//! Does salsa's persisted database (salsa 0.28.5, feature `persistence`)
//! beat recomputing tack's configure phase?
//!
//! A salsa database shaped like tack's configure queries, over the same
//! files and with tack's own parsers and template renderer:
//!
//! ```text
//! SourceFile (one persisted input per file read: path + text)
//! environment_def ─┐
//! component_def ───┼─> attributes ─> context ─> provided
//!                  └─> wiring ──────┘     └────> render_file (text + blake3 key)
//! ```
//!
//! Every tracked fn and interned struct is `persist`; values are plain
//! (String, Vec, BTreeMap) so they serialize. The saved database is JSON
//! (serde_json), written with `<dyn salsa::Database>::as_serialize` and read
//! back with `<dyn salsa::Database>::deserialize`.
//!
//! ```text
//! salsa-persistence-bench --generate DIR COMPONENTS    # benches/generate's deployment
//! salsa-persistence-bench --measure DIR RUNS STATE     # one markdown table row
//! salsa-persistence-bench --breakdown DIR STATE        # where (d) goes, one run
//! salsa-persistence-bench --no-warm-up DIR STATE       # (e) and (d) without warm-up
//! ```
//!
//! Everything runs on one thread, as tack's configure does.

#[path = "../../generate/mod.rs"]
#[allow(dead_code)]
mod generate;

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use salsa::plumbing::ZalsaDatabase;
use salsa::Setter;
use tack::component::{ComponentDef, ResourceKind};
use tack::environment::EnvironmentDef;
use tack::error::Location;
use tack::provenance::Input;
use tack::template::{render, ContextVar, ProvidedRecord, TemplateContext};

const ENV_PATH: &str = "environments/dev.cfg";
const HOST: &str = "localhost";
/// The change of scenario (d): one override added to the environment.
const OVERRIDE: &str = "\n[component:c0001]\ncolor = changed\n";

// ---------------------------------------------------------------- inputs

/// A file of the deployment by its path below the root; `None` if missing.
/// Text rather than bytes: serde_json writes `Vec<u8>` as an array of
/// numbers, and tack reads every source as UTF-8 text anyway.
#[salsa::input(persist)]
pub struct SourceFile {
    #[returns(ref)]
    pub path: String,
    #[returns(ref)]
    pub contents: Option<String>,
}

#[salsa::interned(persist)]
pub struct ComponentId<'db> {
    #[returns(ref)]
    pub name: String,
}

#[salsa::interned(persist)]
pub struct FileId<'db> {
    #[returns(copy)]
    pub component: ComponentId<'db>,
    #[returns(ref)]
    pub name: String,
}

#[salsa::db]
pub trait Db: salsa::Database {
    /// The input for `path`, created (and the file read) on first use, as
    /// tack's `Db::source` does.
    fn source(&self, path: &str) -> SourceFile;
    /// The deployment root; fixed for the database's life, not an input.
    fn root_dir(&self) -> &Path;
}

#[salsa::db]
#[derive(Clone)]
pub struct Database {
    storage: salsa::Storage<Self>,
    root: Arc<PathBuf>,
    files: Arc<Mutex<HashMap<String, SourceFile>>>,
    /// Query name -> executions, only for `--breakdown`.
    executed: Option<Arc<Mutex<BTreeMap<String, usize>>>>,
}

#[salsa::db]
impl salsa::Database for Database {}

#[salsa::db]
impl Db for Database {
    fn source(&self, path: &str) -> SourceFile {
        let mut files = self.files.lock().unwrap();
        if let Some(file) = files.get(path) {
            return *file;
        }
        let text = fs::read_to_string(self.root.join(path)).ok();
        let file = SourceFile::new(self, path.to_string(), text);
        files.insert(path.to_string(), file);
        file
    }

    fn root_dir(&self) -> &Path {
        &self.root
    }
}

impl Database {
    fn new(root: &Path) -> Database {
        Database {
            storage: salsa::Storage::default(),
            root: Arc::new(root.to_path_buf()),
            files: Arc::default(),
            executed: None,
        }
    }

    /// A database that counts the queries it executes.
    fn with_log(root: &Path) -> Database {
        let executed: Arc<Mutex<BTreeMap<String, usize>>> = Arc::default();
        let log = executed.clone();
        let storage = salsa::Storage::new(Some(Box::new(move |event: salsa::Event| {
            if let salsa::EventKind::WillExecute { database_key } = event.kind {
                let name = format!("{database_key:?}");
                let name = name.split('(').next().unwrap_or_default().to_string();
                *log.lock().unwrap().entry(name).or_default() += 1;
            }
        })));
        Database {
            storage,
            executed: Some(executed),
            ..Database::new(root)
        }
    }

    /// The queries executed since the last call, with counts.
    fn take_executed(&self) -> String {
        let Some(executed) = &self.executed else {
            return String::new();
        };
        let executed = std::mem::take(&mut *executed.lock().unwrap());
        let counts: Vec<String> = executed
            .iter()
            .map(|(name, count)| format!("{name} x{count}"))
            .collect();
        counts.join(", ")
    }

    /// `db` (fresh) filled from a saved database, with the path -> input map
    /// rebuilt from the restored inputs.
    fn load_into(mut db: Database, json: &[u8]) -> Database {
        <dyn salsa::Database>::deserialize(
            &mut db,
            &mut serde_json::Deserializer::from_slice(json),
        )
        .expect("deserialize the saved database");
        let mut files = HashMap::new();
        for entry in SourceFile::ingredient(&db).entries(db.zalsa()) {
            let file = entry.as_struct();
            files.insert(file.path(&db).clone(), file);
        }
        *db.files.lock().unwrap() = files;
        db
    }

    /// Sets the text of `path`, creating its input if it has none yet.
    fn set_text(&mut self, path: &str, text: String) {
        let existing = self.files.lock().unwrap().get(path).copied();
        match existing {
            Some(file) => {
                file.set_contents(self).to(Some(text));
            }
            None => {
                let file = SourceFile::new(self, path.to_string(), Some(text));
                self.files.lock().unwrap().insert(path.to_string(), file);
            }
        }
    }

    /// Rereads every known source and sets the inputs whose text changed;
    /// returns how many changed.
    fn reread_sources(&mut self) -> usize {
        let files: Vec<(String, SourceFile)> = self
            .files
            .lock()
            .unwrap()
            .iter()
            .map(|(path, file)| (path.clone(), *file))
            .collect();
        let mut changed = 0;
        for (path, file) in files {
            let text = fs::read_to_string(self.root.join(&path)).ok();
            if file.contents(self) != &text {
                file.set_contents(self).to(text);
                changed += 1;
            }
        }
        changed
    }
}

// ---------------------------------------------------------------- queries

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Env {
    pub name: String,
    pub work_dir: String,
    /// Every placed component, in the order of `[hosts]` (one host here).
    pub components: Vec<String>,
    /// Component -> attribute -> value.
    pub overrides: BTreeMap<String, BTreeMap<String, String>>,
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Component {
    pub attributes: BTreeMap<String, String>,
    /// Key -> (field, template).
    pub provides: Vec<(String, Vec<(String, String)>)>,
    /// (key, one).
    pub requires: Vec<(String, bool)>,
    /// `[file:NAME]` resources: (name, source path below the root).
    pub files: Vec<(String, String)>,
}

/// (provider, field -> value): what one provider gives a requirer.
pub type Provided = (String, BTreeMap<String, String>);

/// What a component's templates see: attributes and builtins, and per
/// required key its providers' values.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Context {
    pub vars: BTreeMap<String, String>,
    /// Key -> (one, its providers' values).
    pub required: BTreeMap<String, (bool, Vec<Provided>)>,
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RenderedFile {
    pub text: String,
    /// blake3 over the target, the source's hash and the values the
    /// template read (as tack's node key covers its named inputs).
    pub key: String,
}

fn text_of<'db>(db: &'db dyn Db, path: &str) -> Result<&'db String, String> {
    db.source(path)
        .contents(db)
        .as_ref()
        .ok_or_else(|| format!("{path}: does not exist"))
}

#[salsa::tracked(returns(ref), persist)]
pub fn environment_def(db: &dyn Db) -> Result<Env, String> {
    let text = text_of(db, ENV_PATH)?;
    let def = EnvironmentDef::parse("dev", ENV_PATH, text).map_err(|e| e.to_string())?;
    let mut components = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for host in &def.hosts {
        for name in &host.components {
            if seen.insert(name.as_str()) {
                components.push(name.clone());
            }
        }
    }
    let overrides = def
        .overrides
        .iter()
        .map(|(component, overrides)| {
            let values = overrides
                .values
                .iter()
                .map(|(name, value)| (name.clone(), value.value.clone()))
                .collect();
            (component.clone(), values)
        })
        .collect();
    Ok(Env {
        name: def.name,
        work_dir: def.work_dir,
        components,
        overrides,
    })
}

#[salsa::tracked(returns(ref), persist)]
pub fn component_def<'db>(
    db: &'db dyn Db,
    component: ComponentId<'db>,
) -> Result<Component, String> {
    let name = component.name(db);
    let path = format!("components/{name}/component.cfg");
    let text = text_of(db, &path)?;
    let def = ComponentDef::parse(name, &path, text).map_err(|e| e.to_string())?;
    let files = def
        .resources
        .iter()
        .filter(|resource| resource.kind == ResourceKind::File)
        .map(|resource| {
            let source = resource
                .field("source")
                .map_or_else(|| resource.name.clone(), |s| s.value.clone());
            (resource.name.clone(), format!("{}/{source}", def.dir))
        })
        .collect();
    Ok(Component {
        attributes: def
            .attributes
            .iter()
            .map(|(name, value)| (name.clone(), value.value.clone()))
            .collect(),
        provides: def
            .provides
            .iter()
            .map(|provide| {
                let fields = provide
                    .fields
                    .iter()
                    .map(|(name, template)| (name.clone(), template.value.clone()))
                    .collect();
                (provide.key.clone(), fields)
            })
            .collect(),
        requires: def
            .requires
            .iter()
            .map(|require| (require.key.clone(), require.one))
            .collect(),
        files,
    })
}

/// Key -> the components that provide it, for the whole environment.
#[salsa::tracked(returns(ref), persist)]
pub fn wiring(db: &dyn Db) -> Result<BTreeMap<String, Vec<String>>, String> {
    let env = environment_def(db).as_ref().map_err(Clone::clone)?;
    let mut providers: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for name in &env.components {
        let def = component_def(db, ComponentId::new(db, name.clone()))
            .as_ref()
            .map_err(Clone::clone)?;
        for (key, _) in &def.provides {
            providers.entry(key.clone()).or_default().push(name.clone());
        }
    }
    Ok(providers)
}

/// A component's attributes after the environment's overrides.
#[salsa::tracked(returns(ref), persist)]
pub fn attributes<'db>(
    db: &'db dyn Db,
    component: ComponentId<'db>,
) -> Result<BTreeMap<String, String>, String> {
    let env = environment_def(db).as_ref().map_err(Clone::clone)?;
    let def = component_def(db, component)
        .as_ref()
        .map_err(Clone::clone)?;
    let mut merged = def.attributes.clone();
    if let Some(overrides) = env.overrides.get(component.name(db)) {
        for (name, value) in overrides {
            if !merged.contains_key(name) {
                return Err(format!("{} has no attribute `{name}`", component.name(db)));
            }
            merged.insert(name.clone(), value.clone());
        }
    }
    Ok(merged)
}

#[salsa::tracked(returns(ref), persist)]
pub fn context<'db>(db: &'db dyn Db, component: ComponentId<'db>) -> Result<Context, String> {
    let env = environment_def(db).as_ref().map_err(Clone::clone)?;
    let def = component_def(db, component)
        .as_ref()
        .map_err(Clone::clone)?;
    let wiring = wiring(db).as_ref().map_err(Clone::clone)?;
    let mut vars = attributes(db, component)
        .as_ref()
        .map_err(Clone::clone)?
        .clone();
    let workdir = db.root_dir().join(&env.work_dir).join(component.name(db));
    vars.insert("workdir".into(), workdir.display().to_string());
    vars.insert("host".into(), HOST.into());
    vars.insert("environment".into(), env.name.clone());
    let mut required = BTreeMap::new();
    for (key, one) in &def.requires {
        let mut records = Vec::new();
        for provider in wiring.get(key).into_iter().flatten() {
            let values = provided(db, ComponentId::new(db, provider.clone()))
                .as_ref()
                .map_err(Clone::clone)?;
            if let Some(fields) = values.get(key) {
                records.push((provider.clone(), fields.clone()));
            }
        }
        required.insert(key.clone(), (*one, records));
    }
    Ok(Context { vars, required })
}

/// Key -> field -> value rendered with the provider's context.
#[salsa::tracked(returns(ref), persist)]
pub fn provided<'db>(
    db: &'db dyn Db,
    component: ComponentId<'db>,
) -> Result<BTreeMap<String, BTreeMap<String, String>>, String> {
    let def = component_def(db, component)
        .as_ref()
        .map_err(Clone::clone)?;
    let context = template_context(context(db, component).as_ref().map_err(Clone::clone)?);
    let origin = Location::file(format!("components/{}/component.cfg", component.name(db)));
    let mut values = BTreeMap::new();
    for (key, fields) in &def.provides {
        let mut rendered = BTreeMap::new();
        for (name, template) in fields {
            let text = render(template, &origin, &context).map_err(|e| e.to_string())?;
            rendered.insert(name.clone(), text.text);
        }
        values.insert(key.clone(), rendered);
    }
    Ok(values)
}

#[salsa::tracked(returns(ref), persist)]
pub fn render_file<'db>(db: &'db dyn Db, file: FileId<'db>) -> Result<RenderedFile, String> {
    let component = file.component(db);
    let def = component_def(db, component)
        .as_ref()
        .map_err(Clone::clone)?;
    let (_, source) = def
        .files
        .iter()
        .find(|(name, _)| name == file.name(db))
        .ok_or_else(|| format!("no [file:{}]", file.name(db)))?;
    let template = text_of(db, source)?;
    let context = template_context(context(db, component).as_ref().map_err(Clone::clone)?);
    let rendered =
        render(template, &Location::file(source.clone()), &context).map_err(|e| e.to_string())?;
    let mut key = blake3::Hasher::new();
    let target = format!("{}/{}", component.name(db), file.name(db));
    for (name, value) in [
        ("target", target.as_str()),
        (
            "source",
            blake3::hash(template.as_bytes()).to_hex().as_str(),
        ),
    ] {
        key.update(name.as_bytes()).update(b"\0");
        key.update(value.as_bytes()).update(b"\0");
    }
    for (name, input) in &rendered.inputs {
        key.update(name.as_bytes()).update(b"\0");
        key.update(input.value.as_bytes()).update(b"\0");
    }
    Ok(RenderedFile {
        text: rendered.text,
        key: key.finalize().to_hex().to_string(),
    })
}

/// tack's template context from the plain one.
fn template_context(context: &Context) -> Arc<TemplateContext> {
    let mut vars = BTreeMap::new();
    for (name, value) in &context.vars {
        vars.insert(name.clone(), ContextVar::Text(Input::plain(value.clone())));
    }
    for (key, (one, records)) in &context.required {
        let mut records: Vec<ProvidedRecord> = records
            .iter()
            .map(|(component, fields)| ProvidedRecord {
                host: HOST.into(),
                component: component.clone(),
                fields: fields
                    .iter()
                    .map(|(name, value)| (name.clone(), Input::plain(value.clone())))
                    .collect(),
            })
            .collect();
        let var = match (*one, records.pop()) {
            (true, Some(record)) => ContextVar::Record(record),
            (_, last) => {
                records.extend(last);
                ContextVar::Records(records)
            }
        };
        vars.insert(key.clone(), var);
    }
    Arc::new(TemplateContext { vars })
}

// ---------------------------------------------------------------- driving

/// Renders every file of the environment; returns (files, bytes rendered).
fn compute_all(db: &Database) -> (usize, usize) {
    let env = environment_def(db).as_ref().expect("environment");
    let (mut files, mut bytes) = (0, 0);
    for name in &env.components {
        let component = ComponentId::new(db, name.clone());
        let def = component_def(db, component).as_ref().expect("component");
        for (file, _) in &def.files {
            let rendered = render_file(db, FileId::new(db, component, file.clone()))
                .as_ref()
                .expect("render");
            files += 1;
            bytes += rendered.text.len();
        }
    }
    (files, bytes)
}

/// A digest of every file's path, text and key, to check that two
/// databases agree.
fn digest(db: &Database) -> String {
    let env = environment_def(db).as_ref().expect("environment");
    let mut hasher = blake3::Hasher::new();
    for name in &env.components {
        let component = ComponentId::new(db, name.clone());
        let def = component_def(db, component).as_ref().expect("component");
        for (file, _) in &def.files {
            let rendered = render_file(db, FileId::new(db, component, file.clone()))
                .as_ref()
                .expect("render");
            for part in [name, file, &rendered.text, &rendered.key] {
                hasher.update(part.as_bytes()).update(b"\0");
            }
        }
    }
    hasher.finalize().to_hex().to_string()
}

/// After `deserialize`, a memo's deep verification that reaches a tracked
/// fn not yet called in this process panics ("tracked function
/// ingredients cannot be accessed before calling `init`"). Calling every
/// tracked fn once, innermost first, on the first component initializes
/// them all; it is part of every timed post-load figure.
fn warm_up(db: &Database) {
    let env = environment_def(db).as_ref().expect("environment");
    let first = ComponentId::new(db, env.components[0].clone());
    let _ = component_def(db, first);
    let _ = attributes(db, first);
    let _ = wiring(db);
    let _ = context(db, first);
    let _ = provided(db, first);
    let def = component_def(db, first).as_ref().expect("component");
    let _ = render_file(db, FileId::new(db, first, def.files[0].0.clone()));
}

fn save(db: &mut Database, state: &Path) -> u64 {
    let file = fs::File::create(state).expect("create state file");
    let mut out = std::io::BufWriter::with_capacity(1 << 20, file);
    serde_json::to_writer(&mut out, &<dyn salsa::Database>::as_serialize(db)).expect("serialize");
    out.flush().expect("write state file");
    fs::metadata(state).expect("state file").len()
}

fn load(root: &Path, state: &Path) -> Database {
    let bytes = fs::read(state).expect("read state file");
    Database::load_into(Database::new(root), &bytes)
}

fn changed_env(root: &Path) -> String {
    let mut text = fs::read_to_string(root.join(ENV_PATH)).expect("environment file");
    text.push_str(OVERRIDE);
    text
}

fn time<T>(f: impl FnOnce() -> T) -> (T, Duration) {
    let start = Instant::now();
    let value = f();
    (value, start.elapsed())
}

fn median(mut values: Vec<Duration>) -> Duration {
    values.sort();
    values[values.len() / 2]
}

fn ms(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1000.0;
    if ms < 1.0 {
        format!("{:.3} ms", ms)
    } else if ms < 100.0 {
        format!("{:.1} ms", ms)
    } else {
        format!("{:.0} ms", ms)
    }
}

fn measure(root: &Path, runs: usize, state: &Path) {
    let (mut cold, mut saving, mut loading, mut noop, mut reread, mut change) =
        (vec![], vec![], vec![], vec![], vec![], vec![]);
    let mut size = 0;
    let mut files = 0;
    let changed_text = changed_env(root);
    for run in 0..runs {
        // (a) cold compute in a fresh database, reading the files.
        let mut db = Database::new(root);
        let ((n, _), t) = time(|| compute_all(&db));
        files = n;
        cold.push(t);
        let cold_digest = (run == 0).then(|| digest(&db));

        // (b) save.
        let (bytes, t) = time(|| save(&mut db, state));
        size = bytes;
        saving.push(t);
        drop(db);

        // (c) load, then (e) revalidate with nothing changed.
        let (mut db, t) = time(|| load(root, state));
        loading.push(t);
        let ((n, _), t) = time(|| {
            warm_up(&db);
            compute_all(&db)
        });
        assert_eq!(n, files);
        noop.push(t);
        if let Some(expected) = &cold_digest {
            assert_eq!(&digest(&db), expected, "loaded database disagrees");
        }
        // Extra: reread every source to find that nothing changed.
        let (changed, t) = time(|| db.reread_sources());
        assert_eq!(changed, 0);
        reread.push(t);
        drop(db);

        // (c) load again, then (d) one changed input and recompute.
        let (mut db, t) = time(|| load(root, state));
        loading.push(t);
        let ((n, _), t) = time(|| {
            db.set_text(ENV_PATH, changed_text.clone());
            warm_up(&db);
            compute_all(&db)
        });
        assert_eq!(n, files);
        change.push(t);
        if let Some(cold_digest) = &cold_digest {
            let after = digest(&db);
            assert_ne!(&after, cold_digest, "the override changed nothing");
            let mut fresh = Database::new(root);
            fresh.set_text(ENV_PATH, changed_text.clone());
            compute_all(&fresh);
            assert_eq!(
                after,
                digest(&fresh),
                "incremental result differs from a cold one"
            );
        }
        drop(db);
    }
    fs::remove_file(state).ok();
    let (cold, load, change) = (median(cold), median(loading), median(change));
    let label = if files >= 1000 {
        format!("{}k", files / 1000)
    } else {
        files.to_string()
    };
    println!(
        "| {label} | {runs} | {} | {} | {:.1} MB | {} | {} | {} | {} | {} | {:.2} |",
        ms(cold),
        ms(median(saving)),
        size as f64 / 1e6,
        ms(load),
        ms(change),
        ms(load + change),
        ms(median(noop)),
        ms(median(reread)),
        (load + change).as_secs_f64() / cold.as_secs_f64(),
    );
}

/// Where (d) goes, from one run: the same steps as in [`measure`], timed
/// one by one.
fn breakdown(root: &Path, state: &Path) {
    let mut db = Database::new(root);
    let (files, _) = compute_all(&db);
    save(&mut db, state);
    drop(db);
    let bytes = fs::read(state).expect("read state file");
    let mut db = Database::load_into(Database::with_log(root), &bytes);
    fs::remove_file(state).ok();
    let changed = changed_env(root);
    let ((), set) = time(|| db.set_text(ENV_PATH, changed));
    let (_, env) = time(|| environment_def(&db).is_ok());
    let ((), warm) = time(|| warm_up(&db));
    let (_, all) = time(|| compute_all(&db));
    println!(
        "(d) at {files} files, one run (with an event log): set the input {}, environment_def {}, warm-up {}, the rest {}; executed: {}",
        ms(set),
        ms(env),
        ms(warm),
        ms(all),
        db.take_executed()
    );
}

/// (e) and (d) without [`warm_up`], each on a freshly loaded database, to
/// see whether salsa panics.
fn no_warm_up(root: &Path, state: &Path) {
    let mut db = Database::new(root);
    compute_all(&db);
    save(&mut db, state);
    drop(db);
    for change in [false, true] {
        let mut db = load(root, state);
        if change {
            db.set_text(ENV_PATH, changed_env(root));
        }
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| compute_all(&db)));
        let scenario = if change { "one change" } else { "no change" };
        match result {
            Ok((files, _)) => println!("{scenario}: no panic, {files} files without warm-up"),
            Err(_) => println!("{scenario}: panicked (message above)"),
        }
    }
    fs::remove_file(state).ok();
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match args.as_slice() {
        ["--generate", dir, components] => {
            let spec = generate::Spec {
                components: components.parse().expect("COMPONENTS"),
                files: generate::FILES_PER_COMPONENT,
            };
            generate::write(Path::new(dir), &spec, generate::Format::Tack)
                .expect("write deployment");
        }
        ["--measure", dir, runs, state] => measure(
            Path::new(dir),
            runs.parse().expect("RUNS"),
            Path::new(state),
        ),
        ["--header"] => {
            println!(
                "| files | runs | (a) cold compute | (b) save | (b) file | (c) load | (d) one change after load | (c)+(d) | (e) no change after load | reread all sources | (c+d)/(a) |"
            );
            println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
        }
        ["--breakdown", dir, state] => breakdown(Path::new(dir), Path::new(state)),
        ["--no-warm-up", dir, state] => no_warm_up(Path::new(dir), Path::new(state)),
        _ => {
            eprintln!("usage: --generate DIR COMPONENTS | --header | --measure DIR RUNS STATE | --breakdown DIR STATE | --no-warm-up DIR STATE");
            std::process::exit(2);
        }
    }
}
