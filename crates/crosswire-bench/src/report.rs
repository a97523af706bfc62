//! Scenario reports: a human-readable summary, a JSON document, and a one-line row for the
//! markdown table printed by `crosswire-bench table`.

use crate::procfs::{MachineUsage, Usage};
use crate::stats::LatencySummary;
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::fmt::Write as _;

/// The result of one scenario run.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Scenario name (`fanout`, `burst`, `echo`, `idle`).
    pub scenario: String,
    /// Parameters the scenario ran with.
    pub params: serde_json::Value,
    /// Scenario-specific results (counts, rates, times).
    pub results: serde_json::Value,
    /// Latency percentiles, when the scenario measures latency.
    pub latency: Option<LatencySummary>,
    /// Resource use of the server processes (`--server-pid`), when given.
    pub server: Option<Usage>,
    /// Resource use of the load generator itself.
    pub client: Option<Usage>,
    /// CPU use of the whole machine in the window (shows interference by other programs).
    pub machine: Option<MachineUsage>,
    /// Summary row for the markdown table.
    pub row: Row,
    /// Lines of the human-readable summary (not serialised).
    #[serde(skip)]
    pub lines: Vec<String>,
}

/// One row of the results table; every cell is preformatted text.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Row {
    /// Scenario name.
    pub scenario: String,
    /// The load applied, e.g. `1000 rcv × 200 msg/s × 100 B, 10 s`.
    pub load: String,
    /// Main throughput figure.
    pub throughput: String,
    /// Loss / duplicates / failures.
    pub loss: String,
    /// Latency p50 / p99 / p99.9 / max.
    pub latency: String,
    /// Server CPU per operation and utilisation.
    pub server_cpu: String,
    /// Server RSS.
    pub server_rss: String,
    /// Load generator CPU utilisation.
    pub client_cpu: String,
    /// CPU used by other programs during the window.
    #[serde(default)]
    pub other_cpu: String,
}

impl Report {
    /// Renders the human-readable summary.
    pub fn human(&self) -> String {
        let mut s = format!("== {} ==\n", self.scenario);
        for l in &self.lines {
            let _ = writeln!(s, "  {l}");
        }
        if let Some(lat) = &self.latency {
            let _ = writeln!(s, "  latency      {}", latency_cell(lat));
        }
        if let Some(u) = &self.server {
            let _ = writeln!(
                s,
                "  server       cpu {:.0} ms in {:.2} s ({:.0}% of a core){}, rss {} -> {}",
                u.cpu_ms,
                u.window_secs,
                u.cpu_pct,
                u.cpu_us_per_op
                    .map(|v| format!(", {v:.2} µs/op"))
                    .unwrap_or_default(),
                kib(u.rss_before_kb),
                kib(u.rss_after_kb)
            );
        }
        if let Some(u) = &self.client {
            let _ = writeln!(
                s,
                "  generator    cpu {:.0} ms ({:.0}% of a core), rss {}",
                u.cpu_ms,
                u.cpu_pct,
                kib(u.rss_after_kb)
            );
        }
        if let Some(m) = &self.machine {
            let _ = writeln!(
                s,
                "  machine      {:.0}% busy of {}00%, other programs {:.0}%{}",
                m.busy_pct,
                m.cores,
                m.other_pct,
                if m.other_pct >= 20.0 {
                    " — results disturbed by other load"
                } else {
                    ""
                }
            );
        }
        s
    }

    /// Fills the server and client cells of the row from the usage figures.
    pub fn fill_usage_cells(&mut self) {
        if let Some(u) = &self.server {
            self.row.server_cpu = match u.cpu_us_per_op {
                Some(v) if self.scenario != "idle" => {
                    format!("{v:.2} µs/op ({:.0}%)", u.cpu_pct)
                }
                _ => format!("{:.0} ms ({:.0}%)", u.cpu_ms, u.cpu_pct),
            };
            self.row.server_rss = kib(u.rss_after_kb);
        }
        if let Some(u) = &self.client {
            self.row.client_cpu = format!("{:.0}%", u.cpu_pct);
        }
        if let Some(m) = &self.machine {
            self.row.other_cpu = format!("{:.0}%", m.other_pct);
        }
    }
}

