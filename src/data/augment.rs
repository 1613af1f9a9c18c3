//! The CIFAR recipe's input pipeline (Sec. 4.2): images scaled to [0, 1],
//! the training set's per-pixel mean image subtracted, and for training a
//! random 32x32 crop of the image padded by 4 (zeros, i.e. the mean) and a
//! random horizontal flip. Grey-scale 28x28 images (MNIST, Fashion-MNIST) go
//! through the CIFAR family padded to 32x32 with zeros, one input channel.
//!
//! Randomness is a pure function of (seed, stream position), so a resumed
//! run sees exactly the crops and flips it would have seen.

use super::Dataset;
use crate::rng::{counter_uniform, splitmix64};

/// How images become network inputs.
#[derive(Clone, Debug, PartialEq)]
pub struct Preprocess {
    /// stored image size (H, W, C)
    pub src: (usize, usize, usize),
    /// network input side (the image is centred in it, zero-padded)
    pub size: usize,
    /// per-pixel mean of the (padded, [0, 1]-scaled) training images, (size, size, C)
    pub mean: Vec<f32>,
    /// training augmentation: random crop padding (0 = none) and horizontal flips
    pub crop_pad: usize,
    pub flip: bool,
}

impl Preprocess {
    /// The recipe for `train`: input side 32 (or the image size if larger),
    /// mean image over `train`, random crops of the image padded by
    /// `crop_pad` (the paper: 4) and horizontal flips if `flip`.
    pub fn cifar_recipe(train: &Dataset, crop_pad: usize, flip: bool) -> Preprocess {
        let size = train.h.max(train.w).max(32);
        let mut p = Preprocess { src: (train.h, train.w, train.c), size, mean: vec![], crop_pad, flip };
        p.mean = p.mean_image(train);
        p
    }

    fn offset(&self) -> (usize, usize) {
        ((self.size - self.src.0) / 2, (self.size - self.src.1) / 2)
    }

    /// Mean of the centred, zero-padded images scaled to [0, 1].
    fn mean_image(&self, d: &Dataset) -> Vec<f32> {
        let (h, w, c) = self.src;
        let (oy, ox) = self.offset();
        let mut sum = vec![0.0f64; h * w * c];
        for i in 0..d.len() {
            sum.iter_mut().zip(d.image(i)).for_each(|(s, v)| *s += *v as f64);
        }
        let mut mean = vec![0.0f32; self.size * self.size * c];
        let n = d.len().max(1) as f64 * 255.0;
        for y in 0..h {
            for x in 0..w {
                for ch in 0..c {
                    mean[((y + oy) * self.size + x + ox) * c + ch] = (sum[(y * w + x) * c + ch] / n) as f32;
                }
            }
        }
        mean
    }

    /// Write the network input for `img` into `out` (size, size, C): mean
    /// subtracted, shifted by (dy, dx) in -crop_pad..=crop_pad (zeros enter at
    /// the edges) and mirrored if `flip`.
    pub fn write(&self, img: &[u8], out: &mut [f32], (dy, dx): (isize, isize), flip: bool) {
        let (h, w, c) = self.src;
        let s = self.size;
        let (oy, ox) = self.offset();
        for y in 0..s {
            for x in 0..s {
                // the output pixel (y, x) shows padded-image pixel (y + dy, x' + dx)
                let xs = if flip { s - 1 - x } else { x };
                let (py, px) = (y as isize + dy, xs as isize + dx);
                let o = &mut out[(y * s + x) * c..][..c];
                if py < 0 || px < 0 || py >= s as isize || px >= s as isize {
                    o.fill(0.0);
                    continue;
                }
                let (py, px) = (py as usize, px as usize);
                let m = &self.mean[(py * s + px) * c..][..c];
                let (iy, ix) = (py.wrapping_sub(oy), px.wrapping_sub(ox));
                if iy < h && ix < w {
                    let v = &img[(iy * w + ix) * c..][..c];
                    for ((o, v), m) in o.iter_mut().zip(v).zip(m) {
                        *o = *v as f32 / 255.0 - m;
                    }
                } else {
                    // outside the stored image: padding, value 0 before the mean
                    o.iter_mut().zip(m).for_each(|(o, m)| *o = -m);
                }
            }
        }
    }

