//! The I/O around the ST 2110-20 core: a flow sent as RFC 4175 over UDP, and a stream
//! received into a flow. Each runs on the calling thread until its stop flag, its frame
//! budget or the end of the flow.
//!
//! Sending: each grain is converted to wire pgroups (copied out of shared memory, then
//! checked intact), stamped with its TAI time on the 90 kHz clock (ST 2110-10), and its
//! packets spread across the first 90% of the frame period in bursts (software pacing,
//! close to the ST 2110-21 wide model). Receiving: each frame is written into a leased grain
//! as its packets arrive ([`super::grain_frames`]); complete frames are committed,
//! incomplete ones counted and never published.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use super::convert::{
    i422_10le_line_to_uyvp, p010_to_pg420_10, pg420_10_row_bytes, pg420_10_to_p010,
    pg420_to_planar420, planar420_to_pg420, rgb_to_rgbx, rgbx_to_rgb, swap_yuy2_uyvy,
    uyvp_line_to_i422_10le, uyvp_line_to_v210, v210_line_to_uyvp, v210_stride,
};
use super::counters::LiveCounters;
use super::grain_frames::{FrameLayout, GrainFrames};
use super::pacing::{PacingModel, SenderType, TimingChecker};
pub use super::rfc4175::UdpSize;
use super::rfc4175::{
    Assembler, AssemblerConfig, Packetizer, PackingMode, ReceiverStats, Sampling, VideoGeometry,
};
use super::udp::UdpReceiver;
pub use super::video_sender::SharedPacer;
use super::video_sender::{pace, StreamTx};
use crate::flow::{Domain, FlowError, WriterOptions};
use crate::format::{FlowDef, InterlaceMode, MediaFormat, VideoFormat};
use crate::time::{index_to_timestamp, Rational};

