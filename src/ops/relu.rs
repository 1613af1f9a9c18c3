//! ReLU and the residual addition as stand-alone layers. The network fuses
//! both into the BN epilogue (bn.rs); these are the reference forms, used
//! where no BN precedes (and by the operator tests).

// ---------------------------------------------------------------- forward
/// y = max(x, 0)
pub fn relu_forward(x: &[f32], y: &mut [f32]) {
    y.iter_mut().zip(x).for_each(|(o, v)| *o = v.max(0.0));
}

/// y = a + b
pub fn add_forward(a: &[f32], b: &[f32], y: &mut [f32]) {
    y.iter_mut().zip(a).zip(b).for_each(|((o, u), v)| *o = u + v);
}

// --------------------------------------------------------------- backward
/// dx = dy * (y > 0)   (y: the forward output)
pub fn relu_backward(y: &[f32], dy: &[f32], dx: &mut [f32]) {
    dx.iter_mut().zip(dy).zip(y).for_each(|((d, g), v)| *d = if *v > 0.0 { *g } else { 0.0 });
}

/// da = db = dy: the gradient passes unchanged to both summands.
pub fn add_backward(dy: &[f32], da: &mut [f32], db: &mut [f32]) {
    da.copy_from_slice(dy);
    db.copy_from_slice(dy);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{check_grad, rand_vec};

    #[test]
    fn relu_and_add_backward_match_finite_differences() {
        let x = rand_vec(37, 7);
        let b = rand_vec(37, 8);
        let proj = rand_vec(37, 9);
        let loss = |x: &[f32], b: &[f32]| -> f64 {
            let mut s = vec![0.0; 37];
            add_forward(x, b, &mut s);
            let mut y = vec![0.0; 37];
            relu_forward(&s, &mut y);
            y.iter().zip(&proj).map(|(a, p)| (*a as f64) * (*p as f64)).sum()
        };
        let mut s = vec![0.0; 37];
        add_forward(&x, &b, &mut s);
        let mut y = vec![0.0; 37];
        relu_forward(&s, &mut y);
        let mut ds = vec![0.0; 37];
        relu_backward(&y, &proj, &mut ds);
        let (mut dx, mut db) = (vec![0.0; 37], vec![0.0; 37]);
        add_backward(&ds, &mut dx, &mut db);
        check_grad("relu+add dx", &x, &dx, 1e-3, 1e-3, |xp| loss(xp, &b));
        check_grad("relu+add db", &b, &db, 1e-3, 1e-3, |bp| loss(&x, bp));
    }
}
