//! Shared-memory mappings and futex calls: the only module of the flow code with `unsafe`.
//!
//! A [`Mapping`] maps a whole file `MAP_SHARED`, read-only for readers and read-write for
//! writers, and hands out typed views of its headers only after checking size and alignment.

use std::fs::File;
use std::io;
use std::mem::{align_of, size_of};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use memmap2::{MmapOptions, MmapRaw};
use rustix::thread::futex;

/// Marker for the `#[repr(C)]` header types that may be viewed inside a mapping.
///
/// # Safety
/// Implementors must be `#[repr(C)]`, valid for any bit pattern (integers, atomics and byte
/// arrays only), and use atomics for every field another process may write concurrently.
pub(crate) unsafe trait SharedHeader: Sized {}

// SAFETY: all of these are repr(C) aggregates of integers, atomics and byte arrays.
unsafe impl SharedHeader for super::layout::FlowData {}
// SAFETY: as above.
unsafe impl SharedHeader for super::layout::GrainInfo {}
// SAFETY: as above.
unsafe impl SharedHeader for super::cursor::CursorData {}

/// A whole file mapped `MAP_SHARED`.
pub(crate) struct Mapping {
    raw: MmapRaw,
    writable: bool,
    /// Held by the one [`Claim`] of this mapping, if any.
    claimed: AtomicBool,
}

impl Mapping {
    /// Maps all `file.metadata().len()` bytes; read-only unless `writable`.
    pub(crate) fn map(file: &File, writable: bool) -> io::Result<Self> {
        let len = file.metadata()?.len();
        let len = usize::try_from(len)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "file too large to map"))?;
        if len == 0 {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "empty file"));
        }
        let mut options = MmapOptions::new();
        options.len(len);
        let raw = if writable {
            options.map_raw(file)?
        } else {
            options.map_raw_read_only(file)?
        };
        Ok(Self {
            raw,
            writable,
            claimed: AtomicBool::new(false),
        })
    }

    pub(crate) fn len(&self) -> usize {
        self.raw.len()
    }

    /// A view of the header `T` at `offset`, or `None` if it does not fit or is misaligned.
    pub(crate) fn header<T: SharedHeader>(&self, offset: usize) -> Option<&T> {
        let end = offset.checked_add(size_of::<T>())?;
        if end > self.raw.len() {
            return None;
        }
        // SAFETY: offset is within the mapping (checked above), so the pointer stays in bounds.
        let ptr = unsafe { self.raw.as_ptr().add(offset) };
        if !(ptr as usize).is_multiple_of(align_of::<T>()) {
            return None;
        }
        // SAFETY: the range is in bounds and aligned; `T: SharedHeader` is valid for any bit
        // pattern and uses atomics for concurrently written fields, so a shared reference to
        // memory that other processes also write is sound. The mapping outlives `&self`.
        Some(unsafe { &*ptr.cast::<T>() })
    }

    /// Bytes `[offset, offset + len)`, clamped to the mapping.
    ///
    /// Other processes may write these bytes while the slice is alive (the MXL model: a
    /// reader checks the grain header again after use to detect an overwrite).
    pub(crate) fn bytes(&self, offset: usize, len: usize) -> &[u8] {
        let start = offset.min(self.raw.len());
        let len = len.min(self.raw.len() - start);
        // SAFETY: `start..start+len` is inside the mapping, which lives as long as `&self`.
        // u8 is valid for any bit pattern; concurrent writers are the documented MXL contract.
        unsafe { std::slice::from_raw_parts(self.raw.as_ptr().add(start), len) }
    }

    /// Mutable bytes `[offset, offset + len)`, clamped; empty for a read-only mapping.
    pub(crate) fn bytes_mut(&mut self, offset: usize, len: usize) -> &mut [u8] {
        if !self.writable {
            return &mut [];
        }
        let start = offset.min(self.raw.len());
        let len = len.min(self.raw.len() - start);
        // SAFETY: in bounds as above; the mapping is writable; `&mut self` ensures this is the
        // only slice handed out by this process for the mapping at a time.
        unsafe { std::slice::from_raw_parts_mut(self.raw.as_mut_ptr().add(start), len) }
    }
}

/// Exclusive, owned access to bytes `[offset, offset + len)` of a writable mapping: what a
/// grain lease hands to another owner (a GStreamer buffer) for it to write the payload in place.
///
/// At most one claim exists per mapping at a time, and the claim keeps the mapping alive, so
/// the slice it gives out is never aliased in this process by another claim nor dangling.
/// Mappings that are claimed are never used through [`Mapping::bytes_mut`] (the writer keeps
/// a separate mapping of each grain file for its claims).
pub(crate) struct Claim {
    map: Arc<Mapping>,
    offset: usize,
    len: usize,
}

impl Claim {
    /// Claims the range; `None` if the mapping is read-only, already claimed, or too short.
    pub(crate) fn new(map: Arc<Mapping>, offset: usize, len: usize) -> Option<Self> {
        let end = offset.checked_add(len)?;
        if !map.writable || end > map.raw.len() {
            return None;
        }
        map.claimed
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .ok()?;
        Some(Self { map, offset, len })
    }

    /// The mapping this claim is part of (headers in it may be read and written atomically).
    pub(crate) fn mapping(&self) -> &Mapping {
        &self.map
    }

    pub(crate) fn bytes(&self) -> &[u8] {
        // SAFETY: the range was checked against the mapping's length in `new`, and the Arc
        // keeps the mapping alive; other processes may write it (the MXL contract).
        unsafe { std::slice::from_raw_parts(self.map.raw.as_ptr().add(self.offset), self.len) }
    }

    pub(crate) fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: in bounds and alive as above; the mapping is writable (checked in `new`);
        // the `claimed` flag makes this the only claim, and `&mut self` the only slice of it.
        unsafe {
            std::slice::from_raw_parts_mut(self.map.raw.as_mut_ptr().add(self.offset), self.len)
        }
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        self.map.claimed.store(false, Ordering::Release);
    }
}

/// Waits while `*word == expected`, at most `timeout`, on a shared (inter-process) futex.
///
/// Returns on a wake-up, a changed value, a signal or the timeout; callers re-check state.
pub(crate) fn futex_wait(word: &AtomicU32, expected: u32, timeout: Duration) {
    let ts = rustix::time::Timespec {
        tv_sec: timeout.as_secs().min(i64::MAX as u64) as i64,
        tv_nsec: timeout.subsec_nanos().into(),
    };
    // Errors (EAGAIN when the value changed, EINTR, ETIMEDOUT) all mean "re-check".
    let _ = futex::wait(word, futex::Flags::empty(), expected, Some(&ts));
}

/// Wakes every process waiting on `word`.
pub(crate) fn futex_wake_all(word: &AtomicU32) {
    let _ = futex::wake(word, futex::Flags::empty(), i32::MAX as u32);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering;
    use std::sync::Arc;
    use std::time::Instant;

    /// A waiter with a 60 s timeout returns promptly after a wake: the wake, not the timeout,
    /// ended the wait (the bound is generous so a loaded machine cannot make this flaky).
    #[test]
    fn wake_ends_a_long_wait() {
        let word = Arc::new(AtomicU32::new(7));
        let w = word.clone();
        let waiter = std::thread::spawn(move || {
            let t = Instant::now();
            while w.load(Ordering::Acquire) == 7 {
                futex_wait(&w, 7, Duration::from_secs(60));
            }
            t.elapsed()
        });
        word.store(8, Ordering::Release);
        futex_wake_all(&word);
        assert!(waiter.join().unwrap() < Duration::from_secs(20));
    }
}
