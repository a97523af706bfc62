//! Runs example binaries for the examples' smoke tests: each child's output is read line by
//! line (stdout and stderr), tests wait for lines with a deadline, and every child is killed
//! when its handle drops, the test failing or not. When a test fails, the output of each of
//! its children is printed.
//!
//! Included by each example crate's `tests/smoke.rs` with
//! `#[path = "../../support/process.rs"] mod process;`.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// Upper bound of every wait.
pub const WAIT: Duration = Duration::from_secs(20);

#[derive(Default)]
struct Output {
    lines: Vec<String>,
    /// Pipes (of two) that reached end of file.
    closed: usize,
}

/// A running example binary, killed on drop.
pub struct Proc {
    name: String,
    child: Child,
    output: Arc<(Mutex<Output>, Condvar)>,
}

impl Proc {
    /// Starts `exe` with `args`, logging at `info` without colours.
    pub fn spawn(name: &str, exe: &str, args: &[&str]) -> Self {
        let mut child = Command::new(exe)
            .args(args)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name} ({exe}): {e}"));
        let output = Arc::new((Mutex::new(Output::default()), Condvar::new()));
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr = child.stderr.take().expect("piped stderr");
        read_lines(stdout, Arc::clone(&output));
        read_lines(stderr, Arc::clone(&output));
        Self {
            name: name.to_string(),
            child,
            output,
        }
    }

    /// Waits until `found` returns `Some` for the lines printed so far; panics after
    /// [`WAIT`] or when the process exits first. `found` runs with the output locked: it
    /// reads the lines it is given and calls no method of this `Proc`.
    pub fn wait_for<T>(&self, what: &str, mut found: impl FnMut(&[String]) -> Option<T>) -> T {
        let deadline = Instant::now() + WAIT;
        let (lock, changed) = &*self.output;
        let mut output = lock.lock().unwrap();
        loop {
            if let Some(value) = found(&output.lines) {
                return value;
            }
            let now = Instant::now();
            if output.closed == 2 || now >= deadline {
                let why = if output.closed == 2 {
                    "exited"
                } else {
                    "timed out"
                };
                panic!("{}: {why} waiting for {what}", self.name);
            }
            output = changed.wait_timeout(output, deadline - now).unwrap().0;
        }
    }

    /// Waits for a line containing every one of `parts`, and returns it.
    pub fn wait_line(&self, parts: &[&str]) -> String {
        self.wait_for(&format!("a line with {parts:?}"), |lines| {
            lines
                .iter()
                .find(|l| parts.iter().all(|p| l.contains(p)))
                .cloned()
        })
    }

    /// Waits for `n` lines containing every one of `parts`, and returns them.
    pub fn wait_lines(&self, n: usize, parts: &[&str]) -> Vec<String> {
        self.wait_for(&format!("{n} lines with {parts:?}"), |lines| {
            let matching = matching(lines, parts);
            (matching.len() >= n).then_some(matching)
        })
    }

    /// The lines printed so far that contain every one of `parts`.
    pub fn lines(&self, parts: &[&str]) -> Vec<String> {
        matching(&self.output.0.lock().unwrap().lines, parts)
    }

    /// The address of the first `listening … addr=<address>` line.
    pub fn listening_addr(&self) -> SocketAddr {
        let line = self.wait_line(&["listening", "addr="]);
        let addr = line
            .split_whitespace()
            .find_map(|field| field.strip_prefix("addr="))
            .expect("addr field");
        addr.parse()
            .unwrap_or_else(|e| panic!("{}: bad address in {line:?}: {e}", self.name))
    }

    /// Waits for the process to exit by itself, within [`WAIT`], and checks it succeeded.
    pub fn wait_success(&mut self) {
        let status = self.wait_exit();
        assert!(status.success(), "{} exited with {status}", self.name);
    }

    fn wait_exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            if Instant::now() >= deadline {
                panic!("{} did not exit within {WAIT:?}", self.name);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Everything printed so far.
    pub fn output(&self) -> String {
        self.output.0.lock().unwrap().lines.join("\n")
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("----- output of {} -----\n{}", self.name, self.output());
        }
    }
}

fn matching(lines: &[String], parts: &[&str]) -> Vec<String> {
    lines
        .iter()
        .filter(|l| parts.iter().all(|p| l.contains(p)))
        .cloned()
        .collect()
}

/// Reads `pipe` line by line into `output` on a thread of its own.
fn read_lines(pipe: impl Read + Send + 'static, output: Arc<(Mutex<Output>, Condvar)>) {
    std::thread::spawn(move || {
        let (lock, changed) = &*output;
        let mut pipe = BufReader::new(pipe);
        let mut line = Vec::new();
        while pipe.read_until(b'\n', &mut line).is_ok_and(|n| n > 0) {
            let text = String::from_utf8_lossy(&line);
            let text = strip_ansi(text.trim_end_matches(['\r', '\n']));
            lock.lock().unwrap().lines.push(text);
            changed.notify_all();
            line.clear();
        }
        lock.lock().unwrap().closed += 1;
        changed.notify_all();
    });
}

/// Removes ANSI escape sequences (colours), should any be printed.
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC [ parameters… final byte (a letter).
            if chars.next() == Some('[') {
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}
