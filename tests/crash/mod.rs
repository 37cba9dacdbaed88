//! Crash safety: a deploy SIGKILLed at any point converges on the next run.
//!
//! A debug build of tack kills itself at a chosen point
//! (`src/fault.rs`): right after the N-th node finished and was journaled
//! (`TACK_TEST_KILL_AFTER_NODES`), or in the middle of the N-th atomic file
//! write, its temp file written and not yet renamed
//! (`TACK_TEST_KILL_IN_WRITE`; tack's own state and manifest writes count
//! too). Each test tries every such point of one deploy, N = 1, 2, ...
//! until the switch no longer fires, each in a fresh deployment directory:
//!
//! 1. The killed run must really be killed (SIGKILL).
//! 2. What it left must not claim more than happened: every node the
//!    state and its replayed journal call finished has its target as that
//!    record's key says, at most N nodes are journaled after the N-th
//!    node, and `tack explain` lists every node whose target is missing or
//!    wrong as `Would update`.
//! 3. The next run succeeds and leaves `work/` exactly as an uninterrupted
//!    deploy does, no temp file anywhere, and a state in which every node
//!    finished; the run after that has nothing to do.
//!
//! The killed run uses `--jobs 1`, so that N names one boundary and a
//! failure reproduces; the recovering runs use the default parallelism.
//! Every failing kill point is collected before a test fails, so one run
//! reports all of them.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use serde_json::Value;

use crate::support::Deployment;

const AFTER_NODES: &str = "TACK_TEST_KILL_AFTER_NODES";
const IN_WRITE: &str = "TACK_TEST_KILL_IN_WRITE";

/// Every node of [`shop`], with the path under `work/` it makes and
/// whether everything below that path is its too (a step's outputs).
const NODES: &[(&str, &str, bool)] = &[
    ("Db > Directory(data)", "db/data", false),
    ("Db > File(db.conf)", "db/db.conf", false),
    ("Db > File(data/init.sql)", "db/data/init.sql", false),
    ("App > Directory(etc)", "app/etc", false),
    ("App > File(etc/app.ini)", "app/etc/app.ini", false),
    ("App > Directory(etc/conf.d)", "app/etc/conf.d", false),
    (
        "App > File(etc/conf.d/10-database.conf)",
        "app/etc/conf.d/10-database.conf",
        false,
    ),
    (
        "App > File(etc/conf.d/20-release.conf)",
        "app/etc/conf.d/20-release.conf",
        false,
    ),
    ("App > File(bin/run)", "app/bin/run", false),
    ("App > File(static/README)", "app/static/README", false),
    ("App > Symlink(current)", "app/current", false),
    ("App > Command(build)", "app/build", true),
    ("App > File(built.txt)", "app/built.txt", false),
];

/// The edit of the redeploy tests: db's port reaches `db.conf`, through
/// the provided `database` app's `app.ini` and `10-database.conf`, and
/// through `app.ini` the `build` step that copies it.
const EDIT: (&str, &str, &str) = ("components/db/component.cfg", "port = 5432", "port = 5433");

/// Two components, 13 nodes of every cheap kind: directories with modes,
/// templated files in them and elsewhere, a file with `workdir` in it, an
/// untemplated file, a symlink, values provided by db and required by app,
/// and a step with outputs that a file waits for.
fn shop() -> Deployment {
    Deployment::new()
        .env(
            "dev",
            "
            [environment]
            connect_method = local

            [hosts]
            localhost = db, app
            ",
        )
        .component(
            "db",
            "
            [attributes]
            port = 5432
            name = shop

            [directory:data]
            mode = 0700

            [file:db.conf]
            content =
                listen = 127.0.0.1:{{ port }}
                database = {{ name }}

            [file:data/init.sql]
            content = CREATE DATABASE {{ name }};

            [provide:database]
            host = 127.0.0.1
            port = {{ port }}
            name = {{ name }}
            ",
        )
        .component(
            "app",
            "
            [attributes]
            greeting = Hello
            release = 7

            [require:database]

            [directory:etc]
            mode = 0750

            [file:etc/app.ini]
            source = app.ini

            [directory:etc/conf.d]
            mode = 0755

            [file:etc/conf.d/10-database.conf]
            content =
                {% for db in database -%}
                url = postgresql://{{ db.host }}:{{ db.port }}/{{ db.name }}
                {% endfor -%}

            [file:etc/conf.d/20-release.conf]
            content = release = {{ release }}
            mode = 0600

            [file:bin/run]
            mode = 0755

            [file:static/README]
            template = false

            [symlink:current]
            target = {{ workdir }}/etc

            [command:build]
            run = mkdir -p build && cp etc/app.ini build/app.ini && echo \"release {{ release }}\" > build/version.txt
            outputs = build

            [file:built.txt]
            content = built release {{ release }}
            ",
        )
        .source(
            "app",
            "app.ini",
            "
            greeting = {{ greeting }}
            release = {{ release }}
            {% for db in database -%}
            database = postgresql://{{ db.host }}:{{ db.port }}/{{ db.name }}
            {% endfor -%}
            ",
        )
        .source(
            "app",
            "bin/run",
            "
            #!/bin/sh
            exec echo running from {{ workdir }}
            ",
        )
        .source("app", "static/README", "{{ not a template }}\n")
}

