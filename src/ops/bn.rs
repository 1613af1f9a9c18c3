//! Batch normalisation over the channels of an NHWC tensor, with the
//! activation that follows it fused in: nothing, ReLU, or residual add + ReLU
//! (the end of a residual block, eq. 1: y = relu(BN(x) + shortcut)).
//!
//! Training: batch statistics (biased variance for normalising), running
//! mean/var updated with momentum 0.1 using the unbiased variance, as PyTorch
//! does. Eval: running statistics.  x, y, dz: (M, C) with M = N*H*W.

use super::shortcut::ShortcutSrc;
use crate::par;
use crate::shape::Dims;

pub const EPS: f32 = 1e-5;
pub const MOMENTUM: f32 = 0.1;

/// What follows the normalisation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Act {
    None,
    Relu,
    /// y = relu(bn(x) + shortcut)
    AddRelu,
}

/// Per-channel statistics of the last training forward, kept for backward.
#[derive(Clone, Debug, Default)]
pub struct BnSaved {
    pub mean: Vec<f32>,
    pub invstd: Vec<f32>,
    /// BN as the map y = act(x * scale + shift ...): frozen BN's constant scale, gamma / sqrt(running
    /// var + eps) ([`backward_frozen`]); in training, the last forward's (batch statistics), from
    /// which [`backward`] recomputes a ReLU's mask instead of reading the output
    pub scale: Vec<f32>,
    /// training: the last forward's shift, beta - mean * scale
    pub shift: Vec<f32>,
}

/// Sums over a batch split across processes (data-parallel training with synchronised BN): adds
/// the other shards' vectors to `v` in place, so that every shard holds the sum over the whole
/// batch. How is not the model's business (an MPI all-reduce implements it).
pub trait ShardSum: Send + Sync {
    fn sum(&self, v: &mut [f64]);
}

/// How a BN layer sums over its batch: in what order ([`par::SumOrder`]), and over the other
/// shards of a batch split across processes too (synchronised BN) or not.
#[derive(Clone, Copy, Default)]
pub struct BatchSum<'a> {
    pub order: par::SumOrder,
    pub shards: Option<&'a dyn ShardSum>,
}

impl BatchSum<'_> {
    /// The per-channel sums of `parts` (f64) and the row count: over every shard when synchronised.
    fn global(&self, mut parts: Vec<Vec<f64>>, m: usize) -> (Vec<f64>, f64) {
        let width = parts.first().map_or(0, Vec::len);
        self.order.combine(&mut parts, width);
        let mut sums = parts.into_iter().next().unwrap_or_default();
        let Some(s) = self.shards else { return (sums, m as f64) };
        sums.push(m as f64);
        s.sum(&mut sums);
        let mf = sums.pop().expect("pushed above");
        (sums, mf)
    }
}

/// gamma and beta of one BN layer.
pub struct BnParams<'a> {
    pub gamma: &'a [f32],
    pub beta: &'a [f32],
}

// ---------------------------------------------------------------- forward
/// Training-mode forward. Updates the running statistics and `saved`.
#[allow(clippy::too_many_arguments)]
pub fn forward_train(
    p: &BnParams,
    running_mean: &mut [f32],
    running_var: &mut [f32],
    saved: &mut BnSaved,
    x: &[f32],
    xd: Dims,
    act: Act,
    shortcut: Option<ShortcutSrc>,
    y: &mut [f32],
    sum: BatchSum,
) {
    let c = xd.c;
    let m = xd.pixels();
    // one pass: sums and sums of squares, f32 within blocks of 64 rows, f64 across
    let parts = par::reduce_rows(
        sum.order,
        xd.h * xd.w,
        m,
        2 * c,
        #[inline(always)]
        |rows, acc| {
            let mut s = vec![0.0f32; 2 * c];
            let mut count = 0;
            for r in rows {
                let xr = &x[r * c..(r + 1) * c];
                let (s1, s2) = s.split_at_mut(c);
                for ((a, b), v) in s1.iter_mut().zip(s2.iter_mut()).zip(xr) {
                    *a += v;
                    *b += v * v;
                }
                count += 1;
                if count == 64 {
                    acc.iter_mut().zip(&s).for_each(|(a, v)| *a += *v as f64);
                    s.fill(0.0);
                    count = 0;
                }
            }
            acc.iter_mut().zip(&s).for_each(|(a, v)| *a += *v as f64);
        },
    );
    // synchronised: the sums and the count over every shard of the batch
    let (sums, mf) = sum.global(parts, m);
    let m = mf as usize;
    saved.mean.resize(c, 0.0);
    saved.invstd.resize(c, 0.0);
    for ch in 0..c {
        let mean = sums[ch] / mf;
        let var = (sums[c + ch] / mf - mean * mean).max(0.0);
        saved.mean[ch] = mean as f32;
        saved.invstd[ch] = (1.0 / (var + EPS as f64).sqrt()) as f32;
        let unbiased = if m > 1 { var * mf / (mf - 1.0) } else { var };
        running_mean[ch] = (1.0 - MOMENTUM) * running_mean[ch] + MOMENTUM * mean as f32;
        running_var[ch] = (1.0 - MOMENTUM) * running_var[ch] + MOMENTUM * unbiased as f32;
    }
    saved.scale.resize(c, 0.0);
    saved.shift.resize(c, 0.0);
    affine_into(p, &saved.mean, saved.invstd.iter().copied(), &mut saved.scale, &mut saved.shift);
    normalize(&saved.scale, &saved.shift, x, xd, act, shortcut, y);
}

