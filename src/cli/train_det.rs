//! `resnet train-det`: maps its flags onto the library's [`DetTrainRequest`] (a new run) or
//! resumes one, and prints what the [`DetTrainer`] reports. The rules live in `detect::train`.

use super::arch_args::ArchOpts;
use super::signals;
use crate::detect::preset::PresetName;
use crate::detect::train::{DetEvent, DetOutcome, DetTrainRequest, DetTrainer};
use anyhow::{Result, bail};
use std::path::PathBuf;

#[derive(Copy, Clone, clap::ValueEnum)]
enum PresetArg {
    /// He et al. Sec. 4.3 / Faster R-CNN: anchors 128-512 (legacy), images 600 / max 1000, RoIPool, lr 0.001, wd 0.0005
    Paper,
    /// torchvision's FasterRCNN defaults for a C4 model: anchors 32-512, images 800 / max 1333, RoIAlign, wd 0.0001
    Torchvision,
}

#[derive(clap::Args)]
#[command(after_help = "Examples:\n  \
resnet data fashion-det --out data/fdet\n  \
resnet train-det --arch resnet50 --stride-in 3x3 --init-from resnet50.pth --data data/coco --out runs/det\n  \
resnet train-det --arch resnet20 --init-from runs/r20/last.safetensors --data data/fdet --min-size 128 --max-size 128 --out runs/fdet\n  \
resnet train-det --resume runs/fdet\n  \
resnet detect --weights runs/fdet/last.safetensors photo.jpg\n  \
resnet eval-det --weights runs/fdet/best.safetensors --data data/fdet --split val\n\n\
Data: a COCO directory (annotations/instances_<split>.json with images in <split>2017/ or JPEGImages/) or a \
PASCAL VOC directory (Annotations/, ImageSets/Main/<split>.txt, JPEGImages/). Crowd boxes do not train; images \
without boxes are skipped and counted (--keep-empty: trained as background).\n\n\
The detector is Faster R-CNN C4 (the paper's Sec. 4.3): the backbone up to stride 16 shared by the RPN and the \
head, RoI pooling, the last stage + average pooling per RoI, K+1 scores and 4(K+1) box deltas. One image per \
iteration, SGD with momentum, the rate divided by 10 at --milestones (default 3/4 of the run) after a linear \
warm-up. BN is frozen (its statistics from --init-from; without pre-trained weights they are measured on \
--calibrate-bn training images). Every --eval-every iterations the validation split is judged by the COCO \
protocol (metrics.jsonl; best.safetensors by AP@[.5:.95]).\n\n\
Stop signals: SIGINT (Ctrl-C), SIGTERM and SIGHUP write a resumable checkpoint and exit with 130, 143 and 129; \
--resume continues bit for bit.")]
pub struct Args {
    /// Backbone: resnetD or plainD (18/34/50/101/152; the CIFAR family's 6n+2 where the preset fits it)
    #[arg(long, short = 'a', conflicts_with = "resume")]
    arch: Option<String>,
    #[command(flatten)]
    arch_opts: ArchOpts,
    /// A COCO or PASCAL VOC data set directory
    #[arg(long)]
    data: Option<PathBuf>,
    /// Run directory (created; must not hold a run already — use --resume)
    #[arg(long)]
    out: Option<PathBuf>,
    /// Continue the run in this directory exactly where it stopped
    #[arg(long, conflicts_with_all = ["data", "out", "preset", "init_from", "iters", "lr", "milestones", "seed",
        "freeze_at", "min_size", "max_size", "anchor_sizes", "rois_per_image", "train_split", "val_split", "keep_empty", "no_flip",
        "calibrate_bn", "train_bn", "warmup", "log_every", "eval_every", "ckpt_every"])]
    resume: Option<PathBuf>,
    /// The detector's settings (see below)
    #[arg(long, value_enum)]
    preset: Option<PresetArg>,
    /// Backbone weights: our classification checkpoint or a torchvision .pth / .safetensors (BN statistics kept)
    #[arg(long)]
    init_from: Option<PathBuf>,
    /// Stages frozen: 0 none, 1 the stem, 2 stem + first stage (default), ...
    #[arg(long)]
    freeze_at: Option<usize>,
    /// Train BN as usual instead of frozen (small backbones without pre-training)
    #[arg(long)]
    train_bn: bool,
    /// Measure the frozen BN's statistics on this many training images first (default 32 without --init-from)
    #[arg(long)]
    calibrate_bn: Option<usize>,
    /// Shorter image side after resizing (default: the preset's)
    #[arg(long)]
    min_size: Option<usize>,
    /// Cap on the longer side (default: the preset's)
    #[arg(long)]
    max_size: Option<usize>,
    /// Anchor sizes in pixels (default: the preset's)
    #[arg(long, value_delimiter = ',')]
    anchor_sizes: Option<Vec<f32>>,
    /// RoIs sampled per image for the head's losses (default: the preset's, paper 128, torchvision 512)
    #[arg(long)]
    rois_per_image: Option<usize>,
    /// Training split (default train)
    #[arg(long)]
    train_split: Option<String>,
    /// Validation split (default val where the data has it)
    #[arg(long)]
    val_split: Option<String>,
    /// Train on images without boxes as background instead of skipping them
    #[arg(long)]
    keep_empty: bool,
    /// No random horizontal flips
    #[arg(long)]
    no_flip: bool,
    /// Iterations, one image each (default 12 passes over the training images)
    #[arg(long)]
    iters: Option<u64>,
    /// Stop early after this iteration (resumable)
    #[arg(long)]
    stop_at: Option<u64>,
    /// Base learning rate (default 0.001)
    #[arg(long)]
    lr: Option<f32>,
    /// Iterations at which the rate is divided by 10 (default 3/4 of the run)
    #[arg(long, value_delimiter = ',')]
    milestones: Option<Vec<u64>>,
    /// Linear warm-up iterations from lr / 1000 (default min(iters / 20, 1000))
    #[arg(long)]
    warmup: Option<u64>,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// A metrics line every N iterations (default 20)
    #[arg(long)]
    log_every: Option<u64>,
    /// Evaluate the validation split every N iterations (default 4 times a run; always after the last)
    #[arg(long)]
    eval_every: Option<u64>,
    /// Extra checkpoints every N iterations (default none)
    #[arg(long)]
    ckpt_every: Option<u64>,
    /// No progress output
    #[arg(long)]
    quiet: bool,
    /// Print the outcome as one JSON object
    #[arg(long)]
    json: bool,
}

