//! ST 2110-22 compressed video in RTP with the RFC 9134 payload header (JPEG XS), sans-IO.
//! The same framing carries any other compressed frame (an H.264 access unit, a JPEG):
//! codestream packetization mode, one frame (or field) cut into packets in order.
//!
//! Payload header (RFC 9134 §4.3), 32 bits: T (1, sequential transmission), K (1,
//! packetization mode: 0 codestream), L (1, last packet of the frame), I (2, interlace:
//! 00 progressive, 10 first field, 11 second field), F counter (5, frame number mod 32),
//! SEP counter (11) and P counter (11): together the packet's 22-bit position in the frame.
//! The RTP marker is set on the last packet of a frame, the timestamp is on 90 kHz.

use std::collections::BTreeMap;

use super::rtp::{RtpHeader, RTP_HEADER_LEN};

/// Bytes of bookkeeping counted per packet held (map entry and vector).
const CHUNK_OVERHEAD: usize = 64;

/// Bytes of the RFC 9134 payload header.
pub const PAYLOAD_HEADER_LEN: usize = 4;

/// Most packets one frame may have: the SEP and P counters give 22 bits.
pub const MAX_PACKETS_PER_FRAME: usize = 1 << 22;

/// Which picture a frame's packets carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Picture {
    Progressive,
    FirstField,
    SecondField,
}

impl Picture {
    fn bits(self) -> u32 {
        match self {
            Picture::Progressive => 0,
            Picture::FirstField => 2,
            Picture::SecondField => 3,
        }
    }

    fn from_bits(b: u32) -> Self {
        match b {
            2 => Picture::FirstField,
            3 => Picture::SecondField,
            _ => Picture::Progressive,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rfc9134Error {
    #[error("packet size {0} leaves no room for data after the headers")]
    PacketSize(usize),
    #[error("a frame of {0} bytes needs more than 2^22 packets")]
    FrameTooLarge(usize),
    #[error("an empty frame has no codestream to send")]
    EmptyFrame,
}

/// The payload header's fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PayloadHeader {
    pub sequential: bool,
    /// Slice packetization mode (K); codestream mode when false.
    pub slice_mode: bool,
    pub last: bool,
    pub picture: Picture,
    pub frame_counter: u8,
    /// SEP and P counters joined: the packet's position in its frame.
    pub position: u32,
}

impl PayloadHeader {
    pub fn write(&self) -> [u8; PAYLOAD_HEADER_LEN] {
        let v = u32::from(self.sequential) << 31
            | u32::from(self.slice_mode) << 30
            | u32::from(self.last) << 29
            | self.picture.bits() << 27
            | u32::from(self.frame_counter & 0x1F) << 22
            | (self.position & 0x3F_FFFF);
        v.to_be_bytes()
    }

    pub fn parse(b: &[u8]) -> Option<Self> {
        let v = u32::from_be_bytes(b.get(..PAYLOAD_HEADER_LEN)?.try_into().ok()?);
        Some(Self {
            sequential: v >> 31 == 1,
            slice_mode: (v >> 30) & 1 == 1,
            last: (v >> 29) & 1 == 1,
            picture: Picture::from_bits((v >> 27) & 3),
            frame_counter: ((v >> 22) & 0x1F) as u8,
            position: v & 0x3F_FFFF,
        })
    }
}

/// Cuts compressed frames into RTP packets (codestream mode, sent in order: T = 1).
#[derive(Debug, Clone)]
pub struct Packetizer {
    payload_type: u8,
    ssrc: u32,
    sequence: u16,
    frame_counter: u8,
    /// Codestream bytes per packet.
    budget: usize,
    buf: Vec<u8>,
}

impl Packetizer {
    /// `max_packet`: the largest RTP packet to emit (headers included), e.g. 1400.
    pub fn new(payload_type: u8, ssrc: u32, max_packet: usize) -> Result<Self, Rfc9134Error> {
        let budget = max_packet.saturating_sub(RTP_HEADER_LEN + PAYLOAD_HEADER_LEN);
        if budget == 0 {
            return Err(Rfc9134Error::PacketSize(max_packet));
        }
        Ok(Self {
            payload_type,
            ssrc,
            sequence: 0,
            frame_counter: 0,
            budget,
            buf: Vec::with_capacity(max_packet),
        })
    }

    /// Starts the RTP sequence number at `sequence` (random, as RFC 3550 asks).
    pub fn set_sequence(&mut self, sequence: u16) {
        self.sequence = sequence;
    }

    /// Packets `frame` stamped `timestamp` (90 kHz); the last has L and the marker set.
    /// Returns the number of packets.
    pub fn packetize(
        &mut self,
        frame: &[u8],
        timestamp: u32,
        picture: Picture,
        emit: &mut dyn FnMut(&[u8]),
    ) -> Result<usize, Rfc9134Error> {
        if frame.is_empty() {
            return Err(Rfc9134Error::EmptyFrame);
        }
        let count = frame.len().div_ceil(self.budget);
        if count > MAX_PACKETS_PER_FRAME {
            return Err(Rfc9134Error::FrameTooLarge(frame.len()));
        }
        for (position, chunk) in frame.chunks(self.budget).enumerate() {
            let last = position + 1 == count;
            self.buf.clear();
            self.buf.resize(RTP_HEADER_LEN, 0);
            RtpHeader {
                marker: last,
                payload_type: self.payload_type,
                sequence: self.sequence,
                timestamp,
                ssrc: self.ssrc,
            }
            .write(
                (&mut self.buf[..RTP_HEADER_LEN])
                    .try_into()
                    .expect("12 bytes"),
            );
            self.buf.extend_from_slice(
                &PayloadHeader {
                    sequential: true,
                    slice_mode: false,
                    last,
                    picture,
                    frame_counter: self.frame_counter,
                    position: position as u32,
                }
                .write(),
            );
            self.buf.extend_from_slice(chunk);
            emit(&self.buf);
            self.sequence = self.sequence.wrapping_add(1);
        }
        self.frame_counter = (self.frame_counter + 1) & 0x1F;
        Ok(count)
    }
}

/// What the assembler saw.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AssemblerStats {
    pub packets: u64,
    pub frames_complete: u64,
    /// Frames given up with packets missing (never handed out as complete).
    pub frames_incomplete: u64,
    pub duplicates: u64,
    /// Packets of a frame already handed out or given up.
    pub late: u64,
    /// Packets that are not RFC 9134 codestream packets (too short, slice mode).
    pub malformed: u64,
    pub wrong_payload_type: u64,
}

/// A frame handed out by the assembler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameInfo {
    pub timestamp: u32,
    pub picture: Picture,
}