/// Eval-mode forward with the running statistics.
#[allow(clippy::too_many_arguments)]
pub fn forward_eval(
    p: &BnParams,
    running_mean: &[f32],
    running_var: &[f32],
    x: &[f32],
    xd: Dims,
    act: Act,
    shortcut: Option<ShortcutSrc>,
    y: &mut [f32],
) {
    let (scale, shift) = eval_affine(p, running_mean, running_var);
    normalize(&scale, &shift, x, xd, act, shortcut, y);
}

/// BN as y = x * scale + shift: scale = gamma * invstd, shift = beta - mean * scale, per channel
/// into `scale` and `shift`.
fn affine_into(p: &BnParams, mean: &[f32], invstd: impl Iterator<Item = f32>, scale: &mut [f32], shift: &mut [f32]) {
    let each = scale.iter_mut().zip(shift.iter_mut()).zip(p.gamma.iter().zip(p.beta)).zip(mean.iter().zip(invstd));
    for (((s, t), (g, b)), (m, is)) in each {
        *s = g * is;
        *t = b - m * *s;
    }
}

/// Eval-mode BN as y = x * scale + shift per channel (to fold into a convolution).
pub fn eval_affine(p: &BnParams, running_mean: &[f32], running_var: &[f32]) -> (Vec<f32>, Vec<f32>) {
    let c = p.gamma.len();
    let (mut scale, mut shift) = (vec![0.0; c], vec![0.0; c]);
    eval_affine_into(p, running_mean, running_var, &mut scale, &mut shift);
    (scale, shift)
}

/// [`eval_affine`] into `scale` and `shift` (an inference forward: nothing allocated per layer):
/// [`affine_into`] with invstd = 1 / sqrt(var + eps).
pub fn eval_affine_into(p: &BnParams, mean: &[f32], var: &[f32], scale: &mut [f32], shift: &mut [f32]) {
    affine_into(p, mean, var.iter().map(|v| 1.0 / (v + EPS).sqrt()), scale, shift)
}

/// y = act(x * scale + shift [+ shortcut]), BN as its per-channel affine map ([`affine_into`]).
fn normalize(
    scale: &[f32],
    shift: &[f32],
    x: &[f32],
    xd: Dims,
    act: Act,
    shortcut: Option<ShortcutSrc>,
    y: &mut [f32],
) {
    let c = xd.c;
    assert_eq!(act == Act::AddRelu, shortcut.is_some(), "AddRelu needs a shortcut");
    par::for_rows(
        y,
        c,
        64,
        #[inline(always)]
        |first, chunk| {
            for (r, yr) in chunk.chunks_exact_mut(c).enumerate() {
                let row = first + r;
                let xr = &x[row * c..(row + 1) * c];
                // one pass over the row (one loop for the compiler to vectorise, not three)
                let (sc, sh) = (&scale[..c], &shift[..c]);
                match act {
                    Act::None => affine_row(yr, xr, sc, sh).for_each(|(o, z)| *o = z),
                    Act::Relu => affine_row(yr, xr, sc, sh).for_each(|(o, z)| *o = z.max(0.0)),
                    Act::AddRelu => {
                        // option A's shortcut may have fewer channels: the rest add nothing
                        let src = shortcut.as_ref().unwrap().row(row, c);
                        let n = src.len().min(c);
                        let (with, without) = yr.split_at_mut(n);
                        affine_row(with, xr, sc, sh).zip(src).for_each(|((o, z), sv)| *o = (z + sv).max(0.0));
                        affine_row(without, &xr[n..], &sc[n..], &sh[n..]).for_each(|(o, z)| *o = z.max(0.0));
                    }
                }
            }
        },
    );
}

