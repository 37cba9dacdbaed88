//! Wall time of `tack local` on synthetic deployments (see `generate`):
//! a full deploy, a no-op redeploy, one attribute changed and one source
//! file changed, each the median of several runs of the release binary.
//! Beside the no-op it measures, in the same run, a floor: a walk that only
//! `lstat`s every source and target file. Ratios between figures of one run
//! are what to compare across machines; absolute times are noisy here.
//!
//! ```text
//! cargo bench --bench deploy                          # 1k and 10k files
//! TACK_BENCH_SIZES=1000,10000,100000 cargo bench --bench deploy
//! TACK_BENCH_QUICK=1 cargo bench --bench deploy       # 100 files, a smoke test
//! TACK_BENCH_DIR=/dev/shm cargo bench --bench deploy  # not in target/tmp
//! cargo bench --bench deploy -- --emit-tack DIR N M   # write a deployment
//! cargo bench --bench deploy -- --emit-batou DIR N M  # the same for batou
//! ```
//!
//! `benches/batou/compare.sh` runs batou 2.7.1 on the same deployment.

mod generate;

use std::fmt::Write as _;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use generate::{Format, Spec};

fn main() -> ExitCode {
    // `cargo bench` passes `--bench`; everything else is ours.
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|arg| arg != "--bench")
        .collect();
    let result = match args.first().map(String::as_str) {
        Some("--emit-tack") => emit(&args[1..], Format::Tack),
        Some("--emit-batou") => emit(&args[1..], Format::Batou),
        Some(other) => Err(format!(
            "unknown argument `{other}` (use --emit-tack DIR N M or --emit-batou DIR N M)"
        )),
        None => bench(),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

/// `--emit-FORMAT DIR N M`: writes N components of M files into DIR.
fn emit(args: &[String], format: Format) -> Result<(), String> {
    let [dir, components, files] = args else {
        return Err("usage: --emit-tack|--emit-batou DIR COMPONENTS FILES".to_string());
    };
    let number = |text: &String| {
        text.parse::<usize>()
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| format!("`{text}` is not a positive number"))
    };
    let spec = Spec {
        components: number(components)?,
        files: number(files)?,
    };
    generate::write(Path::new(dir), &spec, format)
        .map_err(|error| format!("write {dir}: {error}"))?;
    eprintln!(
        "wrote {} components x {} files ({} files) for {format:?} to {dir}",
        spec.components,
        spec.files,
        spec.total_files()
    );
    Ok(())
}

/// The median and spread of one scenario's runs, and how many nodes the
/// last run updated (to check that the scenario did what it says).
#[derive(Clone, Copy, Debug)]
struct Figure {
    median: Duration,
    min: Duration,
    max: Duration,
    updated: usize,
}

impl Figure {
    fn of(mut times: Vec<Duration>, updated: usize) -> Figure {
        times.sort();
        Figure {
            median: times[times.len() / 2],
            min: times[0],
            max: times[times.len() - 1],
            updated,
        }
    }
}

struct Row {
    spec: Spec,
    runs: usize,
    full: Figure,
    noop: Figure,
    floor: Figure,
    attribute: Figure,
    source: Figure,
}

fn bench() -> Result<(), String> {
    let quick = std::env::var("TACK_BENCH_QUICK").is_ok_and(|v| !v.is_empty() && v != "0");
    let sizes = match std::env::var("TACK_BENCH_SIZES") {
        Ok(list) if !list.trim().is_empty() => list
            .split(',')
            .map(|size| {
                size.trim()
                    .parse::<usize>()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| format!("TACK_BENCH_SIZES: `{size}` is not a positive number"))
            })
            .collect::<Result<Vec<_>, _>>()?,
        _ if quick => vec![100],
        _ => vec![1_000, 10_000],
    };
    let tack = tack_binary()?;
    let scratch = scratch_dir();
    eprintln!("tack: {}", tack.display());
    eprintln!("scratch: {}", scratch.display());
    // Normally gone: every run removes its scratch dir when it is done.
    remove(&scratch)?;
    let trash = scratch.join("trash");

    let started = Instant::now();
    let mut rows = Vec::new();
    for (index, &size) in sizes.iter().enumerate() {
        let spec = Spec::with_total_files(size);
        // Five runs where a run is quick, three for the large sizes.
        let runs = if quick || spec.total_files() > 10_000 {
            3
        } else {
            5
        };
        let root = scratch.join(format!("{index}-tack-{}", spec.total_files()));
        let trash = trash.join(index.to_string());
        rows.push(bench_size(&tack, &root, &trash, spec, runs)?);
    }
    print!("{}", report(&rows, started.elapsed()));
    // Removed only now, and flushed: on this machine's ext4, creating files
    // soon after many were deleted is slow (the kernel's inode allocator
    // skips recently freed inodes one by one); deleting 20k files slowed a
    // following 10k-file deploy here from 1.3 s to 4.2 s.
    eprintln!("removing {}", scratch.display());
    remove(&scratch)?;
    settle();
    Ok(())
}

