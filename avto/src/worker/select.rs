//! Which orchestrator to poll next (pure logic, unit-tested).

use super::MultiOrchestratorMode;

/// Plans one polling cycle over orchestrators sorted by priority.
#[derive(Debug, Clone)]
pub(crate) struct PollPlanner {
    mode: MultiOrchestratorMode,
    weights: Vec<i64>,
    current: Vec<i64>,
    total: i64,
}

impl PollPlanner {
    pub(super) fn new(mode: MultiOrchestratorMode, weights: Vec<i64>) -> Self {
        let weights: Vec<i64> = weights.into_iter().map(|w| w.max(1)).collect();
        let total = weights.iter().sum();
        PollPlanner { mode, current: vec![0; weights.len()], weights, total }
    }

    /// Smooth weighted round-robin (nginx / the Python SDK): add each weight to its current
    /// weight, pick the largest (first on ties), subtract the total from the pick.
    pub(super) fn next_round_robin(&mut self) -> Option<usize> {
        if self.weights.is_empty() {
            return None;
        }
        let mut best = 0;
        for i in 0..self.weights.len() {
            self.current[i] += self.weights[i];
            if self.current[i] > self.current[best] {
                best = i;
            }
        }
        self.current[best] -= self.total;
        Some(best)
    }

    /// The orchestrators to try this cycle, in order; the caller stops at the first task and
    /// skips entries that are not `healthy` at the time of the attempt.
    ///
    /// * Waterfall: every healthy one in priority order.
    /// * RoundRobin: N round-robin picks (N = number of orchestrators), healthy or not, like the
    ///   Python SDK (unhealthy picks are skipped by the caller).
    /// * Failover: only the first healthy one.
    pub(super) fn plan(&mut self, healthy: &[bool]) -> Vec<usize> {
        match self.mode {
            MultiOrchestratorMode::Waterfall => (0..healthy.len()).filter(|&i| healthy[i]).collect(),
            MultiOrchestratorMode::RoundRobin => (0..healthy.len()).filter_map(|_| self.next_round_robin()).collect(),
            MultiOrchestratorMode::Failover => healthy.iter().position(|h| *h).into_iter().collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smooth_weighted_round_robin_matches_nginx() {
        let mut p = PollPlanner::new(MultiOrchestratorMode::RoundRobin, vec![5, 1, 1]);
        let picks: Vec<usize> = (0..7).map(|_| p.next_round_robin().unwrap()).collect();
        assert_eq!(picks, vec![0, 0, 1, 0, 2, 0, 0]);
        let mut p = PollPlanner::new(MultiOrchestratorMode::RoundRobin, vec![1, 1]);
        let picks: Vec<usize> = (0..4).map(|_| p.next_round_robin().unwrap()).collect();
        assert_eq!(picks, vec![0, 1, 0, 1]);
        let mut p = PollPlanner::new(MultiOrchestratorMode::RoundRobin, vec![2, 1]);
        assert_eq!(p.plan(&[true, true]), vec![0, 1]);
        assert_eq!(p.plan(&[true, true]), vec![0, 0]);
    }

    #[test]
    fn waterfall_and_failover() {
        let mut w = PollPlanner::new(MultiOrchestratorMode::Waterfall, vec![1, 1, 1]);
        assert_eq!(w.plan(&[true, false, true]), vec![0, 2]);
        let mut f = PollPlanner::new(MultiOrchestratorMode::Failover, vec![1, 1, 1]);
        assert_eq!(f.plan(&[true, true, true]), vec![0]);
        assert_eq!(f.plan(&[false, true, true]), vec![1]);
        assert_eq!(f.plan(&[false, false, false]), Vec::<usize>::new());
        assert_eq!(f.plan(&[true, true, true]), vec![0], "back to the preferred one once it recovers");
    }
}
