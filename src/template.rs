//! Jinja templates, rendered strictly, reporting which variables they read.
//!
//! An undefined variable is an error, never an empty string: a typo in a
//! template must not deploy a broken config. Besides the text, rendering
//! returns the context variables the template refers to as named
//! [`Input`]s, so a node's key covers exactly what its template reads and
//! an attribute no template uses invalidates nothing.

use std::collections::{BTreeMap, BTreeSet};

use std::sync::{Arc, Mutex};

use minijinja::value::Object;
use minijinja::{AutoEscape, Environment, UndefinedBehavior, Value};

use crate::error::{ConfigError, Location};
use crate::provenance::{Input, Inputs, Redactions};

/// What a template can see: attributes, `workdir`, `host`, `environment`,
/// and each required key as a list of records.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct TemplateContext {
    pub vars: BTreeMap<String, ContextVar>,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ContextVar {
    Text(Input),
    Records(Vec<ProvidedRecord>),
    /// A key required with `one = true`: its single provider's fields.
    Record(ProvidedRecord),
}

/// The values one component provided for a key, as a requirer sees them.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ProvidedRecord {
    pub host: String,
    pub component: String,
    pub fields: BTreeMap<String, Input>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rendered {
    pub text: String,
    /// The context variables the template refers to, named `var NAME` or
    /// `var KEY[host/component].FIELD` for provided values.
    pub inputs: Inputs,
}

/// Rendering gives up after this many instructions, so a runaway loop in a
/// template is an error rather than a hang.
const FUEL: u64 = 50_000_000;

impl TemplateContext {
    /// The template value of one variable.
    fn value_of(&self, name: &str) -> Option<Value> {
        Some(match self.vars.get(name)? {
            ContextVar::Text(input) => Value::from(input.value.clone()),
            ContextVar::Records(records) => {
                Value::from(records.iter().map(record_value).collect::<Vec<_>>())
            }
            ContextVar::Record(record) => record_value(record),
        })
    }

    /// The named inputs behind the variables in `used`.
    fn inputs_for(&self, used: &BTreeSet<String>) -> Inputs {
        let mut inputs = Inputs::new();
        for name in used {
            match self.vars.get(name) {
                Some(ContextVar::Text(input)) => {
                    inputs.insert(format!("var {name}"), input.clone());
                }
                Some(ContextVar::Record(record)) => {
                    for (field, input) in &record.fields {
                        let label =
                            format!("var {name}[{}/{}].{field}", record.host, record.component);
                        inputs.insert(label, input.clone());
                    }
                }
                Some(ContextVar::Records(records)) => {
                    inputs.insert(
                        format!("var {name}"),
                        Input::plain(format!("{} provided", records.len())),
                    );
                    for record in records {
                        for (field, input) in &record.fields {
                            let label =
                                format!("var {name}[{}/{}].{field}", record.host, record.component);
                            inputs.insert(label, input.clone());
                        }
                    }
                }
                None => {}
            }
        }
        inputs
    }
}

fn record_value(record: &ProvidedRecord) -> Value {
    let fields: BTreeMap<&str, &str> = record
        .fields
        .iter()
        .map(|(k, v)| (k.as_str(), v.value.as_str()))
        .collect();
    Value::from_serialize(fields)
}

/// The root of a template's context: hands out variables on demand and
/// notes each name the template looked up. A template's output is a
/// function of the values it looked up, so those, and only those, are the
/// inputs of what it renders (a variable in a branch not taken is not).
#[derive(Debug)]
struct Tracked {
    context: Arc<TemplateContext>,
    used: Mutex<BTreeSet<String>>,
}

impl Object for Tracked {
    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        let name = key.as_str()?;
        self.used
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.to_string());
        self.context.value_of(name)
    }
}

thread_local! {
    /// One environment per thread: building one per template would cost
    /// more than most templates take to render.
    static ENVIRONMENT: Environment<'static> = {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        env.set_auto_escape_callback(|_| AutoEscape::None);
        env.set_keep_trailing_newline(true);
        env.set_fuel(Some(FUEL));
        env.add_filter("format", bounded_format);
        env.add_filter("indent", bounded_indent);
        env
    };
}

