//! Secrets encrypted with age: read and written interchangeably with
//! Debian's `age` CLI, refused before anything is written when no identity
//! opens them, and never in clear anywhere but in the deployed files that
//! render them.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::support::{files_under, set, Deployment, Output};

const PASSWORD: &str = "hunter2-SECRET-4711";

/// Runs a program the tests rely on (`age`, `age-keygen`, `ssh-keygen`),
/// with `stdin` as its input, and returns its stdout.
#[track_caller]
fn program(name: &str, args: &[&str], stdin: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut child = Command::new(name)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("run `{name}` (apt-get install age openssh-client): {e}"));
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{name} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// A new age identity in `dir/NAME.key`; returns its path and public key.
fn age_key(dir: &Path, name: &str) -> (PathBuf, String) {
    let path = dir.join(format!("{name}.key"));
    program("age-keygen", &["-o", path.to_str().unwrap()], b"");
    let public = program("age-keygen", &["-y", path.to_str().unwrap()], b"");
    (path, String::from_utf8(public).unwrap().trim().to_string())
}

/// Encrypts `clear` with the age CLI to the deployment's recipients.
fn age_encrypt(d: &Deployment, file: &str, clear: &str) {
    let recipients = d.path("secrets/recipients.txt");
    let sealed = program(
        "age",
        &["-R", recipients.to_str().unwrap()],
        clear.as_bytes(),
    );
    std::fs::create_dir_all(d.path(file).parent().unwrap()).unwrap();
    std::fs::write(d.path(file), sealed).unwrap();
}

/// The component `app`: a `password` secret rendered into `app.ini`, and
/// an attribute rendered into a file that is not secret.
fn app() -> Deployment {
    Deployment::new()
        .env("dev", "[hosts]\nlocalhost = app\n")
        .component(
            "app",
            "
            [attributes]
            port = 8080

            [secrets]
            password = only-a-default

            [file:app.ini]
            content = password = {{ password }}

            [file:port]
            content = {{ port }}
            ",
        )
}

/// An `app` whose dev password is in `secrets/dev.cfg.age`, encrypted by
/// the age CLI to a new identity; returns the identity's path.
fn app_with_secret(keys: &Path) -> (Deployment, PathBuf) {
    let d = app();
    let (identity, public) = age_key(keys, "me");
    d.write("secrets/recipients.txt", &format!("{public}\n"));
    age_encrypt(
        &d,
        "secrets/dev.cfg.age",
        &format!("[component:app]\npassword = {PASSWORD}\n"),
    );
    (d, identity)
}

/// `tack ARGS` with `identity` in `TACK_AGE_IDENTITY` (or none) and a
/// `HOME` without ssh keys.
fn tack_as(d: &Deployment, args: &[&str], identity: Option<&Path>, home: &Path) -> Output {
    let identity = identity.map_or(String::new(), |p| p.display().to_string());
    d.tack_with_env(
        args,
        &[
            ("TACK_AGE_IDENTITY", identity.as_str()),
            ("HOME", home.to_str().unwrap()),
        ],
    )
    .0
}

fn keys_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("tack-keys-")
        .tempdir()
        .unwrap()
}

#[test]
fn tack_reads_what_the_age_cli_encrypted() {
    let keys = keys_dir();
    let (d, identity) = app_with_secret(keys.path());
    tack_as(&d, &["local", "dev"], Some(&identity), keys.path()).success();
    assert_eq!(
        d.read("work/app/app.ini"),
        format!("password = {PASSWORD}\n")
    );
    assert_eq!(d.mode("work/app/app.ini"), 0o600);
    assert_eq!(d.read("work/app/port"), "8080\n");
}

#[test]
fn the_age_cli_reads_what_tack_secrets_edit_encrypted() {
    let keys = keys_dir();
    let d = app();
    let (identity, public) = age_key(keys.path(), "me");
    d.write("secrets/recipients.txt", &format!("# the team\n{public}\n"));
    let log = keys.path().join("editor.log");
    let editor = editor_script(
        keys.path(),
        &format!(
            "echo \"$1\" > {log}\nprintf '[component:app]\\npassword = {PASSWORD}\\n' > \"$1\"",
            log = log.display()
        ),
    );
    let out = d
        .tack_with_env(
            &["secrets", "edit", "dev"],
            &[("EDITOR", editor.to_str().unwrap()), ("VISUAL", "")],
        )
        .0
        .success();
    assert!(out.stdout.contains("secrets/dev.cfg.age"), "{out}");
    let sealed = d.path("secrets/dev.cfg.age");
    let clear = program(
        "age",
        &[
            "-d",
            "-i",
            identity.to_str().unwrap(),
            sealed.to_str().unwrap(),
        ],
        b"",
    );
    assert_eq!(
        String::from_utf8(clear).unwrap(),
        format!("[component:app]\npassword = {PASSWORD}\n")
    );
    // The clear copy the editor saw is gone, and so is its directory.
    let edited = PathBuf::from(std::fs::read_to_string(&log).unwrap().trim());
    assert!(!edited.exists(), "{} is left", edited.display());
    assert!(!edited.parent().unwrap().exists());
    assert_no_clear_copy(d.root(), &[]);
    // And a deploy reads it.
    tack_as(&d, &["local", "dev"], Some(&identity), keys.path()).success();
    assert_eq!(
        d.read("work/app/app.ini"),
        format!("password = {PASSWORD}\n")
    );
}

