//! Data-parallel training: what the [`Trainer`](super::Trainer) asks of a group of processes that
//! train one run together, and the rules of the split. The library knows no transport: MPI
//! (`crate::mpi`, cargo feature `mpi`) implements [`Collective`]; one process is [`Solo`].
//!
//! The split (He et al. train on 8 GPUs the same way; Goyal et al. 2017): the global batch B of
//! iteration k is the single-process batch k, and rank r of W computes its contiguous share, images
//! r*B/W .. (r+1)*B/W, so a run is a function of (seed, iteration) whatever W is. Each rank's loss
//! is the mean over its B/W images; the gradients are summed across ranks and divided by W (the
//! mean over B), in buckets of about 25 MB, last layers first (PyTorch DDP's order). Every rank
//! applies the same update to the same weights, so the weights stay identical.
//!
//! BN: per rank by default (each rank normalises its own B/W images, as frameworks do across
//! devices), or synchronised (`sync_bn`): the forward sums and the backward sums of every BN layer
//! are summed across ranks through [`crate::ops::bn::ShardSum`]. Synchronised runs also sum in
//! leaf order ([`crate::par::SumOrder::Leaves`], [`super::TrainConfig::sum_order`]): every sum over
//! the batch is a halving tree over fixed leaves of the global batch, a rank's share is a subtree,
//! and the ranks' subtrees are combined by the same tree ([`Collective::tree_sum_f32`]), so W ranks
//! compute the single-process step bit for bit (W a power of two that divides the leaves; other
//! W: up to summation order).

use crate::backend::Backend;
use crate::ops::bn::ShardSum;
use std::ops::Range;
use std::sync::Arc;

/// The collective operations of a group of processes training one run. Every rank calls each
/// operation in the same order with buffers of the same length; results are the same on every rank.
/// A transport error ends the whole job (MPI's default): these calls do not return errors.
pub trait Collective: Send + Sync {
    fn rank(&self) -> usize;
    fn size(&self) -> usize;
    /// Element-wise sum over the ranks, in place.
    fn sum_f32(&self, v: &mut [f32]);
    fn sum_f64(&self, v: &mut [f64]);
    /// Every rank's `v`, in rank order, into `all` (`size() * v.len()` values).
    fn gather_f32(&self, v: &[f32], all: &mut [f32]);
    fn gather_f64(&self, v: &[f64], all: &mut [f64]);
    /// Element-wise sum over the ranks in the halving tree of rank order (ranks `..W/2` +
    /// ranks `W/2..`, recursively): the bits are a function of the ranks' values alone, not of
    /// the transport's algorithm. With 2 ranks that is the plain sum (a + b = b + a exactly).
    fn tree_sum_f32(&self, v: &mut [f32]) {
        if self.size() <= 2 {
            return self.sum_f32(v);
        }
        let mut all = vec![0.0; v.len() * self.size()];
        self.gather_f32(v, &mut all);
        tree_over_ranks(&all, v);
    }
    fn tree_sum_f64(&self, v: &mut [f64]) {
        if self.size() <= 2 {
            return self.sum_f64(v);
        }
        let mut all = vec![0.0; v.len() * self.size()];
        self.gather_f64(v, &mut all);
        tree_over_ranks(&all, v);
    }
    /// Rank 0's values, in place.
    fn broadcast_f32(&self, v: &mut [f32]);
    /// Rank 0's bytes (any length), in place.
    fn broadcast_bytes(&self, v: &mut Vec<u8>);
    /// Whether every rank holds the same `value`.
    fn agree(&self, value: u64) -> bool;
    /// A sum over the same ranks on a thread of its own, for the gradient all-reduce overlapped
    /// with backward (in the ranks' tree when `exact`). Every rank calls this at the same point.
    /// None: the transport cannot (then the all-reduce follows backward).
    fn overlap(&self, exact: bool) -> Option<Overlap> {
        let _ = exact;
        None
    }
}

