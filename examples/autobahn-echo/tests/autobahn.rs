//! The Autobahn TestSuite's fuzzingclient cases, sections 1–10 and, with permessage-deflate
//! on, 12–13, against `autobahn-echo`.
//!
//! The cases are Autobahn's own case files, run by kosoku (PyPI, a runner that needs no
//! Python 2) from a Python venv: `$AUTOBAHN_VENV`, else `target/autobahn-venv` of the
//! workspace, where `scripts/test.sh` installs it. kosoku writes Autobahn's report; the test
//! reads its `index.json` and fails unless every case's verdict is OK, NON-STRICT or
//! INFORMATIONAL (and its closing behaviour OK or INFORMATIONAL), listing the cases that are
//! not. docs/PROTOCOL.md ("Autobahn TestSuite") has the results.

#[path = "../../support/process.rs"]
mod process;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use process::Proc;
use serde_json::Value;

/// The kosoku version `scripts/test.sh` installs, and this test was checked with.
const KOSOKU_VERSION: &str = "0.1.0";
/// The sections run, one kosoku run each, with the longest each may take: 1–10 (Autobahn
/// has no section 8; the slowest takes under 10 s on 2 cores in a debug build), then 12
/// and 13, permessage-deflate (90 and 126 cases of 1,000 compressed messages each, about
/// 4.5 min together on 2 cores with two cases at a time, most of it the runner's own work). A case waits as long as it takes for what it
/// expects, so a server that does not answer makes its section hang until the deadline.
const SECTIONS: &[(u32, Duration)] = &[
    (1, Duration::from_secs(60)),
    (2, Duration::from_secs(60)),
    (3, Duration::from_secs(60)),
    (4, Duration::from_secs(60)),
    (5, Duration::from_secs(60)),
    (6, Duration::from_secs(60)),
    (7, Duration::from_secs(60)),
    (9, Duration::from_secs(60)),
    (10, Duration::from_secs(60)),
    (12, Duration::from_secs(300)),
    (13, Duration::from_secs(400)),
];
/// Cases kosoku runs at once: the compression sections are bound by the runner's own
/// per-message work, so two at a time use both cores.
const PARALLELISM: &str = "2";
/// Longest the whole run may take.
const RUN_TIMEOUT: Duration = Duration::from_secs(900);
/// Accepted verdicts of a case's message exchange, and of its closing handshake.
const ACCEPTED: &[&str] = &["OK", "NON-STRICT", "INFORMATIONAL"];
const ACCEPTED_CLOSE: &[&str] = &["OK", "INFORMATIONAL"];

/// The venv holding kosoku.
fn venv() -> PathBuf {
    match std::env::var_os("AUTOBAHN_VENV") {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/autobahn-venv"),
    }
}

/// The installed kosoku's version, read by the venv's Python.
fn kosoku_version(venv: &Path) -> Option<String> {
    let out = Command::new(venv.join("bin/python"))
        .args([
            "-c",
            "import importlib.metadata as m; print(m.version('kosoku'))",
        ])
        .stderr(Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// A fresh, empty directory for kosoku's report (one per run, so that runs at the same time
/// do not mix); removed when every case passed, kept for a look otherwise.
fn report_dir() -> PathBuf {
    let name = format!("autobahn-report-{}", std::process::id());
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    if dir.exists() {
        std::fs::remove_dir_all(&dir).unwrap_or_else(|e| panic!("cannot clear {dir:?}: {e}"));
    }
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("cannot create {dir:?}: {e}"));
    dir
}

/// Runs kosoku on the cases of `section` against `url`, its report going into `dir`; killed
/// past `timeout`. Returns its output, or why it did not finish.
fn run_kosoku(
    kosoku: &Path,
    url: &str,
    section: u32,
    dir: &Path,
    timeout: Duration,
) -> Result<String, String> {
    std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("cannot create {dir:?}: {e}"));
    let log_path = dir.join("kosoku.log");
    let log = File::create(&log_path).expect("kosoku log file");
    let mut cmd = Command::new(kosoku);
    cmd.arg(url)
        .args(["--include", &format!("{section}.*")])
        .args(["--parallelism", PARALLELISM]);
    cmd.arg("--outdir")
        .arg(dir)
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("kosoku log file"))
        .stderr(log);
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {kosoku:?}: {e}"));
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().expect("waiting for kosoku") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!(
                "section {section} did not finish within {timeout:?}: one of its cases still \
                 waited for the server (run `{} {url} -i '{section}.*'` by hand to see which)",
                kosoku.display()
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let log = std::fs::read_to_string(&log_path).unwrap_or_default();
    // Exit 1 when a case failed: the report tells which. Anything else is kosoku failing.
    assert!(
        status.success() || status.code() == Some(1),
        "kosoku exited with {status} on section {section}; its output:\n{log}"
    );
    Ok(log)
}

/// One case of the report.
struct Case {
    id: String,
    behavior: String,
    behavior_close: String,
    duration_ms: u64,
    report: PathBuf,
}

impl Case {
    fn section(&self) -> u32 {
        self.id
            .split('.')
            .next()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0)
    }

    fn passed(&self) -> bool {
        ACCEPTED.contains(&self.behavior.as_str())
            && ACCEPTED_CLOSE.contains(&self.behavior_close.as_str())
    }

    /// The case's description and results, from its own report file.
    fn details(&self) -> String {
        let text = std::fs::read_to_string(&self.report).unwrap_or_default();
        let case: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        let field = |name: &str| case[name].as_str().unwrap_or("?").replace("<br>", " ");
        format!(
            "{}: {} / close {}\n    description: {}\n    result: {}\n    closing: {}\n    \
             close code received: {}",
            self.id,
            self.behavior,
            self.behavior_close,
            field("description"),
            field("result"),
            field("resultClose"),
            case["remoteCloseCode"],
        )
    }
}

