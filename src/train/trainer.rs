//! The training loop: a [`Trainer`] owns a run (its directory, configuration, data and a
//! [`Backend`]) and advances it step by step, evaluating and checkpointing on the run's schedule.
//!
//! It knows no kernels: every computation goes through the backend, tensors leave it by
//! torchvision name. It prints nothing: what happens is told to an observer as [`Event`]s. It
//! stops when the cancellation flag it was handed is set (a signal handler, a GUI, a test),
//! after writing a resumable checkpoint. A step is split where a data-parallel run all-reduces
//! the gradients: forward + backward, then the gradient average and hook, then the optimizer step.
//!
//! Data-parallel ([`Trainer::with_group`], see [`super::parallel`]): every rank runs this same loop
//! on its share of each batch; the group sums the gradients, the losses, the evaluation tallies and
//! the stop flag, so every rank takes the same decisions; only rank 0 writes the run directory.

use super::metrics::{self, EvalRow, Row, TrainRow};
use super::parallel::{self, Collective, Solo, SyncBn};
use super::rundir::{ResumePoint, RunDir};
use super::{RunData, TrainConfig, evaluate_sums, init_from, mean_loss_err};
use crate::backend::Backend;
use crate::data::loader::{Batch, Loader};
use crate::data::source::Slice;
use crate::optim::Sgd;
use crate::par::SumOrder;
use crate::weights::checkpoint::{self, Meta};
use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

