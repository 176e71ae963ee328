//! `GstMemory` whose bytes are a [`Lease`]: the only module of the elements with `unsafe`.
//!
//! A memory wrapped around fixed bytes (`gst_memory_new_wrapped`) cannot follow a lease
//! whose bytes move (from the grain to a private copy before a live writer reuses the
//! slot), so this allocator asks the lease for the bytes at every map and tells it of every
//! unmap; the lease moves them only while no map is open. Memories are read-only: a
//! writable map makes GStreamer copy (the base class's fallback `mem_copy`, which maps).
//! Sharing (sub-buffers) gives memories of the same lease.

use std::mem::MaybeUninit;
use std::ptr;
use std::sync::{Arc, OnceLock};

use gst::glib;
use gst::glib::translate::{from_glib_full, ToGlibPtr};
use gst::prelude::*;
use gst::subclass::prelude::*;

use crate::mcmsrc::lease::Lease;

/// A memory of a lease: `read_only`, `size` the lease's length.
pub fn memory(lease: Arc<Lease>) -> gst::Memory {
    let allocator = ALLOCATOR.get_or_init(|| glib::Object::new::<LeaseAllocator>().upcast());
    let size = lease.len();
    let raw = Box::into_raw(Box::new(MaybeUninit::<LeasedMemory>::uninit())).cast::<LeasedMemory>();
    // SAFETY: `raw` is a fresh allocation the size and alignment of `LeasedMemory`, whose
    // first field is the `GstMemory` that `gst_memory_init` fills in (taking its own ref on
    // the allocator); the lease pointer is written before the memory is shared. The memory
    // is returned owned (refcount 1) and freed by `LeaseAllocator::free`, which undoes
    // both the `Box` and the `Arc::into_raw`.
    unsafe {
        gst::ffi::gst_memory_init(
            ptr::addr_of_mut!((*raw).mem),
            gst::ffi::GST_MEMORY_FLAG_READONLY,
            allocator.to_glib_none().0,
            ptr::null_mut(),
            size,
            0,
            0,
            size,
        );
        ptr::addr_of_mut!((*raw).lease).write(Arc::into_raw(lease));
        from_glib_full(raw.cast::<gst::ffi::GstMemory>())
    }
}

static ALLOCATOR: OnceLock<gst::Allocator> = OnceLock::new();

#[repr(C)]
struct LeasedMemory {
    mem: gst::ffi::GstMemory,
    /// One strong count of the lease, owned by this memory (sub-memories hold their own).
    lease: *const Lease,
}

// The GstMemory must come first: GStreamer casts between the two.
const _: () = assert!(std::mem::offset_of!(LeasedMemory, mem) == 0);

/// The lease behind a memory of this allocator.
///
/// # Safety
/// `mem` must be a live memory created by [`memory`] or [`LeaseAllocator::share`].
unsafe fn lease_of<'a>(mem: *mut gst::ffi::GstMemory) -> &'a Lease {
    // SAFETY: per the contract, `mem` is a `LeasedMemory` whose `lease` came from
    // `Arc::into_raw` and is released only when the memory is freed.
    unsafe { &*(*mem.cast::<LeasedMemory>()).lease }
}

glib::wrapper! {
    pub struct LeaseAllocator(ObjectSubclass<imp::LeaseAllocator>) @extends gst::Allocator, gst::Object;
}

mod imp {
    use super::*;

    #[derive(Default)]
    pub struct LeaseAllocator;

    #[glib::object_subclass]
    impl ObjectSubclass for LeaseAllocator {
        const NAME: &'static str = "McmLeaseAllocator";
        type Type = super::LeaseAllocator;
        type ParentType = gst::Allocator;

        fn instance_init(obj: &glib::subclass::InitializingObject<Self>) {
            // What `gst_memory_is_type` sees.
            static MEM_TYPE: &std::ffi::CStr = c"McmLeasedGrain";
            let allocator = obj.as_ptr().cast::<gst::ffi::GstAllocator>();
            // SAFETY: the instance is a GstAllocator being initialised; these are its
            // per-instance vfuncs, set once here as the GstAllocator API expects of
            // subclasses. `mem_copy` and `mem_is_span` keep the base class's fallbacks.
            unsafe {
                (*allocator).mem_type = MEM_TYPE.as_ptr();
                (*allocator).mem_map = Some(map);
                (*allocator).mem_unmap = Some(unmap);
                (*allocator).mem_share = Some(share);
                (*allocator).object.flags |= gst::ffi::GST_ALLOCATOR_FLAG_CUSTOM_ALLOC;
            }
        }
    }