/// What is under `work/`, by path relative to it, without timestamps or
/// inodes; the deployment directory in contents and link targets reads
/// `<root>`, so that views of two deployment directories compare.
type View = BTreeMap<String, Canonical>;

#[derive(Clone, Debug, PartialEq, Eq)]
enum Canonical {
    File { content: String, mode: u32 },
    Directory { mode: u32 },
    Symlink { target: String },
}

fn view(d: &Deployment) -> View {
    let root = d.root().display().to_string();
    let work = d.path("work");
    let mut view = View::new();
    walk(&work, &mut |path, meta| {
        let relative = path.strip_prefix(&work).unwrap().display().to_string();
        let entry = if meta.is_symlink() {
            let target = fs::read_link(path).unwrap().display().to_string();
            Canonical::Symlink {
                target: target.replace(&root, "<root>"),
            }
        } else if meta.is_dir() {
            Canonical::Directory {
                mode: meta.mode() & 0o7777,
            }
        } else {
            let content = String::from_utf8_lossy(&fs::read(path).unwrap()).into_owned();
            Canonical::File {
                content: content.replace(&root, "<root>"),
                mode: meta.mode() & 0o7777,
            }
        };
        view.insert(relative, entry);
    });
    view.remove("");
    view
}

/// Calls `visit` for `dir` and everything below it, not following links.
fn walk(dir: &Path, visit: &mut dyn FnMut(&Path, &fs::Metadata)) {
    let Ok(meta) = fs::symlink_metadata(dir) else {
        return;
    };
    visit(dir, &meta);
    if meta.is_dir() {
        for entry in fs::read_dir(dir).unwrap() {
            walk(&entry.unwrap().path(), visit);
        }
    }
}

/// The part of `view` a node makes.
fn part(view: &View, path: &str, tree: bool) -> View {
    let below = format!("{path}/");
    view.iter()
        .filter(|(p, _)| *p == path || (tree && p.starts_with(&below)))
        .map(|(p, entry)| (p.clone(), entry.clone()))
        .collect()
}

fn node(display: &str) -> Option<(&'static str, bool)> {
    NODES
        .iter()
        .find(|(name, _, _)| *name == display)
        .map(|(_, path, tree)| (*path, *tree))
}

/// How `actual` differs from `expected`, one path a line.
fn difference(actual: &View, expected: &View) -> String {
    let mut lines = Vec::new();
    for (path, entry) in expected {
        match actual.get(path) {
            None => lines.push(format!("      missing {path}: {entry:?}")),
            Some(found) if found != entry => {
                lines.push(format!("      wrong   {path}: {found:?}, not {entry:?}"))
            }
            Some(_) => {}
        }
    }
    for (path, entry) in actual {
        if !expected.contains_key(path) {
            lines.push(format!("      extra   {path}: {entry:?}"));
        }
    }
    lines.join("\n")
}

/// One node's record as far as these tests look at it.
#[derive(Clone, Debug)]
struct Record {
    display: String,
    key: Value,
    finished: bool,
}

