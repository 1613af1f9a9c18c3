//! The paper's ImageNet recipe (Sec. 3.4) for image folders:
//!
//! - training: the shorter side resized to a random size in [256, 480]
//!   (scale augmentation), a random 224x224 crop, a horizontal flip with
//!   probability 1/2, pixels / 255, the per-pixel mean subtracted, and
//!   AlexNet's PCA colour augmentation: every image gets the RGB offset
//!   `sum_j eigvec_j * alpha_j * eigval_j`, alpha_j ~ N(0, 0.1), with the
//!   eigenvalues / eigenvectors of the training set's RGB covariance
//!   ([`Pca::from_pixels`]) or the standard ImageNet ones ([`Pca::imagenet`]);
//! - evaluation: the shorter side resized to 256 and the centre 224x224 crop
//!   (the "single view" of Table 3's 10-crop protocol's centre), minus the mean.
//!
//! The sizes scale with the input size (`--input-size 64`: crops of 64 from
//! shorter sides in [73, 137], evaluation at 73), so small images and small
//! machines work. Every random draw is a pure function of (seed, stream
//! position), as in the CIFAR recipe.

use super::image::{self, ImagenetEval};
use crate::rng::{counter_normal, counter_uniform};
use ::image::DynamicImage;
use anyhow::{Result, bail};

/// Principal components of RGB pixel values in [0, 1]: eigenvector j is column j of `eigvec`.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Pca {
    pub eigval: [f32; 3],
    pub eigvec: [[f32; 3]; 3],
    /// standard deviation of the random weights alpha (AlexNet: 0.1)
    pub std: f32,
}

impl Pca {
    /// The ImageNet values used by AlexNet re-implementations (fb.resnet.torch).
    pub fn imagenet() -> Pca {
        Pca {
            eigval: [0.2175, 0.0188, 0.0045],
            eigvec: [[-0.5675, 0.7192, 0.4009], [-0.5808, -0.0045, -0.8140], [-0.5836, -0.6948, 0.4203]],
            std: 0.1,
        }
    }

    /// From sampled RGB pixels in [0, 1]: eigen-decomposition of their 3x3
    /// covariance (cyclic Jacobi), eigenvalues descending.
    #[allow(clippy::needless_range_loop)] // matrix indices read as in the Jacobi method
    pub fn from_pixels(px: &[[f32; 3]]) -> Pca {
        let n = px.len().max(1) as f64;
        let mut mean = [0f64; 3];
        for p in px {
            (0..3).for_each(|c| mean[c] += p[c] as f64 / n);
        }
        let mut a = [[0f64; 3]; 3];
        for p in px {
            for i in 0..3 {
                for j in 0..3 {
                    a[i][j] += (p[i] as f64 - mean[i]) * (p[j] as f64 - mean[j]) / n;
                }
            }
        }
        let mut v = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0f64]];
        for _ in 0..50 {
            for (p, q) in [(0, 1), (0, 2), (1, 2)] {
                if a[p][q].abs() < 1e-15 {
                    continue;
                }
                let theta = (a[q][q] - a[p][p]) / (2.0 * a[p][q]);
                let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                let t = if theta == 0.0 { 1.0 } else { t };
                let (c, s) = (1.0 / (t * t + 1.0).sqrt(), t / (t * t + 1.0).sqrt());
                // A <- J^T A J, V <- V J with the rotation in the (p, q) plane
                for k in 0..3 {
                    let (akp, akq) = (a[k][p], a[k][q]);
                    a[k][p] = c * akp - s * akq;
                    a[k][q] = s * akp + c * akq;
                }
                for k in 0..3 {
                    let (apk, aqk) = (a[p][k], a[q][k]);
                    a[p][k] = c * apk - s * aqk;
                    a[q][k] = s * apk + c * aqk;
                }
                for row in &mut v {
                    let (vp, vq) = (row[p], row[q]);
                    row[p] = c * vp - s * vq;
                    row[q] = s * vp + c * vq;
                }
            }
        }
        let mut order = [0usize, 1, 2];
        order.sort_by(|&x, &y| a[y][y].total_cmp(&a[x][x]));
        let mut out = Pca { eigval: [0.0; 3], eigvec: [[0.0; 3]; 3], std: 0.1 };
        for (j, &k) in order.iter().enumerate() {
            out.eigval[j] = a[k][k].max(0.0) as f32;
            for r in 0..3 {
                out.eigvec[r][j] = v[r][k] as f32;
            }
        }
        out
    }

    /// The RGB offset for weights `alpha`.
    pub fn offset(&self, alpha: [f32; 3]) -> [f32; 3] {
        let mut rgb = [0f32; 3];
        for (r, o) in rgb.iter_mut().enumerate() {
            *o = (0..3).map(|j| self.eigvec[r][j] * alpha[j] * self.eigval[j]).sum();
        }
        rgb
    }
}