/// Bridge failures (configuration or I/O; lost packets are only counted).
#[derive(Debug, thiserror::Error)]
pub enum BridgeError {
    #[error("socket: {0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Flow(#[from] FlowError),
    #[error(transparent)]
    Video(#[from] super::rfc4175::Rfc4175Error),
    #[error(transparent)]
    Audio(#[from] super::audio::AudioError),
    #[error(transparent)]
    Compressed(#[from] super::rfc9134::Rfc9134Error),
    #[error("{0}")]
    Unsupported(String),
}

/// The wire sampling and depth a flow's pixel format is sent as; `Err` for formats not
/// bridged yet.
pub fn wire_of(format: VideoFormat) -> Result<(Sampling, u8), BridgeError> {
    match format {
        VideoFormat::V210 | VideoFormat::Uyvp | VideoFormat::I422_10le => {
            Ok((Sampling::YCbCr422, 10))
        }
        VideoFormat::Uyvy | VideoFormat::Yuy2 => Ok((Sampling::YCbCr422, 8)),
        VideoFormat::I420 | VideoFormat::Nv12 => Ok((Sampling::YCbCr420, 8)),
        VideoFormat::P010_10le => Ok((Sampling::YCbCr420, 10)),
        // Alpha stays behind: ST 2110-20 has no alpha; received pixels are opaque.
        VideoFormat::Rgba | VideoFormat::Bgra => Ok((Sampling::Rgb, 8)),
        other => Err(BridgeError::Unsupported(format!(
            "{} flows are not sent as ST 2110-20 yet (v210, UYVP, I422_10LE, UYVY, YUY2, I420, NV12, P010_10LE, RGBA, BGRA are)",
            other.name()
        ))),
    }
}

/// The wire geometry of a flow's pictures: frames, or fields (one per grain) of a
/// `height`-line frame when `interlaced`.
fn wire_geometry(
    format: VideoFormat,
    width: u32,
    height: u32,
    interlaced: bool,
) -> Result<VideoGeometry, BridgeError> {
    let (sampling, depth) = wire_of(format)?;
    Ok(VideoGeometry::new(
        width, height, sampling, depth, interlaced,
    )?)
}

/// Lines in one grain: the frame's, or a field's.
pub(super) fn grain_lines(height: u32, interlaced: bool) -> usize {
    if interlaced {
        height as usize / 2
    } else {
        height as usize
    }
}

/// The planes of a grain of `lines` lines: (byte offset, bytes per row) each.
fn plane_layout(format: VideoFormat, width: usize, lines: usize) -> Vec<(usize, usize)> {
    let mut at = 0;
    format
        .planes(width as u32, lines as u32)
        .into_iter()
        .map(|(row, rows)| {
            let plane = (at, row);
            at += row * rows;
            plane
        })
        .collect()
}

/// A grain of `lines` lines (a frame, or a field) into tightly packed wire pgroups.
pub fn grain_to_wire(
    format: VideoFormat,
    width: usize,
    lines: usize,
    grain: &[u8],
    wire: &mut [u8],
) {
    let rows = wire_rows(format, lines);
    grain_rows_to_wire(format, width, lines, 0..rows, grain, wire);
}

/// Rows of pgroups of a grain of `lines` lines: line pairs for 4:2:0, else lines.
fn wire_rows(format: VideoFormat, lines: usize) -> usize {
    match format {
        VideoFormat::I420 | VideoFormat::Nv12 | VideoFormat::P010_10le => lines / 2,
        _ => lines,
    }
}

/// Rows `rows` of [`grain_to_wire`]'s output only (into the same places of `wire`), so a
/// sender can convert a frame as it sends it, while the bytes are still in the cache.
pub(super) fn grain_rows_to_wire(
    format: VideoFormat,
    width: usize,
    lines: usize,
    rows: std::ops::Range<usize>,
    grain: &[u8],
    wire: &mut [u8],
) {
    let d = wire.len() / wire_rows(format, lines).max(1);
    let out = &mut wire[rows.start * d..rows.end * d];
    match format {
        VideoFormat::V210 => {
            let s = v210_stride(width);
            for (l, o) in rows.zip(out.chunks_exact_mut(d)) {
                v210_line_to_uyvp(&grain[l * s..(l + 1) * s], width, o);
            }
        }
        VideoFormat::I422_10le => {
            let p = plane_layout(format, width, lines);
            let (y, u, v) = (&grain[p[0].0..], &grain[p[1].0..], &grain[p[2].0..]);
            let (ys, cs) = (p[0].1, p[1].1);
            for (l, o) in rows.zip(out.chunks_exact_mut(d)) {
                i422_10le_line_to_uyvp(
                    &y[l * ys..(l + 1) * ys],
                    &u[l * cs..(l + 1) * cs],
                    &v[l * cs..(l + 1) * cs],
                    width,
                    o,
                );
            }
        }
        VideoFormat::I420 | VideoFormat::Nv12 => {
            let p = plane_layout(format, width, lines);
            let (ys, cs) = (p[0].1, p[1].1);
            for (r, o) in rows.zip(out.chunks_exact_mut(d)) {
                let y = &grain[p[0].0 + 2 * r * ys..];
                let u = &grain[p[1].0 + r * cs..p[1].0 + (r + 1) * cs];
                let v = p
                    .get(2)
                    .map(|&(at, _)| &grain[at + r * cs..at + (r + 1) * cs]);
                planar420_to_pg420(&y[..ys], &y[ys..2 * ys], u, v, width, o);
            }
        }
        VideoFormat::P010_10le => {
            let p = plane_layout(format, width, lines);
            let (ys, cs) = (p[0].1, p[1].1);
            for (r, o) in rows.zip(out.chunks_exact_mut(d)) {
                let y = &grain[p[0].0 + 2 * r * ys..];
                let uv = &grain[p[1].0 + r * cs..p[1].0 + (r + 1) * cs];
                p010_to_pg420_10(&y[..ys], &y[ys..2 * ys], uv, width, o);
            }
        }
        VideoFormat::Yuy2 => swap_yuy2_uyvy(&grain[rows.start * d..rows.end * d], out),
        VideoFormat::Rgba | VideoFormat::Bgra => {
            let s = width * 4;
            rgbx_to_rgb(
                &grain[rows.start * s..rows.end * s],
                format == VideoFormat::Bgra,
                out,
            )
        }
        // UYVY and UYVP lines are the wire pgroups already.
        _ => out.copy_from_slice(&grain[rows.start * d..rows.end * d]),
    }
}

/// Flow formats whose grains are the wire pgroups, line after line (UYVY: 8-bit 4:2:2,
/// UYVP: 10-bit 4:2:2, RFC 4175 §4.3): sent with no conversion.
pub(super) fn sends_in_place(format: VideoFormat) -> bool {
    matches!(format, VideoFormat::Uyvy | VideoFormat::Uyvp)
}

/// Wire pgroups of `lines` lines into a grain: the reverse of [`grain_to_wire`].
pub fn wire_to_grain(
    format: VideoFormat,
    width: usize,
    lines: usize,
    wire: &[u8],
    grain: &mut [u8],
) {
    let p = plane_layout(format, width, lines);
    match format {
        VideoFormat::V210 => {
            let (s, d) = (width / 2 * 5, v210_stride(width));
            for l in 0..lines {
                uyvp_line_to_v210(
                    &wire[l * s..(l + 1) * s],
                    width,
                    &mut grain[l * d..(l + 1) * d],
                );
            }
        }
        VideoFormat::I422_10le => {
            let s = width / 2 * 5;
            let (ys, cs) = (p[0].1, p[1].1);
            let (y, rest) = grain.split_at_mut(p[1].0);
            let (u, v) = rest.split_at_mut(p[2].0 - p[1].0);
            for l in 0..lines {
                uyvp_line_to_i422_10le(
                    &wire[l * s..(l + 1) * s],
                    width,
                    &mut y[l * ys..(l + 1) * ys],
                    &mut u[l * cs..(l + 1) * cs],
                    &mut v[l * cs..(l + 1) * cs],
                );
            }
        }
        VideoFormat::I420 | VideoFormat::Nv12 => {
            let s = width / 2 * 6;
            let (ys, cs) = (p[0].1, p[1].1);
            let (y, rest) = grain.split_at_mut(p[1].0);
            let (u, mut v) = match p.get(2) {
                Some(&(at, _)) => {
                    let (u, v) = rest.split_at_mut(at - p[1].0);
                    (u, Some(v))
                }
                None => (rest, None),
            };
            for r in 0..lines / 2 {
                let (y0, y1) = y[2 * r * ys..(2 * r + 2) * ys].split_at_mut(ys);
                pg420_to_planar420(
                    &wire[r * s..(r + 1) * s],
                    width,
                    y0,
                    y1,
                    &mut u[r * cs..(r + 1) * cs],
                    v.as_deref_mut().map(|v| &mut v[r * cs..(r + 1) * cs]),
                );
            }
        }
        VideoFormat::P010_10le => {
            let s = pg420_10_row_bytes(width);
            let (ys, cs) = (p[0].1, p[1].1);
            let (y, uv) = grain.split_at_mut(p[1].0);
            for r in 0..lines / 2 {
                let (y0, y1) = y[2 * r * ys..(2 * r + 2) * ys].split_at_mut(ys);
                pg420_10_to_p010(
                    &wire[r * s..(r + 1) * s],
                    width,
                    y0,
                    y1,
                    &mut uv[r * cs..(r + 1) * cs],
                );
            }
        }
        VideoFormat::Yuy2 => swap_yuy2_uyvy(wire, &mut grain[..wire.len()]),
        VideoFormat::Rgba | VideoFormat::Bgra => {
            rgb_to_rgbx(wire, format == VideoFormat::Bgra, grain)
        }
        _ => grain[..wire.len()].copy_from_slice(wire),
    }
}

/// RTP time (90 kHz) of a grain: its TAI time since the SMPTE epoch, modulo 2^32.
pub(super) fn rtp_time(rate: Rational, index: u64) -> u32 {
    let ns = index_to_timestamp(rate, index) as u128;
    (ns * 9 / 100_000) as u32
}

/// Counters of a sender.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SenderStats {
    pub frames: u64,
    pub packets: u64,
    /// Grains the writer overwrote while they were being read (not sent).
    pub torn: u64,
    /// Grains skipped because the sender fell behind the writer.
    pub dropped: u64,
    /// "Port unreachable" reports (nobody listening at the destination yet).
    pub unreachable: u64,
    /// Packets given up after repeated "port unreachable" reports.
    pub unsent: u64,
    /// Send system calls made.
    pub syscalls: u64,
    /// Frames whose packets, as sent, the ST 2110-21 model calls narrow, wide and
    /// non-compliant (the sender's own check of its pacing).
    pub timing: [u64; 3],
    /// Bursts sent, and of those how many went out more than [`LATE_WAKE_UP`] after
    /// their time: a machine whose timer wake-ups come that late cannot pace (a virtual
    /// machine on a busy host), whatever the schedule.
    pub bursts: u64,
    pub late_bursts: u64,
}

/// A burst this late is counted and reported as late: a machine whose timer wake-ups come
/// that late cannot pace (the sender catches up with a non-compliant burst once it could
/// not otherwise end the frame in its period, about 1.2 ms behind at 1080p59.94).
pub const LATE_WAKE_UP: Duration = Duration::from_micros(500);

/// How long a video receiver lets a paced stream's bursts gather between reads: about 260
/// packets of 1080p59.94, so 17 reads a frame rather than one per burst (hundreds). Each
/// wake-up costs more than the copy it reads: at 250 µs the receiver took 2.3 ms of CPU a
/// frame, at 1 ms 1.6 ms. A frame is seen complete up to this much later; the kernel's
/// arrival stamps keep the timing check exact.
const GATHER: Duration = Duration::from_micros(1000);

/// How a video sender spreads a frame's packets over the frame period.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Pacing {
    /// ST 2110-21 wide (`TP=2110TPW`): small bursts that keep the network buffer under
    /// CMAX ([`BurstSchedule::wide`]).
    #[default]
    Wide,
    /// 32 large bursts per frame ([`BurstSchedule::coarse`]): less CPU, not compliant.
    Coarse,
}

/// What a video sender sends.
#[derive(Debug, Clone)]
pub struct SenderOptions {
    pub destination: SocketAddr,
    pub bind: SocketAddr,
    pub payload_type: u8,
    pub ssrc: u32,
    pub packing: PackingMode,
    pub pacing: Pacing,
    /// Standard (1460) or extended (8960, jumbo frames) UDP size limit (ST 2110-10).
    pub udp_size: UdpSize,
    /// Stop after this many frames (0: until the flow ends or `stop`).
    pub frames: u64,
    /// Hand the kernel runs of packets at once (UDP segmentation offload) where it can.
    pub offload: bool,
    /// Updated as the sender goes (and given the stream's SDP), for a control plane.
    pub counters: Option<std::sync::Arc<LiveCounters>>,
    /// Where to write the stream's SDP once the flow's format is known (and again when it
    /// changes); written to a temporary name and renamed, so readers never see half.
    pub sdp_file: Option<std::path::PathBuf>,
    /// Told the SDP text each time it is written.
    pub sdp_written: Option<std::sync::mpsc::Sender<String>>,
}

/// Sends flow `flow_id` of `domain` as ST 2110-20 until the flow ends, `options.frames`
/// frames were sent, or `stop` is set.
///
/// One thread reads each grain and paces its packets: each frame goes out in the first
/// frame period (transmission epoch) it can still make, on a [`BurstSchedule`]. The grain
/// is converted to wire pgroups a burst ahead of sending, a few rows at a time, so the
/// kernel copies packets from the cache rather than from a whole converted frame in
/// memory; each conversion is checked against the writer (a grain overwritten under the
/// sender ends its frame there, counted: the receiver sees an incomplete frame, never a
/// torn one). UYVY and UYVP grains are the wire pgroups: their packets go out from the
/// grain itself, and the frame's last packet from a copy checked against the writer, so
/// an overwritten grain again arrives incomplete. A sender that falls more than [`MAX_BEHIND`] grains behind the writer skips
/// grains (counted as dropped) rather than sending ever later.
pub fn send_video(
    domain: Domain,
    flow_id: uuid::Uuid,
    options: &SenderOptions,
    stop: &AtomicBool,
) -> Result<SenderStats, BridgeError> {
    let mut streams = [StreamTx::new(domain, flow_id, options.clone())?];
    pace(&mut streams, stop)?;
    Ok(streams[0].stats())
}

/// Sends several flows as ST 2110-20 from one thread, each as [`send_video`] would: one
/// pacing wake-up serves every stream with a burst due by then (streams of one format
/// share their burst times), rather than a thread and its wake-ups per stream. Returns
/// each stream's figures, in order, with the error that ended it early, if one did (a
/// stream's error ends that stream, not the others).
pub fn send_videos(
    domain: Domain,
    streams: &[(uuid::Uuid, SenderOptions)],
    stop: &AtomicBool,
) -> Result<Vec<(SenderStats, Option<BridgeError>)>, BridgeError> {
    let mut txs = streams
        .iter()
        .map(|(id, options)| StreamTx::new(domain.clone(), *id, options.clone()))
        .collect::<Result<Vec<_>, _>>()?;
    pace(&mut txs, stop)?;
    Ok(txs
        .iter_mut()
        .map(|t| (t.stats(), t.take_failure()))
        .collect())
}

/// Grains a video sender may fall behind the writer before it skips to newer ones: the
/// latency a stalled sender can build up.
pub const MAX_BEHIND: u64 = 4;

/// Wire rows converted past what the next burst needs: a few lines in the cache (8 rows of
/// 1080p 10-bit 4:2:2 are 38 KB), and fewer, longer conversion calls.
pub(super) const ROWS_AHEAD: usize = 8;

/// What the sender sets up per flow description: the description, the picture, the
/// packetizer, the ST 2110-21 model (and with it the packets per frame) and the
/// transmission epoch (grain index at the flow's
/// rate) of the last frame sent.
pub(super) struct Pacer {
    pub def: FlowDef,
    /// Pixel format, width, frame height, interlaced (each grain one field).
    pub picture: (VideoFormat, u32, u32, bool),
    pub packetizer: Packetizer,
    pub model: PacingModel,
    pub last_epoch: Option<u64>,
}

impl Pacer {
    pub fn new(def: &FlowDef, options: &SenderOptions) -> Result<Self, BridgeError> {
        let MediaFormat::Video {
            format,
            width,
            height,
            interlace,
        } = def.media
        else {
            return Err(BridgeError::Unsupported(format!(
                "flow {} is not video",
                def.id
            )));
        };
        let interlaced = interlace.is_interlaced();
        let g = wire_geometry(format, width, height, interlaced)?;
        let mut packetizer = Packetizer::new(
            g,
            options.packing,
            options.payload_type,
            options.ssrc,
            options.udp_size.packet_size(),
        )?;
        packetizer.set_sequence(options.ssrc.rotate_left(7));
        let sdp = video_sdp(def, g, options);
        if let Some(path) = &options.sdp_file {
            write_sdp(path, &sdp, options)?;
        }
        if let Some(c) = &options.counters {
            c.set_sdp(sdp);
        }
        let packets = packetizer.packets_per_frame();
        Ok(Self {
            def: def.clone(),
            picture: (format, width, height, interlaced),
            packetizer,
            model: PacingModel::progressive(def.index_rate(), packets as u32, height),
            last_epoch: None,
        })
    }
}

/// The SDP of the stream `options` send for flow `def`.
fn video_sdp(def: &FlowDef, geometry: VideoGeometry, options: &SenderOptions) -> String {
    super::sdp::VideoSdp {
        session_name: def.label.clone(),
        source: super::sdp::source_of(options.bind),
        destination: options.destination.ip().to_string(),
        port: options.destination.port(),
        payload_type: options.payload_type,
        geometry,
        rate: def.rate,
        packing: options.packing,
        colorimetry: "BT709".into(),
        sender_type: match options.pacing {
            Pacing::Wide => "2110TPW".into(),
            Pacing::Coarse => String::new(),
        },
        max_udp: options.udp_size.sdp_max_udp(),
    }
    .to_sdp()
}

fn write_sdp(
    path: &std::path::Path,
    sdp: &str,
    options: &SenderOptions,
) -> Result<(), BridgeError> {
    super::sdp::write_file(path, sdp)?;
    if let Some(tx) = &options.sdp_written {
        let _ = tx.send(sdp.to_owned());
    }
    Ok(())
}

/// What a video receiver expects and where it writes.
#[derive(Debug, Clone)]
pub struct ReceiverOptions {
    pub bind: SocketAddr,
    /// Multicast group to join on `interface` (IPv4), if any.
    pub multicast: Option<(std::net::Ipv4Addr, std::net::Ipv4Addr)>,
    pub payload_type: Option<u8>,
    pub width: u32,
    pub height: u32,
    pub rate: Rational,
    /// Flow pixel format (one [`wire_of`] knows).
    pub format: VideoFormat,
    /// Interlaced: each field (F bit in the SRDs) becomes a grain of `height / 2` lines at
    /// twice `rate`, the first field at even indices (MXL).
    pub interlace: InterlaceMode,
    pub flow_id: uuid::Uuid,
    /// Back-pressure for reliable local readers (file work); live otherwise. Either way a
    /// frame lost on the network (incomplete) leaves its grain index marked invalid (no
    /// media), so readers see the gap rather than wait on it or get a torn frame.
    pub reliable: bool,
    /// End the flow's stream and return after this many complete frames (0: never).
    pub frames: u64,
    /// Take trains of datagrams per system call (UDP receive offload) where the kernel can.
    pub offload: bool,
    /// Updated as the receiver goes, for a control plane.
    pub counters: Option<std::sync::Arc<LiveCounters>>,
}

/// What a receiver saw: the assembler's counters and the stream's ST 2110-21 timing.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ReceiveReport {
    pub stats: ReceiverStats,
    /// The worst sender type measured over the frames checked (`None` before a full frame:
    /// the model's packet count is learned from the first one).
    pub timing: Option<SenderType>,
    pub frames_timed: u64,
    /// Frames measured narrow, wide and non-compliant.
    pub frames_by_verdict: [u64; 3],
}

