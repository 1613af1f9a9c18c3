//! `resnet train`: the paper's CIFAR recipe on CIFAR-10/100 or MNIST-style
//! data, its ImageNet recipe on image folders, and fine-tuning.

use super::arch_args::ArchOpts;
use super::signals;
use crate::arch::Family;
use crate::data::augment::Preprocess;
use crate::data::folder;
use crate::data::imagenet::{ImagenetRecipe, Pca};
use crate::data::source::{FolderSource, MemorySource, Source};
use crate::data::{self, Format};
use crate::train::rundir::{ResumePoint, RunDir};
use crate::train::schedule::{Plateau, Schedule};
use crate::train::{self, Finetune, Progress, RunData, TrainConfig};
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

#[derive(Copy, Clone, PartialEq, ValueEnum)]
enum PcaArg {
    /// the standard ImageNet eigenvalues / eigenvectors (AlexNet's)
    Imagenet,
    /// computed from the training images
    Data,
    None,
}

/// Images sampled for the mean image and the PCA of a folder.
const STAT_IMAGES: usize = 500;
/// Default lr when fine-tuning (--init-from): a tenth of the paper's 0.1.
pub const FINETUNE_LR: f32 = 0.01;

#[derive(clap::Args)]
#[command(
    after_help = "Examples:\n  resnet train --arch resnet20 --data data/fashion-mnist --out runs/r20 --epochs 6\n  \
resnet train --arch resnet110 --data cifar-10-binary.tar.gz --out runs/r110      # the paper: 64k iterations\n  \
resnet train --arch resnet56 --data cifar-10-batches-bin --out runs/r56 --stop-at 10000\n  \
resnet train --resume runs/r56\n  \
resnet train --arch resnet18 --data photos/ --input-size 64 --out runs/r18 --epochs 30     # train/ and val/ class folders\n  \
resnet train --arch resnet18 --data photos/ --init-from resnet18.pth --reset-head --input-size 64 --out runs/ft --epochs 5\n\n\
CIFAR / MNIST-style data follow Sec. 4.2: batch 128, SGD momentum 0.9, weight decay 1e-4, lr 0.1 divided by 10 \
at 50% and 75% of the run (32k/48k of 64k), warm-up at lr 0.01 for 110+ layers until the training error is \
below 80%, pad-4 random crops and horizontal flips, per-pixel mean subtraction, single-view test.\n\n\
Image folders (ROOT/train/<class>/*.jpg|png and ROOT/val/<class>/..., or ROOT/<class>/... with --val N) follow \
Sec. 3.4: batch 256, shorter side resized to a random size in [256, 480], random 224 crop or its flip, \
per-pixel mean subtraction, PCA colour augmentation, lr 0.1 (scaled by batch/256 for other batch sizes) \
divided by 10 when the validation error plateaus (--lr-plateau, default patience 2 evaluations, one per epoch; --milestones for fixed steps), \
evaluation on the centre crop of the image resized to 256. Sizes scale with --input-size (64: [73, 137], \
evaluation at 73). Fine-tuning (--init-from) defaults to lr 0.01.\n\n\
Stop signals: SIGINT (Ctrl-C), SIGTERM and SIGHUP write a resumable checkpoint and exit with 130, 143 and 129 \
(a second signal quits at once). One process at a time trains a run directory (a lock on RUN/.lock)."
)]
pub struct Args {
    /// Network: resnetD or plainD; D = 6n+2 for CIFAR, 18/34/50/101/152 for ImageNet (image folders)
    #[arg(long, short = 'a', conflicts_with = "resume")]
    arch: Option<String>,
    #[command(flatten)]
    arch_opts: ArchOpts,
    /// Data: a CIFAR-10/100 directory or official .tar.gz, a directory of MNIST-style IDX files, or an
    /// image folder (train/ and val/ of class folders, or class folders)
    #[arg(long)]
    data: Option<PathBuf>,
    /// Name the data format instead of recognising it (in-memory data sets)
    #[arg(long, value_enum)]
    format: Option<FormatArg>,
    /// Run directory (created; must not hold a run already — use --resume)
    #[arg(long)]
    out: Option<PathBuf>,
    /// Continue the run in this directory exactly where it stopped
    #[arg(long, conflicts_with_all = ["data", "out", "iters", "epochs", "batch", "seed", "val", "milestones", "lr",
        "crop_pad", "no_flip", "scale", "pca", "lr_plateau", "init_from", "workers", "skip_bad", "lenient_counts",
        "train_images", "eval_every"])]
    resume: Option<PathBuf>,
    /// Total iterations (default 64000, the paper's CIFAR runs); milestones scale with it
    #[arg(long, conflicts_with = "epochs")]
    iters: Option<u64>,
    /// Total epochs instead of iterations
    #[arg(long)]
    epochs: Option<u64>,
    /// Stop early after this iteration (resumable)
    #[arg(long)]
    stop_at: Option<u64>,
    /// Images per batch (default 128; 256 for image folders)
    #[arg(long)]
    batch: Option<usize>,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Hold out this many (seeded, random) training images for validation; best.safetensors picks on them
    #[arg(long, default_value_t = 0)]
    val: usize,
    /// Train on this many (seeded, random) of the training images (after --val); in-memory data sets. More
    /// epochs in a short budget: the test set stays whole (and is evaluated every epoch, which costs more
    /// the smaller N is)
    #[arg(long)]
    train_images: Option<usize>,
    /// Learning-rate milestones (iterations), instead of 50% and 75% of the run (or of the plateau rule)
    #[arg(long, value_delimiter = ',')]
    milestones: Option<Vec<u64>>,
    /// Base learning rate (default 0.1; image folders 0.1 x batch/256; 0.01 with --init-from)
    #[arg(long)]
    lr: Option<f32>,
    /// Extra checkpoints every N iterations (default 0: none; may change on --resume)
    #[arg(long)]
    ckpt_every: Option<u64>,
    /// Epoch checkpoints to keep (default 3; may change on --resume)
    #[arg(long)]
    keep: Option<usize>,
    /// Training crops: pad the image by this many pixels and crop back at random (the paper: 4; 0 = no crops)
    #[arg(long, default_value_t = 4)]
    crop_pad: usize,
    /// No random horizontal flips
    #[arg(long)]
    no_flip: bool,
    /// Image folders: range of the shorter side for scale augmentation, MIN,MAX (default 256,480 scaled
    /// to --input-size)
    #[arg(long, value_delimiter = ',', num_args = 2)]
    scale: Option<Vec<usize>>,
    /// Image folders: PCA colour augmentation from the standard ImageNet values, the training data, or none
    #[arg(long, value_enum)]
    pca: Option<PcaArg>,
    /// Image folders: divide the lr by 10 after this many evaluations (epochs, or --eval-every) without a
    /// better validation error (default 2 when there is a validation split)
    #[arg(long)]
    lr_plateau: Option<u32>,
    /// Image folders: skip unreadable images (counted and reported) instead of stopping
    #[arg(long)]
    skip_bad: bool,
    /// Image folders: threads decoding images ahead of compute
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// Start from these weights: our checkpoint or a torchvision .pth / .safetensors
    #[arg(long)]
    init_from: Option<PathBuf>,
    /// With --init-from: a new fc for this data's classes instead of the file's
    #[arg(long, requires = "init_from")]
    reset_head: bool,
    /// With --init-from: train only the fc (the other weights keep their values)
    #[arg(long, requires = "init_from")]
    freeze_backbone: bool,
    /// A metrics line every N iterations (default 50; may change on --resume)
    #[arg(long)]
    log_every: Option<u64>,
    /// Evaluate the validation / test splits every N iterations instead of at every epoch's end (always
    /// after the last); with a small --train-images, epochs are short and evaluation would dominate
    #[arg(long)]
    eval_every: Option<u64>,
    /// No progress output
    #[arg(long)]
    quiet: bool,
    /// Print the outcome as one JSON object
    #[arg(long)]
    json: bool,
    /// Accept official CIFAR file names holding fewer records than the official counts (subsets, tests)
    #[arg(long, hide = true)]
    lenient_counts: bool,
}

