//! `resnet bench-det`: time a Faster R-CNN C4 detector's inference or training steps on a
//! synthetic image (the library's `detect::bench`).

use crate::bench::Mode;
use crate::detect::bench::{self, DetBenchRequest};
use clap::ValueEnum;
use std::io::IsTerminal;

#[derive(Copy, Clone, ValueEnum)]
enum ModeArg {
    Train,
    Infer,
}

#[derive(clap::Args)]
#[command(after_help = "Examples:\n  resnet bench-det --arch resnet50 --mode infer --steps 5 --threads 2\n  \
resnet bench-det --arch resnet50 --mode train --steps 3\n  resnet bench-det --arch resnet20 --mode train --steps 20\n\n\
The detector: the backbone's C4 split (ImageNet nets in torchvision's v1.5 form), the torchvision preset \
resolved for the backbone (anchor stride 16, or 2 for the CIFAR family), RoIAlign 14x14, BN frozen, stem and \
first stage frozen, random weights. Inference = detect() (RPN, head on the proposals, per-class NMS); \
training = train_step() with three ground-truth boxes. bench/compare-det.sh runs it against torchvision.")]
pub struct Args {
    /// Backbone: resnet50 (ImageNet family: a 600 x 1000 image) or a CIFAR net such as resnet20
    /// (a 128 x 128 image)
    #[arg(long, short = 'a', default_value = "resnet50")]
    arch: String,
    #[arg(long, value_enum, default_value_t = ModeArg::Infer)]
    mode: ModeArg,
    /// Image size HxW (default 600x1000 for the ImageNet family, 128x128 for the CIFAR family)
    #[arg(long, value_parser = parse_size)]
    image: Option<(usize, usize)>,
    /// Classes with the background (81: COCO's 80 and the background)
    #[arg(long, default_value_t = 81)]
    classes: usize,
    /// RPN proposals kept after NMS at test time
    #[arg(long, default_value_t = 300)]
    proposals: usize,
    /// Inference: run the head on exactly --proposals fixed boxes (a formula the torchvision peer
    /// shares) instead of the RPN's proposals, which random weights may leave fewer of
    #[arg(long)]
    force_proposals: bool,
    /// Timed steps
    #[arg(long, short = 's', default_value_t = 5)]
    steps: usize,
    /// Untimed steps first
    #[arg(long, short = 'w', default_value_t = 1)]
    warmup: usize,
    /// Worker threads (default: every core)
    #[arg(long, short = 't')]
    threads: Option<usize>,
    /// Print one JSON object
    #[arg(long)]
    json: bool,
}

fn parse_size(s: &str) -> Result<(usize, usize), String> {
    let (h, w) = s.split_once(['x', 'X']).ok_or_else(|| format!("{s:?}: expected HxW, e.g. 600x1000"))?;
    let p = |v: &str| v.trim().parse::<usize>().ok().filter(|n| *n > 0);
    p(h).zip(p(w)).ok_or_else(|| format!("{s:?}: expected two positive integers HxW, e.g. 600x1000"))
}

pub fn run(a: Args) -> anyhow::Result<()> {
    if let Some(t) = a.threads {
        if t == 0 {
            anyhow::bail!("--threads must be at least 1");
        }
        crate::par::set_threads(t)?;
    }
    let req = DetBenchRequest {
        arch: a.arch,
        mode: match a.mode {
            ModeArg::Train => Mode::Train,
            ModeArg::Infer => Mode::Infer,
        },
        image: a.image,
        classes: a.classes,
        proposals: a.proposals,
        force_proposals: a.force_proposals,
        steps: a.steps,
        warmup: a.warmup,
    };
    let show = !a.json && std::io::stderr().is_terminal();
    let r = bench::run(&req, |s, n| {
        if show {
            eprint!("\rstep {s}/{n}");
        }
    })?;
    if show {
        eprintln!();
    }
    if a.json {
        println!("{}", serde_json::to_string(&r)?);
        return Ok(());
    }
    println!(
        "{} C4 detector {:?} {}x{}x{}, {} classes, {} threads, {}: {:.3} img/s, {:.1} ms/step (median {:.1}), peak RSS {:.0} MiB",
        r.arch,
        r.mode,
        r.image[0],
        r.image[1],
        r.image[2],
        r.classes,
        r.threads,
        r.cpu,
        r.img_per_s,
        r.ms_per_step,
        r.ms_per_step_median,
        r.peak_rss_mib
    );
    println!("  {}", r.preset);
    match r.loss_first_last {
        Some((first, last)) => {
            println!("  {:.0} RoIs per step through the head; loss {first:.3} -> {last:.3}", r.rois_per_step)
        }
        None => println!(
            "  {:.0} RoIs per step through the head{} ({:.0} RPN proposals), {:.1} detections",
            r.rois_per_step,
            if r.force_proposals { " (forced boxes)" } else { "" },
            r.rpn_proposals_per_step,
            r.detections_per_step
        ),
    }
    Ok(())
}
