//! The parallel loops every layer uses, and the thread pool under them.
//!
//! All parallelism in the engine goes through these few helpers — this is the
//! only module that uses rayon — so that the tasks' loops are compiled for the
//! CPU's vector width (`vectorized`), the splits and the order of every sum
//! are fixed here (bit-identical results run to run, which exact resume relies
//! on), and the pool could be swapped without touching a layer. Callers mark
//! the closures they pass `#[inline(always)]` (see `vectorized` for why).

use rayon::prelude::*;

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

/// Split `0..rows` into about one range per thread and reduce `f(range, acc)`
/// into per-channel f64 sums of width `width`. The ranges depend only on the
/// thread count and the sum runs in range order, so results are bit-identical
/// from run to run (resumed training relies on it).
pub fn reduce_rows<F>(rows: usize, width: usize, f: F) -> Vec<f64>
where
    F: Fn(std::ops::Range<usize>, &mut [f64]) + Sync + Send,
{
    let tasks = threads().max(1);
    let per = rows.div_ceil(tasks).max(1);
    let parts: Vec<Vec<f64>> = (0..rows.div_ceil(per))
        .into_par_iter()
        .map(|t| {
            let mut acc = vec![0.0f64; width];
            vectorized(
                #[inline(always)]
                || f(t * per..((t + 1) * per).min(rows), &mut acc),
            );
            acc
        })
        .collect();
    sum_in_order(parts, width)
}

/// Element-wise sum of `parts`, first to last.
fn sum_in_order(parts: Vec<Vec<f64>>, width: usize) -> Vec<f64> {
    let mut total = vec![0.0f64; width];
    for p in parts {
        total.iter_mut().zip(&p).for_each(|(a, b)| *a += b);
    }
    total
}

/// Split `out` (rows of `row_len`) into about one chunk per thread, call
/// `f(first_row, chunk, acc)` on each in parallel, and sum the f64 `acc`s of
/// width `width` in chunk order (bit-identical from run to run).
pub fn reduce_rows_mut<F>(out: &mut [f32], row_len: usize, width: usize, f: F) -> Vec<f64>
where
    F: Fn(usize, &mut [f32], &mut [f64]) + Sync + Send,
{
    let rows = out.len() / row_len.max(1);
    let per = rows.div_ceil(threads().max(1)).max(1);
    let parts: Vec<Vec<f64>> = out
        .par_chunks_mut(per * row_len)
        .enumerate()
        .map(|(t, chunk)| {
            let mut acc = vec![0.0f64; width];
            vectorized(
                #[inline(always)]
                || f(t * per, chunk, &mut acc),
            );
            acc
        })
        .collect();
    sum_in_order(parts, width)
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

/// Each of `partials` (one per task) gets a contiguous share of `0..items`.
pub fn for_partials<F>(partials: &mut [Vec<f32>], items: usize, f: F)
where
    F: Fn(std::ops::Range<usize>, &mut Vec<f32>) + Sync + Send,
{
    let tasks = partials.len().max(1);
    let per = items.div_ceil(tasks).max(1);
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
}
