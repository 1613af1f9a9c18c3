//! One-command reproductions of the paper's CIFAR experiments.
//!
//! - `Degradation`: plain and residual nets of each depth with the same recipe (Sec. 4.2, Figure 6):
//!   final training error on the full training set in eval mode, test error, the Figure-6-style
//!   curves and Figure 7's responses, in OUT/REPORT.md.
//! - `Cifar10`: Table 6's nets at the paper's 64k iterations, our errors beside the paper's.
//!
//! Runs live in OUT/runs/<net>; a finished run is skipped, an unfinished one resumed, so a
//! reproduction can be stopped and taken up again at will. Each net's run is a [`TrainRequest`]
//! trained by the library's [`Trainer`](crate::train::Trainer); a run already there must have been
//! started with the same request.

use crate::analysis::{plot, responses};
use crate::predict::{Classifier, LoadOptions};
use crate::train::{self, Cadence, Event, Outcome, TrainRequest};
use crate::weights::checkpoint;
use anyhow::{Context, Result, bail};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

/// Table 6 of the paper: CIFAR-10 test error (%) of the residual nets.
pub const TABLE6: [(usize, f64); 6] = [(20, 8.75), (32, 7.51), (44, 7.17), (56, 6.97), (110, 6.43), (1202, 7.93)];

/// Which experiment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Experiment {
    /// plain vs residual nets of the same depths on the same recipe (Figure 6)
    Degradation,
    /// the paper's CIFAR-10 protocol beside Table 6
    Cifar10,
}

/// A reproduction as a user asks for it.
#[derive(Clone, Debug)]
pub struct ReproduceRequest {
    pub experiment: Experiment,
    /// CIFAR-10 for `Cifar10`; any CIFAR / MNIST-style set for `Degradation`
    pub data: PathBuf,
    /// runs/, figures, REPORT.md
    pub out: PathBuf,
    /// depths (6n+2) of the plain and residual nets (default: degradation 20,56; cifar10 20,32,44,56,110)
    pub depths: Option<Vec<usize>>,
    /// iterations per run (default 64000, the paper's)
    pub iters: Option<u64>,
    pub batch: usize,
    pub seed: u64,
    pub crop_pad: usize,
    pub train_images: Option<usize>,
    pub eval_every: Option<u64>,
    pub no_flip: bool,
    pub lenient_counts: bool,
    /// the command line, quoted in the report
    pub command: String,
}

/// A checked reproduction: the nets to train and how.
#[derive(Clone, Debug)]
pub struct Plan {
    req: ReproduceRequest,
    depths: Vec<usize>,
    iters: u64,
    /// plain nets first, then the residual ones
    pub nets: Vec<String>,
}

/// What a reproduction tells its observer.
#[derive(Debug)]
pub enum Progress<'a> {
    /// net `name`: already finished (skipped), resumed, or started
    Net { name: &'a str, dir: &'a Path, action: Action },
    /// an event of the net being trained
    Train(Event<'a>),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Skipped,
    Resuming,
    Training,
}

/// How a reproduction ended.
pub enum Ended {
    /// REPORT.md's text (also written to OUT/REPORT.md)
    Report(String),
    /// cancelled (a resumable checkpoint was written): run it again to continue
    Interrupted,
}

/// What a finished run reports.
struct Row {
    name: String,
    dir: PathBuf,
    train_err: f64,
    test_err: f64,
}