/// The gradient all-reduce overlapped with backward (Horovod's and PyTorch DDP's design): a thread
/// of its own sums each bucket as soon as backward has finished its layers, on a second channel
/// between the same ranks, while backward goes on with the earlier layers; the step waits only for
/// what is left when backward ends. The sums are the same function of the ranks' values as after
/// backward, so results do not change.
pub struct Overlap {
    jobs: Option<std::sync::mpsc::Sender<Vec<f32>>>,
    done: std::sync::mpsc::Receiver<(Vec<f32>, f64)>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Overlap {
    /// Start the thread: `make` runs on it (an MPI transport opens its channel there) and returns
    /// the sum it applies to every bucket. Returns once `make` has returned on this rank.
    pub fn spawn(make: impl FnOnce() -> Box<dyn FnMut(&mut [f32])> + Send + 'static) -> Overlap {
        let (jobs, inbox) = std::sync::mpsc::channel::<Vec<f32>>();
        let (outbox, done) = std::sync::mpsc::channel();
        let (ready_tx, ready) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("allreduce".into())
            .spawn(move || {
                let mut sum = make();
                let _ = ready_tx.send(());
                for mut v in inbox {
                    let t = std::time::Instant::now();
                    sum(&mut v);
                    if outbox.send((v, t.elapsed().as_secs_f64())).is_err() {
                        return;
                    }
                }
            })
            .expect("spawning the all-reduce thread");
        let _ = ready.recv();
        Overlap { jobs: Some(jobs), done, thread: Some(thread) }
    }

    /// One step's all-reduce of `n` gradients, divided by `world`.
    pub fn step(&mut self, n: usize, world: usize) -> OverlapStep<'_> {
        OverlapStep {
            overlap: self,
            buckets: buckets(n, FIRST_BUCKET_BYTES, BUCKET_BYTES),
            sent: 0,
            scale: 1.0 / world as f32,
        }
    }
}

impl Drop for Overlap {
    fn drop(&mut self) {
        self.jobs = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The buckets of one step: sent as backward finishes them, last layers first.
pub struct OverlapStep<'a> {
    overlap: &'a mut Overlap,
    buckets: Vec<Range<usize>>,
    sent: usize,
    scale: f32,
}

impl OverlapStep<'_> {
    /// The gradients from `from` on are final (`tail` = grads[from..]): every bucket inside them
    /// goes to the all-reduce thread.
    pub fn ready(&mut self, from: usize, tail: &[f32]) {
        while let Some(b) = self.buckets.get(self.sent).filter(|b| b.start >= from) {
            let jobs = self.overlap.jobs.as_ref().expect("open until dropped");
            let _ = jobs.send(tail[b.start - from..b.end - from].to_vec());
            self.sent += 1;
        }
    }

    /// After backward: send what is left, wait for every bucket and write the averages into
    /// `grads`. Returns (seconds the thread spent summing, seconds this call waited).
    pub fn finish(mut self, grads: &mut [f32]) -> (f64, f64) {
        self.ready(0, grads);
        let t = std::time::Instant::now();
        let mut busy = 0.0;
        for b in &self.buckets {
            let (v, s) = self.overlap.done.recv().expect("the all-reduce thread ended (a rank failed)");
            grads[b.clone()].iter_mut().zip(&v).for_each(|(g, s)| *g = s * self.scale);
            busy += s;
        }
        (busy, t.elapsed().as_secs_f64())
    }
}

/// `v` = the halving-tree sum of the ranks' rows of `all`.
pub(crate) fn tree_over_ranks<T: Copy + std::ops::AddAssign>(all: &[T], v: &mut [T]) {
    let mut parts: Vec<Vec<T>> = all.chunks(v.len().max(1)).map(<[T]>::to_vec).collect();
    crate::par::tree_sum(&mut parts, v.len());
    if let Some(first) = parts.first() {
        v.copy_from_slice(first);
    }
}

/// One process: every operation is the identity.
pub struct Solo;

