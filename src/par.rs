//! The parallel loops every layer uses, and the thread pool under them.
//!
//! All parallelism in the engine goes through these few helpers — this is the
//! only module that uses rayon — so that the tasks' loops are compiled for the
//! CPU's vector width (`vectorized`), the splits and the order of every sum
//! are fixed here (bit-identical results run to run, which exact resume relies
//! on), and the pool could be swapped without touching a layer. Callers mark
//! the closures they pass `#[inline(always)]` (see `vectorized` for why).

use rayon::prelude::*;
use std::ops::Range;

/// Run a task's `f` compiled for AVX-512 where the process's kernel path runs
/// it: the closure is inlined into a `#[target_feature]` function, so its
/// loops auto-vectorise with 16-lane registers. The arithmetic is the same
/// source, and the compiler never reassociates float operations, so both
/// builds give identical bits.
///
/// Inlined is the point: a task's loop runs in both `with_avx512` and the
/// fallback, so LLVM inlines it into both only where it is small, or where
/// it is marked. Hence every closure handed to the helpers here, and the
/// helpers' own task closures, are `#[inline(always)]`: left to the
/// inliner's thresholds, a change elsewhere in the crate once moved BN's
/// backward pass out of `with_avx512` (baseline x86-64 code, 4x slower).
#[inline(always)]
fn vectorized<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    if let Some(cpu) = crate::kernels::KernelPath::cached().avx512() {
        // SAFETY: `cpu` proves the CPU has every feature `with_avx512` enables.
        return unsafe { with_avx512(cpu, f) };
    }
    f()
}

/// `f()`, compiled with the AVX-512 features enabled.
///
/// # Safety
/// The CPU must have the enabled features, [`crate::kernels::AVX512_FEATURES`],
/// which the `Avx512Cpu` passed in proves (that is its only duty).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx2,fma")]
unsafe fn with_avx512<R>(_cpu: crate::kernels::Avx512Cpu, f: impl FnOnce() -> R) -> R {
    f()
}

/// `f()` on a thread of the current pool (inline where the caller is one; from any other
/// thread, the caller waits while a worker runs it). A network pass is dozens of parallel
/// loops with a little serial work between them: run from outside the pool, each loop hands
/// its tasks over and puts the caller to sleep until they end, so every layer pays a hand-over
/// and a wake-up; on a worker, the loops' tasks go to its own queue and the other workers,
/// still spinning from the last loop, take them at once.
///
/// Not for work that waits on other work outside its own loops (shards whose passes meet to
/// sum BN statistics): rayon lets a worker that waits for its loop's tasks run any pending
/// job, so it may take up the other shard's pass on top of its own, and the two wait forever.
pub fn on_pool<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    rayon::scope(|_| f())
}

/// Threads the current pool runs.
pub fn threads() -> usize {
    rayon::current_num_threads()
}

/// Run every parallel loop on `n` threads from now on. Call before the first
/// loop: the pool starts once per process.
pub fn set_threads(n: usize) -> Result<(), ThreadsError> {
    rayon::ThreadPoolBuilder::new().num_threads(n).build_global().map_err(|source| ThreadsError { n, source })
}

/// `f()` with its parallel loops on a pool of its own of `n` threads (the
/// global pool is left as it is): single-thread measurements.
pub fn with_threads<R: Send>(n: usize, f: impl FnOnce() -> R + Send) -> Result<R, ThreadsError> {
    let pool = rayon::ThreadPoolBuilder::new().num_threads(n).build().map_err(|source| ThreadsError { n, source })?;
    Ok(pool.install(f))
}

/// The pool could not be set up with the threads asked for.
#[derive(Debug)]
pub struct ThreadsError {
    n: usize,
    source: rayon::ThreadPoolBuildError,
}

impl std::fmt::Display for ThreadsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "cannot run on {} threads: {}", self.n, self.source)
    }
}

impl std::error::Error for ThreadsError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

/// How many tasks [`for_rows`] splits `rows` rows into: about 4 per thread,
/// of at least `min_rows` rows.
fn row_tasks(rows: usize, min_rows: usize) -> usize {
    (threads() * 4).min(rows / min_rows.max(1)).max(1)
}

