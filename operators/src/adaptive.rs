//! The adaptive-sampling controller (docs/ARCHITECTURE.md, "Selection"): after each round of k samples, decide per problem
//! whether to draw another round or stop because more samples cannot change the selected cluster.
//!
//! The controller is a pure function of the problem's state: samples drawn so far, the size of its
//! test set, and the standings (size, tests passed) of its *voting* clusters, i.e. the grouper's
//! clusters (e(r) ≥ ρ, not all-fail) of every size. Samples are only ever added while sampling, so
//! clusters only grow. With `m` samples left in the budget it stops when:
//!
//! - **Exhausted**: `m = 0`.
//! - **Decided**: the leading cluster already has |C| ≥ τ and no other cluster, nor a cluster not
//!   yet seen, could reach or tie its rank even if all `m` remaining samples joined it. Consensus
//!   rank is |C|; dual-agreement rank is passed² · |C| (a new cluster may pass every test). Ties are
//!   counted as overtakes because the selector's tie-breaks could go either way. This decides the
//!   cluster C*; later samples could still have added a better member r* to it, which is the price
//!   of stopping.
//! - **Unreachable**: no cluster, existing or new, can reach τ within the budget.
//! - **Confident** (optional, consensus rule only, `risk = Some(δ)`): the probability that any
//!   rival (including an unseen cluster) catches the leader is at most δ, by a Hoeffding bound on
//!   the difference of their future gains with Laplace-smoothed per-sample probabilities
//!   p = (|C| + 1) / (drawn + 2) and a union bound over rivals.
//!
//! Otherwise it asks for `min(k, m)` more samples.

use crate::selection::SelectionRule;

/// A voting cluster's standing.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct ClusterStanding {
    /// |C|.
    pub size: u32,
    /// Tests passed by the cluster's signature.
    pub passed: u32,
}

/// Why sampling stops for a problem.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StopReason {
    /// The budget n is used up.
    Exhausted,
    /// The leading cluster cannot be overtaken within the remaining budget.
    Decided,
    /// No cluster can reach τ within the remaining budget.
    Unreachable,
    /// The leader is statistically decided at the configured risk.
    Confident,
}

/// The controller's answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Draw this many more samples.
    Sample(u32),
    /// Stop sampling this problem.
    Stop(StopReason),
}

/// Controller settings.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdaptiveSampling {
    /// n: the most samples per problem.
    pub budget: u32,
    /// k: samples per round (≥ 1).
    pub round_size: u32,
    /// τ of the selection rule.
    pub tau: u32,
    /// The selection rule whose winner must be settled.
    pub rule: SelectionRule,
    /// δ for the statistical stop; `None` disables it.
    pub risk: Option<f64>,
}

