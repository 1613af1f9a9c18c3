//! The allocator of our binaries: the system's, with every block of 4 KiB or more starting on a
//! cache line (64 bytes).
//!
//! Why: glibc returns large blocks 16 bytes past a page boundary, so in an activation or a
//! packed weight buffer every 64-byte vector load or store of the kernels straddles two cache
//! lines. Measured on the AMD EPYC machine (examples/conv_bench with its output offset to a line
//! boundary, then whole nets with this allocator, alternating): 1x1 convolutions at 56 x 56
//! 8-11% faster, ResNet-50 inference 4-5%, ResNet-20 training 8-11%.
//!
//! How: a block of `size` >= [`MIN_SIZE`] is taken from the system allocator `size + LINE`
//! bytes long; the caller gets the first line boundary at least 8 bytes in, and the 8 bytes
//! before it hold the block's start. Zeroed blocks come from the system's zeroed allocation
//! (calloc: pages of a large block stay untouched until written, as before). Smaller blocks,
//! and blocks that ask for 64-byte alignment or more themselves, go to the system unchanged:
//! which path a block took is a function of its layout, so `dealloc` and `realloc` know it.
//!
//! A binary opts in with
//! `#[global_allocator] static ALLOC: resnet::alloc::LineAligned = resnet::alloc::LineAligned;`
//! (the library's unit tests run under it too).

use std::alloc::{GlobalAlloc, Layout, System};

/// Blocks at least this large are line-aligned.
pub const MIN_SIZE: usize = 4096;
/// The alignment they get: a cache line.
pub const LINE: usize = 64;

/// The system allocator, with blocks of [`MIN_SIZE`] bytes or more aligned to [`LINE`].
pub struct LineAligned;

/// The system block behind a line-aligned block of `layout`, or None where `layout` goes to the
/// system unchanged.
fn outer(layout: Layout) -> Option<Layout> {
    if layout.size() < MIN_SIZE || layout.align() >= LINE {
        return None;
    }
    // align <= 32 here; at least 8 so that the header (a pointer) is aligned
    Layout::from_size_align(layout.size().checked_add(LINE)?, layout.align().max(8)).ok()
}

/// The first line boundary at least 8 bytes past `raw`: for an 8-aligned `raw`, 8 to LINE
/// bytes past it, so the caller's block ends inside the outer one (LINE bytes longer).
fn inner(raw: *mut u8) -> *mut u8 {
    let skip = (raw as usize + 8).next_multiple_of(LINE) - raw as usize;
    raw.wrapping_add(skip)
}

/// Where the outer block's start is kept: the 8 bytes before the caller's block.
fn header(p: *mut u8) -> *mut *mut u8 {
    p.wrapping_sub(8) as *mut *mut u8
}

/// # Safety
/// `raw` is an outer block (at least `LINE + 1` bytes, 8-aligned) just returned by the system.
unsafe fn finish(raw: *mut u8) -> *mut u8 {
    if raw.is_null() {
        return raw;
    }
    let p = inner(raw);
    // SAFETY: p - 8 .. p lies in the outer block (p is 8 to LINE bytes past raw, `inner`),
    // and is 8-aligned (p is 64-aligned).
    unsafe { header(p).write(raw) };
    p
}

