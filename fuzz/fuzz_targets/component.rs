//! `ComponentDef::parse` on arbitrary UTF-8: an error is fine, a panic or a
//! hang is a bug.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    let _ = tack::component::ComponentDef::parse("app", "components/app/component.cfg", text);
});