fn bench_size(
    tack: &Path,
    root: &Path,
    trash: &Path,
    spec: Spec,
    runs: usize,
) -> Result<Row, String> {
    let files = spec.total_files();
    eprintln!(
        "\n{files} files: {} components x {} files, {runs} runs per scenario",
        spec.components, spec.files
    );
    generate::write(root, &spec, Format::Tack)
        .map_err(|error| format!("generate {}: {error}", root.display()))?;

    // Full deploy: a fresh copy each time, i.e. no work/ and no .tack/.
    // The previous run's are moved aside, not deleted, until the end (see
    // `bench`): deleting them here would slow the next run's file creation.
    let mut times = Vec::new();
    let mut updated = 0;
    for run in 0..runs {
        for dir in ["work", ".tack"] {
            set_aside(&root.join(dir), &trash.join(format!("{run}-{dir}")))?;
        }
        let run = run_tack(tack, root)?;
        times.push(run.elapsed);
        updated = run.updated;
    }
    let full = Figure::of(times, updated);
    eprintln!("  full deploy        {}", spread(&full));
    check_deployed(root, &spec)?;

    // No-op, with the stat-only floor measured between its runs.
    let mut times = Vec::new();
    let mut floors = Vec::new();
    let mut updated = 0;
    let mut statted = 0;
    for _ in 0..runs {
        let (elapsed, count) = stat_floor(root)?;
        floors.push(elapsed);
        statted = count;
        let run = run_tack(tack, root)?;
        times.push(run.elapsed);
        updated = run.updated;
    }
    let noop = Figure::of(times, updated);
    let floor = Figure::of(floors, 0);
    eprintln!("  no-op              {}", spread(&noop));
    eprintln!("  stat floor         {} ({statted} paths)", spread(&floor));

    // One attribute changed by an environment override: it reaches the
    // files of one component.
    let env_file = root
        .join("environments")
        .join(format!("{}.cfg", generate::ENVIRONMENT));
    let mut times = Vec::new();
    let mut updated = 0;
    for run in 0..runs {
        let overrides = [(spec.changed_component(), "color", format!("changed-{run}"))];
        write_file(&env_file, &generate::environment_cfg(&spec, &overrides))?;
        let run = run_tack(tack, root)?;
        times.push(run.elapsed);
        updated = run.updated;
    }
    let attribute = Figure::of(times, updated);
    eprintln!("  attribute changed  {}", spread(&attribute));

    // One source file changed.
    let source = root.join(spec.changed_source());
    let original = fs::read_to_string(&source)
        .map_err(|error| format!("read {}: {error}", source.display()))?;
    let mut times = Vec::new();
    let mut updated = 0;
    for run in 0..runs {
        write_file(&source, &format!("{original}# edit {run}\n"))?;
        let run = run_tack(tack, root)?;
        times.push(run.elapsed);
        updated = run.updated;
    }
    let source = Figure::of(times, updated);
    eprintln!("  source changed     {}", spread(&source));

    Ok(Row {
        spec,
        runs,
        full,
        noop,
        floor,
        attribute,
        source,
    })
}

/// A file of a requirer holds the URL its provider rendered: provide and
/// require were really resolved.
fn check_deployed(root: &Path, spec: &Spec) -> Result<(), String> {
    if spec.components < 2 {
        return Ok(());
    }
    let path = root
        .join("work")
        .join(spec.changed_component())
        .join(spec.file_name(0));
    let text =
        fs::read_to_string(&path).map_err(|error| format!("read {}: {error}", path.display()))?;
    let expected = format!(
        "upstream = http://127.0.0.1:8000/{}",
        spec.component_name(0)
    );
    if text.contains(&expected) {
        Ok(())
    } else {
        Err(format!("{} lacks `{expected}`:\n{text}", path.display()))
    }
}

struct TackRun {
    elapsed: Duration,
    updated: usize,
}

