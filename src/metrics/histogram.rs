//! Latency histograms in Prometheus's shape (`_bucket{le=...}`, `_sum`,
//! `_count`), kept as the other counters are: each worker adds to a shard
//! of its own, so an observation is two uncontended atomic additions, and a
//! scrape sums the shards and makes the buckets cumulative.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds in microseconds: from 1 ms (a cached page, a refusal) to a
/// minute (nginx's and gunicorn's default timeouts are 60 and 30 s); past
/// the last, `+Inf`. Prometheus's client libraries' defaults, widened at
/// both ends.
const BOUNDS_US: [u64; 15] = [
    1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000, 2_500_000,
    5_000_000, 10_000_000, 30_000_000, 60_000_000,
];
/// The same bounds as the page writes them.
const LE: [&str; 15] = [
    "0.001", "0.0025", "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5",
    "10", "30", "60",
];
const SLOTS: usize = BOUNDS_US.len() + 1;
const SHARDS: usize = super::SHARDS;

#[repr(align(128))]
#[derive(Default)]
struct Shard {
    /// Observations by slot (not cumulative): slot i holds those above
    /// bound i-1 and at most bound i; the last, those past every bound.
    slots: [AtomicU64; SLOTS],
    sum_us: AtomicU64,
}

#[derive(Default)]
pub struct Histogram {
    shards: [Shard; SHARDS],
}

impl Histogram {
    pub fn observe(&self, d: Duration) {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        let slot = BOUNDS_US.partition_point(|&b| b < us);
        let shard = &self.shards[super::shard_index()];
        shard.slots[slot].fetch_add(1, Ordering::Relaxed);
        shard.sum_us.fetch_add(us, Ordering::Relaxed);
    }

    /// Observations so far; 0 means the series are left off the page.
    pub fn count(&self) -> u64 {
        self.shards
            .iter()
            .flat_map(|s| &s.slots)
            .map(|c| c.load(Ordering::Relaxed))
            .sum()
    }

    /// The series of `name` with `labels` (`a="x",b="y"`, or empty): a
    /// cumulative bucket per bound and `+Inf`, the sum in seconds, the
    /// count. The shards are read one after another while requests go on,
    /// so a scrape can count an observation in its slot and not yet in the
    /// sum; the next scrape has both.
    pub fn render(&self, out: &mut String, name: &str, labels: &str) {
        let mut slots = [0u64; SLOTS];
        let mut sum_us = 0u64;
        for s in &self.shards {
            for (total, c) in slots.iter_mut().zip(&s.slots) {
                *total += c.load(Ordering::Relaxed);
            }
            sum_us = sum_us.wrapping_add(s.sum_us.load(Ordering::Relaxed));
        }
        let sep = if labels.is_empty() { "" } else { "," };
        let mut below = 0;
        for (le, n) in LE.iter().chain(["+Inf"].iter()).zip(slots) {
            below += n;
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{le}\"}} {below}");
        }
        let braces = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let _ = writeln!(
            out,
            "{name}_sum{braces} {}.{:06}",
            sum_us / 1_000_000,
            sum_us % 1_000_000
        );
        let _ = writeln!(out, "{name}_count{braces} {below}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(h: &Histogram, labels: &str) -> String {
        let mut out = String::new();
        h.render(&mut out, "t_seconds", labels);
        out
    }

    #[test]
    fn each_bound_holds_what_is_at_most_it_and_the_buckets_add_up() {
        let h = Histogram::default();
        for ms in [0, 1, 2, 50, 51, 999, 60_000, 61_000] {
            h.observe(Duration::from_millis(ms));
        }
        h.observe(Duration::from_micros(1_001));
        let p = page(&h, "");
        for line in [
            // 0 ms and exactly 1 ms are at most 1 ms; 1.001 ms is not.
            "t_seconds_bucket{le=\"0.001\"} 2",
            "t_seconds_bucket{le=\"0.0025\"} 4",
            "t_seconds_bucket{le=\"0.05\"} 5",
            "t_seconds_bucket{le=\"0.1\"} 6",
            "t_seconds_bucket{le=\"1\"} 7",
            "t_seconds_bucket{le=\"60\"} 8",
            "t_seconds_bucket{le=\"+Inf\"} 9",
            "t_seconds_sum 122.104001",
            "t_seconds_count 9",
        ] {
            assert!(p.lines().any(|l| l == line), "{line} in:\n{p}");
        }
        assert_eq!(h.count(), 9);
        // Cumulative: never fewer below a higher bound.
        let counts: Vec<u64> = p
            .lines()
            .filter(|l| l.contains("_bucket"))
            .map(|l| l.rsplit(' ').next().unwrap().parse().unwrap())
            .collect();
        assert_eq!(counts.len(), 16);
        assert!(counts.windows(2).all(|w| w[0] <= w[1]), "{counts:?}");
    }

    #[test]
    fn labels_go_before_le_and_on_sum_and_count() {
        let h = Histogram::default();
        h.observe(Duration::from_millis(3));
        let p = page(&h, "code=\"2xx\"");
        assert!(
            p.contains("t_seconds_bucket{code=\"2xx\",le=\"0.005\"} 1\n"),
            "{p}"
        );
        assert!(p.contains("t_seconds_sum{code=\"2xx\"} 0.003000\n"), "{p}");
        assert!(p.contains("t_seconds_count{code=\"2xx\"} 1\n"), "{p}");
    }

    #[test]
    fn observations_from_many_threads_all_count() {
        let h = std::sync::Arc::new(Histogram::default());
        std::thread::scope(|s| {
            for _ in 0..8 {
                let h = h.clone();
                s.spawn(move || {
                    for _ in 0..1000 {
                        h.observe(Duration::from_millis(7));
                    }
                });
            }
        });
        assert_eq!(h.count(), 8000);
        assert!(page(&h, "").contains("t_seconds_sum 56.000000\n"));
    }
}