/// The augmentation of one training sample.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Draw {
    /// shorter side after resizing
    pub short: usize,
    /// crop position as fractions of the free range, in [0, 1)
    pub top: f32,
    pub left: f32,
    pub flip: bool,
    pub alpha: [f32; 3],
}

/// The recipe, resolved for an input size.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ImagenetRecipe {
    /// crop side = network input
    pub size: usize,
    /// range of the shorter side for training (inclusive)
    pub scale: (usize, usize),
    /// shorter side for the evaluation centre crop
    pub eval_resize: usize,
    pub flip: bool,
    pub pca: Option<Pca>,
    /// 3 (RGB) or 1 (grey; no PCA)
    pub channels: usize,
    /// per-pixel mean (size, size, C), in [0, 1] units; a checkpoint tensor
    #[serde(skip)]
    pub mean: Vec<f32>,
}

impl ImagenetRecipe {
    /// The paper's sizes scaled to `size` (224: [256, 480], evaluation at 256).
    pub fn for_size(size: usize, channels: usize) -> ImagenetRecipe {
        let s = |x: usize| (size * x + 112) / 224;
        ImagenetRecipe {
            size,
            scale: (s(256), s(480)),
            eval_resize: s(256),
            flip: true,
            pca: (channels == 3).then(Pca::imagenet),
            channels,
            mean: vec![0.0; size * size * channels],
        }
    }

    pub fn validate(&self) -> Result<()> {
        if self.scale.0 < self.size || self.scale.1 < self.scale.0 {
            bail!("scale range {:?} must start at the crop size {} or above and not decrease", self.scale, self.size);
        }
        if self.eval_resize < self.size {
            bail!("evaluation resize {} is smaller than the crop {}", self.eval_resize, self.size);
        }
        if !matches!(self.channels, 1 | 3) || (self.pca.is_some() && self.channels != 3) {
            bail!("{} channels: image folders give 1 (grey) or 3 (RGB), PCA lighting needs RGB", self.channels);
        }
        Ok(())
    }

    /// The random choices for stream position `pos` under `seed`.
    pub fn draw(&self, seed: u64, pos: u64) -> Draw {
        let name = format!("imagenet-aug/{seed}");
        let u = |k: u64| counter_uniform(&name, 8 * pos + k);
        let span = (self.scale.1 - self.scale.0 + 1) as f32;
        let short = (self.scale.0 + (u(0) * span) as usize).min(self.scale.1);
        let alpha = if self.pca.is_some() {
            let s = self.pca.as_ref().map_or(0.0, |p| p.std);
            [0, 1, 2].map(|j| s * counter_normal(&format!("imagenet-pca/{seed}"), 3 * pos + j))
        } else {
            [0.0; 3]
        };
        Draw { short, top: u(1), left: u(2), flip: self.flip && u(3) < 0.5, alpha }
    }