impl Collective for Solo {
    fn rank(&self) -> usize {
        0
    }
    fn size(&self) -> usize {
        1
    }
    fn sum_f32(&self, _: &mut [f32]) {}
    fn sum_f64(&self, _: &mut [f64]) {}
    fn gather_f32(&self, v: &[f32], all: &mut [f32]) {
        all.copy_from_slice(v)
    }
    fn gather_f64(&self, v: &[f64], all: &mut [f64]) {
        all.copy_from_slice(v)
    }
    fn broadcast_f32(&self, _: &mut [f32]) {}
    fn broadcast_bytes(&self, _: &mut Vec<u8>) {}
    fn agree(&self, _: u64) -> bool {
        true
    }
}

/// `n` ranks as threads of one process, with no transport (tests of the data-parallel logic).
/// Sums run in rank order, so every rank gets the same bits.
pub struct Threads {
    rank: usize,
    shared: Arc<Shared>,
    /// the second channel of [`Collective::overlap`]
    background: Arc<Shared>,
}

struct Shared {
    n: usize,
    barrier: std::sync::Barrier,
    slots: std::sync::Mutex<Vec<Vec<f64>>>,
}

impl Threads {
    /// The `n` ranks of a new group, one per thread to be.
    pub fn group(n: usize) -> Vec<Threads> {
        let shared = || {
            Arc::new(Shared { n, barrier: std::sync::Barrier::new(n), slots: std::sync::Mutex::new(vec![vec![]; n]) })
        };
        let (shared, background) = (shared(), shared());
        (0..n).map(|rank| Threads { rank, shared: shared.clone(), background: background.clone() }).collect()
    }

    /// Every rank's `mine`, in rank order.
    fn exchange(&self, mine: Vec<f64>) -> Vec<Vec<f64>> {
        self.shared.slots.lock().expect("no rank panicked")[self.rank] = mine;
        self.shared.barrier.wait();
        let all = self.shared.slots.lock().expect("no rank panicked").clone();
        self.shared.barrier.wait();
        all
    }
}

impl Collective for Threads {
    fn rank(&self) -> usize {
        self.rank
    }
    fn size(&self) -> usize {
        self.shared.n
    }
    fn sum_f32(&self, v: &mut [f32]) {
        let all = self.exchange(v.iter().map(|&x| x as f64).collect());
        for (i, x) in v.iter_mut().enumerate() {
            *x = all.iter().fold(0.0f32, |s, r| s + r[i] as f32);
        }
    }
    fn sum_f64(&self, v: &mut [f64]) {
        let all = self.exchange(v.to_vec());
        for (i, x) in v.iter_mut().enumerate() {
            *x = all.iter().fold(0.0, |s, r| s + r[i]);
        }
    }
    fn gather_f32(&self, v: &[f32], all: &mut [f32]) {
        let got = self.exchange(v.iter().map(|&x| x as f64).collect());
        all.iter_mut().zip(got.iter().flatten()).for_each(|(a, g)| *a = *g as f32);
    }
    fn gather_f64(&self, v: &[f64], all: &mut [f64]) {
        let got = self.exchange(v.to_vec());
        all.iter_mut().zip(got.iter().flatten()).for_each(|(a, g)| *a = *g);
    }
    fn broadcast_f32(&self, v: &mut [f32]) {
        let all = self.exchange(v.iter().map(|&x| x as f64).collect());
        v.iter_mut().zip(&all[0]).for_each(|(x, r)| *x = *r as f32);
    }
    fn broadcast_bytes(&self, v: &mut Vec<u8>) {
        let all = self.exchange(v.iter().map(|&x| x as f64).collect());
        *v = all[0].iter().map(|&x| x as u8).collect();
    }
    fn agree(&self, value: u64) -> bool {
        let all = self.exchange(vec![f64::from_bits(value)]);
        all.iter().all(|r| r[0].to_bits() == value)
    }
    fn overlap(&self, exact: bool) -> Option<Overlap> {
        let (rank, background) = (self.rank, self.background.clone());
        Some(Overlap::spawn(move || {
            let t = Threads { rank, shared: background.clone(), background };
            Box::new(move |v: &mut [f32]| if exact { t.tree_sum_f32(v) } else { t.sum_f32(v) })
        }))
    }
}

