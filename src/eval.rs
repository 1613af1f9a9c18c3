//! The paper's test protocols (Sec. 3.4, Tables 3-5) and ensembles:
//!
//! - **single**: one view, the model's own evaluation transform (CIFAR
//!   models: the centred image; ImageNet models: the centre crop);
//! - **10-crop**: the image resized so its shorter side is the transform's
//!   resize (256), its four corner crops and centre crop at the crop size
//!   (224), and the same five of the horizontally flipped image, in
//!   torchvision's `TenCrop` order; softmax scores averaged;
//! - **multi-scale**: the fully-convolutional form (the fc applied at every
//!   position of the final feature map, [`Net::score_map`]) on the whole
//!   image resized so its shorter side is each scale, and on its flip;
//!   softmax scores averaged over positions, flips and scales. Inputs are
//!   normalised with the transform's mean / std; a per-pixel mean image (our
//!   image-folder models) is resized bilinearly to the whole image, which is
//!   not cropped.
//!
//! Several models (an ensemble, Table 5) average their softmax scores.
//!
//! The single view over a whole test split runs in batches ([`each_batch`]
//! over a [`Source`]); training's validation, `resnet eval` and the layer
//! responses all walk a test set through it.

use crate::backend::Backend;
use crate::data::image::{self, ImagenetEval};
use crate::data::source::{FolderSource, MemorySource, Source, fill};
use crate::net::Net;
use crate::predict::{Classifier, Transform};
use ::image::DynamicImage;
use anyhow::{Result, bail};
use std::path::Path;
use std::sync::Arc;

/// Run the single evaluation view of the first `limit` images of `src` through `net` (eval mode), a
/// batch at a time (inputs made on `workers` threads when the source decodes files). After each
/// batch's forward pass, `f(net, kept)` with the (image index, label) of every image in it: the
/// net's first `kept.len()` outputs. Images skipped as unreadable are left out.
pub fn each_batch<B: Backend>(
    net: &mut B,
    src: &dyn Source,
    limit: usize,
    workers: usize,
    mut f: impl FnMut(&B, &[(usize, u32)]) -> Result<()>,
) -> Result<()> {
    let (b, per) = (net.capacity(), src.input_len());
    if per != net.input_len() {
        bail!("the data give {per}-value inputs, the network takes {}", net.input_len());
    }
    let n = limit.min(src.len());
    let mut x = vec![0f32; b * per];
    let mut kept = Vec::with_capacity(b);
    for start in (0..n).step_by(b) {
        let k = b.min(n - start);
        // x: (k, per) the batch's inputs; net.input: the readable ones, packed
        let labels = fill(src, workers, &mut x, k, |j, out| src.eval_input(start + j, out))?;
        kept.clear();
        for (j, label) in labels.into_iter().enumerate() {
            if let Some(l) = label {
                let m = kept.len();
                net.input_mut()[m * per..(m + 1) * per].copy_from_slice(&x[j * per..(j + 1) * per]);
                kept.push((start + j, l));
            }
        }
        if !kept.is_empty() {
            net.forward(kept.len(), false);
            f(net, &kept)?;
        }
    }
    Ok(())
}

/// A classifier's test split: its single views as a [`Source`], and a note for the user if the
/// split is not a held-out one.
pub struct TestSplit {
    pub source: Box<dyn Source>,
    pub note: Option<String>,
}

/// An image folder's test images: its val/ split, else its class folders, with a note for the user then.
pub fn folder_test_split(data: &Path) -> Result<(crate::data::folder::Folder, Option<String>)> {
    let f = crate::data::folder::load(data)?;
    let note = f.val.is_none().then(|| {
        format!(
            "{} has no val/ folder: evaluating its class folders (training images, if it has train/)",
            data.display()
        )
    });
    Ok((f.val.unwrap_or(f.train), note))
}

