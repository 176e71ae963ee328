//! Flow writers: grains (discrete flows) and samples (continuous flows).

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use uuid::Uuid;

use super::cursor::CursorSet;
use super::error::FlowError;
use super::files::{try_lock_exclusive, FlowFiles, Shape};
use super::layout::*;
use super::shm::{futex_wake_all, Claim, Mapping};
use super::Result;
use crate::format::{FlowDef, GrainGeometry};
use crate::time::{now_tai_ns, Rational};

/// How often a writer folds the readers' `access` touches into `lastReadTime`.
const LAST_READ_REFRESH_NS: u64 = 100_000_000;

/// Options of a flow writer.
#[derive(Debug, Clone, Default)]
pub struct WriterOptions {
    /// Reliable mode: wait up to this long for registered reliable readers instead of
    /// overwriting a grain they have not consumed. `None`: never wait (MXL behaviour).
    pub back_pressure: Option<Duration>,
    /// `maxCommitBatchSizeHint` (slices for grains, samples for audio); default: a whole
    /// grain, or 10 ms of samples.
    pub max_commit_batch_size_hint: Option<u32>,
    /// `maxSyncBatchSizeHint`, a multiple of the commit hint; default: the commit hint.
    pub max_sync_batch_size_hint: Option<u32>,
    /// Ring length for a new discrete flow instead of `floor(history * rate)` (e.g. an SDK
    /// connection's `bufferQueueCapacity`). A flow that already exists keeps its ring.
    pub grain_count: Option<u32>,
}

/// State shared by both writer kinds: the files, end of stream and release.
struct WriterCore {
    files: FlowFiles,
    def: FlowDef,
    created: bool,
}

impl WriterCore {
    fn header(&self) -> &FlowData {
        self.files.header()
    }

    fn signal(&self) {
        let state = &self.header().state;
        state.sync_counter.fetch_add(1, Ordering::Release);
        futex_wake_all(&state.sync_counter);
    }

    fn set_end_of_stream(&self, end_index: u64) {
        let rt = &self.header().info.runtime;
        rt.mcm_magic.store(MCM_EXT_MAGIC, Ordering::Relaxed);
        rt.mcm_end_index.store(end_index, Ordering::Relaxed);
        rt.mcm_flags
            .fetch_or(MCM_EXT_END_OF_STREAM, Ordering::Release);
        self.signal();
    }

    fn clear_end_of_stream(&self) {
        let rt = &self.header().info.runtime;
        rt.mcm_magic.store(MCM_EXT_MAGIC, Ordering::Relaxed);
        rt.mcm_flags
            .fetch_and(!MCM_EXT_END_OF_STREAM, Ordering::Release);
    }
}

impl Drop for WriterCore {
    fn drop(&mut self) {
        // The last writer (exclusive lock granted) deletes the flow, as MXL does.
        if try_lock_exclusive(&self.files.data_file) {
            if let Err(e) = fs::remove_dir_all(&self.files.dir) {
                tracing::warn!(dir = %self.files.dir.display(), "cannot remove released flow: {e}");
            }
        }
    }
}

/// Writes grains of a discrete flow (video, PCM packets, ancillary data, opaque units).
pub struct GrainWriter {
    core: WriterCore,
    geometry: GrainGeometry,
    grain_count: u64,
    open_index: Option<u64>,
    last_committed: Option<u64>,
    /// The oldest grain this writer takes as existing (back-pressure's floor): its first
    /// commit, or for a writer that joined a flow with grains, the oldest readable one then.
    first_committed: Option<u64>,
    back_pressure: Option<(CursorSet, Duration)>,
    next_last_read_refresh: u64,
    /// Per ring slot: the grain leased out in it, if any (see [`GrainWriter::lease_grain`]).
    leases: Arc<Mutex<Vec<LeaseSlot>>>,
    /// Per ring slot: a second mapping of the grain file, for leases only.
    lease_maps: Vec<Option<Arc<Mapping>>>,
}

#[derive(Debug, Clone, Copy, Default)]
struct LeaseSlot {
    index: Option<u64>,
    committed: bool,
}

fn lock_leases(leases: &Mutex<Vec<LeaseSlot>>) -> std::sync::MutexGuard<'_, Vec<LeaseSlot>> {
    leases.lock().unwrap_or_else(|p| p.into_inner())
}