/// Each output of a row with its affine value `x * scale + shift`.
#[inline(always)]
fn affine_row<'a>(
    yr: &'a mut [f32],
    xr: &'a [f32],
    scale: &'a [f32],
    shift: &'a [f32],
) -> impl Iterator<Item = (&'a mut f32, f32)> + 'a {
    yr.iter_mut().zip(xr).zip(scale).zip(shift).map(|(((o, v), s), t)| (o, v * s + t))
}

// --------------------------------------------------------------- backward
/// Backward of y = act(BN(x) [+ s]).  `dy` is the gradient at y, `y` the forward output.  Writes dx,
/// dgamma, dbeta; with `Act::AddRelu` and `dz_out` also dz = dy * (y > 0) (the shortcut's gradient).
/// With `sum.shards` (the batch split across shards, statistics over all of it), dx uses the sums
/// over every shard; dgamma and dbeta stay this shard's (the gradient all-reduce sums them).
///
/// The ReLU's mask: after an addition, y > 0 (y is read); after BN alone it is recomputed from x as
/// x * scale + shift > 0 with the forward's scale and shift (`saved`) and the forward's arithmetic,
/// so it is the same mask, bit for bit, and y is not read (one memory stream less in each pass).
#[allow(clippy::too_many_arguments)]
pub fn backward(
    gamma: &[f32],
    saved: &BnSaved,
    x: &[f32],
    xd: Dims,
    y: &[f32],
    dy: &[f32],
    act: Act,
    dx: &mut [f32],
    dgamma: &mut [f32],
    dbeta: &mut [f32],
    dz_out: Option<&mut [f32]>,
    sum: BatchSum,
) {
    let io = Grads { x, xd, y, dy, dx, dgamma, dbeta, dz_out };
    match act {
        Act::None => backward_masked(gamma, saved, io, sum, |_, _, _, _| true),
        Act::Relu => backward_masked(gamma, saved, io, sum, |xv, _, s, t| xv * s + t > 0.0),
        Act::AddRelu => backward_masked(gamma, saved, io, sum, |_, yv, _, _| yv > 0.0),
    }
}

/// The tensors of [`backward`].
struct Grads<'a> {
    x: &'a [f32],
    xd: Dims,
    y: &'a [f32],
    dy: &'a [f32],
    dx: &'a mut [f32],
    dgamma: &'a mut [f32],
    dbeta: &'a mut [f32],
    dz_out: Option<&'a mut [f32]>,
}

