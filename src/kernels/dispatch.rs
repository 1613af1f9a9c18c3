//! Which kernels run, and the proof that this CPU can run them.
//!
//! The AVX-512 kernels are compiled with `#[target_feature]`: run on a CPU
//! without those features they are undefined behaviour (in practice SIGILL).
//! So the paths that run them carry an [`Avx512Cpu`], a token whose field is
//! private to this module, which makes one only from features detected at
//! run time. Safe code can name [`KernelPath::Portable`], or get a SIMD path
//! from [`KernelPath::detect`] / [`KernelPath::checked`], and nothing else;
//! a kernel that takes the token needs no other word about the CPU.

use std::fmt;

/// The features the AVX-512 kernels are compiled for (the `#[target_feature]`
/// lists of `avx512.rs`, `winograd.rs` and `par::vectorized`).
pub const AVX512_FEATURES: [&str; 6] = ["avx512f", "avx512bw", "avx512dq", "avx512vl", "avx2", "fma"];

/// A kernel path by name — what `RESNET_KERNELS` or a caller asks for — not
/// yet checked against the CPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KernelKind {
    /// Auto-vectorised Rust, any CPU.
    Portable,
    /// AVX-512 register-blocked micro-kernels, direct convolution (x86-64 only).
    Avx512,
    /// `Avx512` plus Winograd for 3x3 / stride-1 convolutions: F(4x4, 3x3) tiles where they
    /// pay, F(2x2, 3x3) elsewhere (the default where it runs).
    Winograd,
    /// `Winograd` with F(2x2, 3x3) tiles only (the smaller rounding error; a test and benchmark aid).
    WinogradF2,
}

impl KernelKind {
    pub const ALL: [KernelKind; 4] =
        [KernelKind::Portable, KernelKind::Avx512, KernelKind::Winograd, KernelKind::WinogradF2];

    /// The name `RESNET_KERNELS` takes.
    pub fn name(self) -> &'static str {
        match self {
            KernelKind::Portable => "portable",
            KernelKind::Avx512 => "avx512",
            KernelKind::Winograd => "winograd",
            KernelKind::WinogradF2 => "winograd-f2",
        }
    }

    /// Whether this path runs the AVX-512 kernels.
    pub fn needs_avx512(self) -> bool {
        self != KernelKind::Portable
    }
}

impl fmt::Display for KernelKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for KernelKind {
    type Err = KernelsError;
    /// `portable`, `avx512`, `winograd` or `winograd-f2`, in any case.
    fn from_str(s: &str) -> Result<KernelKind, KernelsError> {
        let lower = s.trim().to_ascii_lowercase();
        KernelKind::ALL.into_iter().find(|k| k.name() == lower).ok_or_else(|| KernelsError::Unknown(s.to_string()))
    }
}

/// Proof that this process runs on a CPU with every feature of
/// [`AVX512_FEATURES`]. The private field keeps anyone outside this module
/// from making one; this module makes one only in [`CpuFeatures::avx512`],
/// from features detected at run time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Avx512Cpu {
    _detected: (),
}

/// The features of this CPU the kernels care about, as detected at run time.
/// Features can be taken away ([`CpuFeatures::without`], to see what a lesser
/// CPU would get) but never added, so an [`Avx512Cpu`] made from one is sound.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CpuFeatures {
    /// `has[i]`: the CPU has `AVX512_FEATURES[i]`
    has: [bool; AVX512_FEATURES.len()],
}

impl CpuFeatures {
    /// What this CPU has.
    pub fn detect() -> CpuFeatures {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::is_x86_feature_detected as has;
            // the order of AVX512_FEATURES (the macro takes literals only)
            let has =
                [has!("avx512f"), has!("avx512bw"), has!("avx512dq"), has!("avx512vl"), has!("avx2"), has!("fma")];
            CpuFeatures { has }
        }
        #[cfg(not(target_arch = "x86_64"))]
        CpuFeatures::none()
    }

    /// A CPU with none of the features: what runs on any CPU.
    pub fn none() -> CpuFeatures {
        CpuFeatures { has: [false; AVX512_FEATURES.len()] }
    }

    /// These features less `feature` (one of [`AVX512_FEATURES`]; panics on another name).
    pub fn without(self, feature: &str) -> CpuFeatures {
        let i = AVX512_FEATURES
            .iter()
            .position(|f| *f == feature)
            .unwrap_or_else(|| panic!("'{feature}' is not one of {AVX512_FEATURES:?}"));
        let mut has = self.has;
        has[i] = false;
        CpuFeatures { has }
    }

    /// The features `kind` needs that this CPU lacks (empty: it runs).
    pub fn missing_for(&self, kind: KernelKind) -> Vec<&'static str> {
        if !kind.needs_avx512() {
            return vec![];
        }
        AVX512_FEATURES.iter().zip(self.has).filter(|(_, has)| !has).map(|(f, _)| *f).collect()
    }

    /// The proof token, where every feature the AVX-512 kernels need is here.
    fn avx512(&self) -> Option<Avx512Cpu> {
        self.has.iter().all(|&h| h).then_some(Avx512Cpu { _detected: () })
    }
}

