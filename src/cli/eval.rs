//! `resnet eval`: top-1 / top-5 error and loss under the paper's test protocols, for one model or an ensemble.

use crate::data;
use crate::data::folder;
use crate::eval::{self, Protocol, Tally, ensemble_probs};
use crate::predict::{Classifier, LoadOptions};
use anyhow::{Context, Result, bail};
use clap::ValueEnum;
use std::io::IsTerminal;
use std::path::PathBuf;

#[derive(Copy, Clone, PartialEq, ValueEnum)]
enum ProtocolArg {
    /// one view: the model's evaluation transform (centre crop / centred image)
    Single,
    /// 4 corners + centre of the image resized to 256, and of its flip (Table 3)
    #[value(name = "10crop")]
    TenCrop,
    /// fully-convolutional at several shorter sides, with flips (Tables 4-5)
    Multiscale,
}

#[derive(clap::Args)]
#[command(after_help = "Examples:\n  \
resnet eval --weights runs/r20/last.safetensors --data data/fashion-mnist\n  \
resnet eval --weights resnet50.pth --data ~/imagenet --protocol 10crop --json\n  \
resnet eval --weights a.pth --weights b.pth --data ~/imagenet --protocol multiscale --scales 224,256,384,480,640\n\n\
Data: a CIFAR / MNIST-style data set (its test split; CIFAR-family models take the single view) or an \
image folder (its val/ split if it has one, else its class folders; classes in sorted folder order, as \
torchvision's ImageFolder). Several --weights form an ensemble: their softmax scores are averaged.")]
pub struct Args {
    /// Weights (repeat for an ensemble): our checkpoints or torchvision files
    #[arg(long, short = 'w', required = true)]
    weights: Vec<PathBuf>,
    /// A data set or an image folder
    #[arg(long)]
    data: PathBuf,
    #[arg(long, value_enum, default_value = "single")]
    protocol: ProtocolArg,
    /// Shorter sides for --protocol multiscale
    #[arg(long, value_delimiter = ',', default_values_t = [224usize, 256, 384, 480, 640])]
    scales: Vec<usize>,
    /// Architecture of torchvision weights when the keys do not tell
    #[arg(long, short = 'a')]
    arch: Option<String>,
    /// Evaluate only the first N images
    #[arg(long)]
    limit: Option<usize>,
    /// Leave out unreadable images (counted) instead of stopping
    #[arg(long)]
    skip_bad: bool,
    /// Print one JSON object
    #[arg(long)]
    json: bool,
}

pub fn run(a: Args) -> Result<()> {
    let protocol = match a.protocol {
        ProtocolArg::Single => Protocol::Single,
        ProtocolArg::TenCrop => Protocol::TenCrop,
        ProtocolArg::Multiscale => {
            if a.scales.is_empty() || a.scales.contains(&0) {
                bail!("--scales needs positive sides");
            }
            Protocol::MultiScale(a.scales.clone())
        }
    };
    let opts = LoadOptions { arch: a.arch.clone(), batch: Some(10), ..Default::default() };
    let mut models = a.weights.iter().map(|w| Classifier::load(w, &opts)).collect::<Result<Vec<_>>>()?;
    let classes = models[0].net.classes();
    let models_len = models.len();
    if let Some(m) = models.iter().find(|m| m.net.classes() != classes) {
        bail!("the models of an ensemble must have the same classes ({classes} vs {})", m.net.classes());
    }
    let bar = |n: usize| {
        (!a.json && std::io::stderr().is_terminal()).then(|| {
            let pb = indicatif::ProgressBar::new(n as u64);
            pb.set_style(
                indicatif::ProgressStyle::with_template(
                    "{bar:30} {pos}/{len} images  [{elapsed_precise} < {eta_precise}]",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            pb
        })
    };
    let mut tally = Tally::default();
    let mut skipped = 0;
    let folder = a.data.is_dir() && folder::looks_like_folder(&a.data);
    if protocol == Protocol::Single {
        // every model's batched single view; the ensemble averages softmax scores image by image, over
        // the images every model read
        let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
        let mut probs: Vec<(Vec<f64>, usize)> = vec![];
        let mut labels = vec![];
        let mut pb = None;
        for (i, m) in models.iter_mut().enumerate() {
            let split = eval::test_split(m, &a.data, true, a.skip_bad)?;
            let src = split.source.as_ref();
            if src.classes() != classes {
                bail!("{} has {} classes, the model {classes}", a.data.display(), src.classes());
            }
            let n = a.limit.unwrap_or(src.len()).min(src.len());
            if i == 0 {
                if let Some(note) = split.note.filter(|_| !a.json) {
                    eprintln!("note: {note}");
                }
                probs = vec![(vec![0.0; classes], 0); n];
                labels = vec![0; n];
                pb = bar(n * models_len);
            } else if n != probs.len() {
                bail!("the models of the ensemble see {} and {n} test images", probs.len());
            }
            eval::each_batch(&mut m.net, src, n, workers, |net, kept| {
                for (j, &(img, label)) in kept.iter().enumerate() {
                    let (p, seen) = &mut probs[img];
                    p.iter_mut().zip(eval::softmax(net.logits_of(j))).for_each(|(acc, p)| *acc += p);
                    *seen += 1;
                    labels[img] = label;
                }
                if let (Some(pb), Some(&(last, _))) = (&pb, kept.last()) {
                    pb.set_position((i * n + last + 1) as u64);
                }
                Ok(())
            })?;
            skipped = skipped.max(src.skipped());
        }
        if let Some(pb) = &pb {
            pb.finish_and_clear();
        }
        for ((p, seen), &l) in probs.iter().zip(&labels) {
            if *seen == models_len {
                tally.add(&p.iter().map(|v| v / models_len as f64).collect::<Vec<_>>(), l as usize);
            } else if *seen > 0 {
                skipped += 1; // read by some models only
            }
        }
    } else {
        if !folder {
            bail!("{} is a CIFAR / MNIST-style data set: CIFAR-family models use the single view", a.data.display());
        }
        let (split, note) = eval::folder_test_split(&a.data)?;
        if let Some(note) = note.filter(|_| !a.json) {
            eprintln!("note: {note}");
        }
        if split.classes.len() != classes {
            bail!("{} has {} classes, the model {classes}", split.root.display(), split.classes.len());
        }
        let n = a.limit.unwrap_or(split.len()).min(split.len());
        let pb = bar(n);
        for (path, label) in &split.files[..n] {
            let img = match data::image::open(path) {
                Ok(i) => i,
                Err(_) if a.skip_bad => {
                    skipped += 1;
                    continue;
                }
                Err(e) => return Err(e.context("--skip-bad leaves unreadable images out")),
            };
            tally.add(&ensemble_probs(&mut models, &img, &protocol)?, *label as usize);
            if let Some(pb) = &pb {
                pb.inc(1);
            }
        }
    }
    let r = tally.report(skipped);
    if r.images == 0 {
        bail!("no images evaluated (an empty split, --limit 0, or every image unreadable)");
    }
    let proto = match &protocol {
        Protocol::Single => "single".to_string(),
        Protocol::TenCrop => "10crop".to_string(),
        Protocol::MultiScale(s) => format!("multiscale {s:?}"),
    };
    if a.json {
        let mut v = serde_json::to_value(&r).context("report")?;
        v["protocol"] = serde_json::json!(proto);
        v["models"] = serde_json::json!(a.weights.iter().map(|w| w.display().to_string()).collect::<Vec<_>>());
        println!("{v}");
    } else {
        let who =
            if models.len() > 1 { format!("ensemble of {}", models.len()) } else { a.weights[0].display().to_string() };
        println!(
            "{who} on {} ({proto}, {} images{}): top-1 error {:.2}%, top-5 error {:.2}%, loss {:.4}",
            a.data.display(),
            r.images,
            if r.skipped > 0 { format!(", {} unreadable left out", r.skipped) } else { String::new() },
            r.top1_err,
            r.top5_err,
            r.loss
        );
    }
    Ok(())
}
