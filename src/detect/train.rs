//! Training a detector: `resnet train-det`'s library side. A [`DetTrainRequest`] (what a user
//! asked, most of it optional) resolves once into a [`DetTrainConfig`] (every value decided,
//! written to RUN/config.toml); a [`DetTrainer`] owns the run (its directory, data, detector and
//! optimizer) and advances it step by step, evaluating and checkpointing on the run's cadence.
//!
//! The run directory is the classification trainer's ([`RunDir`]: one holder at a time, config.toml,
//! metrics.jsonl cut back on resume, atomic checkpoints): `last.safetensors` (after every
//! evaluation, every `ckpt_every`, at the end and on a stop request), `iter-NNNNNNN.safetensors`
//! (every `ckpt_every`), `best.safetensors` (best validation AP@[.5:.95]). A checkpoint is a
//! detector checkpoint ([`super::checkpoint`]) with the optimizer's state and the iteration, so
//! `resnet detect --weights RUN/last.safetensors` runs it and `--resume` continues it bit for
//! bit: every random choice is a function of (seed, iteration) (the image of an iteration, its
//! flip, the anchors and RoIs sampled), the rest is deterministic on a given thread count.
//!
//! One image per iteration (the paper's detector trains on 1-2 images per GPU); the learning
//! rate follows a step schedule with an optional linear warm-up (torchvision's reference
//! recipe; the paper has none). It prints nothing: what happens is told as [`DetEvent`]s.

use super::checkpoint::{self, DetMeta, DetTransform, FreezeRecord, PresetRecord, TrainMeta};
use super::coco_eval;
use super::data::DetSplit;
use super::model::{DetLosses, DetOptim, DetectorSpec, FasterRcnn};
use super::preset::{Preset, PresetName};
use crate::arch::{ArchOptions, ArchSpec};
use crate::net::Freeze;
use crate::train::metrics;
use crate::train::rundir::RunDir;
use anyhow::{Context, Result, anyhow, bail};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

/// What a user asks for (the CLI's flags, or a library caller's choices); `None` takes the
/// default [`DetTrainRequest::resolve`] documents.
#[derive(Clone, Debug, Default)]
pub struct DetTrainRequest {
    pub arch: String,
    pub arch_options: ArchOptions,
    /// a COCO or VOC data set directory ([`DetSplit`])
    pub data: PathBuf,
    /// default "train"
    pub train_split: Option<String>,
    /// default "val" where the data set has it, else none
    pub val_split: Option<String>,
    /// default paper
    pub preset: Option<PresetName>,
    pub min_size: Option<usize>,
    pub max_size: Option<usize>,
    pub anchor_sizes: Option<Vec<f32>>,
    /// RoIs sampled per image for the head's losses (default: the preset's, paper 128,
    /// torchvision 512)
    pub rois_per_image: Option<usize>,
    /// stages frozen (0: none, 1: the stem, 2: stem + first stage, ...); default 2
    pub freeze_at: Option<usize>,
    /// BN trains as usual instead of frozen
    pub train_bn: bool,
    /// default 12 passes over the training images
    pub iters: Option<u64>,
    /// default the preset's (paper 0.001)
    pub lr: Option<f32>,
    /// default: the rate divided by 10 at 3/4 of the run (the paper's 240k of 320k)
    pub milestones: Option<Vec<u64>>,
    /// default min(iters / 20, 1000) iterations from lr / 1000
    pub warmup: Option<u64>,
    pub momentum: Option<f32>,
    pub weight_decay: Option<f32>,
    pub seed: u64,
    pub no_flip: bool,
    pub keep_empty: bool,
    pub init_from: Option<PathBuf>,
    /// default 32 without --init-from, 0 with it
    pub calibrate_bn: Option<usize>,
    pub log_every: Option<u64>,
    pub eval_every: Option<u64>,
    pub ckpt_every: Option<u64>,
}

/// A detector training run, every value decided (RUN/config.toml).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct DetTrainConfig {
    pub arch: ArchSpec,
    pub data: PathBuf,
    pub train_split: String,
    pub val_split: Option<String>,
    pub preset: PresetRecord,
    pub freeze: FreezeRecord,
    pub transform: DetTransform,
    pub iters: u64,
    pub lr: f32,
    pub milestones: Vec<u64>,
    pub gamma: f32,
    pub warmup_iters: u64,
    pub warmup_factor: f32,
    pub momentum: f32,
    pub weight_decay: f32,
    pub seed: u64,
    pub flip: bool,
    pub keep_empty: bool,
    pub init_from: Option<PathBuf>,
    /// frozen BN's statistics measured on this many training images before step 0 (standing in
    /// for pre-training's when the backbone has none)
    pub calibrate_bn: usize,
    pub log_every: u64,
    pub eval_every: u64,
    pub ckpt_every: u64,
}