/// Puts frames back together: packets of a frame may come in any order; a frame is handed
/// out when its last packet and every one before it are in, and dropped (counted) when the
/// next frame starts without it being whole.
#[derive(Debug, Default)]
pub struct Assembler {
    payload_type: Option<u8>,
    frame: Option<Partial>,
    /// The timestamp of the last frame handed out or given up: its stragglers are late.
    done: Option<u32>,
    joined: Vec<u8>,
    stats: AssemblerStats,
    /// Bytes one frame may hold, to bound memory against a hostile stream.
    max_frame_bytes: usize,
}

#[derive(Debug)]
struct Partial {
    timestamp: u32,
    picture: Picture,
    chunks: BTreeMap<u32, Vec<u8>>,
    bytes: usize,
    /// Packets in the frame, once its last one came.
    count: Option<u32>,
}

impl Assembler {
    /// `max_frame_bytes`: larger frames are dropped as incomplete.
    pub fn new(payload_type: Option<u8>, max_frame_bytes: usize) -> Self {
        Self {
            payload_type,
            max_frame_bytes,
            ..Self::default()
        }
    }

    pub fn stats(&self) -> AssemblerStats {
        self.stats
    }

    /// Takes a datagram; whole frames go to `on_frame`.
    pub fn push(&mut self, packet: &[u8], on_frame: &mut dyn FnMut(&FrameInfo, &[u8])) {
        self.stats.packets += 1;
        let Ok((rtp, payload)) = RtpHeader::parse(packet) else {
            self.stats.malformed += 1;
            return;
        };
        if self.payload_type.is_some_and(|pt| pt != rtp.payload_type) {
            self.stats.wrong_payload_type += 1;
            return;
        }
        let Some(header) = PayloadHeader::parse(payload) else {
            self.stats.malformed += 1;
            return;
        };
        let data = &payload[PAYLOAD_HEADER_LEN..];
        if header.slice_mode || data.is_empty() {
            self.stats.malformed += 1;
            return;
        }
        if self.done == Some(rtp.timestamp) {
            self.stats.late += 1;
            return;
        }
        if let Some(f) = self.frame.as_ref().filter(|f| f.timestamp != rtp.timestamp) {
            // A new frame began: the one under way will not be completed.
            self.done = Some(f.timestamp);
            self.frame = None;
            self.stats.frames_incomplete += 1;
        }
        let frame = self.frame.get_or_insert_with(|| Partial {
            timestamp: rtp.timestamp,
            picture: header.picture,
            chunks: BTreeMap::new(),
            bytes: 0,
            count: None,
        });
        if frame.chunks.contains_key(&header.position) {
            self.stats.duplicates += 1;
            return;
        }
        // Each chunk costs its bytes and its bookkeeping, so tiny packets cannot make a
        // frame take far more memory than the bound.
        let cost = data.len() + CHUNK_OVERHEAD;
        if frame.bytes + cost > self.max_frame_bytes {
            self.done = Some(frame.timestamp);
            self.frame = None;
            self.stats.frames_incomplete += 1;
            return;
        }
        frame.bytes += cost;
        frame.chunks.insert(header.position, data.to_vec());
        if header.last || rtp.marker {
            frame.count = Some(header.position + 1);
        }
        let whole = frame.count.is_some_and(|n| {
            frame.chunks.len() as u64 == u64::from(n)
                && frame.chunks.keys().next_back() == Some(&(n - 1))
        });
        if whole {
            let frame = self.frame.take().expect("present");
            self.done = Some(frame.timestamp);
            self.joined.clear();
            for chunk in frame.chunks.values() {
                self.joined.extend_from_slice(chunk);
            }
            self.stats.frames_complete += 1;
            on_frame(
                &FrameInfo {
                    timestamp: frame.timestamp,
                    picture: frame.picture,
                },
                &self.joined,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn packets(frame: &[u8], ts: u32, max: usize) -> Vec<Vec<u8>> {
        let mut p = Packetizer::new(112, 7, max).unwrap();
        let mut out = Vec::new();
        p.packetize(frame, ts, Picture::Progressive, &mut |b| {
            out.push(b.to_vec())
        })
        .unwrap();
        out
    }

    fn assemble(pkts: &[Vec<u8>]) -> (Vec<Vec<u8>>, AssemblerStats) {
        let mut a = Assembler::new(Some(112), 1 << 24);
        let mut frames = Vec::new();
        for p in pkts {
            a.push(p, &mut |_, f| frames.push(f.to_vec()));
        }
        (frames, a.stats())
    }

    #[test]
    fn header_fields_round_trip() {
        let h = PayloadHeader {
            sequential: true,
            slice_mode: false,
            last: true,
            picture: Picture::SecondField,
            frame_counter: 31,
            position: 2048 * 3 + 17,
        };
        assert_eq!(PayloadHeader::parse(&h.write()), Some(h));
        // T=1, K=0, L=1, I=11, F=11111, SEP=3, P=17.
        assert_eq!(
            u32::from_be_bytes(h.write()),
            0b1011_1111_1100_0000_0001_1000_0001_0001
        );
    }

    #[test]
    fn a_frame_crosses_in_packets_with_marker_and_l_on_the_last() {
        let frame: Vec<u8> = (0..5000u32).map(|i| (i * 7) as u8).collect();
        let pkts = packets(&frame, 900, 1400);
        assert_eq!(pkts.len(), 4); // 1384 codestream bytes per packet
        for (i, p) in pkts.iter().enumerate() {
            let (rtp, payload) = RtpHeader::parse(p).unwrap();
            let h = PayloadHeader::parse(payload).unwrap();
            assert_eq!((rtp.marker, h.last, h.position), (i == 3, i == 3, i as u32));
        }
        let (frames, stats) = assemble(&pkts);
        assert_eq!(frames, vec![frame]);
        assert_eq!(stats.frames_complete, 1);
    }

    #[test]
    fn reordered_and_duplicated_packets_still_give_the_frame() {
        let frame: Vec<u8> = (0..9000u32).map(|i| (i * 3 + 1) as u8).collect();
        let mut pkts = packets(&frame, 1, 1000);
        pkts.swap(1, 4);
        pkts.insert(3, pkts[2].clone());
        let (frames, stats) = assemble(&pkts);
        assert_eq!(frames, vec![frame]);
        assert_eq!(stats.duplicates, 1);
    }

    #[test]
    fn a_lost_packet_makes_an_incomplete_frame_never_a_short_one() {
        let a: Vec<u8> = vec![1; 3000];
        let b: Vec<u8> = vec![2; 3000];
        let mut pkts = packets(&a, 100, 1000);
        pkts.remove(1);
        pkts.extend(packets(&b, 200, 1000));
        let (frames, stats) = assemble(&pkts);
        assert_eq!(frames, vec![b]);
        assert_eq!((stats.frames_complete, stats.frames_incomplete), (1, 1));
    }

    #[test]
    fn stragglers_of_a_finished_frame_are_late_not_a_new_frame() {
        let frame: Vec<u8> = vec![9; 3000];
        let mut pkts = packets(&frame, 7, 1000);
        pkts.push(pkts[0].clone());
        let (frames, stats) = assemble(&pkts);
        assert_eq!(frames, vec![frame]);
        assert_eq!((stats.late, stats.frames_incomplete), (1, 0));
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, failure_persistence: None, ..ProptestConfig::default() })]
        #[test]
        fn any_frame_round_trips(len in 1usize..20_000, max in 17usize..2000, seed in any::<u8>()) {
            let frame: Vec<u8> = (0..len).map(|i| (i as u8).wrapping_mul(seed | 1)).collect();
            let (frames, _) = assemble(&packets(&frame, 5, max));
            prop_assert_eq!(frames, vec![frame]);
        }

        #[test]
        fn garbage_never_panics(datagrams in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 0..50)) {
            let mut a = Assembler::new(None, 4096);
            for d in &datagrams {
                a.push(d, &mut |_, _| {});
            }
            prop_assert_eq!(a.stats().packets, datagrams.len() as u64);
        }
    }
}
