//! The I/O around the ST 2110-20 core: a flow sent as RFC 4175 over UDP, and a stream
//! received into a flow. Each runs on the calling thread until its stop flag, its frame
//! budget or the end of the flow.
//!
//! Sending: each grain is converted to wire pgroups (copied out of shared memory, then
//! checked intact), stamped with its TAI time on the 90 kHz clock (ST 2110-10), and its
//! packets spread across the first 90% of the frame period in bursts (software pacing,
//! close to the ST 2110-21 wide model). Receiving: complete frames are converted and
//! committed as grains; incomplete ones are counted and never committed.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::convert::{uyvp_line_to_v210, v210_line_to_uyvp, v210_stride};
use super::counters::LiveCounters;
use super::pacing::{rtp_epoch_ns, PacingModel, SenderType, TimingChecker};
use super::rfc4175::{
    Assembler, AssemblerConfig, Packetizer, PackingMode, ReceiverStats, Sampling, VideoGeometry,
    DEFAULT_PACKET_SIZE,
};
use super::udp::{udp_socket, PacketQueue, UdpReceiver, UdpSender};
use crate::flow::{Domain, FlowError, FollowError, Follower, WriterOptions};
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
    #[error("{0}")]
    Unsupported(String),
}

/// The wire sampling and depth a flow's pixel format is sent as; `Err` for formats not
/// bridged yet.
pub fn wire_of(format: VideoFormat) -> Result<(Sampling, u8), BridgeError> {
    match format {
        VideoFormat::V210 | VideoFormat::Uyvp => Ok((Sampling::YCbCr422, 10)),
        VideoFormat::Uyvy => Ok((Sampling::YCbCr422, 8)),
        other => Err(BridgeError::Unsupported(format!(
            "{} flows are not sent as ST 2110-20 yet (v210, UYVP, UYVY are)",
            other.name()
        ))),
    }
}

fn grain_to_wire(format: VideoFormat, width: usize, lines: usize, grain: &[u8], wire: &mut [u8]) {
    match format {
        VideoFormat::V210 => {
            let (s, d) = (v210_stride(width), width / 2 * 5);
            for l in 0..lines {
                v210_line_to_uyvp(
                    &grain[l * s..(l + 1) * s],
                    width,
                    &mut wire[l * d..(l + 1) * d],
                );
            }
        }
        // UYVY and UYVP lines are the wire pgroups already.
        _ => wire.copy_from_slice(&grain[..wire.len()]),
    }
}

fn wire_to_grain(format: VideoFormat, width: usize, lines: usize, wire: &[u8], grain: &mut [u8]) {
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
        _ => grain[..wire.len()].copy_from_slice(wire),
    }
}

