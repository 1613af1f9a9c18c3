//! What the training loop draws images from: a [`Source`] turns image `i`
//! into a network input, augmented for training (every random choice a
//! function of (seed, stream position)) or as the single evaluation view.
//!
//! - [`MemorySource`]: CIFAR / MNIST-style data held in memory, the CIFAR
//!   recipe ([`Preprocess`]);
//! - [`FolderSource`]: an image folder decoded on demand, the ImageNet recipe
//!   ([`ImagenetRecipe`]) for training, its evaluation view (or a trained
//!   model's, [`FolderSource::with_view`]) for evaluation. An image that cannot be read stops the run with
//!   an error naming the file, or with `skip_bad` is counted once and
//!   replaced by the next readable image (training) or left out (evaluation).

use super::Dataset;
use super::augment::Preprocess;
use super::folder::Folder;
use super::image::Transform;
use super::imagenet::ImagenetRecipe;
use anyhow::{Context, Result, anyhow};
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

pub trait Source: Send + Sync {
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    fn classes(&self) -> usize;
    fn class_names(&self) -> Vec<String>;
    /// floats per network input
    fn input_len(&self) -> usize;
    /// The training input of image `i` at stream position `pos`; the label of what was written.
    fn train_input(&self, i: usize, seed: u64, pos: u64, out: &mut [f32]) -> Result<u32>;
    /// The evaluation input of image `i`; `None` if it was skipped (unreadable, with skip_bad).
    fn eval_input(&self, i: usize, out: &mut [f32]) -> Result<Option<u32>>;
    /// Whether making an input is expensive (decoding): batches are then spread over workers.
    fn expensive(&self) -> bool {
        false
    }
    /// Images skipped as unreadable so far.
    fn skipped(&self) -> usize {
        0
    }
}

/// In-memory images with the CIFAR recipe.
pub struct MemorySource {
    pub data: Arc<Dataset>,
    pub pre: Arc<Preprocess>,
}

impl Source for MemorySource {
    fn len(&self) -> usize {
        self.data.len()
    }
    fn classes(&self) -> usize {
        self.data.classes
    }
    fn class_names(&self) -> Vec<String> {
        self.data.class_names.clone()
    }
    fn input_len(&self) -> usize {
        self.pre.size * self.pre.size * self.pre.src.2
    }
    fn train_input(&self, i: usize, seed: u64, pos: u64, out: &mut [f32]) -> Result<u32> {
        let (shift, flip) = self.pre.draw(seed, pos);
        self.pre.write(self.data.image(i), out, shift, flip);
        Ok(self.data.labels[i] as u32)
    }
    fn eval_input(&self, i: usize, out: &mut [f32]) -> Result<Option<u32>> {
        self.pre.write(self.data.image(i), out, (0, 0), false);
        Ok(Some(self.data.labels[i] as u32))
    }
}

/// An image folder with the ImageNet recipe.
pub struct FolderSource {
    pub folder: Folder,
    pub recipe: Arc<ImagenetRecipe>,
    /// the evaluation view: the recipe's centre crop unless [`FolderSource::with_view`] says otherwise
    pub view: Transform,
    pub skip_bad: bool,
    bad: Mutex<BTreeSet<usize>>,
}

impl FolderSource {
    pub fn new(folder: Folder, recipe: Arc<ImagenetRecipe>, skip_bad: bool) -> FolderSource {
        let view = Transform::Imagenet(recipe.eval());
        FolderSource { folder, recipe, view, skip_bad, bad: Mutex::new(BTreeSet::new()) }
    }

    /// Count the images `indices` (of `folder.files`) as skipped already: found unreadable before the
    /// source was made (by the mean-image pass over a sample of the files, with `skip_bad`). They are
    /// reported in [`Source::skipped`] and never tried again; without this, an unreadable file that
    /// the mean-image pass left out and training happened not to draw was skipped but not counted.
    pub fn with_unreadable(self, indices: impl IntoIterator<Item = usize>) -> FolderSource {
        let n = self.folder.len();
        if let Ok(mut b) = self.bad.lock() {
            b.extend(indices.into_iter().filter(|&i| i < n));
        }
        self
    }

    /// Evaluate through `view` (a trained model's transform) instead; its input must have the
    /// recipe's channels. Training inputs still follow the recipe, so use this for evaluation only.
    pub fn with_view(self, view: Transform) -> FolderSource {
        FolderSource { view, ..self }
    }

    /// Decode image `i`, or the error naming its file.
    pub fn decode(&self, i: usize) -> Result<::image::DynamicImage> {
        super::image::open(&self.folder.files[i].0)
    }

    fn name(&self, i: usize) -> String {
        self.folder.files[i].0.display().to_string()
    }

    fn mark_bad(&self, i: usize) {
        if let Ok(mut b) = self.bad.lock() {
            b.insert(i);
        }
    }

    fn is_bad(&self, i: usize) -> bool {
        self.bad.lock().is_ok_and(|b| b.contains(&i))
    }
}

