// SPDX-License-Identifier: Apache-2.0

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, Weak};

use gst::glib;
use gst::subclass::prelude::*;
use mcm_core::flow::FlowError;

use super::{lock, FlowOutput, SharedOutput};
use crate::common::CAT;

#[derive(Default)]
pub struct GrainPool {
    output: Mutex<Weak<Mutex<FlowOutput>>>,
    max_leases: AtomicUsize,
    /// Buffer size from the pool configuration (the frame size).
    size: AtomicUsize,
    flushing: AtomicBool,
}

impl GrainPool {
    pub(super) fn attach(&self, output: &SharedOutput, max_leases: usize) {
        *self.output.lock().unwrap_or_else(|p| p.into_inner()) = std::sync::Arc::downgrade(output);
        self.max_leases.store(max_leases.max(1), Ordering::Relaxed);
    }

    fn heap_buffer(&self) -> Result<gst::Buffer, gst::FlowError> {
        gst::Buffer::with_size(self.size.load(Ordering::Relaxed)).map_err(|_| gst::FlowError::Error)
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
        // Bounded: each turn either returns or waited one back-pressure slice for readers;
        // a flush (pipeline stopping, seeking) ends the wait.
        loop {
            if self.flushing.load(Ordering::Acquire) {
                return Err(gst::FlowError::Flushing);
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
            match out.writer.lease_grain(index) {
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
                Err(FlowError::BackPressureTimeout { .. }) => continue,
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
