//! Flow readers. They map every file read-only and never write the flow; a reliable reader
//! writes only its own cursor file.

use std::collections::BTreeSet;
use std::fs::{File, OpenOptions};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use uuid::Uuid;

use super::cursor::ReaderCursor;
use super::error::FlowError;
use super::files::{FlowFiles, Shape};
use super::layout::*;
use super::shm::futex_wait;
use super::writer::ring_fragments;
use super::Result;
use crate::format::FlowDef;
use crate::time::{index_to_timestamp, now_tai_ns, Rational};

/// Readers touch `access` (MXL touches it on every read; the writer samples it every
/// 100 ms) at most this often while they wait for a grain, which is idle time...
const ACCESS_TOUCH_PERIOD_NS: u64 = 10_000_000;
/// ...and after a read only when the last touch is this old (a reader that never waits),
/// as the `futimens` call on a grain's way downstream cost a live receiver 5-10 µs of
/// latency a grain on a 2-vCPU VM.
const ACCESS_TOUCH_READ_PERIOD_NS: u64 = 1_000_000_000;
/// Longest single futex wait; between waits a reader checks that its flow was not recreated.
const INVALID_CHECK_PERIOD: Duration = Duration::from_millis(100);

/// Options of a flow reader.
#[derive(Debug, Clone, Default)]
pub struct ReaderOptions {
    /// Register a cursor so a back-pressure writer never overwrites a grain this reader has
    /// not consumed (a grain counts as consumed when its [`Grain`] is dropped).
    pub reliable: bool,
    /// First index a reliable reader needs; default: the current head index.
    pub start_index: Option<u64>,
}

/// State shared by both reader kinds.
struct ReaderCore {
    files: FlowFiles,
    def: Option<FlowDef>,
    last_invalid_check: AtomicU64,
    /// This flow was found replaced (recreated): its runtime area no longer says whether
    /// the new writer waits on a cursor.
    replaced: AtomicBool,
}

impl ReaderCore {
    fn open(dir: &Path, id: Uuid) -> Result<Self> {
        let files = super::files::open(dir, id, false)?;
        let def = std::fs::read_to_string(dir.join("flow_def.json"))
            .ok()
            .and_then(|t| FlowDef::parse(&t).ok());
        Ok(Self {
            files,
            def,
            last_invalid_check: AtomicU64::new(0),
            replaced: AtomicBool::new(false),
        })
    }

    fn header(&self) -> &FlowData {
        self.files.header()
    }

    fn rate(&self) -> Rational {
        let r = self.header().info.common.grain_rate;
        Rational::new(r.numerator, r.denominator)
    }

    /// Non-blocking reads check for a recreated flow too (MXL stats `data` after TOO_EARLY),
    /// at most every 50 ms so busy-polling readers stay cheap.
    fn check_invalid<T>(&self, e: FlowError) -> Result<T> {
        if matches!(e, FlowError::TooEarly { .. }) {
            let now = now_tai_ns();
            if now.saturating_sub(self.last_invalid_check.load(Ordering::Relaxed)) >= 50_000_000 {
                self.last_invalid_check.store(now, Ordering::Relaxed);
                if self.files.is_replaced() {
                    return Err(self.invalid());
                }
            }
        }
        Err(e)
    }

    /// `FlowInvalid`, remembered.
    fn invalid(&self) -> FlowError {
        self.replaced.store(true, Ordering::Relaxed);
        FlowError::FlowInvalid { id: self.files.id }
    }

    /// A back-pressure writer has written this flow (the flag stays for the flow's life).
    fn back_pressure(&self) -> bool {
        let rt = &self.header().info.runtime;
        rt.mcm_magic.load(Ordering::Relaxed) == MCM_EXT_MAGIC
            && rt.mcm_flags.load(Ordering::Acquire) & MCM_EXT_BACK_PRESSURE != 0
    }

