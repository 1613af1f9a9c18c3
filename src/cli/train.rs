//! `resnet train`: the paper's CIFAR recipe on CIFAR-10/100 or MNIST-style data.

use super::arch_args::ArchOpts;
use crate::data::{self, Format};
use crate::train::schedule::Schedule;
use crate::train::{self, Progress, RunData, TrainConfig};
use anyhow::{Context, Result, bail};
use clap::ValueEnum;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(Copy, Clone, ValueEnum)]
enum FormatArg {
    Cifar10,
    Cifar100,
    Mnist,
    FashionMnist,
}

#[derive(clap::Args)]
#[command(
    after_help = "Examples:\n  resnet train --arch resnet20 --data data/fashion-mnist --out runs/r20 --epochs 6\n  \
resnet train --arch resnet110 --data cifar-10-binary.tar.gz --out runs/r110      # the paper: 64k iterations\n  \
resnet train --arch resnet56 --data cifar-10-batches-bin --out runs/r56 --stop-at 10000\n  \
resnet train --resume runs/r56\n\n\
Defaults follow Sec. 4.2: batch 128, SGD momentum 0.9, weight decay 1e-4, lr 0.1 divided by 10 at 50% \
and 75% of the run (32k/48k of 64k), warm-up at lr 0.01 for 110+ layers until the training error is \
below 80%, pad-4 random crops and horizontal flips, per-pixel mean subtraction, single-view test."
)]
pub struct Args {
    /// Network: resnetD or plainD with D = 6n+2 (20, 32, 44, 56, 110, 1202, ...)
    #[arg(long, short = 'a', conflicts_with = "resume")]
    arch: Option<String>,
    #[command(flatten)]
    arch_opts: ArchOpts,
    /// Data: a CIFAR-10/100 binary directory or official .tar.gz, or a directory of MNIST-style IDX files
    #[arg(long)]
    data: Option<PathBuf>,
    /// Name the data format instead of recognising it
    #[arg(long, value_enum)]
    format: Option<FormatArg>,
    /// Run directory (created; must not hold a run already — use --resume)
    #[arg(long)]
    out: Option<PathBuf>,
    /// Continue the run in this directory exactly where it stopped
    #[arg(long, conflicts_with_all = ["data", "out", "iters", "epochs", "batch", "seed", "val", "milestones", "lr", "crop_pad", "no_flip"])]
    resume: Option<PathBuf>,
    /// Total iterations (default 64000, the paper's); milestones scale with it
    #[arg(long, conflicts_with = "epochs")]
    iters: Option<u64>,
    /// Total epochs instead of iterations
    #[arg(long)]
    epochs: Option<u64>,
    /// Stop early after this iteration (resumable)
    #[arg(long)]
    stop_at: Option<u64>,
    #[arg(long, default_value_t = 128)]
    batch: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Hold out this many (seeded, random) training images for validation; best.safetensors picks on them
    #[arg(long, default_value_t = 0)]
    val: usize,
    /// Learning-rate milestones (iterations), instead of 50% and 75% of the run
    #[arg(long, value_delimiter = ',')]
    milestones: Option<Vec<u64>>,
    /// Base learning rate
    #[arg(long)]
    lr: Option<f32>,
    /// Extra checkpoints every N iterations
    #[arg(long, default_value_t = 0)]
    ckpt_every: u64,
    /// Epoch checkpoints to keep
    #[arg(long, default_value_t = 3)]
    keep: usize,
    /// Training crops: pad the image by this many pixels and crop back at random (the paper: 4; 0 = no crops)
    #[arg(long, default_value_t = 4)]
    crop_pad: usize,
    /// No random horizontal flips
    #[arg(long)]
    no_flip: bool,
    /// A metrics line every N iterations
    #[arg(long, default_value_t = 50)]
    log_every: u64,
    /// No progress output
    #[arg(long)]
    quiet: bool,
    /// Print the outcome as one JSON object
    #[arg(long)]
    json: bool,
}

fn load_data(cfg: &TrainConfig) -> Result<RunData> {
    let (splits, _) = data::load(&cfg.data, Some(cfg.format))?;
    let (train, val) = train::split_val(splits.train, cfg.val, cfg.seed)?;
    Ok(RunData { train: Arc::new(train), val, test: splits.test })
}

