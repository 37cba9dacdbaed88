//! `EnvironmentDef::parse` on arbitrary UTF-8: an error is fine, a panic or
//! a hang is a bug.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    let _ = tack::environment::EnvironmentDef::parse("dev", "environments/dev.cfg", text);
});