    /// A back-pressure writer of this flow predates [`MCM_EXT_DRAIN_READ`]: its end of
    /// stream waits until reliable readers let go of the grains they hold.
    fn end_waits_for_held(&self) -> bool {
        let rt = &self.header().info.runtime;
        let flags = rt.mcm_flags.load(Ordering::Acquire);
        self.back_pressure() && flags & MCM_EXT_DRAIN_READ == 0
    }

    fn end_of_stream(&self) -> Option<u64> {
        let rt = &self.header().info.runtime;
        let flags = rt.mcm_flags.load(Ordering::Acquire);
        (rt.mcm_magic.load(Ordering::Relaxed) == MCM_EXT_MAGIC
            && flags & MCM_EXT_END_OF_STREAM != 0)
            .then(|| rt.mcm_end_index.load(Ordering::Relaxed))
    }

    /// The MXL wait loop: snapshot the futex word, try, wait while the word is unchanged.
    fn wait<T>(&self, timeout: Duration, mut attempt: impl FnMut() -> Result<T>) -> Result<T> {
        let start = Instant::now();
        // A timeout too large for Instant (Duration::MAX) means "wait for ever" (a year).
        let deadline = start
            .checked_add(timeout)
            .unwrap_or_else(|| start + Duration::from_secs(365 * 24 * 3600));
        let word = &self.header().state.sync_counter;
        loop {
            let seen = word.load(Ordering::Acquire);
            match attempt() {
                Err(FlowError::TooEarly { .. }) => {}
                other => return other,
            }
            let now = Instant::now();
            if now >= deadline {
                if self.files.is_replaced() {
                    return Err(self.invalid());
                }
                return attempt();
            }
            futex_wait(word, seen, (deadline - now).min(INVALID_CHECK_PERIOD));
            if word.load(Ordering::Acquire) == seen && self.files.is_replaced() {
                return Err(self.invalid());
            }
        }
    }
}

/// Reads grains of a discrete flow.
pub struct GrainReader {
    core: ReaderCore,
    grain_count: u64,
    slice_sizes: [u32; 4],
    access: Option<File>,
    last_touch: AtomicU64,
    cursor: Option<ReaderCursor>,
    /// Grains lent out with [`GrainReader::hold`] (their cursor never passes them) and the
    /// index after the newest grain consumed or given back: where the cursor goes once
    /// nothing older is held.
    held: Mutex<(BTreeSet<u64>, u64)>,
}

impl GrainReader {
    pub(crate) fn open(dir: &Path, id: Uuid, options: &ReaderOptions) -> Result<Self> {
        let core = ReaderCore::open(dir, id)?;
        let Shape::Discrete {
            slice_sizes,
            grain_count,
            ..
        } = core.files.shape
        else {
            return Err(FlowError::WrongKind {
                id,
                continuous: true,
            });
        };
        // Touching needs write permission on `access`; without it reads still work.
        let access = OpenOptions::new().write(true).open(dir.join("access")).ok();
        let cursor = if options.reliable {
            let start = options.start_index.unwrap_or_else(|| {
                core.header()
                    .info
                    .runtime
                    .head_index
                    .load(Ordering::Acquire)
            });
            Some(ReaderCursor::register(dir, start)?)
        } else {
            None
        };
        Ok(Self {
            core,
            grain_count: u64::from(grain_count),
            slice_sizes,
            access,
            last_touch: AtomicU64::new(0),
            cursor,
            held: Mutex::new((BTreeSet::new(), 0)),
        })
    }