/// The in-memory splits of `cfg` with the CIFAR recipe `pre`.
fn memory_data(cfg: &TrainConfig, pre: Option<Preprocess>) -> Result<RunData> {
    let (splits, _) = data::load_with(&cfg.data, cfg.format, !cfg.lenient_counts)?;
    let (mut train, val) = train::split_val(splits.train, cfg.val, cfg.seed)?;
    if let Some(n) = cfg.train_images {
        train = train::subset(train, n, cfg.seed)?;
    }
    let pre = pre.unwrap_or_else(|| Preprocess::cifar_recipe(&train, cfg.crop_pad, cfg.flip));
    let p = Arc::new(pre.clone());
    let src =
        |d: crate::data::Dataset| -> Arc<dyn Source> { Arc::new(MemorySource { data: Arc::new(d), pre: p.clone() }) };
    Ok(RunData { train: src(train), val: val.map(src), test: Some(src(splits.test)), pre, eval: None })
}

/// The splits of an image folder with the ImageNet recipe; `mean`: the checkpoint's mean image (resume).
/// A PCA "from the data" is computed here and written into `cfg` (frozen with it).
fn folder_data(cfg: &mut TrainConfig, mean: Option<Vec<f32>>, quiet: bool) -> Result<RunData> {
    let mut recipe = cfg.recipe.clone().context("an image-folder run without its recipe")?;
    let splits = folder::load(&cfg.data)?;
    let mut train_folder = splits.train;
    let val_folder = match (splits.val, cfg.val) {
        (Some(_), n) if n > 0 => bail!("{} has a val/ folder: drop --val", cfg.data.display()),
        (Some(v), _) => Some(v),
        (None, 0) => None,
        (None, n) => Some(train_folder.split_off(n, cfg.seed)?),
    };
    // images the mean-image pass found unreadable (--skip-bad): counted as skipped by the source
    let mut unreadable: Vec<usize> = vec![];
    match mean {
        Some(m) => recipe.mean = m,
        None => {
            // the mean image (and PCA from data) over a seeded sample of training images
            let n = train_folder.len().min(STAT_IMAGES);
            if !quiet {
                eprintln!("computing the mean image over {n} training images ...");
            }
            let perm = crate::data::augment::permutation(train_folder.len(), cfg.seed ^ 0x5EED, 0);
            let files = &train_folder.files;
            let images = perm[..n].iter().filter_map(|&i| match data::image::open(&files[i as usize].0) {
                Err(_) if cfg.skip_bad => {
                    unreadable.push(i as usize);
                    None
                }
                r => Some(r),
            });
            let (m, px) = recipe.statistics(images)?;
            recipe.mean = m;
            if recipe.pca.as_ref().is_some_and(|p| p.std < 0.0) {
                // the marker for "from the data"
                recipe.pca = Some(Pca { std: 0.1, ..Pca::from_pixels(&px) });
                if let Some(r) = cfg.recipe.as_mut() {
                    r.pca = recipe.pca.clone();
                }
            }
        }
    }
    let c = recipe.channels;
    let pre = Preprocess {
        src: (recipe.size, recipe.size, c),
        size: recipe.size,
        mean: recipe.mean.clone(),
        crop_pad: 0,
        flip: false,
    };
    let eval = data::image::ImagenetEval { mean_image: vec![], ..recipe.eval() };
    let recipe = Arc::new(recipe);
    let src = |f: folder::Folder| -> Arc<dyn Source> { Arc::new(FolderSource::new(f, recipe.clone(), cfg.skip_bad)) };
    let train = Arc::new(FolderSource::new(train_folder, recipe.clone(), cfg.skip_bad).with_unreadable(unreadable));
    Ok(RunData { train, val: val_folder.map(src), test: None, pre, eval: Some(eval) })
}