impl DetTrainRequest {
    pub fn new(arch: &str, data: impl Into<PathBuf>) -> DetTrainRequest {
        DetTrainRequest { arch: arch.into(), data: data.into(), ..Default::default() }
    }

    /// Every default decided and every value checked (the data set's layout and its training
    /// split's size are read; the images are not).
    pub fn resolve(&self) -> Result<DetTrainConfig> {
        self.resolve_with_data().map(|(cfg, _)| cfg)
    }

    /// [`DetTrainRequest::resolve`] with the splits it read, for [`DetTrainer::start_with`] (a
    /// COCO annotation file can be hundreds of MB: read once).
    pub fn resolve_with_data(&self) -> Result<(DetTrainConfig, DetData)> {
        let arch = ArchSpec::parse(&self.arch, &self.arch_options)?;
        let train_split = self.train_split.clone().unwrap_or_else(|| "train".into());
        let train = DetSplit::open(&self.data, &train_split, self.keep_empty)?;
        let val_split = match &self.val_split {
            Some(v) => Some(v.clone()),
            None => DetSplit::exists(&self.data, "val").then(|| "val".to_string()),
        };
        let val = val_split.as_ref().map(|v| DetSplit::open(&self.data, v, true)).transpose()?;
        let data = DetData::checked(train, val)?;
        let name = self.preset.unwrap_or(PresetName::Paper);
        let mut preset = Preset::for_backbone(name, &arch);
        if let Some(s) = self.min_size {
            preset.image_min_size = s;
        }
        if let Some(s) = self.max_size {
            preset.image_max_size = s;
        }
        if let Some(a) = &self.anchor_sizes {
            if a.is_empty() || a.iter().any(|s| !s.is_finite() || *s <= 0.0) {
                bail!("--anchor-sizes: positive sizes in pixels, not {a:?}");
            }
            preset.anchor_sizes = Box::leak(a.clone().into_boxed_slice());
        }
        if let Some(r) = self.rois_per_image {
            if r == 0 {
                bail!("--rois-per-image must be at least 1");
            }
            preset.head.batch_per_image = r;
        }
        if preset.image_min_size == 0 || preset.image_max_size < preset.image_min_size {
            bail!(
                "image sizes: --min-size {} and --max-size {} need 1 <= min <= max",
                preset.image_min_size,
                preset.image_max_size
            );
        }
        let mut transform = DetTransform::of_preset(&preset);
        if arch.in_channels == 1 {
            (transform.mean, transform.std) = (vec![0.449], vec![0.226]);
        }
        if let Some(p) = &self.init_from
            && let Some(norm) = pretraining_normalisation(p)?
        {
            (transform.mean, transform.std) = norm;
        }
        transform.check(arch.in_channels).map_err(|e| anyhow!("the image transform: {e}"))?;
        let freeze = FreezeRecord { bn: !self.train_bn, at: self.freeze_at.unwrap_or(2) };
        if freeze.at > arch.stages.len() + 1 {
            bail!("--freeze-at {}: {} has the stem and {} stages", freeze.at, arch.name, arch.stages.len());
        }
        let n = data.train.usable.len() as u64;
        let iters = self.iters.unwrap_or(12 * n);
        if iters == 0 {
            bail!("--iters must be at least 1");
        }
        let milestones = self.milestones.clone().unwrap_or_else(|| vec![iters * 3 / 4]);
        if milestones.windows(2).any(|w| w[0] >= w[1]) {
            bail!("--milestones must increase: {milestones:?}");
        }
        let lr = self.lr.unwrap_or(0.001);
        let momentum = self.momentum.unwrap_or(0.9);
        let weight_decay = self.weight_decay.unwrap_or(match name {
            PresetName::Paper => 0.0005,
            PresetName::Torchvision => 0.0001,
        });
        for (what, v, ok) in [
            ("--lr", lr, lr > 0.0),
            ("--momentum", momentum, (0.0..1.0).contains(&momentum)),
            ("--weight-decay", weight_decay, weight_decay >= 0.0),
        ] {
            if !v.is_finite() || !ok {
                bail!("{what} {v} is out of range");
            }
        }
        if let Some(p) = &self.init_from
            && !p.is_file()
        {
            bail!("--init-from {}: no such file", p.display());
        }
        let calibrate_bn = self.calibrate_bn.unwrap_or(if self.init_from.is_some() || self.train_bn { 0 } else { 32 });
        let log_every = self.log_every.unwrap_or(20).max(1);
        let eval_every = self.eval_every.unwrap_or(if val_split.is_some() { (iters / 4).max(1) } else { 0 });
        let cfg = DetTrainConfig {
            preset: PresetRecord::of(&preset),
            arch,
            data: self.data.clone(),
            train_split,
            val_split,
            freeze,
            transform,
            iters,
            lr,
            milestones,
            gamma: 0.1,
            warmup_iters: self.warmup.unwrap_or((iters / 20).min(1000)),
            warmup_factor: 0.001,
            momentum,
            weight_decay,
            seed: self.seed,
            flip: !self.no_flip,
            keep_empty: self.keep_empty,
            init_from: self.init_from.clone(),
            calibrate_bn,
            log_every,
            eval_every,
            ckpt_every: self.ckpt_every.unwrap_or(0),
        };
        // the detector must build (the preset's stride against the backbone's, ...)
        cfg.spec(data.train.class_names().len() + 1)?;
        Ok((cfg, data))
    }
}