    pub fn id(&self) -> Uuid {
        self.core.files.id
    }
    /// The parsed `flow_def.json`, if it is one mcm understands.
    pub fn flow_def(&self) -> Option<&FlowDef> {
        self.core.def.as_ref()
    }
    pub fn grain_count(&self) -> u64 {
        self.grain_count
    }
    /// Grain rate of the index (field rate for interlaced video).
    pub fn grain_rate(&self) -> Rational {
        self.core.rate()
    }
    pub fn slice_sizes(&self) -> [u32; 4] {
        self.slice_sizes
    }
    pub fn head_index(&self) -> u64 {
        self.core
            .header()
            .info
            .runtime
            .head_index
            .load(Ordering::Acquire)
    }
    /// When the writer last committed (TAI ns, `lastWriteTime` in the flow header).
    pub fn last_write_time(&self) -> u64 {
        self.core
            .header()
            .info
            .runtime
            .last_write_time
            .load(Ordering::Relaxed)
    }
    /// Index after the last grain, once the writer ended the stream.
    pub fn end_of_stream(&self) -> Option<u64> {
        self.core.end_of_stream()
    }
    /// Whether the flow's back-pressure writer, at its end of stream, waits for this
    /// reliable reader to let go of the grains it holds (a writer of an mcm version before
    /// the cursor's consumed position); false for a writer that waits only for grains read.
    pub fn end_waits_for_held(&self) -> bool {
        self.cursor.is_some() && self.core.end_waits_for_held()
    }

    /// Whether the flow's writer waits for this reader: it is reliable (has a cursor) and a
    /// back-pressure writer has written the flow. A reliable reader of a live writer (one
    /// that never waits, as MXL's) has its grains overwritten like any other reader.
    pub fn writer_waits(&self) -> bool {
        self.cursor.is_some() && self.core.back_pressure()
    }

    /// Next index this reliable reader needs, if reliable.
    pub fn cursor(&self) -> Option<u64> {
        self.cursor.as_ref().map(ReaderCursor::next_index)
    }

