//! A node's `GET /metrics` (OpenMetrics text, as Prometheus scrapes it from `crosswire
//! serve`), read over the same port as the WebSockets and parsed into `name{labels}` →
//! value, so that a run's counters can be compared before and after.

use crate::server_stats;
use crate::ws::ConnectOptions;
use anyhow::{anyhow, bail, Context, Result};
use std::collections::BTreeMap;

/// One scrape: every sample by its name with labels, e.g. `crosswire_connections` or
/// `crosswire_closes_total{code="1000"}`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Scrape {
    /// `name{labels}` → value.
    pub samples: BTreeMap<String, f64>,
}

/// Scrapes `GET /metrics` of the node at `base` (a `ws://` or `wss://` URL).
pub async fn scrape(base: &str, options: &ConnectOptions) -> Result<Scrape> {
    let body = server_stats::get(base, "/metrics", options).await?;
    let text = String::from_utf8(body).context("/metrics is not UTF-8")?;
    parse(&text).with_context(|| format!("/metrics of {base}"))
}

/// Parses OpenMetrics text (it must end with `# EOF`; comment lines are skipped), with the
/// parser the tests share ([`crosswire_testkit::parse_metrics`]).
pub fn parse(text: &str) -> Result<Scrape> {
    let samples = crosswire_testkit::parse_metrics(text).map_err(|e| anyhow!(e))?;
    Ok(Scrape { samples })
}

impl Scrape {
    /// The value of `key` (`name{labels}`); an error naming what the scrape has when absent.
    pub fn value(&self, key: &str) -> Result<f64> {
        self.samples.get(key).copied().ok_or_else(|| {
            anyhow!(
                "no {key} in the scrape (has {:?})",
                self.samples.keys().collect::<Vec<_>>()
            )
        })
    }

    /// A counter's (integer) value, e.g. `crosswire_local_deliveries_total`.
    pub fn count(&self, key: &str) -> Result<u64> {
        let v = self.value(key)?;
        if v < 0.0 || v.fract() != 0.0 {
            bail!("{key} is {v}, not a count");
        }
        Ok(v as u64)
    }

    /// How much counter `key` grew since `before`; an error if it went down.
    pub fn delta(&self, before: &Scrape, key: &str) -> Result<u64> {
        let (b, a) = (before.count(key)?, self.count(key)?);
        a.checked_sub(b)
            .ok_or_else(|| anyhow!("{key} went down from {b} to {a}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_openmetrics_and_takes_deltas() {
        let before = parse(
            "# HELP crosswire_x_total X.\n# TYPE crosswire_x_total counter\ncrosswire_x_total 3\n\
             crosswire_closes_total{code=\"1000\"} 1\ncrosswire_connections 2\n# EOF\n",
        )
        .unwrap();
        let after = parse("crosswire_x_total 10\ncrosswire_connections 0\n# EOF\n").unwrap();
        assert_eq!(
            before
                .count("crosswire_closes_total{code=\"1000\"}")
                .unwrap(),
            1
        );
        assert_eq!(after.delta(&before, "crosswire_x_total").unwrap(), 7);
        assert!(before.delta(&after, "crosswire_x_total").is_err());
        assert!(after.value("crosswire_nothing").is_err());
        assert!(parse("crosswire_x_total 1\n").is_err());
        assert!(parse("crosswire_x_total one\n# EOF\n").is_err());
    }
}
