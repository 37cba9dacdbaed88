//! The executor, seen from outside: independent steps overlap under
//! `--jobs 4` and do not under `--jobs 1`, a dependent never starts before
//! its dependency ended, and a failure stops exactly its dependents while
//! the next run retries exactly what did not finish. No timing
//! assertions: each step records when it started and ended, and the tests
//! compare those instants with each other.

use crate::support::{set, Deployment};

/// A command that appends `start NAME <ns>` and `end NAME <ns>` to
/// `../../steps.log` (the deployment root) around a short sleep.
fn recorded_step(name: &str) -> String {
    format!(
        "
        [command:{name}]
        run = echo start {name} $(date +%s%N) >> ../../steps.log; sleep 0.3; echo end {name} $(date +%s%N) >> ../../steps.log
        "
    )
}

/// `(name, start, end)` for every step in the log.
fn intervals(deployment: &Deployment) -> Vec<(String, u128, u128)> {
    let log = deployment.read("steps.log");
    let mut intervals = Vec::new();
    for line in log.lines().filter(|line| line.starts_with("start ")) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let name = fields[1];
        let end_line = log
            .lines()
            .find(|l| l.starts_with(&format!("end {name} ")))
            .unwrap_or_else(|| panic!("{name} never ended:\n{log}"));
        let end: u128 = end_line.split_whitespace().nth(2).unwrap().parse().unwrap();
        intervals.push((name.to_string(), fields[2].parse().unwrap(), end));
    }
    intervals
}

fn overlaps(a: &(String, u128, u128), b: &(String, u128, u128)) -> bool {
    a.1 < b.2 && b.1 < a.2
}

fn four_independent_steps() -> Deployment {
    let mut deployment = Deployment::new().env(
        "dev",
        "
        [hosts]
        localhost = a, b, c, d
        ",
    );
    for name in ["a", "b", "c", "d"] {
        deployment = deployment.component(name, &recorded_step(name));
    }
    deployment
}

#[test]
fn independent_steps_overlap_with_four_jobs() {
    let deployment = four_independent_steps();
    deployment.tack(&["local", "dev", "--jobs", "4"]).success();
    let steps = intervals(&deployment);
    assert_eq!(steps.len(), 4);
    let overlapping = steps
        .iter()
        .enumerate()
        .any(|(i, a)| steps[i + 1..].iter().any(|b| overlaps(a, b)));
    assert!(
        overlapping,
        "with --jobs 4 some steps must run at once: {steps:?}"
    );
}

#[test]
fn steps_never_overlap_with_one_job() {
    let deployment = four_independent_steps();
    deployment.tack(&["local", "dev", "--jobs", "1"]).success();
    let steps = intervals(&deployment);
    assert_eq!(steps.len(), 4);
    for (i, a) in steps.iter().enumerate() {
        for b in &steps[i + 1..] {
            assert!(!overlaps(a, b), "{a:?} and {b:?} overlap with --jobs 1");
        }
    }
}

#[test]
fn a_dependent_starts_after_its_dependency_ended() {
    // `late` requires what `early` provides, so its step waits for early's.
    let deployment = Deployment::new()
        .env(
            "dev",
            "
            [hosts]
            localhost = late, early
            ",
        )
        .component(
            "early",
            &format!("{}\n[provide:ready]\nflag = yes\n", recorded_step("early")),
        )
        .component(
            "late",
            &format!("[require:ready]\n{}", recorded_step("late")),
        );
    deployment.tack(&["local", "dev", "--jobs", "4"]).success();
    let steps = intervals(&deployment);
    let early = steps.iter().find(|s| s.0 == "early").unwrap();
    let late = steps.iter().find(|s| s.0 == "late").unwrap();
    assert!(
        late.1 >= early.2,
        "late started before early ended: {steps:?}"
    );
}

