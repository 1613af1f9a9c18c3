//! Image files into network inputs: decoding (JPEG, PNG) with limits, and the
//! two evaluation transforms:
//!
//! - [`ImagenetEval`], torchvision's standard evaluation transform: resize so
//!   the shorter side is 256 (the longer `int(256 * long / short)`), centre
//!   crop 224 (offsets `round((size - 224) / 2)`, half to even, as Python
//!   rounds), scale to [0, 1], subtract the per-channel mean, divide by the
//!   per-channel std. Where no resampling happens (an image whose shorter
//!   side is already 256) the result equals torchvision's to the pixel.
//!   Resampling uses a triangle (bilinear) filter whose support widens with
//!   the downscale factor, i.e. antialiased like PIL's `BILINEAR`; its
//!   weights are not PIL's to the last bit. Measured on the four sample
//!   photos (451x300 to 512x600, resized to 256): the brach ResNet-18's
//!   logits differ from torchvision + PIL's by at most 1.7e-3 (of logits up
//!   to 2.5), same top-1; without resizing they agree to 5e-7.
//! - the CIFAR recipe of our own checkpoints ([`Preprocess`]): the image
//!   converted to the stored channels (grey or RGB), resized (same filter)
//!   to the stored size if it differs, centred in the input, and the
//!   training set's mean image subtracted.

use super::augment::Preprocess;
use anyhow::{Result, anyhow, bail};
use image::{DynamicImage, ImageReader, Limits};
use std::io::Cursor;
use std::path::Path;

/// Largest side and decoded size accepted (hostile headers claim more).
pub const MAX_SIDE: u32 = 16384;
pub const MAX_DECODED_BYTES: u64 = 1 << 30;

/// Decode JPEG or PNG bytes (format from the content, not the name).
pub fn decode(name: &str, bytes: &[u8]) -> Result<DynamicImage> {
    let mut r =
        ImageReader::new(Cursor::new(bytes)).with_guessed_format().map_err(|e| anyhow!("{name}: cannot read: {e}"))?;
    match r.format() {
        Some(image::ImageFormat::Png) => {}
        // the JPEG decoder fills a cut-off scan with grey instead of failing: a complete file ends with
        // the end-of-image marker FF D9 (looked for in the last KiB, where trailing bytes may follow it)
        Some(image::ImageFormat::Jpeg) => {
            let tail = &bytes[bytes.len().saturating_sub(1024)..];
            if !tail.windows(2).any(|w| w == [0xff, 0xd9]) {
                bail!("{name}: truncated JPEG (no end-of-image marker)");
            }
        }
        Some(f) => bail!("{name}: {f:?} images are not supported (JPEG and PNG are)"),
        None => bail!("{name}: not a JPEG or PNG image"),
    }
    let mut limits = Limits::default();
    limits.max_image_width = Some(MAX_SIDE);
    limits.max_image_height = Some(MAX_SIDE);
    limits.max_alloc = Some(MAX_DECODED_BYTES);
    r.limits(limits);
    let img = r.decode().map_err(|e| anyhow!("{name}: cannot decode: {e}"))?;
    if img.width() == 0 || img.height() == 0 {
        bail!("{name}: empty image ({}x{})", img.width(), img.height());
    }
    Ok(img)
}

/// Largest image file read: no JPEG or PNG of an image within [`MAX_DECODED_BYTES`] needs more.
pub const MAX_FILE_BYTES: u64 = MAX_DECODED_BYTES;

/// Read and decode an image file: a regular file (a FIFO or a device is refused by name, unopened)
/// of at most [`MAX_FILE_BYTES`].
pub fn open(path: &Path) -> Result<DynamicImage> {
    use std::io::Read;
    let name = path.display().to_string();
    let len = super::bounded::regular_file(path)?.ok_or_else(|| anyhow!("reading {name}: no such file"))?;
    if len > MAX_FILE_BYTES {
        bail!("{name}: {len} bytes, more than the {MAX_FILE_BYTES} an image file may have");
    }
    let f = std::fs::File::open(path).map_err(|e| anyhow!("reading {name}: {e}"))?;
    let mut bytes = Vec::with_capacity(len as usize);
    f.take(MAX_FILE_BYTES + 1).read_to_end(&mut bytes).map_err(|e| anyhow!("reading {name}: {e}"))?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        bail!("{name}: more than the {MAX_FILE_BYTES} bytes an image file may have");
    }
    decode(&name, &bytes)
}