impl GrainWriter {
    pub(crate) fn new(
        files: FlowFiles,
        def: FlowDef,
        created: bool,
        options: &WriterOptions,
    ) -> Result<Self> {
        let Shape::Discrete {
            slice_sizes,
            total_slices,
            grain_count,
            ..
        } = files.shape
        else {
            return Err(FlowError::InvalidArgument(
                "flow is continuous, not discrete".into(),
            ));
        };
        let geometry = GrainGeometry {
            slice_sizes,
            total_slices,
            grain_size: def.grain_geometry()?.grain_size,
        };
        let back_pressure = match options.back_pressure {
            Some(_) if grain_count < 2 => {
                return Err(FlowError::InvalidArgument(format!(
                    "back-pressure needs at least 2 grains in the ring, this flow has {grain_count}"
                )))
            }
            Some(t) => {
                let rt = &files.header().info.runtime;
                rt.mcm_magic.store(MCM_EXT_MAGIC, Ordering::Relaxed);
                rt.mcm_flags.fetch_or(
                    MCM_EXT_BACK_PRESSURE | MCM_EXT_CURSOR_WAITERS | MCM_EXT_DRAIN_READ,
                    Ordering::Release,
                );
                Some((CursorSet::for_writer(&files.dir), t))
            }
            None => None,
        };
        // A writer joining a flow with grains in it: the oldest readable grain is where the
        // grains that exist begin (back-pressure must not take only its own as existing, or it
        // would overwrite grains the other writer's readers have not read).
        let joined_at = {
            let rt = &files.header().info.runtime;
            (!created && rt.last_write_time.load(Ordering::Acquire) != 0).then(|| {
                rt.head_index
                    .load(Ordering::Acquire)
                    .saturating_add(2)
                    .saturating_sub(u64::from(grain_count))
            })
        };
        let core = WriterCore {
            files,
            def,
            created,
        };
        core.clear_end_of_stream();
        Ok(Self {
            core,
            geometry,
            grain_count: u64::from(grain_count),
            open_index: None,
            last_committed: None,
            first_committed: joined_at,
            back_pressure,
            next_last_read_refresh: 0,
            leases: Arc::new(Mutex::new(vec![LeaseSlot::default(); grain_count as usize])),
            lease_maps: vec![None; grain_count as usize],
        })
    }

    pub fn id(&self) -> Uuid {
        self.core.files.id
    }
    pub fn flow_def(&self) -> &FlowDef {
        &self.core.def
    }
    pub fn dir(&self) -> &Path {
        &self.core.files.dir
    }
    /// True if this writer created the flow, false if it joined an existing one.
    pub fn created(&self) -> bool {
        self.core.created
    }
    pub fn geometry(&self) -> GrainGeometry {
        self.geometry
    }
    /// Grains in the ring (`grainCount`).
    pub fn grain_count(&self) -> u64 {
        self.grain_count
    }
    /// Grain rate of the flow's index (field rate for interlaced video).
    pub fn grain_rate(&self) -> Rational {
        let r = self.core.header().info.common.grain_rate;
        Rational::new(r.numerator, r.denominator)
    }
    pub fn head_index(&self) -> u64 {
        self.core
            .header()
            .info
            .runtime
            .head_index
            .load(Ordering::Acquire)
    }

