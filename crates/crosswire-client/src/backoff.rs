//! The reconnect schedule, as a pure function so it can be tested without sockets or clocks.

use std::time::Duration;

/// Delay before reconnect attempt number `attempt` (1-based).
///
/// The first `fast_threshold` attempts wait `fast`. Attempt `n` after that waits
/// `min(2^(n - fast_threshold) * fast + jitter, max)`, and never less than `fast` (so a `max`
/// below `fast` still yields `fast`). `jitter` is the random part the caller drew from
/// `0..fast`; passing it in keeps this function deterministic.
///
/// ```
/// use std::time::Duration;
/// use crosswire_client::reconnect_delay;
///
/// let fast = Duration::from_secs(3);
/// let max = Duration::from_secs(120);
/// assert_eq!(reconnect_delay(1, 3, fast, max, Duration::ZERO), fast);
/// assert_eq!(reconnect_delay(3, 3, fast, max, Duration::ZERO), fast);
/// // 2^(4 - 3) * 3 s + 1 s
/// assert_eq!(reconnect_delay(4, 3, fast, max, Duration::from_secs(1)), Duration::from_secs(7));
/// assert_eq!(reconnect_delay(30, 3, fast, max, Duration::ZERO), max);
/// ```
pub fn reconnect_delay(
    attempt: u32,
    fast_threshold: u32,
    fast: Duration,
    max: Duration,
    jitter: Duration,
) -> Duration {
    if attempt <= fast_threshold {
        return fast;
    }
    let exponent = attempt - fast_threshold;
    // 2^32 × any interval already exceeds every sensible maximum; saturate instead of overflowing.
    let factor = 1u32.checked_shl(exponent.min(31)).unwrap_or(u32::MAX);
    let grown = fast
        .checked_mul(factor)
        .unwrap_or(Duration::MAX)
        .saturating_add(jitter);
    grown.min(max).max(fast)
}

/// Draws the random part of a delay, uniformly from `0..fast` (zero when `fast` is zero).
pub(crate) fn draw_jitter(fast: Duration) -> Duration {
    use rand::Rng;
    let micros = u64::try_from(fast.as_micros()).unwrap_or(u64::MAX);
    if micros == 0 {
        return Duration::ZERO;
    }
    Duration::from_micros(rand::thread_rng().gen_range(0..micros))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: fn(u64) -> Duration = Duration::from_millis;

    #[test]
    fn fast_attempts_wait_the_fast_interval() {
        for attempt in 0..=3 {
            assert_eq!(
                reconnect_delay(attempt, 3, MS(3000), MS(120_000), MS(999)),
                MS(3000)
            );
        }
    }

    #[test]
    fn later_attempts_grow_exponentially_with_jitter() {
        let fast = MS(3000);
        let max = MS(120_000);
        assert_eq!(reconnect_delay(4, 3, fast, max, MS(0)), MS(6000));
        assert_eq!(reconnect_delay(4, 3, fast, max, MS(2999)), MS(8999));
        assert_eq!(reconnect_delay(5, 3, fast, max, MS(500)), MS(12_500));
        assert_eq!(reconnect_delay(7, 3, fast, max, MS(0)), MS(48_000));
        assert_eq!(reconnect_delay(8, 3, fast, max, MS(0)), MS(96_000));
        assert_eq!(reconnect_delay(9, 3, fast, max, MS(0)), max);
    }

    #[test]
    fn capped_by_max_and_never_below_fast() {
        assert_eq!(reconnect_delay(10, 0, MS(100), MS(1000), MS(50)), MS(1000));
        // A maximum below the fast interval still waits the fast interval.
        assert_eq!(reconnect_delay(10, 0, MS(100), MS(10), MS(0)), MS(100));
        // Huge attempt numbers saturate rather than overflow.
        assert_eq!(
            reconnect_delay(u32::MAX, 0, MS(100), MS(5000), MS(99)),
            MS(5000)
        );
        assert_eq!(
            reconnect_delay(u32::MAX, 3, Duration::MAX, Duration::MAX, Duration::MAX),
            Duration::MAX
        );
    }

    #[test]
    fn threshold_zero_grows_from_the_first_attempt() {
        assert_eq!(reconnect_delay(1, 0, MS(50), MS(10_000), MS(0)), MS(100));
        assert_eq!(reconnect_delay(2, 0, MS(50), MS(10_000), MS(0)), MS(200));
    }

    #[test]
    fn jitter_stays_below_fast() {
        assert_eq!(draw_jitter(Duration::ZERO), Duration::ZERO);
        for _ in 0..1000 {
            assert!(draw_jitter(MS(10)) < MS(10));
        }
    }
}
