//! `resnet predict`: classify JPEG/PNG images with our checkpoints or torchvision weights.

use super::arch_args::ArchOpts;
use crate::data::image;
use crate::predict::{Classifier, EvalOverride, LoadOptions};
use anyhow::{Context, Result, bail};
use std::path::PathBuf;

#[derive(clap::Args)]
#[command(after_help = "Examples:\n  \
resnet predict --weights runs/fashion-resnet20/last.safetensors shirt.png\n  \
resnet predict --weights resnet50-0676ba61.pth --top 3 cat.jpg dog.jpg\n  \
resnet predict --weights model.pth --labels my-classes.txt --json photo.jpg\n\n\
Weights: our checkpoints carry their architecture, class names and preprocessing (e.g. the \
Fashion-MNIST model: grey, 28x28 centred in 32x32, mean image subtracted). torchvision files \
(.pth/.pt, zip or legacy, or .safetensors; wrapped in {\"state_dict\": ...} or prefixed with \
module./backbone. is fine) get their architecture from their keys (v1.5: stride in the 3x3 \
of bottlenecks unless --stride-in 1x1) and the standard evaluation transform: shorter side \
resized to 256, centre crop 224, ImageNet mean and std.")]
pub struct Args {
    /// Weights: our checkpoint (.safetensors) or a torchvision state_dict (.pth, .pt, .safetensors)
    #[arg(long, short = 'w')]
    weights: PathBuf,
    /// Architecture, when the keys do not tell (e.g. plain20, or resnet50 with --stride-in 1x1)
    #[arg(long, short = 'a')]
    arch: Option<String>,
    #[command(flatten)]
    arch_opts: ArchOpts,
    /// Class names: "imagenet" (the 1000 built in) or a text file with one name per line.
    /// Default: the checkpoint's names, ImageNet's for 1000 classes, else "class N"
    #[arg(long)]
    labels: Option<String>,
    /// How many classes to show per image
    #[arg(long, default_value_t = 5)]
    top: usize,
    /// Print a JSON array: per image {"image", "top": [{"class", "label", "prob"}], "logits"}
    #[arg(long)]
    json: bool,
    /// Resize the shorter side to this (0 = no resize). Default: the weights' (torchvision: 256)
    #[arg(long)]
    resize: Option<usize>,
    /// Centre crop side, the network input. Default: the weights' (torchvision: 224)
    #[arg(long)]
    crop: Option<usize>,
    /// Per-channel mean, comma-separated. Default: the weights' (torchvision: 0.485,0.456,0.406)
    #[arg(long, value_delimiter = ',')]
    mean: Option<Vec<f32>>,
    /// Per-channel std, comma-separated. Default: the weights' (torchvision: 0.229,0.224,0.225)
    #[arg(long, value_delimiter = ',')]
    std: Option<Vec<f32>>,
    /// Images per forward pass
    #[arg(long, default_value_t = 8)]
    batch: usize,
    /// JPEG or PNG files
    #[arg(required = true)]
    images: Vec<PathBuf>,
}

pub fn run(a: Args) -> Result<()> {
    if a.arch_opts.input_size.is_some() {
        bail!("predict takes the input size from the checkpoint, or --crop for torchvision weights; drop --input-size");
    }
    if a.top == 0 || a.batch == 0 {
        bail!("--top and --batch must be at least 1");
    }
    let eval = EvalOverride { resize: a.resize, crop: a.crop, mean: a.mean.clone(), std: a.std.clone() };
    let custom = !eval.is_empty();
    let opts = LoadOptions {
        arch: a.arch.clone(),
        opts: a.arch_opts.options(),
        eval,
        batch: Some(a.batch.min(a.images.len())),
    };
    let mut c = Classifier::load(&a.weights, &opts)?;
    if custom && matches!(c.transform, crate::predict::Transform::Recipe(_)) {
        eprintln!(
            "note: --resize/--crop/--mean/--std apply to ImageNet-style weights; this checkpoint's own preprocessing is used"
        );
    }
    if let Some(l) = &a.labels {
        c.labels = if l == "imagenet" {
            crate::weights::imagenet_classes()
        } else {
            crate::paths::check_regular(std::path::Path::new(l)).context("--labels")?;
            let text = std::fs::read_to_string(l).with_context(|| format!("reading --labels {l}"))?;
            text.lines().map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect()
        };
        if c.labels.len() != c.net.classes() {
            bail!("--labels {l} has {} names, the network has {} classes", c.labels.len(), c.net.classes());
        }
    }
    let images = a.images.iter().map(|p| image::open(p)).collect::<Result<Vec<_>>>()?;
    let preds = c.classify(&images)?;
    let k = a.top.min(c.net.classes());
    if a.json {
        let out: Vec<serde_json::Value> = a
            .images
            .iter()
            .zip(&preds)
            .map(|(p, r)| {
                let top: Vec<serde_json::Value> = r
                    .top(k)
                    .into_iter()
                    .map(|(i, prob)| serde_json::json!({"class": i, "label": c.labels[i], "prob": prob}))
                    .collect();
                serde_json::json!({"image": p.display().to_string(), "top": top, "logits": r.logits})
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        for (p, r) in a.images.iter().zip(&preds) {
            println!("{}:", p.display());
            for (i, prob) in r.top(k) {
                println!("  {:6.2}%  {i:>4}  {}", 100.0 * prob, c.labels[i]);
            }
        }
    }
    Ok(())
}