/// Measures arrivals against the ST 2110-21 model, learning packets per frame from the
/// first frame seen whole.
struct Timing {
    rate: Rational,
    height: u32,
    first_frame: Option<u32>,
    checker: Option<TimingChecker>,
    base: Option<u64>,
}

impl Timing {
    /// One datagram, which arrived at `arrival` (TAI ns, as the kernel stamped it) or,
    /// if the kernel does not stamp, just before now.
    fn packet(&mut self, datagram: &[u8], arrival: Option<u64>) {
        let Ok((rtp, _)) = super::rtp::RtpHeader::parse(datagram) else {
            return;
        };
        match &mut self.checker {
            Some(c) => {
                let now = arrival.unwrap_or_else(crate::time::now_tai_ns);
                // Times from a frame boundary, so the checker's f64s keep nanoseconds.
                let rate = self.rate;
                let base = *self.base.get_or_insert_with(|| {
                    index_to_timestamp(rate, crate::time::timestamp_to_index(rate, now))
                });
                if let Some(t) = c.packet((now as i64 - base as i64) as f64, rtp.marker) {
                    if t.verdict == SenderType::NonCompliant {
                        tracing::debug!(?t, "ST 2110-21: a frame beyond the wide model");
                    }
                }
            }
            None => match (&mut self.first_frame, rtp.marker) {
                // Count from the packet after a marker: that frame is whole.
                (None, true) => self.first_frame = Some(0),
                (None, false) => {}
                (Some(n), false) => *n += 1,
                (Some(n), true) => {
                    let model = PacingModel::progressive(self.rate, *n + 1, self.height);
                    self.checker = Some(TimingChecker::new(model));
                }
            },
        }
    }
}