/// The input normalisation a backbone learnt with, when `path` is our classification checkpoint:
/// the mean of its mean image per channel, std 1 (its recipe subtracts a mean image and divides by
/// nothing), so that frozen BN sees the inputs its statistics describe. None for other weights
/// (torchvision's: ImageNet's mean and std, the transform's default).
fn pretraining_normalisation(path: &Path) -> Result<Option<(Vec<f32>, Vec<f32>)>> {
    let bytes = crate::paths::read_regular(path)?;
    if !crate::weights::checkpoint::is_checkpoint(&bytes) {
        return Ok(None);
    }
    let ck = crate::weights::checkpoint::parse(path, &bytes)?;
    let pre = &ck.preprocess;
    let c = pre.src.2.max(1);
    if pre.mean.is_empty() || pre.mean.len() % c != 0 {
        return Ok(None);
    }
    let pixels = (pre.mean.len() / c) as f64;
    let mean = (0..c).map(|k| (pre.mean.iter().skip(k).step_by(c).map(|&v| f64::from(v)).sum::<f64>() / pixels) as f32);
    Ok(Some((mean.collect(), vec![1.0; c])))
}

impl DetTrainConfig {
    /// The detector this run trains, for `classes` (K + 1).
    pub fn spec(&self, classes: usize) -> Result<DetectorSpec> {
        let preset = self.preset.preset().map_err(|e| anyhow!("the preset: {e}"))?;
        let t = &self.transform;
        Ok(DetectorSpec {
            arch: self.arch.clone(),
            classes,
            preset,
            freeze: Freeze { bn: self.freeze.bn, at: self.freeze.at },
            max_image: t.largest(),
        })
    }

    /// The learning rate of iteration `it`: linear warm-up from `lr * warmup_factor`, then `lr`
    /// times `gamma` per milestone passed.
    pub fn lr_at(&self, it: u64) -> f32 {
        let drops = self.milestones.iter().filter(|&&m| it >= m).count() as i32;
        let base = self.lr * self.gamma.powi(drops);
        if it < self.warmup_iters {
            let f = it as f32 / self.warmup_iters as f32;
            base * (self.warmup_factor * (1.0 - f) + f)
        } else {
            base
        }
    }

    /// The training image (index into the split's usable images) of iteration `it`: a seeded
    /// permutation per pass over them (the classification loader's, `augment::permutation`).
    pub fn image_of(&self, it: u64, usable: usize) -> usize {
        let n = usable as u64;
        crate::data::augment::permutation(usable, self.seed, it / n)[(it % n) as usize] as usize
    }

    /// Whether iteration `it`'s image is mirrored.
    pub fn flip_of(&self, it: u64) -> bool {
        self.flip && crate::rng::counter_uniform(&format!("train-det/{}/flip", self.seed), it) < 0.5
    }
}

/// A window of training iterations (metrics.jsonl).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct DetTrainRow {
    pub iter: u64,
    pub lr: f32,
    /// means over the window: the total and torchvision's four losses
    pub loss: f64,
    pub loss_objectness: f64,
    pub loss_rpn_box_reg: f64,
    pub loss_classifier: f64,
    pub loss_box_reg: f64,
    pub img_per_s: f64,
}

