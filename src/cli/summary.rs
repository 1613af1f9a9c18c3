//! `resnet summary`: the per-stage table, or one JSON object.

use super::arch_args::ArchArgs;
use crate::analysis::summary;

#[derive(clap::Args)]
#[command(
    after_help = "Examples:\n  resnet summary --arch resnet110\n  resnet summary --arch resnet34 --shortcut c\n  \
resnet summary --arch resnet50 --json | jq .flops\n\n\"flops\" counts forward multiply-adds for one image \
(convolutions + fc), as Table 1 of the paper does."
)]
pub struct Args {
    #[command(flatten)]
    arch: ArchArgs,
    /// Print one JSON object (params, flops, stages, resolved arch) instead of the table
    #[arg(long)]
    json: bool,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let (spec, size) = a.arch.resolve()?;
    let s = summary::summarize(&spec, size, size);
    if a.json {
        println!("{}", serde_json::to_string(&s)?);
    } else {
        print!("{}", summary::render(&s));
    }
    Ok(())
}