impl Source for FolderSource {
    fn len(&self) -> usize {
        self.folder.len()
    }
    fn classes(&self) -> usize {
        self.folder.classes.len()
    }
    fn class_names(&self) -> Vec<String> {
        self.folder.classes.clone()
    }
    fn input_len(&self) -> usize {
        self.view.input_size() * self.view.input_size() * self.recipe.channels
    }
    fn train_input(&self, i: usize, seed: u64, pos: u64, out: &mut [f32]) -> Result<u32> {
        if self.view.input_size() != self.recipe.size {
            return Err(anyhow!("a folder source viewed at another size is for evaluation only"));
        }
        let n = self.len();
        for k in 0..n {
            let j = (i + k) % n;
            if self.is_bad(j) {
                continue;
            }
            let made = self.decode(j).and_then(|img| {
                self.recipe.train_input(&img, &self.recipe.draw(seed, pos), out).with_context(|| self.name(j))
            });
            match made {
                Ok(()) => return Ok(self.folder.files[j].1),
                Err(_) if self.skip_bad => self.mark_bad(j),
                Err(e) => return Err(e.context("unreadable training image (--skip-bad skips such files)")),
            }
        }
        Err(anyhow!("{}: no readable image", self.folder.root.display()))
    }
    fn eval_input(&self, i: usize, out: &mut [f32]) -> Result<Option<u32>> {
        let made = self
            .decode(i)
            .and_then(|img| self.view.apply(&img, self.recipe.channels, out).with_context(|| self.name(i)));
        match made {
            Ok(()) => Ok(Some(self.folder.files[i].1)),
            Err(_) if self.skip_bad => {
                self.mark_bad(i);
                Ok(None)
            }
            Err(e) => Err(e.context("unreadable evaluation image (--skip-bad skips such files)")),
        }
    }
    fn expensive(&self) -> bool {
        true
    }
    fn skipped(&self) -> usize {
        self.bad.lock().map_or(0, |b| b.len())
    }
}

/// Images `range` of another source (a data-parallel rank's share of an evaluation split).
pub struct Slice {
    pub inner: Arc<dyn Source>,
    pub range: std::ops::Range<usize>,
}

impl Source for Slice {
    fn len(&self) -> usize {
        self.range.len()
    }
    fn classes(&self) -> usize {
        self.inner.classes()
    }
    fn class_names(&self) -> Vec<String> {
        self.inner.class_names()
    }
    fn input_len(&self) -> usize {
        self.inner.input_len()
    }
    fn train_input(&self, i: usize, seed: u64, pos: u64, out: &mut [f32]) -> Result<u32> {
        self.inner.train_input(self.range.start + i, seed, pos, out)
    }
    fn eval_input(&self, i: usize, out: &mut [f32]) -> Result<Option<u32>> {
        self.inner.eval_input(self.range.start + i, out)
    }
    fn expensive(&self) -> bool {
        self.inner.expensive()
    }
    fn skipped(&self) -> usize {
        self.inner.skipped()
    }
}

/// Run `f(j, out_j)` for the `n` inputs of a batch, on `workers` threads when the source is expensive.
pub fn fill<T: Send>(
    src: &dyn Source,
    workers: usize,
    out: &mut [f32],
    n: usize,
    f: impl Fn(usize, &mut [f32]) -> Result<T> + Sync,
) -> Result<Vec<T>> {
    let per = src.input_len();
    let chunks: Vec<(usize, &mut [f32])> = out[..n * per].chunks_mut(per).enumerate().collect();
    if !src.expensive() || workers <= 1 || n <= 1 {
        return chunks.into_iter().map(|(j, o)| f(j, o)).collect();
    }
    let per_worker = n.div_ceil(workers);
    let mut groups: Vec<Vec<(usize, &mut [f32])>> = vec![];
    let mut it = chunks.into_iter().peekable();
    while it.peek().is_some() {
        groups.push(it.by_ref().take(per_worker).collect());
    }
    let results: Vec<Result<Vec<T>>> = std::thread::scope(|s| {
        let handles: Vec<_> = groups
            .into_iter()
            .map(|g| s.spawn(|| g.into_iter().map(|(j, o)| f(j, o)).collect::<Result<Vec<T>>>()))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap_or_else(|_| Err(anyhow!("a loader worker panicked")))).collect()
    });
    let mut all = Vec::with_capacity(n);
    for r in results {
        all.extend(r?);
    }
    Ok(all)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::testutil::TempDir;

    #[test]
    fn images_found_unreadable_before_are_counted_and_not_tried_again() {
        let t = TempDir::new("source-bad");
        let mut png = vec![];
        ::image::GrayImage::from_pixel(12, 12, ::image::Luma([90]))
            .write_to(&mut std::io::Cursor::new(&mut png), ::image::ImageFormat::Png)
            .unwrap();
        t.write("a/0.png", &png);
        t.write("a/1.png", &png[..png.len() / 2]); // truncated
        t.write("a/2.png", &png);
        let folder = crate::data::folder::scan(t.path(), None).unwrap();
        let recipe = Arc::new(ImagenetRecipe::for_size(8, 1));
        let src = FolderSource::new(folder.clone(), recipe.clone(), true).with_unreadable([1, 99]);
        assert_eq!(src.skipped(), 1);
        // training draws past it, and it stays counted once
        let mut out = vec![0.0; src.input_len()];
        for pos in 0..6 {
            src.train_input(1, 0, pos, &mut out).unwrap();
        }
        assert_eq!(src.skipped(), 1);
        // without: found (and counted) only when drawn
        let src = FolderSource::new(folder, recipe, true);
        assert_eq!(src.skipped(), 0);
        assert_eq!(src.eval_input(1, &mut out).unwrap(), None);
        assert_eq!(src.skipped(), 1);
    }
}