    /// Resized size (w, h) and crop origin (top, left) of a `w` x `h` image under `d`.
    pub fn geometry(&self, w: u32, h: u32, d: &Draw) -> ((u32, u32), (usize, usize)) {
        let t = ImagenetEval { resize: d.short, crop: self.size, ..Default::default() };
        let (rw, rh) = t.resized_size(w, h);
        let free = |n: u32| (n as usize).saturating_sub(self.size) + 1;
        let top = ((d.top * free(rh) as f32) as usize).min(free(rh) - 1);
        let left = ((d.left * free(rw) as f32) as usize).min(free(rw) - 1);
        ((rw, rh), (top, left))
    }

    /// The training input (size, size, C) of `img` under draw `d`.
    pub fn train_input(&self, img: &DynamicImage, d: &Draw, out: &mut [f32]) -> Result<()> {
        let c = self.channels;
        let ((rw, rh), (top, left)) = self.geometry(img.width(), img.height(), d);
        let resized = image::resize(img, rw, rh)?;
        let px = image::pixels(&resized, c)?;
        let shift = self.pca.as_ref().map_or([0.0; 3], |p| p.offset(d.alpha));
        let s = self.size;
        for y in 0..s {
            for x in 0..s {
                let sx = if d.flip { s - 1 - x } else { x };
                let src = ((top + y) * rw as usize + left + sx) * c;
                for ch in 0..c {
                    let o = (y * s + x) * c + ch;
                    out[o] = px[src + ch] as f32 / 255.0 - self.mean[o] + shift[ch];
                }
            }
        }
        Ok(())
    }

    /// The evaluation transform: resize, centre crop, minus the mean image.
    pub fn eval(&self) -> ImagenetEval {
        ImagenetEval {
            resize: self.eval_resize,
            crop: self.size,
            mean: vec![0.0; 3],
            std: vec![1.0; 3],
            mean_image: self.mean.clone(),
        }
    }

