//! Flows of grains in shared memory, in the EBU/LF MXL v1 layout.
//!
//! A [`Domain`] is a directory (normally on tmpfs). Each flow lives in
//! `${domain}/${uuid}.mxl-flow/`:
//!
//! | file | content |
//! |---|---|
//! | `flow_def.json` | NMOS IS-04 flow, see [`crate::format::FlowDef`] |
//! | `data` | 2064-byte header: [`layout::FlowData`] |
//! | `access` | empty; readers touch it so the writer can report the last read time |
//! | `grains/data.<slot>` | discrete flows: 8192-byte grain header, then the payload |
//! | `channels` | continuous flows: one sample ring per channel |
//! | `mcm-cursors/` | mcm extension: one file per reliable (back-pressure) reader |
//!
//! Writers map read-write and hold shared `flock`s; readers map read-only and never write
//! the flow. Commits bump the futex word at offset 0x808 and wake every reader.

mod cursor;
mod dirwatch;
mod domain;
mod error;
mod files;
mod follower;
pub mod layout;
mod reader;
mod shm;
mod writer;

pub use cursor::{ReaderCursor, ReaderStatus};
pub use domain::{Domain, DomainOptions, FlowStatus, GcReport};
pub use error::FlowError;
pub use follower::{FollowError, Follower};
pub use reader::{Grain, GrainReader, HeldGrain, ReaderOptions, SamplesRead, SamplesReader};
pub use writer::{
    GrainLease, GrainWrite, GrainWriter, RoomWatch, SamplesWrite, SamplesWriter, WriterOptions,
};

/// `mxlGrainInfo` validSlices request meaning "any number, even none" (MXL `MXL_GRAIN_VALID_SLICES_ANY`).
pub const VALID_SLICES_ANY: u16 = 0;
/// `mxlGrainInfo` validSlices request meaning "the whole grain" (MXL `MXL_GRAIN_VALID_SLICES_ALL`).
pub const VALID_SLICES_ALL: u16 = 0xFFFF;

/// Result type of flow operations.
pub type Result<T, E = FlowError> = std::result::Result<T, E>;
