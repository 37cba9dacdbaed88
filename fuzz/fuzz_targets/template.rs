//! `template::render` of an arbitrary template source against a fixed small
//! context, the shape configure builds: a few attributes as text and two
//! required keys as lists of records. An error is fine (syntax errors,
//! undefined variables, running out of fuel); a panic or a hang is a bug.
#![no_main]

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use tack::error::Location;
use tack::provenance::Input;
use tack::template::{render, ContextVar, ProvidedRecord, TemplateContext};

fn record(component: &str, fields: &[(&str, &str)]) -> ProvidedRecord {
    ProvidedRecord {
        host: "localhost".into(),
        component: component.into(),
        fields: fields
            .iter()
            .map(|(k, v)| (k.to_string(), Input::plain(*v)))
            .collect(),
    }
}

fn context() -> TemplateContext {
    let mut vars = BTreeMap::new();
    for (name, value) in [
        ("workdir", "/srv/tack/work/app"),
        ("host", "localhost"),
        ("environment", "dev"),
        ("greeting", "Hello"),
        ("port", "5432"),
        ("name", "hello"),
        ("priority", "10"),
    ] {
        vars.insert(name.to_string(), ContextVar::Text(Input::plain(value)));
    }
    vars.insert(
        "database".into(),
        ContextVar::Records(vec![record(
            "db",
            &[("host", "127.0.0.1"), ("port", "5432"), ("name", "hello")],
        )]),
    );
    vars.insert(
        "programs".into(),
        ContextVar::Records(vec![
            record(
                "tick",
                &[
                    ("name", "tick"),
                    ("priority", "10"),
                    ("path", "/srv/tick.sh"),
                ],
            ),
            record(
                "tock",
                &[
                    ("name", "tock"),
                    ("priority", "20"),
                    ("path", "/srv/tock.sh"),
                ],
            ),
        ]),
    );
    TemplateContext { vars }
}

fuzz_target!(|source: &str| {
    // An `Arc` derefs to the context, so this calls `render` whether it
    // takes `&TemplateContext` or `&Arc<TemplateContext>`.
    static CONTEXT: OnceLock<Arc<TemplateContext>> = OnceLock::new();
    let context = CONTEXT.get_or_init(|| Arc::new(context()));
    let _ = render(source, &Location::file("components/app/app.ini"), context);
});
