//! libmcm_dp: MCM's C API (`mesh_dp.h`) over the mcm SDK.
//!
//! The 13 functions, the `MeshConnection` and `MeshBuffer` structs, the JSON configs and the
//! error codes are MCM's, so an MCM application (or FFmpeg's mcm devices) builds against
//! this library unchanged. Every function returns 0 or a negative `MESH_ERR_*` code, never
//! unwinds into C (a panic becomes `-MESH_ERR_CONN_FAILED`), and checks every pointer it is
//! given against what it handed out.
//!
//! A connection lends one buffer at a time (MCM applications get, fill or read, and put);
//! a connection is used from one thread at a time, different connections from any thread.

#![allow(non_camel_case_types)]

use std::ffi::{c_char, c_int, c_void, CStr};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use mcm_core::sdk::{Buffer, Client, Connection, MeshErrorCode, SdkError};

/// The version of MCM's API this library implements (MCM's `MESH_VERSION`).
pub const MESH_VERSION_STRING: &str = "25.03";

/// Timeout argument: the client's `apiDefaultTimeoutMicroseconds`.
pub const MESH_TIMEOUT_DEFAULT: c_int = -2;
/// Timeout argument: wait for ever.
pub const MESH_TIMEOUT_INFINITE: c_int = -1;
/// Timeout argument: do not wait (poll).
pub const MESH_TIMEOUT_ZERO: c_int = 0;

pub const MESH_ERR_BAD_CLIENT_PTR: c_int = 1000;
pub const MESH_ERR_BAD_CONN_PTR: c_int = 1001;
pub const MESH_ERR_BAD_CONFIG_PTR: c_int = 1002;
pub const MESH_ERR_BAD_BUF_PTR: c_int = 1003;
pub const MESH_ERR_BAD_BUF_LEN: c_int = 1004;
pub const MESH_ERR_CLIENT_CONFIG_INVAL: c_int = 1005;
pub const MESH_ERR_MAX_CONN: c_int = 1006;
pub const MESH_ERR_FOUND_ALLOCATED: c_int = 1007;
pub const MESH_ERR_CONN_FAILED: c_int = 1008;
pub const MESH_ERR_CONN_CONFIG_INVAL: c_int = 1009;
pub const MESH_ERR_CONN_CONFIG_INCOMPAT: c_int = 1010;
pub const MESH_ERR_CONN_CLOSED: c_int = 1011;
pub const MESH_ERR_TIMEOUT: c_int = 1012;
pub const MESH_ERR_NOT_IMPLEMENTED: c_int = 1013;

/// A mesh client (opaque to C): the connection to the local media proxy.
pub struct MeshClient {
    client: Client,
    connections: AtomicUsize,
}

/// A connection, as C sees it (MCM layout). `payload_size` and `metadata_size` are the
/// capacities of every buffer of the connection, in bytes.
#[repr(C)]
pub struct MeshConnection {
    pub client: *mut MeshClient,
    pub payload_size: usize,
    pub metadata_size: usize,
}

/// A buffer lent by `mesh_get_buffer`, as C sees it (MCM layout): shared memory, no copy.
/// For a transmitter `payload_len` starts at the capacity and `metadata_len` at 0; for a
/// receiver they are what the sender committed.
#[repr(C)]
pub struct MeshBuffer {
    pub conn: *mut MeshConnection,
    pub payload_ptr: *mut c_void,
    pub payload_len: usize,
    pub metadata_ptr: *mut c_void,
    pub metadata_len: usize,
}

/// Everything behind a `MeshConnection *`: the public struct comes first, so the pointer
/// C holds is a pointer to this context (as in MCM).
#[repr(C)]
struct ConnectionContext {
    public: MeshConnection,
    buffer: MeshBuffer,
    /// The buffer lent to C, borrowing `conn`. Declared before `conn`: dropped first.
    lent: Option<Buffer<'static>>,
    conn: Box<Connection>,
}

fn code(e: &SdkError) -> c_int {
    -(e.code as c_int)
}

/// Runs an entry point, turning a panic into an error code.
fn guard(f: impl FnOnce() -> c_int) -> c_int {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or(-MESH_ERR_CONN_FAILED)
}

/// A config string from C; `None` if it is not UTF-8.
///
/// # Safety
/// `s` is null or points to a NUL-terminated string.
unsafe fn config_str<'a>(s: *const c_char) -> Result<Option<&'a str>, ()> {
    if s.is_null() {
        return Ok(None);
    }
    // SAFETY: non-null and NUL-terminated (the caller's contract).
    unsafe { CStr::from_ptr(s) }
        .to_str()
        .map(Some)
        .map_err(|_| ())
}