fn record(value: &Value) -> Record {
    Record {
        display: value["display"].as_str().unwrap_or_default().to_string(),
        key: value["key"].clone(),
        finished: value["finished"] == Value::Bool(true),
    }
}

const STATE: &str = ".tack/state/dev/localhost";
const JOURNAL: &str = ".tack/state/dev/localhost.journal";

/// The records of the state by node id, one file per component, if every
/// file parses. No directory yet is no records.
fn state(d: &Deployment) -> Result<BTreeMap<String, Record>, String> {
    let mut records = BTreeMap::new();
    let Ok(entries) = fs::read_dir(d.path(STATE)) else {
        return Ok(records);
    };
    for entry in entries {
        let path = entry.map_err(|e| e.to_string())?.path();
        if path.extension().is_none_or(|ext| ext != "json") {
            continue;
        }
        let shown = path.display();
        let bytes = fs::read(&path).map_err(|e| format!("cannot read {shown}: {e}"))?;
        let state: Value =
            serde_json::from_slice(&bytes).map_err(|e| format!("{shown} is not JSON: {e}"))?;
        let nodes = state["nodes"]
            .as_object()
            .ok_or_else(|| format!("{shown} has no `nodes`"))?;
        records.extend(nodes.iter().map(|(id, v)| (id.clone(), record(v))));
    }
    Ok(records)
}

/// What a run would believe after the kill: the state file (or nothing)
/// with the journal replayed as tack replays it, up to a torn line; and
/// how many entries the journal holds.
fn replayed(d: &Deployment) -> (BTreeMap<String, Record>, usize) {
    let mut records = state(d).unwrap_or_default();
    let mut entries = 0;
    let journal = fs::read_to_string(d.path(JOURNAL)).unwrap_or_default();
    for line in journal.lines() {
        let Ok(entry) = serde_json::from_str::<Value>(line) else {
            break;
        };
        let Some(id) = entry["id"].as_str() else {
            break;
        };
        records.insert(id.to_string(), record(&entry["record"]));
        entries += 1;
    }
    (records, entries)
}

/// Temp files of an interrupted write (`.tack-*`, the cache's `.tmp-*`)
/// under `work/` and `.tack/`.
fn temp_files(d: &Deployment) -> Vec<String> {
    let mut found = Vec::new();
    for top in ["work", ".tack"] {
        walk(&d.path(top), &mut |path, _| {
            let name = path.file_name().unwrap().to_string_lossy();
            if name.starts_with(".tack-") || name.starts_with(".tmp-") {
                let relative = path.strip_prefix(d.root()).unwrap();
                found.push(relative.display().to_string());
            }
        });
    }
    found
}

/// A deploy to kill, and what it must converge to.
struct Scenario {
    name: &'static str,
    /// A fresh deployment directory, just before the run to kill.
    prepare: fn() -> Deployment,
    /// `work/` after the run to kill, had it not been killed.
    after: View,
    /// `work/` before it, as far as tack made it.
    before: View,
    /// How many nodes that run updates.
    nodes: usize,
}

impl Scenario {
    /// Deploying `shop()` into an empty deployment directory.
    fn first_deploy() -> Scenario {
        let d = shop();
        let output = d.tack(&["local", "dev"]).success();
        let all: Vec<&str> = NODES.iter().map(|(display, _, _)| *display).collect();
        assert_eq!(
            output.updated(),
            crate::support::set(&all),
            "NODES must list every node\n{output}"
        );
        Scenario {
            name: "first deploy",
            prepare: shop,
            after: view(&d),
            before: View::new(),
            nodes: NODES.len(),
        }
    }

    /// Deploying `shop()` after [`EDIT`], over a complete deploy of it
    /// before: the state holds a finished record of every node, with the
    /// old key, and none of them may be trusted for the nodes the edit
    /// reaches.
    fn redeploy() -> Scenario {
        let d = shop();
        d.tack(&["local", "dev"]).success();
        let before = view(&d);
        let (file, from, to) = EDIT;
        d.replace(file, from, to);
        let output = d.tack(&["local", "dev"]).success();
        let nodes = output.updated().len();
        assert!(nodes >= 3, "the edit must reach 3 nodes or more\n{output}");

        let fresh = shop();
        fresh.replace(file, from, to);
        fresh.tack(&["local", "dev"]).success();
        let after = view(&fresh);
        assert_eq!(view(&d), after, "a redeploy must equal a fresh deploy");
        assert_ne!(before, after, "the edit must change what is deployed");
        Scenario {
            name: "redeploy",
            prepare: || {
                let d = shop();
                d.tack(&["local", "dev"]).success();
                let (file, from, to) = EDIT;
                d.replace(file, from, to);
                d
            },
            after,
            before,
            nodes,
        }
    }