    /// Mean image and (RGB) pixel samples from `images` under the evaluation transform (mean not yet set).
    pub fn statistics(&self, images: impl Iterator<Item = Result<DynamicImage>>) -> Result<(Vec<f32>, Vec<[f32; 3]>)> {
        let c = self.channels;
        let t = ImagenetEval { mean_image: vec![], ..self.eval() };
        let mut sum = vec![0f64; self.size * self.size * c];
        let mut buf = vec![0f32; sum.len()];
        let (mut n, mut samples) = (0usize, vec![]);
        for img in images {
            t.apply(&img?, c, &mut buf)?;
            sum.iter_mut().zip(&buf).for_each(|(s, &v)| *s += v as f64);
            if c == 3 {
                samples.extend(buf.chunks_exact(3).step_by(7).map(|p| [p[0], p[1], p[2]]));
            }
            n += 1;
        }
        if n == 0 {
            bail!("no images to compute the mean image from");
        }
        Ok((sum.iter().map(|&s| (s / n as f64) as f32).collect(), samples))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ::image::{Rgb, RgbImage};

    #[test]
    fn scales_and_crops_stay_in_bounds() {
        let r = ImagenetRecipe::for_size(224, 3);
        assert_eq!((r.scale, r.eval_resize), ((256, 480), 256));
        assert_eq!(ImagenetRecipe::for_size(64, 3).scale, (73, 137));
        let (mut lo, mut hi, mut flips) = (usize::MAX, 0, 0);
        for pos in 0..4000 {
            let d = r.draw(3, pos);
            assert!((256..=480).contains(&d.short));
            (lo, hi) = (lo.min(d.short), hi.max(d.short));
            flips += d.flip as usize;
            for (w, h) in [(500u32, 375u32), (300, 900), (256, 256)] {
                let ((rw, rh), (top, left)) = r.geometry(w, h, &d);
                assert_eq!(rw.min(rh) as usize, d.short);
                assert!(top + 224 <= rh as usize && left + 224 <= rw as usize, "{w}x{h} {d:?}");
            }
        }
        // the whole range is drawn, flips about half the time
        assert!(lo <= 258 && hi >= 478, "{lo}..{hi}");
        assert!((1800..2200).contains(&flips), "{flips}");
        // the extreme crop positions are reachable
        let d = Draw { short: 256, top: 0.99999, left: 0.0, flip: false, alpha: [0.0; 3] };
        assert_eq!(r.geometry(256, 300, &d).1, (300 - 224, 0));
        // the same position draws the same sample; another seed differs
        assert_eq!(r.draw(3, 17), r.draw(3, 17));
        assert_ne!(r.draw(3, 17), r.draw(4, 17));
    }

    #[test]
    fn crop_and_flip_take_the_right_pixels() {
        let mut r = ImagenetRecipe::for_size(4, 3);
        r.pca = None;
        r.scale = (6, 6);
        let img = DynamicImage::ImageRgb8(RgbImage::from_fn(6, 6, |x, y| Rgb([(10 * x) as u8, (10 * y) as u8, 0])));
        let mut out = vec![0.0; 4 * 4 * 3];
        let d = Draw { short: 6, top: 0.99, left: 0.0, flip: true, alpha: [0.0; 3] };
        r.train_input(&img, &d, &mut out).unwrap();
        // top = 2, left = 0; flipped: output x = 0 shows source x = 3
        assert_eq!(out[0] * 255.0, 30.0);
        assert_eq!(out[1] * 255.0, 20.0);
        assert_eq!(out[(3 * 4 + 3) * 3] * 255.0, 0.0);
    }

    #[test]
    fn pca_lighting_is_zero_mean_along_the_eigenvectors() {
        let r = ImagenetRecipe::for_size(224, 3);
        let pca = r.pca.clone().unwrap();
        let n = 20000u64;
        let (mut mean, mut var) = ([0f64; 3], [0f64; 3]);
        for pos in 0..n {
            let off = pca.offset(r.draw(9, pos).alpha);
            // the offset's coordinates in the eigenvector basis: alpha_j * eigval_j
            for j in 0..3 {
                let coord: f32 = (0..3).map(|c| pca.eigvec[c][j] * off[c]).sum();
                mean[j] += coord as f64 / n as f64;
                var[j] += (coord as f64).powi(2) / n as f64;
            }
        }
        for j in 0..3 {
            let sd = (pca.std * pca.eigval[j]) as f64;
            assert!(mean[j].abs() < 4.0 * sd / (n as f64).sqrt(), "component {j}: mean {}", mean[j]);
            assert!((var[j].sqrt() / sd - 1.0).abs() < 0.03, "component {j}: sd {} vs {sd}", var[j].sqrt());
        }
    }

    #[test]
    fn pca_from_pixels_finds_the_principal_axis() {
        // pixels spread along (1, 1, 1)/sqrt(3) with a little noise along (1, -1, 0)/sqrt(2)
        let px: Vec<[f32; 3]> = (0..1000)
            .map(|i| {
                let t = (i as f32 / 1000.0) - 0.5;
                let e = if i % 2 == 0 { 0.01 } else { -0.01 };
                [0.5 + t + e, 0.5 + t - e, 0.5 + t]
            })
            .collect();
        let p = Pca::from_pixels(&px);
        assert!(p.eigval[0] > 100.0 * p.eigval[1] && p.eigval[2] < 1e-6, "{:?}", p.eigval);
        let v: Vec<f32> = (0..3).map(|r| p.eigvec[r][0].abs()).collect();
        assert!(v.iter().all(|x| (x - 1.0 / 3f32.sqrt()).abs() < 1e-3), "{v:?}");
        // orthonormal columns
        for a in 0..3 {
            for b in 0..3 {
                let dot: f32 = (0..3).map(|r| p.eigvec[r][a] * p.eigvec[r][b]).sum();
                assert!((dot - (a == b) as u8 as f32).abs() < 1e-4);
            }
        }
    }
}