    /// Waits up to `timeout` for the complete grain `index`.
    ///
    /// The payload stays in shared memory: a writer that laps this reader, or jumps ahead,
    /// may reuse the slot while the grain is in use; check [`Grain::is_intact`] after use.
    pub fn get_grain(&self, index: u64, timeout: Duration) -> Result<Grain<'_>> {
        self.get_grain_slices(index, super::VALID_SLICES_ALL, timeout)
    }

    /// Waits up to `timeout` until grain `index` has at least `min_slices` valid slices
    /// (capped at the grain's total), or is marked invalid.
    pub fn get_grain_slices(
        &self,
        index: u64,
        min_slices: u16,
        timeout: Duration,
    ) -> Result<Grain<'_>> {
        let grain = self
            .core
            .wait(timeout, || self.try_read(index, min_slices))
            .inspect_err(|e| self.skip_cursor(e))?;
        self.touch_access(ACCESS_TOUCH_READ_PERIOD_NS);
        Ok(grain)
    }

    /// Waits like [`Self::get_grain_slices`] but only reports that the grain is there, and
    /// whether the writer marked it invalid: a reliable reader's cursor does not move.
    pub fn wait_grain(&self, index: u64, min_slices: u16, timeout: Duration) -> Result<bool> {
        self.core
            .wait(timeout, || {
                self.try_read(index, min_slices).map(|mut g| {
                    g.consume = false;
                    g.is_invalid()
                })
            })
            .inspect_err(|e| self.skip_cursor(e))
    }

    /// [`Self::wait_grain`] without waiting and without any system call (not even the
    /// `access` touch, which the wait before a spin makes): for busy-polling.
    pub fn poll_grain(&self, index: u64, min_slices: u16) -> Result<bool> {
        self.read_slot(index, min_slices)
            .map(|mut g| {
                g.consume = false;
                g.is_invalid()
            })
            .inspect_err(|e| self.skip_cursor(e))
    }

    /// Marks every grain before `next` as consumed (reliable readers; no effect otherwise).
    pub fn release_before(&self, next: u64) {
        self.advance_cursor(next);
    }

    /// Moves a reliable cursor to `next`, but never past a grain still held; grains
    /// consumed meanwhile are remembered, so giving the held grain back moves the cursor
    /// past them too (else the writer would wait for grains already read).
    fn advance_cursor(&self, next: u64) {
        let Some(cursor) = &self.cursor else { return };
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        held.1 = held.1.max(next);
        let consumed = held.1;
        let rt = &self.core.header().info.runtime;
        // A recreated flow's writer counts itself in the new file, not in this one.
        let counted = rt.mcm_magic.load(Ordering::Relaxed) == MCM_EXT_MAGIC
            && rt.mcm_flags.load(Ordering::Acquire) & MCM_EXT_CURSOR_WAITERS != 0
            && !self.core.replaced.load(Ordering::Relaxed);
        cursor.advance(
            held.0.first().map_or(consumed, |&h| h.min(consumed)),
            consumed,
            counted.then_some(&rt.mcm_cursor_waiters),
        );
    }

    /// Keeps `grain` beyond the borrow of this reader, e.g. as the memory of a buffer handed
    /// downstream. A reliable reader's cursor stays at the oldest held grain, so the writer
    /// cannot overwrite it until the [`HeldGrain`] is dropped; without a cursor the writer is
    /// not held back and [`HeldGrain::is_intact`] tells whether the data is still the grain's.
    /// The grain counts as read (the cursor's consumed position, which a writer's end of
    /// stream waits for, moves past it).
    pub fn hold(reader: &Arc<Self>, mut grain: Grain<'_>) -> HeldGrain {
        grain.consume = false;
        reader
            .held
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .0
            .insert(grain.index);
        reader.advance_cursor(grain.index.saturating_add(1));
        let capacity = reader.core.files.grains[grain.slot].1.len() - GRAIN_PAYLOAD_OFFSET;
        HeldGrain {
            reader: reader.clone(),
            index: grain.index,
            slot: grain.slot,
            len: grain.payload.len().min(capacity),
        }
    }

    /// True while `slot` still holds grain `index` (seqlock re-check after reading).
    fn slot_holds(&self, slot: usize, index: u64) -> bool {
        std::sync::atomic::fence(Ordering::Acquire);
        self.core
            .files
            .grain_info(slot)
            .index
            .load(Ordering::Relaxed)
            == index
    }

    /// The metadata area after a grain's payload: u32 length, u32 reserved, bytes.
    fn metadata_of(&self, slot: usize, total_slices: u16) -> &[u8] {
        let capacity =
            self.slice_sizes.iter().map(|&s| s as usize).sum::<usize>() * total_slices as usize;
        let map = &self.core.files.grains[slot].1;
        let off = GRAIN_PAYLOAD_OFFSET + capacity;
        let Some(h) = map.bytes(off, 4).get(..4) else {
            return &[];
        };
        map.bytes(
            off + 8,
            u32::from_ne_bytes([h[0], h[1], h[2], h[3]]) as usize,
        )
    }

    /// Grains currently held.
    pub fn held_count(&self) -> usize {
        self.held.lock().map(|h| h.0.len()).unwrap_or(0)
    }

    fn give_back(&self, index: u64) {
        let next = {
            let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
            held.0.remove(&index);
            held.1 = held.1.max(index.saturating_add(1));
            held.1
        };
        self.advance_cursor(next);
    }

    /// A reliable reader told an index is gone moves its cursor past it, so the writer is
    /// not held back for a grain that no longer exists. One told its flow was recreated
    /// retires its cursor, which the new flow's writers would otherwise find among theirs
    /// (same flow id) and wait for while grains of the old flow are still held: those live
    /// in unlinked files the new writers never touch.
    fn skip_cursor(&self, e: &FlowError) {
        match e {
            FlowError::TooLate { oldest, .. } => self.advance_cursor(*oldest),
            FlowError::FlowInvalid { .. } => {
                if let Some(cursor) = &self.cursor {
                    cursor.advance(u64::MAX, u64::MAX, None);
                }
            }
            _ => {}
        }
    }

    /// Like [`Self::get_grain_slices`] without waiting.
    pub fn try_get_grain_slices(&self, index: u64, min_slices: u16) -> Result<Grain<'_>> {
        let grain = self
            .try_read(index, min_slices)
            .or_else(|e| self.core.check_invalid(e))
            .inspect_err(|e| self.skip_cursor(e))?;
        self.touch_access(ACCESS_TOUCH_READ_PERIOD_NS);
        Ok(grain)
    }

    /// Reads grain `index` if it is there; a reader told it is too early is about to wait,
    /// so it touches `access` then (off the path of the grains it delivers).
    fn try_read(&self, index: u64, min_slices: u16) -> Result<Grain<'_>> {
        let read = self.read_slot(index, min_slices);
        if let Err(FlowError::TooEarly { .. }) = &read {
            self.touch_access(ACCESS_TOUCH_PERIOD_NS);
        }
        read
    }

    fn read_slot(&self, index: u64, min_slices: u16) -> Result<Grain<'_>> {
        let head = self.head_index();
        let n = self.grain_count;
        let too_early = || match self.core.end_of_stream() {
            Some(end) if index >= end => FlowError::EndOfStream { end_index: end },
            _ => FlowError::TooEarly { index, head },
        };
        if index > head {
            return Err(too_early());
        }
        // The slot after the head may be open for writing: it is never readable (MXL #692).
        let oldest = if head >= n { head - n + 2 } else { 0 };
        if index < oldest {
            return Err(FlowError::TooLate { index, oldest });
        }
        let slot = (index % n) as usize;
        let gi = self.core.files.grain_info(slot);
        let flags = gi.flags.load(Ordering::Acquire);
        let valid = gi.valid_slices.load(Ordering::Acquire);
        let slot_index = gi.index.load(Ordering::Acquire);
        if slot_index != index && index == head {
            // A fresh flow: its head is 0 before the first commit, and grain 0 may still come.
            return Err(too_early());
        }
        if slot_index != index {
            // Older: the writer skipped this index without marking it; newer: overwritten.
            // Either way this index will never be readable.
            return Err(FlowError::TooLate {
                index,
                oldest: oldest.max(index.saturating_add(1)),
            });
        }
        let total = gi.total_slices.load(Ordering::Relaxed);
        if flags & GRAIN_FLAG_INVALID == 0 && valid < min_slices.min(total) {
            return Err(too_early());
        }
        let capacity = self.core.files.grains[slot].1.len() - GRAIN_PAYLOAD_OFFSET;
        let size = (gi.grain_size.load(Ordering::Relaxed) as usize).min(capacity);
        Ok(Grain {
            reader: self,
            consume: true,
            index,
            slot,
            flags,
            total_slices: total,
            valid_slices: valid,
            payload: self.core.files.grains[slot]
                .1
                .bytes(GRAIN_PAYLOAD_OFFSET, size),
        })
    }

    /// Touches `access` if the last touch is at least `period` ns old.
    fn touch_access(&self, period: u64) {
        let Some(access) = &self.access else { return };
        let now = now_tai_ns();
        if now.saturating_sub(self.last_touch.load(Ordering::Relaxed)) < period {
            return;
        }
        self.last_touch.store(now, Ordering::Relaxed);
        let times = rustix::fs::Timestamps {
            last_access: rustix::time::Timespec {
                tv_sec: 0,
                tv_nsec: rustix::fs::UTIME_NOW,
            },
            last_modification: rustix::time::Timespec {
                tv_sec: 0,
                tv_nsec: rustix::fs::UTIME_OMIT,
            },
        };
        let _ = rustix::fs::futimens(access, &times);
    }
}