    /// Opens grain `index` for writing; its ring slot is `index mod grainCount`.
    ///
    /// Indices must increase from one complete commit to the next. Slots skipped by a jump
    /// forward are marked invalid so no reader takes their old content for the new index.
    /// A jump reuses slots readers may still be reading: they detect it with
    /// [`crate::flow::Grain::is_intact`].
    /// With back-pressure, this waits until every live reliable reader can spare the slot.
    pub fn open_grain(&mut self, index: u64) -> Result<GrainWrite<'_>> {
        let reopening = self.open_index == Some(index);
        if let Some(open) = self.open_index.filter(|&o| o != index) {
            return Err(FlowError::InvalidArgument(format!(
                "grain {open} is still open; commit or cancel it before opening {index}"
            )));
        }
        let slot = self.prepare_slot(index, reopening, None)?;
        self.open_index = Some(index);
        Ok(GrainWrite {
            writer: self,
            index,
            slot,
            done: false,
            partly_committed: reopening,
        })
    }

    /// Opens grain `index` for writing by another owner: the returned lease owns the
    /// payload memory (a buffer handed to a producer that writes the media in place, with
    /// no copy), and [`Self::commit_lease`] publishes it later, in any order among leases.
    ///
    /// While a lease lives its slot is never reopened: indices whose slot is leased are
    /// refused, and [`Self::next_free_index`] steps over them. A lease dropped before its
    /// commit marks its grain invalid, so readers skip it instead of waiting.
    pub fn lease_grain(&mut self, index: u64) -> Result<GrainLease> {
        self.lease_grain_waiting(index, None)
    }

    /// [`Self::lease_grain`] without waiting for readers: `BackPressureTimeout` at once if
    /// the slot is not free for them. For a caller that shares this writer behind a lock
    /// and waits for room with a [`RoomWatch`], outside the lock, so that the thread that
    /// commits grains (and so lets readers move on) is never kept waiting for the lock.
    pub fn try_lease_grain(&mut self, index: u64) -> Result<GrainLease> {
        self.lease_grain_waiting(index, Some(Duration::ZERO))
    }

    /// A watch on this writer's readers, to wait for room apart from the writer (see
    /// [`Self::try_lease_grain`]); `None` without back-pressure.
    pub fn room_watch(&self) -> Result<Option<RoomWatch>> {
        if self.back_pressure.is_none() {
            return Ok(None);
        }
        let files = &self.core.files;
        let file = files
            .data_file
            .try_clone()
            .map_err(|e| FlowError::io(&files.dir, e))?;
        let data = Mapping::map(&file, true).map_err(|e| FlowError::io(&files.dir, e))?;
        data.header::<FlowData>(0)
            .ok_or_else(|| FlowError::Corrupt {
                file: files.data_path(),
                reason: "flow header does not fit its mapping".into(),
            })?;
        Ok(Some(RoomWatch {
            cursors: CursorSet::for_writer(&files.dir),
            data,
            grain_count: self.grain_count,
        }))
    }

    /// The oldest grain this writer takes as existing: back-pressure's floor (its first
    /// commit, or the oldest readable grain when it joined a flow with grains).
    pub fn first_committed(&self) -> Option<u64> {
        self.first_committed
    }

    fn lease_grain_waiting(&mut self, index: u64, wait: Option<Duration>) -> Result<GrainLease> {
        if let Some(open) = self.open_index {
            return Err(FlowError::InvalidArgument(format!(
                "grain {open} is still open; commit or cancel it before leasing {index}"
            )));
        }
        let slot = self.prepare_slot(index, false, wait)?;
        let map = match &self.lease_maps[slot] {
            Some(m) => m.clone(),
            None => {
                let (file, _) = &self.core.files.grains[slot];
                let m = Arc::new(
                    Mapping::map(file, true).map_err(|e| FlowError::io(&self.core.files.dir, e))?,
                );
                self.lease_maps[slot] = Some(m.clone());
                m
            }
        };
        let size = self.geometry.grain_size as usize;
        let claim = Claim::new(map, GRAIN_PAYLOAD_OFFSET, size).ok_or_else(|| {
            FlowError::InvalidArgument(format!("grain slot {slot} cannot be leased"))
        })?;
        lock_leases(&self.leases)[slot] = LeaseSlot {
            index: Some(index),
            committed: false,
        };
        Ok(GrainLease {
            index,
            slot,
            claim,
            leases: self.leases.clone(),
        })
    }

    /// Publishes leased grain `index` as complete, with `len` payload bytes and `metadata`
    /// (at most the metadata capacity). The lease itself may live on (its memory stays
    /// valid and its slot reserved until it is dropped).
    pub fn commit_lease(&mut self, index: u64, len: usize, metadata: &[u8]) -> Result<()> {
        let slot = (index % self.grain_count) as usize;
        {
            let leases = lock_leases(&self.leases);
            let entry = leases[slot];
            if entry.index != Some(index) || entry.committed {
                return Err(FlowError::InvalidArgument(format!(
                    "grain {index} is not leased, or already committed"
                )));
            }
        }
        let cap = self.geometry.grain_size as usize;
        if len > cap {
            return Err(FlowError::InvalidArgument(format!(
                "payload of {len} bytes exceeds the grain capacity {cap}"
            )));
        }
        self.write_metadata(slot, metadata)?;
        lock_leases(&self.leases)[slot].committed = true;
        let total = self.geometry.total_slices;
        self.publish(index, slot, total, len as u32, 0);
        Ok(())
    }

    /// The first index at or after `from` that can be opened or leased now: after the last
    /// committed and every leased grain, in a slot no lease holds.
    pub fn next_free_index(&self, from: u64) -> u64 {
        let leases = lock_leases(&self.leases);
        let mut index = leases
            .iter()
            .filter_map(|l| l.index)
            .chain(self.last_committed)
            .max()
            .map_or(from, |m| from.max(m.saturating_add(1)));
        for _ in 0..self.grain_count {
            if leases[(index % self.grain_count) as usize].index.is_none() {
                break;
            }
            index += 1;
        }
        index
    }

    /// Leases alive now (committed or not: their slots stay reserved until dropped).
    pub fn leases_alive(&self) -> usize {
        lock_leases(&self.leases)
            .iter()
            .filter(|l| l.index.is_some())
            .count()
    }

    /// The common part of opening and leasing: checks, back-pressure (waiting up to `wait`,
    /// or the writer's own slice), the slots a jump skips, and the grain header. Returns
    /// the slot.
    fn prepare_slot(
        &mut self,
        index: u64,
        reopening: bool,
        wait: Option<Duration>,
    ) -> Result<usize> {
        if index == u64::MAX {
            return Err(FlowError::InvalidArgument(
                "index u64::MAX is the undefined index".into(),
            ));
        }
        if let Some(last) = self.last_committed {
            if index <= last && !reopening {
                return Err(FlowError::InvalidArgument(format!(
                    "grain {index} is not after the last committed grain {last}"
                )));
            }
        }
        let n = self.grain_count;
        let slot = (index % n) as usize;
        let leased: Vec<Option<u64>> = lock_leases(&self.leases).iter().map(|l| l.index).collect();
        if let Some(holder) = leased[slot] {
            return Err(FlowError::InvalidArgument(format!(
                "the ring slot of grain {index} is leased to grain {holder}"
            )));
        }
        if let Some((cursors, timeout)) = &mut self.back_pressure {
            let rt = &self.core.header().info.runtime;
            let head = rt.head_index.load(Ordering::Acquire);
            cursors.wait_for_room(
                index,
                self.grain_count,
                room_floor(index, self.first_committed, head, self.grain_count),
                &rt.head_index,
                wait.unwrap_or(*timeout),
                &rt.mcm_cursor_waiters,
            )?;
        }
        // Grains leased out are not skipped: they are still to be committed.
        let base = leased
            .iter()
            .flatten()
            .copied()
            .chain(self.last_committed)
            .max();
        if let Some(base) = base {
            if index > base + 1 {
                let skipped = (index - base - 1).min(n);
                for m in index - skipped..index {
                    if leased[(m % n) as usize].is_some() {
                        continue;
                    }
                    let gi = self.core.files.grain_info((m % n) as usize);
                    gi.index.store(m, Ordering::Relaxed);
                    gi.valid_slices.store(0, Ordering::Relaxed);
                    gi.flags.fetch_or(GRAIN_FLAG_INVALID, Ordering::Release);
                }
            }
        }
        let gi = self.core.files.grain_info(slot);
        gi.index.store(index, Ordering::Relaxed);
        gi.flags.store(0, Ordering::Relaxed);
        if !reopening {
            gi.valid_slices.store(0, Ordering::Relaxed);
            // No metadata until the writer sets some: never the previous grain's.
            let (off, cap) = self.metadata_area(slot);
            if cap > 0 {
                self.core.files.grains[slot].1.bytes_mut(off, 4).fill(0);
            }
        }
        // Seqlock order: a reader that sees any payload byte written after this point also
        // sees the new index when it re-checks the slot (`Grain::is_intact`).
        std::sync::atomic::fence(Ordering::Release);
        Ok(slot)
    }

    /// Copies `metadata` into the slot's metadata area and sets its length.
    fn write_metadata(&mut self, slot: usize, metadata: &[u8]) -> Result<()> {
        let (off, cap) = self.metadata_area(slot);
        if metadata.len() > cap {
            return Err(FlowError::InvalidArgument(format!(
                "metadata of {} bytes exceeds the capacity {cap}",
                metadata.len()
            )));
        }
        if cap == 0 {
            return Ok(());
        }
        let area = self.core.files.grains[slot]
            .1
            .bytes_mut(off, 8 + metadata.len());
        area[..4].copy_from_slice(&(metadata.len() as u32).to_ne_bytes());
        area[8..].copy_from_slice(metadata);
        Ok(())
    }

    /// Ends the stream: readers asking for any index after the last committed grain get
    /// [`FlowError::EndOfStream`] instead of waiting. With back-pressure, this then waits (up
    /// to the back-pressure timeout) until every live reliable reader has consumed the last
    /// grain, so releasing the writer right after loses nothing.
    pub fn end_of_stream(&mut self) -> Result<()> {
        let end = self
            .last_committed
            .unwrap_or_else(|| self.head_index())
            .saturating_add(1);
        self.core.set_end_of_stream(end);
        self.drain()
    }

    /// With back-pressure, waits (up to the back-pressure timeout) until every live reliable
    /// reader has read the last committed grain; without, returns at once. Grains a reader
    /// still holds (lent downstream) do not count: the writer will not come back to their
    /// slots, and a flow removed or recreated leaves the reader's mapping of them as it is
    /// (a reader of a version before the cursor's consumed position is waited for until it
    /// lets go of them). For a writer
    /// about to be replaced (new caps: the flow is recreated, and readers follow it) without
    /// ending the stream.
    pub fn drain(&mut self) -> Result<()> {
        let end = self
            .last_committed
            .unwrap_or_else(|| self.head_index())
            .saturating_add(1);
        let floor = self.first_committed.unwrap_or(end);
        if let Some((cursors, timeout)) = &mut self.back_pressure {
            let waiters = &self.core.header().info.runtime.mcm_cursor_waiters;
            cursors.wait_for_consumed(end, floor, *timeout, waiters)?;
        }
        Ok(())
    }

    fn publish(&mut self, index: u64, slot: usize, valid: u16, size: u32, flags: u32) {
        let now = now_tai_ns();
        let gi = self.core.files.grain_info(slot);
        gi.grain_size.store(size, Ordering::Relaxed);
        gi.flags.store(flags, Ordering::Relaxed);
        gi.valid_slices.store(valid, Ordering::Release);
        let rt = &self.core.header().info.runtime;
        // Leases may commit out of order: the head never moves back.
        rt.head_index.fetch_max(index, Ordering::Release);
        rt.last_write_time.store(now, Ordering::Relaxed);
        if valid >= self.geometry.total_slices || flags & GRAIN_FLAG_INVALID != 0 {
            self.last_committed = Some(self.last_committed.map_or(index, |l| l.max(index)));
            self.first_committed.get_or_insert(index);
        }
        self.core.signal();
        if now >= self.next_last_read_refresh {
            self.next_last_read_refresh = now + LAST_READ_REFRESH_NS;
            self.refresh_last_read_time(now);
        }
    }

    /// Offset of the metadata header (u32 length, u32 reserved) and the metadata capacity.
    fn metadata_area(&self, slot: usize) -> (usize, usize) {
        let off = GRAIN_PAYLOAD_OFFSET + self.geometry.grain_size as usize;
        let len = self.core.files.grains[slot].1.len();
        (off, len.saturating_sub(off + 8))
    }

    /// Folds the readers' `access` touches (atime, on CLOCK_REALTIME) into `lastReadTime`.
    fn refresh_last_read_time(&self, now_tai: u64) {
        let Ok(meta) = fs::metadata(self.core.files.dir.join("access")) else {
            return;
        };
        let atime = meta.atime() as i128 * 1_000_000_000 + meta.atime_nsec() as i128;
        let utc = rustix::time::clock_gettime(rustix::time::ClockId::Realtime);
        let utc = utc.tv_sec as i128 * 1_000_000_000 + utc.tv_nsec as i128;
        let tai_read = atime + (now_tai as i128 - utc);
        let rt = &self.core.header().info.runtime;
        if let Ok(t) = u64::try_from(tai_read) {
            rt.last_read_time.fetch_max(t, Ordering::Relaxed);
        }
    }
}