/// An evaluation of a split (metrics.jsonl): pycocotools' AP@[.5:.95], AP50, AP75.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct DetEvalRow {
    pub iter: u64,
    pub split: String,
    pub ap: f64,
    pub ap50: f64,
    pub ap75: f64,
    pub images: usize,
}

/// What a run tells its observer.
#[derive(Debug)]
pub enum DetEvent<'a> {
    Started { iteration: u64, total: u64 },
    Window(&'a DetTrainRow),
    Evaluated(&'a DetEvalRow),
    Step { iteration: u64 },
}

/// What a finished (or stopped) run reports.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct DetOutcome {
    pub iteration: u64,
    pub finished: bool,
    pub interrupted: bool,
    pub val: Option<DetEvalRow>,
    /// training images without boxes left out
    pub skipped_empty: usize,
}

/// A detector training run in progress.
pub struct DetTrainer {
    pub detector: FasterRcnn,
    optim: DetOptim,
    cfg: DetTrainConfig,
    meta: DetMeta,
    train: DetSplit,
    val: Option<DetSplit>,
    dir: RunDir,
    log: metrics::Log,
    /// what the user should hear about how the run was opened
    pub notes: Vec<String>,
}

fn save_config(dir: &RunDir, cfg: &DetTrainConfig) -> Result<()> {
    let text = toml::to_string(cfg).context("writing the configuration")?;
    crate::weights::checkpoint::write_atomic(&dir.join("config.toml"), text.as_bytes())
}

/// The splits a run trains and is judged on.
pub struct DetData {
    pub train: DetSplit,
    pub val: Option<DetSplit>,
}

impl DetData {
    /// The splits `cfg` names.
    pub fn open(cfg: &DetTrainConfig) -> Result<DetData> {
        let train = DetSplit::open(&cfg.data, &cfg.train_split, cfg.keep_empty)?;
        let val = cfg.val_split.as_ref().map(|v| DetSplit::open(&cfg.data, v, true)).transpose()?;
        DetData::checked(train, val)
    }

    /// Refused: a training split without a box, a validation split of other classes.
    fn checked(train: DetSplit, val: Option<DetSplit>) -> Result<DetData> {
        if train.usable.is_empty() {
            bail!(
                "{}: none of its {} images has a box to train on (--keep-empty trains on them as background)",
                train.source.display(),
                train.gt.images.len()
            );
        }
        if let Some(v) = &val
            && v.class_names() != train.class_names()
        {
            bail!(
                "{}: its classes ({}) differ from the training split's ({})",
                v.source.display(),
                v.class_names().join(", "),
                train.class_names().join(", ")
            );
        }
        Ok(DetData { train, val })
    }
}

impl DetTrainer {
    /// Start the run `cfg` in `out` (created; refused if it holds a run with a checkpoint): the
    /// detector built, its backbone initialised from `cfg.init_from`, its frozen BN calibrated if
    /// asked.
    pub fn start(out: &Path, cfg: DetTrainConfig) -> Result<DetTrainer> {
        let data = DetData::open(&cfg)?;
        Self::start_with(out, cfg, data)
    }

    /// [`DetTrainer::start`] on splits already read ([`DetTrainRequest::resolve_with_data`]).
    pub fn start_with(out: &Path, cfg: DetTrainConfig, data: DetData) -> Result<DetTrainer> {
        let DetData { train, val } = data;
        let (dir, replaced) = RunDir::create(out)?;
        let mut notes = vec![];
        if replaced {
            notes.push(format!(
                "{} held a run that never wrote a checkpoint: starting afresh in its place",
                out.display()
            ));
        }
        save_config(&dir, &cfg)?;
        let names = train.class_names();
        let spec = cfg.spec(names.len() + 1)?;
        let mut detector = FasterRcnn::new(spec.clone(), true, cfg.seed)?;
        if let Some(p) = &cfg.init_from {
            let n = checkpoint::init_backbone(&mut detector, p)?;
            notes.push(format!("backbone: {n} tensors from {}", p.display()));
        }
        if cfg.calibrate_bn > 0 {
            let k = cfg.calibrate_bn.min(train.usable.len());
            let mut images = Vec::with_capacity(k);
            for &i in &train.usable[..k] {
                let (inp, _) = train.load(i, &cfg.transform, cfg.arch.in_channels, false)?;
                images.push((inp.data, inp.h, inp.w));
            }
            detector.calibrate_bn(&images, 4)?;
            notes.push(format!("frozen BN: statistics measured on {k} training images (no pre-trained ones)"));
        }
        let mut meta = DetMeta::new(&spec, names, cfg.transform.clone());
        meta.train = Some(TrainMeta { iteration: 0, seed: cfg.seed, best_val_ap: None });
        let optim = DetOptim::new(&detector, cfg.momentum, cfg.weight_decay);
        let log = metrics::Log::open(&dir.join("metrics.jsonl"), 0)?;
        Ok(DetTrainer { detector, optim, cfg, meta, train, val, dir, log, notes })
    }

