//! The shape of an activation: what every layer and kernel agrees on, and
//! nothing else (no threads, no kernels), so that any module may use it.

/// Shape of an NHWC activation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Dims {
    pub n: usize,
    pub h: usize,
    pub w: usize,
    pub c: usize,
}

impl Dims {
    pub const fn new(n: usize, h: usize, w: usize, c: usize) -> Dims {
        Dims { n, h, w, c }
    }
    /// Number of f32 values.
    pub const fn len(&self) -> usize {
        self.n * self.h * self.w * self.c
    }
    pub const fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Number of pixels (rows of `c` channels) over the whole batch.
    pub const fn pixels(&self) -> usize {
        self.n * self.h * self.w
    }
}

#[cfg(test)]
mod tests {
    use super::Dims;

    #[test]
    fn counts_values_and_pixels() {
        let d = Dims::new(2, 3, 5, 7);
        assert_eq!((d.len(), d.pixels()), (210, 30));
        assert!(Dims { n: 0, ..d }.is_empty());
    }
}