fn new_run(a: &Args) -> Result<(RunDir, TrainConfig, RunData, ResumePoint)> {
    let Some(arch) = &a.arch else { bail!("--arch is required for a new run (or --resume RUN)") };
    let data_path = a.data.clone().context("--data is required for a new run")?;
    // stored absolute: the run resumes from any working directory
    let data_path = std::path::absolute(&data_path).with_context(|| format!("--data {}", data_path.display()))?;
    let out = a.out.clone().context("--out is required for a new run")?;
    if out.join("last.safetensors").exists() {
        bail!("{} already holds a run; continue it with --resume {0}", out.display());
    }
    let format = a.format.map(|f| match f {
        FormatArg::Cifar10 => Format::Cifar10,
        FormatArg::Cifar100 => Format::Cifar100,
        FormatArg::Mnist => Format::Mnist,
        FormatArg::FashionMnist => Format::FashionMnist,
    });
    let is_folder = format.is_none() && data_path.is_dir() && folder::looks_like_folder(&data_path);
    let batch = a.batch.unwrap_or(if is_folder { 256 } else { 128 });
    if a.eval_every == Some(0) {
        bail!("--eval-every must be at least 1 (leave it out to evaluate at every epoch's end)");
    }
    let mut opts = a.arch_opts.clone();
    // the network takes the data's channels, classes and size
    let mut has_val = a.val > 0;
    let mut train_images = a.train_images;
    let (classes, channels, train_len, format, recipe) = if is_folder {
        if a.train_images.is_some() {
            bail!("--train-images applies to in-memory data sets (CIFAR / MNIST-style), not to image folders");
        }
        let splits = folder::load(&data_path)?;
        has_val |= splits.val.is_some();
        let mut t = splits.train;
        if splits.val.is_none() && a.val > 0 {
            t.split_off(a.val, a.seed)?;
        }
        (t.classes.len(), opts.in_channels.unwrap_or(3), t.len(), None, true)
    } else {
        if opts.input_size.is_some() {
            bail!("--input-size is set by the data in training (32x32; 28x28 images are padded to it)");
        }
        for (flag, set) in
            [("--scale", a.scale.is_some()), ("--pca", a.pca.is_some()), ("--lr-plateau", a.lr_plateau.is_some())]
        {
            if set {
                bail!("{flag} applies to image folders (the ImageNet recipe), not to {}", data_path.display());
            }
        }
        let (splits, format) = data::load_with(&data_path, format, !a.lenient_counts)?;
        let all = splits.train.len();
        if a.val > 0 {
            train::check_val(a.val, all)?;
        }
        let left = all - a.val;
        let after_val = if a.val > 0 { format!(" left after --val {}", a.val) } else { String::new() };
        let train_len = match a.train_images {
            Some(n) if n == 0 || n > left => {
                bail!("--train-images {n}: the training set has {left} images{after_val}, pick 1 to {left}")
            }
            Some(n) if n == left => {
                train_images = None; // all of them: the same run as without the flag
                n
            }
            Some(n) => n,
            None => left,
        };
        (splits.train.classes, splits.train.c, train_len, Some(format), false)
    };
    if let Some(c) = opts.classes
        && c != classes
    {
        bail!("--classes {c} does not match the data, which has {classes} classes");
    }
    opts.classes = Some(classes);
    opts.in_channels = Some(channels);
    let (spec, size) = opts.resolve(arch)?;
    if !recipe && spec.family != Family::Cifar {
        bail!(
            "{} is an ImageNet-family network; CIFAR / MNIST-style data take the CIFAR family (resnetD / plainD with D = 6n+2); \
             ImageNet-family networks train on image folders",
            spec.name
        );
    }
    let iters = match (a.iters, a.epochs) {
        (Some(i), _) => i,
        (None, Some(e)) => e
            .checked_mul(train_len as u64)
            .map(|images| images.div_ceil(batch.max(1) as u64))
            .with_context(|| format!("--epochs {e}: {e} x {train_len} training images is too many iterations"))?,
        (None, None) if recipe => 600_000,
        (None, None) => 64_000,
    };
    let mut schedule = Schedule::cifar(iters, spec.depth);
    if recipe {
        // the ImageNet recipe: no warm-up, lr /10 on plateaus (or fixed milestones)
        schedule.warmup_lr = None;
        match (a.lr_plateau, &a.milestones) {
            (Some(_), _) | (None, None) if has_val => {
                schedule.milestones = vec![];
                schedule.plateau = Some(Plateau { patience: a.lr_plateau.unwrap_or(2), threshold: 0.0 });
            }
            (Some(_), _) => bail!("--lr-plateau needs a validation split: a val/ folder or --val N"),
            _ => {}
        }
    }
    if let Some(m) = &a.milestones {
        schedule.milestones = m.clone();
    }
    if recipe {
        // the paper's 0.1 is for batches of 256: scaled linearly for other batch sizes
        schedule.lr = 0.1 * batch as f32 / 256.0;
    }
    if a.init_from.is_some() {
        schedule.lr = FINETUNE_LR;
        schedule.warmup_lr = None;
    }
    if let Some(lr) = a.lr {
        schedule.lr = lr;
    }
    let recipe = if recipe {
        let mut r = ImagenetRecipe::for_size(size, channels);
        if let Some(s) = &a.scale {
            r.scale = (s[0], s[1]);
        }
        r.flip = !a.no_flip;
        r.pca = match a.pca.unwrap_or(if channels == 3 { PcaArg::Imagenet } else { PcaArg::None }) {
            PcaArg::Imagenet => Some(Pca::imagenet()),
            // computed in folder_data (std < 0 marks it until then)
            PcaArg::Data => Some(Pca { std: -1.0, ..Pca::imagenet() }),
            PcaArg::None => None,
        };
        r.validate()?;
        Some(r)
    } else {
        None
    };
    let finetune = a.init_from.as_deref().map(std::path::absolute).transpose()?.map(|p| Finetune {
        init_from: p,
        reset_head: a.reset_head,
        freeze_backbone: a.freeze_backbone,
    });
    let mut cfg = TrainConfig {
        arch: spec,
        data: data_path,
        format,
        batch,
        seed: a.seed,
        val: a.val,
        train_images,
        schedule,
        momentum: 0.9,
        weight_decay: 1e-4,
        log_every: a.log_every.unwrap_or(50),
        eval_every: a.eval_every.unwrap_or(0),
        ckpt_every: a.ckpt_every.unwrap_or(0),
        keep: a.keep.unwrap_or(3),
        threads: crate::par::threads(),
        crop_pad: a.crop_pad,
        flip: !a.no_flip,
        recipe,
        skip_bad: a.skip_bad,
        workers: a.workers,
        finetune,
        lenient_counts: a.lenient_counts,
    };
    cfg.validate()?;
    let data = if cfg.recipe.is_some() { folder_data(&mut cfg, None, a.quiet)? } else { memory_data(&cfg, None)? };
    let (dir, replaced) = RunDir::create(&out)?;
    if replaced && !a.quiet {
        eprintln!("note: {} held a run that never wrote a checkpoint: starting afresh in its place", out.display());
    }
    let text = toml::to_string(&cfg).context("writing the configuration")?;
    train::checkpoint::write_atomic(&dir.join("config.toml"), text.as_bytes())?;
    Ok((dir, cfg, data, ResumePoint { checkpoint: None, note: None }))
}

