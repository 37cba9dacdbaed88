//! Bad input, one test per mistake: tack refuses it before touching
//! anything, exits with 2, and says on stderr which file, line and section
//! are at fault. A deployment never deployed gets no `work/` and no
//! `.tack/`; one deployed before is left exactly as it was.

use crate::support::{set, Deployment, Output};

/// A deployment of the single component `app` on localhost.
fn app(component_cfg: &str) -> Deployment {
    Deployment::new()
        .env("dev", "[hosts]\nlocalhost = app\n")
        .component("app", component_cfg)
}

/// Runs `tack ARGS` and asserts it was refused with every one of
/// `needles` on stderr, and nothing created.
#[track_caller]
fn refused(d: &Deployment, args: &[&str], needles: &[&str]) -> Output {
    let out = d.tack(args);
    assert_eq!(out.code, 2, "{out}");
    assert!(out.stderr.starts_with("error: "), "{out}");
    for needle in needles {
        assert!(
            out.stderr.contains(needle),
            "stderr lacks `{needle}`\n{out}"
        );
    }
    assert_eq!(out.updated(), set(&[]), "{out}");
    assert!(!d.exists("work"), "work/ was created\n{out}");
    assert!(!d.exists(".tack"), ".tack/ was created\n{out}");
    out
}