    /// Take up the run in `path` where its last checkpoint left it (`last.safetensors`, else the
    /// newest loadable `iter-*` one, saying so); with none, from iteration 0.
    pub fn resume(path: &Path) -> Result<DetTrainer> {
        let dir = RunDir::open(path)?;
        let config = dir.join("config.toml");
        let text = std::fs::read_to_string(&config).with_context(|| format!("reading {}", config.display()))?;
        let cfg: DetTrainConfig = toml::from_str(&text)
            .with_context(|| format!("{}: not a detector run's configuration", config.display()))?;
        let from = dir.resume_from(checkpoint::read, |ck| ck.meta.train.as_ref().map_or(0, |t| t.iteration))?;
        let note = from.note;
        let Some((_, ck)) = from.checkpoint else {
            drop(dir);
            let mut t = DetTrainer::start(path, cfg)?;
            t.notes.extend(note);
            return Ok(t);
        };
        let DetData { train, val } = DetData::open(&cfg)?;
        ck.check_classes(&train.class_names())?;
        let spec = cfg.spec(train.class_names().len() + 1)?;
        if ck.spec.arch != spec.arch || ck.spec.preset != spec.preset || ck.spec.freeze != spec.freeze {
            bail!("{}: its detector differs from the one {} describes", ck.path.display(), config.display());
        }
        let mut detector = FasterRcnn::new(spec, true, cfg.seed)?;
        checkpoint::load_state(&mut detector, &ck.weights)
            .map_err(|m| anyhow!("{}: the tensors do not fit the run's detector:\n{m}", ck.path.display()))?;
        let mut optim = DetOptim::new(&detector, cfg.momentum, cfg.weight_decay);
        ck.restore_optimizer(&mut optim)?;
        let meta = ck.meta.clone();
        let it = meta.train.as_ref().map_or(0, |t| t.iteration);
        let log = metrics::Log::open(&dir.join("metrics.jsonl"), it)?;
        Ok(DetTrainer { detector, optim, cfg, meta, train, val, dir, log, notes: note.into_iter().collect() })
    }