    /// Kills the run at every point `switch` offers, N = 1, 2, ... until it
    /// no longer fires. Returns how many points it killed at, and for each
    /// point that failed a check, N and the problems found.
    fn kill_everywhere(&self, switch: &str) -> (usize, BTreeMap<usize, Vec<String>>) {
        let mut failed = BTreeMap::new();
        for n in 1.. {
            assert!(n < 200, "{switch} still fires at {n}");
            let d = (self.prepare)();
            let before = state(&d).unwrap_or_default();
            let (killed, signal) = d.tack_with_env(
                &["local", "dev", "--jobs", "1"],
                &[(switch, &n.to_string())],
            );
            match signal {
                Some(9) => {}
                None if killed.code == 0 => return (n - 1, failed),
                _ => {
                    let problem = format!("neither killed nor finished\n{killed}");
                    failed.insert(n, vec![problem]);
                    return (n - 1, failed);
                }
            }
            let limit = (switch == AFTER_NODES).then_some(n);
            let problems = self.check(&d, &before, limit);
            if !problems.is_empty() {
                failed.insert(n, problems);
            }
        }
        unreachable!()
    }

    /// Checks what a killed run left, runs tack twice more and checks that
    /// it converged. `before` is the state before the killed run; `limit`
    /// the number of nodes the kill came after, if it came after a node.
    fn check(
        &self,
        d: &Deployment,
        before: &BTreeMap<String, Record>,
        limit: Option<usize>,
    ) -> Vec<String> {
        let mut problems = Vec::new();
        let left = view(d);
        let (believed, journaled) = replayed(d);
        if let Some(limit) = limit {
            if journaled > limit {
                problems.push(format!(
                    "{journaled} nodes journaled after a kill after node {limit}"
                ));
            }
        }

        // Nothing unfinished may look done to a dry run.
        let explained = d.tack(&["explain", "dev"]);
        if explained.code != 0 {
            problems.push(format!(
                "`tack explain dev` after the kill failed\n{explained}"
            ));
        } else {
            let listed = explained.would_update();
            for (display, path, tree) in NODES {
                let differs = part(&left, path, *tree) != part(&self.after, path, *tree);
                if differs && !listed.contains(*display) {
                    problems.push(format!(
                        "`{display}` is not as deployed yet but `tack explain` does not list it\n{}\n{explained}",
                        difference(&part(&left, path, *tree), &part(&self.after, path, *tree))
                    ));
                }
            }
        }

        let rerun = d.tack(&["local", "dev"]);
        if rerun.code != 0 {
            problems.push(format!("the run after the kill failed\n{rerun}"));
            return problems;
        }
        let converged = view(d);
        if converged != self.after {
            problems.push(format!(
                "work/ after the next run differs from an uninterrupted deploy\n{}\n{rerun}",
                difference(&converged, &self.after)
            ));
        }
        let temps = temp_files(d);
        if !temps.is_empty() {
            problems.push(format!(
                "temp files left after the next run: {}",
                temps.join(", ")
            ));
        }
        if d.exists(JOURNAL) {
            problems.push(format!("{JOURNAL} is left after the next run"));
        }
        match state(d) {
            Err(error) => problems.push(error),
            Ok(records) => {
                let unfinished: Vec<&str> = records
                    .values()
                    .filter(|record| !record.finished)
                    .map(|record| record.display.as_str())
                    .collect();
                if !unfinished.is_empty() || records.len() != NODES.len() {
                    problems.push(format!(
                        "the state after the next run has {} records, unfinished: {unfinished:?}",
                        records.len()
                    ));
                }
            }
        }
        // What the next run believes, journal included: a journal it left
        // behind is reported above and must not hide a wrong record here.
        let (now, _) = replayed(d);
        problems.extend(self.believed_done(&believed, before, &now, &left));

        let third = d.tack(&["local", "dev"]);
        let restored = third
            .stdout
            .lines()
            .any(|line| line.starts_with("Restored"));
        if third.code != 0 || !third.updated().is_empty() || restored {
            problems.push(format!("the third run still had work to do\n{third}"));
        }
        problems
    }

