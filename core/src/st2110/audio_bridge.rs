//! The I/O around the ST 2110-30 core: a PCM flow sent as RTP L16/L24 over UDP, and a stream
//! received into a PCM flow. One grain is one packet time (MCM's and mcmsink's PCM flows
//! are cut that way), so each grain is one packet and each packet one grain, with no
//! conversion: both hold interleaved big-endian samples.
//!
//! The RTP timestamp counts samples since the SMPTE epoch (ST 2110-10): a grain's index
//! times its samples. Packets go out as their grains are committed, which paces them at the
//! packet time by itself.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::audio::{AudioDepacketizer, AudioFormat, AudioPacketizer, AudioStats, PcmEncoding};
use super::counters::LiveCounters;
use super::udp::{udp_socket, PacketQueue, UdpReceiver, UdpSender};
use super::video_bridge::BridgeError;
use crate::flow::{Domain, FlowError, FollowError, Follower, WriterOptions};
use crate::format::{FlowDef, MediaFormat, PcmFormat};
use crate::time::Rational;

/// The ST 2110-30 format of a PCM flow description.
pub fn audio_format_of(def: &FlowDef) -> Result<AudioFormat, BridgeError> {
    let MediaFormat::Pcm {
        format,
        channels,
        samples_per_grain,
    } = def.media
    else {
        return Err(BridgeError::Unsupported(format!(
            "flow {} is not PCM audio (ST 2110-30 carries big-endian PCM)",
            def.id
        )));
    };
    let encoding = match format {
        PcmFormat::S16Be => PcmEncoding::L16,
        PcmFormat::S24Be => PcmEncoding::L24,
    };
    let channels = u16::try_from(channels)
        .map_err(|_| BridgeError::Unsupported(format!("{channels} channels")))?;
    // A PCM flow's rate is its grain (packet) rate.
    let rate = def.rate.reduced();
    let sample_rate = u32::try_from(rate.numerator * i64::from(samples_per_grain))
        .ok()
        .filter(|_| rate.denominator == 1)
        .ok_or_else(|| BridgeError::Unsupported(format!("grain rate {rate:?}")))?;
    AudioFormat::with_samples(encoding, channels, sample_rate, samples_per_grain)
        .map_err(|e| BridgeError::Unsupported(e.to_string()))
}

/// The SDP of the stream `options` send for PCM flow `def`.
fn audio_sdp(def: &FlowDef, format: AudioFormat, options: &AudioSenderOptions) -> String {
    super::sdp::AudioSdp {
        session_name: def.label.clone(),
        source: super::sdp::source_of(options.bind),
        destination: options.destination.ip().to_string(),
        port: options.destination.port(),
        payload_type: options.payload_type,
        format,
    }
    .to_sdp()
}

/// What an audio sender sends.
#[derive(Debug, Clone)]
pub struct AudioSenderOptions {
    pub destination: SocketAddr,
    pub bind: SocketAddr,
    pub payload_type: u8,
    pub ssrc: u32,
    /// Stop after this many packets (0: until the flow ends or `stop`).
    pub packets: u64,
    /// Hold the flow's writer back until each grain is sent (file work); live otherwise.
    pub reliable: bool,
    /// Updated as the sender goes (and given the stream's SDP), for a control plane.
    pub counters: Option<Arc<LiveCounters>>,
}

/// Counters of an audio sender.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AudioSenderStats {
    pub packets: u64,
    /// Grains the writer overwrote while they were being read (not sent).
    pub torn: u64,
    /// Grains skipped because the sender fell behind the writer.
    pub dropped: u64,
    /// "Port unreachable" reports (nobody listening at the destination yet).
    pub unreachable: u64,
}

/// Sends PCM flow `flow_id` of `domain` as ST 2110-30 until the flow ends, `packets`
/// packets were sent, or `stop` is set.
pub fn send_audio(
    domain: Domain,
    flow_id: uuid::Uuid,
    options: &AudioSenderOptions,
    stop: &AtomicBool,
) -> Result<AudioSenderStats, BridgeError> {
    let follower = Follower::new(domain, flow_id, options.reliable)?;
    send_audio_from(follower, options, stop)
}