    /// The augmentation of stream position `k` under `seed`: (shift, flip).
    pub fn draw(&self, seed: u64, k: u64) -> ((isize, isize), bool) {
        if self.crop_pad == 0 && !self.flip {
            return ((0, 0), false);
        }
        let name = format!("aug/{seed}");
        let span = 2 * self.crop_pad as u64 + 1;
        let dy = (counter_uniform(&name, 3 * k) * span as f32) as isize - self.crop_pad as isize;
        let dx = (counter_uniform(&name, 3 * k + 1) * span as f32) as isize - self.crop_pad as isize;
        let flip = self.flip && counter_uniform(&name, 3 * k + 2) < 0.5;
        ((dy.min(self.crop_pad as isize), dx.min(self.crop_pad as isize)), flip)
    }
}

/// A seeded permutation of 0..n for epoch `epoch` (Fisher-Yates over SplitMix64).
pub fn permutation(n: usize, seed: u64, epoch: u64) -> Vec<u32> {
    let mut p: Vec<u32> = (0..n as u32).collect();
    let mut state = splitmix64(seed ^ splitmix64(epoch.wrapping_add(0x5EED)));
    for i in (1..n).rev() {
        state = splitmix64(state);
        let j = (state % (i as u64 + 1)) as usize;
        p.swap(i, j);
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grey(n: usize, h: usize, w: usize) -> Dataset {
        let images = (0..n * h * w).map(|i| (i * 7 % 256) as u8).collect();
        Dataset { images, labels: vec![0; n], h, w, c: 1, classes: 1, class_names: vec!["a".into()] }
    }

    #[test]
    fn grey_28_is_centred_in_32_and_mean_subtracted() {
        let d = grey(3, 28, 28);
        let p = Preprocess::cifar_recipe(&d, 4, true);
        assert_eq!((p.size, p.mean.len()), (32, 32 * 32));
        // border of the mean image is zero (padding), interior the pixel mean
        assert_eq!(p.mean[0], 0.0);
        let m = (0..3).map(|i| d.image(i)[0] as f32).sum::<f32>() / 3.0 / 255.0;
        assert!((p.mean[2 * 32 + 2] - m).abs() < 1e-6);
        let mut out = vec![9.0; 32 * 32];
        p.write(d.image(1), &mut out, (0, 0), false);
        assert_eq!(out[0], 0.0);
        assert!((out[2 * 32 + 2] - (d.image(1)[0] as f32 / 255.0 - m)).abs() < 1e-6);
        // the mean of the written training images is zero at every pixel
        let mut acc = vec![0.0f32; 32 * 32];
        for i in 0..3 {
            p.write(d.image(i), &mut out, (0, 0), false);
            acc.iter_mut().zip(&out).for_each(|(a, o)| *a += o);
        }
        assert!(acc.iter().all(|a| a.abs() < 1e-5));
    }

    #[test]
    fn crop_shifts_and_flip_mirrors() {
        let d = grey(1, 32, 32);
        let mut p = Preprocess::cifar_recipe(&d, 4, true);
        p.mean.iter_mut().for_each(|m| *m = 0.0);
        let (mut a, mut b) = (vec![0.0; 1024], vec![0.0; 1024]);
        p.write(d.image(0), &mut a, (0, 0), false);
        p.write(d.image(0), &mut b, (2, -3), false);
        // shifted view: b[y][x] = a[y + 2][x - 3] where inside, zero where it leaves the image
        assert_eq!(b[5 * 32 + 10], a[7 * 32 + 7]);
        assert_eq!(b[31 * 32 + 10], 0.0);
        assert_eq!(b[5 * 32 + 1], 0.0);
        p.write(d.image(0), &mut b, (0, 0), true);
        assert_eq!(b[4 * 32], a[4 * 32 + 31]);
        // draws stay in range and are reproducible
        for k in 0..1000 {
            let ((dy, dx), _) = p.draw(7, k);
            assert!((-4..=4).contains(&dy) && (-4..=4).contains(&dx));
            assert_eq!(p.draw(7, k), p.draw(7, k));
        }
        let flips = (0..1000).filter(|&k| p.draw(7, k).1).count();
        assert!((400..600).contains(&flips), "{flips}");
    }

    #[test]
    fn permutations_are_seeded_and_complete() {
        let a = permutation(1000, 1, 0);
        let mut s = a.clone();
        s.sort();
        assert_eq!(s, (0..1000).collect::<Vec<u32>>());
        assert_eq!(a, permutation(1000, 1, 0));
        assert_ne!(a, permutation(1000, 1, 1));
        assert_ne!(a, permutation(1000, 2, 0));
    }
}
