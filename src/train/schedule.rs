//! Learning-rate schedules: the paper's step schedule (lr divided by 10 at
//! fixed iterations) with the warm-up of its 110-layer net (lr 0.01 until the
//! training error falls below 80%, then back to the base rate), and its
//! ImageNet schedule: lr divided by 10 when the validation error plateaus
//! ([`Plateau`]: after `patience` evaluations without improvement, as
//! PyTorch's `ReduceLROnPlateau` counts them).

/// A multi-step schedule over a run of `iters` iterations.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Schedule {
    pub iters: u64,
    pub lr: f32,
    /// the rate is multiplied by `gamma` at each milestone (iteration)
    pub milestones: Vec<u64>,
    pub gamma: f32,
    /// warm-up rate, used until the training error falls below `warmup_until_err`
    pub warmup_lr: Option<f32>,
    pub warmup_until_err: f64,
    /// divide by 1/gamma when the validation error plateaus (besides the milestones)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plateau: Option<Plateau>,
}

/// When a plateau drops the rate.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Plateau {
    /// evaluations without improvement tolerated; one more drops the rate
    pub patience: u32,
    /// an improvement is an error lower than the best by more than this (percentage points)
    pub threshold: f64,
}

/// What a plateau schedule has seen so far (kept in checkpoints for exact resume).
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PlateauState {
    pub best: Option<f64>,
    /// evaluations since the last improvement or drop
    pub bad: u32,
    /// iterations from which a drop applies
    pub drops: Vec<u64>,
}

impl PlateauState {
    /// Record validation error `err` measured after iteration `at`; true when the rate drops.
    pub fn observe(&mut self, err: f64, at: u64, p: &Plateau) -> bool {
        if self.best.is_none_or(|b| err < b - p.threshold) {
            self.best = Some(err);
            self.bad = 0;
            return false;
        }
        self.bad += 1;
        if self.bad > p.patience {
            self.drops.push(at);
            self.bad = 0;
            return true;
        }
        false
    }
}

impl Schedule {
    /// The CIFAR recipe scaled to `iters`: lr 0.1, /10 at 50% and 75% (the
    /// paper's 32k and 48k of 64k); warm-up at 0.01 for nets of 110+ layers.
    pub fn cifar(iters: u64, depth: usize) -> Schedule {
        Schedule {
            iters,
            lr: 0.1,
            milestones: vec![iters / 2, iters * 3 / 4],
            gamma: 0.1,
            warmup_lr: (depth >= 110).then_some(0.01),
            warmup_until_err: 80.0,
            plateau: None,
        }
    }

    /// The rate of iteration `it`; `warmup_done_at` is when the warm-up ended, if it has;
    /// `drops` the plateau drops so far.
    pub fn lr(&self, it: u64, warmup_done_at: Option<u64>, drops: &[u64]) -> f32 {
        if let Some(w) = self.warmup_lr
            && warmup_done_at.is_none_or(|d| it < d)
        {
            return w;
        }
        let steps = self.milestones.iter().chain(drops).filter(|&&m| it >= m).count();
        self.lr * self.gamma.powi(steps as i32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paper_schedule_at_64k() {
        let s = Schedule::cifar(64_000, 20);
        assert_eq!(s.milestones, vec![32_000, 48_000]);
        assert_eq!(s.lr(0, None, &[]), 0.1);
        assert_eq!(s.lr(31_999, None, &[]), 0.1);
        assert!((s.lr(32_000, None, &[]) - 0.01).abs() < 1e-9);
        assert!((s.lr(48_000, None, &[]) - 0.001).abs() < 1e-9);
        assert!((s.lr(63_999, None, &[]) - 0.001).abs() < 1e-9);
    }

    #[test]
    fn warmup_for_deep_nets() {
        let s = Schedule::cifar(1000, 110);
        assert_eq!(s.lr(0, None, &[]), 0.01);
        assert_eq!(s.lr(399, None, &[]), 0.01);
        assert_eq!(s.lr(399, Some(400), &[]), 0.01);
        assert_eq!(s.lr(400, Some(400), &[]), 0.1);
        assert!(Schedule::cifar(1000, 56).warmup_lr.is_none());
    }

    #[test]
    fn plateau_drops_after_patience_evaluations_without_improvement() {
        let p = Plateau { patience: 2, threshold: 0.1 };
        let mut st = PlateauState::default();
        // improving, then flat: the third evaluation without improvement drops the rate
        let errs = [50.0, 40.0, 35.0, 35.05, 36.0, 34.95, 30.0, 31.0, 30.5, 30.0, 29.95, 29.0];
        let dropped: Vec<u64> = errs
            .iter()
            .enumerate()
            .filter(|&(i, &e)| st.observe(e, 100 * (i as u64 + 1), &p))
            .map(|(i, _)| i as u64)
            .collect();
        // 35.05, 36.0, 34.95 (not better than 35 by more than 0.1) -> drop at the 6th; 31, 30.5, 30.0 -> drop at the 10th
        assert_eq!(dropped, vec![5, 9]);
        assert_eq!(st.drops, vec![600, 1000]);
        let s = Schedule { plateau: Some(p.clone()), ..Schedule::cifar(2000, 18) };
        let s = Schedule { milestones: vec![], ..s };
        assert_eq!(s.lr(599, None, &st.drops), 0.1);
        assert!((s.lr(600, None, &st.drops) - 0.01).abs() < 1e-9);
        assert!((s.lr(1500, None, &st.drops) - 0.001).abs() < 1e-9);
        // a state restored from a checkpoint continues identically
        let mut a = st.clone();
        let mut b: PlateauState = serde_json::from_str(&serde_json::to_string(&st).unwrap()).unwrap();
        for e in [29.5, 29.2, 29.1, 28.0] {
            assert_eq!(a.observe(e, 7, &p), b.observe(e, 7, &p));
        }
        assert_eq!(a, b);
    }
}