/// The cases of kosoku's `index.json` (`{agent: {case id: {behavior, behaviorClose, ...}}}`).
fn read_index(dir: &Path, log: &str) -> Vec<Case> {
    let path = dir.join("index.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("no report at {path:?} ({e}); kosoku's output:\n{log}"));
    let index: Value = serde_json::from_str(&text).expect("index.json is JSON");
    let agents = index.as_object().expect("index.json: an object of agents");
    assert_eq!(agents.len(), 1, "one agent in the report: {agents:?}");
    let (_, cases) = agents.iter().next().expect("one agent");
    let str_field = |case: &Value, name: &str| {
        case[name]
            .as_str()
            .unwrap_or_else(|| panic!("index.json: {name} missing in {case}"))
            .to_string()
    };
    let mut all: Vec<Case> = cases
        .as_object()
        .expect("index.json: an object of cases")
        .iter()
        .map(|(id, case)| Case {
            id: id.clone(),
            behavior: str_field(case, "behavior"),
            behavior_close: str_field(case, "behaviorClose"),
            duration_ms: case["duration"].as_u64().unwrap_or(0),
            report: dir.join(str_field(case, "reportfile")),
        })
        .collect();
    let key = |id: &str| -> Vec<u32> { id.split('.').map(|p| p.parse().unwrap_or(0)).collect() };
    all.sort_by_key(|case| key(&case.id));
    all
}

/// The per-section summary as a Markdown table (docs/PROTOCOL.md has a copy).
fn summary(cases: &[Case]) -> String {
    #[derive(Default)]
    struct Row {
        cases: usize,
        ok: usize,
        non_strict: usize,
        informational: usize,
        failed: usize,
        ms: u64,
    }
    let mut rows: BTreeMap<u32, Row> = BTreeMap::new();
    for case in cases {
        let row = rows.entry(case.section()).or_default();
        row.cases += 1;
        row.ms += case.duration_ms;
        match case.behavior.as_str() {
            _ if !case.passed() => row.failed += 1,
            "OK" => row.ok += 1,
            "NON-STRICT" => row.non_strict += 1,
            _ => row.informational += 1,
        }
    }
    let mut out = String::from(
        "| section | cases | OK | NON-STRICT | INFORMATIONAL | FAILED | time |\n\
         |---|---|---|---|---|---|---|\n",
    );
    for (section, r) in &rows {
        let _ = writeln!(
            out,
            "| {section} | {} | {} | {} | {} | {} | {:.1} s |",
            r.cases,
            r.ok,
            r.non_strict,
            r.informational,
            r.failed,
            r.ms as f64 / 1000.0
        );
    }
    out
}

#[test]
fn autobahn_fuzzingclient_sections_1_to_13() {
    let venv = venv();
    let kosoku = venv.join("bin/kosoku");
    let version = kosoku_version(&venv);
    assert!(
        kosoku.is_file() && version.is_some(),
        "kosoku is not installed in {venv:?}. `scripts/test.sh` installs it; by hand: \
         `python3 -m venv target/autobahn-venv && target/autobahn-venv/bin/pip install \
         kosoku=={KOSOKU_VERSION}` (Debian: `apt-get install python3-venv` first), or set \
         AUTOBAHN_VENV to a venv that has it. Leave this test out with \
         `cargo test --workspace --exclude autobahn-echo`."
    );
    let version = version.unwrap_or_default();
    if version != KOSOKU_VERSION {
        eprintln!("note: kosoku {version} installed; this test was checked with {KOSOKU_VERSION}");
    }

    let server = Proc::spawn("autobahn-echo", env!("CARGO_BIN_EXE_autobahn-echo"), &["0"]);
    let line = server.wait_line(&["listening on "]);
    let addr = line
        .rsplit(' ')
        .next()
        .unwrap_or_default()
        .trim()
        .to_string();
    let url = format!("ws://{addr}");

    let dir = report_dir();
    let started = Instant::now();
    let mut cases = Vec::new();
    let mut unfinished = Vec::new();
    for &(section, timeout) in SECTIONS {
        let left = RUN_TIMEOUT.saturating_sub(started.elapsed());
        let section_dir = dir.join(format!("section-{section}"));
        match run_kosoku(&kosoku, &url, section, &section_dir, left.min(timeout)) {
            Ok(log) => {
                let ran = read_index(&section_dir, &log);
                let others: Vec<&str> = ran
                    .iter()
                    .filter(|c| c.section() != section)
                    .map(|c| c.id.as_str())
                    .collect();
                assert!(others.is_empty(), "section {section} ran {others:?}");
                assert!(
                    !ran.is_empty(),
                    "no case of section {section} ran; kosoku's output:\n{log}"
                );
                cases.extend(ran);
            }
            Err(why) => unfinished.push(why),
        }
    }
    let elapsed = started.elapsed();

    println!(
        "Autobahn TestSuite (kosoku {version}), {} cases in {:.1} s:\n{}",
        cases.len(),
        elapsed.as_secs_f64(),
        summary(&cases)
    );
    let failed: Vec<String> = cases
        .iter()
        .filter(|c| !c.passed())
        .map(Case::details)
        .collect();
    assert!(
        failed.is_empty() && unfinished.is_empty(),
        "{} of {} Autobahn cases failed, {} sections did not finish (reports: \
         {}/section-*/index.html):\n{}",
        failed.len(),
        cases.len(),
        unfinished.len(),
        dir.display(),
        unfinished
            .iter()
            .chain(&failed)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
    let _ = std::fs::remove_dir_all(&dir);
}
