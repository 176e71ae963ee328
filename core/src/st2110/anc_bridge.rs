//! The I/O around the ST 2110-40 core: an ancillary data flow (MXL `video/smpte291`) sent
//! as RFC 8331 RTP over UDP, and a stream received into such a flow.
//!
//! An MXL data grain holds the RFC 8331 payload from its Length field on: the RTP header
//! and the extended sequence number (bytes 0-13 of the packet) are left out. So a grain
//! becomes one packet (marker set: all of a frame's ANC in one) by putting those 14 bytes
//! back, and a packet a grain by taking them off, after its parity and checksums are
//! verified: a packet that fails them is counted and never committed.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::anc;
use super::counters::LiveCounters;
use super::rtp::{RtpHeader, RTP_HEADER_LEN};
use super::udp::{udp_socket, PacketQueue, UdpReceiver, UdpSender};
use super::video_bridge::{rtp_time, BridgeError};
use crate::flow::{Domain, FlowError, FollowError, Follower, WriterOptions};
use crate::format::{FlowDef, MediaFormat};

/// Bytes of the RFC 8331 payload header kept in a grain: Length (2), ANC_Count (1), F and
/// reserved (3).
const GRAIN_HEADER: usize = 6;

/// The bytes of a data grain that hold ANC: its header and `Length` bytes of packets.
fn anc_bytes(grain: &[u8]) -> Option<&[u8]> {
    let length = usize::from(u16::from_be_bytes([*grain.first()?, *grain.get(1)?]));
    grain.get(..GRAIN_HEADER + length)
}

/// What an ANC sender sends.
#[derive(Debug, Clone)]
pub struct AncSenderOptions {
    pub destination: SocketAddr,
    pub bind: SocketAddr,
    pub payload_type: u8,
    pub ssrc: u32,
    /// Hold the flow's writer back until each grain is sent (file work); live otherwise.
    pub reliable: bool,
    pub counters: Option<Arc<LiveCounters>>,
    /// Where to write the stream's SDP.
    pub sdp_file: Option<std::path::PathBuf>,
}

/// Counters of an ANC sender.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AncSenderStats {
    pub packets: u64,
    /// Grains whose Length field overruns the grain (not sent).
    pub malformed: u64,
    pub torn: u64,
    pub dropped: u64,
}

/// Sends data flow `flow_id` of `domain` as ST 2110-40 until the flow ends or `stop`.
pub fn send_anc(
    domain: Domain,
    flow_id: uuid::Uuid,
    options: &AncSenderOptions,
    stop: &AtomicBool,
) -> Result<AncSenderStats, BridgeError> {
    let follower = Follower::new(domain, flow_id, options.reliable)?;
    send_anc_from(follower, options, stop)
}

/// As [`send_anc`], reading through `follower` (a reliable one made before the writer
/// starts holds it back from the first grain).
pub fn send_anc_from(
    mut follower: Follower,
    options: &AncSenderOptions,
    stop: &AtomicBool,
) -> Result<AncSenderStats, BridgeError> {
    let flow_id = follower.flow_id();
    let socket = udp_socket(options.bind)?;
    socket.connect(options.destination)?;
    let mut sender = UdpSender::new(socket, false);
    let mut stats = AncSenderStats::default();
    let mut sequence = options.ssrc.rotate_left(11);
    let mut data = Vec::new();
    let mut described = false;
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
        if def.media != MediaFormat::Ancillary {
            return Err(BridgeError::Unsupported(format!(
                "flow {flow_id} is not ancillary data (video/smpte291)"
            )));
        }
        if !described {
            let sdp = super::sdp::AncSdp {
                session_name: def.label.clone(),
                source: super::sdp::source_of(options.bind),
                destination: options.destination.ip().to_string(),
                port: options.destination.port(),
                payload_type: options.payload_type,
            }
            .to_sdp();
            if let Some(path) = &options.sdp_file {
                super::sdp::write_file(path, &sdp)?;
            }
            if let Some(c) = &options.counters {
                c.set_sdp(sdp);
            }
            described = true;
        }
        let rate = def.index_rate();
        let index = grain.index();
        data.clear();
        match anc_bytes(grain.payload()) {
            Some(bytes) => data.extend_from_slice(bytes),
            None => {
                stats.malformed += 1;
                continue;
            }
        }
        if !grain.is_intact() {
            stats.torn += 1;
            continue;
        }
        drop(grain);
        let mut header = [0u8; RTP_HEADER_LEN + 2];
        RtpHeader {
            marker: true,
            payload_type: options.payload_type,
            sequence: sequence as u16,
            timestamp: rtp_time(rate, index),
            ssrc: options.ssrc,
        }
        .write(
            (&mut header[..RTP_HEADER_LEN])
                .try_into()
                .expect("12 bytes"),
        );
        header[RTP_HEADER_LEN..].copy_from_slice(&((sequence >> 16) as u16).to_be_bytes());
        sequence = sequence.wrapping_add(1);
        let mut queue = PacketQueue::default();
        queue.push(&header, &data);
        sender.send(&mut queue)?;
        stats.packets += 1;
        stats.dropped = follower.drops().load(Ordering::Relaxed);
        if let Some(c) = &options.counters {
            LiveCounters::set(&c.packets, stats.packets);
            LiveCounters::set(&c.grains, stats.packets);
            LiveCounters::set(&c.dropped, stats.dropped);
        }
    }
    Ok(stats)
}

