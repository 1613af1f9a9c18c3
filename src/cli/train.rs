//! `resnet train`: maps its flags onto the library's [`TrainRequest`] (a new run) or
//! [`Cadence`] (a resumed one) and prints what the [`Trainer`](crate::train::Trainer) reports.
//! The paper's CIFAR recipe on CIFAR-10/100 or MNIST-style data, its ImageNet recipe on image
//! folders, and fine-tuning: the rules live in `train::request`.

use super::arch_args::ArchOpts;
use super::signals;
use crate::data::Format;
use crate::train::{self, Cadence, Collective, Event, Opened, PcaChoice, Solo, TrainConfig, TrainRequest};
use anyhow::{Result, bail};
use clap::ValueEnum;
use std::io::IsTerminal;
use std::path::PathBuf;
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
    /// BN statistics over the whole global batch, summed across the processes under mpiexec, and
    /// every batch sum in an order fixed by the batch alone: W processes (W a power of two, up to
    /// 16, dividing the batch) take the single-process steps bit for bit, on any thread count; a
    /// run that may resume with another process count
    #[arg(long, conflicts_with = "resume")]
    sync_bn: bool,
    /// Under mpiexec: overlap the gradient all-reduce with backward (a thread per process; pays
    /// where a core is free for it, docs/SCALING.md). Results are the same either way
    #[arg(long)]
    overlap: bool,
    /// Accept official CIFAR file names holding fewer records than the official counts (subsets, tests)
    #[arg(long, hide = true)]
    lenient_counts: bool,
}

impl Args {
    /// The new run these flags ask for (a missing --arch or --data is reported by `resolve`).
    pub fn request(&self) -> TrainRequest {
        TrainRequest {
            arch: self.arch.clone().unwrap_or_default(),
            arch_options: self.arch_opts.options(),
            input_size: self.arch_opts.input_size,
            data: self.data.clone().unwrap_or_default(),
            format: self.format.map(|f| match f {
                FormatArg::Cifar10 => Format::Cifar10,
                FormatArg::Cifar100 => Format::Cifar100,
                FormatArg::Mnist => Format::Mnist,
                FormatArg::FashionMnist => Format::FashionMnist,
            }),
            iters: self.iters,
            epochs: self.epochs,
            batch: self.batch,
            seed: self.seed,
            val: self.val,
            train_images: self.train_images,
            milestones: self.milestones.clone(),
            lr: self.lr,
            ckpt_every: self.ckpt_every,
            keep: self.keep,
            log_every: self.log_every,
            eval_every: self.eval_every,
            crop_pad: Some(self.crop_pad),
            no_flip: self.no_flip,
            scale: self.scale.as_ref().map(|s| (s[0], s[1])),
            pca: self.pca.map(|p| match p {
                PcaArg::Imagenet => PcaChoice::Imagenet,
                PcaArg::Data => PcaChoice::Data,
                PcaArg::None => PcaChoice::None,
            }),
            lr_plateau: self.lr_plateau,
            skip_bad: self.skip_bad,
            workers: Some(self.workers),
            init_from: self.init_from.clone(),
            reset_head: self.reset_head,
            freeze_backbone: self.freeze_backbone,
            lenient_counts: self.lenient_counts,
            world: None,
            sync_bn: self.sync_bn,
        }
    }
}

/// Train the opened run until `stop_at`; print its notes and progress unless `quiet`; stop (with a
/// checkpoint) on a stop signal.
fn train(
    opened: Opened,
    stop_at: Option<u64>,
    (quiet, overlap): (bool, bool),
) -> Result<(PathBuf, TrainConfig, train::Outcome)> {
    let Opened { mut trainer, notes } = opened;
    trainer.set_check_ranks(std::env::var_os("RESNET_CHECK_RANKS").is_some_and(|v| v == "1"));
    trainer.set_overlap(overlap);
    if !quiet {
        for n in &notes {
            eprintln!("note: {n}");
        }
    }
    let mut progress = Progress::new(quiet);
    let out = trainer.run(stop_at, &signals::stop_flag(), &mut |e| progress.show(e))?;
    progress.finish();
    Ok((trainer.dir().to_path_buf(), trainer.config().clone(), out))
}