fn timeout(ms: c_int) -> Option<Duration> {
    match ms {
        MESH_TIMEOUT_DEFAULT => None,
        MESH_TIMEOUT_INFINITE => Some(Duration::MAX),
        ms if ms > 0 => Some(Duration::from_millis(ms as u64)),
        _ => Some(Duration::ZERO),
    }
}

/// The context behind a connection pointer handed out by this library.
///
/// # Safety
/// `conn` is null or a pointer returned by `mesh_create_*_connection` and not yet deleted.
unsafe fn context<'a>(conn: *mut MeshConnection) -> Option<&'a mut ConnectionContext> {
    // SAFETY: such a pointer is the address of a live, boxed ConnectionContext whose first
    // field (repr(C)) is the MeshConnection.
    unsafe { conn.cast::<ConnectionContext>().as_mut() }
}

/// The context of a buffer pointer, checked to be the one its connection lent.
///
/// # Safety
/// `buf` is null or a pointer returned by `mesh_get_buffer*` whose connection is alive.
unsafe fn buffer_context<'a>(buf: *mut MeshBuffer) -> Option<&'a mut ConnectionContext> {
    // SAFETY: a lent buffer pointer points into its live connection context.
    let conn = unsafe { buf.as_ref() }?.conn;
    // SAFETY: `conn` was set by this library to its connection's public struct.
    let ctx = unsafe { context(conn) }?;
    (std::ptr::eq(&ctx.buffer, buf) && ctx.lent.is_some()).then_some(ctx)
}

impl ConnectionContext {
    /// Copies the lent buffer's pointers and lengths into the public struct.
    fn publish_buffer(&mut self) {
        let conn: *mut MeshConnection = &mut self.public;
        let Some(b) = self.lent.as_mut() else {
            return;
        };
        let (payload_ptr, payload_len) = match b.payload_mut() {
            Ok(p) => (p.as_mut_ptr(), self.buffer.payload_len.min(p.len())),
            Err(_) => {
                let p = b.payload();
                (p.as_ptr().cast_mut(), p.len())
            }
        };
        let (metadata_ptr, metadata_len) = match b.metadata_mut() {
            Ok(m) => (m.as_mut_ptr(), self.buffer.metadata_len.min(m.len())),
            Err(_) => {
                let m = b.metadata();
                (m.as_ptr().cast_mut(), m.len())
            }
        };
        self.buffer = MeshBuffer {
            conn,
            payload_ptr: payload_ptr.cast(),
            payload_len,
            metadata_ptr: metadata_ptr.cast(),
            metadata_len,
        };
    }
}

/// Creates a client from MCM's client JSON (null: all defaults).
///
/// # Safety
/// `mc` points to writable storage for a pointer; `cfg` is null or a C string.
#[no_mangle]
pub unsafe extern "C" fn mesh_create_client(mc: *mut *mut MeshClient, cfg: *const c_char) -> c_int {
    guard(|| {
        if mc.is_null() {
            return -MESH_ERR_BAD_CLIENT_PTR;
        }
        // SAFETY: `cfg` is null or a C string (contract).
        let Ok(json) = (unsafe { config_str(cfg) }) else {
            return -MESH_ERR_CLIENT_CONFIG_INVAL;
        };
        match Client::new(json.unwrap_or("{}")) {
            Ok(client) => {
                let boxed = Box::new(MeshClient {
                    client,
                    connections: AtomicUsize::new(0),
                });
                // SAFETY: checked non-null; writable (contract).
                unsafe { *mc = Box::into_raw(boxed) };
                0
            }
            Err(e) => code(&e),
        }
    })
}

/// Deletes a client; refused (`MESH_ERR_FOUND_ALLOCATED`) while it has connections.
///
/// # Safety
/// `mc` is null or points to null or to a client from `mesh_create_client`.
#[no_mangle]
pub unsafe extern "C" fn mesh_delete_client(mc: *mut *mut MeshClient) -> c_int {
    guard(|| {
        // SAFETY: null or a valid pointer to a client pointer (contract).
        let Some(slot) = (unsafe { mc.as_mut() }) else {
            return -MESH_ERR_BAD_CLIENT_PTR;
        };
        // SAFETY: null or a live client from mesh_create_client (contract).
        let Some(client) = (unsafe { slot.as_ref() }) else {
            return -MESH_ERR_BAD_CLIENT_PTR;
        };
        if client.connections.load(Ordering::Acquire) > 0 {
            return -MESH_ERR_FOUND_ALLOCATED;
        }
        // SAFETY: the pointer came from Box::into_raw in mesh_create_client.
        drop(unsafe { Box::from_raw(*slot) });
        *slot = std::ptr::null_mut();
        0
    })
}

