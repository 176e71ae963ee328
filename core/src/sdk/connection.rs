//! Connections and their zero-copy buffer API (MCM `mesh_get_buffer` / `mesh_put_buffer`).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use mcm_proto::v1::{ConnectionKind, FlowLocation};
use uuid::Uuid;

use super::client::{ClientInner, Counters};
use super::config::{ConnectionConfig, Payload};
use super::error::{MeshErrorCode, SdkError, SdkResult};
use crate::flow::{
    Domain, FlowError, FollowError, Follower, Grain, GrainWrite, GrainWriter, WriterOptions,
};
use crate::format::FlowDef;
use crate::time::{current_index, index_to_timestamp, Rational};

// One per connection: the size difference between variants costs nothing.
#[allow(clippy::large_enum_variant)]
enum Side {
    Tx {
        writer: GrainWriter,
        last: Option<u64>,
        /// Back-pressure: indices never jump with the clock (a jump past a slow reliable
        /// reader's window would strand it), they count grains.
        reliable: bool,
        /// Interlaced video: buffers are fields, in pairs; the first of a pair goes to an
        /// even index and the second right after it (MXL).
        fields: bool,
    },
    Rx(Follower),
}

/// A transmit or receive connection (MCM's `MeshConnection`).
pub struct Connection {
    client: Arc<ClientInner>,
    id: String,
    kind: ConnectionKind,
    config: ConnectionConfig,
    flow_id: Uuid,
    rate: Rational,
    payload_capacity: usize,
    counters: Arc<Counters>,
    side: Side,
    shut_down: bool,
}

fn flow_err(e: FlowError) -> SdkError {
    SdkError::new(MeshErrorCode::ConnFailed, e.to_string())
}

impl Connection {
    pub(crate) fn open(
        client: Arc<ClientInner>,
        id: String,
        kind: ConnectionKind,
        config: ConnectionConfig,
        flow: FlowLocation,
        counters: Arc<Counters>,
    ) -> SdkResult<Self> {
        let domain = Domain::open(&flow.domain).map_err(flow_err)?;
        let def = FlowDef::parse(&flow.flow_def_json)
            .map_err(|e| SdkError::new(MeshErrorCode::ConnFailed, e.to_string()))?;
        let flow_id = def.id;
        let payload_capacity = def
            .grain_geometry()
            .map_err(|e| SdkError::new(MeshErrorCode::ConnFailed, e.to_string()))?
            .grain_size as usize;
        let side = match kind {
            ConnectionKind::Transmitter => {
                let options = WriterOptions {
                    grain_count: Some(flow.grain_count),
                    back_pressure: flow
                        .reliable
                        .then_some(client.config.default_timeout.max(Duration::from_secs(1))),
                    ..Default::default()
                };
                let writer = domain
                    .create_grain_writer(&def, &options)
                    .map_err(flow_err)?;
                // A sender joining its group's existing flow (it restarted) continues after
                // the head, so receivers waiting for the next index are not stranded.
                let last = (!writer.created()).then(|| writer.head_index());
                let fields = matches!(def.media, crate::format::MediaFormat::Video { interlace, .. } if interlace.is_interlaced());
                Side::Tx {
                    writer,
                    last,
                    reliable: flow.reliable,
                    fields,
                }
            }
            _ => Side::Rx(Follower::new(domain, flow_id, flow.reliable).map_err(flow_err)?),
        };
        Ok(Self {
            client,
            id,
            kind,
            rate: def.index_rate(),
            config,
            flow_id,
            payload_capacity,
            counters,
            side,
            shut_down: false,
        })
    }

    /// MCM's `connCreationDelayMilliseconds`: a transmitter waits this long after activation.
    pub(crate) fn after_activation(&self) {
        if self.kind == ConnectionKind::Transmitter && !self.config.conn_delay.is_zero() {
            std::thread::sleep(self.config.conn_delay);
        }
    }

