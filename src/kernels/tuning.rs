//! What the direct kernels adapt to the CPU they run on, decided once per process
//! ([`Tuning::detected`]):
//! - the cache blocking, from the L2 size the CPU reports (CPUID 0x8000_0006, which AMD and Intel
//!   both fill): the blocks meant to stay in L2 are fractions of it. The AMD EPYC variant of the
//!   development machine has 1 MiB per core, where these fractions were measured; a Xeon with
//!   2 MiB gets blocks twice as large.
//! - the micro-kernel's pixel block on rows whose width 14 divides and whose source pixels have
//!   at most 292 channels (14 of them fit half of a 32 KiB L1), measured on this CPU: 8 pixels x
//!   32 channels (16 accumulators) or 14 x 32 (28 accumulators, fewer loads per FMA, more
//!   registers), whichever runs a representative 1x1 convolution faster (by 10% or more for the
//!   wider one, [`choose_pixels`]; the measurement takes a few milliseconds, at the first
//!   convolution). On the AMD EPYC (one 512-bit FMA unit per core) both run it at 97% of the
//!   one-thread peak, so 8 stays;
//!   a CPU with two FMA units per core needs twice the FMAs in flight, where 28 accumulators may
//!   pay (`resnet bench --fma-peak` prints both times).
//!
//! Every choice moves where blocks start, never the order of a sum, so all give the same bits
//! (ops/conv.rs tests it), and a run is reproducible bit for bit across CPUs that tune
//! differently. Blocks that cut a sum (the weight gradients' chunks of output rows) stay fixed. `RESNET_TUNING=l2=<KiB>,pixels=<8|14>` forces either part: a test and
//! benchmark aid; a value it cannot read is reported on stderr and the detected one runs.

use super::Avx512Cpu;
use std::cell::Cell;
use std::fmt;

/// The micro-kernel's pixel block on rows whose width 14 divides (ResNet-50's 112, 56, 28, 14).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pixels {
    Eight,
    Fourteen,
}

impl Pixels {
    pub fn count(self) -> usize {
        match self {
            Pixels::Eight => 8,
            Pixels::Fourteen => 14,
        }
    }
}

/// The kernels' CPU-dependent parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tuning {
    /// L2 bytes per core
    pub l2: usize,
    pub pixels: Pixels,
}

/// The L2 size assumed where the CPU reports none (the development machine's).
const DEFAULT_L2: usize = 1 << 20;

impl Tuning {
    /// What the kernels ran before this was measured: 8-pixel blocks, a 1 MiB L2.
    pub const BASELINE: Tuning = Tuning { l2: DEFAULT_L2, pixels: Pixels::Eight };

    /// Bytes of packed weights the direct kernel keeps in L2 across pixel blocks (half of it).
    pub fn weight_chunk(&self) -> usize {
        self.l2 / 2
    }

    /// Bytes of input a weight-gradient block keeps in L2 (a quarter of it).
    pub fn wgrad_input_block(&self) -> usize {
        self.l2 / 4
    }

    /// The tuning the kernels run with on this thread: one set by [`Tuning::with`], else this
    /// CPU's ([`Tuning::detected`]). Read where a convolution's geometry is made (in the calling
    /// thread), so it holds for every task of that convolution.
    pub fn current(cpu: Avx512Cpu) -> Tuning {
        FORCED.with(Cell::get).unwrap_or_else(|| Tuning::detected(cpu))
    }

    /// `f()` with the kernels of this thread's convolutions on `t` (the tests' way to force each).
    /// Only convolutions called on this thread: a network's pass runs on a pool worker
    /// ([`crate::par::on_pool`]), so a whole net is forced with `RESNET_TUNING`.
    pub fn with<R>(t: Tuning, f: impl FnOnce() -> R) -> R {
        let before = FORCED.with(|c| c.replace(Some(t)));
        let out = f();
        FORCED.with(|c| c.set(before));
        out
    }

    /// This CPU's tuning, once per process: `RESNET_TUNING`'s parts where given, the rest
    /// detected and measured.
    pub fn detected(cpu: Avx512Cpu) -> Tuning {
        Tuning::detected_with_probe(cpu).0
    }

