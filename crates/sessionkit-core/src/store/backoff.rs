//! Jittered exponential backoff, for every retry loop: the session's lock
//! wait and the stores' compare-and-swap retries.

use std::time::Duration;

use crate::id::random_u64;

/// The pauses between attempts: exponential from `initial` up to `max`, each
/// drawn uniformly from the upper half of its step, so that contenders
/// spread out instead of retrying in lockstep.
///
/// ```
/// use std::time::Duration;
/// use sessionkit_core::store::Backoff;
///
/// let mut backoff = Backoff::new(Duration::from_millis(2), Duration::from_millis(50));
/// let first = backoff.next_pause();
/// assert!(first >= Duration::from_millis(1) && first <= Duration::from_millis(2));
/// let later: Vec<_> = (0..10).map(|_| backoff.next_pause()).collect();
/// assert!(later.iter().all(|p| *p <= Duration::from_millis(50)));
/// ```
#[derive(Debug, Clone)]
pub struct Backoff {
    next: Duration,
    max: Duration,
}

impl Backoff {
    /// Pauses starting at `initial` and doubling up to `max`.
    pub fn new(initial: Duration, max: Duration) -> Self {
        Backoff { next: initial, max }
    }

    /// The next pause (and doubles the step for the one after).
    pub fn next_pause(&mut self) -> Duration {
        let ceiling = self.next;
        self.next = (self.next * 2).min(self.max);
        let half = ceiling / 2;
        let spread = ceiling.saturating_sub(half).as_micros().max(1) as u64;
        half + Duration::from_micros(random_u64() % spread)
    }

    /// Sleeps for [`Backoff::next_pause`].
    pub async fn pause(&mut self) {
        tokio::time::sleep(self.next_pause()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_the_cap_with_jitter() {
        let (initial, max) = (Duration::from_millis(2), Duration::from_millis(50));
        let mut backoff = Backoff::new(initial, max);
        let pauses: Vec<_> = (0..20).map(|_| backoff.next_pause()).collect();
        assert!(pauses[0] <= initial && pauses[0] >= initial / 2);
        assert!(pauses.iter().all(|p| *p <= max));
        assert!(pauses[19] >= max / 2);
        let distinct: std::collections::BTreeSet<_> = pauses[10..].iter().collect();
        assert!(
            distinct.len() > 1,
            "pauses at the cap must be jittered: {pauses:?}"
        );
    }
}
