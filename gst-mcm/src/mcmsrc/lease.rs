//! Zero copy out of a flow: buffers whose memory is a grain that the writer will reuse.
//!
//! A live writer never waits for readers (MXL): grain `i` lives in its slot until the writer
//! reaches index `i + grain_count`. A reliable writer waits for the grains its readers hold,
//! so a buffer kept downstream by an element that waits for more input first (an encoder's
//! lookahead, a sink's last sample at the end) would stall it for good. A [`Lease`] is what
//! a pushed buffer's memory points at: the grain while that is safe, or a private copy
//! taken before the writer needs the slot (see `Lease::settle` for when). [`Leases`] looks
//! at them on every buffer the streaming thread creates and before it waits for the writer,
//! and a guard thread looks when the first live lease is due, for when downstream blocks
//! the streaming thread. A lease mapped when it comes due moves at its last unmap; if a
//! live writer reuses its grain meanwhile, it is counted as overwritten.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mcm_core::flow::{GrainReader, HeldGrain};
use mcm_core::time::{index_to_timestamp, now_tai_ns};

use crate::common::CAT;

/// Bounds of the guard's sleep between looks at the leases.
const GUARD_MIN_WAIT: Duration = Duration::from_millis(1);
const GUARD_MAX_WAIT: Duration = Duration::from_millis(100);

/// The bytes behind one pushed buffer's memory.
pub struct Lease {
    index: u64,
    len: usize,
    counts: Arc<Counts>,
    inner: Mutex<Inner>,
}

struct Inner {
    backing: Backing,
    /// Maps open on the memory: while any is, the bytes must not move.
    maps: usize,
    /// Copy out at the last unmap (the source stopped while this was mapped).
    evict: bool,
    /// The writer reused the grain while it was lent; counted once.
    overwritten: bool,
}

enum Backing {
    Grain(HeldGrain),
    Copied(Box<[u8]>),
}

/// When a look copies a lease out.
#[derive(Debug, Clone, Copy, Default)]
struct Due {
    /// Whatever the writer does (the source stops).
    now: bool,
    /// The reader has read every grain committed: a reliable writer may be waiting for a
    /// grain lent downstream.
    waiting: bool,
    /// The reader waited a while for a reliable writer in vain: if the writer has stopped
    /// committing, it may be waiting for lent grains (its room in the ring, or its
    /// end-of-stream drain) held downstream by an element that waits for more input before
    /// it lets go, with more grains leased ahead than the margin (a writer other than
    /// mcmsink). A safety net: the other rules cover mcmsink's writers.
    stalled: bool,
}

impl Lease {
    fn new(grain: HeldGrain, counts: Arc<Counts>) -> Self {
        Self {
            index: grain.index(),
            len: grain.payload().len(),
            counts,
            inner: Mutex::new(Inner {
                backing: Backing::Grain(grain),
                maps: 0,
                evict: false,
                overwritten: false,
            }),
        }
    }

    /// Payload bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// The bytes for one map: they stay where they are until the matching [`Self::unmap`].
    /// A lease due to move moves first (unless already mapped; a grain reused meanwhile is
    /// counted either way).
    pub fn map(&self) -> *const u8 {
        let mut inner = self.lock();
        self.settle(&mut inner, Due::default());
        inner.maps += 1;
        match &inner.backing {
            Backing::Grain(g) => g.payload().as_ptr(),
            Backing::Copied(b) => b.as_ptr(),
        }
    }

