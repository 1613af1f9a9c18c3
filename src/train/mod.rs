//! The training loop of the paper's recipes (CIFAR, Sec. 4.2, on in-memory
//! data; ImageNet, Sec. 3.4, on image folders): a run directory with its
//! frozen configuration, metrics, atomic checkpoints and exact resume;
//! optionally fine-tuning from other weights.
//!
//! RUN/config.toml   the fully resolved configuration, written once (cadence flags of a resume update it)
//! RUN/metrics.jsonl one JSON object per line (training windows, evaluations)
//! RUN/last.safetensors, RUN/epoch-NNNN.safetensors (last `keep`), RUN/best.safetensors (with --val)
//! RUN/.lock         held (flock) by the one process training the run

pub mod checkpoint;
pub mod rundir;
pub mod schedule;

use crate::arch::ArchSpec;
use crate::backend::Backend;
use crate::data::augment::Preprocess;
use crate::data::image::ImagenetEval;
use crate::data::imagenet::ImagenetRecipe;
use crate::data::loader::Loader;
use crate::data::source::Source;
use crate::data::{Dataset, Format};
use crate::net::Net;
use crate::ops::loss::cross_entropy;
use crate::optim::Sgd;
use anyhow::{Context, Result, bail};
use checkpoint::Meta;
use rundir::{ResumePoint, RunDir};
use schedule::Schedule;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

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
        if let Some(r) = &self.recipe {
            r.validate()?;
        }
        Ok(())
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

/// Where the data of a run comes from, split as configured, and how its
/// images become inputs (recorded in every checkpoint).
pub struct RunData {
    pub train: Arc<dyn Source>,
    pub val: Option<Arc<dyn Source>>,
    pub test: Option<Arc<dyn Source>>,
    /// the input pipeline's record: image size, input size, mean image
    pub pre: Preprocess,
    /// image folders: the evaluation transform
    pub eval: Option<ImagenetEval>,
}

/// The images `idx` of `d`, in that order.
fn pick(d: &Dataset, idx: &[u32]) -> Dataset {
    let mut out = d.clone_empty();
    for &i in idx {
        out.images.extend_from_slice(d.image(i as usize));
        out.labels.push(d.labels[i as usize]);
    }
    out
}

/// `--val val` must leave training images out of `len`.
pub fn check_val(val: usize, len: usize) -> Result<()> {
    if val >= len {
        bail!("--val {val} leaves no training images (the training set has {len})");
    }
    Ok(())
}

/// Hold out `val` seeded random training images.
pub fn split_val(train: Dataset, val: usize, seed: u64) -> Result<(Dataset, Option<Dataset>)> {
    if val == 0 {
        return Ok((train, None));
    }
    check_val(val, train.len())?;
    let perm = crate::data::augment::permutation(train.len(), seed ^ 0x7A1, 0);
    let (v, t) = perm.split_at(val);
    let (mut v, mut t) = (v.to_vec(), t.to_vec());
    v.sort();
    t.sort();
    Ok((pick(&train, &t), Some(pick(&train, &v))))
}

/// Keep `n` seeded random images of `train`, in their original order (`--train-images`).
pub fn subset(train: Dataset, n: usize, seed: u64) -> Result<Dataset> {
    if n == 0 {
        bail!("--train-images must be at least 1");
    }
    if n > train.len() {
        bail!("--train-images {n}: the training set has only {} images", train.len());
    }
    if n == train.len() {
        return Ok(train);
    }
    let mut keep = crate::data::augment::permutation(train.len(), seed ^ 0x5B5E7, 0)[..n].to_vec();
    keep.sort();
    Ok(pick(&train, &keep))
}

