//! Writes the cases scripts/check-onnx-export.sh runs through `resnet export`
//! and onnxruntime: for each network, weights (He init with randomised BN
//! statistics), an input batch (N, C, H, W float32, raw little-endian) and the
//! logits our engine computes for it.
//!
//!     cargo run --release --example onnx_cases -- DIR
//!
//! DIR/cases.json lists {name, arch, weights, input, shape, logits}. CIFAR
//! nets are written as our checkpoints, ImageNet nets as torchvision-named
//! safetensors: both paths of `resnet export` are exercised.

use resnet::arch::{ArchOptions, ArchSpec, ShortcutOpt, StrideIn};
use resnet::data::augment::Preprocess;
use resnet::net::{Net, ParamKind};
use resnet::rng::counter_uniform;
use resnet::weights::checkpoint::{self, Meta};
use resnet::weights::{self, StateDict};
use std::path::PathBuf;

fn main() -> anyhow::Result<()> {
    let dir = PathBuf::from(std::env::args().nth(1).ok_or_else(|| anyhow::anyhow!("usage: onnx_cases DIR"))?);
    std::fs::create_dir_all(&dir)?;
    let b = |s| ArchOptions { shortcut: Some(s), ..Default::default() };
    let cases = [
        ("resnet20_a", "resnet20", ArchOptions::default()),
        ("plain20", "plain20", ArchOptions::default()),
        ("resnet20_b", "resnet20", b(ShortcutOpt::B)),
        ("resnet32_c_grey", "resnet32", ArchOptions { in_channels: Some(1), ..b(ShortcutOpt::C) }),
        ("resnet18", "resnet18", ArchOptions::default()),
        ("resnet50_v15", "resnet50", ArchOptions { stride_in: Some(StrideIn::ThreeByThree), ..Default::default() }),
    ];
    let mut out = vec![];
    for (name, arch, opts) in cases {
        let spec = ArchSpec::parse(arch, &opts)?;
        let size = spec.input_size;
        let n = 2;
        let mut net = Net::new(&spec, n, size, size, false, 7).map_err(|e| anyhow::anyhow!("{e}"))?;
        // non-trivial BN statistics, so that BN (and its folding) matters
        let infos: Vec<_> = net.plan.params.iter().chain(&net.plan.stats).cloned().collect();
        for t in infos {
            let u = |i: usize| counter_uniform(&format!("onnx/{}", t.name), i as u64);
            let v: Vec<f32> = match t.kind {
                ParamKind::BnWeight | ParamKind::RunningVar => (0..t.len).map(|i| 0.5 + u(i)).collect(),
                ParamKind::BnBias | ParamKind::RunningMean | ParamKind::FcBias => {
                    (0..t.len).map(|i| u(i) - 0.5).collect()
                }
                _ => continue,
            };
            net.set_torch(&t.name, &t.shape, &v).map_err(anyhow::Error::msg)?;
        }
        let c = spec.in_channels;
        let nchw: Vec<f32> =
            (0..n * c * size * size).map(|i| 2.0 * counter_uniform("onnx/input", i as u64) - 1.0).collect();
        for b in 0..n {
            for ch in 0..c {
                for y in 0..size {
                    for x in 0..size {
                        net.input[((b * size + y) * size + x) * c + ch] = nchw[((b * c + ch) * size + y) * size + x];
                    }
                }
            }
        }
        net.forward(n, false);
        let logits: Vec<Vec<f32>> = (0..n).map(|i| net.logits_of(i).to_vec()).collect();
        let weights = dir.join(format!("{name}.safetensors"));
        let bytes = if spec.family == resnet::arch::Family::Cifar {
            let pre =
                Preprocess { src: (size, size, c), size, mean: vec![0.0; size * size * c], crop_pad: 0, flip: false };
            let names = (0..spec.classes).map(|i| format!("c{i}")).collect();
            let meta = Meta::new(spec.clone(), names, (size, size, c), size);
            checkpoint::to_bytes(&net, None, &pre, &meta)?
        } else {
            weights::safetensors_bytes(&StateDict::of_net(&net), None)?
        };
        std::fs::write(&weights, bytes)?;
        let input = dir.join(format!("{name}.input.f32"));
        std::fs::write(&input, nchw.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>())?;
        out.push(serde_json::json!({
            "name": name, "arch": spec.name, "weights": weights, "input": input,
            "shape": [n, c, size, size], "logits": logits,
        }));
        eprintln!("{name}: written");
    }
    std::fs::write(dir.join("cases.json"), serde_json::to_string_pretty(&out)?)?;
    Ok(())
}