    /// Every node the killed run left recorded as finished must have its
    /// target as that record's key makes it: the key is either the one of
    /// the complete deploy that followed (then the target is as in
    /// `after`) or the one recorded before the killed run (as in
    /// `before`).
    fn believed_done(
        &self,
        believed: &BTreeMap<String, Record>,
        before: &BTreeMap<String, Record>,
        now: &BTreeMap<String, Record>,
        left: &View,
    ) -> Vec<String> {
        let mut problems = Vec::new();
        for (id, record) in believed.iter().filter(|(_, record)| record.finished) {
            let Some((path, tree)) = node(&record.display) else {
                problems.push(format!("a record of an unknown node `{}`", record.display));
                continue;
            };
            let expected = if now.get(id).is_some_and(|r| r.key == record.key) {
                &self.after
            } else if before.get(id).is_some_and(|r| r.key == record.key) {
                &self.before
            } else {
                problems.push(format!(
                    "`{}` is recorded as finished with a key neither run had",
                    record.display
                ));
                continue;
            };
            let found = part(left, path, tree);
            let wanted = part(expected, path, tree);
            if found != wanted {
                problems.push(format!(
                    "`{}` is recorded as finished but its target is not as its key makes it\n{}",
                    record.display,
                    difference(&found, &wanted)
                ));
            }
        }
        problems
    }
}

/// Tries every kill point of `switch`, prints the count, and fails with
/// every problem found.
fn every_kill_point_converges(scenario: &Scenario, switch: &str, expected: Option<usize>) {
    let (points, failed) = scenario.kill_everywhere(switch);
    let name = scenario.name;
    eprintln!(
        "crash harness: {name}, {switch}: {points} kill points, {} converged, failed at N = {:?}",
        points - failed.len(),
        failed.keys().collect::<Vec<_>>()
    );
    assert!(points > 0, "{switch} never fired");
    if let Some(expected) = expected {
        assert_eq!(points, expected, "one kill point after each node");
    }
    let report: Vec<String> = failed
        .iter()
        .flat_map(|(n, problems)| {
            problems
                .iter()
                .map(move |problem| format!("{name} {switch}={n}: {problem}"))
        })
        .collect();
    assert!(
        failed.is_empty(),
        "{} of {points} kill points failed:\n\n{}",
        failed.len(),
        report.join("\n\n")
    );
}

#[test]
fn a_first_deploy_killed_after_any_node_converges() {
    let scenario = Scenario::first_deploy();
    every_kill_point_converges(&scenario, AFTER_NODES, Some(scenario.nodes));
}

#[test]
fn a_first_deploy_killed_in_any_write_converges() {
    every_kill_point_converges(&Scenario::first_deploy(), IN_WRITE, None);
}

#[test]
fn a_redeploy_killed_after_any_node_converges() {
    let scenario = Scenario::redeploy();
    every_kill_point_converges(&scenario, AFTER_NODES, Some(scenario.nodes));
}

#[test]
fn a_redeploy_killed_in_any_write_converges() {
    every_kill_point_converges(&Scenario::redeploy(), IN_WRITE, None);
}

/// The harness itself: a kill really happens, and [`view`] sees the
/// difference between a killed deploy and a complete one.
#[test]
fn a_kill_switch_kills_and_leaves_work_undone() {
    let d = shop();
    let (killed, signal) = d.tack_with_env(&["local", "dev", "--jobs", "1"], &[(AFTER_NODES, "2")]);
    assert_eq!(signal, Some(9), "{killed}");
    let complete = shop();
    complete.tack(&["local", "dev"]).success();
    assert_ne!(view(&d), view(&complete));
    let (_, journaled) = replayed(&d);
    assert_eq!(journaled, 2, "{}", d.read(JOURNAL));
}
