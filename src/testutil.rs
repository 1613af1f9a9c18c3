//! Test helpers: seeded random vectors and a finite-difference gradient check.

use crate::rng::counter_uniform;

/// Uniform values in [-1, 1), seeded.
pub fn rand_vec(len: usize, seed: u64) -> Vec<f32> {
    let name = format!("test/{seed}");
    (0..len).map(|i| 2.0 * counter_uniform(&name, i as u64) - 1.0).collect()
}

/// Compare `analytic` with central differences of `loss` around `x`, on up to
/// 64 evenly spread coordinates. Passes when |num - ana| <= atol + 1e-2 * |num|.
pub fn check_grad<F: Fn(&[f32]) -> f64>(name: &str, x: &[f32], analytic: &[f32], eps: f32, atol: f64, loss: F) {
    assert_eq!(x.len(), analytic.len(), "{name}: gradient length");
    let step = (x.len() / 64).max(1);
    let mut xp = x.to_vec();
    for i in (0..x.len()).step_by(step) {
        let orig = xp[i];
        xp[i] = orig + eps;
        let lp = loss(&xp);
        xp[i] = orig - eps;
        let lm = loss(&xp);
        xp[i] = orig;
        let num = (lp - lm) / (2.0 * eps as f64);
        let ana = analytic[i] as f64;
        assert!((num - ana).abs() <= atol + 1e-2 * num.abs(), "{name}: d/dx[{i}] analytic {ana} vs numeric {num}");
    }
}