    pub fn config(&self) -> &DetTrainConfig {
        &self.cfg
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Iterations done.
    pub fn iteration(&self) -> u64 {
        self.meta.train.as_ref().map_or(0, |t| t.iteration)
    }

    fn kept(&self) -> String {
        let last = self.dir.join("last.safetensors");
        if last.exists() {
            format!("{} keeps the last good state", last.display())
        } else {
            "no checkpoint was written yet".into()
        }
    }

    /// One iteration: its image loaded (and mirrored, if drawn), the detector's training step.
    pub fn step(&mut self) -> Result<(DetLosses, f32)> {
        let it = self.iteration();
        let c = &self.cfg;
        let i = self.train.usable[c.image_of(it, self.train.usable.len())];
        let (inp, target) = self
            .train
            .load(i, &c.transform, c.arch.in_channels, c.flip_of(it))
            .with_context(|| format!("loading the image of iteration {it}; {}", self.kept()))?;
        let lr = c.lr_at(it);
        let l = self.detector.train_step(&inp.data, (inp.h, inp.w), &target, (c.seed, it), &mut self.optim, lr)?;
        if !l.total().is_finite() {
            bail!(
                "the loss is not finite at iteration {it} (lr {lr}, {}); the run stops here, {}",
                self.train.image_path(i).display(),
                self.kept()
            );
        }
        if let Some(t) = &mut self.meta.train {
            t.iteration += 1;
        }
        Ok((l, lr))
    }

    /// COCO numbers of the detector on every image of the run's validation split (None
    /// without one).
    pub fn evaluate(&mut self) -> Result<Option<DetEvalRow>> {
        let Some(s) = &self.val else { return Ok(None) };
        let dets = detect_split(&mut self.detector, &self.cfg.transform, s, 0.0, &mut |_| {})?;
        let e = coco_eval::evaluate(&s.gt, &dets);
        Ok(Some(DetEvalRow {
            iter: self.iteration(),
            split: s.split.clone(),
            ap: e.stats[0],
            ap50: e.stats[1],
            ap75: e.stats[2],
            images: s.gt.images.len(),
        }))
    }

    /// Write the run's state as RUN/`name` (atomically).
    pub fn checkpoint(&mut self, name: &str) -> Result<PathBuf> {
        let path = self.dir.join(name);
        let bytes = checkpoint::to_bytes_with(&self.detector, &self.meta, Some(&self.optim))?;
        crate::weights::checkpoint::write_atomic(&path, &bytes)?;
        Ok(path)
    }

    /// Train until iteration `stop_at` (or the end) or until `cancel` is set (then a resumable
    /// checkpoint is written first).
    pub fn run(
        &mut self,
        stop_at: Option<u64>,
        cancel: &AtomicBool,
        observe: &mut dyn FnMut(DetEvent),
    ) -> Result<DetOutcome> {
        let c = self.cfg.clone();
        let stop = stop_at.unwrap_or(c.iters).min(c.iters);
        let start = self.iteration();
        let mut out = DetOutcome {
            iteration: start,
            finished: start >= c.iters,
            skipped_empty: self.train.skipped,
            ..Default::default()
        };
        if start >= stop {
            if out.finished {
                out.val = self.evaluate()?;
            }
            return Ok(out);
        }
        observe(DetEvent::Started { iteration: start, total: c.iters });
        let (mut sums, mut n, mut t) = ([0.0f64; 5], 0usize, Instant::now());
        for it in start..stop {
            let (l, lr) = self.step()?;
            for (s, v) in sums.iter_mut().zip([l.total(), l.rpn_objectness, l.rpn_box, l.classifier, l.box_reg]) {
                *s += f64::from(v);
            }
            n += 1;
            let done = it + 1;
            if done % c.log_every == 0 || done == stop {
                let m = |k: usize| sums[k] / n as f64;
                let row = DetTrainRow {
                    iter: done,
                    lr,
                    loss: m(0),
                    loss_objectness: m(1),
                    loss_rpn_box_reg: m(2),
                    loss_classifier: m(3),
                    loss_box_reg: m(4),
                    img_per_s: n as f64 / t.elapsed().as_secs_f64(),
                };
                self.log.write(&row)?;
                observe(DetEvent::Window(&row));
                (sums, n, t) = ([0.0; 5], 0, Instant::now());
            }
            observe(DetEvent::Step { iteration: done });
            let eval_now = (c.eval_every > 0 && done % c.eval_every == 0) || done == c.iters;
            if eval_now && let Some(row) = self.evaluate()? {
                self.log.write(&row)?;
                observe(DetEvent::Evaluated(&row));
                let tm = self.meta.train.as_mut().expect("a training run's metadata");
                if tm.best_val_ap.is_none_or(|b| row.ap > b) {
                    tm.best_val_ap = Some(row.ap);
                    self.checkpoint("best.safetensors")?;
                }
                out.val = Some(row);
            }
            let ckpt = c.ckpt_every > 0 && done % c.ckpt_every == 0;
            if ckpt {
                self.checkpoint(&format!("iter-{done:07}.safetensors"))?;
            }
            let interrupted = cancel.load(Ordering::Relaxed);
            if eval_now || ckpt || done == stop || interrupted {
                self.checkpoint("last.safetensors")?;
            }
            out.iteration = done;
            if interrupted {
                out.interrupted = true;
                break;
            }
        }
        out.finished = out.iteration >= c.iters;
        Ok(out)
    }
}

/// Run `detector` on every image of `split` (with `transform`): its detections above
/// `min_score` in COCO's results format (the split's category ids, original pixels), and the
/// images that could not be read are errors naming them. `progress` hears each image done.
pub fn detect_split(
    detector: &mut FasterRcnn,
    transform: &DetTransform,
    split: &DetSplit,
    min_score: f32,
    progress: &mut dyn FnMut(usize),
) -> Result<Vec<crate::data::detection::Detection>> {
    let channels = detector.spec.arch.in_channels;
    let mut all = vec![];
    for i in 0..split.gt.images.len() {
        let (inp, _) = split.load(i, transform, channels, false)?;
        let d = detector.detect(&inp.data, inp.h, inp.w)?;
        let found = d
            .boxes
            .iter()
            .zip(&d.labels)
            .zip(&d.scores)
            .filter(|(_, s)| **s >= min_score)
            .map(|((b, l), s)| (inp.to_original(b), *l, *s));
        all.extend(split.to_results(i, found));
        progress(i + 1);
    }
    Ok(all)
}