/// As [`send_audio`], reading through `follower` (a reliable one made before the writer
/// starts holds it back from the first grain).
pub fn send_audio_from(
    mut follower: Follower,
    options: &AudioSenderOptions,
    stop: &AtomicBool,
) -> Result<AudioSenderStats, BridgeError> {
    let socket = udp_socket(options.bind)?;
    socket.connect(options.destination)?;
    let mut sender = UdpSender::new(socket, false);
    let mut stats = AudioSenderStats::default();
    let mut state: Option<(serde_json::Value, u32, AudioPacketizer)> = None;
    let mut payload = Vec::new();
    let mut grains = 0u64;
    while !stop.load(Ordering::Acquire) && (options.packets == 0 || stats.packets < options.packets)
    {
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
        if state.as_ref().is_none_or(|(json, ..)| *json != def.json) {
            let format = audio_format_of(def)?;
            if let Some(c) = &options.counters {
                c.set_sdp(audio_sdp(def, format, options));
            }
            let packetizer = AudioPacketizer::new(format, options.payload_type, options.ssrc);
            state = Some((def.json.clone(), format.samples_per_packet, packetizer));
        }
        let (_, samples_per_grain, packetizer) = state.as_mut().expect("set above");
        let rtp_time = grain.index().wrapping_mul(u64::from(*samples_per_grain)) as u32;
        payload.clear();
        payload.extend_from_slice(grain.payload());
        if !grain.is_intact() {
            stats.torn += 1;
            continue;
        }
        drop(grain);
        let mut queue = PacketQueue::default();
        packetizer.packetize(&payload, rtp_time, &mut |packet| queue.push(packet, &[]))?;
        stats.packets += queue.len() as u64;
        sender.send(&mut queue)?;
        stats.dropped = follower.drops().load(Ordering::Relaxed);
        stats.unreachable = sender.unreachable;
        grains += 1;
        if let Some(c) = &options.counters {
            LiveCounters::set(&c.packets, stats.packets);
            LiveCounters::set(&c.grains, grains);
            LiveCounters::set(&c.dropped, stats.dropped);
        }
    }
    Ok(stats)
}

/// What an audio receiver expects and where it writes.
#[derive(Debug, Clone)]
pub struct AudioReceiverOptions {
    pub bind: SocketAddr,
    /// Multicast group to join on `interface` (IPv4), if any.
    pub multicast: Option<(std::net::Ipv4Addr, std::net::Ipv4Addr)>,
    pub payload_type: Option<u8>,
    /// The flow written (a PCM flow description: format, channels, rate, packet time).
    pub flow: FlowDef,
    /// Back-pressure for reliable local readers; live otherwise.
    pub reliable: bool,
    /// Packets held to put reordered ones back in order.
    pub reorder_window: usize,
    /// End the flow's stream and return after this many grains (0: never).
    pub grains: u64,
    /// Updated as the receiver goes, for a control plane.
    pub counters: Option<Arc<LiveCounters>>,
}

/// Receives an ST 2110-30 stream into a new PCM flow of `domain` until `stop` (or the
/// grain budget); ends the flow's stream on the way out. A lost packet becomes a grain of
/// silence, counted, so the sample clock never slips.
pub fn receive_audio(
    domain: Domain,
    options: &AudioReceiverOptions,
    stop: &AtomicBool,
) -> Result<AudioStats, BridgeError> {
    receive_audio_on(bind_receiver(options)?, domain, options, stop)
}

/// The receiving socket of `options`: bound, multicast group joined.
pub fn bind_receiver(options: &AudioReceiverOptions) -> Result<std::net::UdpSocket, BridgeError> {
    Ok(super::udp::receiving_socket(
        options.bind,
        options.multicast,
    )?)
}

