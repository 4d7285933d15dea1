//! The 15-minute history behind the dashboard's chart: a fixed ring of points, one per
//! sampler tick, so its memory is the same after a minute and after a year. Pure: the
//! sampler hands in each reading with its time.

use std::collections::VecDeque;

use serde::Serialize;

/// One reading of the hub.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Point {
    /// When, ms since the epoch.
    pub t: i64,
    /// Agents `online` then.
    pub online: u64,
    /// WebSocket requests per second over the interval that ended then.
    pub rps: f64,
}

/// The last `capacity` points, oldest first.
#[derive(Debug)]
pub struct History {
    points: VecDeque<Point>,
    capacity: usize,
    /// The previous request counter reading, to turn totals into a rate.
    last: Option<(i64, u64)>,
}

impl History {
    /// An empty history of at most `capacity` points.
    pub fn new(capacity: usize) -> History {
        History {
            points: VecDeque::with_capacity(capacity),
            capacity: capacity.max(1),
            last: None,
        }
    }

    /// Records a reading at `now` (ms): agents online and the total of requests answered
    /// since start. The first reading only sets the baseline for the rate (0 req/s).
    pub fn record(&mut self, now: i64, online: u64, requests_total: u64) -> Point {
        let rps = match self.last {
            Some((t, n)) if now > t => {
                requests_total.saturating_sub(n) as f64 * 1000.0 / (now - t) as f64
            }
            _ => 0.0,
        };
        self.last = Some((now, requests_total));
        let point = Point {
            t: now,
            online,
            rps,
        };
        if self.points.len() == self.capacity {
            self.points.pop_front();
        }
        self.points.push_back(point);
        point
    }

    /// Every point kept, oldest first.
    pub fn points(&self) -> Vec<Point> {
        self.points.iter().copied().collect()
    }

    /// The newest point.
    pub fn latest(&self) -> Option<Point> {
        self.points.back().copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_come_from_differences_and_the_ring_keeps_the_newest() {
        let mut h = History::new(3);
        assert_eq!(h.record(1_000, 5, 100).rps, 0.0, "no baseline yet");
        assert_eq!(h.record(2_000, 6, 300).rps, 200.0);
        assert_eq!(
            h.record(2_500, 6, 400).rps,
            200.0,
            "per second, not per tick"
        );
        let p = h.record(3_500, 7, 400);
        assert_eq!((p.online, p.rps), (7, 0.0));
        let ts: Vec<i64> = h.points().iter().map(|p| p.t).collect();
        assert_eq!(ts, vec![2_000, 2_500, 3_500], "capacity 3, oldest dropped");
        assert_eq!(h.latest(), Some(p));
        // A clock that does not move (or a counter that went back) gives no rate, never
        // a division by zero or a negative one.
        assert_eq!(h.record(3_500, 7, 500).rps, 0.0);
        assert_eq!(h.record(4_500, 7, 10).rps, 0.0);
    }
}
