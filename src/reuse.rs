//! Scratch buffers reused from call to call on the same thread, for the kernels' per-call
//! working memory (Winograd's transformed weights and their gradients, the transforms' blocks).
//!
//! Why: allocated fresh on every call, blocks of a few hundred KiB and more go back to the system
//! when freed (glibc unmaps them, or trims its per-thread arenas), so every call faulted their
//! pages in again and zeroed them: about 10,000 page faults per training step of ResNet-110 on the
//! AMD EPYC (Zen 5) machine, 2.5-3.5% of the step (measured by keeping glibc from giving memory
//! back, `MALLOC_TRIM_THRESHOLD_`, alternating). Here a buffer is taken from its thread's pool and
//! put back when dropped, so its pages stay mapped and, being small, in cache.
//!
//! Bounded: a thread keeps at most [`KEPT`] buffers, each no larger than the largest it was asked
//! for. A buffer dropped on another thread than the one it came from joins that thread's pool.

use std::cell::RefCell;
use std::ops::{Deref, DerefMut};

/// Buffers a thread keeps for reuse; more are freed.
pub const KEPT: usize = 16;

thread_local! {
    static POOL: RefCell<Vec<Vec<f32>>> = const { RefCell::new(Vec::new()) };
}

/// A vector of `len` zeros: the pool's smallest buffer that holds `len` values without growing,
/// else its largest (grown), else a new one.
fn take(len: usize) -> Vec<f32> {
    let mut v = POOL
        .try_with(|p| {
            let mut p = p.borrow_mut();
            let fits = (0..p.len()).filter(|&i| p[i].capacity() >= len).min_by_key(|&i| p[i].capacity());
            let pick = fits.or_else(|| (0..p.len()).max_by_key(|&i| p[i].capacity()));
            pick.map(|i| p.swap_remove(i))
        })
        .ok()
        .flatten()
        .unwrap_or_default();
    v.clear();
    v.resize(len, 0.0);
    v
}

/// Back to this thread's pool, or freed where it keeps [`KEPT`] already (or is being torn down).
fn give(v: Vec<f32>) {
    if v.capacity() == 0 {
        return;
    }
    let _ = POOL.try_with(|p| {
        let mut p = p.borrow_mut();
        if p.len() < KEPT {
            p.push(v);
        }
    });
}

/// One scratch vector of zeros, back to the pool when dropped.
pub struct Buffer(Vec<f32>);

impl Buffer {
    /// `len` zeros.
    pub fn zeroed(len: usize) -> Buffer {
        Buffer(take(len))
    }

    /// The vector, kept for good (not returned to the pool).
    pub fn into_vec(mut self) -> Vec<f32> {
        std::mem::take(&mut self.0)
    }
}

impl Deref for Buffer {
    type Target = Vec<f32>;
    fn deref(&self) -> &Vec<f32> {
        &self.0
    }
}

impl DerefMut for Buffer {
    fn deref_mut(&mut self) -> &mut Vec<f32> {
        &mut self.0
    }
}

impl Drop for Buffer {
    fn drop(&mut self) {
        give(std::mem::take(&mut self.0));
    }
}

/// `count` scratch vectors of zeros (per-task partial sums), back to the pool when dropped.
pub struct Buffers(Vec<Vec<f32>>);

impl Buffers {
    /// `count` vectors of `len` zeros.
    pub fn zeroed(count: usize, len: usize) -> Buffers {
        Buffers((0..count).map(|_| take(len)).collect())
    }
}

impl Deref for Buffers {
    type Target = Vec<Vec<f32>>;
    fn deref(&self) -> &Vec<Vec<f32>> {
        &self.0
    }
}

impl DerefMut for Buffers {
    fn deref_mut(&mut self) -> &mut Vec<Vec<f32>> {
        &mut self.0
    }
}

impl Drop for Buffers {
    fn drop(&mut self) {
        self.0.drain(..).for_each(give);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The pool's buffers on this thread: (count, capacities).
    fn pooled() -> Vec<usize> {
        POOL.with(|p| p.borrow().iter().map(Vec::capacity).collect())
    }

    #[test]
    fn a_dropped_buffer_is_reused_zeroed() {
        let first = {
            let mut b = Buffer::zeroed(1000);
            b.iter_mut().for_each(|v| *v = 7.0);
            b.as_ptr()
        };
        let b = Buffer::zeroed(600);
        // the same memory, its old values gone
        assert_eq!(b.as_ptr(), first);
        assert_eq!(b.len(), 600);
        assert!(b.iter().all(|&v| v == 0.0));
    }

    #[test]
    fn the_smallest_buffer_that_fits_is_taken() {
        let (small, large) = (Buffer::zeroed(100), Buffer::zeroed(10_000));
        let (ps, pl) = (small.as_ptr(), large.as_ptr());
        drop((small, large));
        let (a, b) = (Buffer::zeroed(50), Buffer::zeroed(5000));
        assert_eq!((a.as_ptr(), b.as_ptr()), (ps, pl));
    }

    #[test]
    fn the_pool_keeps_at_most_kept_buffers() {
        let many = Buffers::zeroed(KEPT + 5, 64);
        assert_eq!(many.len(), KEPT + 5);
        assert!(many.iter().all(|v| v.len() == 64 && v.iter().all(|&x| x == 0.0)));
        drop(many);
        assert_eq!(pooled().len(), KEPT);
        // kept for good: not back in the pool
        let v = Buffer::zeroed(64).into_vec();
        assert_eq!(pooled().len(), KEPT - 1);
        assert_eq!(v.len(), 64);
    }
}