/// A grain as read: a header snapshot and the payload in shared memory.
pub struct Grain<'a> {
    reader: &'a GrainReader,
    /// Dropping the grain advances a reliable reader's cursor.
    consume: bool,
    index: u64,
    slot: usize,
    flags: u32,
    total_slices: u16,
    valid_slices: u16,
    payload: &'a [u8],
}

impl<'a> Grain<'a> {
    pub fn index(&self) -> u64 {
        self.index
    }
    /// The reader this grain came from (its flow description, rate, ...).
    pub fn reader(&self) -> &'a GrainReader {
        self.reader
    }
    /// TAI ns of this grain's index.
    pub fn timestamp(&self) -> u64 {
        index_to_timestamp(self.reader.grain_rate(), self.index)
    }
    /// The payload: `grainSize` bytes (the unit's length for opaque flows).
    pub fn payload(&self) -> &'a [u8] {
        self.payload
    }
    /// The bytes of plane `p` covered by the valid slices.
    pub fn valid_plane(&self, plane: usize) -> &'a [u8] {
        let sizes = self.reader.slice_sizes;
        let Some(&slice) = sizes.get(plane) else {
            return &[];
        };
        let offset: usize = sizes[..plane]
            .iter()
            .map(|&s| s as usize * self.total_slices as usize)
            .sum();
        let len = slice as usize * self.valid_slices as usize;
        self.payload.get(offset..offset + len).unwrap_or(&[])
    }
    pub fn total_slices(&self) -> u16 {
        self.total_slices
    }
    /// The metadata written with this grain (mcm extension; empty for plain MXL flows).
    pub fn metadata(&self) -> &'a [u8] {
        self.reader.metadata_of(self.slot, self.total_slices)
    }
    pub fn valid_slices(&self) -> u16 {
        self.valid_slices
    }
    pub fn is_complete(&self) -> bool {
        self.valid_slices >= self.total_slices && !self.is_invalid()
    }
    /// The writer marked this index as carrying no media.
    pub fn is_invalid(&self) -> bool {
        self.flags & GRAIN_FLAG_INVALID != 0
    }
    /// False once the writer reused the slot for a later grain: the payload may then hold
    /// newer data. Check after consuming the payload when the reader may lag.
    pub fn is_intact(&self) -> bool {
        self.reader.slot_holds(self.slot, self.index)
    }
}

