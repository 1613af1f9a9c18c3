//! Training with the paper's recipes (CIFAR, Sec. 4.2, on in-memory data; ImageNet, Sec. 3.4, on
//! image folders): a run directory with its frozen configuration, metrics, atomic checkpoints and
//! exact resume; optionally fine-tuning from other weights.
//!
//! request.rs   what a user asks (TrainRequest) -> resolve() -> TrainConfig (this file: the rules)
//! run_data.rs  the data a configuration names, opened (RunData)
//! trainer.rs   the loop (Trainer over a Backend; events to an observer; a cancellation flag)
//! open.rs      start(out, config) / resume(dir, cadence): a Trainer on the CPU engine
//! rundir.rs    the run directory's lock and where a resume continues; metrics.rs its log
//!
//! RUN/config.toml   the fully resolved configuration, written once (cadence flags of a resume update it)
//! RUN/metrics.jsonl one JSON object per line (training windows, evaluations)
//! RUN/last.safetensors, RUN/epoch-NNNN.safetensors (last `keep`), RUN/best.safetensors (with --val)
//! RUN/.lock         held (flock) by the one process training the run

pub mod metrics;
pub mod open;
pub mod parallel;
pub mod request;
pub mod run_data;
pub mod rundir;
pub mod schedule;
pub mod trainer;

pub use open::{Cadence, Opened, resume, resume_in, start, start_in};
pub use parallel::{Collective, Solo};
pub use request::{PcaChoice, TrainRequest};
pub use run_data::{RunData, check_val, split_val, subset};
pub use trainer::{Event, GradientHook, Outcome, StepOut, Trainer};

use crate::arch::ArchSpec;
use crate::backend::Backend;
use crate::data::Format;
use crate::data::augment::Preprocess;
use crate::data::imagenet::ImagenetRecipe;
use crate::data::source::Source;
use crate::ops::loss::cross_entropy;
use crate::par::SumOrder;
use crate::weights::checkpoint::{self, Meta};
use anyhow::{Context, Result, bail};
use schedule::Schedule;
use std::path::{Path, PathBuf};

/// Everything that defines a run; frozen into RUN/config.toml at the start.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TrainConfig {
    pub arch: ArchSpec,
    pub data: PathBuf,
    /// in-memory data sets; None for an image folder
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<Format>,
    pub batch: usize,
    pub seed: u64,
    /// training images held out (seeded) as a validation set
    pub val: usize,
    /// train on this many (seeded, random) of the training images left after `val`; None = all
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub train_images: Option<usize>,
    pub schedule: Schedule,
    pub momentum: f32,
    pub weight_decay: f32,
    /// a training-window line in metrics.jsonl every this many iterations
    pub log_every: u64,
    /// evaluate the validation / test splits every this many iterations (0 = at every epoch's end);
    /// always after the last iteration
    #[serde(default, skip_serializing_if = "is_zero")]
    pub eval_every: u64,
    /// extra checkpoints every this many iterations (0 = none)
    pub ckpt_every: u64,
    /// epoch checkpoints kept
    pub keep: usize,
    /// threads the run computes with (bit-exact resume needs the same count)
    pub threads: usize,
    /// augmentation: random crops of the image padded by this much (the paper: 4), flips
    pub crop_pad: usize,
    pub flip: bool,
    /// image folders: the ImageNet recipe (its mean image lives in the checkpoints)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recipe: Option<ImagenetRecipe>,
    /// unreadable images are skipped and counted instead of stopping the run
    #[serde(default)]
    pub skip_bad: bool,
    /// threads that decode images (image folders)
    #[serde(default = "one")]
    pub workers: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finetune: Option<Finetune>,
    /// official CIFAR file names may hold fewer records (subsets, tests)
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub lenient_counts: bool,
    /// data-parallel processes the global batch is split over (batch / world images each)
    #[serde(default = "one")]
    pub world: usize,
    /// BN: statistics over the whole global batch (summed across processes), or per process (false)
    #[serde(default)]
    pub sync_bn: bool,
}

fn one() -> usize {
    1
}