#[test]
fn an_editor_that_fails_leaves_the_secrets_and_no_clear_copy() {
    let keys = keys_dir();
    let (d, identity) = app_with_secret(keys.path());
    let before = std::fs::read(d.path("secrets/dev.cfg.age")).unwrap();
    let log = keys.path().join("editor.log");
    let editor = editor_script(
        keys.path(),
        &format!(
            "echo \"$1\" > {}\necho changed >> \"$1\"\nexit 3",
            log.display()
        ),
    );
    let out = d
        .tack_with_env(
            &["secrets", "edit", "dev"],
            &[
                ("EDITOR", editor.to_str().unwrap()),
                ("VISUAL", ""),
                ("TACK_AGE_IDENTITY", identity.to_str().unwrap()),
            ],
        )
        .0;
    assert_eq!(out.code, 2, "{out}");
    assert!(!out.stderr.contains(PASSWORD), "{out}");
    let edited = PathBuf::from(std::fs::read_to_string(&log).unwrap().trim());
    assert!(!edited.parent().unwrap().exists(), "{out}");
    assert_eq!(
        std::fs::read(d.path("secrets/dev.cfg.age")).unwrap(),
        before
    );
}

/// An executable `$EDITOR` running `body` with the file to edit as `$1`.
fn editor_script(dir: &Path, body: &str) -> PathBuf {
    let path = dir.join("editor.sh");
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// No file below `root` holds the password, except the `allowed` ones.
#[track_caller]
fn assert_no_clear_copy(root: &Path, allowed: &[&str]) {
    for file in files_under(root) {
        let relative = file
            .strip_prefix(root)
            .unwrap()
            .to_str()
            .unwrap()
            .to_string();
        if allowed.contains(&relative.as_str()) {
            continue;
        }
        let bytes = std::fs::read(&file).unwrap_or_default();
        let text = String::from_utf8_lossy(&bytes);
        assert!(
            !text.contains(PASSWORD) && !text.contains(&PASSWORD[..12]),
            "`{relative}` holds the secret"
        );
    }
}

#[track_caller]
fn refused_before_writing(out: &Output, d: &Deployment, needles: &[&str]) {
    assert_eq!(out.code, 2, "{out}");
    for needle in needles {
        assert!(
            out.stderr.contains(needle),
            "stderr lacks `{needle}`\n{out}"
        );
    }
    assert!(!out.stderr.contains(PASSWORD), "{out}");
    assert_eq!(out.updated(), set(&[]), "{out}");
    assert!(!d.exists("work"), "work/ was created\n{out}");
    assert!(!d.exists(".tack"), ".tack/ was created\n{out}");
}

#[test]
fn no_identity_is_refused_naming_the_file_and_what_was_tried() {
    let keys = keys_dir();
    let (d, _) = app_with_secret(keys.path());
    let out = tack_as(&d, &["local", "dev"], None, keys.path());
    refused_before_writing(
        &out,
        &d,
        &[
            "secrets/dev.cfg.age",
            "no identity fits",
            ".ssh/id_ed25519` (missing)",
            ".ssh/id_rsa` (missing)",
            "TACK_AGE_IDENTITY",
        ],
    );
}

#[test]
fn a_wrong_identity_is_refused() {
    let keys = keys_dir();
    let (d, _) = app_with_secret(keys.path());
    let (other, _) = age_key(keys.path(), "someone-else");
    let out = tack_as(&d, &["local", "dev"], Some(&other), keys.path());
    refused_before_writing(
        &out,
        &d,
        &[
            "secrets/dev.cfg.age",
            "no identity fits",
            &format!("TACK_AGE_IDENTITY `{}`", other.display()),
        ],
    );
    // `--identity` names one as well.
    let out = tack_as(
        &d,
        &["local", "dev", "--identity", other.to_str().unwrap()],
        None,
        keys.path(),
    );
    refused_before_writing(&out, &d, &[&format!("--identity `{}`", other.display())]);
}

#[test]
fn a_tampered_file_is_refused() {
    let keys = keys_dir();
    let (d, identity) = app_with_secret(keys.path());
    let mut sealed = std::fs::read(d.path("secrets/dev.cfg.age")).unwrap();
    let last = sealed.len() - 5;
    sealed[last] ^= 1;
    std::fs::write(d.path("secrets/dev.cfg.age"), sealed).unwrap();
    let out = tack_as(&d, &["local", "dev"], Some(&identity), keys.path());
    refused_before_writing(&out, &d, &["secrets/dev.cfg.age", "damaged"]);
}

#[test]
fn a_changed_secret_redeploys_its_file_and_explain_names_it_without_the_value() {
    let keys = keys_dir();
    let (d, identity) = app_with_secret(keys.path());
    tack_as(&d, &["local", "dev"], Some(&identity), keys.path()).success();
    age_encrypt(
        &d,
        "secrets/dev.cfg.age",
        "[component:app]\npassword = another-SECRET-0815\n",
    );
    let out = tack_as(
        &d,
        &["local", "dev", "--explain"],
        Some(&identity),
        keys.path(),
    )
    .success();
    assert_eq!(out.updated(), set(&["App > File(app.ini)"]), "{out}");
    assert!(
        out.stdout
            .contains("secret password (secrets/dev.cfg.age): changed"),
        "{out}"
    );
    for shown in [PASSWORD, "another-SECRET", "keyed", "blake3"] {
        assert!(!out.stdout.contains(shown), "`{shown}` shown\n{out}");
    }
    assert_eq!(
        d.read("work/app/app.ini"),
        "password = another-SECRET-0815\n"
    );
    // The change reconfigured what reads secrets, not every component, and
    // the next run is a no-op on the fast path.
    assert!(
        out.stdout
            .contains("Configuring 1 of 1 components (changed: app)"),
        "{out}"
    );
    let out = tack_as(
        &d,
        &["local", "dev", "--explain"],
        Some(&identity),
        keys.path(),
    )
    .success();
    assert!(!out.stdout.contains("Configuring"), "{out}");
    assert_eq!(out.updated(), set(&[]), "{out}");
}

#[test]
fn a_secret_file_is_deployed_with_source_secret() {
    let keys = keys_dir();
    let (d, identity) = app_with_secret(keys.path());
    d.write(
        "components/app/component.cfg",
        "[secrets]\npassword = x\n\n[file:tls.key]\nsource = secret:tls\n",
    );
    age_encrypt(&d, "secrets/dev/tls.age", "-----KEY {{ not a template }}\n");
    tack_as(&d, &["local", "dev"], Some(&identity), keys.path()).success();
    assert_eq!(
        d.read("work/app/tls.key"),
        "-----KEY {{ not a template }}\n"
    );
    assert_eq!(d.mode("work/app/tls.key"), 0o600);
}

#[test]
fn a_key_the_component_does_not_declare_is_an_error_naming_it() {
    let keys = keys_dir();
    let (d, identity) = app_with_secret(keys.path());
    age_encrypt(
        &d,
        "secrets/dev.cfg.age",
        &format!("[component:app]\npasword = {PASSWORD}\n"),
    );
    let out = tack_as(&d, &["local", "dev"], Some(&identity), keys.path());
    refused_before_writing(
        &out,
        &d,
        &[
            "secrets/dev.cfg.age:2 [component:app] pasword",
            "component `app` has no secret `pasword` (its [secrets]: password)",
        ],
    );
}

#[test]
fn ssh_identities_decrypt() {
    let home = keys_dir();
    std::fs::create_dir(home.path().join(".ssh")).unwrap();
    let key = home.path().join(".ssh/id_ed25519");
    program(
        "ssh-keygen",
        &["-q", "-t", "ed25519", "-N", "", "-f", key.to_str().unwrap()],
        b"",
    );
    let public = std::fs::read_to_string(home.path().join(".ssh/id_ed25519.pub")).unwrap();
    let d = app();
    d.write("secrets/recipients.txt", &public);
    age_encrypt(
        &d,
        "secrets/dev.cfg.age",
        &format!("[component:app]\npassword = {PASSWORD}\n"),
    );
    // Found in ~/.ssh without being named.
    tack_as(&d, &["local", "dev"], None, home.path()).success();
    assert_eq!(
        d.read("work/app/app.ini"),
        format!("password = {PASSWORD}\n")
    );
    // And tack encrypts to an ssh recipient the age CLI decrypts with the key.
    let editor = editor_script(home.path(), "sed -i 's/4711/4712/' \"$1\"");
    d.tack_with_env(
        &["secrets", "edit", "dev"],
        &[
            ("EDITOR", editor.to_str().unwrap()),
            ("VISUAL", ""),
            ("HOME", home.path().to_str().unwrap()),
            ("TACK_AGE_IDENTITY", ""),
        ],
    )
    .0
    .success();
    let clear = program(
        "age",
        &[
            "-d",
            "-i",
            key.to_str().unwrap(),
            d.path("secrets/dev.cfg.age").to_str().unwrap(),
        ],
        b"",
    );
    assert!(String::from_utf8(clear)
        .unwrap()
        .contains("hunter2-SECRET-4712"));
}

#[test]
fn reencrypt_lets_a_new_recipient_read() {
    let keys = keys_dir();
    let (d, identity) = app_with_secret(keys.path());
    let (newcomer, public) = age_key(keys.path(), "newcomer");
    let mut recipients = d.read("secrets/recipients.txt");
    recipients.push_str(&public);
    d.write("secrets/recipients.txt", &recipients);
    let out = tack_as(&d, &["local", "dev"], Some(&newcomer), keys.path());
    assert_eq!(out.code, 2, "{out}");
    let out = tack_as(&d, &["secrets", "reencrypt"], Some(&identity), keys.path()).success();
    assert!(
        out.stdout.contains("re-encrypted secrets/dev.cfg.age"),
        "{out}"
    );
    let out = tack_as(
        &d,
        &["secrets", "show", "dev"],
        Some(&newcomer),
        keys.path(),
    )
    .success();
    assert_eq!(
        out.stdout,
        format!("[component:app]\npassword = {PASSWORD}\n")
    );
}

/// Everything one run printed, for a search.
fn printed(out: &Output) -> String {
    format!("{}\n{}", out.stdout, out.stderr)
}

#[test]
fn a_secret_is_nowhere_but_in_the_deployed_files_that_render_it() {
    let keys = keys_dir();
    let (d, identity) = app_with_secret(keys.path());
    d.write(
        "components/app/component.cfg",
        &crate::support::unindent(
            r#"
            [secrets]
            password = only-a-default

            [file:app.ini]
            content = password = {{ password }}

            [command:check]
            env = PW={{ password }}
            run = test -n "$PW" && mkdir -p out && echo "$PW" > out/pw
            outputs = out
            cache = true
            "#,
        ),
    );
    let run = |args: &[&str]| tack_as(&d, args, Some(&identity), keys.path());
    let mut seen = String::new();
    for args in [
        &["local", "dev", "--explain", "--diff"][..],
        &["explain", "dev", "--diff"],
        &["graph", "dev"],
    ] {
        seen.push_str(&printed(&run(args).success()));
    }
    age_encrypt(
        &d,
        "secrets/dev.cfg.age",
        &format!("[component:app]\npassword = {PASSWORD}-2\n"),
    );
    for args in [
        &["local", "dev", "--dry-run", "--explain", "--diff"][..],
        &["explain", "dev", "--diff"],
        &["local", "dev", "--format", "json", "--explain"],
    ] {
        seen.push_str(&printed(&run(args).success()));
    }
    assert!(
        seen.contains("secret password (secrets/dev.cfg.age): changed"),
        "{seen}"
    );
    assert_eq!(d.read("work/app/out/pw"), format!("{PASSWORD}-2\n"));
    // A step that fails after printing the secret it was given.
    d.write(
        "components/app/component.cfg",
        &crate::support::unindent(
            r#"
            [secrets]
            password = only-a-default

            [command:fail]
            env = PW={{ password }}
            run = echo "the password is $PW"; exit 1
            "#,
        ),
    );
    let out = run(&["local", "dev", "--explain"]);
    assert_eq!(out.code, 1, "{out}");
    assert!(
        out.stderr.contains("(secret)") || out.stdout.contains("(secret)"),
        "{out}"
    );
    seen.push_str(&printed(&out));
    assert!(!seen.contains(PASSWORD), "printed:\n{seen}");
    // Neither the value nor the plain hash a short password is guessed
    // from is kept: only the deployed file and what the step made hold it.
    assert_no_clear_copy(d.root(), &["work/app/app.ini", "work/app/out/pw"]);
    for secret in [PASSWORD.to_string(), format!("{PASSWORD}-2")] {
        let plain = blake3::hash(secret.as_bytes()).to_hex();
        for file in files_under(&d.path(".tack")) {
            let text = String::from_utf8_lossy(&std::fs::read(&file).unwrap()).into_owned();
            assert!(
                !text.contains(&plain[..12]),
                "{} holds a plain hash",
                file.display()
            );
        }
    }
    assert_eq!(d.mode(".tack/secret-hash.key"), 0o600);
    assert_eq!(d.mode("work/app/app.ini"), 0o600);
}

/// A deployment whose `app` renders the password (from the cfg file's
/// `[secrets]`) into `field`; tack must refuse it without printing it.
fn refused_without_the_value(resources: &str, needles: &[&str]) {
    let d = Deployment::new()
        .env("dev", "[hosts]\nlocalhost = app\n")
        .component(
            "app",
            &format!("[secrets]\npassword = {PASSWORD}\n\n{resources}"),
        );
    let out = d.tack(&["local", "dev"]);
    refused_before_writing(&out, &d, needles);
}

#[test]
fn an_env_line_that_is_not_name_value_is_refused_without_the_secret() {
    refused_without_the_value(
        "[command:c]\nrun = true\nenv = PW {{ password }}\n",
        &["is not NAME=VALUE"],
    );
}

#[test]
fn a_reload_signal_rendering_a_secret_is_refused_without_it() {
    refused_without_the_value(
        "[service:s]\nstart = sleep 1\npidfile = s.pid\nreload = signal:{{ password }}\n",
        &["unknown signal"],
    );
}

#[test]
fn an_include_named_by_a_secret_is_refused_without_it() {
    refused_without_the_value(
        "[file:f]\ncontent = {% include password %}\n",
        &["components/app/component.cfg"],
    );
}

#[test]
fn a_command_line_rendering_a_secret_is_refused() {
    refused_without_the_value(
        "[command:c]\nrun = test -n '{{ password }}'\n",
        &[
            "components/app/component.cfg:5 [command:c] run",
            "`run` renders the secret `password`",
            "pass it in the environment",
        ],
    );
    refused_without_the_value(
        "[service:s]\nstart = sleep 10 {{ password }}\npidfile = s.pid\n",
        &["`start` renders the secret `password`"],
    );
}

#[test]
fn an_edit_naming_an_undeclared_secret_is_discarded() {
    let keys = keys_dir();
    let (d, identity) = app_with_secret(keys.path());
    let before = std::fs::read(d.path("secrets/dev.cfg.age")).unwrap();
    let editor = editor_script(keys.path(), "sed -i 's/^password/pasword/' \"$1\"");
    let out = d
        .tack_with_env(
            &["secrets", "edit", "dev"],
            &[
                ("EDITOR", editor.to_str().unwrap()),
                ("VISUAL", ""),
                ("TACK_AGE_IDENTITY", identity.to_str().unwrap()),
            ],
        )
        .0;
    assert_eq!(out.code, 2, "{out}");
    assert!(
        out.stderr.contains(
            "secrets/dev.cfg.age:2 [component:app] pasword: component `app` has no secret `pasword`"
        ),
        "{out}"
    );
    assert!(!out.stderr.contains(PASSWORD), "{out}");
    assert_eq!(
        std::fs::read(d.path("secrets/dev.cfg.age")).unwrap(),
        before
    );
}

#[test]
fn tack_age_identity_may_hold_the_identity_itself_as_a_ci_secret_does() {
    let keys = keys_dir();
    let (d, identity) = app_with_secret(keys.path());
    let key = std::fs::read_to_string(&identity).unwrap();
    let out = d
        .tack_with_env(
            &["local", "dev"],
            &[
                ("TACK_AGE_IDENTITY", key.as_str()),
                ("HOME", keys.path().to_str().unwrap()),
            ],
        )
        .0
        .success();
    assert!(!printed(&out).contains("AGE-SECRET-KEY"), "{out}");
    assert_eq!(
        d.read("work/app/app.ini"),
        format!("password = {PASSWORD}\n")
    );
}

#[test]
fn tack_reads_an_armored_file_of_the_age_cli() {
    let keys = keys_dir();
    let (d, identity) = app_with_secret(keys.path());
    let recipients = d.path("secrets/recipients.txt");
    let armored = program(
        "age",
        &["-a", "-R", recipients.to_str().unwrap()],
        format!("[component:app]\npassword = {PASSWORD}\n").as_bytes(),
    );
    assert!(armored.starts_with(b"-----BEGIN AGE ENCRYPTED FILE-----"));
    std::fs::write(d.path("secrets/dev.cfg.age"), armored).unwrap();
    tack_as(&d, &["local", "dev"], Some(&identity), keys.path()).success();
    assert_eq!(
        d.read("work/app/app.ini"),
        format!("password = {PASSWORD}\n")
    );
}