/// Write `cfg` as the run's config.toml.
fn save_config(dir: &RunDir, cfg: &TrainConfig) -> Result<()> {
    let text = toml::to_string(cfg).context("writing the configuration")?;
    train::checkpoint::write_atomic(&dir.join("config.toml"), text.as_bytes())
}

fn resumed(a: &Args, path: &Path) -> Result<(RunDir, TrainConfig, RunData, ResumePoint)> {
    if a.arch_opts.any_set() {
        bail!(
            "--resume continues the network in {}/config.toml: network options (--shortcut, --classes, ...) cannot change",
            path.display()
        );
    }
    let dir = RunDir::open(path)?;
    let config = dir.join("config.toml");
    let text = std::fs::read_to_string(&config).with_context(|| format!("reading {}", config.display()))?;
    let mut cfg: TrainConfig =
        toml::from_str(&text).with_context(|| format!("{}: bad configuration", config.display()))?;
    // what may change on resume: the cadence of logs and checkpoints (recorded in config.toml)
    let mut changed = vec![];
    if let Some(n) = a.log_every {
        cfg.log_every = n;
        changed.push(format!("log_every = {n}"));
    }
    if let Some(n) = a.ckpt_every {
        cfg.ckpt_every = n;
        changed.push(format!("ckpt_every = {n}"));
    }
    if let Some(n) = a.keep {
        cfg.keep = n;
        changed.push(format!("keep = {n}"));
    }
    cfg.validate().with_context(|| format!("{}: bad configuration", config.display()))?;
    if !changed.is_empty() {
        save_config(&dir, &cfg)?;
        if !a.quiet {
            eprintln!("note: {} now records {}", config.display(), changed.join(", "));
        }
    }
    if cfg.threads != crate::par::threads() {
        eprintln!(
            "note: this run computed with {} threads, now {}: results stay correct but are no longer bit-identical to an uninterrupted run",
            cfg.threads,
            crate::par::threads()
        );
    }
    let from = dir.resume_point()?;
    if let Some(note) = &from.note
        && !a.quiet
    {
        eprintln!("note: {note}");
    }
    // the input pipeline as recorded in the checkpoint (a run stopped before its first has none)
    let pre = from.checkpoint.as_ref().map(|(_, ck)| ck.preprocess.clone());
    let data =
        if cfg.recipe.is_some() { folder_data(&mut cfg, pre.map(|p| p.mean), a.quiet) } else { memory_data(&cfg, pre) }
            .with_context(|| {
                let relative = if cfg.data.is_relative() { ", taken relative to the current directory" } else { "" };
                format!("the data {} named in {}{relative}", cfg.data.display(), config.display())
            })?;
    Ok((dir, cfg, data, from))
}

