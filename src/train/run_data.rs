//! The data of a run, opened as its configuration says: the splits (validation held out, a
//! training subset), the sources the loop and the evaluations draw from, and the input pipeline's
//! record (mean image) that every checkpoint carries.

use super::TrainConfig;
use crate::data::augment::Preprocess;
use crate::data::folder::{self, Folder};
use crate::data::image::ImagenetEval;
use crate::data::imagenet::ImagenetRecipe;
use crate::data::source::{FolderSource, MemorySource, Source};
use crate::data::{self, Dataset};
use anyhow::{Context, Result, bail};
use std::path::Path;
use std::sync::Arc;

/// Where the data of a run comes from, split as configured, and how its
/// images become inputs (recorded in every checkpoint).
pub struct RunData {
    pub train: Arc<dyn Source>,
    pub val: Option<Arc<dyn Source>>,
    pub test: Option<Arc<dyn Source>>,
    /// the input pipeline's record: image size, input size, mean image
    pub pre: Preprocess,
    /// image folders: the evaluation transform
    pub eval: Option<ImagenetEval>,
}

/// The images `idx` of `d`, in that order.
fn pick(d: &Dataset, idx: &[u32]) -> Dataset {
    let mut out = d.clone_empty();
    for &i in idx {
        out.images.extend_from_slice(d.image(i as usize));
        out.labels.push(d.labels[i as usize]);
    }
    out
}

/// `--val val` must leave training images out of `len`.
pub fn check_val(val: usize, len: usize) -> Result<()> {
    if val >= len {
        bail!("--val {val} leaves no training images (the training set has {len})");
    }
    Ok(())
}

/// Hold out `val` seeded random training images.
pub fn split_val(train: Dataset, val: usize, seed: u64) -> Result<(Dataset, Option<Dataset>)> {
    if val == 0 {
        return Ok((train, None));
    }
    check_val(val, train.len())?;
    let perm = crate::data::augment::permutation(train.len(), seed ^ 0x7A1, 0);
    let (v, t) = perm.split_at(val);
    let (mut v, mut t) = (v.to_vec(), t.to_vec());
    v.sort();
    t.sort();
    Ok((pick(&train, &t), Some(pick(&train, &v))))
}

/// Keep `n` seeded random images of `train`, in their original order (`--train-images`).
pub fn subset(train: Dataset, n: usize, seed: u64) -> Result<Dataset> {
    if n == 0 {
        bail!("--train-images must be at least 1");
    }
    if n > train.len() {
        bail!("--train-images {n}: the training set has only {} images", train.len());
    }
    if n == train.len() {
        return Ok(train);
    }
    let mut keep = crate::data::augment::permutation(train.len(), seed ^ 0x5B5E7, 0)[..n].to_vec();
    keep.sort();
    Ok(pick(&train, &keep))
}

/// The mean image (HWC), RGB pixel samples for a PCA, and the indices of unreadable images.
pub type ImageStatistics = (Vec<f32>, Vec<[f32; 3]>, Vec<usize>);

/// The mean image and PCA pixel samples of an image folder's training split, over a seeded sample
/// of [`STAT_IMAGES`](super::request::STAT_IMAGES) images; with `skip_bad`, the indices of the
/// images that could not be read (left out).
pub fn image_statistics(recipe: &ImagenetRecipe, train: &Folder, seed: u64, skip_bad: bool) -> Result<ImageStatistics> {
    let n = train.len().min(super::request::STAT_IMAGES);
    let perm = crate::data::augment::permutation(train.len(), seed ^ 0x5EED, 0);
    let mut unreadable = vec![];
    let images = perm[..n].iter().filter_map(|&i| match data::image::open(&train.files[i as usize].0) {
        Err(_) if skip_bad => {
            unreadable.push(i as usize);
            None
        }
        r => Some(r),
    });
    let (mean, px) = recipe.statistics(images)?;
    Ok((mean, px, unreadable))
}

/// An image folder's training and validation splits: its val/ folder, or `val` seeded images held
/// out of the training folders (not both).
pub fn folder_splits(data: &Path, val: usize, seed: u64) -> Result<(Folder, Option<Folder>)> {
    let splits = folder::load(data)?;
    let mut train = splits.train;
    let val = match (splits.val, val) {
        (Some(_), n) if n > 0 => bail!("{} has a val/ folder: drop --val", data.display()),
        (Some(v), _) => Some(v),
        (None, 0) => None,
        (None, n) => Some(train.split_off(n, seed)?),
    };
    Ok((train, val))
}

