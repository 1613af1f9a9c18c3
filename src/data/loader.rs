//! A loader that runs ahead of compute on its own thread: batch k of a run
//! holds stream positions k*B .. (k+1)*B of the endless sequence of seeded
//! epoch permutations of the training set, augmented. Everything is a
//! function of (seed, k), so a run resumed at iteration k gets the same
//! batches. Sources that decode files spread each batch over worker threads.

use super::augment::permutation;
use super::source::{Source, fill};
use anyhow::Result;
use std::ops::Range;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;

/// One training batch: inputs (B, S, S, C) NHWC and labels.
pub struct Batch {
    pub iteration: u64,
    pub x: Vec<f32>,
    pub labels: Vec<u32>,
}

/// The permutation of the epoch a batch is in, kept between batches.
pub type EpochOrder = Option<(u64, Vec<u32>)>;

/// Fill `x`/`labels` with the images `part` (all: `0..batch`) of batch `k` (stream positions
/// k*B..); `cached` holds the current epoch's permutation across calls. A data-parallel rank makes
/// its share of the single-process batch.
#[allow(clippy::too_many_arguments)]
pub fn make_batch(
    src: &dyn Source,
    workers: usize,
    seed: u64,
    (batch, part): (usize, Range<usize>),
    k: u64,
    x: &mut [f32],
    labels: &mut [u32],
    cached: &mut EpochOrder,
) -> Result<()> {
    let n = src.len() as u64;
    let first = k * batch as u64 + part.start as u64;
    // the images of the batch (the permutation may change within it at an epoch's end)
    let mut idx = Vec::with_capacity(part.len());
    for j in 0..part.len() {
        let pos = first + j as u64;
        let epoch = pos / n;
        if cached.as_ref().is_none_or(|(e, _)| *e != epoch) {
            *cached = Some((epoch, permutation(src.len(), seed, epoch)));
        }
        idx.push(cached.as_ref().expect("set above").1[(pos % n) as usize] as usize);
    }
    let got = fill(src, workers, x, part.len(), |j, out| src.train_input(idx[j], seed, first + j as u64, out))?;
    labels[..part.len()].copy_from_slice(&got);
    Ok(())
}

/// Batches `start..end` produced on a background thread, a few ahead.
pub struct Loader {
    rx: Receiver<Result<Batch>>,
    handle: Option<JoinHandle<()>>,
}

impl Loader {
    /// The images `part` of each batch of `batch` (a data-parallel rank's share; `0..batch`: all).
    pub fn spawn(
        src: Arc<dyn Source>,
        workers: usize,
        seed: u64,
        (batch, part): (usize, Range<usize>),
        start: u64,
        end: u64,
    ) -> Loader {
        let (tx, rx): (SyncSender<Result<Batch>>, Receiver<Result<Batch>>) = sync_channel(4);
        let handle = std::thread::Builder::new()
            .name("loader".into())
            .spawn(move || {
                let per = src.input_len();
                let mut order = None;
                let m = part.len();
                for k in start..end {
                    let mut b = Batch { iteration: k, x: vec![0.0; m * per], labels: vec![0; m] };
                    let (bp, x, y) = ((batch, part.clone()), &mut b.x, &mut b.labels);
                    let r = make_batch(src.as_ref(), workers, seed, bp, k, x, y, &mut order);
                    let failed = r.is_err();
                    if tx.send(r.map(|()| b)).is_err() || failed {
                        return; // the consumer stopped early, or this batch failed
                    }
                }
            })
            .expect("spawn the loader thread");
        Loader { rx, handle: Some(handle) }
    }

    /// The next batch, in order (None after the last); an error names the image that failed.
    pub fn next(&self) -> Option<Result<Batch>> {
        self.rx.recv().ok()
    }
}

impl Drop for Loader {
    fn drop(&mut self) {
        // dropping the receiver makes the producer's next send fail: it stops
        drop(std::mem::replace(&mut self.rx, sync_channel(1).1));
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::Dataset;
    use crate::data::augment::Preprocess;
    use crate::data::source::MemorySource;

    #[test]
    fn loader_matches_direct_batches_and_covers_each_epoch() {
        let n = 10;
        let d = Dataset {
            images: (0..n * 4).map(|i| i as u8).collect(),
            labels: (0..n as u16).collect(),
            h: 2,
            w: 2,
            c: 1,
            classes: 10,
            class_names: vec![],
        };
        let p = Preprocess { src: (2, 2, 1), size: 2, mean: vec![0.0; 4], crop_pad: 0, flip: false };
        let src: Arc<dyn Source> = Arc::new(MemorySource { data: Arc::new(d), pre: Arc::new(p) });
        let l = Loader::spawn(src.clone(), 1, 3, (4, 0..4), 0, 5);
        let mut seen = vec![];
        for k in 0..5 {
            let b = l.next().unwrap().unwrap();
            assert_eq!(b.iteration, k);
            let (mut x, mut y) = (vec![0.0; 16], vec![0; 4]);
            make_batch(src.as_ref(), 1, 3, (4, 0..4), k, &mut x, &mut y, &mut None).unwrap();
            assert_eq!((x, y.clone()), (b.x, b.labels));
            seen.extend(y);
        }
        assert!(l.next().is_none());
        // the first 10 positions are one epoch: every label once
        let mut first: Vec<u32> = seen[..10].to_vec();
        first.sort();
        assert_eq!(first, (0..10).collect::<Vec<u32>>());
        // a loader started later gives the same batches (resume)
        let l2 = Loader::spawn(src.clone(), 2, 3, (4, 0..4), 3, 5);
        assert_eq!(l2.next().unwrap().unwrap().labels, seen[12..16].to_vec());
        // a data-parallel rank's share: the same images and inputs as that part of the whole batch
        let l3 = Loader::spawn(src.clone(), 1, 3, (4, 1..3), 2, 3);
        let part = l3.next().unwrap().unwrap();
        let (mut x, mut y) = (vec![0.0; 16], vec![0; 4]);
        make_batch(src.as_ref(), 1, 3, (4, 0..4), 2, &mut x, &mut y, &mut None).unwrap();
        assert_eq!((part.x, part.labels), (x[4..12].to_vec(), y[1..3].to_vec()));
    }
}
