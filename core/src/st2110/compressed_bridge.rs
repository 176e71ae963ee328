//! The I/O around the ST 2110-22 core: a flow of compressed frames (an opaque flow, one
//! frame per grain: a JPEG XS codestream, an H.264 access unit, a JPEG) sent as RFC 9134
//! over UDP, and a stream received into such a flow.
//!
//! Each frame's packets are paced as ST 2110-21 wide asks (the frame's own packet count
//! gives the model: compressed frames vary in size), in the first transmission epoch the
//! frame can make, as the ST 2110-20 sender does. The receiver hands only whole frames to
//! the flow; incomplete ones are counted.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::counters::LiveCounters;
use super::pacing::{BurstSchedule, PacingModel, SenderType, TimingChecker};
use super::rfc9134::{Assembler, AssemblerStats, Packetizer, Picture};
use super::sdp::CompressedSdp;
use super::udp::{udp_socket, PacketQueue, UdpReceiver, UdpSender};
use super::video_bridge::{rtp_time, BridgeError};
use crate::flow::{Domain, FlowError, FollowError, Follower, WriterOptions};
use crate::format::{FlowDef, MediaFormat};
use crate::time::index_to_timestamp;

/// Largest RTP packet a compressed-video sender emits (headers included).
const MAX_PACKET: usize = 1400;

/// Lines the ST 2110-21 model takes TROFFSET from: a compressed frame does not say.
const PACING_LINES: u32 = 1080;

/// What a compressed-video sender sends.
#[derive(Debug, Clone)]
pub struct CompressedSenderOptions {
    pub destination: SocketAddr,
    pub bind: SocketAddr,
    pub payload_type: u8,
    pub ssrc: u32,
    /// Hold the flow's writer back until each grain is sent (file work); live otherwise.
    pub reliable: bool,
    pub counters: Option<Arc<LiveCounters>>,
    /// Where to write the stream's SDP (rewritten if the flow's description changes).
    pub sdp_file: Option<std::path::PathBuf>,
}

/// Counters of a compressed-video sender.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CompressedSenderStats {
    pub frames: u64,
    pub packets: u64,
    /// Empty grains (nothing to send).
    pub empty: u64,
    pub torn: u64,
    pub dropped: u64,
    /// Frames whose packets went out narrow, wide and non-compliant, by the sender's own
    /// ST 2110-21 check of its send times against each frame's model.
    pub timing: [u64; 3],
}

/// The SDP of the stream `options` send for opaque flow `def` (media type `media_type`).
fn compressed_sdp(def: &FlowDef, media_type: &str, options: &CompressedSenderOptions) -> String {
    CompressedSdp {
        session_name: def.label.clone(),
        source: super::sdp::source_of(options.bind),
        destination: options.destination.ip().to_string(),
        port: options.destination.port(),
        payload_type: options.payload_type,
        media_type: media_type.to_owned(),
        rate: def.rate,
        size: picture_size(def),
    }
    .to_sdp()
}

/// Width and height of an opaque flow's pictures, from the caps string a GStreamer
/// element stored with it (`width=(int)1920`), if any.
fn picture_size(def: &FlowDef) -> Option<(u32, u32)> {
    let caps = def.json.get(crate::format::CAPS_KEY)?.as_str()?;
    let field = |name: &str| -> Option<u32> {
        let rest = caps.split(&format!("{name}=")).nth(1)?;
        let rest = rest.strip_prefix("(int)").unwrap_or(rest);
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        digits.parse().ok()
    };
    Some((field("width")?, field("height")?))
}

