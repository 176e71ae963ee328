//! ST 2110-30 PCM audio in RTP (RFC 3190 L24, RFC 3551 L16): big-endian samples,
//! channels interleaved, one packet time per packet, the RTP timestamp counting samples.
//! Sans-IO. mcm's PCM grains already hold big-endian interleaved samples, so packets
//! are cut from them and joined into them without any conversion.

use std::collections::{BTreeMap, VecDeque};

use super::rtp::{RtpHeader, SequenceExtender, RTP_HEADER_LEN};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AudioError {
    #[error("{0}")]
    Config(String),
    #[error("{got} bytes is not whole sample periods of {frame} bytes")]
    Partial { got: usize, frame: usize },
}

/// Most payload bytes in one packet: what fits an Ethernet MTU with IP, UDP and RTP
/// headers (ST 2110-30 §6.2).
pub const MAX_PAYLOAD: usize = 1440;

/// Sample encoding on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PcmEncoding {
    L16,
    L24,
}

impl PcmEncoding {
    pub fn bytes(self) -> usize {
        match self {
            PcmEncoding::L16 => 2,
            PcmEncoding::L24 => 3,
        }
    }
    /// The SDP `rtpmap` encoding name.
    pub fn name(self) -> &'static str {
        match self {
            PcmEncoding::L16 => "L16",
            PcmEncoding::L24 => "L24",
        }
    }
}

/// An ST 2110-30 stream: encoding, channels, rate and packet time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AudioFormat {
    pub encoding: PcmEncoding,
    pub channels: u16,
    pub sample_rate: u32,
    /// Samples per channel in one packet (48 at 48 kHz and 1 ms, 6 at 125 µs).
    pub samples_per_packet: u32,
}

impl AudioFormat {
    /// `packet_time_us`: 1000, 125 (ST 2110-30 conformance levels A/B/C), 250, 333, 4000
    /// or 80, as MCM offers.
    pub fn new(
        encoding: PcmEncoding,
        channels: u16,
        sample_rate: u32,
        packet_time_us: u32,
    ) -> Result<Self, AudioError> {
        if !(1..=64).contains(&channels) {
            return Err(AudioError::Config(format!("{channels} channels: 1 to 64")));
        }
        if ![44_100, 48_000, 96_000].contains(&sample_rate) {
            return Err(AudioError::Config(format!(
                "sample rate {sample_rate}: 44100, 48000 or 96000"
            )));
        }
        let samples = match (sample_rate, packet_time_us) {
            (44_100, 1000) => 44,
            (_, 333) => sample_rate / 3000,
            (r, us) if (r as u64 * us as u64).is_multiple_of(1_000_000) => {
                (r as u64 * us as u64 / 1_000_000) as u32
            }
            _ => 0,
        };
        if samples == 0 {
            return Err(AudioError::Config(format!(
                "packet time {packet_time_us} µs at {sample_rate} Hz is not a whole number of samples"
            )));
        }
        Ok(Self {
            encoding,
            channels,
            sample_rate,
            samples_per_packet: samples,
        })
    }

    /// A format of `samples_per_packet` samples per channel in each packet (a flow's
    /// samples per grain), checked as [`AudioFormat::new`] checks.
    pub fn with_samples(
        encoding: PcmEncoding,
        channels: u16,
        sample_rate: u32,
        samples_per_packet: u32,
    ) -> Result<Self, AudioError> {
        let mut format = Self::new(encoding, channels, sample_rate, 1000)?;
        if samples_per_packet == 0 || samples_per_packet > sample_rate / 100 {
            return Err(AudioError::Config(format!(
                "{samples_per_packet} samples per packet at {sample_rate} Hz: 1 to 10 ms of samples"
            )));
        }
        format.samples_per_packet = samples_per_packet;
        format.check_packet_size()?;
        Ok(format)
    }

