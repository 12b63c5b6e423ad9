//! A global allocator that counts, per thread, the bytes live and their peak, so that a
//! check can measure what decoding one input allocates.
//!
//! This is the crate's only `unsafe`: it delegates every call to the system allocator
//! and adds a few thread-local counters.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

/// While measuring, an allocation that would take the thread's live bytes above this
/// fails (and the process aborts), instead of taking the machine's memory: the fuzzer's
/// supervisor then records the input that did it.
pub const HARD_CAP_BYTES: usize = 1 << 30;

thread_local! {
    /// Bytes allocated by this thread and not freed (frees of other threads' memory
    /// included, so it may go below zero).
    static LIVE: Cell<isize> = const { Cell::new(0) };
    /// The highest `LIVE` since the current measurement began.
    static PEAK: Cell<isize> = const { Cell::new(0) };
    /// `LIVE` when the current measurement began, or `None` outside one.
    static BASE: Cell<Option<isize>> = const { Cell::new(None) };
}

/// The counting allocator; `lib.rs` installs it as the global allocator.
pub(crate) struct Counting;

fn grow(by: usize) -> bool {
    let by = isize::try_from(by).unwrap_or(isize::MAX);
    LIVE.try_with(|live| {
        let now = live.get().saturating_add(by);
        if let Ok(Some(base)) = BASE.try_with(Cell::get)
            && now.saturating_sub(base) > HARD_CAP_BYTES as isize
        {
            return false;
        }
        live.set(now);
        let _ = PEAK.try_with(|peak| {
            if now > peak.get() {
                peak.set(now);
            }
        });
        true
    })
    .unwrap_or(true)
}

fn shrink(by: usize) {
    let by = isize::try_from(by).unwrap_or(isize::MAX);
    let _ = LIVE.try_with(|live| live.set(live.get().saturating_sub(by)));
}

#[allow(unsafe_code)]
// SAFETY: every method forwards its arguments unchanged to `System`, which upholds the
// `GlobalAlloc` contract; the counters only read sizes and never touch the memory.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if !grow(layout.size()) {
            return std::ptr::null_mut();
        }
        // SAFETY: forwarded as is; the caller upholds `alloc`'s contract.
        let ptr = unsafe { System.alloc(layout) };
        if ptr.is_null() {
            shrink(layout.size());
        }
        ptr
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if !grow(layout.size()) {
            return std::ptr::null_mut();
        }
        // SAFETY: forwarded as is; the caller upholds `alloc_zeroed`'s contract.
        let ptr = unsafe { System.alloc_zeroed(layout) };
        if ptr.is_null() {
            shrink(layout.size());
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded as is; the caller upholds `dealloc`'s contract.
        unsafe { System.dealloc(ptr, layout) };
        shrink(layout.size());
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let old = layout.size();
        if new_size > old && !grow(new_size - old) {
            return std::ptr::null_mut();
        }
        // SAFETY: forwarded as is; the caller upholds `realloc`'s contract.
        let new = unsafe { System.realloc(ptr, layout, new_size) };
        if new.is_null() {
            if new_size > old {
                shrink(new_size - old);
            }
        } else if new_size < old {
            shrink(old - new_size);
        }
        new
    }
}

/// Ends a measurement when dropped, also when the measured code panics.
struct Measuring;

impl Drop for Measuring {
    fn drop(&mut self) {
        BASE.with(|base| base.set(None));
    }
}

/// Runs `f` and returns its result with the most bytes it had allocated at once on this
/// thread (above what was live when it started). Allocations made on other threads are
/// not counted; the fuzzer and the replay run their checks on one thread.
pub fn measure<R>(f: impl FnOnce() -> R) -> (R, usize) {
    let base = LIVE.with(Cell::get);
    PEAK.with(|peak| peak.set(base));
    BASE.with(|b| b.set(Some(base)));
    let guard = Measuring;
    let out = f();
    drop(guard);
    let peak = PEAK.with(Cell::get);
    (out, usize::try_from(peak - base).unwrap_or(0))
}
