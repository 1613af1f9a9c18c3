//! Figure 7 of the paper: the standard deviation of every 3x3 layer's
//! response — the eval-mode BN output, before the ReLU and the residual
//! addition — over all N·C·H·W values of a test set.
//!
//! After an eval-mode forward every unit's input is still in the network's
//! buffers, so each 3x3 convolution is recomputed into a scratch buffer, the
//! BN affine (running statistics) applied, and sums of values and squares
//! accumulated in f64.

use crate::net::{Net, ShortcutPlan, UnitPlan};
use crate::ops::bn::{BnParams, eval_affine};
use crate::shape::Dims;

/// Running sums of one layer's responses.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Moments {
    /// the conv's torchvision name, e.g. `layer2.1.conv1`
    pub name: String,
    pub sum: f64,
    pub sum_sq: f64,
    pub count: u64,
}

impl Moments {
    /// Population standard deviation of the values seen.
    pub fn std(&self) -> f64 {
        let n = self.count.max(1) as f64;
        let mean = self.sum / n;
        (self.sum_sq / n - mean * mean).max(0.0).sqrt()
    }
}

/// The 3x3 units of `net` in network order, each with its input buffer.
fn units_3x3(net: &Net, n: usize) -> Vec<(&UnitPlan, &[f32])> {
    let mut out = vec![];
    let plan = &net.plan;
    if plan.stem.conv.k == 3 {
        out.push((&plan.stem, &net.input[..plan.stem.xd.len() * n]));
    }
    for (i, (bp, bb)) in plan.blocks.iter().zip(&net.blocks).enumerate() {
        let block_in = net.block_input(i);
        for (j, u) in bp.units.iter().enumerate() {
            let x: &[f32] = if j == 0 { block_in } else { &bb.units[j - 1].out };
            if u.conv.k == 3 {
                out.push((u, &x[..u.xd.len() * n]));
            }
        }
        if let ShortcutPlan::Proj(u) = &bp.shortcut
            && u.conv.k == 3
        {
            out.push((u, &block_in[..u.xd.len() * n]));
        }
    }
    out
}

/// Add the responses of the last eval-mode forward of `n` images to `acc`
/// (one entry per 3x3 layer, created on the first call).
pub fn accumulate(net: &Net, n: usize, acc: &mut Vec<Moments>) {
    let units = units_3x3(net, n);
    if acc.is_empty() {
        *acc = units.iter().map(|(u, _)| Moments { name: u.conv_name.clone(), ..Default::default() }).collect();
    }
    let mut y = vec![];
    for ((u, x), m) in units.iter().zip(acc.iter_mut()) {
        let (xd, yd) = (Dims { n, ..u.xd }, Dims { n, ..u.yd });
        let c = yd.c;
        y.resize(yd.len(), 0.0);
        let w = &net.params()[u.w..u.w + u.conv.weight_len()];
        u.conv.forward_with(net.kernel_path(), w, x, xd, &mut y);
        let p = BnParams { gamma: &net.params()[u.gamma..u.gamma + c], beta: &net.params()[u.beta..u.beta + c] };
        let (scale, shift) = eval_affine(&p, &net.stats[u.rmean..u.rmean + c], &net.stats[u.rvar..u.rvar + c]);
        let (mut s, mut s2) = (0f64, 0f64);
        for row in y.chunks(c) {
            for ((v, a), b) in row.iter().zip(&scale).zip(&shift) {
                let r = (v * a + b) as f64;
                s += r;
                s2 += r * r;
            }
        }
        m.sum += s;
        m.sum_sq += s2;
        m.count += y.len() as u64;
    }
}

/// Figure 7 for several models (name, layer responses): `dir/<prefix>.png` with the layers in network
/// order and `dir/<prefix>-sorted.png` with each model's stds in descending order. Returns the file names.
pub fn figures(models: &[(String, Vec<Moments>)], dir: &std::path::Path, prefix: &str) -> anyhow::Result<Vec<String>> {
    use crate::analysis::plot::{Figure, render_figure};
    let points = |v: Vec<f64>| v.into_iter().enumerate().map(|(i, s)| ((i + 1) as f64, s)).collect::<Vec<_>>();
    let ordered: Vec<(String, Vec<(f64, f64)>)> =
        models.iter().map(|(n, m)| (n.clone(), points(m.iter().map(Moments::std).collect()))).collect();
    let sorted: Vec<(String, Vec<(f64, f64)>)> = models
        .iter()
        .map(|(n, m)| {
            let mut s: Vec<f64> = m.iter().map(Moments::std).collect();
            s.sort_by(|a, b| b.total_cmp(a));
            (n.clone(), points(s))
        })
        .collect();
    let mut made = vec![];
    for (series, xlabel, file, title) in [
        (&ordered, "layer index (original)", format!("{prefix}.png"), "Layer responses (std)"),
        (&sorted, "layer index (sorted by magnitude)", format!("{prefix}-sorted.png"), "Layer responses (std), sorted"),
    ] {
        render_figure(&Figure::Lines { series, xlabel, ylabel: "std" }, &dir.join(&file), title, (900, 420))?;
        made.push(file);
    }
    Ok(made)
}