/// When a grain's packets start, on the monotonic clock: its TAI time, if that is recent
/// (a live flow's grains are stamped with the clock); now for grains stamped otherwise (a
/// reliable flow counts its grains) or in the future.
fn pacing_start(grain_tai_ns: u64, period: Duration) -> Instant {
    let now = Instant::now();
    let late = crate::time::now_tai_ns().checked_sub(grain_tai_ns);
    match late.map(Duration::from_nanos) {
        Some(late) if late <= 2 * period => now.checked_sub(late).unwrap_or(now),
        _ => now,
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
}

/// Packets queued before they are handed to the kernel (at most; bursts end sooner).
const BATCH: usize = 128;

/// What a video sender sends.
#[derive(Debug, Clone)]
pub struct SenderOptions {
    pub destination: SocketAddr,
    pub bind: SocketAddr,
    pub payload_type: u8,
    pub ssrc: u32,
    pub packing: PackingMode,
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

/// What a sender sets up per flow description: the description, the flow's pixel format
/// and size, the packetizer and the wire frame.
type SendState = (FlowDef, (VideoFormat, u32, u32), Packetizer, Vec<u8>);

/// Sends flow `flow_id` of `domain` as ST 2110-20 until the flow ends, `options.frames`
/// frames were sent, or `stop` is set.
pub fn send_video(
    domain: Domain,
    flow_id: uuid::Uuid,
    options: &SenderOptions,
    stop: &AtomicBool,
) -> Result<SenderStats, BridgeError> {
    let socket = udp_socket(options.bind)?;
    socket.connect(options.destination)?;
    let mut batch = UdpSender::new(socket, options.offload);
    let mut follower = Follower::new(domain, flow_id, false)?;
    let mut stats = SenderStats::default();
    let mut state: Option<SendState> = None;
    while !stop.load(Ordering::Acquire) && (options.frames == 0 || stats.frames < options.frames) {
        let grain = match follower.next_grain(Duration::from_millis(100)) {
            Ok(g) => g,
            Err(FollowError::Timeout(_)) => continue,
            Err(FollowError::Closed) => break,
            Err(FollowError::Failed(e)) => return Err(e.into()),
        };
        let def = grain
            .reader()
            .flow_def()
            .ok_or_else(|| BridgeError::Unsupported("flow without a description".into()))?;
        // Set up once per flow description (a recreated flow may bring another).
        if state.as_ref().is_none_or(|(d, ..)| d.json != def.json) {
            let MediaFormat::Video {
                format,
                width,
                height,
                interlace,
            } = def.media
            else {
                return Err(BridgeError::Unsupported(format!(
                    "flow {flow_id} is not video"
                )));
            };
            if interlace != InterlaceMode::Progressive {
                return Err(BridgeError::Unsupported(
                    "interlaced flows are not sent yet".into(),
                ));
            }
            let (sampling, depth) = wire_of(format)?;
            let g = VideoGeometry::new(width, height, sampling, depth, false)?;
            let mut p = Packetizer::new(
                g,
                options.packing,
                options.payload_type,
                options.ssrc,
                DEFAULT_PACKET_SIZE,
            )?;
            p.set_sequence(options.ssrc.rotate_left(7));
            let sdp = video_sdp(def, g, options);
            if let Some(path) = &options.sdp_file {
                write_sdp(path, &sdp, options)?;
            }
            if let Some(c) = &options.counters {
                c.set_sdp(sdp);
            }
            let picture = (format, width, height);
            state = Some((def.clone(), picture, p, vec![0u8; g.frame_bytes()]));
        }
        let (def, (format, width, height), packetizer, wire) = state.as_mut().expect("set above");
        let (format, width, height) = (*format, *width, *height);
        let rate = def.index_rate();
        let index = grain.index();
        grain_to_wire(
            format,
            width as usize,
            height as usize,
            grain.payload(),
            wire,
        );
        if !grain.is_intact() {
            stats.torn += 1;
            continue;
        }
        drop(grain);
        stats.dropped = follower.drops().load(Ordering::Relaxed);
        // Pacing: bursts spread over 90% of the frame period from the grain's own time
        // (ST 2110-21 paces from the frame's epoch), so a grain read late goes out faster
        // and a sender that fell behind catches up instead of dropping grains.
        let period = Duration::from_nanos(
            (1_000_000_000u128 * rate.denominator as u128 / rate.numerator.max(1) as u128) as u64,
        );
        let total = packetizer.packets_per_frame().max(1);
        let bursts = 32usize.min(total);
        let start = pacing_start(index_to_timestamp(rate, index), period);
        let mut sent = 0usize;
        let mut error = None;
        let mut queue = PacketQueue::default();
        packetizer.packetize_parts(wire, rtp_time(rate, index), false, &mut |header, data| {
            if error.is_some() {
                return;
            }
            queue.push(header, data);
            sent += 1;
            let burst_end = sent.is_multiple_of(total.div_ceil(bursts));
            if queue.len() >= BATCH || burst_end {
                if let Err(e) = batch.send(&mut queue) {
                    error = Some(e);
                    return;
                }
            }
            if burst_end {
                let due = start + period.mul_f64(0.9 * sent as f64 / total as f64);
                let now = Instant::now();
                if due > now {
                    std::thread::sleep(due - now);
                }
            }
        })?;
        if let Some(e) = error {
            return Err(e.into());
        }
        batch.send(&mut queue)?;
        stats.packets += sent as u64;
        stats.unreachable = batch.unreachable;
        stats.unsent = batch.dropped;
        if let Some(c) = &options.counters {
            LiveCounters::set(&c.packets, stats.packets);
            LiveCounters::set(&c.grains, stats.frames + 1);
            LiveCounters::set(&c.dropped, stats.dropped);
        }
        stats.syscalls = batch.syscalls;
        stats.frames += 1;
    }
    Ok(stats)
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
        sender_type: "2110TPW".into(),
    }
    .to_sdp()
}

fn write_sdp(
    path: &std::path::Path,
    sdp: &str,
    options: &SenderOptions,
) -> Result<(), BridgeError> {
    let tmp = path.with_extension("sdp.tmp");
    std::fs::write(&tmp, sdp)?;
    std::fs::rename(&tmp, path)?;
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
    /// Flow pixel format: v210 (10-bit wire), UYVP (10-bit) or UYVY (8-bit).
    pub format: VideoFormat,
    pub flow_id: uuid::Uuid,
    /// Back-pressure for reliable local readers (file work); live otherwise.
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
}

/// Measures arrivals against the ST 2110-21 model, learning packets per frame from the
/// first frame seen whole.
struct Timing {
    rate: Rational,
    height: u32,
    first_frame: Option<u32>,
    checker: Option<TimingChecker>,
}

impl Timing {
    fn packet(&mut self, datagram: &[u8]) {
        let Ok((rtp, _)) = super::rtp::RtpHeader::parse(datagram) else {
            return;
        };
        match &mut self.checker {
            Some(c) => {
                let now = crate::time::now_tai_ns();
                c.packet(now as f64, rtp_epoch_ns(rtp.timestamp, now), rtp.marker);
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
    let (sampling, depth) = wire_of(options.format)?;
    let g = VideoGeometry::new(options.width, options.height, sampling, depth, false)?;
    let def = FlowDef::video(
        options.flow_id,
        "st2110-20 receiver",
        options.format,
        options.width,
        options.height,
        options.rate,
        InterlaceMode::Progressive,
    )
    .map_err(FlowError::from)?;
    let writer_options = WriterOptions {
        back_pressure: options.reliable.then_some(Duration::from_secs(1)),
        ..Default::default()
    };
    let mut writer = domain.create_grain_writer(&def, &writer_options)?;
    let socket = udp_socket(options.bind)?;
    if let Some((group, interface)) = options.multicast {
        socket.join_multicast_v4(&group, &interface)?;
    }
    socket.set_read_timeout(Some(Duration::from_millis(100)))?;
    let mut receiver = UdpReceiver::new(socket, options.offload);
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
    };
    let mut last: Option<u64> = None;
    let mut committed = 0u64;
    let mut failure: Option<BridgeError> = None;
    while !stop.load(Ordering::Acquire) && (options.frames == 0 || committed < options.frames) {
        receiver.receive(&mut |datagram| {
            timing.packet(datagram);
            assembler.push(datagram, &mut |info, wire| {
                let budget_spent = options.frames != 0 && committed >= options.frames;
                if !info.complete || failure.is_some() || budget_spent {
                    return;
                }
                let index = match last {
                    Some(l) if options.reliable => l + 1,
                    l => l.map_or(0, |l| l + 1).max(crate::time::current_index(rate)),
                };
                let written = loop {
                    match writer.open_grain(index) {
                        Ok(mut grain) => {
                            wire_to_grain(
                                options.format,
                                options.width as usize,
                                options.height as usize,
                                wire,
                                grain.payload(),
                            );
                            break grain.commit();
                        }
                        Err(FlowError::BackPressureTimeout { .. })
                            if !stop.load(Ordering::Acquire) =>
                        {
                            continue
                        }
                        Err(e) => break Err(e),
                    }
                };
                match written {
                    Ok(()) => {
                        last = Some(index);
                        committed += 1;
                    }
                    Err(e) => failure = Some(e.into()),
                }
            });
        })?;
        if let Some(e) = failure.take() {
            return Err(e);
        }
        if let Some(c) = &options.counters {
            let s = assembler.stats();
            LiveCounters::set(&c.packets, s.packets);
            LiveCounters::set(&c.grains, committed);
            LiveCounters::set(&c.incomplete, s.frames_incomplete);
            c.set_timing(timing.checker.as_ref().and_then(|t| t.worst));
        }
    }
    let _ = writer.end_of_stream();
    Ok(ReceiveReport {
        stats: assembler.stats(),
        timing: timing.checker.as_ref().and_then(|c| c.worst),
        frames_timed: timing.checker.as_ref().map_or(0, |c| c.frames),
    })
}
