//! Images into a detector's input: decoded with `data::image`'s limits, resized by torchvision's
//! `GeneralizedRCNNTransform` rule, normalised, and the factors that map boxes back to the
//! original pixels.
//!
//! **Size.** `scale = min(min_size / shorter side, max_size / longer side)` (f64), each side
//! `floor(side * scale)` (PyTorch's `interpolate(scale_factor=scale, recompute_scale_factor=True)`,
//! which torchvision calls), at least 1. So the shorter side is `min_size` unless the longer would
//! exceed `max_size`; the longer side is then `max_size` or one less (floor of a product
//! rounded in f64).
//!
//! **Pixels.** Resampled in f32 from [0, 1] values (no 8-bit rounding in between) with
//! `data::image::resize`'s triangle filter, which widens with the downscale factor (antialiased,
//! like PIL's bilinear); torchvision's `interpolate(mode="bilinear", antialias=False)` is not
//! antialiased, so downscaled images differ from torchvision's slightly (none where no resize
//! happens). Then `(p - mean) / std` per channel. torchvision also pads the batch to a multiple
//! of 32; a single image here is not padded (the feature map covers the image, `ceil(side / 16)`).
//!
//! **Back to the original.** Boxes in the resized image times `(orig_w / w, orig_h / h)` per axis,
//! torchvision's `resize_boxes` ratios.

use super::Box4;
use super::checkpoint::DetTransform;
use anyhow::{Result, bail};
use image::DynamicImage;
use std::path::Path;

/// The largest side a detector input may have after resizing (and a transform may ask for).
pub const MAX_SIDE: usize = 4096;

/// One image as the detector takes it.
#[derive(Clone, Debug, PartialEq)]
pub struct DetInput {
    /// (h, w, C) NHWC, normalised
    pub data: Vec<f32>,
    pub h: usize,
    pub w: usize,
    /// the original image's size
    pub orig_h: usize,
    pub orig_w: usize,
}

impl DetInput {
    /// Original pixels per input pixel, (x, y): `orig_w / w`, `orig_h / h`.
    pub fn scale(&self) -> (f32, f32) {
        (self.orig_w as f32 / self.w as f32, self.orig_h as f32 / self.h as f32)
    }

    /// A box of the input in the original image's pixels.
    pub fn to_original(&self, b: &Box4) -> Box4 {
        let (sx, sy) = self.scale();
        [b[0] * sx, b[1] * sy, b[2] * sx, b[3] * sy]
    }
}

/// The size (h, w) an `h` x `w` image is resized to (see the module doc).
pub fn resized_size(h: usize, w: usize, min_size: usize, max_size: usize) -> (usize, usize) {
    let (short, long) = (h.min(w) as f64, h.max(w) as f64);
    let scale = (min_size as f64 / short).min(max_size as f64 / long);
    let side = |s: usize| ((s as f64 * scale).floor() as usize).max(1);
    (side(h), side(w))
}

/// The detector input of `img` for a network of `channels` (1 or 3) input channels.
pub fn prepare(img: &DynamicImage, t: &DetTransform, channels: usize) -> Result<DetInput> {
    if let Err(e) = t.check(channels) {
        bail!("the detector's image transform: {e}");
    }
    let (orig_w, orig_h) = (img.width() as usize, img.height() as usize);
    let (h, w) = resized_size(orig_h, orig_w, t.min_size, t.max_size);
    // resampled as RGB f32 (a grey image as three equal channels: `DynamicImage` has no grey f32)
    let float = match channels {
        1 => {
            let grey = img.to_luma8();
            let rgb = image::Rgb32FImage::from_fn(img.width(), img.height(), |x, y| {
                let v = grey.get_pixel(x, y).0[0] as f32 / 255.0;
                image::Rgb([v, v, v])
            });
            DynamicImage::ImageRgb32F(rgb)
        }
        3 => DynamicImage::ImageRgb32F(img.to_rgb32f()),
        c => bail!("images become 1 (grey) or 3 (RGB) channels, not {c}"),
    };
    let resized = crate::data::image::resize(&float, w as u32, h as u32)?.into_rgb32f().into_raw();
    let px: Vec<f32> = match channels {
        1 => resized.chunks_exact(3).map(|p| p[0]).collect(),
        _ => resized,
    };
    let data =
        px.chunks_exact(channels).flat_map(|p| p.iter().enumerate().map(|(c, v)| (v - t.mean[c]) / t.std[c])).collect();
    Ok(DetInput { data, h, w, orig_h, orig_w })
}