/// How long one template may render. Fuel bounds template instructions,
/// but one builtin can still loop for hours (`() * 99999999999` iterates
/// that many times to produce nothing); a watchdog ends such a run with an
/// error naming the template. Configuring comes before anything is
/// written, so stopping there leaves the host untouched. 20 s by default,
/// `TACK_RENDER_TIMEOUT=SECONDS` to change.
fn render_limit() -> std::time::Duration {
    static LIMIT: std::sync::OnceLock<std::time::Duration> = std::sync::OnceLock::new();
    *LIMIT.get_or_init(|| {
        let seconds = std::env::var("TACK_RENDER_TIMEOUT")
            .ok()
            .and_then(|s| s.parse().ok());
        std::time::Duration::from_secs(seconds.unwrap_or(20))
    })
}

type Renders = std::collections::HashMap<std::thread::ThreadId, (std::time::Instant, String)>;

/// Templates being rendered, by thread, with when they started.
static RENDERING: std::sync::LazyLock<Mutex<Renders>> = std::sync::LazyLock::new(|| {
    std::thread::Builder::new()
        .name("template watchdog".into())
        .spawn(watchdog)
        .ok();
    Mutex::default()
});

fn watchdog() {
    loop {
        std::thread::sleep(std::time::Duration::from_millis(250));
        let rendering = RENDERING.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, origin)) = rendering
            .values()
            .find(|(started, _)| started.elapsed() > render_limit())
        {
            eprintln!(
                "error: {origin}: template did not finish rendering within {}s (a runaway loop?); nothing was changed",
                render_limit().as_secs()
            );
            std::process::exit(2);
        }
    }
}

/// Registers a render with the watchdog for as long as it lives.
struct Watched;

impl Watched {
    fn start(origin: &Location) -> Watched {
        let mut rendering = RENDERING.lock().unwrap_or_else(|e| e.into_inner());
        rendering.insert(
            std::thread::current().id(),
            (std::time::Instant::now(), origin.to_string()),
        );
        Watched
    }
}

impl Drop for Watched {
    fn drop(&mut self) {
        let mut rendering = RENDERING.lock().unwrap_or_else(|e| e.into_inner());
        rendering.remove(&std::thread::current().id());
    }
}