#[cfg(test)]
thread_local! {
    /// Blocks this thread has allocated (the unit tests' count: `allocations_in`).
    static ALLOCATED: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
    /// Of them, and of its reallocations, those of [`MIN_SIZE`] bytes or more
    /// (`large_allocations_in`).
    static LARGE: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

#[cfg(test)]
fn counted(size: usize) {
    // `try_with`: no count while the thread's locals are being torn down
    let _ = ALLOCATED.try_with(|c| c.set(c.get() + 1));
    counted_large(size);
}

#[cfg(test)]
fn counted_large(size: usize) {
    if size >= MIN_SIZE {
        let _ = LARGE.try_with(|c| c.set(c.get() + 1));
    }
}

/// The blocks of [`MIN_SIZE`] bytes or more that `f` allocates or reallocates on this thread.
#[cfg(test)]
pub(crate) fn large_allocations_in(f: impl FnOnce()) -> usize {
    let before = LARGE.with(std::cell::Cell::get);
    f();
    LARGE.with(std::cell::Cell::get) - before
}

/// The blocks `f` allocates on this thread (the unit tests run under this allocator; new blocks
/// and zeroed ones, not reallocations).
#[cfg(test)]
pub(crate) fn allocations_in(f: impl FnOnce()) -> usize {
    let before = ALLOCATED.with(std::cell::Cell::get);
    f();
    ALLOCATED.with(std::cell::Cell::get) - before
}

// SAFETY (the trait's contract): every block returned is valid for `layout.size()` bytes at
// `layout.align()` or more (a line boundary satisfies every alignment below LINE), until it is
// freed; `dealloc` and `realloc` recover the system block by the same rule (`outer`) that made it.
unsafe impl GlobalAlloc for LineAligned {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        #[cfg(test)]
        counted(layout.size());
        match outer(layout) {
            // SAFETY: `o` has a non-zero size; the result is an outer block for `finish`.
            Some(o) => unsafe { finish(System.alloc(o)) },
            // SAFETY: the caller's layout, passed through.
            None => unsafe { System.alloc(layout) },
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        #[cfg(test)]
        counted(layout.size());
        match outer(layout) {
            // SAFETY: as in `alloc`; the header overwrites 8 bytes before the caller's block only.
            Some(o) => unsafe { finish(System.alloc_zeroed(o)) },
            // SAFETY: the caller's layout, passed through.
            None => unsafe { System.alloc_zeroed(layout) },
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        match outer(layout) {
            // SAFETY: `ptr` came from `alloc` / `alloc_zeroed` / `realloc` with this layout, so
            // the header before it holds the system block made with `o`.
            Some(o) => unsafe { System.dealloc(header(ptr).read(), o) },
            // SAFETY: the caller's block and layout, passed through.
            None => unsafe { System.dealloc(ptr, layout) },
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        #[cfg(test)]
        counted_large(new_size);
        // SAFETY: the caller guarantees that `new_size`, rounded up to the alignment, fits isize.
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        match (outer(layout), outer(new_layout)) {
            // SAFETY: a block the system made with `layout`, passed through.
            (None, None) => unsafe { System.realloc(ptr, layout, new_size) },
            (Some(o), Some(n)) => {
                // SAFETY: the header holds the system block made with `o`; the system moves
                // the contents (the caller's bytes at the old offset) into a block made with `n`.
                unsafe {
                    let old_raw = header(ptr).read();
                    let offset = ptr as usize - old_raw as usize;
                    let raw = System.realloc(old_raw, o, n.size());
                    if raw.is_null() {
                        return raw;
                    }
                    let p = inner(raw);
                    // the caller's bytes are at raw + offset; move them to the new boundary
                    std::ptr::copy(raw.add(offset), p, layout.size().min(new_size));
                    header(p).write(raw);
                    p
                }
            }
            // across MIN_SIZE: a new block, the contents copied, the old one freed
            // SAFETY: `ptr` is this allocator's block of `layout`; the new one holds new_size
            // bytes, and the two do not overlap.
            _ => unsafe {
                let p = self.alloc(new_layout);
                if !p.is_null() {
                    std::ptr::copy_nonoverlapping(ptr, p, layout.size().min(new_size));
                    self.dealloc(ptr, layout);
                }
                p
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // the library's unit tests run under this allocator (lib.rs), so every test exercises it;
    // these check its promises directly

    #[test]
    fn large_blocks_start_on_a_line() {
        for len in [MIN_SIZE / 4, 10_000, 1 << 20, (64 << 20) + 3] {
            let v = vec![1.0f32; len];
            assert_eq!(v.as_ptr() as usize % LINE, 0, "{len} floats");
            assert!(v.iter().all(|x| *x == 1.0));
            let z = vec![0.0f32; len];
            assert_eq!(z.as_ptr() as usize % LINE, 0, "{len} zeroed floats");
            assert!(z.iter().all(|x| *x == 0.0), "{len} floats zeroed");
        }
        // blocks that ask for more than a line get it from the system
        let layout = Layout::from_size_align(8192, 4096).unwrap();
        // SAFETY: a non-zero size; freed with the same layout.
        unsafe {
            let p = LineAligned.alloc(layout);
            assert!(!p.is_null() && (p as usize).is_multiple_of(4096));
            LineAligned.dealloc(p, layout);
        }
    }

    #[test]
    fn growing_and_shrinking_keeps_the_contents_and_the_alignment() {
        // across MIN_SIZE both ways, and within the large path (the offset of the line boundary
        // may change when the system moves the block)
        let mut v: Vec<u32> = Vec::new();
        for i in 0..300_000u32 {
            v.push(i);
            if v.capacity() * 4 >= MIN_SIZE {
                assert_eq!(v.as_ptr() as usize % LINE, 0, "capacity {}", v.capacity());
            }
        }
        assert!(v.iter().enumerate().all(|(i, x)| *x == i as u32));
        v.truncate(50_000);
        v.shrink_to_fit();
        assert_eq!(v.as_ptr() as usize % LINE, 0);
        assert!(v.iter().enumerate().all(|(i, x)| *x == i as u32));
        v.truncate(100);
        v.shrink_to_fit();
        assert!(v.iter().enumerate().all(|(i, x)| *x == i as u32));
        // and back up from a small block
        v.reserve(10_000);
        assert_eq!(v.as_ptr() as usize % LINE, 0);
        assert!(v.iter().enumerate().all(|(i, x)| *x == i as u32));
    }

    #[test]
    fn the_header_never_leaves_the_block() {
        // every start offset the system could give (8-aligned): the caller's block begins 8 to
        // LINE bytes in, so header and block fit in size + LINE bytes
        for raw in (0..4 * LINE).step_by(8) {
            let p = inner(raw as *mut u8) as usize;
            assert_eq!(p % LINE, 0);
            assert!(p - raw >= 8 && p - raw <= LINE, "raw {raw} -> {p}");
        }
    }
}
