//! Reading CPU time and memory of processes from `/proc` (Linux).
//!
//! CPU time is `utime + stime` from `/proc/PID/stat` (fields 14 and 15, in clock ticks, summed
//! over all threads of the process); memory is `VmRSS` from `/proc/PID/status`.

use anyhow::{anyhow, bail, Context, Result};
use serde::Serialize;

/// CPU time and resident memory of one process at one instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ProcSample {
    /// Process id (0 stands for "this process").
    pub pid: u32,
    /// User + system CPU time in clock ticks.
    pub cpu_ticks: u64,
    /// Resident set size in KiB.
    pub rss_kb: u64,
}

/// Extracts `utime + stime` (clock ticks) from the content of `/proc/PID/stat`.
///
/// The command name (field 2) is in parentheses and may itself contain spaces and
/// parentheses, so fields are counted from the last `)`.
pub fn parse_stat_cpu_ticks(stat: &str) -> Result<u64> {
    let close = stat
        .rfind(')')
        .ok_or_else(|| anyhow!("no ')' in /proc stat line"))?;
    // After ") " come fields 3 (state), 4, … ; utime is field 14 and stime field 15.
    let fields: Vec<&str> = stat[close + 1..].split_whitespace().collect();
    let field = |n: usize| -> Result<u64> {
        fields
            .get(n - 3)
            .ok_or_else(|| anyhow!("/proc stat line has no field {n}"))?
            .parse::<u64>()
            .with_context(|| format!("/proc stat field {n} is not a number"))
    };
    Ok(field(14)? + field(15)?)
}