/// A grain open for writing. Dropping it without any commit cancels it; after a partial
/// commit the grain stays open, and `open_grain` with the same index continues it.
pub struct GrainWrite<'a> {
    writer: &'a mut GrainWriter,
    index: u64,
    slot: usize,
    done: bool,
    partly_committed: bool,
}

impl GrainWrite<'_> {
    pub fn index(&self) -> u64 {
        self.index
    }

    pub fn geometry(&self) -> GrainGeometry {
        self.writer.geometry
    }

    /// The whole payload (capacity) of the grain, in shared memory.
    pub fn payload(&mut self) -> &mut [u8] {
        let size = self.writer.geometry.grain_size as usize;
        self.writer.core.files.grains[self.slot]
            .1
            .bytes_mut(GRAIN_PAYLOAD_OFFSET, size)
    }

    /// The grain's metadata area (mcm extension, empty unless the flow has
    /// `urn:x-mcm:max_metadata_size`); its length is set with [`Self::set_metadata_len`].
    pub fn metadata(&mut self) -> &mut [u8] {
        let (off, cap) = self.writer.metadata_area(self.slot);
        self.writer.core.files.grains[self.slot]
            .1
            .bytes_mut(off + 8, cap)
    }

    /// Sets how many metadata bytes readers see with this grain (at most the capacity).
    pub fn set_metadata_len(&mut self, len: usize) -> Result<()> {
        let (off, cap) = self.writer.metadata_area(self.slot);
        if len > cap {
            return Err(FlowError::InvalidArgument(format!(
                "metadata of {len} bytes exceeds the capacity {cap}"
            )));
        }
        self.writer.core.files.grains[self.slot]
            .1
            .bytes_mut(off, 4)
            .copy_from_slice(&(len as u32).to_ne_bytes());
        Ok(())
    }

    /// Publishes the first `valid_slices` slices and keeps the grain open (sub-frame latency,
    /// e.g. line by line). Committing all slices completes the grain.
    pub fn commit_slices(&mut self, valid_slices: u16) -> Result<()> {
        let total = self.writer.geometry.total_slices;
        if valid_slices > total {
            return Err(FlowError::InvalidArgument(format!(
                "{valid_slices} valid slices, the grain has {total}"
            )));
        }
        let size = self.writer.geometry.grain_size;
        self.writer
            .publish(self.index, self.slot, valid_slices, size, 0);
        self.partly_committed = true;
        if valid_slices == total {
            self.done = true;
            self.writer.open_index = None;
        }
        Ok(())
    }

    /// Publishes the complete grain.
    pub fn commit(mut self) -> Result<()> {
        let total = self.writer.geometry.total_slices;
        self.commit_slices(total)
    }

    /// Publishes a complete grain of `len` payload bytes (opaque flows: one unit per grain).
    pub fn commit_len(mut self, len: usize) -> Result<()> {
        let cap = self.writer.geometry.grain_size as usize;
        if len > cap {
            return Err(FlowError::InvalidArgument(format!(
                "payload of {len} bytes exceeds the grain capacity {cap}"
            )));
        }
        let total = self.writer.geometry.total_slices;
        self.writer
            .publish(self.index, self.slot, total, len as u32, 0);
        self.done = true;
        self.writer.open_index = None;
        Ok(())
    }

    /// Publishes the grain as invalid (no media for this index; the ring still advances).
    pub fn commit_invalid(mut self) -> Result<()> {
        let size = self.writer.geometry.grain_size;
        self.writer
            .publish(self.index, self.slot, 0, size, GRAIN_FLAG_INVALID);
        self.done = true;
        self.writer.open_index = None;
        Ok(())
    }

    /// Abandons the grain; readers never see it complete.
    pub fn cancel(mut self) {
        self.done = true;
        self.writer.open_index = None;
    }
}

