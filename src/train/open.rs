//! Starting a new run or taking up an existing one, on the CPU engine: the run directory held,
//! the configuration written or read back (and checked), the data opened, the network built.
//! What a user should hear about (a replaced run, a fallback checkpoint) comes back as notes.

use super::parallel::{Collective, Solo};
use super::rundir::{ResumePoint, RunDir};
use super::{RunData, TrainConfig, Trainer};
use crate::net::Net;
use crate::weights::checkpoint;
use anyhow::{Context, Result, bail};
use std::path::Path;
use std::sync::Arc;

/// What may change when a run is resumed: the cadence of logs and checkpoints (recorded in
/// config.toml). Everything else is the run's frozen configuration.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Cadence {
    pub log_every: Option<u64>,
    pub ckpt_every: Option<u64>,
    pub keep: Option<usize>,
}

/// A run ready to train, and what the user should be told about how it was opened.
pub struct Opened {
    pub trainer: Trainer<Net>,
    pub notes: Vec<String>,
}

fn build(cfg: &TrainConfig, data: &RunData) -> Result<Net> {
    let size = data.pre.size;
    Ok(Net::new(&cfg.arch, cfg.local_batch(), size, size, true, cfg.seed)?)
}

fn save_config(dir: &RunDir, cfg: &TrainConfig) -> Result<()> {
    let text = toml::to_string(cfg).context("writing the configuration")?;
    crate::weights::checkpoint::write_atomic(&dir.join("config.toml"), text.as_bytes())
}

/// Start the run `cfg` (from [`TrainRequest::resolve`](super::TrainRequest::resolve)) in `out`.
pub fn start(out: &Path, cfg: TrainConfig) -> Result<Opened> {
    start_in(out, cfg, Arc::new(Solo))
}

/// [`start`] on rank `group.rank()` of a data-parallel run (`cfg.world` = `group.size()`): every
/// rank opens the data itself; rank 0 holds the directory and writes config.toml.
pub fn start_in(out: &Path, cfg: TrainConfig, group: Arc<dyn Collective>) -> Result<Opened> {
    cfg.validate()?;
    let data = RunData::open(&cfg, None)?;
    let mut notes = vec![];
    let dir = if group.rank() == 0 {
        let (dir, replaced) = RunDir::create(out)?;
        if replaced {
            notes.push(format!(
                "{} held a run that never wrote a checkpoint: starting afresh in its place",
                out.display()
            ));
        }
        save_config(&dir, &cfg)?;
        dir
    } else {
        RunDir::follower(out)
    };
    let net = build(&cfg, &data)?;
    let trainer = Trainer::with_group(net, dir, cfg, data, ResumePoint { checkpoint: None, note: None }, group)?;
    Ok(Opened { trainer, notes })
}

/// Take up the run in `path` where it stopped, with `cadence` applied (and recorded).
pub fn resume(path: &Path, cadence: &Cadence) -> Result<Opened> {
    resume_in(path, cadence, Arc::new(Solo))
}

/// [`resume`] on rank `group.rank()` of `group.size()` processes. Rank 0 holds the directory, reads
/// config.toml and the checkpoint and sends both to the other ranks (which need no shared file
/// system for the run directory). Another number of processes than the run's is allowed with
/// synchronised BN (the same computation) and refused without (BN would see other batches).
pub fn resume_in(path: &Path, cadence: &Cadence, group: Arc<dyn Collective>) -> Result<Opened> {
    if group.rank() != 0 {
        return follow(path, group);
    }
    let (dir, cfg, from, notes) = lead_resume(path, cadence, group.size())?;
    // the configuration and checkpoint to the other ranks
    let mut text = toml::to_string(&cfg).context("writing the configuration")?.into_bytes();
    group.broadcast_bytes(&mut text);
    let mut ck = match &from.checkpoint {
        Some((p, _)) => std::fs::read(p).with_context(|| format!("reading {}", p.display()))?,
        None => vec![],
    };
    group.broadcast_bytes(&mut ck);
    let data = open_data(&cfg, &from, &dir.join("config.toml"))?;
    let net = build(&cfg, &data)?;
    let trainer = Trainer::with_group(net, dir, cfg, data, from, group)?;
    Ok(Opened { trainer, notes })
}