/// A kernel path this CPU runs: the SIMD ones hold the proof.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum KernelPath {
    /// Auto-vectorised Rust, any CPU.
    Portable,
    /// AVX-512 direct convolutions.
    Avx512(Avx512Cpu),
    /// AVX-512 plus Winograd where it pays, F(4x4, 3x3) tiles where those pay.
    Winograd(Avx512Cpu),
    /// AVX-512 plus Winograd F(2x2, 3x3) only.
    WinogradF2(Avx512Cpu),
}

impl KernelPath {
    /// `wanted` if `cpu` runs it, else an error naming the features it lacks.
    pub fn checked(wanted: KernelKind, cpu: &CpuFeatures) -> Result<KernelPath, KernelsError> {
        match (wanted, cpu.avx512()) {
            (KernelKind::Portable, _) => Ok(KernelPath::Portable),
            (KernelKind::Avx512, Some(proof)) => Ok(KernelPath::Avx512(proof)),
            (KernelKind::Winograd, Some(proof)) => Ok(KernelPath::Winograd(proof)),
            (KernelKind::WinogradF2, Some(proof)) => Ok(KernelPath::WinogradF2(proof)),
            (_, None) => Err(KernelsError::Unsupported { wanted, missing: cpu.missing_for(wanted) }),
        }
    }

    /// The fastest path `cpu` runs.
    pub fn best(cpu: &CpuFeatures) -> KernelPath {
        cpu.avx512().map_or(KernelPath::Portable, KernelPath::Winograd)
    }

    /// The fastest path this CPU runs.
    pub fn best_supported() -> KernelPath {
        KernelPath::best(&CpuFeatures::detect())
    }

    /// Every path this CPU runs, portable first (the tests run each).
    pub fn all_supported() -> Vec<KernelPath> {
        let cpu = CpuFeatures::detect();
        KernelKind::ALL.into_iter().filter_map(|k| KernelPath::checked(k, &cpu).ok()).collect()
    }

    /// The path a `RESNET_KERNELS` value selects on `cpu`: none, the fastest;
    /// else the one named, if `cpu` runs it.
    pub fn from_setting(setting: Option<&str>, cpu: &CpuFeatures) -> Result<KernelPath, KernelsError> {
        match setting {
            None => Ok(KernelPath::best(cpu)),
            Some(name) => KernelPath::checked(name.parse()?, cpu),
        }
    }

    /// The fastest path this CPU runs, unless `RESNET_KERNELS` names another
    /// (`portable`, `avx512` = direct convolutions only, `winograd`, `winograd-f2` = no
    /// F(4x4) tiles). A name
    /// this CPU cannot run, or no name at all, falls back to the fastest path
    /// with a warning on stderr: forcing is a test and benchmark aid, and the
    /// warning says what runs instead.
    pub fn detect() -> KernelPath {
        let cpu = CpuFeatures::detect();
        let setting = std::env::var("RESNET_KERNELS").ok();
        KernelPath::from_setting(setting.as_deref(), &cpu).unwrap_or_else(|e| {
            let best = KernelPath::best(&cpu);
            eprintln!("warning: RESNET_KERNELS ignored: {e}; running the {best} kernels");
            best
        })
    }

    /// [`KernelPath::detect`], once per process.
    pub fn cached() -> KernelPath {
        static P: std::sync::OnceLock<KernelPath> = std::sync::OnceLock::new();
        *P.get_or_init(KernelPath::detect)
    }

    /// This path's name.
    pub fn kind(self) -> KernelKind {
        match self {
            KernelPath::Portable => KernelKind::Portable,
            KernelPath::Avx512(_) => KernelKind::Avx512,
            KernelPath::Winograd(_) => KernelKind::Winograd,
            KernelPath::WinogradF2(_) => KernelKind::WinogradF2,
        }
    }

    /// The proof that the AVX-512 kernels may run, on the paths that run them.
    pub fn avx512(self) -> Option<Avx512Cpu> {
        match self {
            KernelPath::Portable => None,
            KernelPath::Avx512(proof) | KernelPath::Winograd(proof) | KernelPath::WinogradF2(proof) => Some(proof),
        }
    }