impl ReproduceRequest {
    /// The reproduction with its defaults and the refusals of its protocols: an in-memory data set
    /// (CIFAR-10 for `Cifar10`), CIFAR-family depths.
    pub fn plan(&self) -> Result<Plan> {
        let cifar10 = self.experiment == Experiment::Cifar10;
        if cifar10 && (self.train_images.is_some() || self.no_flip) {
            bail!(
                "reproduce cifar10 is the paper's protocol (all 50k training images, flips), to set beside Table 6: \
                 use reproduce degradation for --train-images / --no-flip"
            );
        }
        let (splits, format) = crate::data::load_with(&self.data, None, !self.lenient_counts)
            .with_context(|| "reproduce takes a CIFAR / MNIST-style data set (image folders: use resnet train)")?;
        let mut req = self.clone();
        if req.train_images == Some(splits.train.len()) {
            req.train_images = None; // all of them: the runs record no subset (as `resnet train` does)
        }
        if cifar10 && format != crate::data::Format::Cifar10 {
            bail!(
                "{} holds {format:?}, not CIFAR-10 (use `reproduce degradation` for other data)",
                self.data.display()
            );
        }
        let mut depths = req.depths.clone().unwrap_or(if cifar10 { vec![20, 32, 44, 56, 110] } else { vec![20, 56] });
        depths.sort();
        depths.dedup();
        let mut nets: Vec<String> = vec![];
        for kind in ["plain", "resnet"] {
            for d in &depths {
                // the paper's plain nets stop at 56 layers
                if !(cifar10 && kind == "plain" && *d > 56) {
                    nets.push(format!("{kind}{d}"));
                }
            }
        }
        for n in &nets {
            check_cifar_net(n)?;
        }
        let iters = req.iters.unwrap_or(64_000);
        Ok(Plan { req, depths, iters, nets })
    }
}

impl Plan {
    fn runs(&self) -> PathBuf {
        self.req.out.join("runs")
    }

    /// The training request of net `arch`.
    pub fn request(&self, arch: &str) -> TrainRequest {
        let c = &self.req;
        TrainRequest {
            iters: Some(self.iters),
            batch: Some(c.batch),
            seed: c.seed,
            crop_pad: Some(c.crop_pad),
            no_flip: c.no_flip,
            train_images: c.train_images,
            eval_every: c.eval_every,
            lenient_counts: c.lenient_counts,
            ..TrainRequest::new(arch, &c.data)
        }
    }

    /// Seconds the remaining training would take on this machine, from a few timed steps of each net.
    pub fn estimate_seconds(&self) -> Result<f64> {
        let mut total = 0.0;
        for n in &self.nets {
            let spec = crate::arch::ArchSpec::parse(n, &Default::default())?;
            let r = crate::bench::run(&spec, self.req.batch, 32, crate::bench::Mode::Train, 2, 1, |_, _| {})?;
            let last = self.runs().join(n).join("last.safetensors");
            let done = checkpoint::read(&last).map_or(0, |ck| ck.meta.iteration.min(self.iters));
            total += (self.iters - done) as f64 * self.req.batch as f64 / r.img_per_s;
        }
        Ok(total)
    }

    pub fn iters(&self) -> u64 {
        self.iters
    }

    /// Train every net (skipping finished runs, resuming unfinished ones) until done or `cancel`
    /// is set, then write OUT/REPORT.md with its figures.
    pub fn run(&self, cancel: &AtomicBool, observe: &mut dyn FnMut(Progress)) -> Result<Ended> {
        let runs = self.runs();
        std::fs::create_dir_all(&runs).with_context(|| format!("creating {}", runs.display()))?;
        let mut rows = vec![];
        for n in &self.nets {
            let dir = runs.join(n);
            if self.ensure_run(n, &dir, cancel, observe)?.interrupted {
                return Ok(Ended::Interrupted);
            }
            let (train_err, test_err) = final_errors(&dir)?;
            rows.push(Row { name: n.clone(), dir, train_err, test_err });
        }
        let r = self.report(&rows)?;
        checkpoint::write_atomic(&self.req.out.join("REPORT.md"), r.as_bytes())?;
        Ok(Ended::Report(r))
    }