thread_local! {
    static IN_ENGINE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// While alive, a panic on this thread is caught by [`render`] and turned
/// into a template error, so the panic hook stays quiet about it.
struct QuietPanics;

impl QuietPanics {
    fn start() -> QuietPanics {
        static HOOK: std::sync::Once = std::sync::Once::new();
        HOOK.call_once(|| {
            let previous = std::panic::take_hook();
            std::panic::set_hook(Box::new(move |info| {
                if !IN_ENGINE.with(std::cell::Cell::get) {
                    previous(info);
                }
            }));
        });
        IN_ENGINE.with(|flag| flag.set(true));
        QuietPanics
    }
}

impl Drop for QuietPanics {
    fn drop(&mut self) {
        IN_ENGINE.with(|flag| flag.set(false));
    }
}

/// The most text one template may render: far above any config file, far
/// below what would take a host's memory.
const MAX_OUTPUT: usize = 64 << 20;

/// A buffer that refuses to grow past [`MAX_OUTPUT`].
struct Capped(Vec<u8>);

impl std::io::Write for Capped {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        if self.0.len() + bytes.len() > MAX_OUTPUT {
            return Err(std::io::Error::other(format!(
                "rendered text is larger than {} MiB",
                MAX_OUTPUT >> 20
            )));
        }
        self.0.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Jinja's `indent` (`width`, `first`, `blank`, positional or by name),
/// refusing absurd widths like `format` does.
fn bounded_indent(
    value: String,
    width: Option<usize>,
    first: Option<bool>,
    blank: Option<bool>,
    kwargs: minijinja::value::Kwargs,
) -> Result<String, minijinja::Error> {
    let width = match width {
        Some(width) => width,
        None => kwargs.get::<Option<usize>>("width")?.unwrap_or(4),
    };
    let first = first
        .map_or_else(|| kwargs.get::<Option<bool>>("first"), |v| Ok(Some(v)))?
        .unwrap_or(false);
    let blank = blank
        .map_or_else(|| kwargs.get::<Option<bool>>("blank"), |v| Ok(Some(v)))?
        .unwrap_or(false);
    kwargs.assert_all_used()?;
    if width as u64 > MAX_FORMAT_WIDTH {
        return Err(minijinja::Error::new(
            minijinja::ErrorKind::InvalidOperation,
            format!("indent width above {MAX_FORMAT_WIDTH}"),
        ));
    }
    let text = value.strip_suffix('\n').unwrap_or(&value);
    let text = text.strip_suffix('\r').unwrap_or(text);
    let pad = " ".repeat(width);
    let mut output = String::new();
    for (index, line) in text.split('\n').enumerate() {
        let indented = (index > 0 || first) && (!line.is_empty() || blank);
        if indented {
            output.push_str(&pad);
        }
        output.push_str(line);
        output.push('\n');
    }
    Ok(output)
}

/// The widest field a `format` filter may pad to: `"%999999999s"|format`
/// would otherwise allocate gigabytes from one line of template.
const MAX_FORMAT_WIDTH: u64 = 10_000;

/// minijinja's `format` filter, refusing absurd widths and precisions.
fn bounded_format(
    state: &minijinja::State,
    format: &Value,
    args: minijinja::value::Rest<Value>,
) -> Result<Value, minijinja::Error> {
    if let Some(text) = format.as_str() {
        let widest = text
            .split(|c: char| !c.is_ascii_digit())
            .filter_map(|digits| {
                digits
                    .parse::<u64>()
                    .ok()
                    .or((!digits.is_empty()).then_some(u64::MAX))
            })
            .max()
            .unwrap_or(0);
        if widest > MAX_FORMAT_WIDTH {
            return Err(minijinja::Error::new(
                minijinja::ErrorKind::InvalidOperation,
                format!("format width or precision above {MAX_FORMAT_WIDTH}"),
            ));
        }
    }
    minijinja::filters::format(state, format, args)
}

/// Renders `source`. `origin` is where the template text lives: a source
/// file, or the config key holding inline text; errors point there.
pub fn render(
    source: &str,
    origin: &Location,
    context: &Arc<TemplateContext>,
) -> Result<Rendered, ConfigError> {
    let tracked = Arc::new(Tracked {
        context: context.clone(),
        used: Mutex::default(),
    });
    let root = Value::from_dyn_object(tracked.clone());
    let _watched = Watched::start(origin);
    let result = ENVIRONMENT.with(|env| {
        // A panic inside the template engine (minijinja 2 has a few on
        // absurd arithmetic) is an error of this template, not a crash.
        let _quiet = QuietPanics::start();
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let template = env.template_from_named_str(&origin.file, source)?;
            let mut output = Capped(Vec::new());
            template.render_captured_to(root, &mut output)?;
            Ok(String::from_utf8_lossy(&output.0).into_owned())
        }))
        .unwrap_or_else(|panic| {
            let why = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            Err(minijinja::Error::new(
                minijinja::ErrorKind::InvalidOperation,
                format!("the template engine gave up: {why}"),
            ))
        })
    });
    let used = std::mem::take(&mut *tracked.used.lock().unwrap_or_else(|e| e.into_inner()));
    match result {
        Ok(text) => Ok(Rendered {
            text,
            inputs: context.inputs_for(&used),
        }),
        Err(error) => Err(template_error(&error, origin, context, &used)),
    }
}

fn template_error(
    error: &minijinja::Error,
    origin: &Location,
    context: &TemplateContext,
    used: &BTreeSet<String>,
) -> ConfigError {
    let location = match (error.line(), origin.key.is_some()) {
        // Inline text: count lines from the key that holds it.
        (Some(line), true) => origin.at_line(origin.line.unwrap_or(1) + line - 1),
        (Some(line), false) => origin.at_line(line),
        (None, _) => origin.clone(),
    };
    let message = match error.kind() {
        minijinja::ErrorKind::UndefinedError => {
            let unknown: Vec<&str> = used
                .iter()
                .filter(|name| !context.vars.contains_key(*name))
                .map(String::as_str)
                .collect();
            let known: Vec<&str> = context.vars.keys().map(String::as_str).collect();
            if unknown.is_empty() {
                format!(
                    "undefined value in template: {}",
                    error.detail().unwrap_or("a field or index does not exist")
                )
            } else {
                format!(
                    "undefined variable `{}` in template (defined: {})",
                    unknown.join("`, `"),
                    known.join(", ")
                )
            }
        }
        minijinja::ErrorKind::WriteFailure => format!(
            "template error: the rendered text is larger than {} MiB",
            MAX_OUTPUT >> 20
        ),
        minijinja::ErrorKind::SyntaxError => format!(
            "template syntax error: {}",
            error.detail().unwrap_or("invalid syntax")
        ),
        _ => format!(
            "template error: {}",
            error.detail().unwrap_or(&error.to_string())
        ),
    };
    // An error may quote what a template read (`{% include password %}`
    // names the template it could not find by the secret's value).
    ConfigError::new(location, context.redactions().apply(&message))
}