fn new_run(a: &Args) -> Result<(PathBuf, TrainConfig, RunData)> {
    let Some(arch) = &a.arch else { bail!("--arch is required for a new run (or --resume RUN)") };
    let data_path = a.data.clone().context("--data is required for a new run")?;
    let out = a.out.clone().context("--out is required for a new run")?;
    if out.join("config.toml").exists() {
        bail!("{} already holds a run; continue it with --resume {0}", out.display());
    }
    let format = a.format.map(|f| match f {
        FormatArg::Cifar10 => Format::Cifar10,
        FormatArg::Cifar100 => Format::Cifar100,
        FormatArg::Mnist => Format::Mnist,
        FormatArg::FashionMnist => Format::FashionMnist,
    });
    let (splits, format) = data::load(&data_path, format)?;
    // the network takes the data's channels, classes and (padded) size
    let mut opts = a.arch_opts.clone();
    if opts.input_size.is_some() {
        bail!("--input-size is set by the data in training (32x32; 28x28 images are padded to it)");
    }
    if let Some(c) = opts.classes
        && c != splits.train.classes
    {
        bail!("--classes {c} does not match the data, which has {} classes", splits.train.classes);
    }
    opts.classes = Some(splits.train.classes);
    opts.in_channels = Some(splits.train.c);
    let (spec, _) = opts.resolve(arch)?;
    if spec.family != crate::arch::Family::Cifar {
        bail!(
            "{} is an ImageNet-family network; training here follows the CIFAR recipe: use resnetD / plainD with D = 6n+2",
            spec.name
        );
    }
    if a.batch == 0 {
        bail!("--batch must be at least 1");
    }
    let (train, val) = train::split_val(splits.train, a.val, a.seed)?;
    let iters = match (a.iters, a.epochs) {
        (Some(i), _) => i,
        (None, Some(e)) => (e * train.len() as u64).div_ceil(a.batch as u64),
        (None, None) => 64_000,
    };
    if iters == 0 {
        bail!("the run needs at least one iteration");
    }
    let mut schedule = Schedule::cifar(iters, spec.depth);
    if let Some(m) = &a.milestones {
        schedule.milestones = m.clone();
    }
    if let Some(lr) = a.lr {
        schedule.lr = lr;
    }
    let cfg = TrainConfig {
        arch: spec,
        data: data_path,
        format,
        batch: a.batch,
        seed: a.seed,
        val: a.val,
        schedule,
        momentum: 0.9,
        weight_decay: 1e-4,
        log_every: a.log_every.max(1),
        ckpt_every: a.ckpt_every,
        keep: a.keep.max(1),
        threads: crate::par::threads(),
        crop_pad: a.crop_pad,
        flip: !a.no_flip,
    };
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let text = toml::to_string(&cfg).context("writing the configuration")?;
    train::checkpoint::write_atomic(&out.join("config.toml"), text.as_bytes())?;
    Ok((out, cfg, RunData { train: Arc::new(train), val, test: splits.test }))
}

fn resumed(dir: &Path) -> Result<(PathBuf, TrainConfig, RunData)> {
    let path = dir.join("config.toml");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let cfg: TrainConfig = toml::from_str(&text).with_context(|| format!("{}: bad configuration", path.display()))?;
    if cfg.threads != crate::par::threads() {
        eprintln!(
            "note: this run computed with {} threads, now {}: results stay correct but are no longer bit-identical to an uninterrupted run",
            cfg.threads,
            crate::par::threads()
        );
    }
    let data = load_data(&cfg)?;
    Ok((dir.to_path_buf(), cfg, data))
}

pub fn run(a: Args) -> Result<()> {
    let (dir, cfg, data) = match &a.resume {
        Some(d) => resumed(d)?,
        None => new_run(&a)?,
    };
    let progress = if a.quiet {
        Progress::Quiet
    } else if std::io::stderr().is_terminal() {
        Progress::Bar
    } else {
        Progress::Lines
    };
    let _ = ctrlc::set_handler(|| {
        if train::STOP.swap(true, std::sync::atomic::Ordering::Relaxed) {
            std::process::exit(130); // a second Ctrl-C: leave now
        }
        eprintln!("\nstopping: writing a resumable checkpoint (Ctrl-C again to quit at once)");
    });
    let out = train::run(&dir, &cfg, &data, a.stop_at, progress)?;
    if a.json {
        println!("{}", serde_json::to_string(&out)?);
    } else {
        let state = if out.finished {
            "finished"
        } else if out.interrupted {
            "interrupted (resumable)"
        } else {
            "stopped (resumable)"
        };
        print!("{}: {state} at iteration {}/{}", dir.display(), out.iteration, cfg.schedule.iters);
        if let Some(e) = out.test_err {
            print!(", test error {e:.2}%");
        }
        if let Some(e) = out.val_err {
            print!(", validation error {e:.2}%");
        }
        println!();
        if !out.finished {
            println!("continue with: resnet train --resume {}", dir.display());
        }
    }
    Ok(())
}