/// [`backward`] with the activation's mask `passed(x, y, scale, shift)` per element.
#[inline(always)]
fn backward_masked(
    gamma: &[f32],
    saved: &BnSaved,
    io: Grads,
    sum: BatchSum,
    passed: impl Fn(f32, f32, f32, f32) -> bool + Sync + Send + Copy,
) {
    let Grads { x, xd, y, dy, dx, dgamma, dbeta, dz_out } = io;
    let c = xd.c;
    let (mean, invstd) = (&saved.mean[..c], &saved.invstd[..c]);
    // the forward's map (the arguments of a ReLU's mask), as `forward_train` left it
    let (scale, shift) = (&saved.scale[..c], &saved.shift[..c]);
    // pass 1: sums of g and g * (x - mean) per channel (f32 within blocks of 64 rows, f64 across);
    // g is written to dz where the shortcut wants it
    let rows_of = move |row: usize| (&dy[row * c..][..c], &x[row * c..][..c], &y[row * c..][..c]);
    let pass1 = |dz: Option<&mut [f32]>| match dz {
        Some(dz) => par::reduce_rows_mut(
            sum.order,
            xd.h * xd.w,
            dz,
            c,
            2 * c,
            #[inline(always)]
            |first, chunk, acc| {
                let mut s = vec![0.0f32; 2 * c];
                for (r, gr) in chunk.chunks_exact_mut(c).enumerate() {
                    row_sums(passed, rows_of(first + r), (scale, shift, mean), &mut s, Some(gr));
                    if r % 64 == 63 {
                        flush(acc, &mut s);
                    }
                }
                flush(acc, &mut s);
            },
        ),
        None => par::reduce_rows(
            sum.order,
            xd.h * xd.w,
            xd.pixels(),
            2 * c,
            #[inline(always)]
            |rows, acc| {
                let mut s = vec![0.0f32; 2 * c];
                for (r, row) in rows.enumerate() {
                    row_sums(passed, rows_of(row), (scale, shift, mean), &mut s, None);
                    if r % 64 == 63 {
                        flush(acc, &mut s);
                    }
                }
                flush(acc, &mut s);
            },
        ),
    };
    // pass 2: dx = gamma * invstd * (g - mean(g) - xhat * mean(g * xhat)) = a g + b x + o
    let mut coefficients = |parts: Vec<Vec<f64>>| -> (Vec<f32>, Vec<f32>, Vec<f32>) {
        // dbeta, dgamma: each part's sums rounded to f32, then combined in f32 (in the tree order
        // that makes a shard's sums a subtree of the whole batch's: the gradient all-reduce adds
        // the shards' f32 values)
        let mut grads: Vec<Vec<f32>> = parts
            .iter()
            .map(|p| {
                (0..2 * c).map(|i| if i < c { p[i] as f32 } else { (p[i] * invstd[i - c] as f64) as f32 }).collect()
            })
            .collect();
        sum.order.combine(&mut grads, 2 * c);
        dbeta.copy_from_slice(&grads[0][..c]);
        dgamma.copy_from_slice(&grads[0][c..2 * c]);
        let (sums, mf) = sum.global(parts, xd.pixels());
        let (mut a, mut b, mut o) = (vec![0.0; c], vec![0.0; c], vec![0.0; c]);
        for ch in 0..c {
            let (is, mu) = (invstd[ch] as f64, mean[ch] as f64);
            let k = gamma[ch] as f64 * is;
            let (mg, mgx) = (sums[ch] / mf, sums[c + ch] * is / mf);
            a[ch] = k as f32;
            b[ch] = (-k * is * mgx) as f32;
            o[ch] = (-k * mg + k * is * mgx * mu) as f32;
        }
        (a, b, o)
    };
    match dz_out {
        Some(dz) => {
            let dz = &mut dz[..xd.len()];
            let coef = coefficients(pass1(Some(&mut *dz)));
            let (dz, (a, b, o)) = (&*dz, &coef);
            par::for_rows(
                dx,
                c,
                64,
                #[inline(always)]
                |first, chunk| {
                    for (r, dxr) in chunk.chunks_exact_mut(c).enumerate() {
                        let row = first + r;
                        let (xr, gr) = (&x[row * c..][..c], &dz[row * c..][..c]);
                        for (((((d, g), xv), a), b), o) in dxr.iter_mut().zip(gr).zip(xr).zip(a).zip(b).zip(o) {
                            *d = a * g + b * xv + o;
                        }
                    }
                },
            );
        }
        None => {
            let coef = coefficients(pass1(None));
            // g again from dy (and the mask), not from a stored copy
            let (a, b, o) = &coef;
            par::for_rows(
                dx,
                c,
                64,
                #[inline(always)]
                |first, chunk| {
                    for (r, dxr) in chunk.chunks_exact_mut(c).enumerate() {
                        row_dx(passed, rows_of(first + r), (scale, shift), (a, b, o), dxr);
                    }
                },
            );
        }
    }
}

/// Pass 1 of [`backward`] on one row: g = dy where `passed`, added to the sums s = [sum g,
/// sum g (x - mean)] (and written to `g_out`). A function, inlined, so that it is compiled inside
/// `par`'s vectorised loop.
#[inline(always)]
fn row_sums(
    passed: impl Fn(f32, f32, f32, f32) -> bool,
    (dyr, xr, yr): (&[f32], &[f32], &[f32]),
    (scale, shift, mean): (&[f32], &[f32], &[f32]),
    s: &mut [f32],
    g_out: Option<&mut [f32]>,
) {
    let (s1, s2) = s.split_at_mut(dyr.len());
    let terms = dyr.iter().zip(xr).zip(yr).zip(scale).zip(shift).zip(mean);
    match g_out {
        Some(gr) => {
            for ((((((d, xv), yv), sc), sh), mu), ((a1, a2), g)) in terms.zip(s1.iter_mut().zip(s2.iter_mut()).zip(gr))
            {
                let v = if passed(*xv, *yv, *sc, *sh) { *d } else { 0.0 };
                *g = v;
                *a1 += v;
                *a2 += v * (xv - mu);
            }
        }
        None => {
            for ((((((d, xv), yv), sc), sh), mu), (a1, a2)) in terms.zip(s1.iter_mut().zip(s2.iter_mut())) {
                let v = if passed(*xv, *yv, *sc, *sh) { *d } else { 0.0 };
                *a1 += v;
                *a2 += v * (xv - mu);
            }
        }
    }
}

