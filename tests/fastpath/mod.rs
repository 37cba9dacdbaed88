//! The no-op fast path must never hide a change: after a deploy, a run
//! that finds every input file's stat unchanged skips configuring, so each
//! kind of change has to be seen by the stat checks. Each test deploys
//! twice (the second run takes the fast path), then changes one thing and
//! expects it to be acted on.

use std::process::Command;

use crate::support::{set, Deployment};

fn deployed() -> Deployment {
    let deployment = Deployment::new()
        .env("dev", "[hosts]\nlocalhost = app\n")
        .component(
            "app",
            "
            [attributes]
            name = one

            [file:app.conf]
            source = app.conf.in
            ",
        )
        .source("app", "app.conf.in", "name = {{ name }}\n");
    deployment.tack(&["local", "dev"]).success();
    let again = deployment.tack(&["local", "dev"]).success();
    assert!(again.updated().is_empty(), "{again}");
    deployment
}

#[test]
fn a_same_size_edit_with_the_old_mtime_is_still_seen() {
    let deployment = deployed();
    let source = deployment.path("components/app/app.conf.in");
    let reference = deployment.path("reference");
    std::fs::copy(&source, &reference).unwrap();
    deployment.write("components/app/app.conf.in", "nome = {{ name }}\n");
    // Put the old mtime back, as an unpacked archive or `cp -p` would.
    let touched = Command::new("touch")
        .arg("-r")
        .arg(&reference)
        .arg(&source)
        .status()
        .unwrap();
    assert!(touched.success());

    let output = deployment.tack(&["local", "dev"]).success();
    assert_eq!(output.updated(), set(&["App > File(app.conf)"]), "{output}");
    assert_eq!(deployment.read("work/app/app.conf"), "nome = one\n");
}

#[test]
fn a_hand_edit_of_a_deployed_file_is_repaired_after_a_fast_no_op() {
    let deployment = deployed();
    deployment.write("work/app/app.conf", "name = two\n");
    let output = deployment.tack(&["local", "dev"]).success();
    assert_eq!(output.updated(), set(&["App > File(app.conf)"]), "{output}");
    assert_eq!(deployment.read("work/app/app.conf"), "name = one\n");
}

#[test]
fn an_environment_override_added_after_a_fast_no_op_is_applied() {
    let deployment = deployed();
    deployment.write(
        "environments/dev.cfg",
        "[hosts]\nlocalhost = app\n\n[component:app]\nname = two\n",
    );
    let output = deployment.tack(&["local", "dev"]).success();
    assert_eq!(output.updated(), set(&["App > File(app.conf)"]), "{output}");
}

#[test]
fn a_new_component_file_that_was_missing_before_is_seen() {
    // `extra.txt` has no source at first: deploying it fails, and once the
    // source appears the next run must pick it up.
    let deployment = deployed();
    deployment.write(
        "components/app/component.cfg",
        "[attributes]\nname = one\n\n[file:app.conf]\nsource = app.conf.in\n\n[file:extra.txt]\ntemplate = false\n",
    );
    let failed = deployment.tack(&["local", "dev"]);
    assert_eq!(failed.code, 2, "{failed}");
    deployment.write("components/app/extra.txt", "extra\n");
    let output = deployment.tack(&["local", "dev"]).success();
    assert_eq!(
        output.updated(),
        set(&["App > File(extra.txt)"]),
        "{output}"
    );
}

#[test]
fn a_dry_run_no_op_says_so() {
    let deployment = deployed();
    let output = deployment.tack(&["local", "dev", "--dry-run"]).success();
    assert!(
        output
            .stdout
            .contains("0 would update, 1 unchanged (dry run"),
        "{output}"
    );
}
