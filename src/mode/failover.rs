//! Which client a failover worker uses next.

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use crate::config::FailoverPolicy;

/// Picks the active client among `n`.
pub(crate) struct HostChooser {
    policy: FailoverPolicy,
    rng: SmallRng,
}

impl HostChooser {
    pub(crate) fn new(policy: FailoverPolicy) -> HostChooser {
        HostChooser { policy, rng: SmallRng::from_entropy() }
    }

    /// The first client to use.
    pub(crate) fn first(&mut self, n: usize) -> usize {
        match self.policy {
            FailoverPolicy::Ordered => 0,
            FailoverPolicy::Random => self.rng.gen_range(0..n.max(1)),
        }
    }

    /// The client to use after `failed` failed: never `failed` itself when there is
    /// another (random), or the next in list order (ordered).
    pub(crate) fn next(&mut self, failed: usize, n: usize) -> usize {
        if n <= 1 {
            return 0;
        }
        match self.policy {
            FailoverPolicy::Ordered => (failed + 1) % n,
            FailoverPolicy::Random => {
                let pick = self.rng.gen_range(0..n - 1);
                if pick >= failed {
                    pick + 1
                } else {
                    pick
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_never_repeats_the_failed_host() {
        let mut c = HostChooser::new(FailoverPolicy::Random);
        for n in 2..6 {
            for failed in 0..n {
                for _ in 0..200 {
                    let next = c.next(failed, n);
                    assert!(next < n && next != failed, "n={n} failed={failed} next={next}");
                }
            }
        }
    }

    #[test]
    fn ordered_walks_the_list() {
        let mut c = HostChooser::new(FailoverPolicy::Ordered);
        assert_eq!(c.first(3), 0);
        assert_eq!(c.next(0, 3), 1);
        assert_eq!(c.next(1, 3), 2);
        assert_eq!(c.next(2, 3), 0);
    }
}