/// # Safety
/// As for `mesh_create_tx_connection`.
unsafe fn create_connection(
    mc: *mut MeshClient,
    conn: *mut *mut MeshConnection,
    cfg: *const c_char,
    transmitter: bool,
) -> c_int {
    // SAFETY: null or a live client (contract).
    let Some(client) = (unsafe { mc.as_ref() }) else {
        return -MESH_ERR_BAD_CLIENT_PTR;
    };
    if conn.is_null() {
        return -MESH_ERR_BAD_CONN_PTR;
    }
    // SAFETY: `cfg` is null or a C string (contract).
    let json = match unsafe { config_str(cfg) } {
        Ok(Some(j)) => j,
        Ok(None) => return -MESH_ERR_BAD_CONFIG_PTR,
        Err(()) => return -MESH_ERR_CONN_CONFIG_INVAL,
    };
    let made = if transmitter {
        client.client.create_tx_connection(json)
    } else {
        client.client.create_rx_connection(json)
    };
    let connection = match made {
        Ok(c) => Box::new(c),
        Err(e) => return code(&e),
    };
    client.connections.fetch_add(1, Ordering::AcqRel);
    let ctx = Box::new(ConnectionContext {
        public: MeshConnection {
            client: mc,
            payload_size: connection.payload_size(),
            metadata_size: connection.metadata_size(),
        },
        buffer: MeshBuffer {
            conn: std::ptr::null_mut(),
            payload_ptr: std::ptr::null_mut(),
            payload_len: 0,
            metadata_ptr: std::ptr::null_mut(),
            metadata_len: 0,
        },
        lent: None,
        conn: connection,
    });
    // SAFETY: checked non-null; the context's first field is the public struct.
    unsafe { *conn = Box::into_raw(ctx).cast::<MeshConnection>() };
    0
}

/// Creates a transmitter from MCM's connection JSON.
///
/// # Safety
/// `mc` is a live client or null; `conn` points to storage for a pointer; `cfg` a C string.
#[no_mangle]
pub unsafe extern "C" fn mesh_create_tx_connection(
    mc: *mut MeshClient,
    conn: *mut *mut MeshConnection,
    cfg: *const c_char,
) -> c_int {
    // SAFETY: forwarded contract.
    guard(|| unsafe { create_connection(mc, conn, cfg, true) })
}

/// Creates a receiver from MCM's connection JSON.
///
/// # Safety
/// As for `mesh_create_tx_connection`.
#[no_mangle]
pub unsafe extern "C" fn mesh_create_rx_connection(
    mc: *mut MeshClient,
    conn: *mut *mut MeshConnection,
    cfg: *const c_char,
) -> c_int {
    // SAFETY: forwarded contract.
    guard(|| unsafe { create_connection(mc, conn, cfg, false) })
}

/// Ends a connection's stream: a transmitter's receivers get `MESH_ERR_CONN_CLOSED` once
/// they have read everything. A buffer still lent is dropped (not sent).
///
/// # Safety
/// `conn` is null or a live connection.
#[no_mangle]
pub unsafe extern "C" fn mesh_shutdown_connection(conn: *mut MeshConnection) -> c_int {
    guard(|| {
        // SAFETY: null or a live connection (contract).
        let Some(ctx) = (unsafe { context(conn) }) else {
            return -MESH_ERR_BAD_CONN_PTR;
        };
        ctx.lent = None;
        match ctx.conn.shutdown() {
            Ok(()) => 0,
            Err(e) => code(&e),
        }
    })
}

/// Deletes a connection (shutting it down first) and sets `*conn` to null.
///
/// # Safety
/// `conn` is null or points to null or to a live connection.
#[no_mangle]
pub unsafe extern "C" fn mesh_delete_connection(conn: *mut *mut MeshConnection) -> c_int {
    guard(|| {
        // SAFETY: null or a valid pointer to a connection pointer (contract).
        let Some(slot) = (unsafe { conn.as_mut() }) else {
            return -MESH_ERR_BAD_CONN_PTR;
        };
        if slot.is_null() {
            return -MESH_ERR_BAD_CONN_PTR;
        }
        // SAFETY: a live connection made by create_connection with Box::into_raw.
        let mut ctx = unsafe { Box::from_raw(slot.cast::<ConnectionContext>()) };
        ctx.lent = None;
        // SAFETY: the client outlives its connections (delete_client refuses otherwise).
        if let Some(client) = unsafe { ctx.public.client.as_ref() } {
            client.connections.fetch_sub(1, Ordering::AcqRel);
        }
        drop(ctx);
        *slot = std::ptr::null_mut();
        0
    })
}