/// As [`receive_audio`], on a socket already bound (so a caller knows it listens).
pub fn receive_audio_on(
    socket: std::net::UdpSocket,
    domain: Domain,
    options: &AudioReceiverOptions,
    stop: &AtomicBool,
) -> Result<AudioStats, BridgeError> {
    let format = audio_format_of(&options.flow)?;
    let writer_options = WriterOptions {
        back_pressure: options.reliable.then_some(Duration::from_secs(1)),
        ..Default::default()
    };
    let mut writer = domain.create_grain_writer(&options.flow, &writer_options)?;
    socket.set_read_timeout(Some(Duration::from_millis(100)))?;
    let mut receiver = UdpReceiver::new(socket, false);
    let mut depacketizer =
        AudioDepacketizer::new(format, options.payload_type, options.reorder_window);
    let rate: Rational = writer.grain_rate();
    let mut last: Option<u64> = None;
    let mut written = 0u64;
    let mut failure: Option<BridgeError> = None;
    let samples_per_grain = u64::from(format.samples_per_packet);
    let mut commit = |ts: u32, samples: &[u8], last: &mut Option<u64>, written: &mut u64| {
        if options.grains != 0 && *written >= options.grains {
            return Ok(());
        }
        let index = match *last {
            Some(l) if options.reliable => l + 1,
            l => live_index(ts, samples_per_grain, rate, l),
        };
        loop {
            match writer.open_grain(index) {
                Ok(mut grain) => {
                    let n = samples.len().min(grain.payload().len());
                    grain.payload()[..n].copy_from_slice(&samples[..n]);
                    grain.commit_len(n)?;
                    break;
                }
                Err(FlowError::BackPressureTimeout { .. }) if !stop.load(Ordering::Acquire) => {
                    continue
                }
                Err(e) => return Err(e),
            }
        }
        *last = Some(index);
        *written += 1;
        Ok(())
    };
    while !stop.load(Ordering::Acquire) && (options.grains == 0 || written < options.grains) {
        receiver.receive(&mut |datagram| {
            depacketizer.push(datagram, &mut |ts, samples| {
                if failure.is_none() {
                    if let Err(e) = commit(ts, samples, &mut last, &mut written) {
                        failure = Some(e.into());
                    }
                }
            });
        })?;
        if let Some(e) = failure.take() {
            return Err(e);
        }
        if let Some(c) = &options.counters {
            let s = depacketizer.stats();
            LiveCounters::set(&c.packets, s.packets);
            LiveCounters::set(&c.grains, written);
            LiveCounters::set(&c.lost, s.lost);
        }
    }
    let _ = writer.end_of_stream();
    Ok(depacketizer.stats())
}

/// A live receiver's grain index for a packet stamped `ts`: the sender stamps grain index ×
/// samples per grain (ST 2110-10), so the index comes back from the timestamp, unwrapped
/// near the current index; a timestamp more than a second off (clocks not locked) or not
/// after the last grain falls back to the next index no earlier than now.
fn live_index(ts: u32, samples_per_grain: u64, rate: Rational, last: Option<u64>) -> u64 {
    let now = crate::time::current_index(rate);
    let fallback = last.map_or(0, |l| l + 1).max(now);
    let spg = samples_per_grain.max(1);
    let reference = now.saturating_mul(spg);
    let candidate = (reference & !0xFFFF_FFFF) | u64::from(ts);
    let unwrapped = [
        candidate.wrapping_sub(1 << 32),
        candidate,
        candidate + (1 << 32),
    ]
    .into_iter()
    .min_by_key(|c| c.abs_diff(reference))
    .unwrap_or(candidate);
    let index = unwrapped / spg;
    let second = u64::try_from(rate.numerator / rate.denominator.max(1))
        .unwrap_or(1000)
        .max(1);
    if index.abs_diff(now) <= second && last.is_none_or(|l| index > l) {
        index
    } else {
        fallback
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn live_index_follows_the_rtp_timestamp() {
        let rate = Rational::new(1000, 1);
        let now = crate::time::current_index(rate);
        let ts = |i: u64| (i * 48) as u32;
        // A grain stamped 50 ms ago keeps its index; stamped a minute off, it gets now's.
        assert_eq!(live_index(ts(now - 50), 48, rate, None), now - 50);
        let fallback = live_index(ts(now - 60_000), 48, rate, None);
        assert!(fallback >= now, "{fallback} {now}");
        // Never back to or before the last grain written: then the next one from now.
        let after = live_index(ts(now - 50), 48, rate, Some(now - 10));
        assert!(after >= now, "{after} {now}");
        // The timestamp just after the last grain is that grain's successor.
        assert_eq!(live_index(ts(now - 9), 48, rate, Some(now - 10)), now - 9);
    }

    use super::*;
    use crate::format::PcmFormat;

    #[test]
    fn a_pcm_flow_gives_its_st2110_30_format() {
        let def = FlowDef::pcm(uuid::Uuid::nil(), "a", PcmFormat::S24Be, 48_000, 2, 48).unwrap();
        let f = audio_format_of(&def).unwrap();
        assert_eq!(
            (f.encoding, f.channels, f.sample_rate, f.samples_per_packet),
            (PcmEncoding::L24, 2, 48_000, 48)
        );
        let video = FlowDef::video(
            uuid::Uuid::nil(),
            "v",
            crate::format::VideoFormat::V210,
            64,
            32,
            Rational::new(25, 1),
            crate::format::InterlaceMode::Progressive,
        )
        .unwrap();
        assert!(matches!(
            audio_format_of(&video),
            Err(BridgeError::Unsupported(_))
        ));
    }
}