/// How a training command shows progress: a bar of iterations on a terminal (Some), plain lines
/// elsewhere (true), nothing with --quiet.
pub(super) fn iteration_bar(quiet: bool) -> (Option<indicatif::ProgressBar>, bool) {
    let terminal = !quiet && std::io::stderr().is_terminal();
    let bar = terminal.then(|| {
        let style = indicatif::ProgressStyle::with_template(
            "{bar:30} {pos}/{len} it  {msg}  [{elapsed_precise} < {eta_precise}]",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
        indicatif::ProgressBar::new(0).with_style(style)
    });
    (bar, !quiet && !terminal)
}

/// How progress is shown: a bar on a terminal, plain lines elsewhere, nothing with --quiet.
pub(super) struct Progress {
    bar: Option<indicatif::ProgressBar>,
    lines: bool,
    total: u64,
}

impl Progress {
    pub(super) fn new(quiet: bool) -> Progress {
        let (bar, lines) = iteration_bar(quiet);
        Progress { bar, lines, total: 0 }
    }

    pub(super) fn show(&mut self, e: Event) {
        match e {
            Event::Started { iteration, total } => {
                self.total = total;
                if let Some(pb) = &self.bar {
                    pb.set_length(total);
                    pb.set_position(iteration);
                }
            }
            Event::Window(r) => {
                let msg =
                    format!("loss {:.3}  err {:.1}%  {:.0} img/s  lr {}", r.train_loss, r.train_err, r.img_per_s, r.lr);
                match &self.bar {
                    Some(pb) => pb.set_message(msg),
                    None if self.lines => eprintln!("iter {}/{} epoch {}: {msg}", r.iter, self.total, r.epoch),
                    None => {}
                }
            }
            Event::Evaluated(r) if self.lines => {
                eprintln!("iter {} epoch {}: {} loss {:.4} err {:.2}%", r.iter, r.epoch, r.split, r.loss, r.err)
            }
            Event::Step { iteration } => {
                if let Some(pb) = &self.bar {
                    pb.set_position(iteration);
                }
            }
            Event::PlateauDrop { iteration, factor } if self.bar.is_some() || self.lines => {
                eprintln!("iter {iteration}: validation error plateaued: lr divided by {factor}")
            }
            _ => {}
        }
    }

    pub(super) fn finish(&self) {
        if let Some(pb) = &self.bar {
            pb.finish();
        }
    }
}

pub fn run(a: Args) -> Result<()> {
    signals::install();
    #[cfg(feature = "mpi")]
    if crate::mpi_comm::launched() {
        let session = crate::mpi_comm::init()?;
        let group: Arc<dyn Collective> = session.group.clone();
        return ranks_agree(run_in(a, group.clone()), group.as_ref());
    }
    #[cfg(not(feature = "mpi"))]
    if let Some(w) = launched_by_mpi() {
        bail!(
            "this process is one of {w} started by mpiexec, but this resnet was built without MPI: \
             build it with `cargo build --release --features mpi` for data-parallel training"
        );
    }
    run_in(a, Arc::new(Solo))
}

/// The world size an MPI launcher announces (a build without the feature refuses to run as W copies).
#[cfg(not(feature = "mpi"))]
fn launched_by_mpi() -> Option<usize> {
    ["PMI_SIZE", "OMPI_COMM_WORLD_SIZE"]
        .iter()
        .find_map(|v| std::env::var(v).ok()?.parse::<usize>().ok())
        .filter(|&w| w > 1)
}

/// A data-parallel rank's result: an error on any rank ends the whole job (MPI_Abort) with its
/// message, instead of leaving the other ranks waiting in a collective. Rank 0 speaks first: a
/// refusal every rank reaches is printed once.
#[cfg(feature = "mpi")]
fn ranks_agree(r: Result<()>, group: &dyn Collective) -> Result<()> {
    match r {
        Err(e) if e.downcast_ref::<signals::Interrupted>().is_none() && group.size() > 1 => {
            let rank = group.rank();
            if rank != 0 {
                // rank 0 aborts the job first if it fails too (the same refusal)
                std::thread::sleep(std::time::Duration::from_secs(2));
            }
            eprintln!("error: {e:#}");
            eprintln!("rank {rank} of {} failed: ending the job (MPI_Abort)", group.size());
            // the launcher forwards our stderr from a proxy that MPI_Abort ends at once: seen to
            // lose the message above about 1 run in 4 (tests/mpi.rs) without this pause
            std::thread::sleep(std::time::Duration::from_millis(500));
            crate::mpi_comm::abort(2)
        }
        r => r,
    }
}

/// `resnet train` on rank `group.rank()` of `group.size()` processes (one: [`Solo`]).
fn run_in(mut a: Args, group: Arc<dyn Collective>) -> Result<()> {
    let (rank, world) = (group.rank(), group.size());
    if rank != 0 {
        // rank 0 reports
        (a.quiet, a.json) = (true, false);
    }
    let (dir, cfg, out) = match &a.resume {
        Some(d) => {
            if a.arch_opts.any_set() {
                bail!(
                    "--resume continues the network in {}/config.toml: network options (--shortcut, --classes, ...) cannot change",
                    d.display()
                );
            }
            let cadence = Cadence { log_every: a.log_every, ckpt_every: a.ckpt_every, keep: a.keep };
            train(train::resume_in(d, &cadence, group)?, a.stop_at, (a.quiet, a.overlap))?
        }
        None => {
            let Some(out) = &a.out else { bail!("--out is required for a new run") };
            // early, before the data are read (start checks again under the run directory's lock)
            if rank == 0 {
                crate::train::rundir::RunDir::check_free(out)?;
            }
            let cfg = TrainRequest { world: Some(world), ..a.request() }.resolve()?;
            if cfg.recipe.is_some() && !a.quiet {
                eprintln!("computing the mean image over a sample of the training images ...");
            }
            train(train::start_in(out, cfg, group)?, a.stop_at, (a.quiet, a.overlap))?
        }
    };
    if rank == 0 {
        print_outcome(&a, &dir, &cfg, &out)?;
    }
    match signals::received() {
        Some(stop) if out.interrupted => Err(stop.into()),
        _ => Ok(()),
    }
}

/// The outcome line (or JSON object) of a run.
fn print_outcome(a: &Args, dir: &std::path::Path, cfg: &TrainConfig, out: &train::Outcome) -> Result<()> {
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
    Ok(())
}