/// Pixels as u8 with `c` channels (1 = grey, 3 = RGB), (H, W, C) row-major.
pub fn pixels(img: &DynamicImage, c: usize) -> Result<Vec<u8>> {
    Ok(match c {
        1 => img.to_luma8().into_raw(),
        3 => img.to_rgb8().into_raw(),
        _ => bail!("images become 1 (grey) or 3 (RGB) channels, not {c}"),
    })
}

/// Most pixels a resize may produce (an extreme aspect ratio resized by its shorter side asks for more).
pub const MAX_RESIZED_PIXELS: u64 = 1 << 26;

/// Resize to exactly `w` x `h` (no-op when already that size).
pub fn resize(img: &DynamicImage, w: u32, h: u32) -> Result<DynamicImage> {
    if img.width() == w && img.height() == h {
        return Ok(img.clone());
    }
    if w == 0 || h == 0 || w as u64 * h as u64 > MAX_RESIZED_PIXELS {
        bail!(
            "a {}x{} image would be resized to {w}x{h}: too extreme an aspect ratio or size",
            img.width(),
            img.height()
        );
    }
    Ok(img.resize_exact(w, h, image::imageops::FilterType::Triangle))
}

/// Python's round(): half to even.
fn round_half_even(x: f64) -> i64 {
    let r = x.round();
    if (x - x.trunc()).abs() == 0.5 { 2 * (x / 2.0).round() as i64 } else { r as i64 }
}

/// torchvision's evaluation transform (see the module doc).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ImagenetEval {
    /// shorter side after resizing (0 = no resize)
    pub resize: usize,
    pub crop: usize,
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
    /// a per-pixel mean image (crop, crop, C) subtracted last (our image-folder
    /// recipe; empty for torchvision's); stored as a checkpoint tensor, not here
    #[serde(skip)]
    pub mean_image: Vec<f32>,
}

impl Default for ImagenetEval {
    fn default() -> ImagenetEval {
        ImagenetEval {
            resize: 256,
            crop: 224,
            mean: vec![0.485, 0.456, 0.406],
            std: vec![0.229, 0.224, 0.225],
            mean_image: vec![],
        }
    }
}

impl ImagenetEval {
    /// Size after the resize step, as torchvision computes it: (w, h).
    pub fn resized_size(&self, w: u32, h: u32) -> (u32, u32) {
        if self.resize == 0 || w == 0 || h == 0 {
            return (w, h);
        }
        let s = self.resize as u64;
        let (short, long) = if w <= h { (w as u64, h as u64) } else { (h as u64, w as u64) };
        let new_long = (s * long / short) as u32;
        if w <= h { (s as u32, new_long) } else { (new_long, s as u32) }
    }

    /// Top-left corner of the centre crop of an `w` x `h` image, as torchvision's `center_crop`:
    /// `round((size - crop) / 2)`, or, for a side smaller than the crop (zero padding), `-((crop - size) // 2)`.
    pub fn crop_origin(&self, w: u32, h: u32) -> (i64, i64) {
        let c = self.crop as i64;
        let o = |size: u32| {
            let size = size as i64;
            if size < c { -((c - size) / 2) } else { round_half_even((size - c) as f64 / 2.0) }
        };
        (o(h), o(w))
    }

    /// The network input (crop, crop, C) for `img`, C = 1 or 3.
    pub fn apply(&self, img: &DynamicImage, c: usize, out: &mut [f32]) -> Result<()> {
        if self.mean.len() < c || self.std.len() < c || self.std.iter().any(|&s| s == 0.0 || !s.is_finite()) {
            bail!("the transform needs {c} means and {c} non-zero stds, has {:?} and {:?}", self.mean, self.std);
        }
        let (w, h) = self.resized_size(img.width(), img.height());
        let img = resize(img, w, h)?;
        let px = pixels(&img, c)?;
        let (top, left) = self.crop_origin(w, h);
        let s = self.crop;
        let mi = (self.mean_image.len() == s * s * c).then_some(&self.mean_image);
        for y in 0..s {
            for x in 0..s {
                let (iy, ix) = (top + y as i64, left + x as i64);
                let inside = iy >= 0 && ix >= 0 && iy < h as i64 && ix < w as i64;
                for ch in 0..c {
                    let v = if inside {
                        px[((iy as usize) * w as usize + ix as usize) * c + ch] as f32 / 255.0
                    } else {
                        0.0
                    };
                    let o = (y * s + x) * c + ch;
                    out[o] = (v - self.mean[ch]) / self.std[ch] - mi.map_or(0.0, |m| m[o]);
                }
            }
        }
        Ok(())
    }
}

