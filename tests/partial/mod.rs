//! After a clean deploy, a change reconfigures only the components it can
//! reach (see `src/incremental.rs`), and anything the record of the last
//! deploy cannot vouch for takes the full path. `--explain` says which
//! happened and why; the outcome on disk is the full path's either way.
//!
//! The deployment: `db` provides `database` (its URL from its `port`),
//! `app` requires it, `web` and `tools` stand alone.

use crate::support::{set, Deployment};

const ENV: &str = "[hosts]\nlocalhost = db, app, web, tools\n";

fn deployed() -> Deployment {
    let deployment = Deployment::new()
        .env("dev", ENV)
        .component(
            "db",
            "
            [attributes]
            port = 5432

            [provide:database]
            url = postgresql://{{ host }}:{{ port }}/app

            [file:db.conf]
            content = port = {{ port }}
            ",
        )
        .component(
            "app",
            "
            [require:database]
            one = true

            [file:app.conf]
            content = database = {{ database.url }}
            ",
        )
        .component(
            "web",
            "
            [attributes]
            greeting = hello

            [file:index.html]
            source = index.html.in
            ",
        )
        .source("web", "index.html.in", "<p>{{ greeting }}</p>\n")
        .component("tools", "[file:motd]\ncontent = tools\n");
    deployment.tack(&["local", "dev"]).success();
    deployment
}

#[test]
fn an_override_reconfigures_its_component_and_the_requirers_only() {
    let d = deployed();
    let web_state = d.mtime(".tack/state/dev/localhost/web.json");
    let db_state = d.mtime(".tack/state/dev/localhost/db.json");
    d.write(
        "environments/dev.cfg",
        &format!("{ENV}\n[component:db]\nport = 6000\n"),
    );

    let out = d.tack(&["local", "dev", "--explain"]).success();

    assert!(
        out.stdout
            .contains("Configuring 2 of 4 components (changed: db)"),
        "{out}"
    );
    assert_eq!(
        out.updated(),
        set(&["Db > File(db.conf)", "App > File(app.conf)"]),
        "{out}"
    );
    assert!(
        out.stdout
            .contains("localhost: 2 updated, 2 unchanged, 0 failed"),
        "{out}"
    );
    assert!(out
        .block("Updating Db > File(db.conf)")
        .contains("5432 -> 6000"));
    assert_eq!(
        d.read("work/app/app.conf"),
        "database = postgresql://localhost:6000/app\n"
    );
    assert_ne!(d.mtime(".tack/state/dev/localhost/db.json"), db_state);
    assert_eq!(
        d.mtime(".tack/state/dev/localhost/web.json"),
        web_state,
        "the state of an untouched component is not rewritten"
    );
    let again = d.tack(&["local", "dev", "--explain"]).success();
    assert!(again.updated().is_empty(), "{again}");
    assert!(!again.stdout.contains("Configuring"), "a no-op: {again}");
}

#[test]
fn a_template_edit_reconfigures_that_component_alone() {
    let d = deployed();
    d.write("components/web/index.html.in", "<h1>{{ greeting }}</h1>\n");

    let out = d.tack(&["local", "dev", "--explain"]).success();

    assert!(
        out.stdout
            .contains("Configuring 1 of 4 components (changed: web)"),
        "{out}"
    );
    assert_eq!(out.updated(), set(&["Web > File(index.html)"]), "{out}");
    assert_eq!(d.read("work/web/index.html"), "<h1>hello</h1>\n");
}

#[test]
fn a_dry_run_of_a_part_writes_nothing() {
    let d = deployed();
    d.write(
        "environments/dev.cfg",
        &format!("{ENV}\n[component:web]\ngreeting = hi\n"),
    );
    let before = d.snapshot();

    let out = d.tack(&["local", "dev", "--dry-run"]).success();

    assert_eq!(
        out.would_update(),
        set(&["Web > File(index.html)"]),
        "{out}"
    );
    assert!(before.changed(&d.snapshot()).is_empty());
    let out = d.tack(&["local", "dev"]).success();
    assert_eq!(out.updated(), set(&["Web > File(index.html)"]), "{out}");
}

