//! `resnet reproduce`: the paper's CIFAR experiments from one command.
//!
//! - `degradation`: plain and residual nets of each depth with the same recipe
//!   (Sec. 4.2, Figure 6): final training error on the full training set in
//!   eval mode, test error, the Figure-6-style curves and Figure 7's responses,
//!   in DIR/REPORT.md.
//! - `cifar10`: Table 6's nets at the paper's 64k iterations, our errors beside
//!   the paper's.
//!
//! Runs live in DIR/runs/<net>; a finished run is skipped, an unfinished one
//! resumed, so the command can be stopped and run again at will.

use super::train as train_cli;
use crate::analysis::{plot, responses};
use crate::predict::{Classifier, LoadOptions};
use crate::train::{self, TrainRequest};
use crate::weights::checkpoint;
use anyhow::{Context, Result, bail};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    what: What,
}

#[derive(clap::Subcommand)]
enum What {
    /// Plain vs residual nets of the same depths on the same recipe (Figure 6, the degradation problem)
    #[command(after_help = "Example (about an hour on a 2-core machine):\n  \
resnet reproduce degradation --data data/fashion-mnist --depths 20,56 --iters 3000 --out docs/degradation")]
    Degradation(Common),
    /// The paper's CIFAR-10 protocol: Table 6's nets at 64k iterations, our errors beside the paper's
    #[command(after_help = "Example (days on a CPU; prints the estimate first):\n  \
resnet reproduce cifar10 --data cifar-10-binary.tar.gz --out runs/table6")]
    Cifar10(Common),
}

#[derive(clap::Args, Clone)]
struct Common {
    /// The data set (CIFAR-10 for `cifar10`; any CIFAR / MNIST-style set for `degradation`)
    #[arg(long)]
    data: PathBuf,
    /// Output directory: runs/, figures, REPORT.md
    #[arg(long)]
    out: PathBuf,
    /// Depths (6n+2) of the plain and residual nets (default: degradation 20,56; cifar10 20,32,44,56,110)
    #[arg(long, value_delimiter = ',')]
    depths: Option<Vec<usize>>,
    /// Iterations per run (default 64000, the paper's); the lr milestones scale with it
    #[arg(long)]
    iters: Option<u64>,
    #[arg(long, default_value_t = 128)]
    batch: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Training crops' padding (the paper: 4; 2 suits 28x28 images in short runs)
    #[arg(long, default_value_t = 4)]
    crop_pad: usize,
    /// Train on this many (seeded, random) of the training images: more epochs in a short budget (the
    /// training error is then over these images; the test set stays whole)
    #[arg(long)]
    train_images: Option<usize>,
    /// Evaluate the test set every N iterations instead of every epoch (the training itself is the same;
    /// with a small --train-images epochs are short)
    #[arg(long)]
    eval_every: Option<u64>,
    /// No random horizontal flips (with --crop-pad 0: no augmentation, so the nets minimise the very
    /// training error the report compares)
    #[arg(long)]
    no_flip: bool,
    /// Start without asking after printing the estimated duration (cifar10)
    #[arg(long)]
    yes: bool,
    #[arg(long, hide = true)]
    lenient_counts: bool,
}

/// Table 6 of the paper: CIFAR-10 test error (%) of the residual nets.
pub const TABLE6: [(usize, f64); 6] = [(20, 8.75), (32, 7.51), (44, 7.17), (56, 6.97), (110, 6.43), (1202, 7.93)];

/// What a finished run reports.
struct Row {
    name: String,
    dir: PathBuf,
    train_err: f64,
    test_err: f64,
}

/// Train (or resume, or skip when finished) `arch` into `dir`. A run already there must have been
/// started with the same request (network, data, iterations, batch, seed, crops, flips, training images).
fn ensure_run(c: &Common, arch: &str, dir: &Path, iters: u64) -> Result<()> {
    let request = TrainRequest {
        iters: Some(iters),
        batch: Some(c.batch),
        seed: c.seed,
        crop_pad: Some(c.crop_pad),
        no_flip: c.no_flip,
        train_images: c.train_images,
        eval_every: c.eval_every,
        lenient_counts: c.lenient_counts,
        ..TrainRequest::new(arch, &c.data)
    };
    let config = dir.join("config.toml");
    if config.exists() {
        let text = std::fs::read_to_string(&config)?;
        let cfg: train::TrainConfig = toml::from_str(&text).with_context(|| format!("{}", config.display()))?;
        let same_data = cfg.data == c.data || cfg.data.canonicalize().ok() == c.data.canonicalize().ok();
        let asked = (arch, iters, c.batch, c.seed, c.crop_pad, !c.no_flip, c.train_images);
        let stored =
            (cfg.arch.name.as_str(), cfg.schedule.iters, cfg.batch, cfg.seed, cfg.crop_pad, cfg.flip, cfg.train_images);
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
            eprintln!("{arch}: finished ({}), skipped", dir.display());
            return Ok(());
        }
    }
    let (_, _, out) = if config.exists() {
        eprintln!("{arch}: resuming {}", dir.display());
        train_cli::train(None, Some((dir, &Default::default())), None, false)?
    } else {
        eprintln!("{arch}: training into {}", dir.display());
        train_cli::train(Some((dir, request.resolve()?)), None, None, false)?
    };
    if out.interrupted {
        eprintln!("interrupted: run the same command again to continue");
        return Err(super::signals::received().unwrap_or(super::signals::Interrupted { signal: 2 }).into());
    }
    Ok(())
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