impl Drop for GrainWrite<'_> {
    fn drop(&mut self) {
        if !self.done && !self.partly_committed {
            self.writer.open_index = None;
        }
    }
}

/// A grain leased out by [`GrainWriter::lease_grain`]: owns the grain's payload memory
/// (`grain_size` bytes of shared memory) until dropped. Committed through the writer.
pub struct GrainLease {
    index: u64,
    slot: usize,
    claim: Claim,
    leases: Arc<Mutex<Vec<LeaseSlot>>>,
}

impl GrainLease {
    pub fn index(&self) -> u64 {
        self.index
    }
    pub fn payload(&self) -> &[u8] {
        self.claim.bytes()
    }
    pub fn payload_mut(&mut self) -> &mut [u8] {
        self.claim.bytes_mut()
    }
}

impl AsRef<[u8]> for GrainLease {
    fn as_ref(&self) -> &[u8] {
        self.payload()
    }
}

impl AsMut<[u8]> for GrainLease {
    fn as_mut(&mut self) -> &mut [u8] {
        self.payload_mut()
    }
}

impl std::fmt::Debug for GrainLease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrainLease")
            .field("index", &self.index)
            .field("slot", &self.slot)
            .finish()
    }
}

impl Drop for GrainLease {
    fn drop(&mut self) {
        let mut leases = lock_leases(&self.leases);
        let Some(entry) = leases.get_mut(self.slot) else {
            return;
        };
        if entry.index != Some(self.index) {
            return;
        }
        if !entry.committed {
            // Never committed: readers waiting for it skip it instead of waiting for ever.
            if let Some(gi) = self.claim.mapping().header::<GrainInfo>(0) {
                if gi.index.load(Ordering::Relaxed) == self.index {
                    gi.valid_slices.store(0, Ordering::Relaxed);
                    gi.flags.fetch_or(GRAIN_FLAG_INVALID, Ordering::Release);
                }
            }
        }
        *entry = LeaseSlot::default();
    }
}