/// Run `f(first_row, chunk)` over `out` split into rows of `row_len` values,
/// in parallel: about 4 tasks per thread, of at least `min_rows` rows, sizes
/// differing by at most one row (so that 28 rows on 2 threads are 14 + 14,
/// not 16 + 12).
pub fn for_rows<F>(out: &mut [f32], row_len: usize, min_rows: usize, f: F)
where
    F: Fn(usize, &mut [f32]) + Sync + Send,
{
    if out.is_empty() || row_len == 0 {
        return;
    }
    let rows = out.len() / row_len;
    let tasks = row_tasks(rows, min_rows);
    let base = SyncPtr(out.as_mut_ptr());
    (0..tasks).into_par_iter().for_each(|t| {
        let (lo, hi) = (t * rows / tasks, (t + 1) * rows / tasks);
        // SAFETY: the tasks' row ranges are disjoint and inside `out`.
        let chunk = unsafe { std::slice::from_raw_parts_mut(base.get().add(lo * row_len), (hi - lo) * row_len) };
        vectorized(
            #[inline(always)]
            || f(lo, chunk),
        )
    });
}

/// [`for_rows`] over two buffers with the same number of rows (of `a_len`
/// and `b_len` values, of any element types): `f(first_row, a_chunk, b_chunk)`
/// gets the same rows of both.
pub fn for_rows_pair<A, B, F>(a: &mut [A], a_len: usize, b: &mut [B], b_len: usize, min_rows: usize, f: F)
where
    A: Send,
    B: Send,
    F: Fn(usize, &mut [A], &mut [B]) + Sync + Send,
{
    if a_len == 0 || b_len == 0 {
        return;
    }
    let rows = a.len() / a_len;
    assert_eq!(rows, b.len() / b_len, "for_rows_pair: the buffers have different numbers of rows");
    let tasks = row_tasks(rows, min_rows);
    let (mut a, mut b) = (a, b);
    let mut chunks = Vec::with_capacity(tasks);
    for t in 0..tasks {
        let (lo, hi) = (t * rows / tasks, (t + 1) * rows / tasks);
        let (a_chunk, a_rest) = std::mem::take(&mut a).split_at_mut((hi - lo) * a_len);
        let (b_chunk, b_rest) = std::mem::take(&mut b).split_at_mut((hi - lo) * b_len);
        (a, b) = (a_rest, b_rest);
        chunks.push((lo, a_chunk, b_chunk));
    }
    chunks.into_par_iter().for_each(|(lo, a_chunk, b_chunk)| {
        vectorized(
            #[inline(always)]
            || f(lo, a_chunk, b_chunk),
        )
    });
}

/// The order of a sum over a batch (BN statistics, weight gradients): how the batch is cut into
/// parts, each summed by one task, and how the parts' partial sums are combined.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SumOrder {
    /// One part per task of the thread split, combined first to last: the fastest; the bits are a
    /// function of the thread count (bit-identical run to run on the same count).
    #[default]
    Threads,
    /// One part per leaf of `images` images, combined by the halving tree (left half + right
    /// half, recursively): the bits are a function of the batch alone. Any thread count gives
    /// them, and so does a batch split across processes at leaf boundaries into a power-of-two
    /// number of equal shares, each a subtree of the same tree (exact data-parallel steps).
    Leaves { images: usize },
}

impl SumOrder {
    /// The parts of `rows` rows, `image_rows` rows per image: row ranges in order.
    pub fn parts(self, rows: usize, image_rows: usize) -> Vec<Range<usize>> {
        let per = match self {
            SumOrder::Threads => rows.div_ceil(threads().max(1)).max(1),
            SumOrder::Leaves { images } => (images * image_rows).max(1),
        };
        (0..rows.div_ceil(per)).map(|t| t * per..((t + 1) * per).min(rows)).collect()
    }

    /// How many parts `n` images make in a weight gradient: one per task (at most `tasks`, one
    /// image at least each) or one per leaf.
    pub fn image_parts(self, n: usize, tasks: usize) -> usize {
        match self {
            SumOrder::Threads => tasks.min(n).max(1),
            SumOrder::Leaves { images } => n.div_ceil(images.max(1)).max(1),
        }
    }

    /// How many images each of `parts` parts of `n` images gets (the last may get fewer).
    pub fn image_share(self, n: usize, parts: usize) -> usize {
        match self {
            SumOrder::Threads => n.div_ceil(parts.max(1)).max(1),
            SumOrder::Leaves { images } => images.max(1),
        }
    }

    /// Combine the first `len` values of each of `parts` into `parts[0]` in this order.
    pub fn combine<T: Copy + std::ops::AddAssign>(self, parts: &mut [Vec<T>], len: usize) {
        match self {
            SumOrder::Threads => {
                if let Some((first, rest)) = parts.split_first_mut() {
                    for p in rest {
                        first[..len].iter_mut().zip(&p[..len]).for_each(|(a, b)| *a += *b);
                    }
                }
            }
            SumOrder::Leaves { .. } => tree_sum(parts, len),
        }
    }
}