/// Gets the next buffer with the client's default timeout.
///
/// # Safety
/// `conn` is null or a live connection; `buf` points to storage for a pointer.
#[no_mangle]
pub unsafe extern "C" fn mesh_get_buffer(
    conn: *mut MeshConnection,
    buf: *mut *mut MeshBuffer,
) -> c_int {
    // SAFETY: forwarded contract.
    unsafe { mesh_get_buffer_timeout(conn, buf, MESH_TIMEOUT_DEFAULT) }
}

/// Gets the next buffer: writable (transmitter) or the next received one (receiver),
/// waiting up to `timeout_ms` (`MESH_TIMEOUT_*` or milliseconds).
///
/// # Safety
/// `conn` is null or a live connection; `buf` points to storage for a pointer.
#[no_mangle]
pub unsafe extern "C" fn mesh_get_buffer_timeout(
    conn: *mut MeshConnection,
    buf: *mut *mut MeshBuffer,
    timeout_ms: c_int,
) -> c_int {
    guard(|| {
        // SAFETY: null or a live connection (contract).
        let Some(ctx) = (unsafe { context(conn) }) else {
            return -MESH_ERR_BAD_CONN_PTR;
        };
        if buf.is_null() {
            return -MESH_ERR_BAD_BUF_PTR;
        }
        if ctx.lent.is_some() {
            // One buffer at a time: put the lent one first.
            return -MESH_ERR_FOUND_ALLOCATED;
        }
        let connection: *mut Connection = &mut *ctx.conn;
        // SAFETY: the connection is boxed, so its address is stable for the life of the
        // context; the buffer borrowing it is stored in `lent`, dropped before the box (field
        // order, and every path that touches `conn` mutably first clears `lent`), and no
        // other reference to the connection is made while `lent` is set.
        let connection: &'static mut Connection = unsafe { &mut *connection };
        match connection.get_buffer(timeout(timeout_ms)) {
            Ok(b) => {
                ctx.lent = Some(b);
                ctx.buffer.payload_len = ctx.public.payload_size;
                ctx.buffer.metadata_len = 0;
                ctx.publish_buffer();
                // SAFETY: checked non-null.
                unsafe { *buf = &mut ctx.buffer };
                0
            }
            Err(e) => code(&e),
        }
    })
}

/// Puts a buffer back (sends it, for a transmitter) and sets `*buf` to null.
///
/// # Safety
/// `buf` is null or points to null or to a buffer from `mesh_get_buffer*`.
#[no_mangle]
pub unsafe extern "C" fn mesh_put_buffer(buf: *mut *mut MeshBuffer) -> c_int {
    guard(|| {
        // SAFETY: null or a valid pointer to a buffer pointer (contract).
        let Some(slot) = (unsafe { buf.as_mut() }) else {
            return -MESH_ERR_BAD_BUF_PTR;
        };
        // SAFETY: forwarded contract.
        let rc = unsafe { mesh_put_buffer_timeout(*slot, MESH_TIMEOUT_DEFAULT) };
        if rc == 0 {
            *slot = std::ptr::null_mut();
        }
        rc
    })
}

/// Puts a buffer back. The commit itself never waits (a reliable transmitter waits for
/// room in `mesh_get_buffer`), so `timeout_ms` is accepted for compatibility only.
///
/// # Safety
/// `buf` is null or a buffer from `mesh_get_buffer*`.
#[no_mangle]
pub unsafe extern "C" fn mesh_put_buffer_timeout(
    buf: *mut MeshBuffer,
    _timeout_ms: c_int,
) -> c_int {
    guard(|| {
        // SAFETY: null or a lent buffer (contract); checked against its connection.
        let Some(ctx) = (unsafe { buffer_context(buf) }) else {
            return -MESH_ERR_BAD_BUF_PTR;
        };
        let Some(b) = ctx.lent.take() else {
            return -MESH_ERR_BAD_BUF_PTR;
        };
        match b.put() {
            Ok(()) => 0,
            Err(e) => code(&e),
        }
    })
}