/// A rank other than 0 taking up a run: the configuration and checkpoint from rank 0.
fn follow(path: &Path, group: Arc<dyn Collective>) -> Result<Opened> {
    let mut text = vec![];
    group.broadcast_bytes(&mut text);
    let text = String::from_utf8(text).context("the configuration rank 0 sent")?;
    let cfg: TrainConfig = toml::from_str(&text).context("the configuration rank 0 sent")?;
    let mut bytes = vec![];
    group.broadcast_bytes(&mut bytes);
    let from = if bytes.is_empty() {
        ResumePoint { checkpoint: None, note: None }
    } else {
        let p = path.join("last.safetensors");
        ResumePoint { checkpoint: Some((p.clone(), checkpoint::parse(&p, &bytes)?)), note: None }
    };
    let data = open_data(&cfg, &from, &path.join("config.toml"))?;
    let net = build(&cfg, &data)?;
    let trainer = Trainer::with_group(net, RunDir::follower(path), cfg, data, from, group)?;
    Ok(Opened { trainer, notes: vec![] })
}

/// The data a resumed run names, with the input pipeline recorded in its checkpoint.
fn open_data(cfg: &TrainConfig, from: &ResumePoint, config: &Path) -> Result<RunData> {
    // the input pipeline as recorded in the checkpoint (a run stopped before its first has none)
    let pre = from.checkpoint.as_ref().map(|(_, ck)| ck.preprocess.clone());
    RunData::open(cfg, pre).with_context(|| {
        let relative = if cfg.data.is_relative() { ", taken relative to the current directory" } else { "" };
        format!("the data {} named in {}{relative}", cfg.data.display(), config.display())
    })
}

/// Rank 0's part of a resume: the directory held, the configuration read, updated (cadence, number of
/// processes) and checked, where the run continues.
fn lead_resume(
    path: &Path,
    cadence: &Cadence,
    world: usize,
) -> Result<(RunDir, TrainConfig, ResumePoint, Vec<String>)> {
    let dir = RunDir::open(path)?;
    let config = dir.join("config.toml");
    let text = std::fs::read_to_string(&config).with_context(|| format!("reading {}", config.display()))?;
    let mut cfg: TrainConfig =
        toml::from_str(&text).with_context(|| format!("{}: bad configuration", config.display()))?;
    let mut changed = vec![];
    if let Some(n) = cadence.log_every {
        cfg.log_every = n;
        changed.push(format!("log_every = {n}"));
    }
    if let Some(n) = cadence.ckpt_every {
        cfg.ckpt_every = n;
        changed.push(format!("ckpt_every = {n}"));
    }
    if let Some(n) = cadence.keep {
        cfg.keep = n;
        changed.push(format!("keep = {n}"));
    }
    if cfg.world != world {
        let was = cfg.world;
        if !cfg.sync_bn {
            bail!(
                "{} was trained by {was} process(es) with BN statistics per process (over {} images each): on {world} \
                 process(es) BN would normalise over {} images, another computation than the run's. Resume it with \
                 {was} process(es) (mpiexec -n {was}); runs started with --sync-bn may change the number of processes",
                path.display(),
                cfg.local_batch(),
                cfg.batch / world.max(1),
            );
        }
        cfg.check_world(world)?;
        let exact_before = matches!(cfg.sum_order(), crate::par::SumOrder::Leaves { .. });
        cfg.world = world;
        let same = if exact_before && matches!(cfg.sum_order(), crate::par::SumOrder::Leaves { .. }) {
            "the same steps, bit for bit"
        } else {
            "the same steps up to summation order"
        };
        changed.push(format!("world = {world} (was {was}; synchronised BN: {same})"));
    }
    cfg.validate().with_context(|| format!("{}: bad configuration", config.display()))?;
    let mut notes = vec![];
    if !changed.is_empty() {
        save_config(&dir, &cfg)?;
        notes.push(format!("{} now records {}", config.display(), changed.join(", ")));
    }
    // (in leaf order the bits do not depend on the thread count)
    if cfg.threads != crate::par::threads() && cfg.sum_order() == crate::par::SumOrder::Threads {
        notes.push(format!(
            "this run computed with {} threads, now {}: results stay correct but are no longer bit-identical to an uninterrupted run",
            cfg.threads,
            crate::par::threads()
        ));
    }
    let from = dir.resume_point()?;
    notes.extend(from.note.clone());
    Ok((dir, cfg, from, notes))
}