/// The test split of `data` seen through classifier `c`'s evaluation transform: a CIFAR / MNIST-style
/// data set's test split (models with our CIFAR recipe only), or an image folder's val/ split, else
/// its class folders. Its classes need not be the model's (compare `source.classes()` where labels
/// matter). `strict_counts`: see [`crate::data::load_with`]; `skip_bad`: leave unreadable
/// images out instead of stopping.
pub fn test_split(c: &Classifier, data: &Path, strict_counts: bool, skip_bad: bool) -> Result<TestSplit> {
    let channels = c.net.spec().in_channels;
    let (source, note): (Box<dyn Source>, _) = if data.is_dir() && crate::data::folder::looks_like_folder(data) {
        let (split, note) = folder_test_split(data)?;
        let recipe = crate::data::imagenet::ImagenetRecipe::for_size(c.input_size(), channels);
        (Box::new(FolderSource::new(split, Arc::new(recipe), skip_bad).with_view(c.transform.clone())), note)
    } else {
        let Transform::Recipe(pre) = &c.transform else {
            bail!("{}: an ImageNet-style model cannot read a CIFAR / MNIST-style data set", data.display());
        };
        let (splits, _) = crate::data::load_with(data, None, strict_counts)?;
        let d = splits.test;
        if pre.src != (d.h, d.w, d.c) {
            bail!("the model takes {:?} images (H, W, C), {} holds {:?}", pre.src, data.display(), (d.h, d.w, d.c));
        }
        (Box::new(MemorySource { data: Arc::new(d), pre: Arc::new(pre.clone()) }), None)
    };
    Ok(TestSplit { source, note })
}

/// A test protocol.
#[derive(Clone, Debug, PartialEq)]
pub enum Protocol {
    Single,
    TenCrop,
    /// shorter sides to evaluate at
    MultiScale(Vec<usize>),
}

/// Top-left corners (top, left) of torchvision's `FiveCrop`: top-left, top-right,
/// bottom-left, bottom-right, centre, for crops of `s` in a `w` x `h` image.
pub fn five_crops(w: usize, h: usize, s: usize) -> [(usize, usize); 5] {
    let t = ImagenetEval { crop: s, ..Default::default() };
    let (ct, cl) = t.crop_origin(w as u32, h as u32);
    [(0, 0), (0, w - s), (h - s, 0), (h - s, w - s), (ct.max(0) as usize, cl.max(0) as usize)]
}

/// Softmax of `z`, in f64.
pub fn softmax(z: &[f32]) -> Vec<f64> {
    let m = z.iter().cloned().fold(f32::NEG_INFINITY, f32::max) as f64;
    let e: Vec<f64> = z.iter().map(|&v| (v as f64 - m).exp()).collect();
    let s: f64 = e.iter().sum();
    e.iter().map(|v| v / s).collect()
}

/// Bilinear resize of an (sh, sw, C) float map to (dh, dw, C), pixel centres aligned (align_corners = false).
pub fn resize_map(src: &[f32], (sh, sw): (usize, usize), c: usize, (dh, dw): (usize, usize)) -> Vec<f32> {
    let coord = |o: usize, d: usize, s: usize| -> (usize, usize, f32) {
        let x = ((o as f32 + 0.5) * s as f32 / d as f32 - 0.5).clamp(0.0, (s - 1) as f32);
        let i = x.floor() as usize;
        (i, (i + 1).min(s - 1), x - i as f32)
    };
    let mut out = vec![0f32; dh * dw * c];
    for y in 0..dh {
        let (y0, y1, fy) = coord(y, dh, sh);
        for x in 0..dw {
            let (x0, x1, fx) = coord(x, dw, sw);
            for ch in 0..c {
                let at = |yy: usize, xx: usize| src[(yy * sw + xx) * c + ch];
                let top = at(y0, x0) * (1.0 - fx) + at(y0, x1) * fx;
                let bottom = at(y1, x0) * (1.0 - fx) + at(y1, x1) * fx;
                out[(y * dw + x) * c + ch] = top * (1.0 - fy) + bottom * fy;
            }
        }
    }
    out
}

/// A whole (h, w, C) image normalised with the transform: ((p / 255) - mean) / std per channel, minus
/// the mean image (if there is one) resized to the image.
fn normalise(t: &ImagenetEval, px: &[u8], (h, w): (usize, usize), c: usize) -> Vec<f32> {
    let s = t.crop;
    let mi = (t.mean_image.len() == s * s * c).then(|| resize_map(&t.mean_image, (s, s), c, (h, w)));
    px.iter()
        .enumerate()
        .map(|(i, &p)| (p as f32 / 255.0 - t.mean[i % c]) / t.std[i % c] - mi.as_ref().map_or(0.0, |m| m[i]))
        .collect()
}