/// Sends opaque flow `flow_id` of `domain` as ST 2110-22 (RFC 9134 codestream packets)
/// until the flow ends or `stop`.
pub fn send_compressed(
    domain: Domain,
    flow_id: uuid::Uuid,
    options: &CompressedSenderOptions,
    stop: &AtomicBool,
) -> Result<CompressedSenderStats, BridgeError> {
    let mut follower = Follower::new(domain, flow_id, options.reliable)?;
    let socket = udp_socket(options.bind)?;
    socket.connect(options.destination)?;
    let mut sender = UdpSender::new(socket, true);
    let mut packetizer = Packetizer::new(options.payload_type, options.ssrc, MAX_PACKET)?;
    packetizer.set_sequence(options.ssrc.rotate_left(5) as u16);
    let mut stats = CompressedSenderStats::default();
    let mut schedule: Option<BurstSchedule> = None;
    let mut last_epoch: Option<u64> = None;
    crate::time::pacing_thread();
    let mut sleeper = crate::time::PunctualSleeper::default();
    let mut frame = Vec::new();
    let mut packets: Vec<u8> = Vec::new();
    let mut ends: Vec<usize> = Vec::new();
    let mut described: Option<serde_json::Value> = None;
    let mut worst: Option<SenderType> = None;
    while !stop.load(Ordering::Acquire) {
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
        let MediaFormat::Opaque { media_type, .. } = &def.media else {
            return Err(BridgeError::Unsupported(format!(
                "flow {flow_id} does not hold compressed frames (an opaque flow)"
            )));
        };
        if described.as_ref() != Some(&def.json) {
            let sdp = compressed_sdp(def, media_type, options);
            if let Some(path) = &options.sdp_file {
                super::sdp::write_file(path, &sdp)?;
            }
            if let Some(c) = &options.counters {
                c.set_sdp(sdp);
            }
            described = Some(def.json.clone());
        }
        let rate = def.index_rate();
        let index = grain.index();
        frame.clear();
        frame.extend_from_slice(grain.payload());
        if !grain.is_intact() {
            stats.torn += 1;
            continue;
        }
        drop(grain);
        if frame.is_empty() {
            stats.empty += 1;
            continue;
        }
        packets.clear();
        ends.clear();
        let count = packetizer.packetize(
            &frame,
            rtp_time(rate, index),
            Picture::Progressive,
            &mut |p| {
                packets.extend_from_slice(p);
                ends.push(packets.len());
            },
        )?;
        // This frame's model and schedule, continuing the network bucket of the last one.
        let model = PacingModel::progressive(rate, count as u32, PACING_LINES);
        let next = BurstSchedule::wide(&model);
        let s = schedule.insert(match schedule {
            Some(old) => next.carrying_bucket_of(&old),
            None => next,
        });
        let epoch_index = s.transmission_epoch(
            rate,
            crate::time::now_tai_ns(),
            model.t_frame_ns,
            last_epoch,
        );
        last_epoch = Some(epoch_index);
        let epoch = index_to_timestamp(rate, epoch_index);
        let longest_sleep = 2 * model.t_frame_ns as u64;
        // The sender's own check of this frame's send times, from its epoch.
        let mut checker = TimingChecker::new(model);
        let mut verdict = None;
        for (k, burst) in ends.chunks(s.burst).enumerate() {
            let mut queue = PacketQueue::default();
            let mut start = if k == 0 { 0 } else { ends[k * s.burst - 1] };
            for &end in burst {
                queue.push(&packets[start..end], &[]);
                start = end;
            }
            // Never more than two frames' sleep: a clock step back must not hold `stop`.
            let due = s.due_ns(epoch, k * s.burst, burst.len());
            sleeper.sleep_until_tai(due.min(crate::time::now_tai_ns() + longest_sleep));
            // The burst counts from the send call's start, as the video sender's does.
            let at = crate::time::now_tai_ns();
            sender.send(&mut queue)?;
            s.sent(at, burst.len());
            let last_burst = (k + 1) * s.burst >= ends.len();
            for i in 0..burst.len() {
                let t = (at as i64 - epoch as i64) as f64;
                if let Some(t) = checker.packet(t, last_burst && i + 1 == burst.len()) {
                    verdict = Some(t.verdict);
                }
            }
        }
        if let Some(v) = verdict {
            stats.timing[v as usize] += 1;
            worst = worst.max(Some(v));
        }
        stats.frames += 1;
        stats.packets += count as u64;
        stats.dropped = follower.drops().load(Ordering::Relaxed);
        if let Some(c) = &options.counters {
            LiveCounters::set(&c.packets, stats.packets);
            LiveCounters::set(&c.grains, stats.frames);
            LiveCounters::set(&c.dropped, stats.dropped);
            c.set_timing(worst);
        }
    }
    Ok(stats)
}