    /// Whether this path runs Winograd convolutions where they apply.
    pub fn winograd(self) -> bool {
        matches!(self, KernelPath::Winograd(_) | KernelPath::WinogradF2(_))
    }

    /// Whether this path may run Winograd's F(4x4, 3x3) tiles.
    pub fn large_tiles(self) -> bool {
        matches!(self, KernelPath::Winograd(_))
    }

    /// Whether this path runs the AVX-512 kernels.
    pub fn simd(self) -> bool {
        self.avx512().is_some()
    }
}

/// Printed by name (`Winograd`): the token says nothing.
impl fmt::Debug for KernelPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.kind(), f)
    }
}

impl fmt::Display for KernelPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.kind().name())
    }
}

/// A kernel path that cannot be selected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KernelsError {
    /// Not one of the names.
    Unknown(String),
    /// This CPU lacks `missing`.
    Unsupported { wanted: KernelKind, missing: Vec<&'static str> },
}

impl fmt::Display for KernelsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KernelsError::Unknown(s) => {
                write!(f, "unknown kernel path '{s}' (portable, avx512, winograd or winograd-f2)")
            }
            KernelsError::Unsupported { wanted, missing } => {
                write!(f, "the {wanted} kernels need CPU features this CPU lacks: {}", missing.join(", "))
            }
        }
    }
}

impl std::error::Error for KernelsError {}

#[cfg(test)]
mod tests {
    use super::*;

    /// A CPU with every feature is simulated only by this one, where it has them.
    fn full() -> Option<CpuFeatures> {
        let cpu = CpuFeatures::detect();
        cpu.avx512().map(|_| cpu)
    }

    #[test]
    fn a_path_the_cpu_lacks_is_refused_naming_the_missing_features() {
        let none = CpuFeatures::none();
        assert_eq!(KernelPath::checked(KernelKind::Portable, &none), Ok(KernelPath::Portable));
        for wanted in [KernelKind::Avx512, KernelKind::Winograd, KernelKind::WinogradF2] {
            let e = KernelPath::checked(wanted, &none).unwrap_err();
            assert_eq!(e, KernelsError::Unsupported { wanted, missing: AVX512_FEATURES.to_vec() });
            assert_eq!(
                e.to_string(),
                format!(
                    "the {wanted} kernels need CPU features this CPU lacks: avx512f, avx512bw, avx512dq, avx512vl, avx2, fma"
                )
            );
        }
        // one feature short of the full set (on any CPU: detected features only shrink)
        let cpu = CpuFeatures::detect().without("avx512bw");
        let e = KernelPath::checked(KernelKind::Winograd, &cpu).unwrap_err();
        let KernelsError::Unsupported { missing, .. } = &e else { panic!("{e}") };
        assert!(missing.contains(&"avx512bw"), "{e}");
        assert_eq!(KernelPath::best(&cpu), KernelPath::Portable);
    }

    #[test]
    fn a_cpu_with_the_features_runs_every_path() {
        let Some(cpu) = full() else {
            eprintln!("this CPU lacks AVX-512: only the refusals are tested");
            return;
        };
        for kind in KernelKind::ALL {
            assert_eq!(KernelPath::checked(kind, &cpu).map(KernelPath::kind), Ok(kind));
        }
        assert_eq!(KernelPath::best(&cpu).kind(), KernelKind::Winograd);
        assert_eq!(KernelPath::all_supported().len(), 4);
    }

    #[test]
    fn the_setting_names_a_path_or_is_refused() {
        let none = CpuFeatures::none();
        assert_eq!(KernelPath::from_setting(None, &none), Ok(KernelPath::Portable));
        assert_eq!(KernelPath::from_setting(Some(" Portable "), &none), Ok(KernelPath::Portable));
        let e = KernelPath::from_setting(Some("avx2"), &none).unwrap_err();
        assert_eq!(e.to_string(), "unknown kernel path 'avx2' (portable, avx512, winograd or winograd-f2)");
        assert!(matches!(KernelPath::from_setting(Some("winograd"), &none), Err(KernelsError::Unsupported { .. })));
        if let Some(cpu) = full() {
            assert_eq!(KernelPath::from_setting(Some("AVX512"), &cpu).map(KernelPath::kind), Ok(KernelKind::Avx512));
            assert_eq!(KernelPath::from_setting(None, &cpu).map(KernelPath::kind), Ok(KernelKind::Winograd));
        }
    }

    #[test]
    fn paths_print_by_name() {
        assert_eq!(format!("{:?} {}", KernelPath::Portable, KernelPath::Portable), "Portable portable");
        if let Some(cpu) = full() {
            let p = KernelPath::checked(KernelKind::Winograd, &cpu).unwrap();
            assert_eq!(format!("{p:?} {p}"), "Winograd winograd");
        }
    }
}