/// The summary line of the bytes the clients read (and, when counted, wrote) on their
/// sockets in the measured window, TLS records and WebSocket headers included, per `op`
/// (delivery, ack).
pub fn wire_line(read: u64, written: Option<u64>, ops: u64, op: &str) -> String {
    let per = |b: u64| if ops > 0 { b as f64 / ops as f64 } else { 0.0 };
    let mut line = format!(
        "wire         clients read {} B ({:.1} B/{op})",
        group(read),
        per(read)
    );
    if let Some(w) = written {
        let _ = write!(line, ", wrote {} B ({:.1} B/{op})", group(w), per(w));
    }
    line
}

/// The `wire` object of a report's results: bytes the clients read (and wrote, when
/// counted) on their sockets in the window, and per delivery or ack.
pub fn wire_json(read: u64, written: Option<u64>, ops: u64) -> serde_json::Value {
    let per = |b: u64| (ops > 0).then(|| b as f64 / ops as f64);
    serde_json::json!({
        "bytes_read": read, "bytes_written": written,
        "read_per_op": per(read), "written_per_op": written.and_then(per),
    })
}

/// `p50 / p99 / p99.9 / max` in milliseconds.
pub fn latency_cell(l: &LatencySummary) -> String {
    format!(
        "{} / {} / {} / {} ms",
        ms(l.p50_us),
        ms(l.p99_us),
        ms(l.p999_us),
        ms(l.max_us)
    )
}

/// Formats microseconds as milliseconds with adaptive precision.
pub fn ms(us: u64) -> String {
    let v = us as f64 / 1000.0;
    if v < 10.0 {
        format!("{v:.2}")
    } else if v < 100.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.0}")
    }
}

/// Formats KiB as MiB.
pub fn kib(kb: u64) -> String {
    format!("{:.1} MiB", kb as f64 / 1024.0)
}

/// Formats a rate with thousands grouping, e.g. `199,874/s`.
pub fn rate(v: f64) -> String {
    format!("{}/s", group(v.round() as u64))
}

/// Groups digits by thousands: `1234567` → `1,234,567`.
pub fn group(v: u64) -> String {
    let s = v.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Builds the markdown table from the JSON reports (one document per file).
pub fn markdown_table(json_docs: &[String]) -> Result<String> {
    #[derive(Deserialize)]
    struct Doc {
        row: Row,
    }
    let mut out = String::from(
        "| scenario | load | throughput | loss / dup / failed | latency p50 / p99 / p99.9 / max | server CPU | server RSS | generator CPU | other load |\n\
         |---|---|---|---|---|---|---|---|---|\n",
    );
    for (i, doc) in json_docs.iter().enumerate() {
        let d: Doc =
            serde_json::from_str(doc).with_context(|| format!("report #{i} is not valid"))?;
        let r = d.row;
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            r.scenario,
            r.load,
            r.throughput,
            r.loss,
            r.latency,
            r.server_cpu,
            r.server_rss,
            r.client_cpu,
            r.other_cpu
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn number_formatting() {
        assert_eq!(group(0), "0");
        assert_eq!(group(999), "999");
        assert_eq!(group(1000), "1,000");
        assert_eq!(group(1234567), "1,234,567");
        assert_eq!(rate(199_874.4), "199,874/s");
        assert_eq!(ms(1234), "1.23");
        assert_eq!(ms(12_345), "12.3");
        assert_eq!(ms(123_456), "123");
        assert_eq!(kib(2048), "2.0 MiB");
    }

    #[test]
    fn table_from_reports() {
        let report = Report {
            scenario: "echo".into(),
            params: serde_json::json!({}),
            results: serde_json::json!({}),
            latency: None,
            server: None,
            client: None,
            machine: None,
            row: Row {
                scenario: "echo".into(),
                load: "100 × 4".into(),
                ..Row::default()
            },
            lines: vec![],
        };
        let json = serde_json::to_string(&report).unwrap();
        let t = markdown_table(&[json]).unwrap();
        assert!(t.contains("| echo | 100 × 4 |"), "{t}");
        assert!(markdown_table(&["{}".into()]).is_err());
    }
}