#[test]
fn a_failure_skips_its_dependents_and_the_next_run_retries_only_them() {
    let deployment = Deployment::new()
        .env(
            "dev",
            "
            [hosts]
            localhost = broken, fine
            ",
        )
        .component(
            "broken",
            "
            [file:before.txt]
            content = written before the step

            [command:check]
            run = echo checking >> ../../check.log; test -f ../../fixed

            [file:after.txt]
            content = needs the step
            ",
        )
        .component(
            "fine",
            "
            [command:work]
            run = echo working >> ../../work.log

            [file:done.txt]
            content = independent of the failure
            ",
        );
    let first = deployment.tack(&["local", "dev"]);
    assert_eq!(first.code, 1, "a failed node fails the deploy\n{first}");
    assert!(
        first.stdout.contains("Failed Broken > Command(check)"),
        "{first}"
    );
    assert!(
        first
            .stdout
            .contains("Skipped Broken > File(after.txt) (because Broken > Command(check) failed)"),
        "{first}"
    );
    assert!(first.stdout.contains("1 failed, 1 skipped"), "{first}");
    assert!(
        deployment.exists("work/fine/done.txt"),
        "independent nodes finish"
    );
    assert!(deployment.exists("work/broken/before.txt"));
    assert!(
        !deployment.exists("work/broken/after.txt"),
        "a skipped node must not run"
    );

    deployment.write("fixed", "");
    let second = deployment.tack(&["local", "dev"]).success();
    assert_eq!(
        second.updated(),
        set(&["Broken > Command(check)", "Broken > File(after.txt)"]),
        "only the failed and the skipped nodes run again\n{second}"
    );
    assert_eq!(
        deployment.read("work.log"),
        "working\n",
        "finished work is not redone"
    );
    assert_eq!(deployment.read("check.log"), "checking\nchecking\n");
}

#[test]
fn a_step_reruns_when_its_declared_output_is_deleted() {
    let deployment = Deployment::new()
        .env("dev", "[hosts]\nlocalhost = build\n")
        .component(
            "build",
            "
            [command:make]
            run = mkdir -p out && echo built > out/artifact && echo ran >> ../../runs.log
            outputs = out
            ",
        );
    deployment.tack(&["local", "dev"]).success();
    deployment.tack(&["local", "dev"]).success();
    assert_eq!(
        deployment.read("runs.log"),
        "ran\n",
        "a no-op run does not rerun a step"
    );

    std::fs::remove_file(deployment.path("work/build/out/artifact")).unwrap();
    let explained = deployment.tack(&["explain", "dev"]).success();
    assert!(
        explained.stdout.contains("artifact` is missing"),
        "{explained}"
    );
    // Not declared cacheable: the step runs again, as in batou.
    let output = deployment.tack(&["local", "dev"]).success();
    assert!(
        output.updated().contains("Build > Command(make)"),
        "{output}"
    );
    assert_eq!(deployment.read("work/build/out/artifact"), "built\n");
    assert_eq!(deployment.read("runs.log"), "ran\nran\n");
}

#[test]
fn a_step_that_does_not_produce_its_output_fails() {
    let deployment = Deployment::new()
        .env("dev", "[hosts]\nlocalhost = build\n")
        .component(
            "build",
            "
            [command:make]
            run = true
            outputs = out/artifact
            ",
        );
    let output = deployment.tack(&["local", "dev"]);
    assert_eq!(output.code, 1, "{output}");
    assert!(output.stdout.contains("did not produce"), "{output}");
}

#[test]
fn json_report_has_every_node_with_outcome_reasons_and_duration() {
    let deployment = four_independent_steps();
    let output = deployment
        .tack(&["local", "dev", "--format", "json"])
        .success();
    assert!(
        !output.stdout.contains("Updating"),
        "json mode prints only json\n{output}"
    );
    let report: serde_json::Value = serde_json::from_str(&output.stdout).expect("valid json");
    let nodes = report["hosts"][0]["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 4);
    for node in nodes {
        assert_eq!(node["outcome"], "updated", "{node}");
        assert_eq!(node["reasons"][0]["reason"], "never_applied", "{node}");
        assert!(node["seconds"].as_f64().unwrap() > 0.0, "{node}");
    }
    assert_eq!(report["hosts"][0]["summary"]["updated"], 4);
}