/// Mirror (H, W, C) pixels left-right.
fn flip(px: &[u8], w: usize, c: usize) -> Vec<u8> {
    let mut out = px.to_vec();
    for (row_in, row_out) in px.chunks(w * c).zip(out.chunks_mut(w * c)) {
        for x in 0..w {
            row_out[x * c..(x + 1) * c].copy_from_slice(&row_in[(w - 1 - x) * c..(w - x) * c]);
        }
    }
    out
}

fn imagenet_transform(m: &Classifier, what: &str) -> Result<ImagenetEval> {
    match &m.transform {
        Transform::Imagenet(t) => Ok(t.clone()),
        Transform::Recipe(_) => {
            bail!("{what} applies to ImageNet-style models; CIFAR-family models use the single view")
        }
    }
}

/// The 10 crops' inputs (10, s, s, C) for `img` under transform `t`.
pub fn ten_crop_inputs(t: &ImagenetEval, img: &DynamicImage, c: usize) -> Result<Vec<f32>> {
    let (w, h) = t.resized_size(img.width(), img.height());
    let (w, h) = (w as usize, h as usize);
    let s = t.crop;
    if w < s || h < s {
        bail!("the image resized to {w}x{h} is smaller than the {s}x{s} crops");
    }
    let px = image::pixels(&image::resize(img, w as u32, h as u32)?, c)?;
    let mi = (t.mean_image.len() == s * s * c).then_some(&t.mean_image);
    let mut out = Vec::with_capacity(10 * s * s * c);
    for p in [px.clone(), flip(&px, w, c)] {
        for (top, left) in five_crops(w, h, s) {
            for y in 0..s {
                for x in 0..s {
                    for ch in 0..c {
                        let v = p[((top + y) * w + left + x) * c + ch] as f32 / 255.0;
                        let o = (y * s + x) * c + ch;
                        out.push((v - t.mean[ch]) / t.std[ch] - mi.map_or(0.0, |m| m[o]));
                    }
                }
            }
        }
    }
    Ok(out)
}

/// A network like `base` for `h` x `w` inputs (batch `n`), with its weights.
fn net_at(base: &Net, n: usize, h: usize, w: usize) -> Result<Net> {
    Ok(base.resized(n, h, w)?)
}

/// Softmax scores of one model on one image under `protocol`, averaged over its views (multi-scale:
/// over the positions of each scale and flip, then the scales and flips with equal weight).
pub fn model_probs(m: &mut Classifier, img: &DynamicImage, protocol: &Protocol) -> Result<Vec<f64>> {
    let c = m.net.spec().in_channels;
    let k = m.net.classes();
    let mut acc = vec![0f64; k];
    let mut views = 0usize;
    let mut add = |z: &[f32], acc: &mut Vec<f64>| {
        softmax(z).iter().zip(acc.iter_mut()).for_each(|(p, a)| *a += p);
        views += 1;
    };
    match protocol {
        Protocol::Single => {
            let p = &m.classify(std::slice::from_ref(img))?[0];
            add(&p.logits, &mut acc);
        }
        Protocol::TenCrop => {
            let t = imagenet_transform(m, "10-crop testing")?;
            let x = ten_crop_inputs(&t, img, c)?;
            for p in m.classify_tensor(&x)? {
                add(&p.logits, &mut acc);
            }
        }
        Protocol::MultiScale(scales) => {
            let t = imagenet_transform(m, "multi-scale testing")?;
            for &s in scales {
                let ts = ImagenetEval { resize: s, ..t.clone() };
                let (w, h) = ts.resized_size(img.width(), img.height());
                let (w, h) = (w as usize, h as usize);
                let px = image::pixels(&image::resize(img, w as u32, h as u32)?, c)?;
                let mut net = net_at(&m.net, 2, h, w)?;
                let x: Vec<f32> = [normalise(&t, &px, (h, w), c), normalise(&t, &flip(&px, w, c), (h, w), c)].concat();
                net.input[..x.len()].copy_from_slice(&x);
                net.forward(2, false);
                let (scores, d) = net.score_map(2);
                for view in scores.chunks(d.h * d.w * k) {
                    let mut mean = vec![0f64; k];
                    for pos in view.chunks(k) {
                        softmax(pos).iter().zip(mean.iter_mut()).for_each(|(p, a)| *a += p / (d.h * d.w) as f64);
                    }
                    acc.iter_mut().zip(&mean).for_each(|(a, p)| *a += p);
                    views += 1;
                }
            }
        }
    }
    Ok(acc.iter().map(|a| a / views.max(1) as f64).collect())
}