    /// The last unmap moves a lease that came due while it was mapped.
    pub fn unmap(&self) {
        let mut inner = self.lock();
        inner.maps = inner.maps.saturating_sub(1);
        if inner.maps == 0 {
            self.settle(&mut inner, Due::default());
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The reader of a grain still in place; `None` once settled.
    fn reader(&self) -> Option<Arc<GrainReader>> {
        match &self.lock().backing {
            Backing::Grain(g) => Some(g.reader().clone()),
            Backing::Copied(_) => None,
        }
    }

    /// See [`Self::settle`].
    fn look(&self, due: Due) -> bool {
        let mut inner = self.lock();
        self.settle(&mut inner, due)
    }

    /// Copies the grain out when it is due (see [`is_due`]) and unmapped, or when the writer
    /// already reused it (the bytes then are whatever was there: counted overwritten).
    /// A lease due but mapped moves at its last unmap. True once off its grain.
    fn settle(&self, inner: &mut Inner, due: Due) -> bool {
        let Backing::Grain(grain) = &inner.backing else {
            return true;
        };
        let intact = grain.is_intact();
        let forced = due.now || (due.stalled && writer_stalled(grain.reader()));
        let is_due = forced || inner.evict || !intact || is_due(grain, due.waiting);
        if !is_due {
            return false;
        }
        if inner.maps > 0 {
            if !intact {
                self.count_overwritten(inner);
            }
            inner.evict |= forced;
            return false;
        }
        let reason = if due.now {
            "the source stopped"
        } else if inner.evict {
            "due while mapped"
        } else if !intact {
            "the writer reused the grain"
        } else if grain.reader().end_of_stream().is_some() && grain.reader().end_waits_for_held() {
            "end of stream (an older writer waits for it)"
        } else if forced {
            "the writer stalled"
        } else {
            "the writer came near"
        };
        gst::debug!(
            CAT,
            "grain {} copied out of its lease: {reason}",
            self.index
        );
        let copy: Box<[u8]> = grain.payload().into();
        // The seqlock check after the read: the writer may have reached the slot meanwhile.
        if intact && grain.is_intact() {
            self.counts.copies.fetch_add(1, Ordering::Relaxed);
        } else {
            self.count_overwritten(inner);
        }
        inner.backing = Backing::Copied(copy);
        true
    }

    fn count_overwritten(&self, inner: &mut Inner) {
        if !inner.overwritten {
            inner.overwritten = true;
            self.counts.overwritten.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl Drop for Lease {
    /// A grain reused while lent and never looked at again still counts.
    fn drop(&mut self) {
        let inner = self.inner.get_mut().unwrap_or_else(|p| p.into_inner());
        if let Backing::Grain(g) = &inner.backing {
            if !g.is_intact() && !inner.overwritten {
                self.counts.overwritten.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// A live writer is within half a ring of reusing `grain`'s slot (see [`risk_head`]): a
/// grain received this close is copied, not lent. Never for a reliable reader of a
/// back-pressure writer, which does not overwrite what the reader holds (see
/// `GrainReader::writer_waits`; a reliable reader of a live writer is treated as live).
pub fn near_writer(grain: &HeldGrain) -> bool {
    let reader = grain.reader();
    !reader.writer_waits() && reader.head_index() >= risk_head(reader, grain.index())
}

/// Whether a lease on `grain` is due to be copied out: a live writer is within half a ring
/// of its slot; a reliable writer is, and the reader has read all it wrote (`waiting`): the
/// writer may be waiting for this very grain, held downstream by an element that waits for
/// more input (an encoder's lookahead) before it lets go. A reliable writer that is merely
/// ahead of a slow downstream is left to wait: that is back-pressure. The end of the stream
/// is no reason, as a writer's end-of-stream drain waits for grains read, not for grains
/// lent (the cursor's consumed position), and a flow removed or recreated leaves the lent
/// grains' mapping as it is; except for a reliable writer of an older mcm, which waits for
/// lent grains to come back. (A buffer still out when the source stops is copied then.)
fn is_due(grain: &HeldGrain, waiting: bool) -> bool {
    let reader = grain.reader();
    if reader.end_of_stream().is_some() && reader.end_waits_for_held() {
        return true;
    }
    let near = reader.head_index() >= risk_head(reader, grain.index());
    near && (waiting || !reader.writer_waits())
}

/// A reliable writer that has not committed for two grain periods (at least 100 ms): it
/// may be waiting for grains lent downstream.
fn writer_stalled(reader: &GrainReader) -> bool {
    let period = index_to_timestamp(reader.grain_rate(), 1);
    let quiet = now_tai_ns().saturating_sub(reader.last_write_time());
    reader.writer_waits() && quiet >= period.saturating_mul(2).max(100_000_000)
}

/// The writer's head from which grain `index` is within half a ring of reuse: the margin
/// covers a writer whose pool fills grains ahead of its head (mcmsink lends at most half
/// a ring ahead).
fn risk_head(reader: &GrainReader, index: u64) -> u64 {
    let ring = reader.grain_count();
    index.saturating_add(ring).saturating_sub(1 + ring / 2)
}

/// How long until a live writer comes within half a ring of grain `index` at the flow's
/// grain rate (at least half a period); `None` when the writer waits for this reader.
fn due_in(reader: &GrainReader, index: u64) -> Option<Duration> {
    if reader.writer_waits() {
        return None;
    }
    let grains = risk_head(reader, index).saturating_sub(reader.head_index());
    let period = index_to_timestamp(reader.grain_rate(), 1);
    Some(Duration::from_nanos(
        period.saturating_mul(grains).max(period / 2),
    ))
}

/// The leases of one source and the guard that copies them out in time.
pub struct Leases {
    shared: Arc<Shared>,
    guard: Option<JoinHandle<()>>,
    /// The guard thread could not be started.
    no_guard: bool,
}

struct Shared {
    live: Mutex<Vec<Weak<Lease>>>,
    wake: Condvar,
    stop: AtomicBool,
    /// When the guard looks again by itself, in ns after `epoch`; 0 while it looks.
    next_look: AtomicU64,
    epoch: Instant,
    counts: Arc<Counts>,
}

/// What the leases of a source came to, as they happen (the guard's too).
#[derive(Debug, Default)]
pub struct Counts {
    /// Leased grains copied out before the writer came back to their slots.
    pub copies: AtomicU64,
    /// Leased grains the writer reused while lent (mapped when they came due, or reused
    /// ahead of its head): their buffers' bytes may have changed.
    pub overwritten: AtomicU64,
}

impl Leases {
    /// Leases that add up in `counts`.
    pub fn new(counts: Arc<Counts>) -> Self {
        Self {
            shared: Arc::new(Shared {
                live: Mutex::default(),
                wake: Condvar::new(),
                stop: AtomicBool::new(false),
                next_look: AtomicU64::new(0),
                epoch: Instant::now(),
                counts,
            }),
            guard: None,
            no_guard: false,
        }
    }

    /// A lease on `grain`, watched from now on.
    pub fn lease(&mut self, grain: HeldGrain) -> Arc<Lease> {
        let lease = Arc::new(Lease::new(grain, self.shared.counts.clone()));
        let due = lease
            .reader()
            .and_then(|r| due_in(&r, lease.index))
            .map(|d| self.shared.since_epoch(Instant::now() + d));
        let next_look = {
            let mut live = self.shared.live.lock().unwrap_or_else(|p| p.into_inner());
            live.push(Arc::downgrade(&lease));
            self.shared.next_look.load(Ordering::Relaxed)
        };
        if self.guard.is_none() && !self.no_guard {
            let shared = self.shared.clone();
            match std::thread::Builder::new()
                .name("mcmsrc-leases".into())
                .spawn(move || shared.guard())
            {
                Ok(guard) => self.guard = Some(guard),
                Err(e) => {
                    // Leases are still looked at on every buffer created.
                    self.no_guard = true;
                    gst::warning!(CAT, "no guard thread for lent grains: {e}");
                }
            }
        }
        // The guard looks again by itself soon (when the leases it watches come due, or
        // within 100 ms): only a lease due before then wakes it. (Waking it for every
        // buffer put a futex wake-up, and often a context switch, on every buffer's way.)
        if next_look != 0 && due.is_some_and(|due| due < next_look) {
            self.shared.wake.notify_one();
        }
        lease
    }

    /// Looks at every lease now (the streaming thread does on each buffer).
    pub fn look(&self) {
        self.shared.look_all(Due::default());
    }

    /// Copies out every lease of a reliable reader that waited a while for its writer in
    /// vain (see [`Due::stalled`]).
    pub fn release_stalled(&self) {
        self.shared.look_all(Due {
            stalled: true,
            ..Due::default()
        });
    }

    /// Looks at every lease as the streaming thread is about to wait for the writer, which,
    /// if reliable, may be waiting for a grain lent downstream.
    pub fn look_waiting(&self) {
        self.shared.look_all(Due {
            waiting: true,
            ..Due::default()
        });
    }
}

impl Drop for Leases {
    /// Stops the guard, then copies out every lease still on its grain: nothing watches
    /// them once the source has stopped (a sink's last sample, an app's kept buffer).
    fn drop(&mut self) {
        {
            // Under the lock the guard checks `stop` with, so the wake-up cannot fall
            // between its check and its wait.
            let _live = self.shared.live.lock().unwrap_or_else(|p| p.into_inner());
            self.shared.stop.store(true, Ordering::Release);
            self.shared.wake.notify_all();
        }
        if let Some(guard) = self.guard.take() {
            let _ = guard.join();
        }
        self.shared.look_all(Due {
            now: true,
            ..Due::default()
        });
    }
}

impl Shared {
    /// `at` in ns after the epoch (at least 1: 0 in `next_look` means looking now).
    fn since_epoch(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.epoch).as_nanos())
            .unwrap_or(u64::MAX)
            .max(1)
    }

    /// Waits up to `wait` (or until woken), saying meanwhile when it will look again.
    fn sleep<'a>(
        &self,
        live: std::sync::MutexGuard<'a, Vec<Weak<Lease>>>,
        wait: Duration,
    ) -> std::sync::MutexGuard<'a, Vec<Weak<Lease>>> {
        let until = self.since_epoch(Instant::now() + wait);
        self.next_look.store(until, Ordering::Relaxed);
        let live = self
            .wake
            .wait_timeout(live, wait)
            .map(|(g, _)| g)
            .unwrap_or_else(|p| p.into_inner().0);
        self.next_look.store(0, Ordering::Relaxed);
        live
    }

    /// Looks at every lease. Frames are copied outside the list's lock, so the streaming
    /// thread can lease meanwhile.
    fn look_all(&self, due: Due) {
        let leases: Vec<Arc<Lease>> = {
            let mut live = self.live.lock().unwrap_or_else(|p| p.into_inner());
            live.retain(|w| w.strong_count() > 0);
            live.iter().filter_map(Weak::upgrade).collect()
        };
        let mut settled = false;
        for lease in &leases {
            settled |= lease.look(due);
        }
        if settled {
            let mut live = self.live.lock().unwrap_or_else(|p| p.into_inner());
            live.retain(|w| w.upgrade().is_some_and(|l| l.reader().is_some()));
        }
    }

    /// Until stopped: while leases are out, looks at them when the first comes within half
    /// a ring of a live writer, at the flow's grain rate, and at least every
    /// GUARD_MAX_WAIT (no lease out, or a reliable writer's). Not on every
    /// commit: the streaming thread looks on every buffer it creates, and a thread woken
    /// with it on each commit cost the buffers ~100 µs of latency on a 2-core machine. A
    /// new lease wakes it only if due before its next look.
    fn guard(&self) {
        let mut live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if self.stop.load(Ordering::Acquire) {
                return;
            }
            live.retain(|w| w.strong_count() > 0);
            let watched: Vec<(u64, Arc<GrainReader>)> = live
                .iter()
                .filter_map(Weak::upgrade)
                .filter_map(|l| l.reader().map(|r| (l.index, r)))
                .collect();
            if watched.is_empty() {
                // Set and cleared under the lock `lease` pushes under: a lease due before
                // the guard looks again wakes it.
                live = self.sleep(live, GUARD_MAX_WAIT);
                continue;
            }
            drop(live);
            self.look_all(Due::default());
            // Each lease's own reader: after the flow is recreated, old leases hold the old
            // one, whose head no longer moves.
            let wait = watched
                .iter()
                .filter_map(|(index, reader)| due_in(reader, *index))
                .min()
                .unwrap_or(GUARD_MAX_WAIT)
                .clamp(GUARD_MIN_WAIT, GUARD_MAX_WAIT);
            live = self.live.lock().unwrap_or_else(|p| p.into_inner());
            if !self.stop.load(Ordering::Acquire) {
                live = self.sleep(live, wait);
            }
        }
    }
}