/// What a compressed-video receiver expects and where it writes.
#[derive(Debug, Clone)]
pub struct CompressedReceiverOptions {
    pub bind: SocketAddr,
    pub multicast: Option<(std::net::Ipv4Addr, std::net::Ipv4Addr)>,
    pub payload_type: Option<u8>,
    /// The flow written: an opaque description (its grain rate and largest grain).
    pub flow: FlowDef,
    pub reliable: bool,
    /// End the flow's stream and return after this many frames (0: never).
    pub frames: u64,
    pub counters: Option<Arc<LiveCounters>>,
}

/// The socket a compressed-video receiver listens on: bound, and joined to its group.
pub fn bind_receiver(
    options: &CompressedReceiverOptions,
) -> Result<std::net::UdpSocket, BridgeError> {
    Ok(super::udp::receiving_socket(
        options.bind,
        options.multicast,
    )?)
}

/// Receives an ST 2110-22 stream on `socket` (see [`bind_receiver`]) into a new opaque
/// flow of `domain`, one whole frame per grain, until `stop` or the frame budget; ends the
/// flow's stream on the way out.
pub fn receive_compressed(
    socket: std::net::UdpSocket,
    domain: Domain,
    options: &CompressedReceiverOptions,
    stop: &AtomicBool,
) -> Result<AssemblerStats, BridgeError> {
    let MediaFormat::Opaque { max_grain_size, .. } = options.flow.media else {
        return Err(BridgeError::Unsupported(
            "an ST 2110-22 receiver writes an opaque flow".into(),
        ));
    };
    let writer_options = WriterOptions {
        back_pressure: options.reliable.then_some(Duration::from_secs(1)),
        ..Default::default()
    };
    let mut writer = domain.create_grain_writer(&options.flow, &writer_options)?;
    socket.set_read_timeout(Some(Duration::from_millis(100)))?;
    let mut receiver = UdpReceiver::new(socket, true);
    let mut assembler = Assembler::new(options.payload_type, max_grain_size as usize);
    let rate = writer.grain_rate();
    let mut last: Option<u64> = None;
    let mut committed = 0u64;
    let mut failure: Option<FlowError> = None;
    while !stop.load(Ordering::Acquire) && (options.frames == 0 || committed < options.frames) {
        receiver.receive(&mut |packet| {
            assembler.push(packet, &mut |_, frame| {
                let budget_spent = options.frames != 0 && committed >= options.frames;
                if failure.is_some() || budget_spent {
                    return;
                }
                let index = match last {
                    Some(l) if options.reliable => l + 1,
                    l => l.map_or(0, |l| l + 1).max(crate::time::current_index(rate)),
                };
                let result = loop {
                    match writer.open_grain(index) {
                        Ok(mut grain) => {
                            // The assembler keeps frames within the grain size.
                            let len = frame.len().min(grain.payload().len());
                            grain.payload()[..len].copy_from_slice(&frame[..len]);
                            break grain.commit_len(len);
                        }
                        Err(FlowError::BackPressureTimeout { .. })
                            if !stop.load(Ordering::Acquire) =>
                        {
                            continue
                        }
                        Err(e) => break Err(e),
                    }
                };
                match result {
                    Ok(()) => {
                        last = Some(index);
                        committed += 1;
                    }
                    Err(e) => failure = Some(e),
                }
            });
        })?;
        if let Some(e) = failure.take() {
            return Err(e.into());
        }
        if let Some(c) = &options.counters {
            let s = assembler.stats();
            LiveCounters::set(&c.packets, s.packets);
            LiveCounters::set(&c.grains, committed);
            LiveCounters::set(&c.incomplete, s.frames_incomplete);
        }
    }
    let _ = writer.end_of_stream();
    Ok(assembler.stats())
}