    /// [`Tuning::detected`] and the measurement it chose the pixel block by (None where
    /// `RESNET_TUNING` forced the block): what `resnet bench --fma-peak` reports, so that the
    /// times it prints are the ones the process's choice was made on.
    pub fn detected_with_probe(cpu: Avx512Cpu) -> (Tuning, Option<Measured>) {
        static T: std::sync::OnceLock<(Tuning, Option<Measured>)> = std::sync::OnceLock::new();
        *T.get_or_init(|| {
            let setting = std::env::var("RESNET_TUNING").ok();
            let forced = setting.as_deref().map(parse).transpose().unwrap_or_else(|e| {
                eprintln!("warning: RESNET_TUNING ignored: {e}");
                None
            });
            let forced = forced.unwrap_or_default();
            let l2 = forced.l2.unwrap_or_else(l2_of_this_cpu);
            let (pixels, probe) = match forced.pixels {
                Some(pixels) => (pixels, None),
                None => {
                    let m = measure_pixels(cpu, l2);
                    (m.choice, Some(m))
                }
            };
            (Tuning { l2, pixels }, probe)
        })
    }
}

impl fmt::Display for Tuning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "L2 {} KiB, {}-pixel tiles", self.l2 >> 10, self.pixels.count())
    }
}

thread_local! {
    static FORCED: Cell<Option<Tuning>> = const { Cell::new(None) };
}

/// The parts of a `RESNET_TUNING` value.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Setting {
    pub l2: Option<usize>,
    pub pixels: Option<Pixels>,
}

/// `l2=<KiB>` (64 to 65536) and / or `pixels=<8|14>`, comma-separated.
pub fn parse(s: &str) -> Result<Setting, String> {
    let mut out = Setting::default();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (key, value) = part.split_once('=').ok_or_else(|| format!("'{part}' is not key=value"))?;
        match key.trim() {
            "l2" => {
                let kib: usize = value.trim().parse().map_err(|_| format!("l2 '{value}' is not a number of KiB"))?;
                if !(64..=65536).contains(&kib) {
                    return Err(format!("l2 {kib} KiB is outside 64..=65536"));
                }
                out.l2 = Some(kib << 10);
            }
            "pixels" => {
                out.pixels = Some(match value.trim() {
                    "8" => Pixels::Eight,
                    "14" => Pixels::Fourteen,
                    v => return Err(format!("pixels '{v}' is not 8 or 14")),
                })
            }
            k => return Err(format!("unknown key '{k}' (l2, pixels)")),
        }
    }
    Ok(out)
}

/// The L2 bytes per core CPUID reports (leaf 0x8000_0006, ECX bits 31..16 in KiB), within
/// 128 KiB..=16 MiB; [`DEFAULT_L2`] where it reports nothing usable.
fn l2_of_this_cpu() -> usize {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::__cpuid;
        // leaf 0x8000_0006 exists where the highest extended leaf reaches it
        if __cpuid(0x8000_0000).eax >= 0x8000_0006 {
            let kib = (__cpuid(0x8000_0006).ecx >> 16) as usize;
            if (128..=16 << 10).contains(&kib) {
                return kib << 10;
            }
        }
    }
    DEFAULT_L2
}

/// What [`measure_pixels`] saw: the best of its rounds per pixel block, in seconds.
#[derive(Clone, Copy, Debug)]
pub struct Measured {
    pub eight: f64,
    pub fourteen: f64,
    pub choice: Pixels,
}

/// The pixel block for the best times `eight` and `fourteen` of [`measure_pixels`]: 14 only where
/// it is at least 10% faster. On the whole shapes of ResNet-50 the 14-pixel block ran 9-25% slower
/// than 8 on most and 3% faster on one (the AMD EPYC machine), so a small edge on the probe does not
/// pay; and with a 3% margin, run-to-run noise (both at 0.52 ms there) picked 14 in about one process
/// in six, and that process ran its network 1-3% slower.
pub fn choose_pixels(eight: f64, fourteen: f64) -> Pixels {
    if fourteen < 0.9 * eight { Pixels::Fourteen } else { Pixels::Eight }
}

