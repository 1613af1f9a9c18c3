//! Throughput benchmark on random data: the engine's own timing harness.

use crate::arch::ArchSpec;
use crate::backend::Backend;
use crate::net::{BuildError, Net};
use crate::optim::Sgd;
use crate::rng::counter_uniform;
use crate::train::parallel::{self, Collective, Solo};
use serde::Serialize;
use std::time::Instant;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// forward (batch statistics) + loss + backward + SGD step
    Train,
    /// forward with running statistics
    Infer,
}

#[derive(Serialize, Debug)]
pub struct BenchResult {
    /// the CPU it ran on (`/proc/cpuinfo`'s model name): every benchmark line names it
    pub cpu: String,
    /// the kernels' per-CPU blocking and pixel block (`kernels::Tuning`); none on the portable path
    pub tuning: Option<String>,
    pub arch: String,
    pub mode: Mode,
    pub batch: usize,
    pub input: [usize; 3],
    pub threads: usize,
    pub steps: usize,
    pub warmup: usize,
    pub img_per_s: f64,
    pub ms_per_step: f64,
    /// median step time
    pub ms_per_step_median: f64,
    /// achieved GFLOP/s, counting 2 FLOPs per multiply-add and a training
    /// step as 3 forward passes (forward, backward-data, backward-weights)
    pub gflops: f64,
    pub peak_rss_mib: f64,
    /// data-parallel processes the batch is split over (batch / world images each)
    pub world: usize,
    /// time per step averaging the gradients across the processes (includes waiting for the slowest)
    pub allreduce_ms_per_step: f64,
    /// how much of it ran hidden behind backward (none when the all-reduce follows backward)
    pub allreduce_hidden_ms_per_step: f64,
    /// whether the all-reduce overlapped backward
    pub overlap: bool,
    /// milliseconds per step by operation (with profiling on)
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub profile_ms: Vec<(String, f64)>,
    /// with profiling on, the convolutions by operation and shape: (label, ms per step, calls per
    /// step), slowest first
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub profile_shapes: Vec<(String, f64, f64)>,
}

/// Peak resident memory of this process so far (Linux VmHWM), MiB.
pub fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(f64::NAN)
}

/// Seconds of the fastest of `reps` calls of `f`, after one untimed call (the micro-benchmarks:
/// examples/conv_bench, layout_bench, mem_bench).
pub fn best_of(reps: usize, mut f: impl FnMut()) -> f64 {
    f();
    (0..reps)
        .map(|_| {
            let t = std::time::Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min)
}

/// The kernels' tuning on this CPU ("L2 1024 KiB, 8-pixel tiles"), where the AVX-512 kernels run.
pub fn kernel_tuning() -> Option<String> {
    #[cfg(target_arch = "x86_64")]
    if let Some(cpu) = crate::kernels::KernelPath::cached().avx512() {
        return Some(crate::kernels::Tuning::detected(cpu).to_string());
    }
    None
}

/// The CPU's model name as `/proc/cpuinfo` gives it ("unknown CPU" elsewhere).
pub fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("model name")).and_then(|l| Some(l.split_once(':')?.1.trim().to_string()))
        })
        .unwrap_or_else(|| "unknown CPU".to_string())
}

/// The fp32 FMA peak measured with a bare loop of independent 512-bit FMAs.
#[derive(Serialize, Debug, Clone)]
pub struct FmaPeak {
    pub cpu: String,
    /// one thread, best of 5 runs of about 0.1 s
    pub gflops_one_thread: f64,
    /// every thread at once (the sum of their rates), best of 5
    pub gflops_all_threads: f64,
    pub threads: usize,
    /// the kernels' tuning on this CPU, and a fresh run of the measurement that picks its pixel
    /// block: the direct kernel's best time with 8- and 14-pixel tiles, milliseconds
    pub tuning: String,
    pub tile_ms: [f64; 2],
}

/// Measure [`FmaPeak`] on `threads` threads; None where the CPU has no AVX-512.
pub fn fma_peak(threads: usize) -> Option<FmaPeak> {
    #[cfg(target_arch = "x86_64")]
    {
        use crate::kernels::avx512::{CHAINS, fma_loop};
        let cpu = crate::kernels::KernelPath::cached().avx512()?;
        let iters = 2_000_000u64;
        let flops = (iters * CHAINS as u64 * 32) as f64;
        // one timed loop on each of `n` threads started together; the sum of their rates
        let rate = |n: usize| -> f64 {
            let barrier = std::sync::Barrier::new(n);
            std::thread::scope(|s| {
                let runs: Vec<_> = (0..n)
                    .map(|_| {
                        s.spawn(|| {
                            barrier.wait();
                            let t = Instant::now();
                            std::hint::black_box(fma_loop(cpu, std::hint::black_box(iters)));
                            flops / t.elapsed().as_secs_f64() / 1e9
                        })
                    })
                    .collect();
                runs.into_iter().map(|r| r.join().unwrap_or(0.0)).sum()
            })
        };
        let best = |n: usize| (0..5).map(|_| rate(n)).fold(0.0, f64::max);
        let one = best(1);
        // the times the process chose its pixel block by; measured here where it was forced
        let (tuning, probe) = crate::kernels::Tuning::detected_with_probe(cpu);
        let m = probe.unwrap_or_else(|| crate::kernels::tuning::measure_pixels(cpu, tuning.l2));
        Some(FmaPeak {
            cpu: cpu_model(),
            gflops_one_thread: one,
            gflops_all_threads: best(threads.max(1)),
            threads,
            tuning: tuning.to_string(),
            tile_ms: [m.eight * 1e3, m.fourteen * 1e3],
        })
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = threads;
        None
    }
}