impl TemplateContext {
    /// The secrets in this context, to cut out of an error message.
    fn redactions(&self) -> Redactions {
        let mut inputs: Vec<&Input> = Vec::new();
        for var in self.vars.values() {
            match var {
                ContextVar::Text(input) => inputs.push(input),
                ContextVar::Record(record) => inputs.extend(record.fields.values()),
                ContextVar::Records(records) => {
                    inputs.extend(records.iter().flat_map(|record| record.fields.values()))
                }
            }
        }
        Redactions::of(inputs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn context() -> Arc<TemplateContext> {
        let mut vars = BTreeMap::new();
        vars.insert("priority".into(), ContextVar::Text(Input::plain("10")));
        vars.insert("unused".into(), ContextVar::Text(Input::plain("x")));
        let mut fields = BTreeMap::new();
        fields.insert("name".into(), Input::plain("tick"));
        vars.insert(
            "programs".into(),
            ContextVar::Records(vec![ProvidedRecord {
                host: "localhost".into(),
                component: "tick".into(),
                fields,
            }]),
        );
        Arc::new(TemplateContext { vars })
    }

    #[test]
    fn renders_and_reports_the_variables_it_read() {
        let rendered = render(
            "p={{ priority }}\n{% for p in programs %}{{ p.name }}\n{% endfor %}",
            &Location::file("components/a/x.cfg"),
            &context(),
        )
        .unwrap();
        assert_eq!(rendered.text, "p=10\ntick\n");
        let names: Vec<&str> = rendered.inputs.keys().map(String::as_str).collect();
        assert_eq!(
            names,
            [
                "var priority",
                "var programs",
                "var programs[localhost/tick].name"
            ]
        );
    }

    #[test]
    fn undefined_variable_is_named() {
        let err = render(
            "a\n{{ prioity }}\n",
            &Location::file("components/a/x"),
            &context(),
        )
        .unwrap_err();
        assert_eq!(err.location.line, Some(2));
        assert!(
            err.message.contains("undefined variable `prioity`"),
            "{err}"
        );
    }

    #[test]
    fn syntax_error_names_the_line() {
        let err = render(
            "ok\n{% if %}\n",
            &Location::file("components/a/x"),
            &context(),
        )
        .unwrap_err();
        assert_eq!(err.location.line, Some(2));
        assert!(err.message.starts_with("template syntax error"), "{err}");
    }

    #[test]
    fn a_huge_format_width_is_an_error_not_an_allocation() {
        let err = render(
            "{{ \"%999999999s\"|format(host) }}",
            &Location::file("t"),
            &context(),
        )
        .unwrap_err();
        assert!(err.message.contains("format width"), "{err}");
        let ok = render(
            "{{ \"%5s|\"|format(\"ab\") }}",
            &Location::file("t"),
            &context(),
        )
        .unwrap();
        assert_eq!(ok.text, "   ab|");
    }

    #[test]
    fn the_engine_s_own_limits_are_errors() {
        let at = Location::file("t");
        for (template, why) in [
            (
                "{{ [1, 2, 3] * 9223372036854775807 }}",
                "the template engine gave up",
            ),
            (
                "{% for i in range(100000) %}{{ 'x' * 100000 }}{% endfor %}",
                "larger than",
            ),
            ("{{ 'x'|indent(3000000000) }}", "indent width"),
        ] {
            let err = render(template, &at, &context()).unwrap_err();
            assert!(err.message.contains(why), "{template}: {err}");
        }
        let ok = render(
            "{{ 'a\nb'|indent(2) }}|{{ 'a\n\nb'|indent(width=1, first=true) }}",
            &at,
            &context(),
        )
        .unwrap();
        assert_eq!(ok.text, "a\n  b\n| a\n\n b\n");
    }

    #[test]
    fn html_is_not_escaped() {
        let mut ctx = (*context()).clone();
        ctx.vars
            .insert("v".into(), ContextVar::Text(Input::plain("<a & b>")));
        let ctx = Arc::new(ctx);
        let rendered = render("{{ v }}", &Location::file("x.html"), &ctx).unwrap();
        assert_eq!(rendered.text, "<a & b>");
    }
}