/// The responses of classifier `c` over up to `limit` test images of `data` (see
/// [`crate::eval::test_split`]). `strict_counts`: see [`crate::data::load_with`].
pub fn measure(
    c: &mut crate::predict::Classifier,
    data: &std::path::Path,
    limit: usize,
    strict_counts: bool,
) -> anyhow::Result<Vec<Moments>> {
    let split = crate::eval::test_split(c, data, strict_counts, false)?;
    let mut acc = vec![];
    crate::eval::each_batch(&mut c.net, split.source.as_ref(), limit, 2, |net, kept| {
        accumulate(net, kept.len(), &mut acc);
        Ok(())
    })?;
    if acc.is_empty() {
        anyhow::bail!("{}: no images, or no 3x3 layers", data.display());
    }
    Ok(acc)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::{ArchOptions, ArchSpec};

    #[test]
    fn responses_match_a_direct_computation() {
        let spec = ArchSpec::parse("resnet8", &ArchOptions::default()).unwrap();
        let mut net = Net::new(&spec, 3, 8, 8, false, 4).unwrap();
        for (i, v) in net.stats.iter_mut().enumerate() {
            *v = 0.5 + crate::rng::counter_uniform("resp", i as u64);
        }
        for (i, v) in net.input.iter_mut().enumerate() {
            *v = crate::rng::counter_uniform("resp-in", i as u64) - 0.5;
        }
        net.forward(3, false);
        let mut acc = vec![];
        accumulate(&net, 3, &mut acc);
        // resnet8: the 3x3 stem and two 3x3 convs in each of three blocks
        let names: Vec<&str> = acc.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "conv1",
                "layer1.0.conv1",
                "layer1.0.conv2",
                "layer2.0.conv1",
                "layer2.0.conv2",
                "layer3.0.conv1",
                "layer3.0.conv2"
            ]
        );
        assert_eq!(acc[0].count, 3 * 8 * 8 * 16);
        // the stem directly: a naive convolution of the input, then BN with the running statistics
        let (gamma, beta, mean, var) = (
            net.get_torch("bn1.weight").unwrap(),
            net.get_torch("bn1.bias").unwrap(),
            net.get_torch("bn1.running_mean").unwrap(),
            net.get_torch("bn1.running_var").unwrap(),
        );
        let w = net.get_torch("conv1.weight").unwrap(); // (16, 3, 3, 3)
        let mut vals = vec![];
        for b in 0..3 {
            for y in 0..8i64 {
                for x in 0..8i64 {
                    for o in 0..16 {
                        let mut s = 0f64;
                        for i in 0..3 {
                            for ky in 0..3i64 {
                                for kx in 0..3i64 {
                                    let (iy, ix) = (y + ky - 1, x + kx - 1);
                                    if (0..8).contains(&iy) && (0..8).contains(&ix) {
                                        let xi = net.input[((b * 8 + iy as usize) * 8 + ix as usize) * 3 + i] as f64;
                                        s += xi * w[((o * 3 + i) * 3 + ky as usize) * 3 + kx as usize] as f64;
                                    }
                                }
                            }
                        }
                        let r = (s - mean[o] as f64) / (var[o] as f64 + 1e-5).sqrt() * gamma[o] as f64 + beta[o] as f64;
                        vals.push(r);
                    }
                }
            }
        }
        let n = vals.len() as f64;
        let m = vals.iter().sum::<f64>() / n;
        let std = (vals.iter().map(|v| (v - m) * (v - m)).sum::<f64>() / n).sqrt();
        assert!((acc[0].std() - std).abs() < 1e-5 * std, "{} vs {std}", acc[0].std());
        // a second batch adds to the same sums
        accumulate(&net, 3, &mut acc);
        assert_eq!(acc[0].count, 2 * 3 * 8 * 8 * 16);
        assert!((acc[0].std() - std).abs() < 1e-5 * std);
    }
}