    /// Train (or resume, or skip when finished) `arch` into `dir`. A run already there must have
    /// been started with the same request (network, data, iterations, batch, seed, crops, flips,
    /// training images).
    fn ensure_run(
        &self,
        arch: &str,
        dir: &Path,
        cancel: &AtomicBool,
        observe: &mut dyn FnMut(Progress),
    ) -> Result<Outcome> {
        let c = &self.req;
        let iters = self.iters;
        let config = dir.join("config.toml");
        let opened = if config.exists() {
            let text = std::fs::read_to_string(&config)?;
            let cfg: train::TrainConfig = toml::from_str(&text).with_context(|| format!("{}", config.display()))?;
            let same_data = cfg.data == c.data || cfg.data.canonicalize().ok() == c.data.canonicalize().ok();
            let asked = (arch, iters, c.batch, c.seed, c.crop_pad, !c.no_flip, c.train_images);
            let stored = (
                cfg.arch.name.as_str(),
                cfg.schedule.iters,
                cfg.batch,
                cfg.seed,
                cfg.crop_pad,
                cfg.flip,
                cfg.train_images,
            );
            if !same_data || asked != stored {
                bail!(
                    "{} holds a run of {} on {} ({} iterations, batch {}, seed {}, crop pad {}, flips {}, training images \
                     {}), not what this command asks ({arch} on {}, {iters} iterations, batch {}, seed {}, crop pad {}, \
                     flips {}, training images {}): use another --out or remove it",
                    dir.display(),
                    stored.0,
                    cfg.data.display(),
                    stored.1,
                    stored.2,
                    stored.3,
                    stored.4,
                    on_off(stored.5),
                    images(stored.6),
                    c.data.display(),
                    c.batch,
                    c.seed,
                    c.crop_pad,
                    on_off(asked.5),
                    images(asked.6)
                );
            }
            let last = dir.join("last.safetensors");
            if last.exists() && checkpoint::read(&last)?.meta.iteration >= cfg.schedule.iters {
                observe(Progress::Net { name: arch, dir, action: Action::Skipped });
                return Ok(Outcome {
                    iteration: cfg.schedule.iters,
                    finished: true,
                    interrupted: false,
                    test_loss: None,
                    test_err: None,
                    val_err: None,
                    skipped: 0,
                });
            }
            observe(Progress::Net { name: arch, dir, action: Action::Resuming });
            train::resume(dir, &Cadence::default())?
        } else {
            observe(Progress::Net { name: arch, dir, action: Action::Training });
            train::start(dir, self.request(arch).resolve()?)?
        };
        let mut trainer = opened.trainer;
        trainer.run(None, cancel, &mut |e| observe(Progress::Train(e)))
    }

    /// REPORT.md's text (and its figures, written beside it).
    fn report(&self, rows: &[Row]) -> Result<String> {
        let (c, iters, depths) = (&self.req, self.iters, &self.depths);
        let cifar10 = c.experiment == Experiment::Cifar10;
        let what = if cifar10 {
            "CIFAR-10".to_string()
        } else {
            c.data.file_name().map_or("data".into(), |f| f.to_string_lossy().into_owned())
        };
        let figs = figures(&c.out, rows, c, &what)?;
        // REPORT.md
        let mut r = String::new();
        writeln!(r, "# {}\n", if cifar10 { "CIFAR-10, Table 6" } else { "The degradation problem (Figure 6)" })?;
        writeln!(r, "Command:\n\n    {}\n", c.command)?;
        writeln!(
            r,
            "Data: `{}`{}; {iters} iterations per run, batch {}, the paper's CIFAR recipe (lr 0.1, /10 at 50% and 75%; {}).\n",
            c.data.display(),
            c.train_images
                .map_or(String::new(), |n| format!(" ({n} of its training images, seeded random; the whole test set)")),
            c.batch,
            augmentation(c.crop_pad, !c.no_flip)
        )?;
        if cifar10 {
            writeln!(r, "| net | training error (%) | test error (%) | paper's test error (%) |\n|---|---|---|---|")?;
        } else {
            writeln!(r, "| net | training error (%) | test error (%) |\n|---|---|---|")?;
        }
        for row in rows {
            let paper = TABLE6
                .iter()
                .find(|(d, _)| format!("resnet{d}") == row.name)
                .map_or("—".to_string(), |(_, e)| format!("{e:.2}"));
            if cifar10 {
                writeln!(r, "| {} | {:.2} | {:.2} | {paper} |", row.name, row.train_err, row.test_err)?;
            } else {
                writeln!(r, "| {} | {:.2} | {:.2} |", row.name, row.train_err, row.test_err)?;
            }
        }
        let augmented = if c.crop_pad == 0 && c.no_flip { "" } else { "augmented " };
        writeln!(
            r,
            "\nTraining error in the table: the whole training set{} in eval mode (no augmentation), after the last \
             iteration; the dashed curves in the figures are the {augmented}mini-batches' error during training.{}\n",
            c.train_images.map_or(String::new(), |n| format!(" (the {n} images trained on)")),
            if cifar10 { " The paper's ResNet-110 figure is its best of 5 runs (mean 6.61 ± 0.16)." } else { "" }
        )?;
        if !cifar10 && depths.len() >= 2 {
            let (lo, hi) = (depths.iter().min().copied().unwrap_or(0), depths.iter().max().copied().unwrap_or(0));
            let get = |n: String| rows.iter().find(|r| r.name == n).map(|r| r.train_err);
            if let (Some(p_lo), Some(p_hi), Some(r_lo), Some(r_hi)) = (
                get(format!("plain{lo}")),
                get(format!("plain{hi}")),
                get(format!("resnet{lo}")),
                get(format!("resnet{hi}")),
            ) {
                r.push_str(&what_held(lo, hi, (p_lo, p_hi), (r_lo, r_hi)));
            }
        }
        writeln!(r, "## Figures\n\nFigure 7 (layer responses) over the first 2000 test images.\n")?;
        for f in &figs {
            writeln!(r, "![{f}]({f})\n")?;
        }
        Ok(r)
    }
}

