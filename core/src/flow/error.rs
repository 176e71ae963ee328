//! Typed errors of flow operations.

use std::io;
use std::path::PathBuf;

use uuid::Uuid;

use crate::format::FlowDefError;

/// Everything that can go wrong creating, opening, reading or writing a flow.
#[derive(Debug, thiserror::Error)]
pub enum FlowError {
    /// No flow with this id in the domain (MXL `FLOW_NOT_FOUND`).
    #[error("flow {id} not found in the domain")]
    NotFound { id: Uuid },
    /// The requested index is not written (completely enough) yet (MXL `OUT_OF_RANGE_TOO_EARLY`).
    /// Blocking reads return this when their timeout passes.
    #[error("index {index} is not available yet (head index {head})")]
    TooEarly { index: u64, head: u64 },
    /// The requested index was already overwritten (MXL `OUT_OF_RANGE_TOO_LATE`).
    #[error("index {index} was overwritten (oldest readable index {oldest})")]
    TooLate { index: u64, oldest: u64 },
    /// The flow's `data` file was removed or replaced: its writer released or restarted it
    /// (MXL `FLOW_INVALID`). Open the flow again.
    #[error("flow {id} is no longer valid: its writer removed or recreated it")]
    FlowInvalid { id: Uuid },
    /// The writer ended the flow; `end_index` is the first index after the stream.
    #[error("end of stream at index {end_index}")]
    EndOfStream { end_index: u64 },
    /// A shared-memory header carries a version this build does not speak.
    #[error("{file}: unsupported {what} version {found} (this build speaks {expected})")]
    Version {
        file: PathBuf,
        what: &'static str,
        found: u32,
        expected: u32,
    },
    /// A flow file is truncated, of the wrong size or holds impossible values.
    #[error("{file}: corrupt flow file: {reason}")]
    Corrupt { file: PathBuf, reason: String },
    /// The flow description was rejected.
    #[error(transparent)]
    Definition(#[from] FlowDefError),
    /// The flow exists with another geometry than the writer asked for.
    #[error("flow {id} already exists with a different layout: {reason}")]
    Conflict { id: Uuid, reason: String },
    /// The flow is of the other kind: continuous (audio samples) where grains were asked
    /// for, or discrete (grains) where samples were.
    #[error("flow {id} is {}; open it with {}", if *continuous { "continuous (audio samples)" } else { "discrete (grains)" }, if *continuous { "open_samples_reader" } else { "open_grain_reader" })]
    WrongKind { id: Uuid, continuous: bool },
    /// A call with arguments outside what the flow allows.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// A back-pressure writer waited `timeout` for a reliable reader to consume a grain.
    #[error("back-pressure: reader {reader} (next index {reader_next}) did not free index {index} in time")]
    BackPressureTimeout {
        index: u64,
        reader: String,
        reader_next: u64,
    },
    /// An operating-system call failed.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl FlowError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: impl Into<io::Error>) -> Self {
        Self::Io {
            path: path.into(),
            source: source.into(),
        }
    }

    pub(crate) fn corrupt(file: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        Self::Corrupt {
            file: file.into(),
            reason: reason.into(),
        }
    }
}
