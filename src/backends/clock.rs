//! [`StageClock`]: how long a backend spent serving one consumer (an LLM stage, the sandbox
//! checks, the executions), with its request and token counts, shared lock-free between the
//! backend's threads and the report that reads it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Busy time and activity span of one stage's backend, shared with the report.
#[derive(Debug)]
pub struct StageClock {
    origin: Instant,
    busy_micros: AtomicU64,
    /// Micros since `origin` of the first batch start, `u64::MAX` before any.
    first_micros: AtomicU64,
    last_micros: AtomicU64,
    requests: AtomicU64,
    tokens: AtomicU64,
}

impl StageClock {
    pub fn new(origin: Instant) -> Self {
        StageClock {
            origin,
            busy_micros: AtomicU64::new(0),
            first_micros: AtomicU64::new(u64::MAX),
            last_micros: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            tokens: AtomicU64::new(0),
        }
    }

    /// One batch of `requests`, begun at `started` and done now, that made `tokens` tokens.
    pub(crate) fn record(&self, started: Instant, requests: usize, tokens: u64) {
        let now = Instant::now();
        let micros = |t: Instant| t.duration_since(self.origin).as_micros() as u64;
        self.busy_micros.fetch_add(
            now.duration_since(started).as_micros() as u64,
            Ordering::Relaxed,
        );
        self.first_micros
            .fetch_min(micros(started), Ordering::Relaxed);
        self.last_micros.fetch_max(micros(now), Ordering::Relaxed);
        self.requests.fetch_add(requests as u64, Ordering::Relaxed);
        self.tokens.fetch_add(tokens, Ordering::Relaxed);
    }

    /// Seconds the backend spent serving this stage.
    pub fn busy(&self) -> Duration {
        Duration::from_micros(self.busy_micros.load(Ordering::Relaxed))
    }

    /// Seconds from the first batch's start to the last batch's end (zero when none ran).
    pub fn span(&self) -> Duration {
        let first = self.first_micros.load(Ordering::Relaxed);
        let last = self.last_micros.load(Ordering::Relaxed);
        if first == u64::MAX {
            Duration::ZERO
        } else {
            Duration::from_micros(last.saturating_sub(first))
        }
    }

    /// Requests (LLM prompts or sandbox jobs) served.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// Completion tokens generated (LLM stages).
    pub fn tokens(&self) -> u64 {
        self.tokens.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_busy_time_span_requests_and_tokens() {
        let origin = Instant::now();
        let clock = StageClock::new(origin);
        assert_eq!((clock.span(), clock.requests()), (Duration::ZERO, 0));
        let started = Instant::now();
        std::thread::sleep(Duration::from_millis(5));
        clock.record(started, 3, 40);
        clock.record(Instant::now(), 2, 2);
        assert_eq!((clock.requests(), clock.tokens()), (5, 42));
        assert!(
            clock.busy() >= Duration::from_millis(5),
            "{:?}",
            clock.busy()
        );
        assert!(clock.span() >= Duration::from_millis(5) && clock.span() <= origin.elapsed());
    }
}
