//! Hot loops behind the layers, with run-time dispatch: an AVX-512 path
//! (stable `std::arch` intrinsics) where the CPU has it, and the portable
//! loops in `ops/` everywhere else. The path is chosen once per network
//! (`Path::detect`) and can be forced (`RESNET_KERNELS=portable`, or
//! `Net::path` in tests) so that both are tested against the same tolerances.

#[cfg(target_arch = "x86_64")]
pub mod avx512;

/// Which implementation of the hot loops runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Path {
    /// Auto-vectorised Rust, any CPU.
    Portable,
    /// AVX-512F register-blocked micro-kernels (x86-64 only).
    Avx512,
}

impl Path {
    /// The fastest path this CPU supports, unless `RESNET_KERNELS=portable`.
    pub fn detect() -> Path {
        if std::env::var("RESNET_KERNELS").is_ok_and(|v| v.eq_ignore_ascii_case("portable")) {
            return Path::Portable;
        }
        Self::best_supported()
    }

    /// The fastest path this CPU supports.
    pub fn best_supported() -> Path {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bw")
            && std::arch::is_x86_feature_detected!("avx512dq")
            && std::arch::is_x86_feature_detected!("avx512vl")
            && std::arch::is_x86_feature_detected!("fma")
        {
            return Path::Avx512;
        }
        Path::Portable
    }

    /// Every path this CPU can run (for tests).
    pub fn all_supported() -> Vec<Path> {
        let mut v = vec![Path::Portable];
        if Self::best_supported() != Path::Portable {
            v.push(Self::best_supported());
        }
        v
    }
}

/// Zeros that padded taps read from (longer than any channel count we run).
pub static ZEROS: [f32; 4096] = [0.0; 4096];

impl Path {
    /// `detect()`, computed once per process.
    pub fn cached() -> Path {
        static P: std::sync::OnceLock<Path> = std::sync::OnceLock::new();
        *P.get_or_init(Path::detect)
    }
}

/// Run `f` compiled for AVX-512 where the CPU has it: the closure is inlined
/// into a `#[target_feature]` function, so its loops auto-vectorise with
/// 16-lane registers. The arithmetic is the same source, and the compiler
/// never reassociates float operations, so both builds give identical bits.
#[inline(always)]
pub fn vectorized<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    if Path::cached() == Path::Avx512 {
        // SAFETY: Path::Avx512 is only chosen where the CPU has AVX-512F/BW/DQ/VL.
        return unsafe { with_avx512(f) };
    }
    f()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx2,fma")]
unsafe fn with_avx512<R>(f: impl FnOnce() -> R) -> R {
    f()
}
