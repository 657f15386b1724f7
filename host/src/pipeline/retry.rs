//! One way to retry what must eventually succeed (a MongoDB write, the write
//! intent, a dead letter): capped exponential backoff with jitter, each failure
//! counted in `sluice_retries_total` and logged, and the health gauge that makes
//! `/readyz` fail raised while it keeps failing.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use crate::config::PipelineConfig;

/// Capped exponential backoff with jitter: each wait is 50–100% of a delay that
/// doubles from `retry_backoff` up to `retry_max_backoff`.
pub(super) struct Backoff {
    delay: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    pub(super) fn new(cfg: &PipelineConfig) -> Backoff {
        Backoff { delay: cfg.retry_backoff, max: cfg.retry_max_backoff, attempt: 0 }
    }

    /// The wait before the next attempt.
    pub(super) fn next(&mut self) -> Duration {
        self.attempt += 1;
        let wait = self.delay.mul_f64(0.5 + fastrand::f64() * 0.5);
        self.delay = (self.delay * 2).min(self.max);
        wait
    }
}

/// Counted in a gauge while alive.
struct Failing<'a>(&'a AtomicUsize);

impl<'a> Failing<'a> {
    fn new(gauge: &'a AtomicUsize) -> Self {
        gauge.fetch_add(1, Ordering::Relaxed);
        Failing(gauge)
    }
}

impl Drop for Failing<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// An operation to retry until it succeeds, and how it reports itself.
pub(super) struct Retry<'a> {
    /// What it does, for the log ("writing to MongoDB").
    pub what: &'a str,
    /// Where: `topic:partition`, or a record's coordinates.
    pub at: &'a str,
    pub cfg: &'a PipelineConfig,
    pub retries: &'a AtomicU64,
    /// The health gauge this operation raises while failing (`None`: none).
    pub gauge: Option<&'a AtomicUsize>,
    /// Raise the gauge only once it has been failing (or hanging) this long;
    /// `None`: at the first failure.
    pub unhealthy_after: Option<Duration>,
}

impl<'a> Retry<'a> {
    /// Run `attempt` until it returns `Ok`; its value and how many attempts it took.
    pub(super) async fn run<T, E: std::fmt::Display, F: Future<Output = Result<T, E>>>(&self, mut attempt: impl FnMut() -> F) -> (T, u32) {
        let (what, at) = (self.what, self.at);
        let mut backoff = Backoff::new(self.cfg);
        let deadline = tokio::time::Instant::now() + self.unhealthy_after.unwrap_or_default();
        let mut failing: Option<Failing<'a>> = None;
        let unhealthy = |failing: &mut Option<Failing<'a>>| {
            if let (None, Some(gauge)) = (&failing, self.gauge) {
                *failing = Some(Failing::new(gauge));
                if let Some(after) = self.unhealthy_after {
                    tracing::error!(at, "{what} has failed for {after:?}: not ready; still trying");
                }
            }
        };
        loop {
            let result = {
                let call = attempt();
                tokio::pin!(call);
                loop {
                    tokio::select! {
                        r = &mut call => break r,
                        // A call that hangs (a broker away) counts as failing too.
                        _ = tokio::time::sleep_until(deadline), if failing.is_none() && self.unhealthy_after.is_some() => unhealthy(&mut failing),
                    }
                }
            };
            let e = match result {
                Ok(value) => {
                    if backoff.attempt > 0 || failing.is_some() {
                        tracing::info!(at, attempts = backoff.attempt + 1, "{what} succeeded after all: ready again");
                    }
                    return (value, backoff.attempt + 1);
                }
                Err(e) => e,
            };
            self.retries.fetch_add(1, Ordering::Relaxed);
            let wait = backoff.next();
            tracing::warn!(at, attempt = backoff.attempt, retry_in = ?wait, "{what} failed (will retry): {e}");
            if self.unhealthy_after.is_none() || tokio::time::Instant::now() + wait >= deadline {
                unhealthy(&mut failing);
            }
            tokio::time::sleep(wait).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> PipelineConfig {
        PipelineConfig { retry_backoff: Duration::from_millis(100), retry_max_backoff: Duration::from_millis(450), ..Default::default() }
    }

    #[test]
    fn backoff_doubles_with_jitter_up_to_the_cap() {
        let mut b = Backoff::new(&cfg());
        let bounds = [(50, 100), (100, 200), (200, 400), (225, 450), (225, 450)];
        for (lo, hi) in bounds {
            let w = b.next();
            assert!(w >= Duration::from_millis(lo) && w <= Duration::from_millis(hi), "{w:?} not in {lo}..{hi} ms");
        }
        assert_eq!(b.attempt, 5);
    }

    #[tokio::test(start_paused = true)]
    async fn retries_until_ok_counting_and_raising_the_gauge_meanwhile() {
        let (retries, gauge) = (AtomicU64::new(0), AtomicUsize::new(0));
        let cfg = cfg();
        let retry = Retry { what: "testing", at: "t:0", cfg: &cfg, retries: &retries, gauge: Some(&gauge), unhealthy_after: None };
        let calls = std::cell::Cell::new(0);
        let (value, attempts) = retry
            .run(|| async {
                calls.set(calls.get() + 1);
                assert_eq!(gauge.load(Ordering::Relaxed), usize::from(calls.get() > 1), "raised from the first failure on");
                if calls.get() < 4 { Err("not yet") } else { Ok(calls.get()) }
            })
            .await;
        assert_eq!((value, attempts, retries.load(Ordering::Relaxed)), (4, 4, 3));
        assert_eq!(gauge.load(Ordering::Relaxed), 0, "lowered once it succeeded");
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_that_hangs_past_the_limit_raises_the_gauge() {
        let (retries, gauge) = (AtomicU64::new(0), AtomicUsize::new(0));
        let cfg = cfg();
        let after = Some(Duration::from_secs(5));
        let retry = Retry { what: "testing", at: "t:0", cfg: &cfg, retries: &retries, gauge: Some(&gauge), unhealthy_after: after };
        let (_, attempts) = retry
            .run(|| async {
                tokio::time::sleep(Duration::from_secs(10)).await;
                assert_eq!(gauge.load(Ordering::Relaxed), 1, "raised while the call hangs");
                Ok::<_, String>(())
            })
            .await;
        assert_eq!((attempts, retries.load(Ordering::Relaxed), gauge.load(Ordering::Relaxed)), (1, 0, 0));
    }
}
