//! Classify images with a trained network: one of our checkpoints (its
//! recorded preprocessing and class names) or torchvision weights (`.pth`,
//! `.pt`, `.safetensors`; the standard ImageNet evaluation transform).
//!
//! ```no_run
//! use resnet::predict::{Classifier, LoadOptions};
//! let mut c = Classifier::load("resnet18.pth".as_ref(), &LoadOptions::default()).unwrap();
//! let img = resnet::data::image::open("cat.jpg".as_ref()).unwrap();
//! let p = &c.classify(&[img]).unwrap()[0];
//! let best = p.top(1)[0];
//! println!("{} ({:.1}%)", c.labels[best.0], 100.0 * best.1);
//! ```

use crate::arch::{ArchOptions, ArchSpec};
use crate::data::augment::Preprocess;
use crate::data::image::{self, ImagenetEval};
use crate::net::Net;
use crate::train::checkpoint;
use crate::weights::{self, StateDict};
use anyhow::{Context, Result, anyhow, bail};
use ::image::DynamicImage;
use std::path::Path;

/// How an image becomes the network input.
#[derive(Clone, Debug, PartialEq)]
pub enum Transform {
    /// Our CIFAR-family recipe: stored size and channels, mean image.
    Recipe(Preprocess),
    /// torchvision's resize / centre crop / mean / std.
    Imagenet(ImagenetEval),
}

/// What `load` may be told about weights that do not say it themselves.
#[derive(Clone, Debug, Default)]
pub struct LoadOptions {
    /// e.g. "resnet50" or "plain20"; inferred from the keys when absent
    pub arch: Option<String>,
    pub opts: ArchOptions,
    /// the transform for torchvision weights (default: 256 / 224 / ImageNet mean and std)
    pub imagenet: Option<ImagenetEval>,
    /// images per forward pass (default 8)
    pub batch: Option<usize>,
}

/// A network ready to classify, with its input transform and class names.
pub struct Classifier {
    pub net: Net,
    pub transform: Transform,
    pub labels: Vec<String>,
    /// where the weights came from: "checkpoint" (ours) or "torchvision"
    pub source: &'static str,
}

/// One image's result.
#[derive(Clone, Debug, PartialEq)]
pub struct Prediction {
    pub logits: Vec<f32>,
    pub probs: Vec<f32>,
}

impl Prediction {
    fn new(logits: &[f32]) -> Prediction {
        let max = logits.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
        let e: Vec<f64> = logits.iter().map(|&z| ((z - max) as f64).exp()).collect();
        let sum: f64 = e.iter().sum();
        Prediction { logits: logits.to_vec(), probs: e.iter().map(|&x| (x / sum) as f32).collect() }
    }

    /// The `k` most probable classes, (index, probability), best first.
    pub fn top(&self, k: usize) -> Vec<(usize, f32)> {
        let mut idx: Vec<usize> = (0..self.probs.len()).collect();
        idx.sort_by(|&a, &b| self.probs[b].total_cmp(&self.probs[a]).then(a.cmp(&b)));
        idx.into_iter().take(k).map(|i| (i, self.probs[i])).collect()
    }
}

/// Default labels for `classes` outputs: ImageNet's for 1000, else "class N".
pub fn default_labels(classes: usize) -> Vec<String> {
    if classes == 1000 { weights::imagenet_classes() } else { (0..classes).map(|i| format!("class {i}")).collect() }
}

impl Classifier {
    /// Build a classifier for `spec` at `size` x `size` with `sd`'s tensors.
    pub fn from_state_dict(spec: &ArchSpec, sd: &StateDict, transform: Transform, batch: usize) -> Result<Classifier> {
        let size = match &transform {
            Transform::Recipe(p) => p.size,
            Transform::Imagenet(t) => t.crop,
        };
        let mut net = Net::new(spec, batch.max(1), size, size, false, 0).map_err(|e| anyhow!("{e}"))?;
        weights::load_into(&mut net, sd).map_err(|m| anyhow!("the weights do not fit {}:\n{m}", spec.name))?;
        Ok(Classifier { labels: default_labels(spec.classes), net, transform, source: "torchvision" })
    }