/// Pass 2 of [`backward`] on one row, g recomputed from dy: dx = a g + b x + o.
#[inline(always)]
fn row_dx(
    passed: impl Fn(f32, f32, f32, f32) -> bool,
    (dyr, xr, yr): (&[f32], &[f32], &[f32]),
    (scale, shift): (&[f32], &[f32]),
    (a, b, o): (&[f32], &[f32], &[f32]),
    dxr: &mut [f32],
) {
    let terms = dyr.iter().zip(xr).zip(yr).zip(scale).zip(shift);
    for (((((d, xv), yv), sc), sh), ((dxv, a), (b, o))) in terms.zip(dxr.iter_mut().zip(a).zip(b.iter().zip(o))) {
        let g = if passed(*xv, *yv, *sc, *sh) { *d } else { 0.0 };
        *dxv = a * g + b * xv + o;
    }
}

/// acc += s (in f64); s = 0.
#[inline(always)]
fn flush(acc: &mut [f64], s: &mut [f32]) {
    acc.iter_mut().zip(s.iter()).for_each(|(a, v)| *a += *v as f64);
    s.fill(0.0);
}

// ------------------------------------------------------ frozen (constant affine)
/// Frozen BN (detection fine-tuning, torchvision's `FrozenBatchNorm2d`): in training too the layer is
/// the constant map y = act(x * scale + shift [+ s]) of [`eval_affine`] (the running statistics), so
/// its forward is the eval-mode one folded into the convolution's store (`kernels::Epilogue`), and
/// gamma, beta and the statistics get no gradient and never change.
///
/// Backward: `dy` at y, `y` the forward output (its sign is the ReLU mask). g = dy masked by the
/// ReLU; dx = g * scale (the gradient at the conv output); with `Act::AddRelu` also dz = g (the
/// shortcut's gradient). x, y, dy, dx, dz: (M, C) with M = N*H*W, C = `scale.len()`.
pub fn backward_frozen(scale: &[f32], y: &[f32], dy: &[f32], act: Act, dx: &mut [f32], dz_out: Option<&mut [f32]>) {
    let c = scale.len();
    let masked = act != Act::None;
    #[inline(always)]
    fn row(scale: &[f32], yr: &[f32], dyr: &[f32], dxr: &mut [f32], masked: bool) {
        for (((d, g), yv), s) in dxr.iter_mut().zip(dyr).zip(yr).zip(scale) {
            *d = if !masked || *yv > 0.0 { g * s } else { 0.0 };
        }
    }
    match dz_out {
        Some(dz) => par::for_rows_pair(
            dx,
            c,
            dz,
            c,
            64,
            #[inline(always)]
            |first, dxs, dzs| {
                for (r, (dxr, dzr)) in dxs.chunks_exact_mut(c).zip(dzs.chunks_exact_mut(c)).enumerate() {
                    let row_i = first + r;
                    let (yr, dyr) = (&y[row_i * c..][..c], &dy[row_i * c..][..c]);
                    for ((z, g), yv) in dzr.iter_mut().zip(dyr).zip(yr) {
                        *z = if !masked || *yv > 0.0 { *g } else { 0.0 };
                    }
                    row(scale, yr, dyr, dxr, masked);
                }
            },
        ),
        None => par::for_rows(
            dx,
            c,
            64,
            #[inline(always)]
            |first, dxs| {
                for (r, dxr) in dxs.chunks_exact_mut(c).enumerate() {
                    let row_i = first + r;
                    row(scale, &y[row_i * c..][..c], &dy[row_i * c..][..c], dxr, masked);
                }
            },
        ),
    }
}

