//! Zero copy out of a flow: buffers whose memory is a grain that the writer will reuse.
//!
//! A live writer never waits for readers (MXL): grain `i` lives in its slot until the writer
//! reaches index `i + grain_count`. A reliable writer waits for the grains its readers hold,
//! so a buffer kept downstream (a sink's last sample, a long queue) would stall it. A
//! [`Lease`] is what a pushed buffer's memory points at: the grain while that is safe, or a
//! private copy taken before the writer comes back to the slot. [`Leases`] watches the
//! writer's head (on every buffer created, and from a guard thread woken by the writer's
//! commits, for when downstream blocks the streaming thread) and copies a leased grain out
//! once the writer is within half a ring of its slot or has ended the stream. Only a lease
//! that downstream holds mapped at that moment cannot move: if a live writer reaches it
//! first, it is counted as overwritten.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::thread::JoinHandle;
use std::time::Duration;

use mcm_core::flow::{GrainReader, HeldGrain};
use mcm_core::time::index_to_timestamp;

use crate::common::CAT;

/// Bounds of the guard's sleep between looks at the leases.
const GUARD_MIN_WAIT: Duration = Duration::from_millis(1);
const GUARD_MAX_WAIT: Duration = Duration::from_millis(100);

/// The bytes behind one pushed buffer's memory.
pub struct Lease {
    index: u64,
    len: usize,
    inner: Mutex<Inner>,
}

struct Inner {
    backing: Backing,
    /// Maps open on the memory: while any is, the bytes must not move.
    maps: usize,
}

enum Backing {
    Grain(HeldGrain),
    Copied(Box<[u8]>),
    /// The writer reused the slot before the grain could be copied out.
    Overwritten(HeldGrain),
}

/// What a look at a lease did.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    /// Not at risk yet, or already settled.
    Kept,
    Copied,
    /// At risk but mapped: looked at again on the writer's next commit.
    Busy,
    Overwritten,
}

impl Lease {
    fn new(grain: HeldGrain) -> Self {
        Self {
            index: grain.index(),
            len: grain.payload().len(),
            inner: Mutex::new(Inner {
                backing: Backing::Grain(grain),
                maps: 0,
            }),
        }
    }

    /// Payload bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// The bytes for one map: they stay where they are until the matching [`Self::unmap`].
    pub fn map(&self) -> *const u8 {
        let mut inner = self.lock();
        inner.maps += 1;
        match &inner.backing {
            Backing::Grain(g) | Backing::Overwritten(g) => g.payload().as_ptr(),
            Backing::Copied(b) => b.as_ptr(),
        }
    }

    pub fn unmap(&self) {
        let mut inner = self.lock();
        inner.maps = inner.maps.saturating_sub(1);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The reader of a grain still in place; `None` once settled.
    fn reader(&self) -> Option<Arc<GrainReader>> {
        match &self.lock().backing {
            Backing::Grain(g) => Some(g.reader().clone()),
            _ => None,
        }
    }

    /// Copies the grain out if the writer is within half a ring of its slot, or has ended
    /// the stream (a reliable writer waits for its readers to let go before it finishes),
    /// or `now`.
    fn look(&self, now: bool) -> Outcome {
        let mut inner = self.lock();
        let Backing::Grain(grain) = &inner.backing else {
            return Outcome::Kept;
        };
        let at_risk = near_writer(grain) || grain.reader().end_of_stream().is_some() || now;
        if !at_risk && grain.is_intact() {
            return Outcome::Kept;
        }
        if !grain.is_intact() {
            return settle_overwritten(&mut inner);
        }
        if inner.maps > 0 {
            return Outcome::Busy;
        }
        let copy: Box<[u8]> = grain.payload().into();
        // The seqlock check after the read: the writer may have reached the slot meanwhile.
        if !grain.is_intact() {
            return settle_overwritten(&mut inner);
        }
        inner.backing = Backing::Copied(copy);
        Outcome::Copied
    }
}

/// The writer is about to reuse `grain`'s slot (see [`risk_head`]).
pub fn near_writer(grain: &HeldGrain) -> bool {
    let reader = grain.reader();
    reader.head_index() >= risk_head(reader, grain.index())
}

/// The writer's head from which grain `index` is about to be reused: within half a ring of
/// its slot for a live writer (whose pool may fill grains ahead of its head), or one grain
/// from waiting for it for a reliable one (which never overwrites a held grain, but would
/// stall).
fn risk_head(reader: &GrainReader, index: u64) -> u64 {
    let ring = reader.grain_count();
    let margin = if reader.cursor().is_some() {
        1
    } else {
        ring / 2
    };
    index.saturating_add(ring).saturating_sub(1 + margin)
}

fn settle_overwritten(inner: &mut Inner) -> Outcome {
    let backing = std::mem::replace(&mut inner.backing, Backing::Copied(Box::default()));
    inner.backing = match backing {
        Backing::Grain(g) => Backing::Overwritten(g),
        other => other,
    };
    Outcome::Overwritten
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
    /// The guard waits for a lease (it has none with a grain to watch).
    idle: AtomicBool,
    counts: Arc<Counts>,
}

/// What the leases of a source came to, as they happen (the guard's too).
#[derive(Debug, Default)]
pub struct Counts {
    /// Leased grains copied out before the writer came back to their slots.
    pub copies: AtomicU64,
    /// Leased grains the writer reused while mapped downstream.
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
                idle: AtomicBool::new(false),
                counts,
            }),
            guard: None,
            no_guard: false,
        }
    }

    /// A lease on `grain`, watched from now on.
    pub fn lease(&mut self, grain: HeldGrain) -> Arc<Lease> {
        let lease = Arc::new(Lease::new(grain));
        let idle = {
            let mut live = self.shared.live.lock().unwrap_or_else(|p| p.into_inner());
            live.push(Arc::downgrade(&lease));
            self.shared.idle.load(Ordering::Relaxed)
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
        // Newer leases are due later than those already watched: only an idle guard waits
        // for one.
        if idle {
            self.shared.wake.notify_one();
        }
        lease
    }

    /// Looks at every lease now (the streaming thread does on each buffer).
    pub fn look(&self) {
        self.shared.look_all(false);
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
        self.shared.look_all(true);
    }
}

