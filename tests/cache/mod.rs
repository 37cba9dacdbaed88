//! The step cache shared between checkouts: a fresh copy restores a step's
//! outputs instead of running it (a counter file the step appends to
//! proves it did not run), a corrupt entry is reported by `tack cache
//! verify` and costs a rerun, never a wrong file, and two deploys may
//! share one cache at the same time.

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

    // Deleting a restored output reruns or restores it; the record does
    // not pretend it is there.
    std::fs::remove_file(b.path("work/build/out/artifact")).unwrap();
    b.tack(&["local", "dev", "--cache-dir", cache_arg])
        .success();
    assert_eq!(b.read("work/build/out/artifact"), "artifact\n");

    // --no-cache-read runs the step anyway.
    let c = expensive(&counter);
    c.tack(&["local", "dev", "--cache-dir", cache_arg, "--no-cache-read"])
        .success();
    assert_eq!(runs(&counter), 2);
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