#[test]
fn malformed_section_header() {
    let d = app("
        [attributes]
        port = 1

        [broken
        x = 1

        [file:a]
        content = a
        ");
    refused(
        &d,
        &["local", "dev"],
        &["components/app/component.cfg:4", "[broken"],
    );
}

#[test]
fn unterminated_section_header_at_the_end() {
    let d = app("
        [attributes]
        port = 1
        [broken
        ");
    refused(
        &d,
        &["local", "dev"],
        &["components/app/component.cfg:3", "[broken"],
    );
}

#[test]
fn unknown_section_kind() {
    let d = app("
        [attributes]
        port = 1

        [frobnicate:x]
        ");
    refused(
        &d,
        &["local", "dev"],
        &[
            "components/app/component.cfg:4 [frobnicate:x]",
            "unknown section kind",
        ],
    );
}

#[test]
fn unknown_key_in_a_section() {
    let d = app("
        [file:a]
        content = a
        mdoe = 0644
        ");
    refused(
        &d,
        &["local", "dev"],
        &[
            "components/app/component.cfg:3 [file:a] mdoe",
            "unknown key `mdoe`",
        ],
    );
}

#[test]
fn template_syntax_error() {
    let d = app("[file:app.ini]\n").source(
        "app",
        "app.ini",
        "
        ok = 1
        {% if %}
        x = 2
        {% endif %}
        ",
    );
    refused(
        &d,
        &["local", "dev"],
        &["components/app/app.ini:2", "syntax error"],
    );
}

#[test]
fn undefined_template_variable() {
    let d = app("
        [attributes]
        port = 5432

        [file:app.ini]
        ")
    .source(
        "app",
        "app.ini",
        "
        host = localhost
        port = {{ prot }}
        ",
    );
    let out = refused(
        &d,
        &["local", "dev"],
        &["components/app/app.ini:2", "`prot`"],
    );
    assert!(out.stderr.contains("undefined"), "{out}");
}

#[test]
fn missing_source_file() {
    let d = app("
        [attributes]
        port = 1

        [file:x.conf]
        ");
    refused(
        &d,
        &["local", "dev"],
        &[
            "components/app/component.cfg:4 [file:x.conf]",
            "components/app/x.conf",
        ],
    );
}

#[test]
fn require_without_provider() {
    let d = app("
        [attributes]
        port = 1

        [require:database]
        ");
    refused(
        &d,
        &["local", "dev"],
        &[
            "components/app/component.cfg:4 [require:database]",
            "`database`",
        ],
    );
}

#[test]
fn provide_require_cycle() {
    let d = Deployment::new()
        .env("dev", "[hosts]\nlocalhost = a, b\n")
        .component(
            "a",
            "
            [provide:y]
            v = 1

            [require:x]
            ",
        )
        .component(
            "b",
            "
            [provide:x]
            v = 1

            [require:y]
            ",
        );
    refused(&d, &["local", "dev"], &["cycle", "`a`", "`b`"]);
}

#[test]
fn path_escaping_the_work_dir() {
    let d = app("
        [file:../escape.txt]
        content = x
        ");
    refused(
        &d,
        &["local", "dev"],
        &[
            "components/app/component.cfg:1 [file:../escape.txt]",
            "escapes",
        ],
    );
}

#[test]
fn unknown_environment() {
    let d = app("[file:a]\ncontent = a\n").env("prod", "[hosts]\nlocalhost = app\n");
    refused(
        &d,
        &["local", "nope"],
        &["environments/nope.cfg", "dev, prod"],
    );
}

#[test]
fn unknown_component_in_hosts() {
    let d = app("[file:a]\ncontent = a\n").env(
        "dev",
        "
        [hosts]
        localhost = app, ghost
        ",
    );
    refused(
        &d,
        &["local", "dev"],
        &["environments/dev.cfg:2 [hosts] localhost", "`ghost`"],
    );
}

#[test]
fn override_of_an_unknown_attribute() {
    let d = app("
        [attributes]
        color = blue

        [file:a]
        content = {{ color }}
        ")
    .env(
        "dev",
        "
        [hosts]
        localhost = app

        [component:app]
        colour = red
        ",
    );
    refused(
        &d,
        &["local", "dev"],
        &["environments/dev.cfg:5 [component:app] colour", "`colour`"],
    );
}

#[test]
fn invalid_mode() {
    let d = app("
        [file:a]
        content = a
        mode = 999
        ");
    refused(
        &d,
        &["local", "dev"],
        &["components/app/component.cfg:3 [file:a] mode", "`999`"],
    );
}

#[test]
fn every_broken_component_is_reported_at_once() {
    let d = Deployment::new()
        .env("dev", "[hosts]\nlocalhost = good, a, b\n")
        .component("good", "[file:good.txt]\ncontent = fine\n")
        .component("a", "[frobnicate:x]\n")
        .component("b", "[file:b]\nmdoe = 0644\n");
    let out = refused(
        &d,
        &["local", "dev"],
        &[
            "components/a/component.cfg:1 [frobnicate:x]",
            "components/b/component.cfg:2 [file:b] mdoe",
        ],
    );
    assert_eq!(out.stderr.matches("error: ").count(), 2, "{out}");
}

#[test]
fn bad_edit_after_a_deploy_changes_nothing() {
    let d = app("
        [attributes]
        port = 5432

        [file:app.ini]

        [file:motd]
        content = hello
        ")
    .source("app", "app.ini", "port = {{ port }}\n");
    d.tack(&["local", "dev"]).success();
    let before = d.snapshot();

    d.replace("components/app/app.ini", "{{ port }}", "{{ prot }}");
    d.replace("components/app/component.cfg", "hello", "hello again");
    let out = d.tack(&["local", "dev"]);

    assert_eq!(out.code, 2, "{out}");
    assert!(out.stderr.contains("components/app/app.ini:1"), "{out}");
    assert!(out.stderr.contains("`prot`"), "{out}");
    assert_eq!(out.updated(), set(&[]), "{out}");
    assert_eq!(before.changed(&d.snapshot()), set(&[]));
    assert!(!before.is_empty());
}

/// A template that loops inside one builtin (fuel does not see it) is
/// stopped by the watchdog with an error naming it, and nothing is written.
#[test]
fn a_runaway_template_is_stopped_with_an_error() {
    let deployment = Deployment::new()
        .env("dev", "[hosts]\nlocalhost = app\n")
        .component("app", "[file:x.txt]\ncontent = {{ () * 99999999999 }}\n");
    let (output, _) = deployment.tack_with_env(&["local", "dev"], &[("TACK_RENDER_TIMEOUT", "1")]);
    assert_eq!(output.code, 2, "{output}");
    assert!(
        output.stderr.contains("components/app/component.cfg:2 [file:x.txt] content: template did not finish rendering within 1s"),
        "{output}"
    );
    assert!(!deployment.exists("work"), "nothing is written");
    assert!(!deployment.exists(".tack"), "nothing is written");
}

/// `one = true` wants exactly one provider: two are an error naming both.
#[test]
fn a_key_provided_twice_where_one_is_expected() {
    let deployment = Deployment::new()
        .env("dev", "[hosts]\nlocalhost = app, db1, db2\n")
        .component("db1", "[provide:database]\nurl = one\n")
        .component("db2", "[provide:database]\nurl = two\n")
        .component(
            "app",
            "[require:database]\none = true\n\n[file:a]\ncontent = {{ database.url }}\n",
        );
    let output = deployment.tack(&["local", "dev"]);
    assert_eq!(output.code, 2, "{output}");
    assert!(
        output
            .stderr
            .contains("components/app/component.cfg:1 [require:database]"),
        "{output}"
    );
    assert!(
        output
            .stderr
            .contains("requires one `database`, but 2 provide it"),
        "{output}"
    );
    assert!(
        output.stderr.contains("components/db1/component.cfg"),
        "{output}"
    );
    assert!(
        output.stderr.contains("components/db2/component.cfg"),
        "{output}"
    );
    assert!(!deployment.exists("work") && !deployment.exists(".tack"));
}

#[test]
fn a_host_name_that_is_not_one() {
    let d = Deployment::new()
        .env("dev", "[hosts]\nlocalhost = app\n../elsewhere = app\n")
        .component("app", "[file:a]\ncontent = a\n");
    refused(
        &d,
        &["local", "dev"],
        &[
            "environments/dev.cfg:3 [hosts] ../elsewhere",
            "is not a host name",
        ],
    );
}

#[test]
fn one_path_deployed_by_two_hosts_of_this_machine() {
    let d = Deployment::new()
        .env("dev", "[hosts]\nfront = app\nback = app\n")
        .component("app", "[file:app.conf]\ncontent = a\n");
    refused(
        &d,
        &["local", "dev"],
        &[
            "components/app/component.cfg",
            "App > File(app.conf) on host `front` and App > File(app.conf) on host `back` both deploy",
            "connect_method = local deploys every host to this machine",
        ],
    );
}

/// A line without `=` is an error at its own line; before, rust-ini read it
/// as the start of a key running on to the next `=`, and the section after
/// it vanished without a word.
#[test]
fn a_line_without_equals_names_its_own_line() {
    let d = app("
        [attributes]
        x = 1
        this line has no equals sign

        [file:f.txt]
        content = {{ x }}
        ");
    refused(
        &d,
        &["local", "dev"],
        &[
            "components/app/component.cfg:3 [attributes]: line `this line has no equals sign` has no `=`",
        ],
    );
    let d = app("[file:f.txt]\ncontent = x\n").env(
        "dev",
        "
        [hosts]
        localhost = app
        connect_method local

        [settings]
        ",
    );
    refused(
        &d,
        &["local", "dev"],
        &["environments/dev.cfg:3 [hosts]: line `connect_method local` has no `=`"],
    );
}

/// `--force` and `tack explain ENV NODE` with a name that matches no node
/// id or component are refused with the close matches, before and after a
/// deploy (the no-op path must not explain nothing and exit 0).
#[test]
fn a_node_name_that_matches_nothing_lists_close_matches() {
    let d = app("[file:tick.sh]\ncontent = tick\n");
    let hint = "did you mean `app/file:tick.sh`?";
    refused(
        &d,
        &["local", "dev", "--force", "app/file:tikc.sh"],
        &[
            "--force `app/file:tikc.sh` matches no node id or component",
            hint,
        ],
    );
    refused(
        &d,
        &["explain", "dev", "app/file:tick"],
        &["NODE `app/file:tick` matches no node id or component", hint],
    );
    d.tack(&["local", "dev"]).success();
    let before = d.snapshot();
    for args in [
        &["local", "dev", "--force", "nope"][..],
        &["explain", "dev", "nope"][..],
    ] {
        let out = d.tack(args);
        assert_eq!(out.code, 2, "{out}");
        assert!(
            out.stderr
                .contains("`nope` matches no node id or component (components: app)"),
            "{out}"
        );
        assert_eq!(before.changed(&d.snapshot()), set(&[]), "{out}");
    }
}

/// A byte that is not UTF-8 is named by its line and column.
#[test]
fn a_byte_that_is_not_utf8_names_its_line() {
    let d = app("[file:a]\ncontent = a\n");
    std::fs::write(
        d.path("components/app/component.cfg"),
        b"[file:a]\ncontent = caf\xe9\n",
    )
    .unwrap();
    refused(
        &d,
        &["local", "dev"],
        &["components/app/component.cfg:2: is not UTF-8 text: byte 0xe9 at column 14"],
    );
}

/// Two sections deploying one path: the error points at the second and
/// names the first, each with its line.
#[test]
fn a_path_deployed_twice_names_both_lines() {
    let d = app("
        [file:app.conf]
        content = a

        [file:./app.conf]
        content = b
        ");
    refused(
        &d,
        &["local", "dev"],
        &["components/app/component.cfg:4 [file:./app.conf]: \
           App > File(app.conf) (components/app/component.cfg:1 [file:app.conf]) \
           and App > File(./app.conf) both deploy"],
    );
}

/// An empty component.cfg is most likely a file not written yet: deploying
/// nothing for it and exiting 0 would look like success.
#[test]
fn an_empty_component_is_refused() {
    let d = app("; nothing here yet\n");
    refused(
        &d,
        &["local", "dev"],
        &["components/app/component.cfg: has no sections"],
    );
}

#[test]
fn jobs_zero_is_refused() {
    let d = app("[file:a]\ncontent = a\n");
    refused(
        &d,
        &["local", "dev", "--jobs", "0"],
        &["'--jobs <N>': must be at least 1"],
    );
}

#[test]
fn secrets_commands_refuse_names_that_leave_the_secrets_directory() {
    let d = crate::support::Deployment::new().env("dev", "[hosts]\nlocalhost = app\n");
    for args in [
        &["secrets", "edit", "../../x"][..],
        &["secrets", "show", "dev", "--file", "../x"],
        &["secrets", "reencrypt", "a/b"],
    ] {
        let output = d.tack(args);
        assert_eq!(output.code, 2, "{output}");
        assert!(output.stderr.contains("invalid value"), "{output}");
    }
    assert!(!d.exists("secrets"), "nothing written");
}