/// Sets how many payload bytes a transmitter's buffer carries (at most `payload_size`).
///
/// # Safety
/// `buf` is null or a buffer from `mesh_get_buffer*`.
#[no_mangle]
pub unsafe extern "C" fn mesh_buffer_set_payload_len(buf: *mut MeshBuffer, len: usize) -> c_int {
    guard(|| {
        // SAFETY: null or a lent buffer (contract); checked against its connection.
        let Some(ctx) = (unsafe { buffer_context(buf) }) else {
            return -MESH_ERR_BAD_BUF_PTR;
        };
        let Some(b) = ctx.lent.as_mut() else {
            return -MESH_ERR_BAD_BUF_PTR;
        };
        match b.set_payload_len(len) {
            Ok(()) => {
                ctx.buffer.payload_len = len;
                0
            }
            Err(e) => code(&e),
        }
    })
}

/// Sets how many metadata bytes a transmitter's buffer carries (at most `metadata_size`).
///
/// # Safety
/// `buf` is null or a buffer from `mesh_get_buffer*`.
#[no_mangle]
pub unsafe extern "C" fn mesh_buffer_set_metadata_len(buf: *mut MeshBuffer, len: usize) -> c_int {
    guard(|| {
        // SAFETY: null or a lent buffer (contract); checked against its connection.
        let Some(ctx) = (unsafe { buffer_context(buf) }) else {
            return -MESH_ERR_BAD_BUF_PTR;
        };
        let Some(b) = ctx.lent.as_mut() else {
            return -MESH_ERR_BAD_BUF_PTR;
        };
        match b.set_metadata_len(len) {
            Ok(()) => {
                ctx.buffer.metadata_len = len;
                0
            }
            Err(e) => code(&e),
        }
    })
}

/// A static description of an error code (negative, as returned, or positive).
#[no_mangle]
pub extern "C" fn mesh_err2str(err: c_int) -> *const c_char {
    let text: &'static CStr = match err.checked_abs().and_then(MeshErrorCode::from_code) {
        _ if err == 0 => c"Success",
        Some(MeshErrorCode::BadClientPtr) => c"Bad client pointer",
        Some(MeshErrorCode::BadConnPtr) => c"Bad connection pointer",
        Some(MeshErrorCode::BadConfigPtr) => c"Bad configuration pointer",
        Some(MeshErrorCode::BadBufPtr) => c"Bad buffer pointer",
        Some(MeshErrorCode::BadBufLen) => c"Bad buffer length",
        Some(MeshErrorCode::ClientConfigInval) => c"Invalid client configuration",
        Some(MeshErrorCode::MaxConn) => c"Reached max connections number",
        Some(MeshErrorCode::FoundAllocated) => c"Found allocated resources",
        Some(MeshErrorCode::ConnFailed) => c"Connection creation failed",
        Some(MeshErrorCode::ConnConfigInval) => c"Invalid connection configuration",
        Some(MeshErrorCode::ConnConfigIncompat) => c"Incompatible connection configuration",
        Some(MeshErrorCode::ConnClosed) => c"Connection is closed",
        Some(MeshErrorCode::Timeout) => c"Timeout occurred",
        Some(MeshErrorCode::NotImplemented) => c"Feature not implemented yet",
        None => c"Unknown error code",
    };
    text.as_ptr()
}

/// mcm extension: the sequence number of a lent buffer (its grain index: consecutive for a
/// sender in real time or faster, with gaps where grains were lost) and its TAI time in ns
/// since the SMPTE ST 2059 epoch. Either output may be null.
///
/// # Safety
/// `buf` is null or a buffer from `mesh_get_buffer*`; `seq` and `tai_ns` are null or
/// writable.
#[no_mangle]
pub unsafe extern "C" fn mcm_buffer_seq(
    buf: *mut MeshBuffer,
    seq: *mut u64,
    tai_ns: *mut u64,
) -> c_int {
    guard(|| {
        // SAFETY: null or a lent buffer (contract); checked against its connection.
        let Some(ctx) = (unsafe { buffer_context(buf) }) else {
            return -MESH_ERR_BAD_BUF_PTR;
        };
        let Some(b) = ctx.lent.as_ref() else {
            return -MESH_ERR_BAD_BUF_PTR;
        };
        // SAFETY: null or writable (contract).
        if let Some(s) = unsafe { seq.as_mut() } {
            *s = b.seq();
        }
        // SAFETY: null or writable (contract).
        if let Some(t) = unsafe { tai_ns.as_mut() } {
            *t = b.timestamp();
        }
        0
    })
}