/// What a run tells its observer.
#[derive(Debug)]
pub enum Event<'a> {
    /// the loop starts at `iteration` of `total`
    Started { iteration: u64, total: u64 },
    /// a window of training iterations ended (also written to metrics.jsonl)
    Window(&'a TrainRow),
    /// a split was evaluated (also written to metrics.jsonl)
    Evaluated(&'a EvalRow),
    /// one iteration is done
    Step { iteration: u64 },
    /// the validation error plateaued: the rate is divided by `factor` from `iteration` on
    PlateauDrop { iteration: u64, factor: f32 },
}

/// What a finished (or stopped) run reports.
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

/// Runs between "gradients ready" and "optimizer step" with the flat gradients (e.g. an all-reduce).
pub type GradientHook = Box<dyn FnMut(&mut [f32]) -> Result<()> + Send>;

/// One training iteration's result.
#[derive(Clone, Copy, Debug)]
pub struct StepOut {
    pub loss: f32,
    pub errors: usize,
    pub lr: f32,
}

/// A run in progress.
pub struct Trainer<B: Backend> {
    backend: B,
    sgd: Sgd,
    cfg: TrainConfig,
    data: RunData,
    dir: RunDir,
    meta: Meta,
    /// rank 0's metrics log (None on the other ranks)
    log: Option<metrics::Log>,
    hook: Option<GradientHook>,
    group: Arc<dyn Collective>,
    /// this rank's share of each batch
    part: std::ops::Range<usize>,
    /// one gradient bucket
    scratch: Vec<f32>,
    /// the stop flag as this rank saw it before the step, and as the group agreed after it
    stop_vote: bool,
    stop_agreed: bool,
    /// compare the ranks' weights after every step (a bug check; costs a hash and an all-reduce)
    check_ranks: bool,
    reduce_time: parallel::ReduceTime,
    /// the all-reduce thread, when the gradient all-reduce overlaps backward
    overlap: Option<parallel::Overlap>,
}

impl<B: Backend> Trainer<B> {
    /// Take over the run held in `dir`: `backend` is built for `cfg` (batch capacity, input side),
    /// `from` says where the run continues (no checkpoint: a new run, fine-tuned from
    /// `cfg.finetune` if set). The checkpoint must match the configuration; metrics.jsonl is cut
    /// back to its iteration.
    pub fn new(backend: B, dir: RunDir, cfg: TrainConfig, data: RunData, from: ResumePoint) -> Result<Self> {
        Self::with_group(backend, dir, cfg, data, from, Arc::new(Solo))
    }

    /// [`Trainer::new`] for rank `group.rank()` of a data-parallel run over `group.size()` processes
    /// (`cfg.world`): `backend` is built for the local batch, `dir` is held by rank 0 only, every rank
    /// has the same `from`. Rank 0's weights and running statistics are broadcast.
    pub fn with_group(
        mut backend: B,
        dir: RunDir,
        cfg: TrainConfig,
        data: RunData,
        from: ResumePoint,
        group: Arc<dyn Collective>,
    ) -> Result<Self> {
        cfg.validate().with_context(|| format!("{}: bad configuration", dir.join("config.toml").display()))?;
        let (rank, world) = (group.rank(), group.size());
        if cfg.world != world {
            bail!("the run is configured for {} processes, but {world} run it", cfg.world);
        }
        if backend.capacity() < cfg.local_batch() || backend.spec() != &cfg.arch {
            bail!("the backend is not built for this run ({} with batch {})", cfg.arch.name, cfg.local_batch());
        }
        let mut sgd = Sgd::new(backend.param_count());
        sgd.momentum = cfg.momentum;
        sgd.weight_decay = cfg.weight_decay;
        let meta = match from.checkpoint {
            Some((path, ck)) => {
                cfg.check_checkpoint(&path, &ck.meta, &data.pre, &data.train.class_names())?;
                ck.restore(&mut backend).with_context(|| format!("restoring {}", path.display()))?;
                let v = ck.velocity().with_context(|| format!("{}: no optimizer state", path.display()))?;
                if v.len() != sgd.velocity.len() {
                    bail!("{}: optimizer state of the wrong size", path.display());
                }
                sgd.velocity.copy_from_slice(v);
                ck.meta
            }
            None => {
                if let Some(f) = &cfg.finetune {
                    init_from(&mut backend, f)?;
                }
                Meta {
                    seed: cfg.seed,
                    batch: Some(cfg.batch),
                    eval: data.eval.clone(),
                    ..Meta::new(cfg.arch.clone(), data.train.class_names(), data.pre.src, data.pre.size)
                }
            }
        };
        // with a frozen backbone only the fc's parameters move
        if cfg.finetune.as_ref().is_some_and(|f| f.freeze_backbone) {
            sgd.trainable = Some(["fc.weight", "fc.bias"].iter().filter_map(|n| backend.param_range(n)).collect());
        }
        let log = if rank == 0 { Some(metrics::Log::open(&dir.join("metrics.jsonl"), meta.iteration)?) } else { None };
        let exact = matches!(cfg.sum_order(), SumOrder::Leaves { .. });
        backend.set_sum_order(cfg.sum_order());
        if cfg.sync_bn && world > 1 {
            backend.set_sync_bn(Some(Arc::new(SyncBn { group: group.clone(), exact })));
        }
        parallel::broadcast_state(group.as_ref(), &mut backend);
        let part = parallel::share(cfg.batch, rank, world);
        Ok(Trainer {
            backend,
            sgd,
            cfg,
            data,
            dir,
            meta,
            log,
            hook: None,
            group,
            part,
            scratch: vec![],
            stop_vote: false,
            stop_agreed: false,
            check_ranks: false,
            reduce_time: Default::default(),
            overlap: None,
        })
    }

    /// Compare the ranks' weights (a 64-bit hash) after every step: a run whose ranks diverged stops.
    pub fn set_check_ranks(&mut self, on: bool) {
        self.check_ranks = on;
    }

    /// Overlap the gradient all-reduce with backward, on a thread of each rank's own, where the
    /// transport can (results are the same either way). Off by default: the thread competes with
    /// backward for the cores, which on a machine whose cores all compute costs more than it
    /// hides (docs/SCALING.md). Every rank calls this alike.
    pub fn set_overlap(&mut self, on: bool) {
        self.overlap = if on && self.group.size() > 1 {
            self.group.overlap(matches!(self.cfg.sum_order(), SumOrder::Leaves { .. }))
        } else {
            None
        };
    }

    /// Time spent averaging gradients across the ranks so far.
    pub fn reduce_time(&self) -> parallel::ReduceTime {
        self.reduce_time
    }

    /// Whether this process writes the run directory (rank 0).
    pub fn leads(&self) -> bool {
        self.group.rank() == 0
    }

    /// This rank's images of each batch.
    pub fn part(&self) -> std::ops::Range<usize> {
        self.part.clone()
    }

    /// Run `hook` on the gradients of every step before the optimizer uses them.
    pub fn set_gradient_hook(&mut self, hook: GradientHook) {
        self.hook = Some(hook);
    }

    /// Iterations done.
    pub fn iteration(&self) -> u64 {
        self.meta.iteration
    }

    pub fn config(&self) -> &TrainConfig {
        &self.cfg
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn backend(&self) -> &B {
        &self.backend
    }

    /// What a failure leaves behind, for its message.
    fn kept(&self) -> String {
        let last = self.dir.join("last.safetensors");
        if last.exists() {
            format!("{} keeps the last good state", last.display())
        } else {
            format!("no checkpoint was written yet: start afresh with the same --out {}", self.dir.path().display())
        }
    }

    /// One iteration on `batch` (this rank's part of it): forward, backward, the gradients averaged
    /// over the ranks, the gradient hook, the optimizer step. A loss or weights that are not finite
    /// stop the run (the last checkpoint is untouched). The loss and errors are the global batch's.
    pub fn step(&mut self, batch: &Batch) -> Result<StepOut> {
        let it = self.meta.iteration;
        let lr = self.cfg.schedule.lr(it, self.meta.warmup_done_at, &self.meta.plateau.drops);
        let b = &mut self.backend;
        let n = batch.labels.len();
        b.input_mut()[..batch.x.len()].copy_from_slice(&batch.x);
        b.forward(n, true);
        let world = self.group.size();
        // with the overlap, buckets go to the all-reduce thread as backward finishes them
        let (mut out, pending) = match self.overlap.as_mut() {
            Some(ov) => {
                let mut pending = ov.step(b.param_count(), world);
                let out = b.loss_backward_with(&batch.labels, &mut |from, tail| pending.ready(from, tail));
                (out, Some(pending))
            }
            None => (b.loss_backward(&batch.labels), None),
        };
        // the global batch's loss and errors, and whether any rank was asked to stop
        let mut tally = [out.loss as f64 * n as f64, out.errors as f64, n as f64, f64::from(u8::from(self.stop_vote))];
        self.group.sum_f64(&mut tally);
        (out.loss, out.errors, self.stop_agreed) = ((tally[0] / tally[2]) as f32, tally[1] as usize, tally[3] > 0.0);
        if let Some(p) = pending {
            let (busy, waited) = p.finish(self.backend.grads_mut());
            self.reduce_time.busy += busy;
            self.reduce_time.exposed += waited;
            self.reduce_time.steps += 1;
        } else if world > 1 {
            let t = Instant::now();
            let exact = matches!(self.cfg.sum_order(), SumOrder::Leaves { .. });
            parallel::average_gradients(self.group.as_ref(), self.backend.grads_mut(), &mut self.scratch, exact);
            let s = t.elapsed().as_secs_f64();
            self.reduce_time.busy += s;
            self.reduce_time.exposed += s;
            self.reduce_time.steps += 1;
        }
        if !out.loss.is_finite() {
            bail!("the loss is not finite at iteration {it} (lr {lr}); the run stops here, {}", self.kept());
        }
        if let Some(hook) = &mut self.hook {
            hook(self.backend.grads_mut())?;
        }
        self.backend.sgd_step(&mut self.sgd, lr);
        if let Some(name) = self.backend.non_finite_param() {
            bail!(
                "the weights ({name}) are not finite after iteration {it} (lr {lr}); the run stops here, {}",
                self.kept()
            );
        }
        if self.check_ranks && !self.group.agree(parallel::fingerprint(self.backend.params_mut())) {
            bail!("the ranks' weights differ after iteration {it}: the data-parallel run diverged");
        }
        self.meta.iteration += 1;
        Ok(StepOut { loss: out.loss, errors: out.errors, lr })
    }

    /// Rank 0's running statistics on every rank, unless BN is synchronised (then they agree).
    fn share_running_stats(&mut self) {
        if !self.cfg.sync_bn {
            parallel::broadcast_stats(self.group.as_ref(), &mut self.backend);
        }
    }

    /// Loss and top-1 error (percent) on the validation (`val`) or test split, eval mode. Each rank
    /// evaluates its share of the split with rank 0's running statistics (or the synchronised ones).
    pub fn evaluate(&mut self, val: bool) -> Result<Option<(f64, f64)>> {
        let Some(split) = (if val { self.data.val.clone() } else { self.data.test.clone() }) else { return Ok(None) };
        self.share_running_stats();
        let (rank, world) = (self.group.rank(), self.group.size());
        let total = split.len();
        let part = Slice { inner: split, range: parallel::share(total, rank, world) };
        let (loss, errors, count) = evaluate_sums(&mut self.backend, &part, self.cfg.workers)?;
        let mut sums = [loss, errors, count];
        self.group.sum_f64(&mut sums);
        mean_loss_err(sums[0], sums[1], sums[2], total).map(Some)
    }

    /// Write the run's state as RUN/`name` (atomically; rank 0, with its running statistics shared).
    pub fn checkpoint(&mut self, name: &str) -> Result<PathBuf> {
        self.share_running_stats();
        let path = self.dir.join(name);
        if self.leads() {
            let bytes = checkpoint::to_bytes(&self.backend, Some(&self.sgd.velocity), &self.data.pre, &self.meta)?;
            checkpoint::write_atomic(&path, &bytes)?;
        }
        Ok(path)
    }

    /// Train until iteration `stop_at` (or the end), or until `cancel` is set (then a resumable
    /// checkpoint is written first). A finished run asked again reports its final evaluation.
    pub fn run(
        &mut self,
        stop_at: Option<u64>,
        cancel: &AtomicBool,
        observe: &mut dyn FnMut(Event),
    ) -> Result<Outcome> {
        let total = self.cfg.schedule.iters;
        let stop = stop_at.unwrap_or(total).min(total);
        let start = self.meta.iteration;
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
                // a finished run asked again: its final evaluation
                if let Some((loss, err)) = self.evaluate(false)? {
                    (outcome.test_loss, outcome.test_err) = (Some(loss), Some(err));
                } else if let Some((_, err)) = self.evaluate(true)? {
                    outcome.val_err = Some(err);
                }
            }
            return Ok(outcome);
        }
        observe(Event::Started { iteration: start, total });
        let cfg = self.cfg.clone();
        let (b, per_epoch) = (cfg.batch as u64, self.data.train.len().max(1) as u64);
        let loader =
            Loader::spawn(self.data.train.clone(), cfg.workers, cfg.seed, (cfg.batch, self.part.clone()), start, stop);
        let solo = self.group.size() == 1;
        let (mut win_loss, mut win_err, mut win_n, mut win_t) = (0.0f64, 0usize, 0usize, Instant::now());
        for it in start..stop {
            let batch = loader
                .next()
                .context("the data loader stopped")?
                .with_context(|| format!("loading the batch of iteration {it}; {}", self.kept()))?;
            debug_assert_eq!(batch.iteration, it);
            self.stop_vote = cancel.load(Ordering::Relaxed);
            let out = self.step(&batch)?;
            win_loss += out.loss as f64;
            win_err += out.errors;
            win_n += 1;
            let done = it + 1;
            let epoch = done * b / per_epoch;
            if done % cfg.log_every == 0 || done == stop {
                let images = (win_n * cfg.batch) as f64;
                let row = TrainRow {
                    iter: done,
                    epoch,
                    lr: out.lr,
                    train_loss: win_loss / win_n as f64,
                    train_err: 100.0 * win_err as f64 / images,
                    img_per_s: images / win_t.elapsed().as_secs_f64(),
                };
                if cfg.schedule.warmup_lr.is_some()
                    && self.meta.warmup_done_at.is_none()
                    && row.train_err < cfg.schedule.warmup_until_err
                {
                    self.meta.warmup_done_at = Some(done);
                }
                self.write_row(&Row::Train(row.clone()))?;
                observe(Event::Window(&row));
                (win_loss, win_err, win_n, win_t) = (0.0, 0, 0, Instant::now());
            }
            observe(Event::Step { iteration: done });
            let epoch_end = epoch > it * b / per_epoch;
            let eval_now = if cfg.eval_every > 0 { done % cfg.eval_every == 0 } else { epoch_end };
            if eval_now || done == total {
                self.evaluate_and_log(done, epoch, &mut outcome, observe)?;
                if epoch_end {
                    self.checkpoint(&format!("epoch-{epoch:04}.safetensors"))?;
                    if self.leads() {
                        prune_epochs(&self.dir, cfg.keep)?;
                    }
                }
            }
            let ckpt = cfg.ckpt_every > 0 && done % cfg.ckpt_every == 0;
            if ckpt {
                self.checkpoint(&format!("iter-{done:07}.safetensors"))?;
            }
            // data-parallel: the ranks stop together, at the iteration where the first of them was asked to
            let interrupted = if solo { cancel.load(Ordering::Relaxed) } else { self.stop_agreed };
            if epoch_end || ckpt || done == stop || interrupted {
                self.checkpoint("last.safetensors")?;
            }
            outcome.iteration = done;
            if interrupted {
                outcome.interrupted = true;
                break;
            }
        }
        outcome.skipped = self.data.train.skipped() + self.data.val.as_ref().map_or(0, |v| v.skipped());
        outcome.finished = outcome.iteration >= total;
        Ok(outcome)
    }

    /// Evaluate the validation and test splits after iteration `done`: metrics rows, the plateau
    /// schedule, best.safetensors.
    fn evaluate_and_log(
        &mut self,
        done: u64,
        epoch: u64,
        outcome: &mut Outcome,
        observe: &mut dyn FnMut(Event),
    ) -> Result<()> {
        for (split, val) in [("val", true), ("test", false)] {
            let Some((loss, err)) = self.evaluate(val)? else { continue };
            let row = EvalRow { iter: done, epoch, split: split.into(), loss, err };
            self.write_row(&Row::Eval(row.clone()))?;
            observe(Event::Evaluated(&row));
            if val {
                outcome.val_err = Some(err);
                if let Some(p) = &self.cfg.schedule.plateau
                    && self.meta.plateau.observe(err, done, p)
                {
                    observe(Event::PlateauDrop { iteration: done, factor: 1.0 / self.cfg.schedule.gamma });
                }
                if self.meta.best_val_err.is_none_or(|b| err < b) {
                    self.meta.best_val_err = Some(err);
                    self.checkpoint("best.safetensors")?;
                }
            } else {
                (outcome.test_loss, outcome.test_err) = (Some(loss), Some(err));
            }
        }
        Ok(())
    }
}

impl<B: Backend> Trainer<B> {
    /// A metrics.jsonl line (rank 0).
    fn write_row(&mut self, row: &Row) -> Result<()> {
        match &mut self.log {
            Some(log) => log.write(row),
            None => Ok(()),
        }
    }
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
