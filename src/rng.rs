//! The counter-based random numbers every part of a run draws from: a value is a pure function of
//! (stream name, index) — SplitMix64 over the FNV-1a hash of the name plus the index — so weights,
//! data order, crops and flips are the same whatever the thread count, a run is a function of
//! (seed, iteration), and the golden tests can recreate values in PyTorch without storing them.

/// SplitMix64 finaliser of `x + golden gamma`.
pub fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// FNV-1a 64 of a string.
pub fn fnv1a64(s: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// Uniform in [0, 1) with 24 random bits (exact in f32): element `i` of the
/// stream named `name`: splitmix64(fnv1a64(name) + i) >> 40, divided by 2^24.
pub fn counter_uniform(name: &str, i: u64) -> f32 {
    let z = splitmix64(fnv1a64(name).wrapping_add(i));
    (z >> 40) as f32 / (1u64 << 24) as f32
}

/// Standard normal from two counter uniforms (Box-Muller).
pub fn counter_normal(name: &str, i: u64) -> f32 {
    let u1 = counter_uniform(name, 2 * i) as f64 + 0.5 / (1u64 << 24) as f64;
    let u2 = counter_uniform(name, 2 * i + 1) as f64;
    ((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()) as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generator_known_values() {
        // splitmix64(0) is the first output of the reference SplitMix64 seeded with 0
        assert_eq!(splitmix64(0), 0xE220_A839_7B1D_CDAF);
        assert_eq!(fnv1a64(""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64("a"), 0xaf63_dc4c_8601_ec8c);
        let u: Vec<f32> = (0..1000).map(|i| counter_uniform("x", i)).collect();
        assert!(u.iter().all(|v| (0.0..1.0).contains(v)));
        let mean = u.iter().sum::<f32>() / 1000.0;
        assert!((mean - 0.5).abs() < 0.05);
    }

    #[test]
    fn normal_has_unit_variance() {
        let v: Vec<f64> = (0..20000).map(|i| counter_normal("n", i) as f64).collect();
        let m = v.iter().sum::<f64>() / v.len() as f64;
        let var = v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / v.len() as f64;
        assert!(m.abs() < 0.03 && (var - 1.0).abs() < 0.05, "{m} {var}");
    }
}
