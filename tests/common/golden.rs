//! The deterministic weight generator of scripts/golden_fixtures.py, in Rust:
//! the same values, element by element, so no weights are stored.

use resnet::net::{Net, ParamKind};
use resnet::rng::counter_uniform;

/// The value scripts/golden_fixtures.py puts at torch flat index `i` of `name`.
fn value(kind: ParamKind, shape: &[usize], u: f32) -> f32 {
    let u = u as f64;
    (match kind {
        ParamKind::ConvWeight { k, cin, .. } => (2.0 * u - 1.0) * 3f64.sqrt() * (2.0 / (k * k * cin) as f64).sqrt(),
        ParamKind::FcWeight => (2.0 * u - 1.0) / (shape[1] as f64).sqrt(),
        ParamKind::FcBias => (2.0 * u - 1.0) * 0.1,
        ParamKind::BnWeight => 0.5 + u,
        ParamKind::BnBias => (2.0 * u - 1.0) * 0.5,
        ParamKind::RunningMean => (2.0 * u - 1.0) * 0.1,
        ParamKind::RunningVar => 0.5 + u,
    }) as f32
}

/// Fill every parameter and running statistic of `net` with the golden values.
pub fn fill(net: &mut Net) {
    let infos: Vec<_> = net.plan.params.iter().chain(&net.plan.stats).cloned().collect();
    for t in infos {
        let stream = format!("golden/{}", t.name);
        let data: Vec<f32> = (0..t.len).map(|i| value(t.kind, &t.shape, counter_uniform(&stream, i as u64))).collect();
        net.set_torch(&t.name, &t.shape, &data).unwrap();
    }
}

/// The golden input batch of stream `stream`, NCHW as PyTorch sees it, converted to our NHWC.
#[allow(dead_code)] // not every test crate uses it
pub fn input_nhwc(stream: &str, n: usize, c: usize, h: usize, w: usize) -> Vec<f32> {
    let nchw: Vec<f32> = (0..n * c * h * w).map(|i| 2.0 * counter_uniform(stream, i as u64) - 1.0).collect();
    let mut out = vec![0.0; nchw.len()];
    for b in 0..n {
        for ch in 0..c {
            for y in 0..h {
                for x in 0..w {
                    out[((b * h + y) * w + x) * c + ch] = nchw[((b * c + ch) * h + y) * w + x];
                }
            }
        }
    }
    out
}