/// Runs `tack local dev -C root` and times it from spawn to exit, after a
/// [`settle`]; the output is read whole (one line per updated node) and
/// only the summary kept.
fn run_tack(tack: &Path, root: &Path) -> Result<TackRun, String> {
    settle();
    let started = Instant::now();
    let output = Command::new(tack)
        .args(["local", generate::ENVIRONMENT, "-C"])
        .arg(root)
        .output()
        .map_err(|error| format!("run {}: {error}", tack.display()))?;
    let elapsed = started.elapsed();
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        let tail: Vec<&str> = stdout.lines().rev().take(20).collect();
        return Err(format!(
            "tack failed ({}) in {}:\n{}\n{}",
            output.status,
            root.display(),
            tail.into_iter().rev().collect::<Vec<_>>().join("\n"),
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    // `localhost: 2 updated, 0 unchanged, 0 failed, 0 skipped in 0.002s`
    let updated = stdout
        .lines()
        .rev()
        .find_map(|line| {
            let (_, counts) = line.split_once(": ")?;
            let (number, rest) = counts.split_once(' ')?;
            rest.starts_with("updated,").then(|| number.parse().ok())?
        })
        .ok_or_else(|| format!("no summary line in tack's output:\n{stdout}"))?;
    Ok(TackRun { elapsed, updated })
}

/// The physical floor of a no-op: walk `components/`, `environments/` and
/// `work/` and `lstat` every entry, one thread. Returns the time and the
/// number of paths statted.
fn stat_floor(root: &Path) -> Result<(Duration, usize), String> {
    fn walk(dir: &Path, count: &mut usize) -> io::Result<()> {
        for entry in fs::read_dir(dir)? {
            let path = entry?.path();
            let meta = fs::symlink_metadata(&path)?;
            *count += 1;
            if meta.is_dir() {
                walk(&path, count)?;
            }
        }
        Ok(())
    }
    settle();
    let started = Instant::now();
    let mut count = 0;
    for dir in ["environments", "components", "work"] {
        walk(&root.join(dir), &mut count)
            .map_err(|error| format!("walk {}: {error}", root.join(dir).display()))?;
    }
    Ok((started.elapsed(), count))
}

/// Flushes dirty pages (`sync`, untimed) so that writeback left by the
/// previous run or by the setup does not land in the next timed run.
fn settle() {
    let _ = Command::new("sync").status();
}

/// The release binary: the one cargo built for this bench, else
/// `target/release/tack` beside this bench's `deps/`, else built now.
fn tack_binary() -> Result<PathBuf, String> {
    if let Some(path) = option_env!("CARGO_BIN_EXE_tack") {
        let path = PathBuf::from(path);
        if path.is_file() {
            return Ok(path);
        }
    }
    let beside = std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.parent()?.join("tack")));
    if let Some(path) = beside.filter(|path| path.is_file()) {
        return Ok(path);
    }
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    eprintln!("building the release binary (cargo build --release)");
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string()))
        .args(["build", "--release", "--bin", "tack"])
        .current_dir(manifest)
        .status()
        .map_err(|error| format!("run cargo build: {error}"))?;
    let path = manifest.join("target").join("release").join("tack");
    if status.success() && path.is_file() {
        Ok(path)
    } else {
        Err(format!(
            "cargo build --release failed or did not produce {}",
            path.display()
        ))
    }
}

/// Where the generated deployments go: `bench-deploy` in `TACK_BENCH_DIR`,
/// else in cargo's scratch dir for benches. It is removed before and after
/// a run.
fn scratch_dir() -> PathBuf {
    let parent = match std::env::var_os("TACK_BENCH_DIR").filter(|dir| !dir.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => option_env!("CARGO_TARGET_TMPDIR")
            .map(PathBuf::from)
            .unwrap_or_else(std::env::temp_dir),
    };
    parent.join("bench-deploy")
}

/// Moves `path`, if it exists, to `to` (created parents) on the same
/// filesystem.
fn set_aside(path: &Path, to: &Path) -> Result<(), String> {
    if !path.exists() {
        return Ok(());
    }
    if let Some(parent) = to.parent() {
        fs::create_dir_all(parent)
            .map_err(|error| format!("create {}: {error}", parent.display()))?;
    }
    fs::rename(path, to).map_err(|error| format!("move {} aside: {error}", path.display()))
}

