//! `resnet bench`: time steps on random data.

use super::arch_args::ArchOpts;
use crate::bench::{self, Mode};
use clap::ValueEnum;
use std::io::IsTerminal;

#[derive(Copy, Clone, ValueEnum)]
enum ModeArg {
    Train,
    Infer,
}

#[derive(clap::Args)]
#[command(after_help = "Examples:\n  resnet bench --arch resnet20 --batch 128 --steps 20\n  \
resnet bench --arch resnet50 --stride-in 3x3 --mode infer --batch 16 --steps 5 --json\n\n\
A training step is forward (batch statistics) + softmax cross-entropy + backward + SGD update. \
\"gflops\" counts 2 FLOPs per multiply-add and a training step as 3 forward passes.")]
pub struct Args {
    /// Network: resnetD or plainD; D = 6n+2 (20, 32, 44, 56, 110, 1202, ...) for CIFAR,
    /// 18/34/50/101/152 for ImageNet
    #[arg(long, short = 'a', required_unless_present = "fma_peak")]
    arch: Option<String>,
    #[command(flatten)]
    opts: ArchOpts,
    /// Images per step
    #[arg(long, short = 'b', default_value_t = 128)]
    batch: usize,
    /// Timed steps
    #[arg(long, short = 's', default_value_t = 20)]
    steps: usize,
    /// Untimed steps first
    #[arg(long, short = 'w', default_value_t = 3)]
    warmup: usize,
    #[arg(long, value_enum, default_value_t = ModeArg::Train)]
    mode: ModeArg,
    /// Worker threads (default: every core)
    #[arg(long, short = 't')]
    threads: Option<usize>,
    /// Print one JSON object (img_per_s, ms_per_step, gflops, peak_rss_mib, ...)
    #[arg(long)]
    json: bool,
    /// Also time each kind of operation and each convolution by shape (adds a little overhead) and print ms per step for each
    #[arg(long)]
    profile: bool,
    /// Under mpiexec: overlap the gradient all-reduce with backward (a thread per rank) instead of
    /// running it after backward
    #[arg(long)]
    overlap: bool,
    /// Measure the CPU's fp32 FMA peak instead (a bare loop of independent
    /// 512-bit FMAs on one thread and on every thread) and print it
    #[arg(long)]
    fma_peak: bool,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    if a.fma_peak {
        let threads = a.threads.unwrap_or_else(crate::par::threads);
        let p = bench::fma_peak(threads).ok_or_else(|| anyhow::anyhow!("--fma-peak needs a CPU with AVX-512"))?;
        if a.json {
            println!("{}", serde_json::to_string(&p)?);
        } else {
            println!(
                "{}: fp32 FMA peak {:.1} GFLOP/s on 1 thread, {:.1} on {} threads",
                p.cpu, p.gflops_one_thread, p.gflops_all_threads, p.threads
            );
            println!(
                "kernels: {} (direct 1x1 256->256 over 448 pixels, one thread: 8-pixel tiles {:.3} ms, 14-pixel {:.3} ms)",
                p.tuning, p.tile_ms[0], p.tile_ms[1]
            );
        }
        return Ok(());
    }
    let (spec, size) = a.opts.resolve(a.arch.as_deref().unwrap_or_default())?;
    if a.batch == 0 {
        anyhow::bail!("--batch must be at least 1");
    }
    if a.steps == 0 {
        anyhow::bail!("--steps must be at least 1");
    }
    if let Some(t) = a.threads {
        if t == 0 {
            anyhow::bail!("--threads must be at least 1");
        }
        crate::par::set_threads(t)?;
    }
    let mode = match a.mode {
        ModeArg::Train => Mode::Train,
        ModeArg::Infer => Mode::Infer,
    };
    crate::profile::enable(a.profile);
    // under mpiexec (built with the `mpi` feature): the job's throughput, the batch split over the ranks
    #[cfg(feature = "mpi")]
    let session = if crate::mpi_comm::launched() { Some(crate::mpi_comm::init()?) } else { None };
    #[cfg(feature = "mpi")]
    let group: &dyn crate::train::Collective = match &session {
        Some(s) => s.group.as_ref(),
        None => &crate::train::Solo,
    };
    #[cfg(not(feature = "mpi"))]
    let group: &dyn crate::train::Collective = &crate::train::Solo;
    let lead = group.rank() == 0;
    let show = lead && !a.json && std::io::stderr().is_terminal();
    let r = bench::run_in(&spec, a.batch, size, mode, (a.steps, a.warmup), (group, a.overlap), |s, n| {
        if show {
            eprint!("\rstep {s}/{n}");
        }
    })?;
    if !lead {
        return Ok(());
    }
    if show {
        eprintln!();
    }
    if a.json {
        println!("{}", serde_json::to_string(&r)?);
    } else {
        println!(
            "{} {:?} batch {} input {}x{}x{}, {} threads, {}{}: {:.1} img/s, {:.1} ms/step (median {:.1}), {:.1} GFLOP/s, peak RSS {:.0} MiB",
            r.arch,
            r.mode,
            r.batch,
            r.input[0],
            r.input[1],
            r.input[2],
            r.threads,
            r.cpu,
            r.tuning.as_ref().map(|t| format!(" ({t})")).unwrap_or_default(),
            r.img_per_s,
            r.ms_per_step,
            r.ms_per_step_median,
            r.gflops,
            r.peak_rss_mib
        );
        if r.world > 1 {
            println!(
                "  {} processes x batch {}: all-reduce {:.1} ms/step ({:.0}% of the step), {:.1} ms hidden behind backward",
                r.world,
                r.batch / r.world,
                r.allreduce_ms_per_step,
                100.0 * r.allreduce_ms_per_step / r.ms_per_step,
                r.allreduce_hidden_ms_per_step
            );
        }
        for (op, ms) in &r.profile_ms {
            println!("  {op:<20} {ms:8.1} ms/step");
        }
        if !r.profile_shapes.is_empty() {
            println!("  by shape (calls per step):");
            for (label, ms, calls) in &r.profile_shapes {
                println!("    {label:<44} {ms:8.1} ms/step ({calls:.0})");
            }
        }
    }
    Ok(())
}