/// Writes samples of a continuous (audio) flow: one ring of `bufferLength` samples per channel.
pub struct SamplesWriter {
    core: WriterCore,
    channels: u32,
    buffer_length: u64,
    word_size: usize,
    last_committed: Option<u64>,
    commit_batch: u64,
    sync_batch: u64,
    last_signal_batch: u64,
}

impl SamplesWriter {
    pub(crate) fn new(files: FlowFiles, def: FlowDef, created: bool) -> Result<Self> {
        let Shape::Continuous {
            channels,
            buffer_length,
            word_size,
        } = files.shape
        else {
            return Err(FlowError::InvalidArgument(
                "flow is discrete, not continuous".into(),
            ));
        };
        let common = &files.header().info.common;
        let commit_batch = u64::from(common.max_commit_batch_size_hint.max(1));
        let sync_batch = u64::from(common.max_sync_batch_size_hint.max(1));
        let core = WriterCore {
            files,
            def,
            created,
        };
        core.clear_end_of_stream();
        Ok(Self {
            core,
            channels,
            buffer_length: u64::from(buffer_length),
            word_size: word_size as usize,
            last_committed: None,
            commit_batch,
            sync_batch,
            last_signal_batch: 0,
        })
    }

    pub fn id(&self) -> Uuid {
        self.core.files.id
    }
    pub fn flow_def(&self) -> &FlowDef {
        &self.core.def
    }
    pub fn created(&self) -> bool {
        self.core.created
    }
    pub fn channels(&self) -> u32 {
        self.channels
    }
    /// Samples per channel ring.
    pub fn buffer_length(&self) -> u64 {
        self.buffer_length
    }
    /// Most samples one `open_samples` may cover: half the ring (MXL).
    pub fn max_write_length(&self) -> u64 {
        self.buffer_length / 2
    }
    pub fn sample_rate(&self) -> Rational {
        let r = self.core.header().info.common.grain_rate;
        Rational::new(r.numerator, r.denominator)
    }
    pub fn head_index(&self) -> u64 {
        self.core
            .header()
            .info
            .runtime
            .head_index
            .load(Ordering::Acquire)
    }