/// Loss and top-1 error (percent) of `net` on `d`, single view, eval mode
/// (images skipped as unreadable are left out).
pub fn evaluate(net: &mut Net, d: &dyn Source, workers: usize) -> Result<(f64, f64)> {
    let k = net.classes();
    let (mut loss, mut errors, mut count) = (0.0f64, 0usize, 0usize);
    let mut dl = vec![0.0f32; net.batch * k];
    let mut labels = Vec::with_capacity(net.batch);
    crate::eval::each_batch(net, d, d.len(), workers, |net, kept| {
        let m = kept.len();
        labels.clear();
        labels.extend(kept.iter().map(|&(_, l)| l));
        let out = cross_entropy(&net.logits[..m * k], &labels, k, &mut dl[..m * k]);
        loss += out.loss as f64 * m as f64;
        errors += out.errors;
        count += m;
        Ok(())
    })?;
    if count == 0 {
        bail!("no readable evaluation images (all {} were skipped as unreadable)", d.len());
    }
    let n = count as f64;
    Ok((loss / n, 100.0 * errors as f64 / n))
}

/// Load `f.init_from` into `net`: every tensor, or all but the fc with `reset_head`.
pub fn init_from(net: &mut Net, f: &Finetune) -> Result<()> {
    let path = &f.init_from;
    let bytes = crate::paths::read_regular(path)?;
    let mut sd = if checkpoint::is_checkpoint(&bytes) {
        let ck = checkpoint::parse(path, &bytes)?;
        let mut t: Vec<_> = ck
            .tensors
            .into_iter()
            .filter(|(n, _)| !n.starts_with("optimizer."))
            .map(|(n, (shape, data))| (n, crate::weights::Tensor { shape, data }))
            .collect();
        t.sort_by(|a, b| a.0.cmp(&b.0));
        crate::weights::StateDict { tensors: t }
    } else {
        let mut sd = crate::weights::parse_state_dict(&path.display().to_string(), &bytes)?;
        sd.strip_prefix();
        sd
    };
    if f.reset_head {
        sd.tensors.retain(|(n, _)| !n.starts_with("fc."));
        for n in ["fc.weight", "fc.bias"] {
            let (t, _) = net.tensor_info(n).expect("every net has an fc");
            let data = net.get_torch(n).expect("present");
            sd.tensors.push((n.to_string(), crate::weights::Tensor { shape: t.shape.clone(), data }));
        }
    }
    crate::weights::load_into(net, &sd).map_err(|m| {
        anyhow::anyhow!("--init-from {}: the weights do not fit {}:\n{m}", path.display(), net.spec().name)
    })
}

/// Appends JSON lines to RUN/metrics.jsonl, flushed line by line.
struct Metrics(std::fs::File);

impl Metrics {
    fn log(&mut self, v: serde_json::Value) -> Result<()> {
        writeln!(self.0, "{v}")?;
        self.0.flush()?;
        Ok(())
    }
}

/// How a run reports progress.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Progress {
    /// a bar on the terminal
    Bar,
    /// plain lines (not a terminal)
    Lines,
    Quiet,
}

/// What a finished (or stopped) call of [`run`] reports.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Outcome {
    pub iteration: u64,
    pub finished: bool,
    pub interrupted: bool,
    pub test_loss: Option<f64>,
    pub test_err: Option<f64>,
    pub val_err: Option<f64>,
    /// unreadable images skipped (--skip-bad)
    pub skipped: usize,
}

/// Set by a stop signal (SIGINT, SIGTERM, SIGHUP): the loop writes a checkpoint and returns.
pub static STOP: AtomicBool = AtomicBool::new(false);