/// The largest crop padding: the side of the in-memory images (32).
pub const MAX_CROP_PAD: usize = 32;

impl TrainConfig {
    /// The rules every configuration obeys, whether it comes from the command line or from a
    /// (possibly hand-edited) config.toml: one validation for both. Errors name the setting as
    /// config.toml spells it and the flag that sets it.
    pub fn validate(&self) -> Result<()> {
        let positive = |v: f32| v.is_finite() && v > 0.0;
        let s = &self.schedule;
        let checks: [(bool, String); 12] = [
            (self.batch >= 1, "batch must be at least 1 (--batch)".into()),
            (s.iters >= 1, "the run needs at least one iteration (iters; --iters / --epochs)".into()),
            (self.log_every >= 1, "log_every must be at least 1 (--log-every)".into()),
            (self.keep >= 1, "keep must be at least 1: the epoch checkpoints kept (--keep)".into()),
            (self.workers >= 1 && self.threads >= 1, "workers and threads must be at least 1".into()),
            (positive(s.lr), format!("the learning rate must be a positive number, not {} (lr; --lr)", s.lr)),
            (
                s.warmup_lr.is_none_or(positive),
                format!("the warm-up rate must be a positive number, not {:?} (warmup_lr)", s.warmup_lr),
            ),
            (positive(s.gamma) && s.gamma <= 1.0, format!("gamma must be in (0, 1], not {}", s.gamma)),
            (
                self.momentum.is_finite() && (0.0..1.0).contains(&self.momentum),
                format!("momentum must be in [0, 1), not {}", self.momentum),
            ),
            (
                self.weight_decay.is_finite() && self.weight_decay >= 0.0,
                format!("weight_decay must be a non-negative number, not {}", self.weight_decay),
            ),
            (
                self.crop_pad <= MAX_CROP_PAD,
                format!(
                    "crop_pad {} is more than the image side {MAX_CROP_PAD} (--crop-pad; the paper pads by 4)",
                    self.crop_pad
                ),
            ),
            (self.train_images != Some(0), "--train-images must be at least 1 (train_images)".into()),
        ];
        if let Some((_, msg)) = checks.iter().find(|(ok, _)| !ok) {
            bail!("{msg}");
        }
        self.check_world(self.world)?;
        if let Some(r) = &self.recipe {
            r.validate()?;
        }
        Ok(())
    }

    /// Whether the global batch splits over `world` processes: B/W images each, the same for all.
    pub fn check_world(&self, world: usize) -> Result<()> {
        if world == 0 {
            bail!("world (the number of processes) must be at least 1");
        }
        if !self.batch.is_multiple_of(world) {
            let (lo, hi) = (self.batch / world * world, self.batch.div_ceil(world) * world);
            bail!(
                "the global batch {} does not split evenly over {world} processes: every process takes batch / {world} \
                 images of each batch; use a batch that {world} divides (--batch {} or {}) or another number of processes",
                self.batch,
                lo.max(world),
                hi
            );
        }
        Ok(())
    }

    /// Images per process and iteration.
    pub fn local_batch(&self) -> usize {
        self.batch / self.world.max(1)
    }

    /// The order of every sum over the batch. With synchronised BN: the global batch cut into
    /// leaves ([`SumOrder::Leaves`]: the largest power of two that divides the batch, at most 16),
    /// whenever the world splits them into equal subtrees (a power of two that divides the leaf
    /// count): then the steps are bit for bit those of one process, on any thread count, and a
    /// run may move between such world sizes exactly. Otherwise per thread (the fastest).
    pub fn sum_order(&self) -> SumOrder {
        let leaves = 1usize << self.batch.trailing_zeros().min(4);
        let world = self.world.max(1);
        if self.sync_bn && self.batch > 0 && world.is_power_of_two() && leaves.is_multiple_of(world) {
            SumOrder::Leaves { images: self.batch / leaves }
        } else {
            SumOrder::Threads
        }
    }

