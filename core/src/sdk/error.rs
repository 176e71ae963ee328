//! SDK errors, with MCM's `mesh_dp.h` error codes (1000-1013).

/// MCM's error codes (`MESH_ERR_*` in `mesh_dp.h`); the C API returns them negated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(i32)]
pub enum MeshErrorCode {
    BadClientPtr = 1000,
    BadConnPtr = 1001,
    BadConfigPtr = 1002,
    BadBufPtr = 1003,
    BadBufLen = 1004,
    ClientConfigInval = 1005,
    MaxConn = 1006,
    FoundAllocated = 1007,
    ConnFailed = 1008,
    ConnConfigInval = 1009,
    ConnConfigIncompat = 1010,
    ConnClosed = 1011,
    Timeout = 1012,
    NotImplemented = 1013,
}

impl MeshErrorCode {
    /// The code for a number, if it is one of MCM's.
    pub fn from_code(code: i32) -> Option<Self> {
        use MeshErrorCode::*;
        [
            BadClientPtr,
            BadConnPtr,
            BadConfigPtr,
            BadBufPtr,
            BadBufLen,
            ClientConfigInval,
            MaxConn,
            FoundAllocated,
            ConnFailed,
            ConnConfigInval,
            ConnConfigIncompat,
            ConnClosed,
            Timeout,
            NotImplemented,
        ]
        .into_iter()
        .find(|c| *c as i32 == code)
    }

    /// MCM's description of the code (`mesh_err2str`).
    pub fn description(self) -> &'static str {
        match self {
            Self::BadClientPtr => "Bad client pointer",
            Self::BadConnPtr => "Bad connection pointer",
            Self::BadConfigPtr => "Bad configuration pointer",
            Self::BadBufPtr => "Bad buffer pointer",
            Self::BadBufLen => "Bad buffer length",
            Self::ClientConfigInval => "Invalid client config",
            Self::MaxConn => "Reached max connections number",
            Self::FoundAllocated => "Found allocated resources",
            Self::ConnFailed => "Connection creation failed",
            Self::ConnConfigInval => "Invalid connection config",
            Self::ConnConfigIncompat => "Incompatible connection config",
            Self::ConnClosed => "Connection is closed",
            Self::Timeout => "Timeout occurred",
            Self::NotImplemented => "Feature not implemented yet",
        }
    }
}

/// An SDK failure: MCM's code plus what exactly went wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{} ({}): {message}", .code.description(), *.code as i32)]
pub struct SdkError {
    pub code: MeshErrorCode,
    pub message: String,
}

impl SdkError {
    pub fn new(code: MeshErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
    pub(crate) fn conn_inval(message: impl Into<String>) -> Self {
        Self::new(MeshErrorCode::ConnConfigInval, message)
    }
}

/// Result of SDK calls.
pub type SdkResult<T> = Result<T, SdkError>;