    /// Load our checkpoint or a torchvision state_dict file.
    pub fn load(path: &Path, o: &LoadOptions) -> Result<Classifier> {
        let batch = o.batch.unwrap_or(8);
        let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        if checkpoint::is_checkpoint(&bytes) {
            let ck = checkpoint::parse(path, &bytes)?;
            let transform = match &ck.meta.eval {
                Some(t) => {
                    let mut t = o.imagenet.clone().unwrap_or_else(|| t.clone());
                    // an image-folder run's mean image (zeros for converted torchvision weights)
                    if ck.preprocess.mean.len() == t.crop * t.crop * ck.meta.arch.in_channels {
                        t.mean_image = ck.preprocess.mean.clone();
                    }
                    Transform::Imagenet(t)
                }
                None => Transform::Recipe(ck.preprocess.clone()),
            };
            let sd = StateDict {
                tensors: ck
                    .tensors
                    .iter()
                    .filter(|(n, _)| !n.starts_with("optimizer."))
                    .map(|(n, (s, d))| (n.clone(), weights::Tensor { shape: s.clone(), data: d.clone() }))
                    .collect(),
            };
            let mut c = Classifier::from_state_dict(&ck.meta.arch, &sd, transform, batch)
                .with_context(|| format!("{}", path.display()))?;
            c.labels = ck.meta.class_names.clone();
            if c.labels.len() != c.net.classes() {
                c.labels = default_labels(c.net.classes());
            }
            c.source = "checkpoint";
            return Ok(c);
        }
        let mut sd = weights::parse_state_dict(&path.display().to_string(), &bytes)?;
        sd.strip_prefix();
        let spec = weights::infer::infer_arch(&sd, o.arch.as_deref(), &o.opts)
            .with_context(|| format!("{}", path.display()))?;
        let t = o.imagenet.clone().unwrap_or_default();
        if spec.has_maxpool() && t.crop < 32 {
            bail!("--crop {} is too small for {}: at least 32", t.crop, spec.name);
        }
        Classifier::from_state_dict(&spec, &sd, Transform::Imagenet(t), batch).with_context(|| format!("{}", path.display()))
    }

    /// Side of the network input.
    pub fn input_size(&self) -> usize {
        match &self.transform {
            Transform::Recipe(p) => p.size,
            Transform::Imagenet(t) => t.crop,
        }
    }

    /// Write the network input of `img` into `out` (size, size, C).
    pub fn input_of(&self, img: &DynamicImage, out: &mut [f32]) -> Result<()> {
        match &self.transform {
            Transform::Recipe(p) => image::apply_recipe(p, img, out),
            Transform::Imagenet(t) => t.apply(img, self.net.spec().in_channels, out),
        }
    }

    /// Classify prepared inputs, (n, size, size, C) NHWC.
    pub fn classify_tensor(&mut self, input: &[f32]) -> Result<Vec<Prediction>> {
        let per = self.net.input_dims(1).len();
        if per == 0 || !input.len().is_multiple_of(per) {
            bail!("input of {} values is not a whole number of {per}-value images", input.len());
        }
        let mut out = Vec::with_capacity(input.len() / per);
        for chunk in input.chunks(per * self.net.batch) {
            let n = chunk.len() / per;
            self.net.input[..chunk.len()].copy_from_slice(chunk);
            self.net.forward(n, false);
            out.extend((0..n).map(|i| Prediction::new(self.net.logits_of(i))));
        }
        Ok(out)
    }

    /// Classify decoded images.
    pub fn classify(&mut self, images: &[DynamicImage]) -> Result<Vec<Prediction>> {
        let per = self.net.input_dims(1).len();
        let mut input = vec![0.0f32; per * images.len()];
        for (img, out) in images.iter().zip(input.chunks_mut(per)) {
            self.input_of(img, out)?;
        }
        self.classify_tensor(&input)
    }
}