/// How an image becomes a network input at evaluation: one of the two transforms above.
#[derive(Clone, Debug, PartialEq)]
pub enum Transform {
    /// Our CIFAR-family recipe: stored size and channels, mean image.
    Recipe(Preprocess),
    /// torchvision's resize / centre crop / mean / std.
    Imagenet(ImagenetEval),
}

impl Transform {
    /// Side of the network input.
    pub fn input_size(&self) -> usize {
        match self {
            Transform::Recipe(p) => p.size,
            Transform::Imagenet(t) => t.crop,
        }
    }

    /// Write the input of `img` for a network of `channels` input channels into `out` (size, size, C).
    pub fn apply(&self, img: &DynamicImage, channels: usize, out: &mut [f32]) -> Result<()> {
        match self {
            Transform::Recipe(p) => apply_recipe(p, img, out),
            Transform::Imagenet(t) => t.apply(img, channels, out),
        }
    }
}

/// The CIFAR recipe's evaluation input for `img` (see the module doc).
pub fn apply_recipe(pre: &Preprocess, img: &DynamicImage, out: &mut [f32]) -> Result<()> {
    let (h, w, c) = pre.src;
    let img = resize(img, w as u32, h as u32)?;
    let px = pixels(&img, c)?;
    pre.write(&px, out, (0, 0), false);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{GrayImage, RgbImage};

    fn png(img: &DynamicImage) -> Vec<u8> {
        let mut b = Vec::new();
        img.write_to(&mut Cursor::new(&mut b), image::ImageFormat::Png).unwrap();
        b
    }

    #[test]
    fn torchvision_sizes_and_crops() {
        let t = ImagenetEval::default();
        assert_eq!(t.resized_size(500, 375), (341, 256));
        assert_eq!(t.resized_size(375, 500), (256, 341));
        assert_eq!(t.resized_size(256, 256), (256, 256));
        // (256 - 224) / 2 = 16; (257 - 224) / 2 = 16.5 rounds to 16 (half to even), 16.5 + 1 = 17.5 to 18
        assert_eq!(t.crop_origin(256, 256), (16, 16));
        assert_eq!(t.crop_origin(257, 259), (18, 16));
        // smaller than the crop: torchvision pads (crop - size) // 2 on the top / left
        assert_eq!(t.crop_origin(221, 220), (-2, -1));
        assert_eq!(round_half_even(2.5), 2);
        assert_eq!(round_half_even(-0.5), 0);
        assert_eq!(round_half_even(1.4), 1);
    }

    #[test]
    fn a_256_image_is_an_exact_crop() {
        let img =
            RgbImage::from_fn(256, 300, |x, y| image::Rgb([(x % 256) as u8, (y % 256) as u8, ((x * y) % 251) as u8]));
        let img = DynamicImage::ImageRgb8(img);
        let t = ImagenetEval::default();
        let mut out = vec![0.0; 224 * 224 * 3];
        t.apply(&img, 3, &mut out).unwrap();
        // shorter side 256 already: no resampling; crop origin (38, 16)
        let (top, left) = t.crop_origin(256, 300);
        assert_eq!((top, left), (38, 16));
        for &(y, x) in &[(0usize, 0usize), (5, 200), (223, 223)] {
            let (sx, sy) = (x as u32 + 16, y as u32 + 38);
            let want = [(sx % 256) as f32, (sy % 256) as f32, ((sx * sy) % 251) as f32];
            for ch in 0..3 {
                let v = (want[ch] / 255.0 - t.mean[ch]) / t.std[ch];
                assert!((out[(y * 224 + x) * 3 + ch] - v).abs() < 1e-6);
            }
        }
    }

    #[test]
    fn recipe_centres_and_subtracts_the_mean() {
        let pre = Preprocess { src: (28, 28, 1), size: 32, mean: vec![0.25; 32 * 32], crop_pad: 4, flip: true };
        let img =
            DynamicImage::ImageLuma8(GrayImage::from_fn(28, 28, |x, _| image::Luma([if x == 0 { 255 } else { 0 }])));
        let mut out = vec![0.0; 32 * 32];
        apply_recipe(&pre, &img, &mut out).unwrap();
        // column 0 of the image lands at column 2 of the input; the border is padding
        assert_eq!(out[5 * 32 + 2], 0.75);
        assert_eq!(out[5 * 32 + 3], -0.25);
        assert_eq!(out[0], -0.25);
        // an RGB photo of another size is made grey and resized
        let rgb = DynamicImage::ImageRgb8(RgbImage::from_pixel(40, 50, image::Rgb([255, 255, 255])));
        apply_recipe(&pre, &rgb, &mut out).unwrap();
        assert_eq!(out[10 * 32 + 10], 0.75);
    }

    #[test]
    fn grey_rgba_and_16_bit_pngs_decode_to_the_channels_asked() {
        let rgba = DynamicImage::ImageRgba8(image::RgbaImage::from_pixel(3, 2, image::Rgba([200, 100, 50, 7])));
        let grey16 = DynamicImage::ImageLuma16(image::ImageBuffer::from_pixel(3, 2, image::Luma([65535u16])));
        let rgb16 = DynamicImage::ImageRgb16(image::ImageBuffer::from_pixel(3, 2, image::Rgb([0u16, 32896, 65535])));
        for (img, want3, want1) in
            [(rgba, [200, 100, 50], None), (grey16, [255, 255, 255], Some(255)), (rgb16, [0, 128, 255], None)]
        {
            let back = decode("x.png", &png(&img)).unwrap();
            assert_eq!(&pixels(&back, 3).unwrap()[..3], &want3);
            if let Some(g) = want1 {
                assert_eq!(pixels(&back, 1).unwrap()[0], g);
            }
        }
    }

    #[test]
    fn extreme_aspect_ratios_are_refused_before_resizing() {
        let line = DynamicImage::ImageLuma8(GrayImage::new(16384, 1));
        let mut out = vec![0.0; 224 * 224 * 3];
        let e = ImagenetEval::default().apply(&line, 3, &mut out).unwrap_err().to_string();
        assert!(e.contains("too extreme"), "{e}");
    }

    #[test]
    fn bad_images_are_clear_errors() {
        let good = png(&DynamicImage::ImageRgb8(RgbImage::new(8, 8)));
        assert_eq!(decode("a.png", &good).unwrap().width(), 8);
        // every cut that loses pixel data (all but the 12-byte IEND chunk) is an error
        for len in 0..good.len() - 12 {
            assert!(decode("a.png", &good[..len]).is_err(), "cut at {len}");
        }
        // a JPEG cut anywhere is refused (the decoder itself would fill the missing part with grey)
        let mut jpg = Vec::new();
        DynamicImage::ImageRgb8(RgbImage::from_fn(64, 64, |x, y| image::Rgb([x as u8 * 4, y as u8 * 4, 9])))
            .write_to(&mut Cursor::new(&mut jpg), image::ImageFormat::Jpeg)
            .unwrap();
        assert!(decode("a.jpg", &jpg).is_ok());
        for len in 0..jpg.len() - 1 {
            assert!(decode("a.jpg", &jpg[..len]).is_err(), "jpeg cut at {len}");
        }
        let e = decode("x.png", b"hello").unwrap_err().to_string();
        assert!(e.starts_with("x.png: not a JPEG or PNG"), "{e}");
        // a PNG header claiming 100000 x 100000 pixels: refused before allocating
        let mut huge = good.clone();
        huge[16..20].copy_from_slice(&100_000u32.to_be_bytes());
        huge[20..24].copy_from_slice(&100_000u32.to_be_bytes());
        let e = decode("huge.png", &huge).unwrap_err().to_string();
        assert!(e.starts_with("huge.png: cannot decode"), "{e}");
    }
}