/// Errors (percent) and loss over a test set.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct Report {
    pub top1_err: f64,
    pub top5_err: f64,
    pub loss: f64,
    pub images: usize,
    /// unreadable images left out
    pub skipped: usize,
}

/// Accumulates per-image scores into a [`Report`].
#[derive(Default)]
pub struct Tally {
    top1: usize,
    top5: usize,
    loss: f64,
    n: usize,
}

impl Tally {
    /// Record the (ensemble-averaged) scores `p` of an image of class `label`.
    pub fn add(&mut self, p: &[f64], label: usize) {
        let mut order: Vec<usize> = (0..p.len()).collect();
        order.sort_by(|&a, &b| p[b].total_cmp(&p[a]).then(a.cmp(&b)));
        self.top1 += (order[0] != label) as usize;
        self.top5 += !order.iter().take(5).any(|&i| i == label) as usize;
        self.loss -= p.get(label).copied().unwrap_or(0.0).max(1e-12).ln();
        self.n += 1;
    }

    pub fn report(&self, skipped: usize) -> Report {
        let n = self.n.max(1) as f64;
        Report {
            top1_err: 100.0 * self.top1 as f64 / n,
            top5_err: 100.0 * self.top5 as f64 / n,
            loss: self.loss / n,
            images: self.n,
            skipped,
        }
    }
}