impl Args {
    fn request(&self) -> DetTrainRequest {
        DetTrainRequest {
            arch: self.arch.clone().unwrap_or_default(),
            arch_options: self.arch_opts.options(),
            data: self.data.clone().unwrap_or_default(),
            train_split: self.train_split.clone(),
            val_split: self.val_split.clone(),
            preset: self.preset.map(|p| match p {
                PresetArg::Paper => PresetName::Paper,
                PresetArg::Torchvision => PresetName::Torchvision,
            }),
            min_size: self.min_size,
            max_size: self.max_size,
            anchor_sizes: self.anchor_sizes.clone(),
            rois_per_image: self.rois_per_image,
            freeze_at: self.freeze_at,
            train_bn: self.train_bn,
            iters: self.iters,
            lr: self.lr,
            milestones: self.milestones.clone(),
            warmup: self.warmup,
            momentum: None,
            weight_decay: None,
            seed: self.seed,
            no_flip: self.no_flip,
            keep_empty: self.keep_empty,
            init_from: self.init_from.clone(),
            calibrate_bn: self.calibrate_bn,
            log_every: self.log_every,
            eval_every: self.eval_every,
            ckpt_every: self.ckpt_every,
        }
    }
}

pub fn run(a: Args) -> Result<()> {
    signals::install();
    let mut trainer = match &a.resume {
        Some(d) => {
            if a.arch_opts.any_set() {
                bail!("--resume continues the detector in {}/config.toml: network options cannot change", d.display());
            }
            DetTrainer::resume(d)?
        }
        None => {
            let Some(out) = &a.out else { bail!("--out is required for a new run") };
            if a.arch.is_none() || a.data.is_none() {
                bail!("a new run needs --arch and --data (or --resume RUN)");
            }
            crate::train::rundir::RunDir::check_free(out)?;
            let (cfg, data) = a.request().resolve_with_data()?;
            if !a.quiet && cfg.calibrate_bn > 0 {
                eprintln!("measuring BN statistics on {} training images ...", cfg.calibrate_bn);
            }
            DetTrainer::start_with(out, cfg, data)?
        }
    };
    if !a.quiet {
        for n in &trainer.notes {
            eprintln!("note: {n}");
        }
    }
    let mut progress = Progress::new(a.quiet);
    let out = trainer.run(a.stop_at, &signals::stop_flag(), &mut |e| progress.show(e))?;
    progress.finish();
    print_outcome(&a, &trainer, &out)?;
    match signals::received() {
        Some(stop) if out.interrupted => Err(stop.into()),
        _ => Ok(()),
    }
}