#[test]
fn a_new_resource_takes_the_full_path_and_says_why() {
    let d = deployed();
    d.write(
        "components/tools/component.cfg",
        "[file:motd]\ncontent = tools\n\n[file:extra]\ncontent = more\n",
    );

    let out = d.tack(&["local", "dev", "--explain"]).success();

    assert!(
        out.stdout.contains(
            "Configuring every component: `tools` has other resources or targets than before"
        ),
        "{out}"
    );
    assert_eq!(out.updated(), set(&["Tools > File(extra)"]), "{out}");
}

#[test]
fn another_requirement_takes_the_full_path() {
    let d = deployed();
    d.write(
        "components/web/component.cfg",
        "[attributes]\ngreeting = hello\n\n[require:database]\n\n\
         [file:index.html]\nsource = index.html.in\n",
    );
    d.write(
        "components/web/index.html.in",
        "{% for db in database %}{{ db.url }}{% endfor %}\n",
    );

    let out = d.tack(&["local", "dev", "--explain"]).success();

    assert!(
        out.stdout
            .contains("Configuring every component: `web` provides or requires other keys"),
        "{out}"
    );
    assert_eq!(
        d.read("work/web/index.html"),
        "postgresql://localhost:5432/app\n"
    );
}

#[test]
fn a_changed_host_list_takes_the_full_path() {
    let d = deployed();
    d.write(
        "environments/dev.cfg",
        "[hosts]\nlocalhost = db, app, web\n",
    );

    let out = d.tack(&["local", "dev", "--explain"]).success();

    assert!(
        out.stdout.contains(
            "Configuring every component: the settings or hosts of `environments/dev.cfg` changed"
        ),
        "{out}"
    );
    assert!(
        out.stdout
            .contains("No longer configured Tools > File(motd): "),
        "{out}"
    );
}

#[test]
fn an_error_in_the_part_is_reported_as_a_full_run_reports_it() {
    let d = deployed();
    d.write(
        "environments/dev.cfg",
        &format!("{ENV}\n[component:web]\ncolour = red\n"),
    );
    let before = d.snapshot();

    let out = d.tack(&["local", "dev"]);

    assert_eq!(out.code, 2, "{out}");
    assert!(
        out.stderr.contains(
            "environments/dev.cfg:5 [component:web] colour: component `web` has no attribute `colour`"
        ),
        "{out}"
    );
    assert!(before.changed(&d.snapshot()).is_empty(), "nothing written");
}

#[test]
fn a_change_to_a_component_on_a_host_not_deployed_takes_the_full_path() {
    let d = Deployment::new()
        .env("dev", "[hosts]\nfront = app\nback = db\n")
        .component(
            "db",
            "
            [attributes]
            port = 5432

            [provide:database]
            url = postgresql://{{ host }}:{{ port }}/app
            ",
        )
        .component(
            "app",
            "
            [require:database]
            scope = environment

            [file:app.conf]
            content = {% for db in database %}{{ db.url }}{% endfor %}
            ",
        );
    d.tack(&["local", "dev", "--host", "front"]).success();
    d.replace("components/db/component.cfg", "5432", "6000");

    let out = d
        .tack(&["local", "dev", "--host", "front", "--explain"])
        .success();

    assert!(
        out.stdout.contains(
            "Configuring every component: `db` changed, and no host this run deploys has it"
        ),
        "{out}"
    );
    assert_eq!(d.read("work/app/app.conf"), "postgresql://back:6000/app\n");
}

/// A directory never deployed says so, not that the last deploy failed.
#[test]
fn a_directory_never_deployed_says_so() {
    let d = Deployment::new()
        .env("dev", "[hosts]\nlocalhost = app\n")
        .component("app", "[file:a]\ncontent = a\n");
    let out = d.tack(&["explain", "dev"]).success();
    assert!(
        out.stdout
            .starts_with("Configuring every component: `dev` was never deployed here\n"),
        "{out}"
    );
}