    /// Refuses packets beyond an Ethernet MTU's payload (ST 2110-30 keeps to 1440 bytes).
    fn check_packet_size(&self) -> Result<(), AudioError> {
        if self.packet_bytes() > MAX_PAYLOAD {
            return Err(AudioError::Config(format!(
                "{} channels of {} samples per packet make {} bytes: more than {MAX_PAYLOAD} per packet",
                self.channels,
                self.samples_per_packet,
                self.packet_bytes()
            )));
        }
        Ok(())
    }

    /// Bytes of one sample period (all channels).
    pub fn frame_bytes(&self) -> usize {
        self.encoding.bytes() * usize::from(self.channels)
    }

    /// Payload bytes of a full packet.
    pub fn packet_bytes(&self) -> usize {
        self.frame_bytes() * self.samples_per_packet as usize
    }
}

/// Cuts interleaved big-endian samples into packets of one packet time.
#[derive(Debug, Clone)]
pub struct AudioPacketizer {
    format: AudioFormat,
    payload_type: u8,
    ssrc: u32,
    sequence: u16,
    buf: Vec<u8>,
}

impl AudioPacketizer {
    pub fn new(format: AudioFormat, payload_type: u8, ssrc: u32) -> Self {
        Self {
            format,
            payload_type,
            ssrc,
            sequence: 0,
            buf: Vec::with_capacity(RTP_HEADER_LEN + format.packet_bytes()),
        }
    }

    /// Packets `samples` (whole sample periods; the last packet may be shorter), the first
    /// sample at RTP time `timestamp` (sample clock). Returns the timestamp after them.
    pub fn packetize(
        &mut self,
        samples: &[u8],
        timestamp: u32,
        emit: &mut dyn FnMut(&[u8]),
    ) -> Result<u32, AudioError> {
        let frame = self.format.frame_bytes();
        if !samples.len().is_multiple_of(frame) {
            return Err(AudioError::Partial {
                got: samples.len(),
                frame,
            });
        }
        let mut ts = timestamp;
        for chunk in samples.chunks(self.format.packet_bytes()) {
            let header = RtpHeader {
                marker: false,
                payload_type: self.payload_type,
                sequence: self.sequence,
                timestamp: ts,
                ssrc: self.ssrc,
            };
            self.buf.clear();
            self.buf.resize(RTP_HEADER_LEN, 0);
            header.write((&mut self.buf[..RTP_HEADER_LEN]).try_into().expect("12"));
            self.buf.extend_from_slice(chunk);
            emit(&self.buf);
            self.sequence = self.sequence.wrapping_add(1);
            ts = ts.wrapping_add((chunk.len() / frame) as u32);
        }
        Ok(ts)
    }
}

/// Counters of an audio receiver.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AudioStats {
    pub packets: u64,
    /// Packets never received within the reorder window (their time filled with silence).
    pub lost: u64,
    pub duplicates: u64,
    pub late: u64,
    pub malformed: u64,
    pub wrong_payload_type: u64,
    /// The stream started over: a new SSRC, or a sequence jump far beyond the reorder
    /// window (a sender restarting). Counted, never filled with silence.
    pub restarts: u64,
}

/// Sequence jumps (forward or back) beyond this many packets start the stream over rather
/// than count as loss or duplicates: 100 ms at 1 ms packets, at least the reorder window.
const RESTART_GAP: u64 = 100;

/// Puts packets back in order (within `window` packets), drops duplicates, and hands out
/// samples in order; a packet that never comes is replaced by silence of the expected
/// length and counted, so the sample clock never slips.
#[derive(Debug)]
pub struct AudioDepacketizer {
    format: AudioFormat,
    payload_type: Option<u8>,
    window: usize,
    sequences: SequenceExtender,
    ssrc: Option<u32>,
    next: Option<u64>,
    pending: BTreeMap<u64, (u32, Vec<u8>)>,
    /// Recently given up as lost: if they come after all, they are late, not duplicates.
    given_up: VecDeque<u64>,
    stats: AudioStats,
}