impl Drop for Grain<'_> {
    fn drop(&mut self) {
        // The cursor only moves forward: dropping grain k+1 while still holding grain k
        // releases k to the writer too. Reliable readers consume grains in order.
        if self.consume && (self.is_complete() || self.is_invalid()) {
            self.reader.advance_cursor(self.index.saturating_add(1));
        }
    }
}

/// A grain kept past the reader's borrow (see [`GrainReader::hold`]); its payload stays
/// mapped, and for a reliable reader unwritten, until it is dropped.
pub struct HeldGrain {
    reader: Arc<GrainReader>,
    index: u64,
    slot: usize,
    len: usize,
}

impl HeldGrain {
    pub fn index(&self) -> u64 {
        self.index
    }
    pub fn payload(&self) -> &[u8] {
        self.reader.core.files.grains[self.slot]
            .1
            .bytes(GRAIN_PAYLOAD_OFFSET, self.len)
    }
    /// The metadata committed with the grain (see [`Grain::metadata`]).
    pub fn metadata(&self) -> &[u8] {
        let total = self
            .reader
            .core
            .files
            .grain_info(self.slot)
            .total_slices
            .load(Ordering::Relaxed);
        self.reader.metadata_of(self.slot, total)
    }
    /// False once the writer reused the slot (possible only without a reliable cursor).
    pub fn is_intact(&self) -> bool {
        self.reader.slot_holds(self.slot, self.index)
    }
    /// The reader the grain came from: its head and ring size tell how soon a writer that is
    /// not held back reuses the slot (`index + grain_count`).
    pub fn reader(&self) -> &Arc<GrainReader> {
        &self.reader
    }
}

impl AsRef<[u8]> for HeldGrain {
    fn as_ref(&self) -> &[u8] {
        self.payload()
    }
}

impl Drop for HeldGrain {
    fn drop(&mut self) {
        self.reader.give_back(self.index);
    }
}

/// Reads samples of a continuous (audio) flow.
pub struct SamplesReader {
    core: ReaderCore,
    channels: u32,
    buffer_length: u64,
    word_size: usize,
}

impl SamplesReader {
    pub(crate) fn open(dir: &Path, id: Uuid) -> Result<Self> {
        let core = ReaderCore::open(dir, id)?;
        let Shape::Continuous {
            channels,
            buffer_length,
            word_size,
        } = core.files.shape
        else {
            return Err(FlowError::WrongKind {
                id,
                continuous: false,
            });
        };
        Ok(Self {
            core,
            channels,
            buffer_length: u64::from(buffer_length),
            word_size: word_size as usize,
        })
    }