/// Time the direct kernel with each pixel block on a 1x1 convolution of 256 -> 256 channels over
/// 8 rows of 56 pixels (59 MFLOP, in this thread), alternating which goes first, best of 9 each;
/// the choice is [`choose_pixels`]'s.
pub fn measure_pixels(cpu: Avx512Cpu, l2: usize) -> Measured {
    use super::avx512::{Dst, Gather, gather_rows, pack_block};
    let (rows, width, c) = (8, 56, 256);
    let g = |pixels| Gather {
        k: 1,
        stride: 1,
        pad: 0,
        transposed: false,
        sh: rows,
        sw: width,
        cs: c,
        oh: rows,
        ow: width,
        co: c,
        flat_rows: true,
        tune: Tuning { l2, pixels },
    };
    let x: Vec<f32> = (0..rows * width * c).map(|i| (i % 7) as f32 * 0.25 - 0.75).collect();
    let w: Vec<f32> = (0..c * c).map(|i| (i % 5) as f32 * 0.125 - 0.25).collect();
    let mut packed = vec![0.0; c * c];
    for (b, block) in packed.chunks_mut(32 * c).enumerate() {
        pack_block(&w, c, c, b, block);
    }
    let mut y = vec![0.0f32; rows * width * c];
    let epi = super::Epilogue::default();
    let mut run = |pixels| {
        let dst = Dst { ptr: y.as_mut_ptr(), first_row: 0, nrows: rows, c0: 0, c1: c, stream: false };
        let t = std::time::Instant::now();
        // SAFETY: `cpu` proves the features; x holds the 8 x 56 pixels of 256 channels the geometry
        // reads, `packed` its weights, y its outputs, written by this call only.
        unsafe { gather_rows(cpu, &g(pixels), &packed, &x, dst, false, &epi) };
        t.elapsed().as_secs_f64()
    };
    let (mut eight, mut fourteen) = (f64::INFINITY, f64::INFINITY);
    run(Pixels::Eight); // warm the caches and the code
    for round in 0..9 {
        if round % 2 == 0 {
            eight = eight.min(run(Pixels::Eight));
            fourteen = fourteen.min(run(Pixels::Fourteen));
        } else {
            fourteen = fourteen.min(run(Pixels::Fourteen));
            eight = eight.min(run(Pixels::Eight));
        }
    }
    let choice = choose_pixels(eight, fourteen);
    Measured { eight, fourteen, choice }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_are_read_or_refused_by_name() {
        assert_eq!(parse("").unwrap(), Setting::default());
        assert_eq!(parse("l2=2048").unwrap(), Setting { l2: Some(2 << 20), pixels: None });
        assert_eq!(
            parse(" pixels=14 , l2=512").unwrap(),
            Setting { l2: Some(512 << 10), pixels: Some(Pixels::Fourteen) }
        );
        assert_eq!(parse("pixels=8").unwrap().pixels, Some(Pixels::Eight));
        for (bad, says) in [
            ("pixels=12", "not 8 or 14"),
            ("l2=big", "not a number"),
            ("l2=16", "outside"),
            ("cores=2", "unknown key 'cores'"),
            ("pixels", "not key=value"),
        ] {
            let e = parse(bad).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn the_wider_pixel_block_needs_a_clear_win() {
        // this machine's probe: both blocks at 0.52 ms, a few percent apart from run to run
        for fourteen in [0.521, 0.505, 0.490, 0.530] {
            assert_eq!(choose_pixels(0.521, fourteen), Pixels::Eight, "{fourteen}");
        }
        assert_eq!(choose_pixels(0.521, 0.460), Pixels::Fourteen);
    }

    #[test]
    fn blocks_are_fractions_of_the_l2() {
        let t = Tuning { l2: 2 << 20, pixels: Pixels::Eight };
        assert_eq!((t.weight_chunk(), t.wgrad_input_block()), (1 << 20, 512 << 10));
        // the development machine's values before they were derived from the L2
        let b = Tuning::BASELINE;
        assert_eq!((b.weight_chunk(), b.wgrad_input_block()), (512 << 10, 256 << 10));
        assert_eq!(t.to_string(), "L2 2048 KiB, 8-pixel tiles");
    }

    #[test]
    fn this_cpu_reports_an_l2_in_range() {
        let l2 = l2_of_this_cpu();
        assert!((128 << 10..=16 << 20).contains(&l2), "{l2}");
    }

    #[test]
    fn a_forced_tuning_holds_in_its_scope_only() {
        let Some(cpu) = crate::kernels::KernelPath::best_supported().avx512() else {
            return; // nothing to tune on a CPU without the AVX-512 kernels
        };
        let forced = Tuning { l2: 256 << 10, pixels: Pixels::Fourteen };
        let detected = Tuning::current(cpu);
        assert_eq!(Tuning::with(forced, || Tuning::current(cpu)), forced);
        assert_eq!(Tuning::with(forced, || Tuning::with(Tuning::BASELINE, || Tuning::current(cpu))), Tuning::BASELINE);
        assert_eq!(Tuning::current(cpu), detected);
        // the measurement reported is the one the process chose by (where nothing was forced)
        let (tuning, probe) = Tuning::detected_with_probe(cpu);
        assert_eq!(tuning, detected);
        if std::env::var("RESNET_TUNING").is_err() {
            let probe = probe.expect("a detected pixel block was measured");
            assert_eq!(probe.choice, tuning.pixels);
            assert_eq!(choose_pixels(probe.eight, probe.fourteen), probe.choice);
        }
        let m = measure_pixels(cpu, detected.l2);
        assert!(m.eight > 0.0 && m.fourteen > 0.0 && m.eight.is_finite() && m.fourteen.is_finite());
    }
}