impl AudioDepacketizer {
    pub fn new(format: AudioFormat, payload_type: Option<u8>, window: usize) -> Self {
        Self {
            format,
            payload_type,
            window: window.max(1),
            sequences: SequenceExtender::default(),
            ssrc: None,
            next: None,
            pending: BTreeMap::new(),
            given_up: VecDeque::new(),
            stats: AudioStats::default(),
        }
    }

    pub fn stats(&self) -> AudioStats {
        self.stats
    }

    /// Takes a datagram; samples ready in order go to `on_samples(rtp_timestamp, bytes)`.
    pub fn push(&mut self, packet: &[u8], on_samples: &mut dyn FnMut(u32, &[u8])) {
        self.stats.packets += 1;
        let Ok((rtp, payload)) = RtpHeader::parse(packet) else {
            self.stats.malformed += 1;
            return;
        };
        if self.payload_type.is_some_and(|pt| pt != rtp.payload_type) {
            self.stats.wrong_payload_type += 1;
            return;
        }
        let frame = self.format.frame_bytes();
        if payload.is_empty() || !payload.len().is_multiple_of(frame) {
            self.stats.malformed += 1;
            return;
        }
        let mut ext = self.sequences.extend(rtp.sequence);
        let gap = (self.window as u64).max(RESTART_GAP);
        let restarted = self.ssrc.is_some_and(|s| s != rtp.ssrc)
            || self
                .next
                .is_some_and(|n| ext > n.saturating_add(gap) || ext.saturating_add(gap) < n);
        if restarted {
            // Hand out what is held (its own gaps filled), then follow the new numbers.
            self.drain(true, on_samples);
            self.stats.restarts += 1;
            self.sequences.reset();
            self.pending.clear();
            self.given_up.clear();
            self.next = None;
            ext = self.sequences.extend(rtp.sequence);
        }
        self.ssrc = Some(rtp.ssrc);
        let next = *self.next.get_or_insert(ext);
        if ext < next {
            if self.given_up.contains(&ext) {
                self.stats.late += 1;
            } else {
                self.stats.duplicates += 1;
            }
            return;
        }
        if self.pending.contains_key(&ext) {
            self.stats.duplicates += 1;
            return;
        }
        self.pending.insert(ext, (rtp.timestamp, payload.to_vec()));
        self.drain(false, on_samples);
    }

    /// Hands out everything still held (end of stream), filling gaps with silence.
    pub fn flush(&mut self, on_samples: &mut dyn FnMut(u32, &[u8])) {
        self.drain(true, on_samples);
    }