fn print_outcome(a: &Args, t: &DetTrainer, out: &DetOutcome) -> Result<()> {
    if a.json {
        println!("{}", serde_json::to_string(out)?);
        return Ok(());
    }
    let state = if out.finished {
        "finished"
    } else if out.interrupted {
        "interrupted (resumable)"
    } else {
        "stopped (resumable)"
    };
    print!("{}: {state} at iteration {}/{}", t.dir().display(), out.iteration, t.config().iters);
    if let Some(v) = &out.val {
        print!(", {} AP {:.3} AP50 {:.3}", v.split, v.ap, v.ap50);
    }
    if out.skipped_empty > 0 {
        print!(", {} training image(s) without boxes skipped", out.skipped_empty);
    }
    println!();
    if !out.finished {
        println!("continue with: resnet train-det --resume {}", t.dir().display());
    }
    Ok(())
}

/// A bar on a terminal, plain lines elsewhere, nothing with --quiet.
struct Progress {
    bar: Option<indicatif::ProgressBar>,
    lines: bool,
    total: u64,
}

impl Progress {
    fn new(quiet: bool) -> Progress {
        let (bar, lines) = super::train::iteration_bar(quiet);
        Progress { bar, lines, total: 0 }
    }

    fn show(&mut self, e: DetEvent) {
        match e {
            DetEvent::Started { iteration, total } => {
                self.total = total;
                if let Some(pb) = &self.bar {
                    pb.set_length(total);
                    pb.set_position(iteration);
                }
            }
            DetEvent::Window(r) => {
                let msg = format!(
                    "loss {:.3} (rpn {:.3} + {:.3}, head {:.3} + {:.3})  {:.1} img/s  lr {:.2e}",
                    r.loss, r.loss_objectness, r.loss_rpn_box_reg, r.loss_classifier, r.loss_box_reg, r.img_per_s, r.lr
                );
                match &self.bar {
                    Some(pb) => pb.set_message(msg),
                    None if self.lines => eprintln!("iter {}/{}: {msg}", r.iter, self.total),
                    None => {}
                }
            }
            DetEvent::Evaluated(r) => {
                let line = format!("iter {}: {} AP {:.3} AP50 {:.3} AP75 {:.3}", r.iter, r.split, r.ap, r.ap50, r.ap75);
                match &self.bar {
                    Some(pb) => pb.println(line),
                    None if self.lines => eprintln!("{line}"),
                    None => {}
                }
            }
            DetEvent::Step { iteration } => {
                if let Some(pb) = &self.bar {
                    pb.set_position(iteration);
                }
            }
        }
    }

    fn finish(&self) {
        if let Some(pb) = &self.bar {
            pb.finish();
        }
    }
}