/// [`backward_frozen`] in place, without dz: `d` holds dy at y and becomes the gradient at the
/// conv output, `d * scale` where the ReLU passed (every element when `act` is `Act::None`; `y`
/// is then not read). With `scale` None only the mask is applied (`d` becomes dz, the shortcut's
/// gradient). The values are [`backward_frozen`]'s, bit for bit. y, d: (M, C).
pub fn backward_frozen_in_place(scale: Option<&[f32]>, y: &[f32], act: Act, c: usize, d: &mut [f32]) {
    let masked = act != Act::None;
    if let Some(s) = scale {
        debug_assert_eq!(s.len(), c);
    }
    debug_assert!(!masked || y.len() >= d.len());
    par::for_rows(
        d,
        c,
        64,
        #[inline(always)]
        |first, ds| {
            for (r, dr) in ds.chunks_exact_mut(c).enumerate() {
                let yr = if masked { &y[(first + r) * c..][..c] } else { &[][..] };
                match (scale, masked) {
                    (Some(s), true) => {
                        for ((g, yv), s) in dr.iter_mut().zip(yr).zip(s) {
                            *g = if *yv > 0.0 { *g * s } else { 0.0 };
                        }
                    }
                    (Some(s), false) => dr.iter_mut().zip(s).for_each(|(g, s)| *g *= s),
                    (None, true) => {
                        for (g, yv) in dr.iter_mut().zip(yr) {
                            *g = if *yv > 0.0 { *g } else { 0.0 };
                        }
                    }
                    (None, false) => {}
                }
            }
        },
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::shortcut::ShortcutSrc;
    use crate::testutil::{check_grad, rand_vec};

    fn run(x: &[f32], xd: Dims, gamma: &[f32], beta: &[f32], act: Act, s: Option<&[f32]>) -> Vec<f32> {
        let c = xd.c;
        let mut rm = vec![0.0; c];
        let mut rv = vec![1.0; c];
        let mut saved = BnSaved::default();
        let mut y = vec![0.0; xd.len()];
        forward_train(
            &BnParams { gamma, beta },
            &mut rm,
            &mut rv,
            &mut saved,
            x,
            xd,
            act,
            s.map(ShortcutSrc::Identity),
            &mut y,
            BatchSum::default(),
        );
        y
    }

    #[test]
    fn train_forward_normalises_and_tracks_running_stats() {
        let xd = Dims::new(3, 5, 4, 6);
        let x: Vec<f32> = rand_vec(xd.len(), 1).iter().map(|v| 3.0 * v + 2.0).collect();
        let gamma = vec![1.0; 6];
        let beta = vec![0.0; 6];
        let mut rm = vec![0.0; 6];
        let mut rv = vec![1.0; 6];
        let mut saved = BnSaved::default();
        let mut y = vec![0.0; xd.len()];
        let p = BnParams { gamma: &gamma, beta: &beta };
        forward_train(&p, &mut rm, &mut rv, &mut saved, &x, xd, Act::None, None, &mut y, BatchSum::default());
        let m = xd.pixels() as f64;
        for ch in 0..6 {
            let col: Vec<f64> = (0..xd.pixels()).map(|r| y[r * 6 + ch] as f64).collect();
            let mean = col.iter().sum::<f64>() / m;
            let var = col.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / m;
            assert!(mean.abs() < 1e-5 && (var - 1.0).abs() < 1e-3, "{mean} {var}");
            let xc: Vec<f64> = (0..xd.pixels()).map(|r| x[r * 6 + ch] as f64).collect();
            let xm = xc.iter().sum::<f64>() / m;
            let xv = xc.iter().map(|v| (v - xm).powi(2)).sum::<f64>() / (m - 1.0);
            assert!((rm[ch] as f64 - 0.1 * xm).abs() < 1e-5);
            assert!((rv[ch] as f64 - (0.9 + 0.1 * xv)).abs() < 1e-4);
        }
        // eval with the running statistics
        let mut ye = vec![0.0; xd.len()];
        forward_eval(&p, &rm, &rv, &x, xd, Act::Relu, None, &mut ye);
        let expect = ((x[0] - rm[0]) / (rv[0] + EPS).sqrt()).max(0.0);
        assert!((ye[0] - expect).abs() < 1e-5);
    }

    /// Frozen BN is the eval-mode map in training too; its backward against central differences of
    /// that map (the input and the shortcut: gamma and beta are constants).
    #[test]
    fn frozen_backward_matches_finite_differences() {
        for (i, act) in [Act::None, Act::AddRelu, Act::Relu].into_iter().enumerate() {
            let xd = Dims::new(2, 5, 7, 6);
            let c = xd.c;
            let x = rand_vec(xd.len(), 60 + i as u64);
            let gamma: Vec<f32> = rand_vec(c, 61).iter().map(|v| 1.0 + 0.5 * v).collect();
            let beta = rand_vec(c, 62);
            let rm = rand_vec(c, 63);
            let rv: Vec<f32> = rand_vec(c, 64).iter().map(|v| 1.0 + 0.5 * v).collect();
            let p = BnParams { gamma: &gamma, beta: &beta };
            let (scale, shift) = eval_affine(&p, &rm, &rv);
            // the shortcut keeps x * scale + shift + s away from the ReLU kink
            let s: Vec<f32> = rand_vec(xd.len(), 65)
                .iter()
                .enumerate()
                .map(|(j, s)| {
                    let z = x[j] * scale[j % c] + shift[j % c];
                    if (s + z).abs() < 0.05 { s + 0.1f32.copysign(s + z) } else { *s }
                })
                .collect();
            let sc = (act == Act::AddRelu).then_some(&s[..]);
            let proj = rand_vec(xd.len(), 66);
            let run = |x: &[f32], s: Option<&[f32]>| {
                let mut y = vec![0.0; xd.len()];
                forward_eval(&p, &rm, &rv, x, xd, act, s.map(ShortcutSrc::Identity), &mut y);
                y
            };
            let loss = |x: &[f32], s: Option<&[f32]>| -> f64 {
                run(x, s).iter().zip(&proj).map(|(a, b)| (*a as f64) * (*b as f64)).sum()
            };
            let y = run(&x, sc);
            let (mut dx, mut dz) = (vec![0.0; xd.len()], vec![0.0; xd.len()]);
            backward_frozen(&scale, &y, &proj, act, &mut dx, (act == Act::AddRelu).then_some(&mut dz[..]));
            check_grad(&format!("frozen bn {act:?} dx"), &x, &dx, 1e-3, 1e-3, |xp| loss(xp, sc));
            if act == Act::AddRelu {
                check_grad(&format!("frozen bn {act:?} dshortcut"), &s, &dz, 1e-3, 1e-3, |sp| loss(&x, Some(sp)));
            }
        }
    }

    #[test]
    fn frozen_backward_in_place_is_the_same_bits() {
        let d = Dims::new(3, 11, 7, 5); // 231 rows: several tasks of 64 rows
        let c = d.c;
        let scale: Vec<f32> = rand_vec(c, 70).iter().map(|v| v - 0.3).collect(); // some negative
        let mut y = rand_vec(d.len(), 71);
        y[3] = f32::NAN;
        y[4] = 0.0;
        let dy = rand_vec(d.len(), 72);
        for act in [Act::None, Act::Relu, Act::AddRelu] {
            let (mut dx, mut dz) = (vec![9.0; d.len()], vec![9.0; d.len()]);
            backward_frozen(&scale, &y, &dy, act, &mut dx, Some(&mut dz));
            let mut got = dy.clone();
            backward_frozen_in_place(None, &y, act, c, &mut got);
            assert!(got.iter().zip(&dz).all(|(a, b)| a.to_bits() == b.to_bits()), "{act:?}: mask only");
            backward_frozen_in_place(Some(&scale), &y, act, c, &mut got);
            assert!(got.iter().zip(&dx).all(|(a, b)| a.to_bits() == b.to_bits()), "{act:?}: mask then scale");
            let mut got = dy.clone();
            backward_frozen_in_place(Some(&scale), &y, act, c, &mut got);
            assert!(got.iter().zip(&dx).all(|(a, b)| a.to_bits() == b.to_bits()), "{act:?}: scale");
        }
    }

    #[test]
    fn backward_matches_finite_differences() {
        for (i, act) in [Act::None, Act::AddRelu, Act::Relu].into_iter().enumerate() {
            let xd = Dims::new(2, 9, 9, 7);
            let c = xd.c;
            let x = rand_vec(xd.len(), 40 + i as u64);
            let gamma: Vec<f32> = rand_vec(c, 50).iter().map(|v| 1.0 + 0.5 * v).collect();
            let beta = rand_vec(c, 51);
            // keep bn(x) + s away from the ReLU kink, where finite differences see half a slope
            let z = run(&x, xd, &gamma, &beta, Act::None, None);
            let s: Vec<f32> = rand_vec(xd.len(), 52)
                .iter()
                .zip(&z)
                .map(|(s, z)| if (s + z).abs() < 0.05 { s + 0.1f32.copysign(s + z) } else { *s })
                .collect();
            let proj = rand_vec(xd.len(), 53);
            let sc = (act == Act::AddRelu).then_some(&s[..]);
            let loss = |x: &[f32], g: &[f32], b: &[f32], s: Option<&[f32]>| -> f64 {
                let y = run(x, xd, g, b, act, s);
                y.iter().zip(&proj).map(|(a, b)| (*a as f64) * (*b as f64)).sum()
            };
            let y = run(&x, xd, &gamma, &beta, act, sc);
            let mut saved = BnSaved::default();
            let (mut rm, mut rv) = (vec![0.0; c], vec![1.0; c]);
            let mut yy = vec![0.0; xd.len()];
            forward_train(
                &BnParams { gamma: &gamma, beta: &beta },
                &mut rm,
                &mut rv,
                &mut saved,
                &x,
                xd,
                act,
                sc.map(ShortcutSrc::Identity),
                &mut yy,
                BatchSum::default(),
            );
            let mut dx = vec![0.0; xd.len()];
            let (mut dg, mut db) = (vec![0.0; c], vec![0.0; c]);
            let mut dz = vec![0.0; xd.len()];
            let dz_out = (act == Act::AddRelu).then_some(&mut dz[..]);
            backward(&gamma, &saved, &x, xd, &y, &proj, act, &mut dx, &mut dg, &mut db, dz_out, BatchSum::default());
            let name = format!("bn {act:?}");
            check_grad(&format!("{name} dx"), &x, &dx, 1e-3, 5e-3, |xp| loss(xp, &gamma, &beta, sc));
            check_grad(&format!("{name} dgamma"), &gamma, &dg, 1e-3, 5e-3, |g| loss(&x, g, &beta, sc));
            check_grad(&format!("{name} dbeta"), &beta, &db, 1e-3, 5e-3, |b| loss(&x, &gamma, b, sc));
            if act == Act::AddRelu {
                check_grad(&format!("{name} dshortcut"), &s, &dz, 1e-3, 5e-3, |sp| loss(&x, &gamma, &beta, Some(sp)));
            }
        }
    }

    /// A ReLU's mask recomputed from x (x * scale + shift > 0) is the output's (y > 0), bit for bit:
    /// backward through the ReLU equals backward without activation on dy masked by y. Half the
    /// rows hold one value per channel whose pre-activation is zero up to a rounding (beta cancels
    /// it): exactly 0 in most channels, one ulp above in some, so a mask that differs from the
    /// forward's at zero or by a threshold changes whole channels. y is poisoned for the ReLU's
    /// call: it must not be read.
    #[test]
    fn relu_mask_from_x_is_the_outputs_mask() {
        let xd = Dims::new(3, 8, 8, 32);
        let c = xd.c;
        let x: Vec<f32> =
            rand_vec(xd.len(), 60).iter().enumerate().map(|(i, v)| if (i / c) % 2 == 1 { 0.25 } else { *v }).collect();
        let gamma: Vec<f32> = rand_vec(c, 61).iter().map(|v| 1.0 + 0.5 * v).collect();
        let forward = |beta: &[f32], act: Act| {
            let mut saved = BnSaved::default();
            let (mut rm, mut rv) = (vec![0.0; c], vec![1.0; c]);
            let mut y = vec![0.0; xd.len()];
            let p = BnParams { gamma: &gamma, beta };
            forward_train(&p, &mut rm, &mut rv, &mut saved, &x, xd, act, None, &mut y, BatchSum::default());
            (saved, y)
        };
        // beta = minus the pre-activation of 0.25 (row 1 holds it)
        let beta: Vec<f32> = forward(&vec![0.0; c], Act::None).1[c..2 * c].iter().map(|z| -z).collect();
        let (saved, y) = forward(&beta, Act::Relu);
        let edge = (0..c).filter(|ch| y[c + ch].abs() < 1e-5).count();
        assert_eq!(edge, c, "every channel's 0.25 sits at the ReLU's edge");
        let dy = rand_vec(xd.len(), 63);
        let (zeros, positive) = (y.iter().filter(|v| **v == 0.0).count(), y.iter().filter(|v| **v > 0.0).count());
        assert!(zeros > xd.len() / 8 && positive > xd.len() / 8, "{zeros} zeros, {positive} positive");
        let grads = |act: Act, y: &[f32], dy: &[f32]| {
            let (mut dx, mut dg, mut db) = (vec![0.0; xd.len()], vec![0.0; c], vec![0.0; c]);
            backward(&gamma, &saved, &x, xd, y, dy, act, &mut dx, &mut dg, &mut db, None, BatchSum::default());
            (dx, dg, db)
        };
        let masked: Vec<f32> = dy.iter().zip(&y).map(|(d, y)| if *y > 0.0 { *d } else { 0.0 }).collect();
        let expected = grads(Act::None, &y, &masked);
        let poisoned = vec![f32::NAN; xd.len()];
        let got = grads(Act::Relu, &poisoned, &dy);
        let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&got.0), bits(&expected.0), "dx");
        assert_eq!(bits(&got.1), bits(&expected.1), "dgamma");
        assert_eq!(bits(&got.2), bits(&expected.2), "dbeta");
    }
}
