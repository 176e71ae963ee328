// SPDX-License-Identifier: Apache-2.0

//! A buffer pool whose buffers are grains of the sink's flow: upstream (a decoder,
//! `videoconvert`, `videotestsrc`) writes each frame straight into shared memory and
//! `mcmsink` commits it in place, with no copy.
//!
//! Each acquired buffer wraps a [`GrainLease`](mcm_core::flow::GrainLease) of the next free
//! index. Buffers are never recycled: the lease ends (and its ring slot is free again) when
//! the buffer is freed. When no lease can be had (the flow is gone, or too many buffers are
//! out), the pool hands out an ordinary buffer and the sink copies it, counting the copy;
//! until every such buffer is freed, it hands out no grain (the sink would otherwise write
//! the frames to the flow out of order: a grain leased after an ordinary buffer has the
//! lower index). A reliable flow's pool waits for room for a grain without holding the
//! writer's lock, which the sink needs to commit.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use gst::glib;
use gst::subclass::prelude::ObjectSubclassIsExt;
use mcm_core::flow::GrainWriter;
use mcm_core::time::current_index;

mod imp;

glib::wrapper! {
    pub struct GrainPool(ObjectSubclass<imp::GrainPool>) @extends gst::BufferPool, gst::Object;
}

/// A flow written by `mcmsink` in direct mode, shared with its pools.
pub struct FlowOutput {
    pub writer: GrainWriter,
    /// The last index written, or the head of a flow this writer joined.
    pub last: Option<u64>,
    /// Written with back-pressure (`reliable=true`).
    reliable: bool,
    /// Payload address of each lease handed out, to recognise pool buffers in `render`.
    leased: HashMap<usize, u64>,
}

pub type SharedOutput = Arc<Mutex<FlowOutput>>;

impl FlowOutput {
    pub fn new(writer: GrainWriter, reliable: bool) -> SharedOutput {
        let last = (!writer.created()).then(|| writer.head_index());
        Arc::new(Mutex::new(Self {
            writer,
            last,
            reliable,
            leased: HashMap::new(),
        }))
    }

    /// The index for the next grain: after the last one, and not before the current time
    /// (a reliable flow counts from its first grain instead: a jump with the clock past a
    /// slow reader's window would strand it).
    pub fn next_index(&self) -> u64 {
        let from = match (self.last, self.reliable) {
            (Some(l), true) => l + 1,
            (l, _) => l
                .map_or(0, |l| l + 1)
                .max(current_index(self.writer.grain_rate())),
        };
        self.writer.next_free_index(from)
    }

    /// The leased grain whose payload starts at `addr`, if it is one of ours (forgotten here).
    pub fn take_lease(&mut self, addr: usize) -> Option<u64> {
        self.leased.remove(&addr)
    }

    pub fn committed(&mut self, index: u64) {
        self.last = Some(self.last.map_or(index, |l| l.max(index)));
    }
}

pub fn lock(output: &SharedOutput) -> MutexGuard<'_, FlowOutput> {
    output.lock().unwrap_or_else(|p| p.into_inner())
}

impl GrainPool {
    /// A pool of grains of `output`, at most `max_leases` out at once.
    pub fn new(output: &SharedOutput, max_leases: usize) -> Self {
        let pool: Self = glib::Object::new();
        pool.imp().attach(output, max_leases);
        pool
    }
}
