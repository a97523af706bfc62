//! Choosing the node(s) a publish goes to.

use crate::config::PublishStrategy;

/// A healthy node as the strategies see it: its name and last PING latency in microseconds
/// (`u64::MAX` when unknown).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Candidate<'a> {
    pub(crate) name: &'a str,
    pub(crate) latency_micros: u64,
}

/// Indices into `candidates` of the `count` nodes to publish on (fewer when fewer are
/// given). `turn` is the round-robin counter, `random` a random number.
pub(crate) fn pick(
    strategy: PublishStrategy,
    channel: &str,
    candidates: &[Candidate<'_>],
    count: usize,
    turn: usize,
    random: usize,
) -> Vec<usize> {
    let n = candidates.len();
    let count = count.min(n);
    if count == 0 {
        return Vec::new();
    }
    match strategy {
        PublishStrategy::ChannelAffine => {
            // Rendezvous (highest random weight) hashing: each node scores the channel, the
            // highest score wins. Losing a node moves only the channels it won; the others
            // keep their node, so their order is not disturbed.
            let mut order: Vec<(u64, usize)> = candidates
                .iter()
                .enumerate()
                .map(|(i, c)| (score(c.name, channel), i))
                .collect();
            order.sort_unstable_by(|a, b| b.cmp(a));
            order.into_iter().take(count).map(|(_, i)| i).collect()
        }
        PublishStrategy::Random => (0..count).map(|k| (random + k) % n).collect(),
        PublishStrategy::RoundRobin => (0..count).map(|k| (turn + k) % n).collect(),
        PublishStrategy::Fastest => {
            let mut order: Vec<usize> = (0..n).collect();
            order.sort_by(|&a, &b| {
                let (a, b) = (&candidates[a], &candidates[b]);
                a.latency_micros
                    .cmp(&b.latency_micros)
                    .then_with(|| a.name.cmp(b.name))
            });
            order.truncate(count);
            order
        }
    }
}

/// A stable 64-bit score of (node, channel): FNV-1a then a SplitMix64 finaliser. Stable
/// across processes and Rust versions, so every server node maps a channel the same way.
fn score(node: &str, channel: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in node
        .as_bytes()
        .iter()
        .chain(&[0xff])
        .chain(channel.as_bytes())
    {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nodes<'a>(names: &[&'a str]) -> Vec<Candidate<'a>> {
        names
            .iter()
            .map(|&name| Candidate {
                name,
                latency_micros: u64::MAX,
            })
            .collect()
    }

    #[test]
    fn channel_affine_is_stable_and_moves_only_lost_channels() {
        let three = nodes(&["a", "b", "c"]);
        let two = nodes(&["a", "c"]);
        let mut per_node = [0usize; 3];
        for i in 0..3000 {
            let ch = format!("room:{i}");
            let first = pick(PublishStrategy::ChannelAffine, &ch, &three, 1, 0, 0)[0];
            // The same answer every time, whatever the turn or random number.
            assert_eq!(
                pick(PublishStrategy::ChannelAffine, &ch, &three, 1, 7, 9)[0],
                first
            );
            per_node[first] += 1;
            // Without "b", channels of "a" and "c" stay where they were.
            let after = two[pick(PublishStrategy::ChannelAffine, &ch, &two, 1, 0, 0)[0]].name;
            if three[first].name != "b" {
                assert_eq!(after, three[first].name);
            }
            // Redundancy 2: two distinct nodes, the first being the single choice.
            let pair = pick(PublishStrategy::ChannelAffine, &ch, &three, 2, 0, 0);
            assert_eq!(pair.len(), 2);
            assert_eq!(pair[0], first);
            assert_ne!(pair[0], pair[1]);
        }
        // Spread: each node gets a fair share.
        assert!(per_node.iter().all(|&n| n > 800), "{per_node:?}");
    }

    #[test]
    fn round_robin_random_and_fastest() {
        let c = nodes(&["a", "b", "c"]);
        assert_eq!(pick(PublishStrategy::RoundRobin, "x", &c, 1, 4, 0), vec![1]);
        assert_eq!(
            pick(PublishStrategy::RoundRobin, "x", &c, 2, 2, 0),
            vec![2, 0]
        );
        assert_eq!(pick(PublishStrategy::Random, "x", &c, 2, 0, 5), vec![2, 0]);
        let mut timed = nodes(&["a", "b", "c"]);
        timed[0].latency_micros = 300;
        timed[1].latency_micros = 100;
        timed[2].latency_micros = 200;
        assert_eq!(
            pick(PublishStrategy::Fastest, "x", &timed, 2, 0, 0),
            vec![1, 2]
        );
        assert!(pick(PublishStrategy::Fastest, "x", &[], 1, 0, 0).is_empty());
        assert_eq!(
            pick(PublishStrategy::Random, "x", &c[..1], 2, 0, 1),
            vec![0]
        );
    }
}
