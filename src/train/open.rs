//! Starting a new run or taking up an existing one, on the CPU engine: the run directory held,
//! the configuration written or read back (and checked), the data opened, the network built.
//! What a user should hear about (a replaced run, a fallback checkpoint) comes back as notes.

use super::rundir::{ResumePoint, RunDir};
use super::{RunData, TrainConfig, Trainer};
use crate::net::Net;
use anyhow::{Context, Result};
use std::path::Path;

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
    Ok(Net::new(&cfg.arch, cfg.batch, size, size, true, cfg.seed)?)
}

fn save_config(dir: &RunDir, cfg: &TrainConfig) -> Result<()> {
    let text = toml::to_string(cfg).context("writing the configuration")?;
    crate::weights::checkpoint::write_atomic(&dir.join("config.toml"), text.as_bytes())
}

/// Start the run `cfg` (from [`TrainRequest::resolve`](super::TrainRequest::resolve)) in `out`.
pub fn start(out: &Path, cfg: TrainConfig) -> Result<Opened> {
    cfg.validate()?;
    let data = RunData::open(&cfg, None)?;
    let (dir, replaced) = RunDir::create(out)?;
    let mut notes = vec![];
    if replaced {
        notes.push(format!("{} held a run that never wrote a checkpoint: starting afresh in its place", out.display()));
    }
    save_config(&dir, &cfg)?;
    let net = build(&cfg, &data)?;
    let trainer = Trainer::new(net, dir, cfg, data, ResumePoint { checkpoint: None, note: None })?;
    Ok(Opened { trainer, notes })
}

/// Take up the run in `path` where it stopped, with `cadence` applied (and recorded).
pub fn resume(path: &Path, cadence: &Cadence) -> Result<Opened> {
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
    cfg.validate().with_context(|| format!("{}: bad configuration", config.display()))?;
    let mut notes = vec![];
    if !changed.is_empty() {
        save_config(&dir, &cfg)?;
        notes.push(format!("{} now records {}", config.display(), changed.join(", ")));
    }
    if cfg.threads != crate::par::threads() {
        notes.push(format!(
            "this run computed with {} threads, now {}: results stay correct but are no longer bit-identical to an uninterrupted run",
            cfg.threads,
            crate::par::threads()
        ));
    }
    let from = dir.resume_point()?;
    notes.extend(from.note.clone());
    // the input pipeline as recorded in the checkpoint (a run stopped before its first has none)
    let pre = from.checkpoint.as_ref().map(|(_, ck)| ck.preprocess.clone());
    let data = RunData::open(&cfg, pre).with_context(|| {
        let relative = if cfg.data.is_relative() { ", taken relative to the current directory" } else { "" };
        format!("the data {} named in {}{relative}", cfg.data.display(), config.display())
    })?;
    let net = build(&cfg, &data)?;
    let trainer = Trainer::new(net, dir, cfg, data, from)?;
    Ok(Opened { trainer, notes })
}
