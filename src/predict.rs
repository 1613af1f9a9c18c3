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
use crate::data::image::ImagenetEval;
pub use crate::data::image::Transform;
use crate::net::Net;
use crate::weights::checkpoint;
use crate::weights::{self, StateDict};
use ::image::DynamicImage;
use anyhow::{Context, Result, anyhow, bail};
use std::path::Path;

/// What `load` may be told about weights that do not say it themselves.
#[derive(Clone, Debug, Default)]
pub struct LoadOptions {
    /// e.g. "resnet50" or "plain20"; inferred from the keys when absent
    pub arch: Option<String>,
    pub opts: ArchOptions,
    /// changes to the evaluation transform of torchvision weights (default: 256 / 224 / ImageNet mean
    /// and std) or of a checkpoint that records one
    pub eval: EvalOverride,
    /// images per forward pass (default 8)
    pub batch: Option<usize>,
}

/// Fields of an evaluation transform to change; unset ones keep the weights' own.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct EvalOverride {
    pub resize: Option<usize>,
    pub crop: Option<usize>,
    pub mean: Option<Vec<f32>>,
    pub std: Option<Vec<f32>>,
}

impl EvalOverride {
    pub fn is_empty(&self) -> bool {
        *self == EvalOverride::default()
    }

    /// `base` with these changes. A mean image fits one crop size only: changing the crop of a model
    /// that has a (non-zero) one is an error.
    pub fn apply(&self, base: &ImagenetEval) -> Result<ImagenetEval> {
        let mut t = base.clone();
        if let Some(r) = self.resize {
            t.resize = r;
        }
        if let Some(c) = self.crop.filter(|&c| c != base.crop) {
            if base.mean_image.iter().any(|&v| v != 0.0) {
                bail!("this model subtracts a {0}x{0} mean image: its crop stays {0} (drop --crop)", base.crop);
            }
            t.crop = c;
            t.mean_image.clear();
        }
        if let Some(m) = &self.mean {
            t.mean = m.clone();
        }
        if let Some(s) = &self.std {
            t.std = s.clone();
        }
        if t.crop == 0 || t.mean.len() != t.std.len() || t.std.iter().any(|&s| s == 0.0 || !s.is_finite()) {
            bail!("the evaluation transform needs a crop >= 1 and as many non-zero stds as means: {t:?}");
        }
        Ok(t)
    }
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
        Prediction { logits: logits.to_vec(), probs: crate::eval::softmax(logits).iter().map(|&p| p as f32).collect() }
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
        let size = transform.input_size();
        let mut net = Net::new(spec, batch.max(1), size, size, false, 0)?;
        weights::load_into(&mut net, sd).map_err(|m| anyhow!("the weights do not fit {}:\n{m}", spec.name))?;
        Ok(Classifier { labels: default_labels(spec.classes), net, transform, source: "torchvision" })
    }

    /// Load our checkpoint or a torchvision state_dict file.
    pub fn load(path: &Path, o: &LoadOptions) -> Result<Classifier> {
        let batch = o.batch.unwrap_or(8);
        let bytes = crate::paths::read_regular(path)?;
        if checkpoint::is_checkpoint(&bytes) {
            let ck = checkpoint::parse(path, &bytes)?;
            let transform = match &ck.meta.eval {
                Some(t) => {
                    let mut base = t.clone();
                    // an image-folder run's mean image (zeros for converted torchvision weights)
                    if ck.preprocess.mean.len() == base.crop * base.crop * ck.meta.arch.in_channels {
                        base.mean_image = ck.preprocess.mean.clone();
                    }
                    Transform::Imagenet(o.eval.apply(&base).with_context(|| format!("{}", path.display()))?)
                }
                None => Transform::Recipe(ck.preprocess.clone()),
            };
            let mut c = Classifier::from_state_dict(&ck.meta.arch, &ck.weights, transform, batch)
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
        let t = o.eval.apply(&ImagenetEval::default())?;
        if spec.has_maxpool() && t.crop < 32 {
            bail!("--crop {} is too small for {}: at least 32", t.crop, spec.name);
        }
        Classifier::from_state_dict(&spec, &sd, Transform::Imagenet(t), batch)
            .with_context(|| format!("{}", path.display()))
    }

    /// Side of the network input.
    pub fn input_size(&self) -> usize {
        self.transform.input_size()
    }

    /// Write the network input of `img` into `out` (size, size, C).
    pub fn input_of(&self, img: &DynamicImage, out: &mut [f32]) -> Result<()> {
        self.transform.apply(img, self.net.spec().in_channels, out)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_change_only_what_is_given() {
        let base = ImagenetEval {
            resize: 73,
            crop: 64,
            mean: vec![0.0; 3],
            std: vec![1.0; 3],
            mean_image: vec![0.5; 64 * 64 * 3],
        };
        let t = EvalOverride { resize: Some(80), ..Default::default() }.apply(&base).unwrap();
        assert_eq!((t.resize, t.crop, t.mean_image.len()), (80, 64, 64 * 64 * 3));
        assert_eq!(t.mean, vec![0.0; 3]);
        let e = EvalOverride { crop: Some(32), ..Default::default() }.apply(&base).unwrap_err().to_string();
        assert!(e.contains("64x64 mean image"), "{e}");
        // a zero mean image (converted torchvision weights) is simply dropped with a new crop
        let zeros = ImagenetEval { mean_image: vec![0.0; 64 * 64 * 3], ..base.clone() };
        let t = EvalOverride { crop: Some(32), ..Default::default() }.apply(&zeros).unwrap();
        assert!(t.crop == 32 && t.mean_image.is_empty());
        assert!(EvalOverride { std: Some(vec![0.0; 3]), ..Default::default() }.apply(&base).is_err());
        assert_eq!(EvalOverride::default().apply(&base).unwrap(), base);
    }
}