/// The halving tree: `parts[0]` = sum(first half) + sum(second half), recursively.
pub fn tree_sum<T: Copy + std::ops::AddAssign>(parts: &mut [Vec<T>], len: usize) {
    if parts.len() < 2 {
        return;
    }
    let (a, b) = parts.split_at_mut(parts.len() / 2);
    tree_sum(a, len);
    tree_sum(b, len);
    a[0][..len].iter_mut().zip(&b[0][..len]).for_each(|(x, y)| *x += *y);
}

/// Reduce `f(range, acc)` over the parts of `0..rows` (`order`, `image_rows` rows per image) into
/// per-part f64 sums of width `width`, in parallel; the parts' sums in order (combine them with
/// [`SumOrder::combine`]). Bit-identical from run to run (resumed training relies on it).
pub fn reduce_rows<F>(order: SumOrder, image_rows: usize, rows: usize, width: usize, f: F) -> Vec<Vec<f64>>
where
    F: Fn(Range<usize>, &mut [f64]) + Sync + Send,
{
    order
        .parts(rows, image_rows)
        .into_par_iter()
        .map(|r| {
            let mut acc = vec![0.0f64; width];
            vectorized(
                #[inline(always)]
                || f(r, &mut acc),
            );
            acc
        })
        .collect()
}

/// [`reduce_rows`] over `out` (rows of `row_len`): `f(first_row, chunk, acc)` gets each part's
/// rows of `out` to write.
pub fn reduce_rows_mut<F>(
    order: SumOrder,
    image_rows: usize,
    out: &mut [f32],
    row_len: usize,
    width: usize,
    f: F,
) -> Vec<Vec<f64>>
where
    F: Fn(usize, &mut [f32], &mut [f64]) + Sync + Send,
{
    let rows = out.len() / row_len.max(1);
    let parts = order.parts(rows, image_rows);
    let mut chunks = Vec::with_capacity(parts.len());
    let mut rest = out;
    for r in &parts {
        let (chunk, tail) = std::mem::take(&mut rest).split_at_mut(r.len() * row_len);
        chunks.push((r.start, chunk));
        rest = tail;
    }
    chunks
        .into_par_iter()
        .map(|(first, chunk)| {
            let mut acc = vec![0.0f64; width];
            vectorized(
                #[inline(always)]
                || f(first, chunk, &mut acc),
            );
            acc
        })
        .collect()
}

/// `f(i, chunk)` for every chunk of `out` of `chunk_len` values (the last
/// one may be shorter), in parallel.
pub fn for_chunks<F>(out: &mut [f32], chunk_len: usize, f: F)
where
    F: Fn(usize, &mut [f32]) + Sync + Send,
{
    out.par_chunks_mut(chunk_len.max(1)).enumerate().for_each(|(i, chunk)| {
        vectorized(
            #[inline(always)]
            || f(i, chunk),
        )
    });
}

/// `f(i)` for every i in 0..n, in parallel.
pub fn for_each_index<F>(n: usize, f: F)
where
    F: Fn(usize) + Sync + Send,
{
    (0..n).into_par_iter().for_each(|i| {
        vectorized(
            #[inline(always)]
            || f(i),
        )
    });
}

/// `f(i, item)` for every item of `items`, in parallel.
pub fn for_each_mut<T, F>(items: &mut [T], f: F)
where
    T: Send,
    F: Fn(usize, &mut T) + Sync + Send,
{
    items.par_iter_mut().enumerate().for_each(|(i, item)| {
        vectorized(
            #[inline(always)]
            || f(i, item),
        )
    });
}

/// A pointer that tasks writing disjoint parts of one buffer may share.
/// Crate-private: every user states at its `unsafe` block why the parts are disjoint.
#[derive(Clone, Copy)]
pub(crate) struct SyncPtr(pub(crate) *mut f32);
// SAFETY: sharing the address is harmless; writing through it is `unsafe`, and
// each user writes disjoint regions only (documented at each use).
unsafe impl Send for SyncPtr {}
// SAFETY: as for Send.
unsafe impl Sync for SyncPtr {}
impl SyncPtr {
    pub(crate) fn get(self) -> *mut f32 {
        self.0
    }
}