/// Build `spec` for `batch` images of `size` x `size` and time `steps` steps after `warmup`.
/// `progress` is called after each step with (step, total).
pub fn run(
    spec: &ArchSpec,
    batch: usize,
    size: usize,
    mode: Mode,
    steps: usize,
    warmup: usize,
    progress: impl FnMut(usize, usize),
) -> Result<BenchResult, BuildError> {
    run_in(spec, batch, size, mode, (steps, warmup), (&Solo, false), progress)
}

/// [`run`] on rank `group.rank()` of a data-parallel job: `batch` is the global batch, each rank
/// computes `batch / world` images and the gradients are averaged across the ranks, overlapped
/// with backward if `overlap` (and the transport can), else after it. The result is the job's:
/// img/s of the global batch, the all-reduce's time and how much of it backward hid.
pub fn run_in(
    spec: &ArchSpec,
    global: usize,
    size: usize,
    mode: Mode,
    (steps, warmup): (usize, usize),
    (group, overlap): (&dyn Collective, bool),
    mut progress: impl FnMut(usize, usize),
) -> Result<BenchResult, BuildError> {
    let world = group.size();
    if !global.is_multiple_of(world) {
        return Err(BuildError::Invalid(format!(
            "the global batch {global} does not split evenly over {world} processes: use a multiple of {world}"
        )));
    }
    let batch = global / world;
    let train = mode == Mode::Train;
    let net = Net::new(spec, batch, size, size, train, 0)?;
    let (macs, n_params) = (net.plan.macs() as f64, net.params().len());
    let mut net: Box<dyn Backend> = Box::new(net);
    for (i, v) in net.input_mut().iter_mut().enumerate() {
        *v = 2.0 * counter_uniform("bench/input", i as u64) - 1.0;
    }
    let labels: Vec<u32> =
        (0..batch).map(|i| (counter_uniform("bench/labels", i as u64) * spec.classes as f32) as u32).collect();
    let mut sgd = if train { Some(Sgd::new(n_params)) } else { None };
    let mut times = Vec::with_capacity(steps);
    let mut reduce = parallel::ReduceTime::default();
    let mut scratch = vec![];
    let mut background = if overlap && train && world > 1 { group.overlap(false) } else { None };
    for s in 0..warmup + steps {
        let t = Instant::now();
        net.forward(batch, train);
        if let Some(sgd) = sgd.as_mut() {
            let (busy, exposed) = match background.as_mut() {
                Some(b) => {
                    let mut pending = b.step(n_params, world);
                    net.loss_backward_with(&labels, &mut |from, tail| pending.ready(from, tail));
                    pending.finish(net.grads_mut())
                }
                None => {
                    net.loss_backward(&labels);
                    let r = Instant::now();
                    if world > 1 {
                        parallel::average_gradients(group, net.grads_mut(), &mut scratch, false);
                    }
                    let e = r.elapsed().as_secs_f64();
                    (e, e)
                }
            };
            if s >= warmup {
                reduce.busy += busy;
                reduce.exposed += exposed;
            }
            net.sgd_step(sgd, 0.01);
        }
        if s + 1 == warmup {
            crate::profile::take();
            crate::profile::take_labelled();
        }
        if s >= warmup {
            times.push(t.elapsed().as_secs_f64());
        }
        progress(s + 1, warmup + steps);
    }
    let total: f64 = times.iter().sum();
    let mean = total / steps.max(1) as f64;
    let mut sorted = times.clone();
    sorted.sort_by(|a, b| a.total_cmp(b));
    let median = sorted.get(sorted.len() / 2).copied().unwrap_or(f64::NAN);
    let img_per_s = global as f64 / mean;
    Ok(BenchResult {
        cpu: cpu_model(),
        tuning: kernel_tuning(),
        arch: spec.name.clone(),
        mode,
        batch: global,
        input: [size, size, spec.in_channels],
        threads: crate::par::threads(),
        steps,
        warmup,
        img_per_s,
        ms_per_step: mean * 1e3,
        ms_per_step_median: median * 1e3,
        gflops: macs * 2.0 * if train { 3.0 } else { 1.0 } * img_per_s / 1e9,
        peak_rss_mib: peak_rss_mib(),
        world,
        allreduce_ms_per_step: reduce.busy * 1e3 / steps.max(1) as f64,
        overlap: background.is_some(),
        allreduce_hidden_ms_per_step: (reduce.busy - reduce.exposed).max(0.0) * 1e3 / steps.max(1) as f64,
        profile_ms: crate::profile::take()
            .into_iter()
            .filter(|(_, s)| *s > 0.0)
            .map(|(op, s)| (format!("{op:?}"), s * 1e3 / steps as f64))
            .collect(),
        profile_shapes: {
            let per_step = |v: f64| v / steps.max(1) as f64;
            let mut v: Vec<_> = crate::profile::take_labelled()
                .into_iter()
                .map(|(label, s, calls)| (label, per_step(s * 1e3), per_step(calls as f64)))
                .collect();
            v.sort_by(|a, b| b.1.total_cmp(&a.1));
            v
        },
    })
}