/// Extracts a `kB` value such as `VmRSS` or `VmHWM` from the content of `/proc/PID/status`.
pub fn parse_status_kb(status: &str, key: &str) -> Option<u64> {
    status.lines().find_map(|line| {
        let rest = line.strip_prefix(key)?.strip_prefix(':')?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

/// Clock ticks per second used by `/proc/PID/stat` (`sysconf(_SC_CLK_TCK)`, usually 100).
pub fn clock_ticks_per_second() -> u64 {
    match rustix::param::clock_ticks_per_second() {
        0 => 100,
        n => n,
    }
}

/// Samples CPU time and RSS of `pid`; `pid == 0` samples this process.
pub fn sample(pid: u32) -> Result<ProcSample> {
    let dir = if pid == 0 {
        "/proc/self".to_string()
    } else {
        format!("/proc/{pid}")
    };
    let stat = std::fs::read_to_string(format!("{dir}/stat"))
        .with_context(|| format!("cannot read {dir}/stat (is process {pid} running?)"))?;
    let status = std::fs::read_to_string(format!("{dir}/status"))
        .with_context(|| format!("cannot read {dir}/status"))?;
    Ok(ProcSample {
        pid,
        cpu_ticks: parse_stat_cpu_ticks(&stat)?,
        rss_kb: parse_status_kb(&status, "VmRSS").unwrap_or(0),
    })
}

/// Samples every pid in `pids`.
pub fn sample_all(pids: &[u32]) -> Result<Vec<ProcSample>> {
    pids.iter().map(|&p| sample(p)).collect()
}

/// Resource use of a set of processes over a measured window.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Usage {
    /// Process ids measured (0 = the load generator itself).
    pub pids: Vec<u32>,
    /// Length of the measured window in seconds.
    pub window_secs: f64,
    /// CPU time consumed in the window, all processes together, in milliseconds.
    pub cpu_ms: f64,
    /// Average CPU utilisation in the window, in percent of one core.
    pub cpu_pct: f64,
    /// CPU time per operation (delivery or ack) in microseconds, when operations happened.
    pub cpu_us_per_op: Option<f64>,
    /// Total RSS at the start of the window, KiB.
    pub rss_before_kb: u64,
    /// Total RSS at the end of the window, KiB.
    pub rss_after_kb: u64,
}

impl Usage {
    /// Computes usage between two sample sets of the same processes.
    pub fn between(
        before: &[ProcSample],
        after: &[ProcSample],
        window_secs: f64,
        ops: u64,
        ticks_per_sec: u64,
    ) -> Self {
        let ticks: u64 = after
            .iter()
            .map(|a| {
                before
                    .iter()
                    .find(|b| b.pid == a.pid)
                    .map_or(0, |b| a.cpu_ticks.saturating_sub(b.cpu_ticks))
            })
            .sum();
        let cpu_ms = ticks as f64 * 1000.0 / ticks_per_sec.max(1) as f64;
        Self {
            pids: after.iter().map(|s| s.pid).collect(),
            window_secs,
            cpu_ms,
            cpu_pct: if window_secs > 0.0 {
                cpu_ms / 10.0 / window_secs
            } else {
                0.0
            },
            cpu_us_per_op: (ops > 0).then(|| cpu_ms * 1000.0 / ops as f64),
            rss_before_kb: before.iter().map(|s| s.rss_kb).sum(),
            rss_after_kb: after.iter().map(|s| s.rss_kb).sum(),
        }
    }
}

/// Raises this process's soft `RLIMIT_NOFILE` to at least `want` (bounded by the hard limit).
/// Returns the soft limit in force afterwards.
pub fn raise_nofile_limit(want: u64) -> u64 {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let cur = getrlimit(Resource::Nofile);
    let soft = cur.current.unwrap_or(u64::MAX);
    if soft >= want {
        return soft;
    }
    let target = cur.maximum.map_or(want, |hard| want.min(hard));
    let new = Rlimit {
        current: Some(target),
        maximum: cur.maximum,
    };
    match setrlimit(Resource::Nofile, new) {
        Ok(()) => target,
        Err(_) => soft,
    }
}

/// Whole-machine CPU counters from the first line of `/proc/stat` (clock ticks, all cores).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MachineTicks {
    /// Ticks spent doing anything but idling or waiting for I/O.
    pub busy: u64,
    /// All ticks.
    pub total: u64,
}

/// Parses the aggregate `cpu` line of `/proc/stat`.
pub fn parse_machine_stat(stat: &str) -> Result<MachineTicks> {
    let line = stat
        .lines()
        .find(|l| l.starts_with("cpu "))
        .ok_or_else(|| anyhow!("no aggregate cpu line in /proc/stat"))?;
    let values = line
        .split_whitespace()
        .skip(1)
        .map(|v| v.parse::<u64>())
        .collect::<Result<Vec<_>, _>>()
        .context("/proc/stat cpu line is not numeric")?;
    if values.len() < 4 {
        bail!("/proc/stat cpu line has {} fields", values.len());
    }
    // user nice system idle iowait irq softirq steal guest guest_nice; guest time is already
    // counted in user and nice.
    let total: u64 = values.iter().take(8).sum();
    let idle = values[3] + values.get(4).copied().unwrap_or(0);
    Ok(MachineTicks {
        busy: total - idle,
        total,
    })
}

/// Samples the whole machine's CPU counters.
pub fn sample_machine() -> Result<MachineTicks> {
    parse_machine_stat(&std::fs::read_to_string("/proc/stat").context("reading /proc/stat")?)
}

/// How busy the whole machine was over a window, and how much of that was neither the server
/// nor the load generator (other programs disturbing the measurement).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct MachineUsage {
    /// Number of cores.
    pub cores: usize,
    /// Busy time of all cores in percent of one core (so up to `cores × 100`).
    pub busy_pct: f64,
    /// Busy time not accounted to the measured server processes or the generator, in percent
    /// of one core.
    pub other_pct: f64,
}