/// The ensemble's scores: the mean of each model's.
pub fn ensemble_probs(models: &mut [Classifier], img: &DynamicImage, protocol: &Protocol) -> Result<Vec<f64>> {
    let mut acc: Vec<f64> = vec![];
    for m in models.iter_mut() {
        let p = model_probs(m, img, protocol)?;
        if acc.is_empty() {
            acc = p;
        } else if acc.len() != p.len() {
            bail!("the models of an ensemble must have the same classes ({} vs {})", acc.len(), p.len());
        } else {
            acc.iter_mut().zip(&p).for_each(|(a, b)| *a += b);
        }
    }
    let n = models.len().max(1) as f64;
    Ok(acc.iter().map(|a| a / n).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::{ArchOptions, ArchSpec};
    use crate::weights::StateDict;
    use ::image::{Rgb, RgbImage};

    #[test]
    fn ten_crop_geometry() {
        assert_eq!(five_crops(256, 256, 224), [(0, 0), (0, 32), (32, 0), (32, 32), (16, 16)]);
        assert_eq!(five_crops(341, 256, 224), [(0, 0), (0, 117), (32, 0), (32, 117), (16, 58)]);
        // the crops of an image whose pixels encode their coordinates
        let img = DynamicImage::ImageRgb8(RgbImage::from_fn(40, 30, |x, y| Rgb([x as u8, y as u8, 0])));
        let t =
            ImagenetEval { resize: 30, crop: 20, mean: vec![0.0; 3], std: vec![1.0 / 255.0; 3], mean_image: vec![] };
        let x = ten_crop_inputs(&t, &img, 3).unwrap();
        let at = |crop: usize, y: usize, xx: usize| {
            let i = ((crop * 20 + y) * 20 + xx) * 3;
            (x[i].round(), x[i + 1].round())
        };
        assert_eq!(at(0, 0, 0), (0.0, 0.0));
        assert_eq!(at(1, 0, 0), (20.0, 0.0));
        assert_eq!(at(3, 19, 19), (39.0, 29.0));
        assert_eq!(at(4, 0, 0), (10.0, 5.0));
        // the flipped image's top-left crop shows the original's right edge, mirrored
        assert_eq!(at(5, 0, 0), (39.0, 0.0));
        assert_eq!(at(5, 0, 19), (20.0, 0.0));
    }

    fn classifier(seed: u64) -> Classifier {
        let spec = ArchSpec::parse("resnet18", &ArchOptions { classes: Some(7), ..Default::default() }).unwrap();
        let mut net = Net::new(&spec, 1, 64, 64, false, seed).unwrap();
        // random BN statistics so that eval-mode BN is not the identity
        for (i, v) in net.stats.iter_mut().enumerate() {
            *v = 0.5 + crate::rng::counter_uniform("eval-test", i as u64 + seed);
        }
        let sd = StateDict::of_net(&net);
        let t = ImagenetEval { resize: 72, crop: 64, ..Default::default() };
        Classifier::from_state_dict(&spec, &sd, Transform::Imagenet(t), 10).unwrap()
    }

    #[test]
    fn the_fully_convolutional_form_at_the_crop_size_is_the_plain_forward() {
        let mut c = classifier(1);
        let x: Vec<f32> = (0..64 * 64 * 3).map(|i| crate::rng::counter_uniform("fcn", i as u64) - 0.5).collect();
        c.net.input[..x.len()].copy_from_slice(&x);
        c.net.forward(1, false);
        let plain = c.net.logits_of(0).to_vec();
        let (scores, d) = c.net.score_map(1);
        assert_eq!((d.h, d.w, d.c), (2, 2, 7));
        for k in 0..7 {
            let mean: f32 = (0..4).map(|p| scores[p * 7 + k]).sum::<f32>() / 4.0;
            assert!((mean - plain[k]).abs() <= 1e-5 * plain[k].abs().max(1.0), "{k}: {mean} vs {}", plain[k]);
        }
        // and a net built for a larger input runs the same weights
        let big = net_at(&c.net, 1, 96, 128).unwrap();
        assert_eq!(big.params(), c.net.params());
    }

    #[test]
    fn an_ensemble_of_one_is_that_model_and_protocols_run() {
        let img = DynamicImage::ImageRgb8(RgbImage::from_fn(90, 80, |x, y| Rgb([(x * 3) as u8, (y * 3) as u8, 100])));
        let mut one = vec![classifier(2)];
        for protocol in [Protocol::Single, Protocol::TenCrop, Protocol::MultiScale(vec![64, 80])] {
            let e = ensemble_probs(&mut one, &img, &protocol).unwrap();
            let m = model_probs(&mut one[0], &img, &protocol).unwrap();
            assert_eq!(e, m, "{protocol:?}");
            assert!((e.iter().sum::<f64>() - 1.0).abs() < 1e-9);
        }
        // multi-scale weighs its scales equally, however many positions each has
        let both = model_probs(&mut one[0], &img, &Protocol::MultiScale(vec![64, 96])).unwrap();
        let a = model_probs(&mut one[0], &img, &Protocol::MultiScale(vec![64])).unwrap();
        let b = model_probs(&mut one[0], &img, &Protocol::MultiScale(vec![96])).unwrap();
        assert!(both.iter().zip(a.iter().zip(&b)).all(|(x, (a, b))| (x - (a + b) / 2.0).abs() < 1e-9));
        // single view = predict's probabilities
        let p = one[0].classify(std::slice::from_ref(&img)).unwrap();
        let s = model_probs(&mut one[0], &img, &Protocol::Single).unwrap();
        assert!(s.iter().zip(&p[0].probs).all(|(a, b)| (a - *b as f64).abs() < 1e-6));
        // two models average
        let mut two = vec![classifier(2), classifier(3)];
        let (a, b) = (
            model_probs(&mut two[0], &img, &Protocol::Single).unwrap(),
            model_probs(&mut two[1], &img, &Protocol::Single).unwrap(),
        );
        let e = ensemble_probs(&mut two, &img, &Protocol::Single).unwrap();
        assert!(e.iter().zip(a.iter().zip(&b)).all(|(e, (a, b))| (e - (a + b) / 2.0).abs() < 1e-12));
    }

    /// A source of `n` images whose image 3 is unreadable (left out, as with skip_bad).
    struct Holey(MemorySource);
    impl Source for Holey {
        fn len(&self) -> usize {
            self.0.len()
        }
        fn classes(&self) -> usize {
            self.0.classes()
        }
        fn class_names(&self) -> Vec<String> {
            self.0.class_names()
        }
        fn input_len(&self) -> usize {
            self.0.input_len()
        }
        fn train_input(&self, i: usize, seed: u64, pos: u64, out: &mut [f32]) -> Result<u32> {
            self.0.train_input(i, seed, pos, out)
        }
        fn eval_input(&self, i: usize, out: &mut [f32]) -> Result<Option<u32>> {
            if i == 3 { Ok(None) } else { self.0.eval_input(i, out) }
        }
    }

    #[test]
    fn each_batch_sees_every_readable_image_once_with_its_plain_forward() {
        let n = 7;
        let d = crate::data::Dataset {
            images: (0..n * 8 * 8).map(|i| (i * 37 % 251) as u8).collect(),
            labels: (0..n as u16).map(|i| i % 3).collect(),
            h: 8,
            w: 8,
            c: 1,
            classes: 3,
            class_names: vec![],
        };
        let pre =
            crate::data::augment::Preprocess { src: (8, 8, 1), size: 8, mean: vec![0.1; 64], crop_pad: 0, flip: false };
        let src = Holey(MemorySource { data: Arc::new(d), pre: Arc::new(pre) });
        let spec =
            ArchSpec::parse("resnet8", &ArchOptions { classes: Some(3), in_channels: Some(1), ..Default::default() })
                .unwrap();
        let mut net = Net::new(&spec, 3, 8, 8, false, 5).unwrap();
        let mut single = Net::new(&spec, 1, 8, 8, false, 5).unwrap();
        let mut seen = vec![];
        each_batch(&mut net, &src, 6, 1, |net, kept| {
            for (j, &(i, label)) in kept.iter().enumerate() {
                src.eval_input(i, &mut single.input).unwrap();
                single.forward(1, false);
                let (a, b) = (net.logits_of(j), single.logits_of(0));
                assert!(
                    a.iter().zip(b).all(|(x, y)| (x - y).abs() <= 1e-5 * y.abs().max(1.0)),
                    "image {i}: {a:?} vs {b:?}"
                );
                seen.push((i, label));
            }
            Ok(())
        })
        .unwrap();
        // batches of 3 over the first 6 images; image 3 left out
        assert_eq!(seen, vec![(0, 0), (1, 1), (2, 2), (4, 1), (5, 2)]);
        // a network of another input size is refused
        let mut wrong = Net::new(&spec, 3, 16, 16, false, 5).unwrap();
        assert!(each_batch(&mut wrong, &src, 6, 1, |_, _| Ok(())).unwrap_err().to_string().contains("inputs"));
    }

    #[test]
    fn bilinear_map_resize() {
        // identity at the same size; a 2x2 ramp upsampled keeps its corners' neighbourhoods and mean
        let src = [0.0, 1.0, 2.0, 3.0];
        assert_eq!(resize_map(&src, (2, 2), 1, (2, 2)), src.to_vec());
        let up = resize_map(&src, (2, 2), 1, (4, 4));
        assert_eq!((up[0], up[15]), (0.0, 3.0));
        assert_eq!(up[1], 0.25);
        assert!((up.iter().sum::<f32>() / 16.0 - 1.5).abs() < 1e-6);
    }

    #[test]
    fn tally_counts_top1_top5_and_loss() {
        let mut t = Tally::default();
        let p = [0.5, 0.2, 0.1, 0.08, 0.07, 0.05];
        t.add(&p, 0); // right
        t.add(&p, 4); // top-5 only
        t.add(&p, 5); // wrong
        let r = t.report(0);
        assert!((r.top1_err - 200.0 / 3.0).abs() < 1e-9 && (r.top5_err - 100.0 / 3.0).abs() < 1e-9);
        assert!((r.loss - (-(0.5f64.ln() + 0.07f64.ln() + 0.05f64.ln()) / 3.0)).abs() < 1e-12);
    }
}
