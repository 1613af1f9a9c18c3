//! A loader that runs ahead of compute on its own thread: batch k of a run
//! holds stream positions k*B .. (k+1)*B of the endless sequence of seeded
//! epoch permutations of the training set, augmented. Everything is a
//! function of (seed, k), so a run resumed at iteration k gets the same batches.

use super::Dataset;
use super::augment::{Preprocess, permutation};
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

/// Fill `x`/`labels` with batch `k` (stream positions k*B..); `cached` holds
/// the current epoch's permutation across calls.
#[allow(clippy::too_many_arguments)]
pub fn make_batch(
    d: &Dataset,
    p: &Preprocess,
    seed: u64,
    batch: usize,
    k: u64,
    x: &mut [f32],
    labels: &mut [u32],
    cached: &mut EpochOrder,
) {
    let n = d.len() as u64;
    let per = p.size * p.size * p.src.2;
    for j in 0..batch {
        let pos = k * batch as u64 + j as u64;
        let epoch = pos / n;
        if cached.as_ref().is_none_or(|(e, _)| *e != epoch) {
            *cached = Some((epoch, permutation(d.len(), seed, epoch)));
        }
        let idx = cached.as_ref().unwrap().1[(pos % n) as usize] as usize;
        let (shift, flip) = p.draw(seed, pos);
        p.write(d.image(idx), &mut x[j * per..(j + 1) * per], shift, flip);
        labels[j] = d.labels[idx] as u32;
    }
}

/// Batches `start..end` produced on a background thread, a few ahead.
pub struct Loader {
    rx: Receiver<Batch>,
    handle: Option<JoinHandle<()>>,
}

impl Loader {
    pub fn spawn(d: Arc<Dataset>, p: Arc<Preprocess>, seed: u64, batch: usize, start: u64, end: u64) -> Loader {
        let (tx, rx): (SyncSender<Batch>, Receiver<Batch>) = sync_channel(4);
        let handle = std::thread::Builder::new()
            .name("loader".into())
            .spawn(move || {
                let per = p.size * p.size * p.src.2;
                let mut order = None;
                for k in start..end {
                    let mut b = Batch { iteration: k, x: vec![0.0; batch * per], labels: vec![0; batch] };
                    make_batch(&d, &p, seed, batch, k, &mut b.x, &mut b.labels, &mut order);
                    if tx.send(b).is_err() {
                        return; // the consumer stopped early
                    }
                }
            })
            .expect("spawn the loader thread");
        Loader { rx, handle: Some(handle) }
    }

    /// The next batch, in order.
    pub fn next(&self) -> Option<Batch> {
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
        let (d, p) = (Arc::new(d), Arc::new(p));
        let l = Loader::spawn(d.clone(), p.clone(), 3, 4, 0, 5);
        let mut seen = vec![];
        for k in 0..5 {
            let b = l.next().unwrap();
            assert_eq!(b.iteration, k);
            let (mut x, mut y) = (vec![0.0; 16], vec![0; 4]);
            make_batch(&d, &p, 3, 4, k, &mut x, &mut y, &mut None);
            assert_eq!((x, y.clone()), (b.x, b.labels));
            seen.extend(y);
        }
        assert!(l.next().is_none());
        // the first 10 positions are one epoch: every label once
        let mut first: Vec<u32> = seen[..10].to_vec();
        first.sort();
        assert_eq!(first, (0..10).collect::<Vec<u32>>());
        // a loader started later gives the same batches (resume)
        let l2 = Loader::spawn(d, p, 3, 4, 3, 5);
        assert_eq!(l2.next().unwrap().labels, seen[12..16].to_vec());
    }
}