    pub fn id(&self) -> &str {
        &self.id
    }
    pub fn is_transmitter(&self) -> bool {
        self.kind == ConnectionKind::Transmitter
    }
    pub fn config(&self) -> &ConnectionConfig {
        &self.config
    }
    /// The flow carrying this connection's grains.
    pub fn flow_id(&self) -> Uuid {
        self.flow_id
    }
    /// Bytes of payload per buffer (MCM `MeshConnection.payload_size`).
    pub fn payload_size(&self) -> usize {
        self.payload_capacity
    }
    /// Bytes of metadata per buffer (MCM `MeshConnection.metadata_size`).
    pub fn metadata_size(&self) -> usize {
        self.config.max_metadata_size as usize
    }
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// The next buffer: writable (transmitter) or readable (receiver). `None` uses the
    /// client's default timeout; `Some(Duration::ZERO)` polls.
    pub fn get_buffer(&mut self, timeout: Option<Duration>) -> SdkResult<Buffer<'_>> {
        let counters = self.counters.clone();
        self.next_buffer(timeout).inspect_err(|e| {
            if !matches!(e.code, MeshErrorCode::Timeout | MeshErrorCode::ConnClosed) {
                counters.errors.fetch_add(1, Ordering::Relaxed);
            }
        })
    }

    fn next_buffer(&mut self, timeout: Option<Duration>) -> SdkResult<Buffer<'_>> {
        if self.shut_down {
            return Err(SdkError::new(
                MeshErrorCode::ConnClosed,
                "connection was shut down",
            ));
        }
        let timeout = timeout.unwrap_or(self.client.config.default_timeout);
        let rate = self.rate;
        match &mut self.side {
            Side::Tx {
                writer,
                last,
                reliable,
                fields,
            } => {
                // The index is the grain's TAI time slot; a sender faster than real time
                // (a file) still gets strictly increasing indices. A reliable sender starts
                // at the time slot, then counts.
                let mut index = match (*last, *reliable) {
                    (Some(l), true) => l + 1,
                    // A second field stays with its first.
                    (Some(l), false) if *fields && l % 2 == 0 => l + 1,
                    (l, _) => l.map_or(0, |l| l + 1).max(current_index(rate)),
                };
                if *fields && index % 2 == 1 && last.is_none_or(|l| l % 2 == 1) {
                    index += 1; // a first field
                }
                let grain = writer.open_grain(index).map_err(|e| match e {
                    FlowError::BackPressureTimeout { .. } => {
                        SdkError::new(MeshErrorCode::Timeout, e.to_string())
                    }
                    e => flow_err(e),
                })?;
                *last = Some(index);
                Ok(Buffer {
                    inner: BufferInner::Tx {
                        grain,
                        payload_len: self.payload_capacity,
                        metadata_len: 0,
                    },
                    counters: &self.counters,
                    rate,
                })
            }
            Side::Rx(follower) => {
                let drops = follower.drops();
                let grain = follower.next_grain(timeout);
                self.counters
                    .drops
                    .store(drops.load(Ordering::Relaxed), Ordering::Relaxed);
                let grain = grain.map_err(|e| match e {
                    FollowError::Timeout(m) => SdkError::new(MeshErrorCode::Timeout, m),
                    FollowError::Closed => SdkError::new(
                        MeshErrorCode::ConnClosed,
                        "the sender closed the connection",
                    ),
                    FollowError::Failed(e) => flow_err(e),
                })?;
                self.counters.grains.fetch_add(1, Ordering::Relaxed);
                self.counters
                    .bytes
                    .fetch_add(grain.payload().len() as u64, Ordering::Relaxed);
                Ok(Buffer {
                    inner: BufferInner::Rx { grain },
                    counters: &self.counters,
                    rate,
                })
            }
        }
    }

    /// Stops the connection (MCM `mesh_shutdown_connection`): a transmitter ends the
    /// stream, so its receivers get `ConnClosed` once they have read everything; a reliable
    /// transmitter first waits (up to the client timeout) until they have.
    pub fn shutdown(&mut self) -> SdkResult<()> {
        if self.shut_down {
            return Ok(());
        }
        self.shut_down = true;
        if let Side::Tx { writer, .. } = &mut self.side {
            writer
                .end_of_stream()
                .map_err(|e| SdkError::new(MeshErrorCode::Timeout, e.to_string()))?;
        }
        Ok(())
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        if let Err(e) = self.shutdown() {
            tracing::warn!(conn = %self.id, "closing: {e}");
        }
        self.client.unregister(&self.id);
    }
}

enum BufferInner<'a> {
    Tx {
        grain: GrainWrite<'a>,
        payload_len: usize,
        metadata_len: usize,
    },
    Rx {
        grain: Grain<'a>,
    },
}

/// One grain lent to the application (MCM's `MeshBuffer`): shared memory, no copy.
pub struct Buffer<'a> {
    inner: BufferInner<'a>,
    counters: &'a Counters,
    rate: Rational,
}

impl<'a> Buffer<'a> {
    /// The payload: for a receiver, the bytes the sender committed.
    pub fn payload(&mut self) -> &[u8] {
        match &mut self.inner {
            BufferInner::Tx {
                grain, payload_len, ..
            } => {
                let len = *payload_len;
                &grain.payload()[..len]
            }
            BufferInner::Rx { grain } => grain.payload(),
        }
    }