    /// Opens the `count` samples ending before `index` (samples `index-count .. index`).
    /// After commit the head index is `index`. Samples skipped since the last commit are
    /// zeroed (silence), as MXL does.
    pub fn open_samples(&mut self, index: u64, count: u64) -> Result<SamplesWrite<'_>> {
        if count == 0 || count > self.max_write_length() {
            return Err(FlowError::InvalidArgument(format!(
                "{count} samples; between 1 and {} per write",
                self.max_write_length()
            )));
        }
        if index < count || index == u64::MAX {
            return Err(FlowError::InvalidArgument(format!(
                "index {index} is before the first {count} samples"
            )));
        }
        let start = index - count;
        if let Some(last) = self.last_committed {
            if index <= last || start < last {
                return Err(FlowError::InvalidArgument(format!(
                    "samples {start}..{index} overlap the last commit (head {last})"
                )));
            }
            if start > last {
                let cleared = (start - last).min(self.buffer_length - count);
                self.zero(start - cleared, cleared);
            }
        }
        Ok(SamplesWrite {
            writer: self,
            index,
            count,
        })
    }

    fn ring_ranges(&self, end: u64, count: u64) -> ((usize, usize), usize) {
        ring_fragments(self.buffer_length, end, count)
    }

    fn zero(&mut self, start: u64, count: u64) {
        if count == 0 {
            return;
        }
        let ((off1, len1), len2) = self.ring_ranges(start + count, count);
        let (w, stride) = (self.word_size, self.buffer_length as usize * self.word_size);
        let map = &mut self
            .core
            .files
            .channels
            .as_mut()
            .expect("continuous flow")
            .1;
        for c in 0..self.channels as usize {
            map.bytes_mut(c * stride + off1 * w, len1 * w).fill(0);
            map.bytes_mut(c * stride, len2 * w).fill(0);
        }
    }

    /// Ends the stream after the last committed sample.
    pub fn end_of_stream(&mut self) -> Result<()> {
        let end = self.last_committed.unwrap_or_else(|| self.head_index());
        self.core.set_end_of_stream(end);
        Ok(())
    }

    fn commit(&mut self, index: u64) {
        let rt = &self.core.header().info.runtime;
        rt.head_index.store(index, Ordering::Release);
        rt.last_write_time.store(now_tai_ns(), Ordering::Relaxed);
        self.last_committed = Some(index);
        // Wake readers once per sync batch, or early once within one commit batch of the
        // next boundary (MXL `signalCompletedBatch`).
        let threshold = self.sync_batch.saturating_sub(self.commit_batch);
        let batch = index / self.sync_batch;
        let signal = if batch > self.last_signal_batch {
            self.last_signal_batch = batch;
            true
        } else if batch == self.last_signal_batch && index % self.sync_batch > threshold {
            self.last_signal_batch = batch + 1;
            true
        } else {
            false
        };
        if signal {
            self.core.signal();
        }
    }
}