    pub fn id(&self) -> Uuid {
        self.core.files.id
    }
    pub fn flow_def(&self) -> Option<&FlowDef> {
        self.core.def.as_ref()
    }
    pub fn channels(&self) -> u32 {
        self.channels
    }
    pub fn sample_rate(&self) -> Rational {
        self.core.rate()
    }
    /// Bytes per sample word (4 for float32, 8 for float64).
    pub fn word_size(&self) -> usize {
        self.word_size
    }
    pub fn buffer_length(&self) -> u64 {
        self.buffer_length
    }
    /// Most samples one read may cover: half the ring (MXL).
    pub fn max_read_length(&self) -> u64 {
        self.buffer_length / 2
    }
    /// One past the newest committed sample.
    pub fn head_index(&self) -> u64 {
        self.core
            .header()
            .info
            .runtime
            .head_index
            .load(Ordering::Acquire)
    }
    pub fn end_of_stream(&self) -> Option<u64> {
        self.core.end_of_stream()
    }

    /// Waits up to `timeout` for the `count` samples ending before `index`.
    pub fn get_samples(
        &self,
        index: u64,
        count: u64,
        timeout: Duration,
    ) -> Result<SamplesRead<'_>> {
        self.core.wait(timeout, || self.read_window(index, count))
    }

    /// Like [`Self::get_samples`] without waiting.
    pub fn try_get_samples(&self, index: u64, count: u64) -> Result<SamplesRead<'_>> {
        self.read_window(index, count)
            .or_else(|e| self.core.check_invalid(e))
    }

    fn read_window(&self, index: u64, count: u64) -> Result<SamplesRead<'_>> {
        if count == 0 || count > self.max_read_length() || index < count {
            return Err(FlowError::InvalidArgument(format!(
                "{count} samples ending at {index}; between 1 and {} per read",
                self.max_read_length()
            )));
        }
        let head = self.head_index();
        if index > head {
            return Err(match self.core.end_of_stream() {
                Some(end) if index > end => FlowError::EndOfStream { end_index: end },
                _ => FlowError::TooEarly { index, head },
            });
        }
        let half = self.buffer_length / 2;
        let oldest = head.saturating_sub(half);
        if index < oldest || index - oldest < count {
            return Err(FlowError::TooLate {
                index,
                oldest: oldest + count,
            });
        }
        Ok(SamplesRead {
            reader: self,
            index,
            count,
        })
    }
}

/// A window of samples as read, in shared memory.
pub struct SamplesRead<'a> {
    reader: &'a SamplesReader,
    index: u64,
    count: u64,
}

impl<'a> SamplesRead<'a> {
    pub fn index(&self) -> u64 {
        self.index
    }
    pub fn count(&self) -> u64 {
        self.count
    }
    /// The two ring fragments of channel `c` as bytes; the second is empty unless the
    /// window wraps.
    pub fn channel(&self, c: u32) -> (&'a [u8], &'a [u8]) {
        if c >= self.reader.channels {
            return (&[], &[]);
        }
        let r = self.reader;
        let ((off1, len1), len2) = ring_fragments(r.buffer_length, self.index, self.count);
        let stride = r.buffer_length as usize * r.word_size;
        let map = &r.core.files.channels.as_ref().expect("continuous flow").1;
        let base = c as usize * stride;
        (
            map.bytes(base + off1 * r.word_size, len1 * r.word_size),
            map.bytes(base, len2 * r.word_size),
        )
    }

    /// Channel `c` as f32 samples (float32 flows).
    pub fn channel_f32(&self, c: u32) -> Vec<f32> {
        let (a, b) = self.channel(c);
        a.chunks_exact(4)
            .chain(b.chunks_exact(4))
            .map(|w| f32::from_ne_bytes([w[0], w[1], w[2], w[3]]))
            .collect()
    }
}
