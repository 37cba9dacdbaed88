//! The step cache shared between checkouts: a fresh copy restores a step's
//! outputs instead of running it (a counter file the step appends to
//! proves it did not run), a corrupt entry is reported by `tack cache
//! verify` and costs a rerun, never a wrong file, and two deploys may
//! share one cache at the same time.
//!
//! And what the cache must never do (issue 10): roll data back, hand a
//! checkout outputs that work only in another one, or restore half a step.

use std::fs;
use std::process::{Command, Stdio};

use crate::support::{files_under, Deployment};

/// A deployment whose one step is "expensive": it appends to `counter`
/// (outside every checkout) and produces `out/artifact`.
fn expensive(counter: &std::path::Path) -> Deployment {
    Deployment::new()
        .env("dev", "[hosts]\nlocalhost = build\n")
        .component(
            "build",
            &format!(
                "
                [command:make]
                run = echo ran >> {counter}; mkdir -p out/bin && echo artifact > out/artifact && printf '#!/bin/sh\\n' > out/bin/tool && chmod 755 out/bin/tool
                outputs = out
                cache = true
                ",
                counter = counter.display()
            ),
        )
}

fn runs(counter: &std::path::Path) -> usize {
    std::fs::read_to_string(counter).map_or(0, |text| text.lines().count())
}

#[test]
fn a_fresh_checkout_restores_outputs_instead_of_running() {
    let shared = tempfile::tempdir().unwrap();
    let cache = shared.path().join("cache");
    let counter = shared.path().join("counter");
    let cache_arg = cache.to_str().unwrap();

    let a = expensive(&counter);
    a.tack(&["local", "dev", "--cache-dir", cache_arg])
        .success();
    assert_eq!(runs(&counter), 1);

    let b = expensive(&counter);
    let output = b
        .tack(&["local", "dev", "--cache-dir", cache_arg])
        .success();
    assert!(
        output
            .stdout
            .contains("Restored Build > Command(make) (from cache)"),
        "{output}"
    );
    assert_eq!(runs(&counter), 1, "the step must not run again");
    assert_eq!(b.read("work/build/out/artifact"), "artifact\n");
    assert_eq!(b.mode("work/build/out/bin/tool") & 0o777, 0o755);

    // Deleting a restored output reruns the step: the record does not
    // pretend it is there, and what is left of the outputs is not tack's
    // tree any more, so it is not restored over.
    std::fs::remove_file(b.path("work/build/out/artifact")).unwrap();
    b.tack(&["local", "dev", "--cache-dir", cache_arg])
        .success();
    assert_eq!(b.read("work/build/out/artifact"), "artifact\n");
    assert_eq!(runs(&counter), 2);

    // Deleting all of them restores them: nothing is overwritten.
    std::fs::remove_dir_all(b.path("work/build/out")).unwrap();
    let output = b
        .tack(&["local", "dev", "--cache-dir", cache_arg])
        .success();
    assert!(output.stdout.contains("Restored"), "{output}");
    assert_eq!(runs(&counter), 2);

    // --no-cache-read runs the step anyway.
    let c = expensive(&counter);
    c.tack(&["local", "dev", "--cache-dir", cache_arg, "--no-cache-read"])
        .success();
    assert_eq!(runs(&counter), 3);
}