impl MachineUsage {
    /// Computes machine usage between two samples given the measured processes' CPU time.
    pub fn between(
        before: MachineTicks,
        after: MachineTicks,
        window_secs: f64,
        accounted_ms: f64,
        ticks_per_sec: u64,
        cores: usize,
    ) -> Self {
        let busy_ms =
            after.busy.saturating_sub(before.busy) as f64 * 1000.0 / ticks_per_sec.max(1) as f64;
        let pct = |ms: f64| {
            if window_secs > 0.0 {
                ms / 10.0 / window_secs
            } else {
                0.0
            }
        };
        Self {
            cores,
            busy_pct: pct(busy_ms),
            other_pct: pct((busy_ms - accounted_ms).max(0.0)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STAT: &str = "12345 (cross wire) (x)) S 1 12345 12345 0 -1 4194560 1234 0 0 0 \
                        250 75 0 0 20 0 3 0 100 123456789 2048 18446744073709551615 1 1 0 0 0 \
                        0 0 0 0 0 0 0 17 1 0 0 0 0 0";

    #[test]
    fn stat_fields_after_a_tricky_comm() {
        assert_eq!(parse_stat_cpu_ticks(STAT).unwrap(), 325);
    }

    #[test]
    fn stat_errors_are_reported() {
        assert!(parse_stat_cpu_ticks("garbage").is_err());
        assert!(parse_stat_cpu_ticks("1 (a) S 1 2").is_err());
        assert!(parse_stat_cpu_ticks("1 (a) S 1 2 3 4 5 6 7 8 9 x 1").is_err());
    }

    #[test]
    fn status_values() {
        let status = "Name:\tcrosswire\nVmPeak:\t  100 kB\nVmHWM:\t    900 kB\nVmRSS:\t    812 kB\nThreads:\t3\n";
        assert_eq!(parse_status_kb(status, "VmRSS"), Some(812));
        assert_eq!(parse_status_kb(status, "VmHWM"), Some(900));
        assert_eq!(parse_status_kb(status, "VmSwap"), None);
    }

    #[test]
    fn own_process_can_be_sampled() {
        let s = sample(0).unwrap();
        assert!(s.rss_kb > 0);
        assert!(clock_ticks_per_second() > 0);
    }

    #[test]
    fn machine_stat() {
        let stat = "cpu  100 5 50 1000 20 3 2 0 7 0\ncpu0 50 2 25 500 10 1 1 0 0 0\nintr 1\n";
        let t = parse_machine_stat(stat).unwrap();
        assert_eq!(t.total, 1180);
        assert_eq!(t.busy, 160);
        assert!(parse_machine_stat("cpu0 1 2 3 4\n").is_err());
        assert!(parse_machine_stat("cpu  1 x 3 4\n").is_err());
        let u = MachineUsage::between(
            MachineTicks { busy: 0, total: 0 },
            MachineTicks {
                busy: 300,
                total: 400,
            },
            2.0,
            1000.0,
            100,
            2,
        );
        assert_eq!(u.busy_pct, 150.0);
        assert_eq!(u.other_pct, 100.0);
        assert!(sample_machine().unwrap().total > 0);
    }

    #[test]
    fn usage_between_samples() {
        let before = [
            ProcSample {
                pid: 1,
                cpu_ticks: 100,
                rss_kb: 1000,
            },
            ProcSample {
                pid: 2,
                cpu_ticks: 50,
                rss_kb: 500,
            },
        ];
        let after = [
            ProcSample {
                pid: 1,
                cpu_ticks: 300,
                rss_kb: 3000,
            },
            ProcSample {
                pid: 2,
                cpu_ticks: 150,
                rss_kb: 600,
            },
        ];
        let u = Usage::between(&before, &after, 2.0, 1_000_000, 100);
        assert_eq!(u.cpu_ms, 3000.0);
        assert_eq!(u.cpu_pct, 150.0);
        assert_eq!(u.cpu_us_per_op, Some(3.0));
        assert_eq!(u.rss_before_kb, 1500);
        assert_eq!(u.rss_after_kb, 3600);
        assert_eq!(
            Usage::between(&before, &after, 0.0, 0, 100).cpu_us_per_op,
            None
        );
    }
}
