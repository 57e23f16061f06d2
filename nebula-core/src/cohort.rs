//! Which hosts run a fleet rollout's candidate: decided on each host from one rule the whole
//! fleet shares, never from a list of hosts kept by the manager.
//!
//! Every host name falls into one of [`FULL`] buckets by a salted hash ([`bucket`]). A
//! [`Cohort`] holds the named canary hosts and a threshold in basis points: a host is in the
//! cohort when it is a canary or its bucket lies under the threshold. So
//! - raising the threshold only adds hosts (a host never leaves except by revert);
//! - a threshold of `p` basis points selects about `p / 100` percent of any large fleet;
//! - a rollout's salt makes its cohort independent of every other rollout's;
//! - the rule is a few bytes, so one message (or one cached `/info` reply) carries it to
//!   every host, whatever the fleet's size.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The number of buckets: thresholds are in basis points (1/100 of a percent).
pub const FULL: u32 = 10_000;

/// The bucket of `host` under `salt`: SHA-256 over the salt and the name, so it is the same on
/// every host, every platform and every version.
#[must_use]
pub fn bucket(salt: u64, host: &str) -> u32 {
    let digest = Sha256::new()
        .chain_update(salt.to_le_bytes())
        .chain_update(host.as_bytes())
        .finalize();
    let mut head = [0u8; 8];
    head.copy_from_slice(&digest[..8]);
    // The remainder is below FULL, so it fits.
    u32::try_from(u64::from_le_bytes(head) % u64::from(FULL)).unwrap_or(0)
}

/// A fraction in `[0, 1)` derived from `host` and `salt` independently of [`bucket`]: where in
/// a spread window the host starts (a pre-pull), so a fleet does not start at once.
#[must_use]
pub fn spread_fraction(salt: u64, host: &str) -> f64 {
    f64::from(bucket(salt ^ 0x9e37_79b9_7f4a_7c15, host)) / f64::from(FULL)
}

/// The hosts that run a candidate: the canaries, and every host whose bucket is under the
/// threshold.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cohort {
    /// The rollout's salt.
    pub salt: u64,
    /// Hosts whose bucket is under this run the candidate; 0 to [`FULL`].
    pub threshold_bp: u32,
    /// Hosts that run the candidate whatever their bucket.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub canary_hosts: BTreeSet<String>,
}

impl Cohort {
    /// Whether `host` is in the cohort.
    #[must_use]
    pub fn includes(&self, host: &str) -> bool {
        self.threshold_bp >= FULL
            || self.canary_hosts.contains(host)
            || bucket(self.salt, host) < self.threshold_bp
    }