impl RunData {
    /// Open the data of `cfg`; `pre`: the input pipeline recorded in the checkpoint a run continues
    /// from (None for a new run: computed here — for image folders the mean image over a sample).
    pub fn open(cfg: &TrainConfig, pre: Option<Preprocess>) -> Result<RunData> {
        if cfg.recipe.is_some() { Self::folder(cfg, pre.map(|p| p.mean)) } else { Self::memory(cfg, pre) }
    }

    /// The in-memory splits of `cfg` with the CIFAR recipe `pre`.
    fn memory(cfg: &TrainConfig, pre: Option<Preprocess>) -> Result<RunData> {
        let (splits, _) = data::load_with(&cfg.data, cfg.format, !cfg.lenient_counts)?;
        let (mut train, val) = split_val(splits.train, cfg.val, cfg.seed)?;
        if let Some(n) = cfg.train_images {
            train = subset(train, n, cfg.seed)?;
        }
        let pre = pre.unwrap_or_else(|| Preprocess::cifar_recipe(&train, cfg.crop_pad, cfg.flip));
        let p = Arc::new(pre.clone());
        let src = |d: Dataset| -> Arc<dyn Source> { Arc::new(MemorySource { data: Arc::new(d), pre: p.clone() }) };
        Ok(RunData { train: src(train), val: val.map(src), test: Some(src(splits.test)), pre, eval: None })
    }

    /// The splits of an image folder with the ImageNet recipe; `mean`: the checkpoint's mean image.
    fn folder(cfg: &TrainConfig, mean: Option<Vec<f32>>) -> Result<RunData> {
        let mut recipe = cfg.recipe.clone().context("an image-folder run without its recipe")?;
        let (train_folder, val_folder) = folder_splits(&cfg.data, cfg.val, cfg.seed)?;
        // images the mean-image pass found unreadable (skip_bad): counted as skipped by the source
        let unreadable = match mean {
            Some(m) => {
                recipe.mean = m;
                vec![]
            }
            None => {
                let (m, _, unreadable) = image_statistics(&recipe, &train_folder, cfg.seed, cfg.skip_bad)?;
                recipe.mean = m;
                unreadable
            }
        };
        let c = recipe.channels;
        let pre = Preprocess {
            src: (recipe.size, recipe.size, c),
            size: recipe.size,
            mean: recipe.mean.clone(),
            crop_pad: 0,
            flip: false,
        };
        let eval = ImagenetEval { mean_image: vec![], ..recipe.eval() };
        let recipe = Arc::new(recipe);
        let train = FolderSource::new(train_folder, recipe.clone(), cfg.skip_bad).with_unreadable(unreadable);
        let val = val_folder.map(|f| Arc::new(FolderSource::new(f, recipe.clone(), cfg.skip_bad)) as Arc<dyn Source>);
        Ok(RunData { train: Arc::new(train), val, test: None, pre, eval: Some(eval) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `n` 1x1 grey images whose pixel is their index (mod 256) and label their index mod 10.
    fn indexed(n: usize) -> Dataset {
        Dataset {
            images: (0..n).map(|i| (i % 256) as u8).collect(),
            labels: (0..n).map(|i| (i % 10) as u16).collect(),
            h: 1,
            w: 1,
            c: 1,
            classes: 10,
            class_names: vec![],
        }
    }

    #[test]
    fn subset_keeps_seeded_images_in_order_with_their_labels() {
        let s = subset(indexed(200), 50, 3).unwrap();
        assert_eq!((s.len(), s.images.len()), (50, 50));
        assert!(s.images.windows(2).all(|w| w[0] < w[1]), "original order kept, no repeats");
        for (px, label) in s.images.iter().zip(&s.labels) {
            assert_eq!(*px as u16 % 10, *label, "labels travel with their images");
        }
        assert_eq!(subset(indexed(200), 50, 3).unwrap().images, s.images, "the same seed, the same images");
        assert_ne!(subset(indexed(200), 50, 4).unwrap().images, s.images, "another seed, other images");
        assert_eq!(subset(indexed(200), 200, 3).unwrap().images, indexed(200).images);
        let e = subset(indexed(200), 201, 3).unwrap_err().to_string();
        assert!(e.contains("--train-images 201") && e.contains("200 images"), "{e}");
        assert!(subset(indexed(200), 0, 3).is_err());
    }

    #[test]
    fn split_val_partitions_the_training_set() {
        let (t, v) = split_val(indexed(100), 30, 1).unwrap();
        let v = v.unwrap();
        assert_eq!((t.len(), v.len()), (70, 30));
        let mut all: Vec<u8> = t.images.iter().chain(&v.images).copied().collect();
        all.sort();
        assert_eq!(all, indexed(100).images, "every image once, in one split or the other");
        assert!(split_val(indexed(100), 100, 1).is_err());
    }
}