    impl ObjectImpl for LeaseAllocator {}
    impl GstObjectImpl for LeaseAllocator {}

    // SAFETY: `alloc` is never used (CUSTOM_ALLOC: memories come from `memory`), and `free`
    // releases exactly what `memory` and `share` allocated.
    unsafe impl AllocatorImpl for LeaseAllocator {
        unsafe fn alloc(
            &self,
            _size: usize,
            _params: &gst::AllocationParams,
        ) -> *mut gst::ffi::GstMemory {
            ptr::null_mut()
        }

        unsafe fn free(&self, mem: *mut gst::ffi::GstMemory) {
            let raw = mem.cast::<LeasedMemory>();
            // SAFETY: GStreamer frees each memory of this allocator once, after its last
            // reference; it was allocated as a `Box<MaybeUninit<LeasedMemory>>` holding one
            // `Arc` count of its lease, both given back here.
            unsafe {
                drop(Arc::from_raw((*raw).lease));
                drop(Box::from_raw(raw.cast::<MaybeUninit<LeasedMemory>>()));
            }
        }
    }

    unsafe extern "C" fn map(
        mem: *mut gst::ffi::GstMemory,
        _maxsize: usize,
        _flags: gst::ffi::GstMapFlags,
    ) -> glib::ffi::gpointer {
        // SAFETY: GStreamer maps only live memories of this allocator. The bytes stay put
        // until `unmap` (the lease moves them only with no map open); `gst_memory_map`
        // adds the memory's offset. Write maps never get here: the memories are read-only.
        unsafe { lease_of(mem).map().cast_mut().cast() }
    }

    unsafe extern "C" fn unmap(mem: *mut gst::ffi::GstMemory) {
        // SAFETY: as for `map`.
        unsafe { lease_of(mem).unmap() }
    }

    /// A memory of the same lease over `[offset, offset + size)` of `mem` (`size` -1: to
    /// its end), as `gst_memory_share` asks.
    unsafe extern "C" fn share(
        mem: *mut gst::ffi::GstMemory,
        offset: isize,
        size: isize,
    ) -> *mut gst::ffi::GstMemory {
        // SAFETY: `mem` is a live memory of this allocator; the new one is laid out and
        // initialised as in `memory`, with `mem` as its parent (which `gst_memory_init`
        // refs), and holds a count of the same lease of its own.
        unsafe {
            // Fields read through the pointer: other threads change the refcount and lock
            // state of `mem` meanwhile, so no reference to the whole struct is made.
            let (parent, allocator) = ((*mem).parent, (*mem).allocator);
            let parent = if parent.is_null() { mem } else { parent };
            let (m_size, m_offset, maxsize) = ((*mem).size, (*mem).offset, (*mem).maxsize);
            let (align, flags) = ((*mem).align, (*mem).mini_object.flags);
            // GStreamer passes sizes as signed and means -1 as "the rest".
            let offset = offset as usize;
            let size = if size < 0 {
                m_size.wrapping_sub(offset)
            } else {
                size as usize
            };
            let new_offset = m_offset.wrapping_add(offset);
            if new_offset.checked_add(size).is_none_or(|end| end > maxsize) {
                return ptr::null_mut();
            }
            let lease = (*mem.cast::<LeasedMemory>()).lease;
            Arc::increment_strong_count(lease);
            let raw = Box::into_raw(Box::new(MaybeUninit::<LeasedMemory>::uninit()))
                .cast::<LeasedMemory>();
            gst::ffi::gst_memory_init(
                ptr::addr_of_mut!((*raw).mem),
                flags | gst::ffi::GST_MINI_OBJECT_FLAG_LOCK_READONLY,
                allocator,
                parent,
                maxsize,
                align,
                new_offset,
                size,
            );
            ptr::addr_of_mut!((*raw).lease).write(lease);
            raw.cast()
        }
    }
}