    /// The writable payload area of a transmitter's buffer (its full capacity).
    pub fn payload_mut(&mut self) -> SdkResult<&mut [u8]> {
        match &mut self.inner {
            BufferInner::Tx { grain, .. } => Ok(grain.payload()),
            BufferInner::Rx { .. } => Err(SdkError::new(
                MeshErrorCode::BadBufPtr,
                "a receiver's buffer is read-only",
            )),
        }
    }

    /// The metadata: committed bytes (receiver) or the area set so far (transmitter).
    pub fn metadata(&mut self) -> &[u8] {
        match &mut self.inner {
            BufferInner::Tx {
                grain,
                metadata_len,
                ..
            } => {
                let len = *metadata_len;
                &grain.metadata()[..len]
            }
            BufferInner::Rx { grain } => grain.metadata(),
        }
    }

    /// The writable metadata area of a transmitter's buffer (`maxMetadataSize` bytes).
    pub fn metadata_mut(&mut self) -> SdkResult<&mut [u8]> {
        match &mut self.inner {
            BufferInner::Tx { grain, .. } => Ok(grain.metadata()),
            BufferInner::Rx { .. } => Err(SdkError::new(
                MeshErrorCode::BadBufPtr,
                "a receiver's buffer is read-only",
            )),
        }
    }

    /// Sets how many payload bytes the receivers get (at most the capacity).
    pub fn set_payload_len(&mut self, len: usize) -> SdkResult<()> {
        match &mut self.inner {
            BufferInner::Tx {
                grain, payload_len, ..
            } => {
                let cap = grain.geometry().grain_size as usize;
                if len > cap {
                    return Err(SdkError::new(
                        MeshErrorCode::BadBufLen,
                        format!("payload length {len} exceeds {cap}"),
                    ));
                }
                *payload_len = len;
                Ok(())
            }
            BufferInner::Rx { .. } => Err(SdkError::new(
                MeshErrorCode::BadBufPtr,
                "a receiver's buffer is read-only",
            )),
        }
    }

    /// Sets how many metadata bytes the receivers get (at most `maxMetadataSize`).
    pub fn set_metadata_len(&mut self, len: usize) -> SdkResult<()> {
        match &mut self.inner {
            BufferInner::Tx {
                grain,
                metadata_len,
                ..
            } => {
                grain
                    .set_metadata_len(len)
                    .map_err(|e| SdkError::new(MeshErrorCode::BadBufLen, e.to_string()))?;
                *metadata_len = len;
                Ok(())
            }
            BufferInner::Rx { .. } => Err(SdkError::new(
                MeshErrorCode::BadBufPtr,
                "a receiver's buffer is read-only",
            )),
        }
    }

    /// Sequence number: the grain index (consecutive for a sender in real time or faster).
    pub fn seq(&self) -> u64 {
        match &self.inner {
            BufferInner::Tx { grain, .. } => grain.index(),
            BufferInner::Rx { grain } => grain.index(),
        }
    }

    /// The grain's TAI time in ns since the SMPTE ST 2059 epoch.
    pub fn timestamp(&self) -> u64 {
        index_to_timestamp(self.rate, self.seq())
    }

    /// Commits (transmitter) or releases (receiver) the buffer (MCM `mesh_put_buffer`).
    pub fn put(self) -> SdkResult<()> {
        match self.inner {
            BufferInner::Tx {
                grain, payload_len, ..
            } => {
                grain
                    .commit_len(payload_len)
                    .map_err(|e| SdkError::new(MeshErrorCode::BadBufLen, e.to_string()))?;
                self.counters.grains.fetch_add(1, Ordering::Relaxed);
                self.counters
                    .bytes
                    .fetch_add(payload_len as u64, Ordering::Relaxed);
                Ok(())
            }
            BufferInner::Rx { grain } => {
                if !grain.is_intact() {
                    // The sender lapped this receiver while it held the buffer.
                    self.counters.drops.fetch_add(1, Ordering::Relaxed);
                }
                Ok(())
            }
        }
    }
}

impl Payload {
    /// True for raw video and audio (fixed-size buffers), false for blobs, compressed
    /// frames and ancillary data (whose grains say how much of them is used).
    pub fn is_fixed_size(&self) -> bool {
        !matches!(
            self,
            Payload::Blob | Payload::Compressed { .. } | Payload::Ancillary { .. }
        )
    }
}