/// What an ANC receiver expects and where it writes.
#[derive(Debug, Clone)]
pub struct AncReceiverOptions {
    pub bind: SocketAddr,
    pub multicast: Option<(std::net::Ipv4Addr, std::net::Ipv4Addr)>,
    pub payload_type: Option<u8>,
    /// The flow written: an ancillary data description (its grain rate).
    pub flow: FlowDef,
    pub reliable: bool,
    /// End the flow's stream and return after this many grains (0: never).
    pub grains: u64,
    pub counters: Option<Arc<LiveCounters>>,
}

/// Counters of an ANC receiver.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AncReceiverStats {
    pub packets: u64,
    pub grains: u64,
    /// Packets that are not RFC 8331 (truncated, bad parity or checksum, too big).
    pub malformed: u64,
    pub wrong_payload_type: u64,
}

/// The socket an ANC receiver listens on: bound, and joined to its multicast group.
pub fn bind_receiver(options: &AncReceiverOptions) -> Result<std::net::UdpSocket, BridgeError> {
    Ok(super::udp::receiving_socket(
        options.bind,
        options.multicast,
    )?)
}

/// Receives an ST 2110-40 stream on `socket` (see [`bind_receiver`]) into a new data flow
/// of `domain` until `stop` or the grain budget; ends the flow's stream on the way out.
pub fn receive_anc(
    socket: std::net::UdpSocket,
    domain: Domain,
    options: &AncReceiverOptions,
    stop: &AtomicBool,
) -> Result<AncReceiverStats, BridgeError> {
    if options.flow.media != MediaFormat::Ancillary {
        return Err(BridgeError::Unsupported(
            "an ST 2110-40 receiver writes an ancillary data flow".into(),
        ));
    }
    let writer_options = WriterOptions {
        back_pressure: options.reliable.then_some(Duration::from_secs(1)),
        ..Default::default()
    };
    let mut writer = domain.create_grain_writer(&options.flow, &writer_options)?;
    socket.set_read_timeout(Some(Duration::from_millis(100)))?;
    let mut receiver = UdpReceiver::new(socket, false);
    let rate = writer.grain_rate();
    let mut stats = AncReceiverStats::default();
    let mut last: Option<u64> = None;
    let mut failure: Option<FlowError> = None;
    while !stop.load(Ordering::Acquire) && (options.grains == 0 || stats.grains < options.grains) {
        receiver.receive(&mut |packet| {
            stats.packets += 1;
            if failure.is_some() || (options.grains != 0 && stats.grains >= options.grains) {
                return;
            }
            let rtp = match anc::parse(packet) {
                Ok((rtp, _, _)) => rtp,
                Err(_) => {
                    stats.malformed += 1;
                    return;
                }
            };
            if options
                .payload_type
                .is_some_and(|pt| pt != rtp.payload_type)
            {
                stats.wrong_payload_type += 1;
                return;
            }
            let Some(bytes) = packet.get(RTP_HEADER_LEN + 2..).and_then(anc_bytes) else {
                stats.malformed += 1;
                return;
            };
            let index = match last {
                Some(l) if options.reliable => l + 1,
                l => l.map_or(0, |l| l + 1).max(crate::time::current_index(rate)),
            };
            let result = loop {
                match writer.open_grain(index) {
                    Ok(mut grain) => {
                        if bytes.len() > grain.payload().len() {
                            stats.malformed += 1;
                            return;
                        }
                        grain.payload()[..bytes.len()].copy_from_slice(bytes);
                        break grain.commit();
                    }
                    Err(FlowError::BackPressureTimeout { .. }) if !stop.load(Ordering::Acquire) => {
                        continue
                    }
                    Err(e) => break Err(e),
                }
            };
            match result {
                Ok(()) => {
                    last = Some(index);
                    stats.grains += 1;
                }
                Err(e) => failure = Some(e),
            }
        })?;
        if let Some(e) = failure.take() {
            return Err(e.into());
        }
        if let Some(c) = &options.counters {
            LiveCounters::set(&c.packets, stats.packets);
            LiveCounters::set(&c.grains, stats.grains);
        }
    }
    let _ = writer.end_of_stream();
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_grain_holds_its_length_plus_six_bytes() {
        let mut grain = vec![0u8; 4096];
        grain[..2].copy_from_slice(&10u16.to_be_bytes());
        assert_eq!(anc_bytes(&grain).map(<[u8]>::len), Some(16));
        grain[..2].copy_from_slice(&5000u16.to_be_bytes());
        assert_eq!(
            anc_bytes(&grain),
            None,
            "a Length past the grain is refused"
        );
        assert_eq!(anc_bytes(&[0]), None);
    }
}