impl AdaptiveSampling {
    /// Decides for a problem with `drawn` samples so far, `tests` tests and voting `clusters`.
    pub fn decide(&self, drawn: u32, tests: u32, clusters: &[ClusterStanding]) -> Decision {
        let remaining = u64::from(self.budget.saturating_sub(drawn));
        if remaining == 0 {
            return Decision::Stop(StopReason::Exhausted);
        }
        let tau = u64::from(self.tau);
        let largest = clusters
            .iter()
            .map(|c| u64::from(c.size))
            .max()
            .unwrap_or(0);
        if largest + remaining < tau {
            return Decision::Stop(StopReason::Unreachable);
        }
        let rank = |size: u64, passed: u64| match self.rule {
            SelectionRule::Consensus => size,
            SelectionRule::DualAgreement => passed * passed * size,
            // The posterior depends on every cluster's tests, not on sizes and pass counts alone:
            // no standing settles it before the budget is spent.
            SelectionRule::Bayesian => 0,
        };
        if self.rule == SelectionRule::Bayesian {
            return Decision::Sample(u64::from(self.round_size.max(1)).min(remaining) as u32);
        }
        let leader = clusters
            .iter()
            .enumerate()
            .filter(|(_, c)| u64::from(c.size) >= tau)
            .max_by_key(|(_, c)| rank(u64::from(c.size), u64::from(c.passed)));
        if let Some((leader_index, leader)) = leader {
            let leader_rank = rank(u64::from(leader.size), u64::from(leader.passed));
            let can_catch = |size: u64, passed: u64| {
                size + remaining >= tau && rank(size + remaining, passed) >= leader_rank
            };
            let rival_can_catch = clusters
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != leader_index)
                .any(|(_, c)| can_catch(u64::from(c.size), u64::from(c.passed)));
            if !rival_can_catch && !can_catch(0, u64::from(tests)) {
                return Decision::Stop(StopReason::Decided);
            }
            if let (Some(risk), SelectionRule::Consensus) = (self.risk, self.rule)
                && self.overtake_risk(drawn, leader_index, clusters) <= risk
            {
                return Decision::Stop(StopReason::Confident);
            }
        }
        Decision::Sample(u64::from(self.round_size.max(1)).min(remaining) as u32)
    }

    /// Union (Hoeffding) bound on the probability that some rival, or an unseen cluster, reaches
    /// the leader's size within the remaining budget.
    fn overtake_risk(&self, drawn: u32, leader_index: usize, clusters: &[ClusterStanding]) -> f64 {
        let m = f64::from(self.budget.saturating_sub(drawn));
        let smoothed = |size: u32| (f64::from(size) + 1.0) / (f64::from(drawn) + 2.0);
        let leader = clusters[leader_index].size;
        let p_leader = smoothed(leader);
        let rivals = clusters
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != leader_index)
            .map(|(_, c)| c.size)
            .chain(std::iter::once(0));
        rivals
            .map(|size| {
                let gap = f64::from(leader) - f64::from(size);
                let drift = m * (smoothed(size) - p_leader);
                let slack = gap - drift;
                if slack <= 0.0 {
                    1.0
                } else {
                    (-(slack * slack) / (2.0 * m)).exp()
                }
            })
            .sum::<f64>()
            .min(1.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn standings(sizes: &[(u32, u32)]) -> Vec<ClusterStanding> {
        sizes
            .iter()
            .map(|&(size, passed)| ClusterStanding { size, passed })
            .collect()
    }

    fn controller(rule: SelectionRule) -> AdaptiveSampling {
        AdaptiveSampling {
            budget: 32,
            round_size: 8,
            tau: 2,
            rule,
            risk: None,
        }
    }

    #[test]
    fn stops_exactly_when_the_leader_cannot_be_caught() {
        let c = controller(SelectionRule::Consensus);
        // 24 drawn, 8 left: leader 13, runner-up 4 → 4 + 8 = 12 < 13: decided.
        assert_eq!(
            c.decide(24, 10, &standings(&[(13, 5), (4, 9)])),
            Decision::Stop(StopReason::Decided)
        );
        // Runner-up 5: 5 + 8 = 13 ties the leader, and a tie may go either way: continue.
        assert_eq!(
            c.decide(24, 10, &standings(&[(13, 5), (5, 9)])),
            Decision::Sample(8)
        );
        // A leader of 8 could be tied by an unseen cluster taking all 8 remaining samples.
        assert_eq!(c.decide(24, 10, &standings(&[(8, 5)])), Decision::Sample(8));
        assert_eq!(
            c.decide(24, 10, &standings(&[(9, 5)])),
            Decision::Stop(StopReason::Decided)
        );
    }

    #[test]
    fn last_round_is_truncated_and_budget_exhausts() {
        let c = controller(SelectionRule::Consensus);
        assert_eq!(
            c.decide(28, 10, &standings(&[(1, 1), (1, 1)])),
            Decision::Sample(4)
        );
        assert_eq!(
            c.decide(32, 10, &standings(&[(1, 1)])),
            Decision::Stop(StopReason::Exhausted)
        );
        assert_eq!(c.decide(40, 10, &[]), Decision::Stop(StopReason::Exhausted));
    }

    #[test]
    fn unreachable_tau_stops_early_and_a_leader_below_tau_is_not_decided() {
        let c = AdaptiveSampling {
            tau: 10,
            ..controller(SelectionRule::Consensus)
        };
        // 28 drawn, 4 left, largest cluster 5: 9 < τ = 10.
        assert_eq!(
            c.decide(28, 10, &standings(&[(5, 3)])),
            Decision::Stop(StopReason::Unreachable)
        );
        // Largest 6: 6 + 4 = 10 can still reach τ.
        assert_eq!(c.decide(28, 10, &standings(&[(6, 3)])), Decision::Sample(4));
        // No voting cluster yet but enough budget for a new one: keep sampling.
        assert_eq!(c.decide(0, 10, &[]), Decision::Sample(8));
    }

    #[test]
    fn dual_agreement_weighs_passes() {
        let c = controller(SelectionRule::DualAgreement);
        // 28 drawn, 4 left. Leader: 10 members passing 3 tests (rank 90). A rival of 2 members passing
        // 5 tests could reach 25 · 6 = 150 ≥ 90: continue.
        assert_eq!(
            c.decide(28, 5, &standings(&[(10, 3), (2, 5)])),
            Decision::Sample(4)
        );
        // A rival passing 2 tests: 4 · 6 = 24 < 90, but an unseen cluster passing all 5 tests could
        // reach 25 · 4 = 100 ≥ 90: continue.
        assert_eq!(
            c.decide(28, 5, &standings(&[(10, 3), (2, 2)])),
            Decision::Sample(4)
        );
        // With 3 tests a new cluster reaches at most 9 · 4 = 36 < 90: decided.
        assert_eq!(
            c.decide(28, 3, &standings(&[(10, 3), (2, 2)])),
            Decision::Stop(StopReason::Decided)
        );
        // The consensus rule sees the same standings differently: 2 + 4 < 10 and 4 < 10.
        let consensus = controller(SelectionRule::Consensus);
        assert_eq!(
            consensus.decide(28, 5, &standings(&[(10, 3), (2, 5)])),
            Decision::Stop(StopReason::Decided)
        );
    }

    #[test]
    fn statistical_stop_needs_a_clear_lead_and_is_monotone_in_risk() {
        let exact = AdaptiveSampling {
            budget: 128,
            round_size: 16,
            tau: 2,
            rule: SelectionRule::Consensus,
            risk: None,
        };
        // 32 drawn: leader 16, rival 6; 96 left, so the exact rule cannot stop yet. Hoeffding
        // bound for the rival: slack = 10 + 96 · (17 − 7) / 34 ≈ 38.2, exp(−38.2² / 192) ≈ 5e-4.
        let clear = standings(&[(16, 4), (6, 4)]);
        assert_eq!(exact.decide(32, 10, &clear), Decision::Sample(16));
        let loose = AdaptiveSampling {
            risk: Some(0.05),
            ..exact
        };
        assert_eq!(
            loose.decide(32, 10, &clear),
            Decision::Stop(StopReason::Confident)
        );
        // A close race is never "confident".
        let close = standings(&[(12, 4), (10, 4)]);
        assert_eq!(loose.decide(32, 10, &close), Decision::Sample(16));
        // A stricter risk cannot stop where a looser one did not.
        let strict = AdaptiveSampling {
            risk: Some(1e-9),
            ..exact
        };
        assert_eq!(strict.decide(32, 10, &clear), Decision::Sample(16));
        let bound_loose = loose.overtake_risk(32, 0, &clear);
        assert!(bound_loose > 1e-9 && bound_loose <= 0.05, "{bound_loose}");
    }
}