/// Partial `t` of `partials` (one per task) gets items `t * per .. (t + 1) * per` of `0..items`.
pub fn for_partials<F>(partials: &mut [Vec<f32>], items: usize, per: usize, f: F)
where
    F: Fn(Range<usize>, &mut Vec<f32>) + Sync + Send,
{
    let per = per.max(1);
    partials.par_iter_mut().enumerate().for_each(|(t, p)| {
        let lo = (t * per).min(items);
        let hi = ((t + 1) * per).min(items);
        vectorized(
            #[inline(always)]
            || f(lo..hi, p),
        )
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn on_pool_runs_on_a_worker_and_inline_on_one() {
        // from a thread outside every pool: on a worker of the global pool
        let outside = std::thread::spawn(|| (rayon::current_thread_index(), on_pool(rayon::current_thread_index)));
        let (caller, runner) = outside.join().unwrap();
        assert_eq!(caller, None);
        assert!(runner.is_some(), "on_pool ran its closure outside the pool");
        // on a worker of a pool of its own: on that very thread, with that pool's loops
        let (same, threads) = with_threads(3, || {
            let me = std::thread::current().id();
            on_pool(|| (std::thread::current().id() == me, threads()))
        })
        .unwrap();
        assert!(same, "on_pool left the worker it was called on");
        assert_eq!(threads, 3);
    }

    #[test]
    fn pair_rows_get_the_same_rows_of_both_buffers() {
        let (mut a, mut b) = (vec![0.0f32; 3 * 37], vec![0u32; 37]);
        for_rows_pair(&mut a, 3, &mut b, 1, 1, |first, ac, bc| {
            assert_eq!(ac.len(), 3 * bc.len());
            for (i, (ar, bv)) in ac.chunks_exact_mut(3).zip(bc).enumerate() {
                ar.fill((first + i) as f32);
                *bv = (first + i) as u32;
            }
        });
        assert!(a.chunks(3).zip(&b).enumerate().all(|(i, (ar, &bv))| ar == [i as f32; 3] && bv == i as u32));
    }

    #[test]
    fn a_pool_of_its_own_runs_the_threads_asked_for() {
        assert_eq!(with_threads(1, threads).unwrap(), 1);
        assert_eq!(with_threads(3, threads).unwrap(), 3);
    }

    /// The halving tree: ((a + b) + (c + d)) for four parts, ((a + b) + (c + (d + e))) for five;
    /// a power-of-two split at part boundaries gives the subtrees of the same tree.
    #[test]
    fn tree_sums_halve_and_splits_are_subtrees() {
        // values whose sums depend on the order in f32
        let v = [1.0e8f32, 1.0, -1.0e8, 0.5, 3.0, 7.0e-3, 1.0e7, -2.5];
        let mut four: Vec<Vec<f32>> = v[..4].iter().map(|x| vec![*x]).collect();
        tree_sum(&mut four, 1);
        assert_eq!(four[0][0], (v[0] + v[1]) + (v[2] + v[3]));
        let mut five: Vec<Vec<f32>> = v[..5].iter().map(|x| vec![*x]).collect();
        tree_sum(&mut five, 1);
        assert_eq!(five[0][0], (v[0] + v[1]) + (v[2] + (v[3] + v[4])));
        let whole = {
            let mut p: Vec<Vec<f32>> = v.iter().map(|x| vec![*x]).collect();
            tree_sum(&mut p, 1);
            p[0][0]
        };
        for w in [2, 4] {
            let mut roots: Vec<Vec<f32>> = v
                .chunks(v.len() / w)
                .map(|c| {
                    let mut p: Vec<Vec<f32>> = c.iter().map(|x| vec![*x]).collect();
                    tree_sum(&mut p, 1);
                    p.swap_remove(0)
                })
                .collect();
            tree_sum(&mut roots, 1);
            assert_eq!(roots[0][0], whole, "{w} shards");
        }
        // the thread order is first to last
        let mut seq: Vec<Vec<f32>> = v[..4].iter().map(|x| vec![*x]).collect();
        SumOrder::Threads.combine(&mut seq, 1);
        assert_eq!(seq[0][0], ((v[0] + v[1]) + v[2]) + v[3]);
    }

    #[test]
    fn leaves_cut_rows_by_images_whatever_the_threads() {
        let order = SumOrder::Leaves { images: 2 };
        let cut = |threads| with_threads(threads, || order.parts(5 * 6, 6)).unwrap();
        assert_eq!(cut(1), vec![0..12, 12..24, 24..30]);
        assert_eq!(cut(3), cut(1));
        assert_eq!(order.image_parts(5, 8), 3);
        assert_eq!(with_threads(2, || SumOrder::Threads.parts(10, 3)).unwrap(), vec![0..5, 5..10]);
    }
}