/// Synchronised BN through a group: the model's [`ShardSum`] is the group's f64 sum, in the
/// ranks' tree when `exact` (the shards' sums are subtrees of the batch's: [`crate::par::SumOrder::Leaves`]).
pub struct SyncBn {
    pub group: Arc<dyn Collective>,
    pub exact: bool,
}

impl ShardSum for SyncBn {
    fn sum(&self, v: &mut [f64]) {
        if self.exact { self.group.tree_sum_f64(v) } else { self.group.sum_f64(v) }
    }
}

/// Gradient bucket size: PyTorch DDP's default, 25 MB.
pub const BUCKET_BYTES: usize = 25 << 20;

/// The first bucket (the last layers'), smaller so that the all-reduce starts early in backward:
/// PyTorch DDP's 1 MB.
pub const FIRST_BUCKET_BYTES: usize = 1 << 20;

/// The buckets of `n` gradient values: ranges from the end of the flat order (the last layers,
/// whose gradients backward produces first) to its start, the first of at most `first / 4`
/// values, the others of at most `bytes / 4`.
pub fn buckets(n: usize, first: usize, bytes: usize) -> Vec<Range<usize>> {
    let mut v = vec![];
    let mut end = n;
    while end > 0 {
        let per = if v.is_empty() { first } else { bytes } / 4;
        let start = end.saturating_sub(per.max(1));
        v.push(start..end);
        end = start;
    }
    v
}

/// Rank `rank`'s share of `n` items split over `world`: contiguous, sizes differing by at most one.
pub fn share(n: usize, rank: usize, world: usize) -> Range<usize> {
    let (q, r) = (n / world, n % world);
    let start = rank * q + rank.min(r);
    start..start + q + usize::from(rank < r)
}

/// Time of the gradient all-reduce, for the bench: `busy` seconds summing, of which `exposed`
/// seconds the steps waited for (the rest was hidden behind backward), over `steps` steps.
#[derive(Clone, Copy, Debug, Default)]
pub struct ReduceTime {
    pub busy: f64,
    pub exposed: f64,
    pub steps: u64,
}

impl ReduceTime {
    /// The share of the all-reduce hidden behind backward (0 when it follows backward).
    pub fn hidden(&self) -> f64 {
        if self.busy > 0.0 { (1.0 - self.exposed / self.busy).max(0.0) } else { 0.0 }
    }
}

/// Average `grads` over the group, bucket by bucket (last layers first), with `scratch` holding
/// one bucket; `exact`: summed in the ranks' tree (each rank's gradients are a subtree of the
/// batch's, [`crate::par::SumOrder::Leaves`]), so that the average is the single-process gradient
/// bit for bit (the division by a power-of-two world is exact).
pub fn average_gradients(group: &dyn Collective, grads: &mut [f32], scratch: &mut Vec<f32>, exact: bool) {
    let w = group.size();
    if w == 1 {
        return;
    }
    let scale = 1.0 / w as f32;
    for r in buckets(grads.len(), FIRST_BUCKET_BYTES, BUCKET_BYTES) {
        let g = &mut grads[r];
        scratch.clear();
        scratch.extend_from_slice(g);
        if exact {
            group.tree_sum_f32(scratch)
        } else {
            group.sum_f32(scratch)
        }
        g.iter_mut().zip(scratch.iter()).for_each(|(g, s)| *g = s * scale);
    }
}

/// Rank 0's parameters and BN running statistics on every rank.
pub fn broadcast_state(group: &dyn Collective, backend: &mut impl Backend) {
    if group.size() > 1 {
        group.broadcast_f32(backend.params_mut());
        broadcast_stats(group, backend);
    }
}

/// Rank 0's BN running statistics on every rank.
pub fn broadcast_stats(group: &dyn Collective, backend: &mut impl Backend) {
    if group.size() > 1 {
        group.broadcast_f32(backend.stats_mut());
    }
}