#[test]
fn a_corrupt_blob_is_reported_and_costs_a_rerun_not_a_wrong_file() {
    let shared = tempfile::tempdir().unwrap();
    let cache = shared.path().join("cache");
    let counter = shared.path().join("counter");
    let cache_arg = cache.to_str().unwrap();
    expensive(&counter)
        .tack(&["local", "dev", "--cache-dir", cache_arg])
        .success();

    // Overwrite every blob with garbage of the same length.
    let mut corrupted = 0;
    for entry in files_under(&cache.join("v1/blobs"))
        .into_iter()
        .filter(|path| !path.file_name().unwrap().to_string_lossy().starts_with('.'))
    {
        let len = std::fs::metadata(&entry).unwrap().len() as usize;
        let mut perms = std::fs::metadata(&entry).unwrap().permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o644);
        std::fs::set_permissions(&entry, perms).unwrap();
        std::fs::write(&entry, "x".repeat(len.max(1))).unwrap();
        corrupted += 1;
    }
    assert!(corrupted > 0);

    let b = expensive(&counter);
    let verify = b.tack(&["cache", "verify", "--cache-dir", cache_arg]);
    assert_ne!(verify.code, 0, "{verify}");
    assert!(verify.stdout.contains("corrupt"), "{verify}");

    let output = b
        .tack(&["local", "dev", "--cache-dir", cache_arg])
        .success();
    assert!(!output.stdout.contains("Restored"), "{output}");
    assert_eq!(runs(&counter), 2, "the step runs again");
    assert_eq!(b.read("work/build/out/artifact"), "artifact\n");
}