/// Parse `resnet train` arguments (without the program and subcommand names), for callers in the crate.
pub fn parse_args(argv: &[String]) -> Result<Args> {
    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        args: Args,
    }
    use clap::Parser;
    Ok(Cli::try_parse_from(std::iter::once("train".to_string()).chain(argv.iter().cloned()))?.args)
}

/// Start or resume a run as `a` says; returns its directory, configuration and outcome.
pub fn execute(a: &Args) -> Result<(PathBuf, TrainConfig, train::Outcome)> {
    let (dir, cfg, data, from) = match &a.resume {
        Some(d) => resumed(a, d)?,
        None => new_run(a)?,
    };
    let progress = if a.quiet {
        Progress::Quiet
    } else if std::io::stderr().is_terminal() {
        Progress::Bar
    } else {
        Progress::Lines
    };
    let out = train::run(&dir, &cfg, &data, from, a.stop_at, progress)?;
    Ok((dir.path().to_path_buf(), cfg, out))
}

type Shared = Arc<dyn Source>;

/// The training split (unaugmented) and the test split of an in-memory run, with the checkpoint's recipe.
pub fn memory_splits(cfg: &TrainConfig, pre: Preprocess) -> Result<(Shared, Option<Shared>)> {
    let d = memory_data(cfg, Some(pre))?;
    Ok((d.train, d.test))
}

pub fn run(a: Args) -> Result<()> {
    signals::install();
    let (dir, cfg, out) = execute(&a)?;
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
        if cfg.skip_bad {
            print!(", {} unreadable image(s) skipped", out.skipped);
        }
        println!();
        if !out.finished {
            println!("continue with: resnet train --resume {}", dir.display());
        }
    }
    match signals::received() {
        Some(stop) if out.interrupted => Err(stop.into()),
        _ => Ok(()),
    }
}