fn remove(path: &Path) -> Result<(), String> {
    match fs::remove_dir_all(path) {
        Err(error) if error.kind() != io::ErrorKind::NotFound => {
            Err(format!("remove {}: {error}", path.display()))
        }
        _ => Ok(()),
    }
}

fn write_file(path: &Path, text: &str) -> Result<(), String> {
    fs::write(path, text).map_err(|error| format!("write {}: {error}", path.display()))
}

fn ms(duration: Duration) -> String {
    let ms = duration.as_secs_f64() * 1000.0;
    if ms >= 10_000.0 {
        format!("{:.2} s", ms / 1000.0)
    } else if ms >= 100.0 {
        format!("{ms:.0} ms")
    } else {
        format!("{ms:.1} ms")
    }
}

fn spread(figure: &Figure) -> String {
    format!(
        "{} (min {}, max {}), {} updated",
        ms(figure.median),
        ms(figure.min),
        ms(figure.max),
        figure.updated
    )
}

fn ratio(a: Duration, b: Duration) -> String {
    format!("{:.2}", a.as_secs_f64() / b.as_secs_f64())
}

fn report(rows: &[Row], total: Duration) -> String {
    let mut out = String::new();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let _ = writeln!(
        out,
        "\n## tack local: median wall time ({cores} cores, {})\n",
        revision()
    );
    let _ = writeln!(
        out,
        "| files | components | runs | full deploy | no-op | stat floor | no-op / floor \
         | 1 attribute changed | attribute / no-op | 1 source changed | source / no-op |"
    );
    let _ = writeln!(
        out,
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for row in rows {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            row.spec.total_files(),
            row.spec.components,
            row.runs,
            ms(row.full.median),
            ms(row.noop.median),
            ms(row.floor.median),
            ratio(row.noop.median, row.floor.median),
            ms(row.attribute.median),
            ratio(row.attribute.median, row.noop.median),
            ms(row.source.median),
            ratio(row.source.median, row.noop.median),
        );
    }
    if rows.len() > 1 {
        let _ = writeln!(
            out,
            "\n| growth | files | no-op | stat floor | full deploy |"
        );
        let _ = writeln!(out, "|---|---:|---:|---:|---:|");
        for pair in rows.windows(2) {
            let (a, b) = (&pair[0], &pair[1]);
            let _ = writeln!(
                out,
                "| {} -> {} | x{:.1} | x{} | x{} | x{} |",
                a.spec.total_files(),
                b.spec.total_files(),
                b.spec.total_files() as f64 / a.spec.total_files() as f64,
                ratio(b.noop.median, a.noop.median),
                ratio(b.floor.median, a.floor.median),
                ratio(b.full.median, a.full.median),
            );
        }
    }
    let _ = writeln!(
        out,
        "\nNodes updated by the last run of each scenario \
         (expected: every file, 0, one component's files, 1):\n"
    );
    let _ = writeln!(
        out,
        "| files | full deploy | no-op | 1 attribute changed | 1 source changed |"
    );
    let _ = writeln!(out, "|---:|---:|---:|---:|---:|");
    for row in rows {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} |",
            row.spec.total_files(),
            row.full.updated,
            row.noop.updated,
            row.attribute.updated,
            row.source.updated
        );
    }
    let mut unexpected = Vec::new();
    for row in rows {
        let expected = [
            ("full deploy", row.full.updated, row.spec.total_files()),
            ("no-op", row.noop.updated, 0),
            ("attribute changed", row.attribute.updated, row.spec.files),
            ("source changed", row.source.updated, 1),
        ];
        for (scenario, got, want) in expected {
            if got != want {
                unexpected.push(format!(
                    "{} files, {scenario}: {got} updated, expected {want}",
                    row.spec.total_files()
                ));
            }
        }
    }
    for line in &unexpected {
        let _ = writeln!(out, "\nwarning: {line}");
    }
    let _ = writeln!(out, "\nwhole run: {}", ms(total));
    out
}

/// The commit measured, `+dirty` when the work tree has changes.
fn revision() -> String {
    let git = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .ok()
            .filter(|output| output.status.success())
            .map(|output| String::from_utf8_lossy(&output.stdout).trim().to_string())
    };
    match git(&["rev-parse", "--short", "HEAD"]) {
        Some(commit) => {
            let dirty = git(&["status", "--porcelain", "--untracked-files=no"])
                .is_some_and(|status| !status.is_empty());
            format!("tack {commit}{}", if dirty { "+dirty" } else { "" })
        }
        None => "tack".to_string(),
    }
}