/// Decode the image file `path` (a regular file, JPEG or PNG, within `data::image`'s limits) and
/// [`prepare`] it. Returns the decoded image too (for drawing).
pub fn open(path: &Path, t: &DetTransform, channels: usize) -> Result<(DynamicImage, DetInput)> {
    let img = crate::data::image::open(path)?;
    let input = prepare(&img, t, channels).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    Ok((img, input))
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::RgbImage;

    fn transform(min: usize, max: usize) -> DetTransform {
        DetTransform { min_size: min, max_size: max, mean: vec![0.5, 0.25, 0.0], std: vec![0.5, 0.25, 1.0] }
    }

    /// Every pair below was checked against torchvision 0.29's `_resize_image_and_masks`.
    #[test]
    fn sizes_follow_torchvision() {
        // shorter side to min_size
        assert_eq!(resized_size(400, 500, 800, 1333), (800, 1000));
        assert_eq!(resized_size(500, 400, 800, 1333), (1000, 800));
        // the longer side capped: 1333 / 1000 * 300 = 399.9 -> 399
        assert_eq!(resized_size(300, 1000, 800, 1333), (399, 1333));
        // paper preset on a 375 x 500 VOC image: 600 / 375 = 1.6 -> 600 x 800
        assert_eq!(resized_size(375, 500, 600, 1000), (600, 800));
        // downscaling; an extreme aspect ratio keeps at least one pixel
        assert_eq!(resized_size(1200, 1600, 600, 1000), (600, 800));
        assert_eq!(resized_size(1, 16000, 600, 1000), (1, 1000));
    }

    #[test]
    fn a_generated_png_is_resized_normalised_and_maps_back() {
        let dir = crate::data::testutil::TempDir::new("det-input");
        let img = RgbImage::from_fn(60, 40, |x, y| image::Rgb([(x * 4) as u8, (y * 6) as u8, 255]));
        let path = dir.path().join("a.png");
        img.save(&path).unwrap();
        let t = transform(80, 200);
        let (back, inp) = open(&path, &t, 3).unwrap();
        assert_eq!((back.width(), back.height()), (60, 40));
        assert_eq!((inp.h, inp.w, inp.orig_h, inp.orig_w), (80, 120, 40, 60));
        assert_eq!(inp.data.len(), 80 * 120 * 3);
        assert_eq!(inp.scale(), (0.5, 0.5));
        assert_eq!(inp.to_original(&[10.0, 20.0, 30.0, 40.0]), [5.0, 10.0, 15.0, 20.0]);
        // blue is 255 everywhere: (1 - 0) / 1; red and green are ramps within their normalised range
        for px in inp.data.chunks_exact(3) {
            assert!((px[2] - 1.0).abs() < 1e-5, "{px:?}");
            assert!((-1.0..=1.0).contains(&px[0]) && (-1.0..=3.0).contains(&px[1]), "{px:?}");
        }
        // no resize: exact values
        let (_, same) = open(&path, &transform(40, 60), 3).unwrap();
        assert_eq!((same.h, same.w), (40, 60));
        let want = ((7.0 * 4.0 / 255.0f32) - 0.5) / 0.5;
        assert!((same.data[(3 * 60 + 7) * 3] - want).abs() < 1e-6);
        // grey
        let (_, grey) = open(&path, &DetTransform { mean: vec![0.0], std: vec![1.0], ..t.clone() }, 1).unwrap();
        assert_eq!(grey.data.len(), 80 * 120);
    }

    #[test]
    fn bad_files_and_transforms_are_named() {
        let dir = crate::data::testutil::TempDir::new("det-input-bad");
        let t = transform(80, 200);
        let e = format!("{:#}", open(&dir.path().join("missing.png"), &t, 3).unwrap_err());
        assert!(e.contains("missing.png"), "{e}");
        let text = dir.write("notes.png", b"hello");
        let e = format!("{:#}", open(&text, &t, 3).unwrap_err());
        assert!(e.contains("notes.png") && e.contains("not a JPEG or PNG"), "{e}");
        let e = format!("{:#}", open(dir.path(), &t, 3).unwrap_err());
        assert!(e.contains("directory"), "{e}");
        let img = DynamicImage::ImageRgb8(RgbImage::new(8, 8));
        let e = prepare(&img, &DetTransform { std: vec![1.0, 0.0, 1.0], ..t.clone() }, 3).unwrap_err().to_string();
        assert!(e.contains("positive stds"), "{e}");
        let e = prepare(&img, &t, 1).unwrap_err().to_string();
        assert!(e.contains("1-channel"), "{e}");
    }
}