    /// A checkpoint continues this run only if it was trained with the same network, batch, seed
    /// and data shape: config.toml may not change them.
    pub fn check_checkpoint(&self, path: &Path, meta: &Meta, pre: &Preprocess, class_names: &[String]) -> Result<()> {
        let differs = |what: &str, cfg: String, ck: String| {
            anyhow::anyhow!(
                "config.toml says {what} {cfg} but {} was trained with {what} {ck}: the network, batch, seed and data \
                 of a run cannot change (restore config.toml, or start a new run)",
                path.display()
            )
        };
        if meta.arch != self.arch {
            return Err(differs("arch", format!("{:?}", self.arch), format!("{:?}", meta.arch)));
        }
        if meta.seed != self.seed {
            return Err(differs("seed", self.seed.to_string(), meta.seed.to_string()));
        }
        if let Some(b) = meta.batch
            && b != self.batch
        {
            return Err(differs("batch", self.batch.to_string(), b.to_string()));
        }
        if (meta.image, meta.input_size) != (pre.src, pre.size) || meta.class_names != class_names {
            return Err(differs(
                "data of shape",
                format!("{:?} ({} classes)", pre.src, class_names.len()),
                format!("{:?} ({} classes)", meta.image, meta.class_names.len()),
            ));
        }
        Ok(())
    }
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

/// Start from other weights (our checkpoint or a torchvision file).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Finetune {
    pub init_from: PathBuf,
    /// a new, freshly initialised fc (for this many classes) instead of the file's
    pub reset_head: bool,
    /// train only the fc: the other parameters keep their values (BN statistics still adapt)
    pub freeze_backbone: bool,
}

/// Loss and top-1 error (percent) of `net` on `d`, single view, eval mode
/// (images skipped as unreadable are left out).
pub fn evaluate(net: &mut impl Backend, d: &dyn Source, workers: usize) -> Result<(f64, f64)> {
    let (loss, errors, count) = evaluate_sums(net, d, workers)?;
    mean_loss_err(loss, errors, count, d.len())
}

/// Mean loss and error (percent) from summed losses and errors of `count` images out of `total`.
fn mean_loss_err(loss: f64, errors: f64, count: f64, total: usize) -> Result<(f64, f64)> {
    if count == 0.0 {
        bail!("no readable evaluation images (all {total} were skipped as unreadable)");
    }
    Ok((loss / count, 100.0 * errors / count))
}

/// Summed loss, errors and images evaluated (a data-parallel rank's part, summed across ranks).
fn evaluate_sums(net: &mut impl Backend, d: &dyn Source, workers: usize) -> Result<(f64, f64, f64)> {
    let k = net.classes();
    let (mut loss, mut errors, mut count) = (0.0f64, 0usize, 0usize);
    let mut dl = vec![0.0f32; net.capacity() * k];
    let mut labels = Vec::with_capacity(net.capacity());
    crate::eval::each_batch(net, d, d.len(), workers, |net, kept| {
        let m = kept.len();
        labels.clear();
        labels.extend(kept.iter().map(|&(_, l)| l));
        let out = cross_entropy(net.logits(m), &labels, k, &mut dl[..m * k]);
        loss += out.loss as f64 * m as f64;
        errors += out.errors;
        count += m;
        Ok(())
    })?;
    Ok((loss, errors as f64, count as f64))
}

