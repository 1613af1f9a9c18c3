//! The library API in a few lines: load weights (our checkpoint or a
//! torchvision .pth / .safetensors), classify image files, print the top 3.
//!
//!     cargo run --release --example classify -- WEIGHTS IMAGE...
//!     cargo run --release --example classify -- .cache/brach/weights.pth .cache/photos/chelsea.png
//!
//! Building a network from its name and classifying a prepared tensor is
//! shown at the end (no weights file needed).

use resnet::arch::{ArchOptions, ArchSpec};
use resnet::data::image::ImagenetEval;
use resnet::predict::{Classifier, LoadOptions, Transform};
use resnet::weights::StateDict;

// the binaries' allocator: large blocks on a cache line (resnet::alloc)
#[global_allocator]
static ALLOC: resnet::alloc::LineAligned = resnet::alloc::LineAligned;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (weights, images) = args.split_first().ok_or_else(|| anyhow::anyhow!("usage: classify WEIGHTS IMAGE..."))?;

    // 1. weights from a file: the architecture comes from the checkpoint or the torchvision keys
    let mut c = Classifier::load(weights.as_ref(), &LoadOptions::default())?;
    println!("{} with {} classes ({} weights)", c.net.spec().name, c.net.classes(), c.source);
    let decoded = images.iter().map(|p| resnet::data::image::open(p.as_ref())).collect::<anyhow::Result<Vec<_>>>()?;
    for (path, p) in images.iter().zip(c.classify(&decoded)?) {
        let top: Vec<String> =
            p.top(3).iter().map(|&(i, prob)| format!("{} {:.1}%", c.labels[i], 100.0 * prob)).collect();
        println!("{path}: {}", top.join(", "));
    }

    // 2. a network built from its name, with He-initialised weights, on a prepared (N, H, W, C) tensor
    let spec = ArchSpec::parse("resnet18", &ArchOptions { classes: Some(5), ..Default::default() })?;
    let net = resnet::net::Net::new(&spec, 1, 64, 64, false, 42).map_err(|e| anyhow::anyhow!("{e}"))?;
    let sd = StateDict::of_net(&net); // torchvision names and layouts
    let t = Transform::Imagenet(ImagenetEval { resize: 64, crop: 64, ..Default::default() });
    let mut fresh = Classifier::from_state_dict(&spec, &sd, t, 2)?;
    let input = vec![0.1f32; 2 * 64 * 64 * 3];
    let preds = fresh.classify_tensor(&input)?;
    println!("untrained resnet18 on a grey tensor: class {} of {}", preds[0].top(1)[0].0, preds[0].probs.len());
    Ok(())
}