impl Shared {
    /// Looks at every lease (copying each out, if unmapped, when `all`). Frames are copied
    /// outside the list's lock, so the streaming thread can lease meanwhile.
    fn look_all(&self, all: bool) {
        let leases: Vec<Arc<Lease>> = {
            let mut live = self.live.lock().unwrap_or_else(|p| p.into_inner());
            live.retain(|w| w.strong_count() > 0);
            live.iter().filter_map(Weak::upgrade).collect()
        };
        let mut settled = false;
        for lease in &leases {
            match lease.look(all) {
                Outcome::Kept | Outcome::Busy => {}
                Outcome::Copied => {
                    self.counts.copies.fetch_add(1, Ordering::Relaxed);
                    settled = true;
                }
                Outcome::Overwritten => {
                    self.counts.overwritten.fetch_add(1, Ordering::Relaxed);
                    settled = true;
                }
            }
        }
        if settled {
            let mut live = self.live.lock().unwrap_or_else(|p| p.into_inner());
            live.retain(|w| w.upgrade().is_some_and(|l| l.reader().is_some()));
        }
    }

    /// Until stopped: while leases are out, looks at them when the oldest is due to come
    /// within half a ring of the writer, at the flow's grain rate. Not on every commit: the
    /// streaming thread looks on every buffer it creates, and a thread woken with it on
    /// each commit cost the buffers ~100 µs of latency on a 2-core machine.
    fn guard(&self) {
        let mut live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if self.stop.load(Ordering::Acquire) {
                return;
            }
            live.retain(|w| w.strong_count() > 0);
            let oldest = live
                .iter()
                .filter_map(Weak::upgrade)
                .filter_map(|l| l.reader().map(|r| (l.index, r)))
                .min_by_key(|(index, _)| *index);
            let Some((index, reader)) = oldest else {
                // Set and cleared under the lock `lease` pushes under: no lease is missed.
                self.idle.store(true, Ordering::Relaxed);
                live = self.wake.wait(live).unwrap_or_else(|p| p.into_inner());
                self.idle.store(false, Ordering::Relaxed);
                continue;
            };
            drop(live);
            self.look_all(false);
            let grains = risk_head(&reader, index).saturating_sub(reader.head_index());
            let period = index_to_timestamp(reader.grain_rate(), 1);
            let wait = Duration::from_nanos(period.saturating_mul(grains).max(period / 2))
                .clamp(GUARD_MIN_WAIT, GUARD_MAX_WAIT);
            live = self.live.lock().unwrap_or_else(|p| p.into_inner());
            if !self.stop.load(Ordering::Acquire) {
                live = self
                    .wake
                    .wait_timeout(live, wait)
                    .map(|(g, _)| g)
                    .unwrap_or_else(|p| p.into_inner().0);
            }
        }
    }
}