#[test]
fn two_deploys_share_one_cache_at_the_same_time() {
    let shared = tempfile::tempdir().unwrap();
    let cache = shared.path().join("cache");
    let counter = shared.path().join("counter");
    let (a, b) = (expensive(&counter), expensive(&counter));
    let spawn = |d: &Deployment| {
        Command::new(env!("CARGO_BIN_EXE_tack"))
            .args(["local", "dev", "--cache-dir", cache.to_str().unwrap()])
            .current_dir(d.path(""))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (first, second) = (spawn(&a), spawn(&b));
    for child in [first, second] {
        let output = child.wait_with_output().unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    assert_eq!(a.read("work/build/out/artifact"), "artifact\n");
    assert_eq!(b.read("work/build/out/artifact"), "artifact\n");
    let stats = a
        .tack(&["cache", "stats", "--cache-dir", cache.to_str().unwrap()])
        .success();
    assert!(stats.stdout.contains("1 action records"), "{stats}");
}

/// `tack cache export` and `import` draw their progress bar only on a
/// terminal: piped, stderr stays empty on success and holds only the
/// error on failure, with no bar before it.
#[test]
fn export_and_import_draw_no_progress_on_a_pipe() {
    let shared = tempfile::tempdir().unwrap();
    let cache = shared.path().join("cache");
    let cache_arg = cache.to_str().unwrap();
    let d = expensive(&shared.path().join("counter"));
    d.tack(&["local", "dev", "--cache-dir", cache_arg])
        .success();

    let archive = shared.path().join("cache.tar");
    let archive_arg = archive.to_str().unwrap();
    let out = d
        .tack(&["cache", "--cache-dir", cache_arg, "export", archive_arg])
        .success();
    assert_eq!(out.stderr, "", "{out}");
    assert!(out.stdout.starts_with("exported "), "{out}");

    let fresh = shared.path().join("fresh");
    let out = d
        .tack(&[
            "cache",
            "--cache-dir",
            fresh.to_str().unwrap(),
            "import",
            archive_arg,
        ])
        .success();
    assert_eq!(out.stderr, "", "{out}");

    let nowhere = shared.path().join("missing/dir/cache.tar");
    let out = d.tack(&[
        "cache",
        "--cache-dir",
        cache_arg,
        "export",
        nowhere.to_str().unwrap(),
    ]);
    assert_eq!(out.code, 2, "{out}");
    assert_eq!(
        out.stderr,
        format!(
            "error: cannot write `{}`: `{}` is not a directory\n",
            nowhere.display(),
            nowhere.parent().unwrap().display()
        ),
        "{out}"
    );
}

/// A migration step that appends its schema to a database the application
/// then writes to; `extra` is added to the `[command]` section.
fn migrating(extra: &[&str]) -> Deployment {
    let mut text =
        "[file:schema.sql]\n\n[command:migrate]\nrun = cat schema.sql >> data.db\n".to_string();
    for line in extra {
        text.push_str(line);
        text.push('\n');
    }
    Deployment::new()
        .env("dev", "[hosts]\nlocalhost = db\n")
        .component("db", &text)
        .source("db", "schema.sql", "create table t;\n")
}

/// Deploy; the application writes a row; edit the schema, deploy; undo the
/// edit, deploy. Returns the last deploy's output.
fn write_edit_revert(d: &Deployment) -> crate::support::Output {
    d.tack(&["local", "dev"]).success();
    let db = d.path("work/db/data.db");
    let mut rows = std::fs::read_to_string(&db).unwrap();
    rows.push_str("user row\n");
    std::fs::write(&db, rows).unwrap();
    d.write(
        "components/db/schema.sql",
        "create table t;\nalter table t;\n",
    );
    d.tack(&["local", "dev"]).success();
    d.write("components/db/schema.sql", "create table t;\n");
    d.tack(&["local", "dev"]).success()
}

#[test]
fn a_step_is_not_cached_unless_it_says_so_and_data_is_never_rolled_back() {
    // Declared as outputs, not as cacheable: the step reruns, as in batou.
    let plain = migrating(&["outputs = data.db"]);
    let last = write_edit_revert(&plain);
    assert!(!last.stdout.contains("Restored"), "{last}");
    assert!(plain.read("work/db/data.db").contains("user row"));
    assert!(
        !plain.exists(".tack/cache/v1/actions") || {
            std::fs::read_dir(plain.path(".tack/cache/v1/actions"))
                .unwrap()
                .next()
                .is_none()
        }
    );

    // Declared cacheable although it is not: a row written since the last
    // deploy is still kept, since a restore never replaces outputs that
    // changed after tack recorded them.
    let lying = migrating(&["outputs = data.db", "cache = true"]);
    lying.tack(&["local", "dev"]).success();
    lying.write(
        "components/db/schema.sql",
        "create table t;\nalter table t;\n",
    );
    lying.tack(&["local", "dev"]).success();
    let db = lying.path("work/db/data.db");
    let rows = std::fs::read_to_string(&db).unwrap() + "user row\n";
    std::fs::write(&db, rows).unwrap();
    lying.write("components/db/schema.sql", "create table t;\n");
    let last = lying.tack(&["local", "dev"]).success();
    assert!(!last.stdout.contains("Restored"), "{last}");
    assert!(
        last.stdout
            .contains("not restored from the cache: `data.db` changed since tack recorded them"),
        "{last}"
    );
    assert!(lying.read("work/db/data.db").contains("user row"));

    // Named as state: never captured, and the step runs when its inputs
    // changed or the database is gone.
    let state = migrating(&["creates = data.db"]);
    write_edit_revert(&state);
    assert!(state.read("work/db/data.db").contains("user row"));
    std::fs::remove_file(state.path("work/db/data.db")).unwrap();
    let output = state.tack(&["local", "dev"]).success();
    assert!(
        output.updated().contains("Db > Command(migrate)"),
        "{output}"
    );
    assert_eq!(state.read("work/db/data.db"), "create table t;\n");
}

#[test]
fn cache_and_creates_are_checked_when_configuring() {
    let d = migrating(&["cache = true"]);
    let output = d.tack(&["local", "dev"]);
    assert_eq!(output.code, 2, "{output}");
    assert!(
        output.stderr.contains(
            "components/db/component.cfg:5 [command:migrate] cache: `cache = true` needs `outputs`"
        ),
        "{output}"
    );
    let d = migrating(&["outputs = var", "creates = var/data.db"]);
    let output = d.tack(&["local", "dev"]);
    assert_eq!(output.code, 2, "{output}");
    assert!(
        output
            .stderr
            .contains("components/db/component.cfg:6 [command:migrate] creates: `"),
        "{output}"
    );
    assert!(
        !d.exists("work") && !d.exists(".tack/state"),
        "nothing written"
    );
}

/// A cacheable step whose output embeds the absolute path it was built in,
/// as a venv's scripts do.
fn path_bound(counter: &std::path::Path) -> Deployment {
    Deployment::new()
        .env("dev", "[hosts]\nlocalhost = build\n")
        .component(
            "build",
            &format!(
                "
                [command:venv]
                run = echo ran >> {counter}; mkdir -p bin && printf '#!/bin/sh\\nexec %s/bin/python\\n' \"$PWD\" > bin/tool
                outputs = bin
                cache = true
                ",
                counter = counter.display()
            ),
        )
}

#[test]
fn outputs_that_embed_their_checkout_restore_only_there() {
    let shared = tempfile::tempdir().unwrap();
    let cache = shared.path().join("cache");
    let counter = shared.path().join("counter");
    let cache_arg = cache.to_str().unwrap();

    let a = path_bound(&counter);
    a.tack(&["local", "dev", "--cache-dir", cache_arg])
        .success();
    let b = path_bound(&counter);
    let output = b
        .tack(&["local", "dev", "--cache-dir", cache_arg])
        .success();
    assert!(!output.stdout.contains("Restored"), "{output}");
    assert_eq!(runs(&counter), 2, "B builds its own");
    let tool = b.read("work/build/bin/tool");
    assert!(tool.contains(b.root().to_str().unwrap()), "{tool}");
    assert!(!tool.contains(a.root().to_str().unwrap()), "{tool}");

    // At its own path, A's entry still restores.
    std::fs::remove_dir_all(a.path("work")).unwrap();
    let output = a
        .tack(&["local", "dev", "--cache-dir", cache_arg])
        .success();
    assert!(
        output
            .stdout
            .contains("Restored Build > Command(venv) (from cache)"),
        "{output}"
    );
    assert_eq!(runs(&counter), 2);
    assert!(a
        .read("work/build/bin/tool")
        .contains(a.root().to_str().unwrap()));
}

#[test]
fn half_a_step_is_never_captured_nor_restored() {
    let shared = tempfile::tempdir().unwrap();
    let cache = shared.path().join("cache");
    let cache_arg = cache.to_str().unwrap();
    let half = || {
        Deployment::new()
            .env("dev", "[hosts]\nlocalhost = app\n")
            .component(
                "app",
                "
                [command:venv]
                run = mkdir -p .venv/bin && printf '#!/bin/sh\\n' > .venv/bin/python3 && chmod 755 .venv/bin/python3 && ln -sf python3 .venv/bin/python
                outputs = .venv/bin/python
                cache = true
                ",
            )
    };
    let a = half();
    let output = a
        .tack(&["local", "dev", "--cache-dir", cache_arg])
        .success();
    assert!(
        output.stdout.contains("warning: App > Command(venv): not cached: symlink `.venv/bin/python` -> `python3` dangles"),
        "{output}"
    );
    let b = half();
    let output = b
        .tack(&["local", "dev", "--cache-dir", cache_arg])
        .success();
    assert!(!output.stdout.contains("Restored"), "{output}");
    assert!(
        b.path("work/app/.venv/bin/python").exists(),
        "the link resolves"
    );
}

/// A real `[supervisor]` (its venv from PyPI) running one program; the
/// supervisord it starts is shut down when the value is dropped.
struct Supervised {
    d: Deployment,
}

impl Supervised {
    fn new(port: u16) -> Supervised {
        let d = Deployment::new()
            .env("dev", "[hosts]\nlocalhost = tick, supervisor\n")
            .component(
                "tick",
                "
                [file:tick.sh]
                content =
                    #!/bin/sh
                    while true; do echo tick; sleep 1; done
                mode = 0755

                [provide:programs]
                name = tick
                priority = 10
                command = {{ workdir }}/tick.sh
                ",
            )
            .component(
                "supervisor",
                &format!("[require:programs]\n\n[supervisor]\nport = {port}\n"),
            );
        Supervised { d }
    }
}

impl Drop for Supervised {
    fn drop(&mut self) {
        let work = self.d.path("work/supervisor");
        let ctl = work.join(".venv/bin/supervisorctl");
        crate::tutorial::stop_everything(
            self.d.root(),
            &work,
            &ctl,
            &["-c", "etc/supervisord.conf"],
        );
    }
}

/// Issue 10, finding 2 with the real thing: checkout B sharing A's cache
/// must not get A's venv (its scripts and `pyvenv.cfg` name A's path), and
/// `--force` with `--no-cache-read` rebuilds a broken venv whose marker
/// still matches.
#[test]
fn a_venv_is_never_handed_to_another_checkout_and_force_rebuilds_it() {
    let shared = tempfile::tempdir().unwrap();
    let cache_arg = shared.path().join("cache").display().to_string();
    let a = Supervised::new(crate::support::free_port());
    a.d.tack(&["local", "dev", "--cache-dir", &cache_arg])
        .success();
    let b = Supervised::new(crate::support::free_port());
    let output =
        b.d.tack(&["local", "dev", "--cache-dir", &cache_arg])
            .success();
    assert!(!output.stdout.contains("Restored"), "{output}");
    let a_root = a.d.root().display().to_string();
    for file in [".venv/pyvenv.cfg", ".venv/bin/supervisord"] {
        let text = b.d.read(&format!("work/supervisor/{file}"));
        assert!(!text.contains(&a_root), "{file} names A's path:\n{text}");
    }

    // Break B's venv behind the back of its marker: no run notices, but
    // forcing the node without the cache builds it again.
    let python = b.d.path("work/supervisor/.venv/bin/python");
    fs::remove_file(&python).unwrap();
    std::os::unix::fs::symlink("/nonexistent/python3", &python).unwrap();
    let output =
        b.d.tack(&[
            "local",
            "dev",
            "--cache-dir",
            &cache_arg,
            "--force",
            "supervisor/venv",
            "--no-cache-read",
        ])
        .success();
    assert!(
        output
            .updated()
            .contains("Supervisor > Venv(supervisor==4.3.0)"),
        "{output}"
    );
    assert!(python.exists(), "the venv's python works again\n{output}");
}

/// A deployment whose cached step copies `payload` (outside every
/// checkout, so the step's key does not change with it) into its output:
/// what an attacker who can write the cache, or hand over an archive,
/// would like a victim's deploy to restore.
fn copies_payload(shared: &std::path::Path) -> Deployment {
    Deployment::new()
        .env("dev", "[hosts]\nlocalhost = build\n")
        .component(
            "build",
            &format!(
                "
                [command:make]
                run = echo ran >> {counter}; mkdir -p out && cat {payload} > out/artifact
                outputs = out
                cache = true
                ",
                counter = shared.join("counter").display(),
                payload = shared.join("payload").display(),
            ),
        )
}

#[test]
fn a_forged_record_is_not_restored_under_a_cache_key() {
    let shared = tempfile::tempdir().unwrap();
    let counter = shared.path().join("counter");
    let arg = |name: &str| shared.path().join(name).to_str().unwrap().to_string();
    let key = |secret: &'static str| [("TACK_CACHE_KEY", secret)];

    // The forger runs the same step with a payload of its own, without a
    // key (or with another one), and exports the record.
    fs::write(shared.path().join("payload"), "forged\n").unwrap();
    let forger = copies_payload(shared.path());
    forger
        .tack(&["local", "dev", "--cache-dir", &arg("forged")])
        .success();
    let other = copies_payload(shared.path());
    other
        .tack_with_env(
            &[
                "local",
                "dev",
                "--cache-dir",
                &arg("other-key"),
                "--force",
                "build",
            ],
            &key("not ours"),
        )
        .0
        .success();
    for (cache, archive) in [("forged", "forged.tca"), ("other-key", "other.tca")] {
        forger
            .tack(&["cache", "--cache-dir", &arg(cache), "export", &arg(archive)])
            .success();
    }
    fs::write(shared.path().join("payload"), "genuine\n").unwrap();
    assert_eq!(runs(&counter), 2);

    // Without a key, an imported forgery is restored: records are checked
    // only against what the step declares.
    let plain = copies_payload(shared.path());
    plain
        .tack(&[
            "cache",
            "--cache-dir",
            &arg("plain"),
            "import",
            &arg("forged.tca"),
        ])
        .success();
    plain
        .tack(&["local", "dev", "--cache-dir", &arg("plain")])
        .success();
    assert_eq!(plain.read("work/build/out/artifact"), "forged\n");
    assert_eq!(runs(&counter), 2);

    // With a key, neither forgery is restored, whether imported without
    // the key or dropped into the cache directory: the step runs, says why,
    // and nothing of the forged entry is on disk.
    for archive in ["forged.tca", "other.tca"] {
        let victim = copies_payload(shared.path());
        let cache = arg(&format!("victim-{archive}"));
        victim
            .tack(&["cache", "--cache-dir", &cache, "import", &arg(archive)])
            .success();
        let (verify, _) =
            victim.tack_with_env(&["cache", "--cache-dir", &cache, "verify"], &key("ours"));
        assert_eq!(verify.code, 2, "{verify}");
        assert!(verify.stdout.contains("unauthenticated: "), "{verify}");
        assert!(
            verify.stderr.contains("1 records in")
                && verify
                    .stderr
                    .contains("not authenticated by `TACK_CACHE_KEY`"),
            "{verify}"
        );
        let before = runs(&counter);
        let (output, _) =
            victim.tack_with_env(&["local", "dev", "--cache-dir", &cache], &key("ours"));
        let output = output.success();
        assert!(!output.stdout.contains("Restored"), "{output}");
        assert!(
            output.stdout.contains(
                "note: Build > Command(make): not restored from the cache: the entry is not authenticated by `TACK_CACHE_KEY`; running the step instead"
            ),
            "{output}"
        );
        assert_eq!(runs(&counter), before + 1, "the step ran");
        assert_eq!(victim.read("work/build/out/artifact"), "genuine\n");
        // The step's own record replaced the forgery; it verifies.
        victim
            .tack_with_env(&["cache", "--cache-dir", &cache, "verify"], &key("ours"))
            .0
            .success();
    }

    // Imported with the key set, a forgery does not even enter the cache.
    let careful = copies_payload(shared.path());
    let (import, _) = careful.tack_with_env(
        &[
            "cache",
            "--cache-dir",
            &arg("careful"),
            "import",
            &arg("forged.tca"),
        ],
        &key("ours"),
    );
    let import = import.success();
    assert!(import.stdout.contains("0 records"), "{import}");
    assert!(import.stdout.contains("1 unauthenticated"), "{import}");

    // A record written under the same key is restored in a fresh checkout
    // through an archive.
    let victim_cache = arg("victim-forged.tca");
    careful
        .tack(&[
            "cache",
            "--cache-dir",
            &victim_cache,
            "export",
            &arg("ours.tca"),
        ])
        .success();
    careful
        .tack_with_env(
            &[
                "cache",
                "--cache-dir",
                &arg("careful"),
                "import",
                &arg("ours.tca"),
            ],
            &key("ours"),
        )
        .0
        .success();
    let before = runs(&counter);
    let (output, _) = careful.tack_with_env(
        &["local", "dev", "--cache-dir", &arg("careful")],
        &key("ours"),
    );
    let output = output.success();
    assert!(
        output
            .stdout
            .contains("Restored Build > Command(make) (from cache)"),
        "{output}"
    );
    assert_eq!(runs(&counter), before, "the step did not run");
    assert_eq!(careful.read("work/build/out/artifact"), "genuine\n");

    // A key set but empty is refused, not taken as no key.
    let (output, _) = careful.tack_with_env(
        &["cache", "--cache-dir", &arg("careful"), "verify"],
        &key(""),
    );
    assert_eq!(output.code, 2, "{output}");
    assert!(
        output.stderr.contains("`TACK_CACHE_KEY` is set but empty"),
        "{output}"
    );
}
