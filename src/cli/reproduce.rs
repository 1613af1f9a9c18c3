//! `resnet reproduce`: maps its flags onto the library's [`ReproduceRequest`] (the experiments,
//! their runs and REPORT.md live in `crate::reproduce`), asks before a long CIFAR-10 run, and
//! prints progress and the report.

use super::signals;
use super::train::Progress;
use crate::reproduce::{Action, Ended, Experiment, ReproduceRequest};
use anyhow::Result;
use std::path::PathBuf;

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

fn command_line() -> String {
    std::env::args().map(|a| if a.contains(' ') { format!("'{a}'") } else { a }).collect::<Vec<_>>().join(" ")
}

pub fn run(a: Args) -> Result<()> {
    let (c, experiment) = match a.what {
        What::Degradation(c) => (c, Experiment::Degradation),
        What::Cifar10(c) => (c, Experiment::Cifar10),
    };
    let plan = ReproduceRequest {
        experiment,
        data: c.data,
        out: c.out,
        depths: c.depths,
        iters: c.iters,
        batch: c.batch,
        seed: c.seed,
        crop_pad: c.crop_pad,
        train_images: c.train_images,
        eval_every: c.eval_every,
        no_flip: c.no_flip,
        lenient_counts: c.lenient_counts,
        command: command_line(),
    }
    .plan()?;
    if experiment == Experiment::Cifar10 {
        eprintln!(
            "estimated duration on this machine: {:.1} hours for {} runs of {} iterations",
            plan.estimate_seconds()? / 3600.0,
            plan.nets.len(),
            plan.iters()
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
    signals::install();
    let mut progress: Option<Progress> = None;
    let ended = plan.run(&signals::stop_flag(), &mut |p| match p {
        crate::reproduce::Progress::Net { name, dir, action } => {
            if let Some(old) = progress.take() {
                old.finish();
            }
            match action {
                Action::Skipped => eprintln!("{name}: finished ({}), skipped", dir.display()),
                Action::Resuming => eprintln!("{name}: resuming {}", dir.display()),
                Action::Training => eprintln!("{name}: training into {}", dir.display()),
            }
            progress = Some(Progress::new(false));
        }
        crate::reproduce::Progress::Train(e) => {
            if let Some(p) = progress.as_mut() {
                p.show(e)
            }
        }
    })?;
    if let Some(p) = progress {
        p.finish();
    }
    match ended {
        Ended::Report(r) => {
            print!("{r}");
            Ok(())
        }
        Ended::Interrupted => {
            eprintln!("interrupted: run the same command again to continue");
            Err(signals::received().unwrap_or(signals::Interrupted { signal: 2 }).into())
        }
    }
}
