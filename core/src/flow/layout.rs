//! Byte layout of the MXL v1 shared-memory files (`data` and `grains/data.N`).
//!
//! Every struct is `#[repr(C)]`, native little-endian, and checked at compile time against
//! the offsets of MXL's `flowinfo.h`, `flow.h` and `Flow.hpp` (v1). Fields that other
//! processes change while a flow is live are atomics; the rest are written once, before
//! the flow directory is published.

use std::mem::{offset_of, size_of};
use std::sync::atomic::{AtomicU16, AtomicU32, AtomicU64};

/// `mxlFlowInfo.version` written and accepted (MXL `FLOW_DATA_VERSION`).
pub const FLOW_INFO_VERSION: u32 = 1;
/// `mxlGrainInfo.version` written and accepted (MXL `GRAIN_HEADER_VERSION`).
pub const GRAIN_INFO_VERSION: u32 = 1;
/// Offset of the payload in a grain file (MXL `MXL_GRAIN_PAYLOAD_OFFSET`).
pub const GRAIN_PAYLOAD_OFFSET: usize = 8192;
/// `mxlGrainInfo.flags` bit 0: the grain holds no valid media (MXL `MXL_GRAIN_FLAG_INVALID`).
pub const GRAIN_FLAG_INVALID: u32 = 1;
/// mcm extension, `mxlGrainInfo.flags` bit 31: the writer ended the flow at this grain.
pub const GRAIN_FLAG_END_OF_STREAM: u32 = 1 << 31;

/// `mxlCommonFlowInfo.format` (MXL `dataformat.h`).
pub const DATA_FORMAT_UNSPECIFIED: u32 = 0;
pub const DATA_FORMAT_VIDEO: u32 = 1;
pub const DATA_FORMAT_AUDIO: u32 = 2;
pub const DATA_FORMAT_DATA: u32 = 3;

/// Magic in the runtime reserved area marking mcm's extension word as initialised.
pub const MCM_EXT_MAGIC: u32 = 0x4d43_4d31; // "MCM1"
/// mcm extension flag: the writer ended the flow (end of stream).
pub const MCM_EXT_END_OF_STREAM: u32 = 1;
/// mcm extension flag: a writer of this flow honours reader cursors (back-pressure).
pub const MCM_EXT_BACK_PRESSURE: u32 = 2;
/// mcm extension flag: the flow's writers count themselves in `mcm_cursor_waiters` while
/// they wait on a cursor, so a reader that moves its cursor wakes them only then (without
/// it, readers always wake: a writer that predates the count).
pub const MCM_EXT_CURSOR_WAITERS: u32 = 4;
/// mcm extension flag: the flow's back-pressure writers end the stream once reliable
/// readers have read the last grain (the cursor's `consumed_next`), whatever they still
/// hold; without it, a writer waits until they let go (a reader lending grains downstream
/// then copies them out at the end of the stream).
pub const MCM_EXT_DRAIN_READ: u32 = 8;

/// Grain or sample rate as a rational, `mxlRational` (two `int64_t`).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RawRational {
    pub numerator: i64,
    pub denominator: i64,
}

/// `mxlCommonFlowInfo`: 128 bytes at offset 0x08 of `data`.
#[repr(C)]
pub struct CommonFlowInfo {
    /// Flow UUID bytes in RFC 4122 text order.
    pub id: [u8; 16],
    pub format: u32,
    pub flags: u32,
    /// Grain rate, or sample rate for audio; field rate for interlaced video.
    pub grain_rate: RawRational,
    pub max_commit_batch_size_hint: u32,
    pub max_sync_batch_size_hint: u32,
    /// 0 host memory, 1 device memory.
    pub payload_location: u32,
    pub device_index: i32,
    pub reserved: [u8; 72],
}

/// Discrete (grain) flow configuration, the `discrete` arm of the 64-byte union at 0x88.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct DiscreteFlowInfo {
    /// Bytes per slice in each plane (a slice is a line of each plane for video).
    pub slice_sizes: [u32; 4],
    /// Number of grain files in the ring.
    pub grain_count: u32,
    pub reserved: [u8; 44],
}

/// Continuous (sample) flow configuration, the `continuous` arm of the union at 0x88.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct ContinuousFlowInfo {
    pub channel_count: u32,
    /// Samples per channel ring.
    pub buffer_length: u32,
    pub reserved: [u8; 56],
}

/// The 64-byte union of discrete and continuous configuration.
#[repr(C)]
pub union FlowConfigUnion {
    pub discrete: DiscreteFlowInfo,
    pub continuous: ContinuousFlowInfo,
}

/// `mxlFlowRuntimeInfo`: 64 bytes at 0xC8, updated by writers while the flow is live.
#[repr(C)]
pub struct RuntimeFlowInfo {
    /// Absolute index of the newest committed grain, or one past the newest sample.
    pub head_index: AtomicU64,
    /// TAI ns of the last commit.
    pub last_write_time: AtomicU64,
    /// TAI ns of the last read reported through `access`.
    pub last_read_time: AtomicU64,
    /// mcm extension (reserved in MXL): [`MCM_EXT_MAGIC`] once initialised.
    pub mcm_magic: AtomicU32,
    /// mcm extension: `MCM_EXT_*` flags.
    pub mcm_flags: AtomicU32,
    /// mcm extension: first index that is not part of the stream after end of stream.
    pub mcm_end_index: AtomicU64,
    /// mcm extension: writers waiting on a reader cursor's futex word right now.
    pub mcm_cursor_waiters: AtomicU32,
    pub reserved: [u8; 20],
}