/// Ring offsets of samples `end-count .. end`: `((first offset, first length), second length)`;
/// the second fragment, when not empty, starts at offset 0 (MXL `OpenSamples`).
/// The oldest grain that exists, for back-pressure on grain `index`: none before the
/// writer's first (or, once the ring is full, before the oldest readable one).
fn room_floor(index: u64, first_committed: Option<u64>, head: u64, grain_count: u64) -> u64 {
    match first_committed {
        None => index,
        Some(first) => first.max(head.saturating_add(2).saturating_sub(grain_count)),
    }
}

/// Waits for room in a back-pressure writer's ring apart from the writer (see
/// [`GrainWriter::try_lease_grain`]): its own view of the readers' cursors and its own
/// mapping of the flow header, so no lock on the writer is held while it sleeps.
pub struct RoomWatch {
    cursors: CursorSet,
    data: Mapping,
    grain_count: u64,
}

impl RoomWatch {
    /// Waits up to `timeout` until writing grain `index` no longer has to wait for a reader
    /// (`BackPressureTimeout` if it still does); `first_committed` is the writer's
    /// ([`GrainWriter::first_committed`]).
    pub fn wait(
        &mut self,
        index: u64,
        first_committed: Option<u64>,
        timeout: Duration,
    ) -> Result<()> {
        let Some(header) = self.data.header::<FlowData>(0) else {
            return Ok(()); // checked in `room_watch`: unreachable
        };
        let rt = &header.info.runtime;
        let head = rt.head_index.load(Ordering::Acquire);
        let floor = room_floor(index, first_committed, head, self.grain_count);
        self.cursors.wait_for_room(
            index,
            self.grain_count,
            floor,
            &rt.head_index,
            timeout,
            &rt.mcm_cursor_waiters,
        )
    }
}

pub(crate) fn ring_fragments(ring: u64, end: u64, count: u64) -> ((usize, usize), usize) {
    let start = (end % ring + ring - count % ring) % ring;
    let stop = end % ring;
    let len1 = if start < stop { count } else { ring - start };
    let len2 = count - len1;
    ((start as usize, len1 as usize), len2 as usize)
}

/// Samples open for writing; dropping without commit cancels.
pub struct SamplesWrite<'a> {
    writer: &'a mut SamplesWriter,
    index: u64,
    count: u64,
}

impl SamplesWrite<'_> {
    pub fn index(&self) -> u64 {
        self.index
    }
    pub fn count(&self) -> u64 {
        self.count
    }

    /// The two ring fragments of channel `c`, as bytes: `(first, second)`; `second` is empty
    /// unless the range wraps around the end of the ring.
    pub fn channel(&mut self, c: u32) -> (&mut [u8], &mut [u8]) {
        let ((off1, len1), len2) = self.writer.ring_ranges(self.index, self.count);
        let w = self.writer.word_size;
        let stride = self.writer.buffer_length as usize * w;
        let channels = self.writer.channels;
        let map = &mut self
            .writer
            .core
            .files
            .channels
            .as_mut()
            .expect("continuous flow")
            .1;
        if c >= channels {
            return (&mut [], &mut []);
        }
        let ring = map.bytes_mut(c as usize * stride, stride);
        let (low, high) = ring.split_at_mut(off1 * w);
        (&mut high[..len1 * w], &mut low[..len2 * w])
    }

    /// Copies `samples` (native-endian f32, `count` of them) into channel `c`.
    pub fn write_f32(&mut self, c: u32, samples: &[f32]) -> Result<()> {
        if self.writer.word_size != 4 || samples.len() as u64 != self.count {
            return Err(FlowError::InvalidArgument(format!(
                "{} f32 samples for a window of {} samples of {} bytes",
                samples.len(),
                self.count,
                self.writer.word_size
            )));
        }
        let (a, b) = self.channel(c);
        let mut bytes = samples.iter().flat_map(|s| s.to_ne_bytes());
        for dst in a.iter_mut().chain(b.iter_mut()) {
            *dst = bytes.next().unwrap_or(0);
        }
        Ok(())
    }

    /// Publishes the samples: the head index becomes `index`.
    pub fn commit(self) {
        self.writer.commit(self.index);
    }
}

#[cfg(test)]
mod tests {
    use super::ring_fragments;

    #[test]
    fn fragments_wrap() {
        assert_eq!(ring_fragments(100, 10, 10), ((0, 10), 0));
        assert_eq!(ring_fragments(100, 105, 10), ((95, 5), 5));
        assert_eq!(ring_fragments(100, 100, 10), ((90, 10), 0));
        assert_eq!(ring_fragments(100, 150, 50), ((100 % 100, 50), 0));
    }
}
