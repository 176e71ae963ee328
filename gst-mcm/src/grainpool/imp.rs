// SPDX-License-Identifier: Apache-2.0

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use gst::glib;
use gst::subclass::prelude::*;
use mcm_core::flow::{FlowError, RoomWatch};

use super::{lock, FlowOutput, SharedOutput};
use crate::common::CAT;

#[derive(Default)]
pub struct GrainPool {
    output: Mutex<Weak<Mutex<FlowOutput>>>,
    max_leases: AtomicUsize,
    /// Buffer size from the pool configuration (the frame size).
    size: AtomicUsize,
    flushing: AtomicBool,
    /// Where a reliable flow's pool waits for readers to make room, apart from the
    /// writer: the sink's streaming thread needs the writer's lock to commit, and the
    /// readers it feeds are what makes the room.
    room: Mutex<Option<RoomWatch>>,
    /// Ordinary buffers handed out and not yet freed. While any is, no grain is leased: a
    /// grain leased now would get an index before the one the sink gives that buffer when
    /// it copies it, so the flow would hold the frames out of order, and a reliable reader
    /// would wait for the leased grain while the writer waits for that reader.
    heap_out: Arc<AtomicUsize>,
}

/// The memory of an ordinary buffer from the pool: counted in `heap_out` while it lives.
struct HeapFrame {
    bytes: Box<[u8]>,
    out: Arc<AtomicUsize>,
}

impl AsRef<[u8]> for HeapFrame {
    fn as_ref(&self) -> &[u8] {
        &self.bytes
    }
}

impl AsMut<[u8]> for HeapFrame {
    fn as_mut(&mut self) -> &mut [u8] {
        &mut self.bytes
    }
}

impl Drop for HeapFrame {
    fn drop(&mut self) {
        self.out.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Longest wait for room before the pool looks at `flushing` again.
const ROOM_WAIT_SLICE: Duration = Duration::from_millis(100);

impl GrainPool {
    pub(super) fn attach(&self, output: &SharedOutput, max_leases: usize) {
        *self.output.lock().unwrap_or_else(|p| p.into_inner()) = Arc::downgrade(output);
        self.max_leases.store(max_leases.max(1), Ordering::Relaxed);
    }

    fn heap_buffer(&self) -> Result<gst::Buffer, gst::FlowError> {
        let size = self.size.load(Ordering::Relaxed);
        self.heap_out.fetch_add(1, Ordering::AcqRel);
        Ok(gst::Buffer::from_mut_slice(HeapFrame {
            bytes: vec![0; size].into_boxed_slice(),
            out: self.heap_out.clone(),
        }))
    }
}

#[glib::object_subclass]
impl ObjectSubclass for GrainPool {
    const NAME: &'static str = "GstMcmGrainPool";
    type Type = super::GrainPool;
    type ParentType = gst::BufferPool;
}

impl ObjectImpl for GrainPool {}
impl GstObjectImpl for GrainPool {}

impl BufferPoolImpl for GrainPool {
    fn acquire_buffer(
        &self,
        _params: Option<&gst::BufferPoolAcquireParams>,
    ) -> Result<gst::Buffer, gst::FlowError> {
        let size = self.size.load(Ordering::Relaxed);
        let Some(output) = self
            .output
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .upgrade()
        else {
            return self.heap_buffer();
        };
        // Bounded: each turn either returns or waited one slice for readers to make room;
        // a flush (pipeline stopping, seeking) ends the wait.
        loop {
            if self.flushing.load(Ordering::Acquire) {
                return Err(gst::FlowError::Flushing);
            }
            if self.heap_out.load(Ordering::Acquire) > 0 {
                gst::debug!(CAT, imp = self, "ordinary buffers still out; another");
                return self.heap_buffer();
            }
            let mut out = lock(&output);
            if out.writer.leases_alive() >= self.max_leases.load(Ordering::Relaxed) {
                gst::debug!(
                    CAT,
                    imp = self,
                    "all grains out; an ordinary buffer instead"
                );
                return self.heap_buffer();
            }
            let index = out.next_index();
            match out.writer.try_lease_grain(index) {
                Ok(mut lease) => {
                    if lease.payload().len() < size {
                        return self.heap_buffer();
                    }
                    let addr = lease.payload_mut().as_ptr() as usize;
                    out.leased.insert(addr, index);
                    let mut buffer = gst::Buffer::from_mut_slice(lease);
                    buffer
                        .get_mut()
                        .ok_or(gst::FlowError::Error)?
                        .set_size(size);
                    gst::trace!(CAT, imp = self, "grain {index} leased");
                    return Ok(buffer);
                }
                Err(FlowError::BackPressureTimeout { .. }) => {
                    let first = out.writer.first_committed();
                    let mut room = self.room.lock().unwrap_or_else(|p| p.into_inner());
                    if room.is_none() {
                        match out.writer.room_watch() {
                            Ok(Some(watch)) => *room = Some(watch),
                            Ok(None) => return self.heap_buffer(),
                            Err(e) => {
                                gst::debug!(
                                    CAT,
                                    imp = self,
                                    "no room watch ({e}); an ordinary buffer instead"
                                );
                                return self.heap_buffer();
                            }
                        }
                    }
                    // Not under the writer's lock: a wait there kept the sink from
                    // committing the grains readers were waiting for (a queue before the
                    // sink holding leased grains), and neither side moved again.
                    drop(out);
                    if let Some(watch) = room.as_mut() {
                        let _ = watch.wait(index, first, ROOM_WAIT_SLICE);
                    }
                }
                Err(e) => {
                    gst::debug!(
                        CAT,
                        imp = self,
                        "no lease ({e}); an ordinary buffer instead"
                    );
                    return self.heap_buffer();
                }
            }
        }
    }

    // Buffers are not recycled: dropping one ends its lease and frees its ring slot.
    fn release_buffer(&self, buffer: gst::Buffer) {
        drop(buffer);
    }

    fn reset_buffer(&self, _buffer: &mut gst::BufferRef) {}

    fn flush_start(&self) {
        self.flushing.store(true, Ordering::Release);
    }

    fn flush_stop(&self) {
        self.flushing.store(false, Ordering::Release);
    }

    fn set_config(&self, config: &mut gst::BufferPoolConfigRef) -> bool {
        if let Some((_, size, _, _)) = config.params() {
            self.size.store(size as usize, Ordering::Relaxed);
        }
        self.parent_set_config(config)
    }
}