/// A 64-bit fingerprint of values (FNV-1a over their bits): ranks compare weights with it.
pub fn fingerprint(v: &[f32]) -> u64 {
    v.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, x| (h ^ x.to_bits() as u64).wrapping_mul(0x100_0000_01b3))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_cover_the_gradients_last_layers_first() {
        let b = buckets(10, 16, 16);
        assert_eq!(b, vec![6..10, 2..6, 0..2]);
        assert_eq!(buckets(10, 8, 16), vec![8..10, 4..8, 0..4]);
        assert_eq!(buckets(0, 16, 16), Vec::<Range<usize>>::new());
        assert_eq!(buckets(3, FIRST_BUCKET_BYTES, BUCKET_BYTES), vec![0..3]);
    }

    #[test]
    fn shares_are_contiguous_and_cover_the_batch() {
        for (n, w) in [(128, 2), (10, 3), (2, 4), (7, 1)] {
            let parts: Vec<_> = (0..w).map(|r| share(n, r, w)).collect();
            assert_eq!(parts[0].start, 0);
            assert_eq!(parts[w - 1].end, n);
            for p in parts.windows(2) {
                assert_eq!(p[0].end, p[1].start);
                assert!(p[0].len().abs_diff(p[1].len()) <= 1);
            }
        }
        assert_eq!(share(128, 1, 2), 64..128);
    }

    /// BN over a batch split in two shards with synchronised statistics = BN over the whole batch:
    /// outputs, running statistics and input gradients; the shards' dgamma / dbeta add up to the whole's.
    #[test]
    fn synchronised_bn_over_two_shards_is_bn_over_the_batch() {
        use crate::ops::bn::{self, Act, BnParams, BnSaved};
        use crate::shape::Dims;
        use crate::testutil::rand_vec;
        let (n, c) = (4, 8);
        let xd = Dims::new(n, 3, 5, c);
        let x: Vec<f32> = rand_vec(xd.len(), 7).iter().map(|v| 2.0 * v + 0.5).collect();
        let dy = rand_vec(xd.len(), 8);
        let gamma: Vec<f32> = rand_vec(c, 9).iter().map(|v| 1.0 + v).collect();
        let beta = rand_vec(c, 10);
        // (y, dx, running mean, running var, dgamma, dbeta) of rows `rows` of the batch
        type Out = (Vec<f32>, Vec<f32>, Vec<f32>, Vec<f32>, Vec<f32>, Vec<f32>);
        let run = |rows: std::ops::Range<usize>, parts: usize, sync: Option<&dyn ShardSum>| {
            let per = xd.len() / n;
            let d = Dims { n: n / parts, ..xd };
            let (x, dy) = (&x[rows.start * per..rows.end * per], &dy[rows.start * per..rows.end * per]);
            let (mut rm, mut rv, mut saved) = (vec![0.0; c], vec![1.0; c], BnSaved::default());
            let mut y = vec![0.0; d.len()];
            let p = BnParams { gamma: &gamma, beta: &beta };
            bn::forward_train(
                &p,
                &mut rm,
                &mut rv,
                &mut saved,
                x,
                d,
                Act::Relu,
                None,
                &mut y,
                bn::BatchSum { order: Default::default(), shards: sync },
            );
            let (mut dx, mut dg, mut db) = (vec![0.0; d.len()], vec![0.0; c], vec![0.0; c]);
            bn::backward(
                &gamma,
                &saved,
                x,
                d,
                &y,
                dy,
                Act::Relu,
                &mut dx,
                &mut dg,
                &mut db,
                None,
                bn::BatchSum { order: Default::default(), shards: sync },
            );
            (y, dx, rm, rv, dg, db)
        };
        let whole = run(0..n, 1, None);
        let ranks = Threads::group(2);
        let shards: Vec<_> = std::thread::scope(|s| {
            let hs: Vec<_> = ranks
                .into_iter()
                .map(|g| {
                    s.spawn(move || {
                        let r = g.rank();
                        let sync = SyncBn { group: Arc::new(g), exact: false };
                        run(r * n / 2..(r + 1) * n / 2, 2, Some(&sync))
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let close = |a: &[f32], b: &[f32], what: &str| {
            let scale = b.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            let diff = a.iter().zip(b).fold(0.0f32, |m, (x, y)| m.max((x - y).abs()));
            assert!(diff <= 1e-5 * scale, "{what}: max diff {diff} (scale {scale})");
        };
        let cat = |f: fn(&Out) -> &Vec<f32>| shards.iter().flat_map(|s| f(s).clone()).collect::<Vec<f32>>();
        close(&cat(|s| &s.0), &whole.0, "y");
        close(&cat(|s| &s.1), &whole.1, "dx");
        for s in &shards {
            close(&s.2, &whole.2, "running mean");
            close(&s.3, &whole.3, "running var");
        }
        let add =
            |i: fn(&Out) -> &Vec<f32>| (0..c).map(|ch| i(&shards[0])[ch] + i(&shards[1])[ch]).collect::<Vec<f32>>();
        close(&add(|s| &s.4), &whole.4, "dgamma");
        close(&add(|s| &s.5), &whole.5, "dbeta");
    }

    /// A whole network over a batch split in two shards (ranks as threads) with synchronised BN,
    /// leaf order and averaged gradients takes the single-process steps bit for bit: 12 SGD steps
    /// of ResNet-8 on random data, every parameter and running statistic identical after every
    /// step (the losses, summed across shards in another order, within 1e-6); and in the thread
    /// order (up to summation order) within 1e-5 relative. The thread order runs the direct
    /// convolutions: Winograd applies from a number of tiles on, so the whole batch and a shard
    /// may run different algorithms, and once F(4x4)'s rounding flipped a ReLU input near zero
    /// at step 10 (5e-4 relative after it; 3e-6 before).
    #[test]
    fn two_shards_with_synchronised_bn_take_the_single_process_steps() {
        use crate::arch::ArchSpec;
        use crate::net::Net;
        use crate::optim::Sgd;
        use crate::testutil::rand_vec;
        let spec = ArchSpec::parse("resnet8", &Default::default()).unwrap();
        let (b, steps) = (8, 12);
        let per = 32 * 32 * 3;
        let batch = |k: usize| (rand_vec(b * per, 100 + k as u64), (0..b).map(|i| ((i * 7 + k) % 10) as u32).collect());
        let batches: Vec<(Vec<f32>, Vec<u32>)> = (0..steps).map(batch).collect();
        // params after each step, loss of each step
        let train = |rows: Range<usize>, group: Option<Arc<dyn Collective>>, order: crate::par::SumOrder| {
            let exact = order != crate::par::SumOrder::Threads;
            let mut net = Net::new(&spec, rows.len(), 32, 32, true, 1).unwrap();
            crate::backend::Backend::set_sum_order(&mut net, order);
            if !exact {
                let direct = crate::kernels::KernelPath::all_supported().into_iter().rfind(|p| !p.winograd());
                net.set_kernel_path(direct.expect("the portable path runs anywhere"));
            }
            let mut sgd = Sgd::new(net.params().len());
            sgd.momentum = 0.9;
            sgd.weight_decay = 1e-4;
            if let Some(g) = &group {
                net.set_sync_bn(Some(Arc::new(SyncBn { group: g.clone(), exact })));
            }
            let mut out = vec![];
            for (x, y) in &batches {
                net.input_mut()[..rows.len() * per].copy_from_slice(&x[rows.start * per..rows.end * per]);
                net.forward(rows.len(), true);
                let l = net.loss_backward(&y[rows.clone()]);
                let mut loss = [l.loss as f64 * rows.len() as f64];
                if let Some(g) = &group {
                    g.sum_f64(&mut loss);
                    average_gradients(g.as_ref(), &mut net.grads, &mut vec![], exact);
                }
                net.sgd_step(&mut sgd, 0.1);
                out.push((loss[0] / b as f64, net.params().to_vec(), net.stats.clone()));
            }
            out
        };
        for order in [crate::par::SumOrder::Leaves { images: 2 }, crate::par::SumOrder::Threads] {
            let whole = train(0..b, None, order);
            let ranks = Threads::group(2);
            let shards: Vec<_> = std::thread::scope(|s| {
                let hs: Vec<_> = ranks
                    .into_iter()
                    .map(|g| {
                        let train = &train;
                        s.spawn(move || {
                            let r = g.rank();
                            train(share(b, r, 2), Some(Arc::new(g)), order)
                        })
                    })
                    .collect();
                hs.into_iter().map(|h| h.join().unwrap()).collect()
            });
            let tensors = Net::new(&spec, 1, 32, 32, false, 1).unwrap().plan.params;
            let tol = if order == crate::par::SumOrder::Threads { 1e-5 } else { 0.0 };
            for k in 0..steps {
                // per parameter tensor, the worst max|a-b| / max|b|
                let rel = |a: &[f32], b: &[f32]| {
                    let one = |a: &[f32], b: &[f32]| {
                        let scale = b.iter().fold(0.0f32, |m, v| m.max(v.abs()));
                        a.iter().zip(b).fold(0.0f32, |m, (x, y)| m.max((x - y).abs())) / scale
                    };
                    if a.len() != tensors.iter().map(|t| t.len).sum::<usize>() {
                        return one(a, b);
                    }
                    tensors.iter().map(|t| one(&a[t.offset..][..t.len], &b[t.offset..][..t.len])).fold(0.0, f32::max)
                };
                let (lw, pw, sw) = &whole[k];
                for sh in &shards {
                    let (l, p, st) = &sh[k];
                    assert!((l - lw).abs() <= 1e-6 * lw.abs(), "{order:?} step {k}: loss {l} vs {lw}");
                    assert!(rel(p, pw) <= tol, "{order:?} step {k}: parameters differ by {} relative", rel(p, pw));
                    assert!(rel(st, sw) <= tol, "{order:?} step {k}: running statistics differ by {}", rel(st, sw));
                }
                assert_eq!(shards[0][k].1, shards[1][k].1, "the shards' weights are bit-identical");
            }
        }
    }

    /// The overlapped all-reduce (buckets sent as "backward" finishes them, summed on a thread of
    /// each rank's own) gives the bits of the all-reduce after backward, in both sum orders.
    #[test]
    fn the_overlapped_all_reduce_is_the_all_reduce() {
        use crate::testutil::rand_vec;
        let n = FIRST_BUCKET_BYTES / 4 + 1000; // two buckets
        for exact in [false, true] {
            let ranks = Threads::group(2);
            let results: Vec<(Vec<f32>, Vec<f32>)> = std::thread::scope(|s| {
                let hs: Vec<_> = ranks
                    .into_iter()
                    .map(|g| {
                        s.spawn(move || {
                            let grads = rand_vec(n, 40 + g.rank() as u64);
                            let mut after = grads.clone();
                            average_gradients(&g, &mut after, &mut vec![], exact);
                            let mut overlap = g.overlap(exact).expect("threads overlap");
                            let mut pending = overlap.step(n, 2);
                            // "backward" finishes the last layers first
                            for from in [n - 10, n - FIRST_BUCKET_BYTES / 4, 500, 0] {
                                pending.ready(from, &grads[from..]);
                            }
                            let mut overlapped = grads.clone();
                            pending.finish(&mut overlapped);
                            (after, overlapped)
                        })
                    })
                    .collect();
                hs.into_iter().map(|h| h.join().unwrap()).collect()
            });
            for (after, overlapped) in &results {
                assert!(after == overlapped, "exact {exact}: the overlapped all-reduce differs");
            }
            assert!(results[0].0 == results[1].0, "the ranks agree");
        }
    }

    #[test]
    fn one_process_changes_nothing() {
        let mut g = vec![1.0, 2.0];
        average_gradients(&Solo, &mut g, &mut vec![], false);
        assert_eq!(g, vec![1.0, 2.0]);
        assert_ne!(fingerprint(&[1.0, 2.0]), fingerprint(&[2.0, 1.0]));
    }
}