fn figures(out: &Path, rows: &[Row], c: &Common, what: &str) -> Result<Vec<String>> {
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

fn command_line() -> String {
    std::env::args().map(|a| if a.contains(' ') { format!("'{a}'") } else { a }).collect::<Vec<_>>().join(" ")
}

pub fn run(a: Args) -> Result<()> {
    let (c, cifar10) = match a.what {
        What::Degradation(c) => (c, false),
        What::Cifar10(c) => (c, true),
    };
    if cifar10 && (c.train_images.is_some() || c.no_flip) {
        bail!(
            "reproduce cifar10 is the paper's protocol (all 50k training images, flips), to set beside Table 6: \
             use reproduce degradation for --train-images / --no-flip"
        );
    }
    // the data first: an in-memory set (CIFAR-10 for `cifar10`)
    let (splits, format) = crate::data::load_with(&c.data, None, !c.lenient_counts)
        .with_context(|| "reproduce takes a CIFAR / MNIST-style data set (image folders: use resnet train)")?;
    let mut c = c;
    if c.train_images == Some(splits.train.len()) {
        c.train_images = None; // all of them: the runs record no subset (as `resnet train` does)
    }
    drop(splits);
    if cifar10 && format != crate::data::Format::Cifar10 {
        bail!("{} holds {format:?}, not CIFAR-10 (use `reproduce degradation` for other data)", c.data.display());
    }
    let mut depths = c.depths.clone().unwrap_or(if cifar10 { vec![20, 32, 44, 56, 110] } else { vec![20, 56] });
    depths.sort();
    depths.dedup();
    let iters = c.iters.unwrap_or(64_000);
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
    let runs = c.out.join("runs");
    std::fs::create_dir_all(&runs).with_context(|| format!("creating {}", runs.display()))?;
    if cifar10 {
        // the estimated duration, from a few timed steps of each net
        let mut total = 0.0;
        for n in &nets {
            let spec = crate::arch::ArchSpec::parse(n, &Default::default())?;
            let r = crate::bench::run(&spec, c.batch, 32, crate::bench::Mode::Train, 2, 1, |_, _| {})?;
            let done =
                checkpoint::read(&runs.join(n).join("last.safetensors")).map_or(0, |ck| ck.meta.iteration.min(iters));
            total += (iters - done) as f64 * c.batch as f64 / r.img_per_s;
        }
        eprintln!(
            "estimated duration on this machine: {:.1} hours for {} runs of {iters} iterations",
            total / 3600.0,
            nets.len()
        );
        if !c.yes && std::io::IsTerminal::is_terminal(&std::io::stdin()) {
            eprint!("start? [y/N] ");
            let mut answer = String::new();
            std::io::stdin().read_line(&mut answer)?;
            if !answer.trim().eq_ignore_ascii_case("y") {
                return Ok(());
            }
        }
    }
    super::signals::install();
    let mut rows = vec![];
    for n in &nets {
        let dir = runs.join(n);
        ensure_run(&c, n, &dir, iters)?;
        if let Some(stop) = super::signals::received() {
            eprintln!("interrupted: run the same command again to continue");
            return Err(stop.into());
        }
        let (train_err, test_err) = final_errors(&dir)?;
        rows.push(Row { name: n.clone(), dir, train_err, test_err });
    }
    let what = if cifar10 {
        "CIFAR-10".to_string()
    } else {
        c.data.file_name().map_or("data".into(), |f| f.to_string_lossy().into_owned())
    };
    let figs = figures(&c.out, &rows, &c, &what)?;
    // REPORT.md
    let mut r = String::new();
    writeln!(r, "# {}\n", if cifar10 { "CIFAR-10, Table 6" } else { "The degradation problem (Figure 6)" })?;
    writeln!(r, "Command:\n\n    {}\n", command_line())?;
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
    for row in &rows {
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
    checkpoint::write_atomic(&c.out.join("REPORT.md"), r.as_bytes())?;
    print!("{r}");
    Ok(())
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