fn on_off(b: bool) -> &'static str {
    if b { "on" } else { "off" }
}

fn images(n: Option<usize>) -> String {
    n.map_or("all".into(), |n| n.to_string())
}

/// The augmentation in words: "pad-2 crops, flips", "no augmentation", ...
fn augmentation(crop_pad: usize, flip: bool) -> String {
    match (crop_pad, !flip) {
        (0, true) => "no augmentation".into(),
        (0, false) => "flips, no crops".into(),
        (p, true) => format!("pad-{p} crops, no flips"),
        (p, false) => format!("pad-{p} crops, flips"),
    }
}

/// Final training error (whole training set, eval mode, no augmentation) and test error of a run.
fn final_errors(dir: &Path) -> Result<(f64, f64)> {
    let text = std::fs::read_to_string(dir.join("config.toml"))?;
    let cfg: train::TrainConfig = toml::from_str(&text).with_context(|| format!("{}/config.toml", dir.display()))?;
    let ck = checkpoint::read(&dir.join("last.safetensors"))?;
    let mut net = crate::net::Net::new(&ck.meta.arch, 250, ck.meta.input_size, ck.meta.input_size, false, 0)?;
    ck.restore(&mut net)?;
    let data = train::RunData::open(&cfg, Some(ck.preprocess.clone()))?;
    let (_, train_err) = train::evaluate(&mut net, data.train.as_ref(), 1)?;
    let test = data.test.context("the data set has no test split")?;
    let (_, test_err) = train::evaluate(&mut net, test.as_ref(), 1)?;
    Ok((train_err, test_err))
}

/// The report's "What held" section: the plain pair's and the residual pair's training errors
/// (shallow, deep), in percent.
fn what_held(lo: usize, hi: usize, plain: (f64, f64), resnet: (f64, f64)) -> String {
    let ((p_lo, p_hi), (r_lo, r_hi)) = (plain, resnet);
    let degraded = p_hi > p_lo;
    let caught_up = r_hi <= r_lo;
    format!(
        "## What held\n\n\
         - plain-{hi}'s training error is {} plain-{lo}'s ({p_hi:.2}% vs {p_lo:.2}%){}.\n\
         - ResNet-{hi}'s training error is {} ResNet-{lo}'s ({r_hi:.2}% vs {r_lo:.2}%){}.\n\n\
         Single runs, one seed: differences of a few tenths of a point are within run-to-run noise.\n\n",
        if degraded { "above" } else { "not above" },
        if degraded {
            ": the deeper plain net is harder to optimise (the degradation problem)"
        } else {
            ": no degradation at this budget"
        },
        if caught_up { "not above" } else { "above" },
        match (degraded, caught_up) {
            (true, true) => ": with shortcuts the deeper net trains at least as well",
            (true, false) => ": the deeper ResNet has not caught up at this budget",
            (false, _) => "",
        }
    )
}