    fn drain(&mut self, all: bool, on_samples: &mut dyn FnMut(u32, &[u8])) {
        let Some(mut next) = self.next else { return };
        while let Some((&first, _)) = self.pending.first_key_value() {
            if first == next {
                let (ts, data) = self.pending.remove(&first).expect("present");
                on_samples(ts, &data);
                next += 1;
            } else if all || self.pending.len() > self.window {
                // `next` is lost: silence of a full packet in its place.
                self.stats.lost += 1;
                if self.given_up.len() == 64 {
                    self.given_up.pop_front();
                }
                self.given_up.push_back(next);
                let (ts_after, _) = self.pending[&first];
                let gap = first - next;
                let samples = self.format.samples_per_packet;
                let ts = ts_after.wrapping_sub(samples.wrapping_mul(gap as u32));
                on_samples(ts, &vec![0u8; self.format.packet_bytes()]);
                next += 1;
            } else {
                break;
            }
        }
        self.next = Some(next);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(f: &AudioFormat, periods: usize) -> Vec<u8> {
        (0..periods * f.frame_bytes())
            .map(|i| (i * 37 % 253) as u8)
            .collect()
    }

    #[test]
    fn packet_sizes_follow_the_packet_time() {
        let f = AudioFormat::new(PcmEncoding::L24, 2, 48_000, 1000).unwrap();
        assert_eq!((f.samples_per_packet, f.packet_bytes()), (48, 288));
        let f = AudioFormat::new(PcmEncoding::L24, 8, 48_000, 125).unwrap();
        assert_eq!((f.samples_per_packet, f.packet_bytes()), (6, 144));
        let f = AudioFormat::new(PcmEncoding::L16, 2, 96_000, 1000).unwrap();
        assert_eq!(f.samples_per_packet, 96);
        assert!(AudioFormat::new(PcmEncoding::L24, 2, 48_000, 7).is_err());
        assert!(AudioFormat::new(PcmEncoding::L24, 0, 48_000, 1000).is_err());
    }

    #[test]
    fn round_trip_with_reordering_duplicates_loss_and_a_short_last_packet() {
        let f = AudioFormat::new(PcmEncoding::L24, 2, 48_000, 1000).unwrap();
        let mut p = AudioPacketizer::new(f, 97, 1);
        let samples = tone(&f, 48 * 10 + 5);
        let mut pk = Vec::new();
        let end = p
            .packetize(&samples, 1000, &mut |b| pk.push(b.to_vec()))
            .unwrap();
        assert_eq!((pk.len(), end), (11, 1000 + 485));
        assert_eq!(
            pk[10].len(),
            RTP_HEADER_LEN + 5 * 6,
            "the last packet is short, not padded"
        );
        // In order except 3 <-> 4, one duplicate: every sample back, in order.
        let mut order: Vec<usize> = (0..11).collect();
        order.swap(3, 4);
        order.insert(6, 5);
        let mut d = AudioDepacketizer::new(f, Some(97), 4);
        let mut out = Vec::new();
        for &i in &order {
            d.push(&pk[i], &mut |_, s| out.extend_from_slice(s));
        }
        d.flush(&mut |_, s| out.extend_from_slice(s));
        assert!(out == samples);
        assert_eq!((d.stats().duplicates, d.stats().lost), (1, 0));
        // Packet 2 lost: its millisecond is silence, the rest in place.
        let mut d = AudioDepacketizer::new(f, Some(97), 4);
        let mut out = Vec::new();
        for (i, b) in pk.iter().enumerate() {
            if i != 2 {
                d.push(b, &mut |_, s| out.extend_from_slice(s));
            }
        }
        d.flush(&mut |_, s| out.extend_from_slice(s));
        assert_eq!(out.len(), samples.len());
        assert!(out[2 * 288..3 * 288].iter().all(|&b| b == 0));
        assert!(out[..2 * 288] == samples[..2 * 288] && out[3 * 288..] == samples[3 * 288..]);
        assert_eq!(d.stats().lost, 1);
    }

    /// A sender that restarts (sequence back to 0, or far ahead, or a new SSRC) starts the
    /// stream over: counted, with no flood of silence and no run of "duplicates".
    #[test]
    fn a_restarted_sender_starts_the_stream_over() {
        let f = AudioFormat::new(PcmEncoding::L24, 2, 48_000, 1000).unwrap();
        let samples = tone(&f, 48 * 10);
        let packets = |seq: u16, ssrc: u32| {
            let mut p = AudioPacketizer::new(f, 97, ssrc);
            p.sequence = seq;
            let mut out = Vec::new();
            p.packetize(&samples, 0, &mut |b| out.push(b.to_vec()))
                .unwrap();
            out
        };
        for (second, what) in [
            (packets(0, 1), "sequence back to 0"),
            (packets(30_000, 1), "sequence 25 000 ahead"),
            (packets(5_010, 2), "new SSRC"),
        ] {
            let mut d = AudioDepacketizer::new(f, Some(97), 8);
            let mut out = Vec::new();
            for p in packets(5_000, 1).iter().chain(&second) {
                d.push(p, &mut |_, b| out.extend_from_slice(b));
            }
            d.flush(&mut |_, b| out.extend_from_slice(b));
            let stats = d.stats();
            assert_eq!(
                (stats.restarts, stats.lost, stats.duplicates),
                (1, 0, 0),
                "{what}"
            );
            assert_eq!(
                out.len(),
                2 * samples.len(),
                "{what}: every sample, no silence added"
            );
        }
    }
}