/// Load `f.init_from` into `net`: every tensor, or all but the fc with `reset_head`.
pub fn init_from(net: &mut impl Backend, f: &Finetune) -> Result<()> {
    let path = &f.init_from;
    let bytes = crate::paths::read_regular(path)?;
    let mut sd = if checkpoint::is_checkpoint(&bytes) {
        checkpoint::parse(path, &bytes)?.weights
    } else {
        let mut sd = crate::weights::parse_state_dict(&path.display().to_string(), &bytes)?;
        sd.strip_prefix();
        sd
    };
    if f.reset_head {
        sd.tensors.retain(|(n, _)| !n.starts_with("fc."));
        // the network's own freshly initialised fc
        for (n, shape) in net.tensors().into_iter().filter(|(n, _)| n.starts_with("fc.")) {
            let data = net.get_tensor(&n).context("a tensor the network lists")?;
            sd.tensors.push((n, crate::weights::Tensor { shape, data }));
        }
    }
    crate::weights::load_into(net, &sd).map_err(|m| {
        anyhow::anyhow!("--init-from {}: the weights do not fit {}:\n{m}", path.display(), net.spec().name)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> TrainConfig {
        TrainConfig {
            arch: ArchSpec::parse("resnet8", &Default::default()).unwrap(),
            data: "data".into(),
            format: None,
            batch: 16,
            seed: 0,
            val: 0,
            train_images: None,
            schedule: Schedule::cifar(100, 8),
            momentum: 0.9,
            weight_decay: 1e-4,
            log_every: 50,
            eval_every: 0,
            ckpt_every: 0,
            keep: 3,
            threads: 2,
            crop_pad: 4,
            flip: true,
            recipe: None,
            skip_bad: false,
            workers: 1,
            finetune: None,
            lenient_counts: false,
            world: 1,
            sync_bn: false,
        }
    }

    #[test]
    fn one_validation_for_flags_and_config_files() {
        config().validate().unwrap();
        type Breaks = fn(&mut TrainConfig);
        let cases: [(Breaks, &str); 12] = [
            (|c| c.batch = 0, "batch must be at least 1"),
            (|c| c.schedule.iters = 0, "at least one iteration"),
            (|c| c.log_every = 0, "log_every must be at least 1"),
            (|c| c.keep = 0, "keep must be at least 1"),
            (|c| c.workers = 0, "workers and threads"),
            (|c| c.schedule.lr = f32::NAN, "positive number, not NaN"),
            (|c| c.schedule.lr = -1.0, "positive number, not -1"),
            (|c| c.schedule.warmup_lr = Some(0.0), "warm-up rate"),
            (|c| c.momentum = 1.0, "momentum must be in [0, 1)"),
            (|c| c.weight_decay = f32::INFINITY, "weight_decay"),
            (|c| c.crop_pad = 100_000, "crop_pad 100000 is more than the image side 32"),
            (|c| c.train_images = Some(0), "--train-images must be at least 1"),
        ];
        for (break_it, says) in cases {
            let mut c = config();
            break_it(&mut c);
            let e = c.validate().unwrap_err().to_string();
            assert!(e.contains(says), "{e} (expected: {says})");
        }
        let mut c = config();
        c.world = 3;
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("the global batch 16 does not split evenly over 3 processes"), "{e}");
        assert!(e.contains("--batch 15 or 18"), "{e}");
        c.world = 4;
        c.validate().unwrap();
        assert_eq!(c.local_batch(), 4);
        let mut c = config();
        c.schedule.gamma = 0.0;
        assert!(c.validate().unwrap_err().to_string().contains("gamma"));
    }

    #[test]
    fn a_checkpoint_must_match_the_run_it_continues() {
        let c = config();
        let pre = Preprocess { src: (32, 32, 1), size: 32, mean: vec![], crop_pad: 4, flip: true };
        let names: Vec<String> = (0..10).map(|i| i.to_string()).collect();
        let meta = Meta { batch: Some(16), ..Meta::new(c.arch.clone(), names.clone(), (32, 32, 1), 32) };
        let p = Path::new("RUN/last.safetensors");
        c.check_checkpoint(p, &meta, &pre, &names).unwrap();
        let old = Meta { batch: None, ..meta.clone() };
        c.check_checkpoint(p, &old, &pre, &names).expect("older checkpoints record no batch");
        let e = |m: &Meta, names: &[String]| c.check_checkpoint(p, m, &pre, names).unwrap_err().to_string();
        assert!(e(&Meta { batch: Some(32), ..meta.clone() }, &names).contains("batch 16 but RUN/last.safetensors"));
        assert!(e(&Meta { seed: 3, ..meta.clone() }, &names).contains("seed 0 but"));
        let other = ArchSpec::parse("resnet14", &Default::default()).unwrap();
        assert!(e(&Meta { arch: other, ..meta.clone() }, &names).contains("arch"));
        assert!(e(&meta, &names[..9]).contains("data of shape"));
    }
}
