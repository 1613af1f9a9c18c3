//! `resnet plot`: training curves of runs, in the style of the paper's figures.

use crate::analysis::plot;
use anyhow::Result;
use std::path::PathBuf;

#[derive(clap::Args)]
#[command(after_help = "Examples:\n  \
resnet plot runs/plain20 runs/plain56 --out fig6-plain.png\n  \
resnet plot runs/r20 runs/r56 runs/r110 --out fig6-resnet.svg --title \"ResNets on CIFAR-10\"\n\n\
Training error (thin, dashed) comes from the metrics windows of RUN/metrics.jsonl, test error (bold) from \
its evaluations (validation error when a run has no test split); the legend names each run's network.")]
pub struct Args {
    /// Run directories
    #[arg(required = true)]
    runs: Vec<PathBuf>,
    /// Figure file: .png or .svg
    #[arg(long)]
    out: PathBuf,
    #[arg(long, default_value = "")]
    title: String,
    #[arg(long, default_value_t = 900)]
    width: u32,
    #[arg(long, default_value_t = 560)]
    height: u32,
}

pub fn run(a: Args) -> Result<()> {
    if !(100..=8000).contains(&a.width) || !(100..=8000).contains(&a.height) {
        anyhow::bail!("--width and --height must be within 100..=8000 pixels");
    }
    let metrics: Vec<PathBuf> = a.runs.iter().map(|r| r.join("metrics.jsonl")).collect();
    crate::paths::refuse_any_same_file(&metrics, &[&a.out], "a run's metrics.jsonl and --out")?;
    let mut curves = a.runs.iter().map(|r| plot::read_run(r)).collect::<Result<Vec<_>>>()?;
    plot::label_runs(&mut curves, &a.runs.iter().map(|p| p.as_path()).collect::<Vec<_>>());
    plot::render(&curves, &a.out, &a.title, (a.width, a.height))?;
    println!("{}: {} run(s)", a.out.display(), curves.len());
    Ok(())
}