    /// The lowest threshold that takes in `count` more of `hosts` than the cohort holds now,
    /// or every one of them when fewer are left. `hosts` is the fleet as the manager knows
    /// it; hosts it does not know fall in by their bucket like any other.
    #[must_use]
    pub fn threshold_adding(&self, hosts: &[&str], count: usize) -> u32 {
        let mut outside: Vec<u32> = hosts
            .iter()
            .filter(|h| !self.includes(h))
            .map(|h| bucket(self.salt, h))
            .collect();
        if count == 0 || outside.is_empty() {
            return self.threshold_bp;
        }
        outside.sort_unstable();
        let last = outside[count.min(outside.len()) - 1];
        (last + 1).max(self.threshold_bp).min(FULL)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn names(n: usize, seed: u64) -> Vec<String> {
        (0..n).map(|i| format!("host-{seed:x}-{i}")).collect()
    }

    #[test]
    fn the_bucket_is_fixed_for_a_salt_and_a_name() {
        // Hosts and managers of any version must agree: the value is part of the protocol.
        assert_eq!(bucket(0, "host-1"), bucket(0, "host-1"));
        assert_ne!(bucket(0, "host-1"), bucket(1, "host-1"));
        // The same value Python gives: sha256(le64(7) + b"worker-a")[:8] as little-endian mod 10,000.
        assert_eq!(bucket(7, "worker-a"), 4_910);
    }

    #[test]
    fn a_full_threshold_takes_everyone_and_zero_only_the_canaries() {
        let mut cohort = Cohort {
            salt: 3,
            threshold_bp: 0,
            canary_hosts: BTreeSet::from(["c1".to_owned()]),
        };
        assert!(cohort.includes("c1"));
        assert!(names(500, 1).iter().all(|h| !cohort.includes(h)));
        cohort.threshold_bp = FULL;
        assert!(names(500, 1).iter().all(|h| cohort.includes(h)));
    }

    #[test]
    fn a_ten_percent_threshold_selects_ten_percent_of_ten_thousand_hosts() {
        for salt in [1, 2, 3, 0xdead_beef] {
            let cohort = Cohort {
                salt,
                threshold_bp: 1_000,
                canary_hosts: BTreeSet::new(),
            };
            let fleet = names(10_000, salt);
            let picked = fleet.iter().filter(|h| cohort.includes(h)).count();
            assert!((800..=1_200).contains(&picked), "salt {salt}: {picked}");
        }
    }

    #[test]
    fn threshold_adding_takes_exactly_the_count_asked() {
        let fleet = names(1_000, 9);
        let hosts: Vec<&str> = fleet.iter().map(String::as_str).collect();
        let mut cohort = Cohort {
            salt: 11,
            ..Cohort::default()
        };
        let mut inside = 0;
        for count in [1, 9, 90, 400, 10_000] {
            cohort.threshold_bp = cohort.threshold_adding(&hosts, count);
            let now = hosts.iter().filter(|h| cohort.includes(h)).count();
            assert!(
                now >= inside + count.min(1_000 - inside),
                "{count}: {inside} -> {now}"
            );
            inside = now;
        }
        assert_eq!(inside, 1_000);
        assert_eq!(cohort.threshold_adding(&hosts, 5), cohort.threshold_bp);
    }

    proptest! {
        #[test]
        fn raising_the_threshold_only_adds_hosts(
            salt in any::<u64>(),
            low in 0..=FULL,
            raise in 0..=FULL,
            seed in any::<u64>(),
        ) {
            let fleet = names(300, seed);
            let before = Cohort { salt, threshold_bp: low, canary_hosts: BTreeSet::new() };
            let after = Cohort { threshold_bp: low.saturating_add(raise).min(FULL), ..before.clone() };
            for h in &fleet {
                prop_assert!(!before.includes(h) || after.includes(h));
            }
        }

        #[test]
        fn a_ten_percent_step_selects_ten_percent_within_two_points(
            salt in any::<u64>(),
            seed in any::<u64>(),
        ) {
            let cohort = Cohort { salt, threshold_bp: 1_000, canary_hosts: BTreeSet::new() };
            let picked = names(10_000, seed).iter().filter(|h| cohort.includes(h)).count();
            prop_assert!((800..=1_200).contains(&picked), "{}", picked);
        }

        #[test]
        fn different_salts_select_independent_cohorts(
            a in any::<u64>(),
            b in any::<u64>(),
            seed in any::<u64>(),
        ) {
            prop_assume!(a != b);
            // Two 50% cohorts of 4,000 hosts overlap on about a quarter of the fleet if they are
            // independent (1,000 ± 4.5 sigma), not on half (the same cohort) or none.
            let fleet = names(4_000, seed);
            let one = Cohort { salt: a, threshold_bp: 5_000, canary_hosts: BTreeSet::new() };
            let two = Cohort { salt: b, ..one.clone() };
            let both = fleet.iter().filter(|h| one.includes(h) && two.includes(h)).count();
            prop_assert!((880..=1_120).contains(&both), "{}", both);
        }

        #[test]
        fn the_spread_is_uniform_enough_and_in_range(salt in any::<u64>(), seed in any::<u64>()) {
            let fleet = names(2_000, seed);
            let early = fleet.iter().filter(|h| {
                let f = spread_fraction(salt, h);
                assert!((0.0..1.0).contains(&f));
                f < 0.5
            }).count();
            prop_assert!((880..=1_120).contains(&early), "{}", early);
        }
    }
}