fn figures(out: &Path, rows: &[Row], c: &ReproduceRequest, what: &str) -> Result<Vec<String>> {
    let mut made = vec![];
    for (kind, title) in [("plain", "plain networks"), ("resnet", "ResNets")] {
        let dirs: Vec<&Path> = rows.iter().filter(|r| r.name.starts_with(kind)).map(|r| r.dir.as_path()).collect();
        if dirs.is_empty() {
            continue;
        }
        let curves = dirs.iter().map(|d| plot::read_run(d)).collect::<Result<Vec<_>>>()?;
        let file = format!("fig6-{kind}.png");
        plot::render(&curves, &out.join(&file), &format!("{what}: {title}"), (900, 520))?;
        made.push(file);
    }
    // Figure 7 over (at most) 2000 test images
    let opts = LoadOptions { batch: Some(50), ..Default::default() };
    let mut all = vec![];
    for r in rows {
        let mut model = Classifier::load(&r.dir.join("last.safetensors"), &opts)?;
        all.push((r.name.clone(), responses::measure(&mut model, &c.data, 2000, !c.lenient_counts)?));
    }
    made.extend(responses::figures(&all, out, "fig7-responses")?);
    Ok(made)
}

/// A net of `--depths` must be of the CIFAR family; otherwise the real reason (a depth beyond the
/// limit, not 6n+2, an ImageNet depth).
fn check_cifar_net(name: &str) -> Result<()> {
    match crate::arch::ArchSpec::parse(name, &Default::default()) {
        Ok(s) if s.family == crate::arch::Family::Cifar => Ok(()),
        Ok(_) => bail!(
            "--depths: {name} is an ImageNet-family network (depths 18, 34, 50, 101, 152 are); reproduce runs the \
             CIFAR family: depths 6n+2 such as 20, 32, 44, 56, 110"
        ),
        Err(e) => bail!("--depths: {name}: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_held_names_each_outcome() {
        let r = what_held(20, 56, (7.0, 11.6), (6.8, 6.5));
        assert!(r.contains("plain-56's training error is above plain-20's (11.60% vs 7.00%)"), "{r}");
        assert!(r.contains("ResNet-56's training error is not above ResNet-20's (6.50% vs 6.80%)"), "{r}");
        assert!(r.contains("trains at least as well"), "{r}");
        let r = what_held(20, 56, (7.0, 11.6), (6.8, 7.7));
        assert!(r.contains("ResNet-56's training error is above") && r.contains("not caught up"), "{r}");
        let r = what_held(20, 56, (7.0, 6.9), (6.8, 7.7));
        assert!(r.contains("is not above plain-20's") && r.contains("no degradation"), "{r}");
        assert!(!r.contains("caught up") && !r.contains("at least as well"), "{r}");
        // equal errors count as "not above"
        assert!(what_held(20, 56, (7.0, 9.0), (6.8, 6.8)).contains("at least as well"));
    }

    #[test]
    fn depths_name_the_real_reason() {
        assert!(check_cifar_net("resnet56").is_ok() && check_cifar_net("plain1202").is_ok());
        let e = check_cifar_net("plain1000004").unwrap_err().to_string();
        assert!(e.contains("depth 1000004 is beyond what this crate builds") && !e.contains("must be 6n+2"), "{e}");
        let e = check_cifar_net("resnet21").unwrap_err().to_string();
        assert!(e.contains("--depths: resnet21: no network of depth 21"), "{e}");
        let e = check_cifar_net("resnet18").unwrap_err().to_string();
        assert!(e.contains("resnet18 is an ImageNet-family network"), "{e}");
    }

    #[test]
    fn augmentation_in_words() {
        assert_eq!(augmentation(0, false), "no augmentation");
        assert_eq!(augmentation(0, true), "flips, no crops");
        assert_eq!(augmentation(2, true), "pad-2 crops, flips");
        assert_eq!(augmentation(4, false), "pad-4 crops, no flips");
    }
}
