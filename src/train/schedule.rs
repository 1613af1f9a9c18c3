//! Learning-rate schedules: the paper's step schedule (lr divided by 10 at
//! fixed iterations) with the warm-up of its 110-layer net (lr 0.01 until the
//! training error falls below 80%, then back to the base rate).

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
        }
    }

    /// The rate of iteration `it`; `warmup_done_at` is when the warm-up ended, if it has.
    pub fn lr(&self, it: u64, warmup_done_at: Option<u64>) -> f32 {
        if let Some(w) = self.warmup_lr
            && warmup_done_at.is_none_or(|d| it < d)
        {
            return w;
        }
        let steps = self.milestones.iter().filter(|&&m| it >= m).count();
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
        assert_eq!(s.lr(0, None), 0.1);
        assert_eq!(s.lr(31_999, None), 0.1);
        assert!((s.lr(32_000, None) - 0.01).abs() < 1e-9);
        assert!((s.lr(48_000, None) - 0.001).abs() < 1e-9);
        assert!((s.lr(63_999, None) - 0.001).abs() < 1e-9);
    }

    #[test]
    fn warmup_for_deep_nets() {
        let s = Schedule::cifar(1000, 110);
        assert_eq!(s.lr(0, None), 0.01);
        assert_eq!(s.lr(399, None), 0.01);
        assert_eq!(s.lr(399, Some(400)), 0.01);
        assert_eq!(s.lr(400, Some(400)), 0.1);
        assert!(Schedule::cifar(1000, 56).warmup_lr.is_none());
    }
}