/// Receives an ST 2110-20 stream into a new flow of `domain` until `stop` (or the frame
/// budget); ends the flow's stream on the way out.
pub fn receive_video(
    domain: Domain,
    options: &ReceiverOptions,
    stop: &AtomicBool,
) -> Result<ReceiveReport, BridgeError> {
    let interlaced = options.interlace.is_interlaced();
    let g = wire_geometry(options.format, options.width, options.height, interlaced)?;
    let lines = grain_lines(options.height, interlaced);
    let def = FlowDef::video(
        options.flow_id,
        "st2110-20 receiver",
        options.format,
        options.width,
        options.height,
        options.rate,
        options.interlace,
    )
    .map_err(FlowError::from)?;
    let writer_options = WriterOptions {
        back_pressure: options.reliable.then_some(Duration::from_secs(1)),
        ..Default::default()
    };
    let mut writer = domain.create_grain_writer(&def, &writer_options)?;
    let socket = super::udp::receiving_socket(options.bind, options.multicast)?;
    socket.set_read_timeout(Some(Duration::from_millis(100)))?;
    let mut receiver = UdpReceiver::new(socket, options.offload);
    // Batched reads need the kernel's arrival times, or the timing check would see each
    // batch arrive at once.
    if receiver.stamp_arrivals() {
        receiver.gather_for(GATHER);
    }
    let mut assembler = Assembler::new(AssemblerConfig {
        geometry: g,
        payload_type: options.payload_type,
        ssrc: None,
    });
    let rate = writer.grain_rate();
    let mut timing = Timing {
        rate,
        height: options.height,
        first_frame: None,
        checker: None,
        base: None,
    };
    let mut frames = GrainFrames::new(
        &mut writer,
        FrameLayout {
            format: options.format,
            width: options.width as usize,
            lines,
            line_bytes: g.line_bytes(),
            frame_bytes: g.frame_bytes(),
            interlaced,
            reliable: options.reliable,
            rate,
            budget: options.frames,
        },
        stop,
    );
    while !stop.load(Ordering::Acquire)
        && (options.frames == 0 || frames.committed < options.frames)
    {
        receiver.receive_timed(&mut |datagram, arrival| {
            timing.packet(datagram, arrival);
            assembler.push_into(datagram, &mut frames);
        })?;
        if let Some(e) = frames.failure.take() {
            return Err(e);
        }
        if let Some(c) = &options.counters {
            let s = assembler.stats();
            LiveCounters::set(&c.packets, s.packets);
            LiveCounters::set(&c.grains, frames.committed);
            LiveCounters::set(&c.incomplete, s.frames_incomplete);
            c.set_timing(timing.checker.as_ref().and_then(|t| t.worst));
        }
    }
    drop(frames);
    let _ = writer.end_of_stream();
    Ok(ReceiveReport {
        stats: assembler.stats(),
        timing: timing.checker.as_ref().and_then(|c| c.worst),
        frames_timed: timing.checker.as_ref().map_or(0, |c| c.frames),
        frames_by_verdict: timing
            .checker
            .as_ref()
            .map_or([0; 3], |c| c.frames_by_verdict),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::Rational;
    use uuid::Uuid;

    /// Every bridged format takes any wire frame back to the same bytes, through a grain
    /// of the flow's own size.
    #[test]
    fn wire_to_grain_and_back_is_exact_for_every_bridged_format() {
        let (w, h) = (36u32, 6u32);
        for format in [
            VideoFormat::V210,
            VideoFormat::Uyvp,
            VideoFormat::I422_10le,
            VideoFormat::Uyvy,
            VideoFormat::Yuy2,
            VideoFormat::I420,
            VideoFormat::Nv12,
            VideoFormat::P010_10le,
            VideoFormat::Rgba,
            VideoFormat::Bgra,
        ] {
            let (sampling, depth) = wire_of(format).unwrap();
            let g = VideoGeometry::new(w, h, sampling, depth, false).unwrap();
            let def = FlowDef::video(
                Uuid::nil(),
                "t",
                format,
                w,
                h,
                Rational::new(25, 1),
                InterlaceMode::Progressive,
            )
            .unwrap();
            let size = def.grain_geometry().unwrap().grain_size as usize;
            let wire: Vec<u8> = (0..g.frame_bytes()).map(|i| (i * 37 % 251) as u8).collect();
            let mut grain = vec![0u8; size];
            wire_to_grain(format, w as usize, h as usize, &wire, &mut grain);
            let mut back = vec![0u8; wire.len()];
            grain_to_wire(format, w as usize, h as usize, &grain, &mut back);
            assert!(back == wire, "{format:?}");
        }
    }

    #[test]
    fn an_i420_grain_goes_out_as_4_2_0_pgroups() {
        let (w, h) = (4usize, 2usize);
        // Y plane 4x2, then U 2x1, then V 2x1.
        let grain = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12];
        let mut wire = [0u8; 12];
        grain_to_wire(VideoFormat::I420, w, h, &grain, &mut wire);
        assert_eq!(wire, [1, 2, 5, 6, 9, 11, 3, 4, 7, 8, 10, 12]);
    }
}
