//! What a person sees while a deploy runs: a step says when it starts as
//! well as when it ends; on a terminal one live status line on stderr
//! names what runs and for how long; on a pipe there are plain lines only,
//! no `\r` and no escape codes.

use std::io::{BufRead, BufReader, Read};
use std::process::Stdio;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::support::Deployment;

const START: &str = "Running App > Command(slow) ...";
const END: &str = "Updating App > Command(slow)";

/// A component whose one step takes two seconds.
fn slow_step() -> Deployment {
    Deployment::new()
        .env("dev", "[hosts]\nlocalhost = app\n")
        .component("app", "[command:slow]\nrun = sleep 2\n")
}

#[test]
fn a_long_step_prints_its_start_line_before_it_ends() {
    let d = slow_step();
    let mut child = d
        .tack_command(&["local", "dev"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start tack");
    // Each line with the moment it arrived, read as tack prints it.
    let stdout = child.stdout.take().unwrap();
    let (send, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = send.send((line, Instant::now()));
        }
    });
    let arrived: Vec<(String, Instant)> = lines.iter().collect();
    assert!(child.wait().unwrap().success());
    let printed: Vec<&str> = arrived.iter().map(|(line, _)| line.as_str()).collect();
    let when = |wanted: &str| {
        arrived
            .iter()
            .find(|(line, _)| line == wanted)
            .unwrap_or_else(|| panic!("no line `{wanted}` in {printed:#?}"))
            .1
    };
    let (started, ended) = (when(START), when(END));
    // The step sleeps two seconds; its start line came while it slept.
    assert!(
        ended.duration_since(started) >= Duration::from_secs(1),
        "`{START}` came only {:?} before `{END}`: {printed:#?}",
        ended.duration_since(started)
    );
}

#[test]
fn piped_output_is_plain_lines() {
    let d = slow_step();
    let out = d.tack(&["local", "dev"]).success();
    for (stream, text) in [("stdout", &out.stdout), ("stderr", &out.stderr)] {
        assert!(
            !text.contains('\r') && !text.contains('\x1b'),
            "{stream} holds `\\r` or an escape code:\n{text:?}"
        );
    }
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines[..2], [START, END], "{out}");
    assert_eq!(lines.len(), 3, "{out}");
}

#[test]
fn on_a_terminal_the_status_line_shows_what_runs_and_for_how_long() {
    let d = slow_step();
    let size = nix::pty::Winsize {
        ws_row: 24,
        ws_col: 80,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    let pty = nix::pty::openpty(Some(&size), None).expect("open a pseudo-terminal");
    let mut child = d
        .tack_command(&["local", "dev"])
        .env("TERM", "xterm")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(pty.slave))
        .spawn()
        .expect("start tack");
    // Read the terminal while tack runs: a full terminal would block it.
    let mut terminal = std::fs::File::from(pty.master);
    let reader = std::thread::spawn(move || {
        let mut seen = Vec::new();
        let mut buffer = [0; 4096];
        // Once tack and its children closed the terminal, reading fails
        // (EIO): that is the end.
        while let Ok(n @ 1..) = terminal.read(&mut buffer) {
            seen.extend_from_slice(&buffer[..n]);
        }
        String::from_utf8_lossy(&seen).into_owned()
    });
    let mut stdout = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    assert!(child.wait().unwrap().success());
    drop(child);
    let terminal = reader.join().unwrap();
    assert!(
        terminal.contains("Running App > Command(slow) (1s)"),
        "the terminal never showed the step with its time:\n{terminal:?}"
    );
    // stdout is a pipe here: the same plain lines as ever.
    assert!(
        !stdout.contains('\r') && !stdout.contains('\x1b'),
        "{stdout:?}"
    );
    assert!(stdout.starts_with(&format!("{START}\n{END}\n")), "{stdout}");
}
