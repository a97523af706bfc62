//! How long handlers take, by event name: one [`Histogram`] per name of a handler table
//! (client events, server events), made when a handler for the name is registered, so the
//! label set of the metric is the set of names the application registered — bounded by
//! [`MAX_TIMED_EVENTS`], past which names share the histogram `other`. A client's event
//! name is never inserted, only looked up.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crosswire_core::{Histogram, HistogramSnapshot};

use crate::sync::lock;

/// Most event names timed one by one per table; handlers of further names are timed under
/// `other`.
pub(crate) const MAX_TIMED_EVENTS: usize = 256;

/// The histograms of one handler table.
#[derive(Default)]
pub(crate) struct Timings {
    by_name: Mutex<BTreeMap<Box<str>, Arc<Histogram>>>,
    other: Arc<Histogram>,
}

impl Timings {
    /// The histogram of `name` (made on first use).
    pub(crate) fn for_name(&self, name: &str) -> Arc<Histogram> {
        let mut by_name = lock(&self.by_name);
        if let Some(h) = by_name.get(name) {
            return Arc::clone(h);
        }
        if by_name.len() >= MAX_TIMED_EVENTS {
            return Arc::clone(&self.other);
        }
        let h = Arc::new(Histogram::new());
        by_name.insert(name.into(), Arc::clone(&h));
        h
    }

    /// `(event name, counts)` of every histogram, `other` last when used.
    pub(crate) fn snapshot(&self) -> Vec<(String, HistogramSnapshot)> {
        let mut all: Vec<(String, HistogramSnapshot)> = lock(&self.by_name)
            .iter()
            .map(|(name, h)| (name.to_string(), h.snapshot()))
            .collect();
        let other = self.other.snapshot();
        if other.count > 0 {
            all.push(("other".to_string(), other));
        }
        all
    }
}

/// A handler run being timed: observed into its histogram when finished.
pub(crate) struct Timing<H> {
    histogram: H,
    started: Instant,
}

impl<H: AsRef<Histogram>> Timing<H> {
    pub(crate) fn start(histogram: H) -> Self {
        Self {
            histogram,
            started: Instant::now(),
        }
    }

    pub(crate) fn finish(self) {
        self.histogram.as_ref().observe(self.started.elapsed());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_bounded() {
        let t = Timings::default();
        let a = t.for_name("a");
        assert!(Arc::ptr_eq(&a, &t.for_name("a")));
        for i in 0..MAX_TIMED_EVENTS * 2 {
            t.for_name(&format!("e{i}"));
        }
        let spill = t.for_name("late");
        assert!(Arc::ptr_eq(&spill, &t.other));
        spill.observe(std::time::Duration::from_millis(1));
        let snapshot = t.snapshot();
        assert_eq!(snapshot.len(), MAX_TIMED_EVENTS + 1);
        assert_eq!(
            snapshot.last().map(|(n, s)| (n.as_str(), s.count)),
            Some(("other", 1))
        );
    }
}
