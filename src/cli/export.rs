//! `resnet export`: a network to ONNX for other runtimes.

use crate::predict::{Classifier, LoadOptions, Transform};
use anyhow::{Context, Result};
use std::path::PathBuf;

#[derive(clap::Args)]
#[command(after_help = "Examples:\n  \
resnet export --weights runs/fashion-resnet20/last.safetensors --onnx r20.onnx\n  \
resnet export --weights resnet50.pth --onnx r50.onnx --fold-bn\n\n\
The graph is the network in eval mode (opset 13): input \"input\" (N, C, H, W) float32 with a \
dynamic batch N, output \"logits\" (N, classes). Preprocessing is not part of it: feed what \
`resnet predict` feeds (printed after export).")]
pub struct Args {
    /// Weights: our checkpoint or a torchvision state_dict (.pth, .pt, .safetensors)
    #[arg(long, short = 'w')]
    weights: PathBuf,
    /// Output file
    #[arg(long)]
    onnx: PathBuf,
    /// Fold every BatchNormalization into its convolution (weights and a bias)
    #[arg(long)]
    fold_bn: bool,
    /// Architecture, when the keys do not tell (e.g. plain20)
    #[arg(long, short = 'a')]
    arch: Option<String>,
    /// Input side (the centre crop). Default: the weights' (torchvision: 224)
    #[arg(long)]
    crop: Option<usize>,
}

pub fn run(a: Args) -> Result<()> {
    crate::paths::refuse_same_file(&a.weights, &a.onnx, "--weights and --onnx")?;
    let eval = crate::predict::EvalOverride { crop: a.crop, ..Default::default() };
    let opts = LoadOptions { arch: a.arch.clone(), eval, batch: Some(1), ..Default::default() };
    let c = Classifier::load(&a.weights, &opts)?;
    let bytes = crate::onnx::export(&c.net, a.fold_bn);
    crate::weights::checkpoint::write_atomic(&a.onnx, &bytes)
        .with_context(|| format!("writing {}", a.onnx.display()))?;
    let i = c.net.plan.input;
    println!(
        "{}: {} ({} classes), input (N, {}, {}, {}), {} bytes{}",
        a.onnx.display(),
        c.net.spec().name,
        c.net.classes(),
        i.c,
        i.h,
        i.w,
        bytes.len(),
        if a.fold_bn { ", BN folded" } else { "" }
    );
    match &c.transform {
        Transform::Recipe(p) => println!(
            "input: pixels / 255 of the {}x{}x{} image centred in {}x{} (zeros around), minus the mean image stored in the checkpoint (preprocess.mean_image)",
            p.src.0, p.src.1, p.src.2, p.size, p.size
        ),
        Transform::Imagenet(t) => println!(
            "input: shorter side resized to {}, centre crop {}, pixels / 255, minus mean {:?}, divided by std {:?}{}",
            t.resize,
            t.crop,
            t.mean,
            t.std,
            if t.mean_image.iter().any(|&v| v != 0.0) {
                ", minus the mean image stored in the checkpoint (preprocess.mean_image)"
            } else {
                ""
            }
        ),
    }
    Ok(())
}