/// `mxlFlowInfo`: 2048 bytes at the start of `data`.
#[repr(C)]
pub struct FlowInfo {
    pub version: u32,
    pub size: u32,
    pub common: CommonFlowInfo,
    pub config: FlowConfigUnion,
    pub runtime: RuntimeFlowInfo,
    pub reserved: [u8; 1784],
}

impl FlowInfo {
    /// The discrete arm of the configuration union.
    pub fn discrete(&self) -> DiscreteFlowInfo {
        // SAFETY: both arms are 64 bytes of plain integers; any bit pattern is valid.
        unsafe { self.config.discrete }
    }

    /// The continuous arm of the configuration union.
    pub fn continuous(&self) -> ContinuousFlowInfo {
        // SAFETY: as for `discrete`.
        unsafe { self.config.continuous }
    }
}

/// `FlowState`: follows the flow info in `data`.
#[repr(C)]
pub struct FlowState {
    /// `st_ino` of `data` when it was created; a different inode means the flow was recreated.
    pub inode: AtomicU64,
    /// The futex word: bumped on every commit, waited on by readers.
    pub sync_counter: AtomicU32,
    pub padding: u32,
}

/// The whole `data` file: `struct Flow { mxlFlowInfo info; FlowState state; }`, 2064 bytes.
#[repr(C)]
pub struct FlowData {
    pub info: FlowInfo,
    pub state: FlowState,
}

/// `mxlGrainInfo`: 4096 bytes at the start of each grain file.
#[repr(C)]
pub struct GrainInfo {
    pub version: u32,
    pub size: u32,
    /// Absolute grain index, written when the grain is opened.
    pub index: AtomicU64,
    /// `GRAIN_FLAG_*` bits.
    pub flags: AtomicU32,
    /// Payload bytes in this grain.
    pub grain_size: AtomicU32,
    /// Slices in a complete grain (lines, or field lines when interlaced).
    pub total_slices: AtomicU16,
    /// Slices committed so far; the grain is complete when equal to `total_slices`.
    pub valid_slices: AtomicU16,
    pub reserved: [u8; 4068],
}

/// Size of the `data` file.
pub const FLOW_DATA_SIZE: usize = size_of::<FlowData>();

const _: () = {
    assert!(size_of::<RawRational>() == 16);
    assert!(size_of::<CommonFlowInfo>() == 128);
    assert!(size_of::<DiscreteFlowInfo>() == 64);
    assert!(size_of::<ContinuousFlowInfo>() == 64);
    assert!(size_of::<FlowConfigUnion>() == 64);
    assert!(size_of::<RuntimeFlowInfo>() == 64);
    assert!(size_of::<FlowInfo>() == 2048);
    assert!(size_of::<FlowState>() == 16);
    assert!(size_of::<FlowData>() == 2064);
    assert!(size_of::<GrainInfo>() == 4096);
    assert!(GRAIN_PAYLOAD_OFFSET == 8192);

    assert!(offset_of!(FlowInfo, version) == 0x000);
    assert!(offset_of!(FlowInfo, size) == 0x004);
    assert!(offset_of!(FlowInfo, common) == 0x008);
    assert!(offset_of!(FlowInfo, common) + offset_of!(CommonFlowInfo, format) == 0x018);
    assert!(offset_of!(FlowInfo, common) + offset_of!(CommonFlowInfo, flags) == 0x01C);
    assert!(offset_of!(FlowInfo, common) + offset_of!(CommonFlowInfo, grain_rate) == 0x020);
    assert!(
        offset_of!(FlowInfo, common) + offset_of!(CommonFlowInfo, max_commit_batch_size_hint)
            == 0x030
    );
    assert!(
        offset_of!(FlowInfo, common) + offset_of!(CommonFlowInfo, max_sync_batch_size_hint)
            == 0x034
    );
    assert!(offset_of!(FlowInfo, common) + offset_of!(CommonFlowInfo, payload_location) == 0x038);
    assert!(offset_of!(FlowInfo, common) + offset_of!(CommonFlowInfo, device_index) == 0x03C);
    assert!(offset_of!(FlowInfo, config) == 0x088);
    assert!(offset_of!(FlowInfo, config) + offset_of!(DiscreteFlowInfo, grain_count) == 0x098);
    assert!(offset_of!(FlowInfo, config) + offset_of!(ContinuousFlowInfo, buffer_length) == 0x08C);
    assert!(offset_of!(FlowInfo, runtime) == 0x0C8);
    assert!(offset_of!(FlowInfo, runtime) + offset_of!(RuntimeFlowInfo, last_write_time) == 0x0D0);
    assert!(offset_of!(FlowInfo, runtime) + offset_of!(RuntimeFlowInfo, last_read_time) == 0x0D8);
    assert!(offset_of!(FlowInfo, runtime) + offset_of!(RuntimeFlowInfo, mcm_magic) == 0x0E0);
    assert!(
        offset_of!(FlowInfo, runtime) + offset_of!(RuntimeFlowInfo, mcm_cursor_waiters) == 0x0F0
    );
    assert!(offset_of!(FlowInfo, reserved) == 0x108);
    assert!(offset_of!(FlowData, state) == 0x800);
    assert!(offset_of!(FlowData, state) + offset_of!(FlowState, sync_counter) == 0x808);

    assert!(offset_of!(GrainInfo, index) == 0x08);
    assert!(offset_of!(GrainInfo, flags) == 0x10);
    assert!(offset_of!(GrainInfo, grain_size) == 0x14);
    assert!(offset_of!(GrainInfo, total_slices) == 0x18);
    assert!(offset_of!(GrainInfo, valid_slices) == 0x1A);
    assert!(offset_of!(GrainInfo, reserved) == 0x1C);
};