/// Start or continue the run held in `dir` from `from` (for a new run: no checkpoint) until
/// iteration `stop_at` (or the end). `metrics.jsonl` is first cut back to where the run continues.
pub fn run(
    dir: &RunDir,
    cfg: &TrainConfig,
    data: &RunData,
    from: ResumePoint,
    stop_at: Option<u64>,
    progress: Progress,
) -> Result<Outcome> {
    cfg.validate().with_context(|| format!("{}: bad configuration", dir.join("config.toml").display()))?;
    let total = cfg.schedule.iters;
    let stop = stop_at.unwrap_or(total).min(total);
    let last_path = dir.join("last.safetensors");
    let train = &data.train;
    let pre = &data.pre;
    let (mut meta, ck) = match from.checkpoint {
        Some((path, ck)) => {
            cfg.check_checkpoint(&path, &ck.meta, pre, &train.class_names())?;
            (ck.meta.clone(), Some((path, ck)))
        }
        None => {
            let meta = Meta {
                seed: cfg.seed,
                batch: Some(cfg.batch),
                eval: data.eval.clone(),
                ..Meta::new(cfg.arch.clone(), train.class_names(), pre.src, pre.size)
            };
            (meta, None)
        }
    };
    let mut net =
        Net::new(&cfg.arch, cfg.batch, pre.size, pre.size, true, cfg.seed).map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut sgd = Sgd::new(net.params.len());
    if let Some((path, ck)) = &ck {
        ck.restore(&mut net).with_context(|| format!("restoring {}", path.display()))?;
        let v = ck.velocity().with_context(|| format!("{}: the checkpoint has no optimizer state", path.display()))?;
        if v.len() != sgd.velocity.len() {
            bail!("{}: optimizer state of the wrong size", path.display());
        }
        sgd.velocity.copy_from_slice(v);
    } else if let Some(f) = &cfg.finetune {
        init_from(&mut net, f)?;
    }
    // with a frozen backbone only the fc's parameters move
    let fc_ranges: Vec<std::ops::Range<usize>> = ["fc.weight", "fc.bias"]
        .iter()
        .filter_map(|n| net.tensor_info(n).map(|(t, _)| t.offset..t.offset + t.len))
        .collect();
    let freeze = cfg.finetune.as_ref().is_some_and(|f| f.freeze_backbone);
    sgd.momentum = cfg.momentum;
    sgd.weight_decay = cfg.weight_decay;
    let metrics_path = dir.join("metrics.jsonl");
    rundir::truncate_metrics(&metrics_path, meta.iteration)?;
    let mut metrics = Metrics(
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&metrics_path)
            .with_context(|| format!("opening {}", metrics_path.display()))?,
    );
    let start = meta.iteration;
    let mut outcome = Outcome {
        iteration: start,
        finished: start >= total,
        interrupted: false,
        test_loss: None,
        test_err: None,
        val_err: None,
        skipped: 0,
    };
    if start >= stop {
        if outcome.finished {
            // a finished run asked again: report its test error
            let final_split = data.test.as_ref().or(data.val.as_ref());
            if let Some(d) = final_split {
                let (loss, err) = evaluate(&mut net, d.as_ref(), cfg.workers)?;
                if data.test.is_some() {
                    (outcome.test_loss, outcome.test_err) = (Some(loss), Some(err));
                } else {
                    outcome.val_err = Some(err);
                }
            }
        }
        return Ok(outcome);
    }
    let per_epoch = train.len().max(1) as u64;
    let b = cfg.batch as u64;
    let loader = Loader::spawn(train.clone(), cfg.workers, cfg.seed, cfg.batch, start, stop);
    let bar = match progress {
        Progress::Bar => {
            let pb = indicatif::ProgressBar::new(total);
            pb.set_style(
                indicatif::ProgressStyle::with_template(
                    "{bar:30} {pos}/{len} it  {msg}  [{elapsed_precise} < {eta_precise}]",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            pb.set_position(start);
            Some(pb)
        }
        _ => None,
    };
    let (mut win_loss, mut win_err, mut win_n, mut win_t) = (0.0f64, 0usize, 0usize, Instant::now());
    let save = |net: &Net, sgd: &Sgd, meta: &Meta, name: &str| -> Result<()> {
        let bytes = checkpoint::to_bytes(net, Some(&sgd.velocity), pre, meta)?;
        checkpoint::write_atomic(&dir.join(name), &bytes)
    };
    // what a failure leaves behind, for its message
    let kept = || {
        if last_path.exists() {
            format!("{} keeps the last good state", last_path.display())
        } else {
            format!("no checkpoint was written yet: start afresh with the same --out {}", dir.path().display())
        }
    };
    for it in start..stop {
        let batch = loader
            .next()
            .context("the data loader stopped")?
            .with_context(|| format!("loading the batch of iteration {it}; {}", kept()))?;
        debug_assert_eq!(batch.iteration, it);
        let lr = cfg.schedule.lr(it, meta.warmup_done_at, &meta.plateau.drops);
        net.input_mut().copy_from_slice(&batch.x);
        net.forward(cfg.batch, true);
        let out = net.loss_backward(&batch.labels);
        if !out.loss.is_finite() {
            bail!("the loss is not finite at iteration {it} (lr {lr}); the run stops here, {}", kept());
        }
        if freeze {
            for r in &fc_ranges {
                sgd.step_range(&mut net.params, &net.grads, lr, r.clone());
            }
        } else {
            net.sgd_step(&mut sgd, lr);
        }
        if let Some(t) =
            net.plan.params.iter().find(|t| net.params[t.offset..t.offset + t.len].iter().any(|v| !v.is_finite()))
        {
            bail!(
                "the weights ({}) are not finite after iteration {it} (lr {lr}); the run stops here, {}",
                t.name,
                kept()
            );
        }
        win_loss += out.loss as f64;
        win_err += out.errors;
        win_n += 1;
        let done = it + 1;
        meta.iteration = done;
        let epoch = done * b / per_epoch;
        let window_full = done % cfg.log_every == 0 || done == stop;
        if window_full {
            let train_err = 100.0 * win_err as f64 / (win_n * cfg.batch) as f64;
            let img_s = (win_n * cfg.batch) as f64 / win_t.elapsed().as_secs_f64();
            let train_loss = win_loss / win_n as f64;
            if cfg.schedule.warmup_lr.is_some()
                && meta.warmup_done_at.is_none()
                && train_err < cfg.schedule.warmup_until_err
            {
                meta.warmup_done_at = Some(done);
            }
            metrics.log(serde_json::json!({
                "iter": done, "epoch": epoch, "lr": lr, "train_loss": train_loss,
                "train_err": train_err, "img_per_s": img_s,
            }))?;
            let msg = format!("loss {train_loss:.3}  err {train_err:.1}%  {img_s:.0} img/s  lr {lr}");
            match (&bar, progress) {
                (Some(pb), _) => pb.set_message(msg),
                (None, Progress::Lines) => eprintln!("iter {done}/{total} epoch {epoch}: {msg}"),
                _ => {}
            }
            (win_loss, win_err, win_n, win_t) = (0.0, 0, 0, Instant::now());
        }
        if let Some(pb) = &bar {
            pb.set_position(done);
        }
        let epoch_end = epoch > it * b / per_epoch;
        let eval_now = if cfg.eval_every > 0 { done % cfg.eval_every == 0 } else { epoch_end };
        if eval_now || done == total {
            for (split, d) in [("val", data.val.as_ref()), ("test", data.test.as_ref())] {
                let Some(d) = d else { continue };
                let (loss, err) = evaluate(&mut net, d.as_ref(), cfg.workers)?;
                metrics
                    .log(serde_json::json!({"iter": done, "epoch": epoch, "split": split, "loss": loss, "err": err}))?;
                if split == "val" {
                    outcome.val_err = Some(err);
                    if let Some(p) = &cfg.schedule.plateau
                        && meta.plateau.observe(err, done, p)
                        && progress != Progress::Quiet
                    {
                        eprintln!(
                            "iter {done}: validation error plateaued: lr divided by {}",
                            1.0 / cfg.schedule.gamma
                        );
                    }
                    if meta.best_val_err.is_none_or(|b| err < b) {
                        meta.best_val_err = Some(err);
                        save(&net, &sgd, &meta, "best.safetensors")?;
                    }
                } else {
                    (outcome.test_loss, outcome.test_err) = (Some(loss), Some(err));
                }
                if progress == Progress::Lines {
                    eprintln!("iter {done} epoch {epoch}: {split} loss {loss:.4} err {err:.2}%");
                }
            }
            if epoch_end {
                save(&net, &sgd, &meta, &format!("epoch-{epoch:04}.safetensors"))?;
                prune_epochs(dir, cfg.keep)?;
            }
        }
        let ckpt = cfg.ckpt_every > 0 && done % cfg.ckpt_every == 0;
        if ckpt {
            save(&net, &sgd, &meta, &format!("iter-{done:07}.safetensors"))?;
        }
        let interrupted = STOP.load(Ordering::Relaxed);
        if epoch_end || ckpt || done == stop || interrupted {
            save(&net, &sgd, &meta, "last.safetensors")?;
        }
        outcome.iteration = done;
        if interrupted {
            outcome.interrupted = true;
            break;
        }
    }
    if let Some(pb) = &bar {
        pb.finish();
    }
    outcome.skipped = train.skipped() + data.val.as_ref().map_or(0, |v| v.skipped());
    outcome.finished = outcome.iteration >= total;
    Ok(outcome)
}

/// Keep the newest `keep` epoch checkpoints.
fn prune_epochs(dir: &RunDir, keep: usize) -> Result<()> {
    let mut epochs: Vec<PathBuf> = std::fs::read_dir(dir.path())?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("epoch-") && n.ends_with(".safetensors"))
        })
        .collect();
    epochs.sort();
    let n = epochs.len();
    for p in epochs.into_iter().take(n.saturating_sub(keep)) {
        std::fs::remove_file(&p).with_context(|| format!("removing {}", p.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `n` 1x1 grey images whose pixel is their index (mod 256) and label their index mod 10.
    fn indexed(n: usize) -> Dataset {
        Dataset {
            images: (0..n).map(|i| (i % 256) as u8).collect(),
            labels: (0..n).map(|i| (i % 10) as u16).collect(),
            h: 1,
            w: 1,
            c: 1,
            classes: 10,
            class_names: vec![],
        }
    }

    #[test]
    fn subset_keeps_seeded_images_in_order_with_their_labels() {
        let s = subset(indexed(200), 50, 3).unwrap();
        assert_eq!((s.len(), s.images.len()), (50, 50));
        assert!(s.images.windows(2).all(|w| w[0] < w[1]), "original order kept, no repeats");
        for (px, label) in s.images.iter().zip(&s.labels) {
            assert_eq!(*px as u16 % 10, *label, "labels travel with their images");
        }
        assert_eq!(subset(indexed(200), 50, 3).unwrap().images, s.images, "the same seed, the same images");
        assert_ne!(subset(indexed(200), 50, 4).unwrap().images, s.images, "another seed, other images");
        assert_eq!(subset(indexed(200), 200, 3).unwrap().images, indexed(200).images);
        let e = subset(indexed(200), 201, 3).unwrap_err().to_string();
        assert!(e.contains("--train-images 201") && e.contains("200 images"), "{e}");
        assert!(subset(indexed(200), 0, 3).is_err());
    }

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

    #[test]
    fn split_val_partitions_the_training_set() {
        let (t, v) = split_val(indexed(100), 30, 1).unwrap();
        let v = v.unwrap();
        assert_eq!((t.len(), v.len()), (70, 30));
        let mut all: Vec<u8> = t.images.iter().chain(&v.images).copied().collect();
        all.sort();
        assert_eq!(all, indexed(100).images, "every image once, in one split or the other");
        assert!(split_val(indexed(100), 100, 1).is_err());
    }
}
