//! ST 2110-20 uncompressed video in RTP, RFC 4175: pgroups, the packetizer and the frame
//! assembler. Sans-IO: packets in, frames out (and the reverse), no sockets, no clocks.
//!
//! Payload (RFC 4175 §4.3): a 16-bit extended sequence number (the high half of the
//! sender's 32-bit sequence number), one or more 6-byte sample row data (SRD) headers
//! (length in bytes, F = second field, line number, C = another SRD follows, offset in
//! pixels), then the segments in the same order. Segments never cross a line.

use super::rtp::{RtpError, RtpHeader, SequenceExtender, RTP_HEADER_LEN};

const ESN_LEN: usize = 2;
const SRD_LEN: usize = 6;
/// ST 2110-20 block packing mode payload: 7 blocks of 180 octets.
pub const BPM_PAYLOAD: usize = 1260;
/// The RTP packet size MTL and most ST 2110 senders aim for (1460-byte UDP payload
/// standard limit minus headroom).
pub const DEFAULT_PACKET_SIZE: usize = 1352;
/// ST 2110-10's standard UDP size limit: the largest UDP payload any network carries.
pub const STANDARD_UDP_SIZE: usize = 1460;
/// ST 2110-10's extended UDP size limit (jumbo frames, signalled `MAXUDP=8960`): the
/// largest RTP packet a sender using it may send.
pub const EXTENDED_UDP_SIZE: usize = 8960;

/// The UDP payload sizes ST 2110-10 allows a sender.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UdpSize {
    /// Up to [`STANDARD_UDP_SIZE`] bytes (any network): packets of [`DEFAULT_PACKET_SIZE`].
    #[default]
    Standard,
    /// Up to [`EXTENDED_UDP_SIZE`] bytes, on networks with a 9000-byte MTU: about 6.6
    /// times fewer packets a frame, so fewer bursts to pace and system calls to make.
    Extended,
}

impl UdpSize {
    /// The RTP packet size a packetizer aims for.
    pub fn packet_size(self) -> usize {
        match self {
            UdpSize::Standard => DEFAULT_PACKET_SIZE,
            UdpSize::Extended => EXTENDED_UDP_SIZE,
        }
    }

    /// The size for a `MAXUDP` value (ST 2110-10): 1460 or 8960, nothing else.
    pub fn from_max_udp(max_udp: u64) -> Option<Self> {
        match max_udp {
            m if m == STANDARD_UDP_SIZE as u64 => Some(UdpSize::Standard),
            m if m == EXTENDED_UDP_SIZE as u64 => Some(UdpSize::Extended),
            _ => None,
        }
    }

    /// The SDP `MAXUDP` value to signal, when not the standard limit.
    pub fn sdp_max_udp(self) -> Option<usize> {
        match self {
            UdpSize::Standard => None,
            UdpSize::Extended => Some(EXTENDED_UDP_SIZE),
        }
    }
}

/// Errors of the video payload format (configuration; received garbage is only counted).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rfc4175Error {
    #[error("unsupported sampling/depth {0}")]
    Unsupported(String),
    #[error("invalid video geometry: {0}")]
    Geometry(String),
    #[error("frame of {got} bytes, the geometry needs {want}")]
    FrameSize { got: usize, want: usize },
    #[error("packet size {0} leaves no room for one pgroup")]
    PacketSize(usize),
}

/// Colour sampling (ST 2110-20 §7.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sampling {
    YCbCr422,
    YCbCr444,
    /// Pgroups span two lines (RFC 4175 §4.3: Y'00 Y'01 Y'10 Y'11 Cb00 Cr00 at 8 bits); SRD
    /// line numbers are those of the upper line, always even.
    YCbCr420,
    Rgb,
}

impl Sampling {
    /// The SDP `sampling` value.
    pub fn name(self) -> &'static str {
        match self {
            Sampling::YCbCr422 => "YCbCr-4:2:2",
            Sampling::YCbCr444 => "YCbCr-4:4:4",
            Sampling::YCbCr420 => "YCbCr-4:2:0",
            Sampling::Rgb => "RGB",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [
            Sampling::YCbCr422,
            Sampling::YCbCr444,
            Sampling::YCbCr420,
            Sampling::Rgb,
        ]
        .into_iter()
        .find(|x| x.name().eq_ignore_ascii_case(s.trim()))
    }
}

/// A pixel group: the smallest block of pixels that ends on an octet boundary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pgroup {
    pub bytes: usize,
    /// Pixels along a line (the SRD offset counts these).
    pub pixels: usize,
    /// Picture lines it spans: 2 for 4:2:0, else 1.
    pub lines: usize,
}

/// Pgroup sizes of RFC 4175 §4.4 / ST 2110-20 §6.2 for the samplings carried here (4:2:0:
/// 6 bytes for 2x2 pixels at 8 bits, 15 for 4x2 at 10 bits).
pub fn pgroup(sampling: Sampling, depth: u8) -> Option<Pgroup> {
    let (bytes, pixels, lines) = match (sampling, depth) {
        (Sampling::YCbCr422, 8) => (4, 2, 1),
        (Sampling::YCbCr422, 10) => (5, 2, 1),
        (Sampling::YCbCr422, 12) => (6, 2, 1),
        (Sampling::YCbCr420, 8) => (6, 2, 2),
        (Sampling::YCbCr420, 10) => (15, 4, 2),
        (Sampling::YCbCr444 | Sampling::Rgb, 8) => (3, 1, 1),
        (Sampling::YCbCr444 | Sampling::Rgb, 10) => (15, 4, 1),
        (Sampling::YCbCr444 | Sampling::Rgb, 12) => (9, 2, 1),
        _ => return None,
    };
    Some(Pgroup {
        bytes,
        pixels,
        lines,
    })
}

/// The picture a stream carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VideoGeometry {
    pub width: u32,
    pub height: u32,
    pub sampling: Sampling,
    pub depth: u8,
    /// Two fields per frame, each sent as its own RTP "frame" (F bit set on the second).
    pub interlaced: bool,
    pgroup: Pgroup,
}

impl VideoGeometry {
    pub fn new(
        width: u32,
        height: u32,
        sampling: Sampling,
        depth: u8,
        interlaced: bool,
    ) -> Result<Self, Rfc4175Error> {
        let pg = pgroup(sampling, depth).ok_or_else(|| {
            Rfc4175Error::Unsupported(format!("{} depth {depth}", sampling.name()))
        })?;
        if width == 0 || height == 0 || width > 32767 || height > 32767 {
            return Err(Rfc4175Error::Geometry(format!(
                "{width}x{height}: 1 to 32767 pixels each way (15-bit line and offset fields)"
            )));
        }
        if !(width as usize).is_multiple_of(pg.pixels) {
            return Err(Rfc4175Error::Geometry(format!(
                "width {width} is not a multiple of the pgroup's {} pixels",
                pg.pixels
            )));
        }
        if interlaced && !height.is_multiple_of(2) {
            return Err(Rfc4175Error::Geometry(format!(
                "interlaced height {height} is odd"
            )));
        }
        let field_lines = if interlaced { height / 2 } else { height };
        if !(field_lines as usize).is_multiple_of(pg.lines) {
            return Err(Rfc4175Error::Geometry(format!(
                "{field_lines} lines per {} is not a multiple of the pgroup's {} lines",
                if interlaced { "field" } else { "frame" },
                pg.lines
            )));
        }
        Ok(Self {
            width,
            height,
            sampling,
            depth,
            interlaced,
            pgroup: pg,
        })
    }

    pub fn pgroup(&self) -> Pgroup {
        self.pgroup
    }

    /// Bytes of one row of pgroups on the wire (one line, or two for 4:2:0).
    pub fn line_bytes(&self) -> usize {
        self.width as usize / self.pgroup.pixels * self.pgroup.bytes
    }

    /// Rows of pgroups in one RTP frame (the frame, or one field): its lines, halved for
    /// 4:2:0. SRD line numbers are rows times the pgroup's lines.
    pub fn lines(&self) -> u32 {
        let lines = if self.interlaced {
            self.height / 2
        } else {
            self.height
        };
        lines / self.pgroup.lines as u32
    }

    /// Bytes of one RTP frame (frame or field), lines tightly packed.
    pub fn frame_bytes(&self) -> usize {
        self.line_bytes() * self.lines() as usize
    }
}

/// How payloads are cut (ST 2110-20 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PackingMode {
    /// `PM=2110GPM`: packets as large as the packet size allows, crossing lines.
    General,
    /// `PM=2110BPM`: 1260-octet payloads (the last of a frame shorter), crossing lines.
    Block,
    /// General packing that never crosses a line: each line in equal packets.
    SingleLine,
}

impl PackingMode {
    /// The SDP `PM` value (single-line packing is a kind of GPM).
    pub fn sdp_name(self) -> &'static str {
        match self {
            PackingMode::Block => "2110BPM",
            _ => "2110GPM",
        }
    }
}

/// Cuts frames into RTP packets.
#[derive(Debug, Clone)]
pub struct Packetizer {
    geometry: VideoGeometry,
    mode: PackingMode,
    payload_type: u8,
    ssrc: u32,
    /// The 32-bit sequence number of the next packet (low half in RTP, high half in the ESN).
    sequence: u32,
    /// Data bytes per packet (a multiple of the pgroup; two pgroups for GPM).
    budget: usize,
    max_packet: usize,
    /// Headers of the packet being built.
    buf: Vec<u8>,
    /// Headers and data joined, for [`Packetizer::packetize`].
    joined: Vec<u8>,
    /// The segments of the packet being built (offset, length).
    segments: Vec<(usize, usize)>,
}

impl Packetizer {
    /// `max_packet`: the largest RTP packet (header included) to emit, e.g.
    /// [`DEFAULT_PACKET_SIZE`]; block mode uses 1260-octet payloads whatever it is.
    pub fn new(
        geometry: VideoGeometry,
        mode: PackingMode,
        payload_type: u8,
        ssrc: u32,
        max_packet: usize,
    ) -> Result<Self, Rfc4175Error> {
        let pg = geometry.pgroup.bytes;
        let room = max_packet.saturating_sub(RTP_HEADER_LEN + ESN_LEN + 2 * SRD_LEN);
        let budget = match mode {
            PackingMode::Block => BPM_PAYLOAD / pg * pg,
            PackingMode::General => room / (2 * pg) * (2 * pg),
            PackingMode::SingleLine => {
                let room = max_packet.saturating_sub(RTP_HEADER_LEN + ESN_LEN + SRD_LEN) / pg * pg;
                if room == 0 {
                    0
                } else {
                    // Equal packets per line, each a whole number of pgroups. Packets of
                    // one size throughout (a count that divides the line's pgroups) let
                    // the kernel take a frame in GSO runs of 64; a shorter last packet per
                    // line ends a run at every line (3 packets a call at 1280 wide). Up
                    // to twice the packets are worth that.
                    let line = geometry.line_bytes();
                    let pgroups = line / pg;
                    let fewest = line.div_ceil(room);
                    let per_line = (fewest..=2 * fewest)
                        .find(|k| pgroups.is_multiple_of(*k))
                        .unwrap_or(fewest);
                    pgroups.div_ceil(per_line) * pg
                }
            }
        };
        if budget == 0 {
            return Err(Rfc4175Error::PacketSize(max_packet));
        }
        Ok(Self {
            geometry,
            mode,
            payload_type,
            ssrc,
            sequence: 0,
            budget,
            max_packet,
            buf: Vec::with_capacity(RTP_HEADER_LEN + ESN_LEN + 8 * SRD_LEN),
            joined: Vec::with_capacity(max_packet.max(BPM_PAYLOAD + 64)),
            segments: Vec::with_capacity(8),
        })
    }

    pub fn geometry(&self) -> &VideoGeometry {
        &self.geometry
    }

    /// Starts the 32-bit sequence number at `sequence` (e.g. random, as RFC 3550 asks).
    pub fn set_sequence(&mut self, sequence: u32) {
        self.sequence = sequence;
    }

    /// Packets one frame (or, interlaced, one field; `second_field` sets the F bit) needs.
    pub fn packets_per_frame(&self) -> usize {
        let line = self.geometry.line_bytes();
        match self.mode {
            PackingMode::SingleLine => line.div_ceil(self.budget) * self.geometry.lines() as usize,
            PackingMode::Block => self.geometry.frame_bytes().div_ceil(self.budget),
            // Packets with two SRDs carry a little less: count them.
            PackingMode::General => {
                let (want, mut pos, mut count) = (self.geometry.frame_bytes(), 0, 0);
                let mut segments = Vec::with_capacity(8);
                while pos < want {
                    pos = self.gather(pos, &mut segments);
                    count += 1;
                }
                count
            }
        }
    }

    /// Gathers the segments of the packet that starts at byte `pos` of the frame into
    /// `segments` (offset, length): up to the budget, each within a line. Returns where
    /// the next packet starts.
    fn gather(&self, mut pos: usize, segments: &mut Vec<(usize, usize)>) -> usize {
        let want = self.geometry.frame_bytes();
        let line_bytes = self.geometry.line_bytes();
        let pg = self.geometry.pgroup;
        segments.clear();
        let mut left = self.budget;
        let mut header = RTP_HEADER_LEN + ESN_LEN;
        while left > 0 && pos < want {
            let in_line = line_bytes - pos % line_bytes;
            let mut seg = left.min(in_line);
            if !segments.is_empty() {
                if self.mode == PackingMode::SingleLine {
                    break;
                }
                if self.mode == PackingMode::General {
                    // Each further SRD costs 6 bytes of the packet: shrink to fit.
                    let used = header + SRD_LEN + (self.budget - left);
                    let avail = self.max_packet.saturating_sub(used) / pg.bytes * pg.bytes;
                    if avail == 0 {
                        break;
                    }
                    seg = seg.min(avail);
                }
            }
            segments.push((pos, seg));
            header += SRD_LEN;
            left -= seg;
            pos += seg;
        }
        pos
    }

    /// Cuts `frame` (lines of pgroups, tightly packed: [`VideoGeometry::frame_bytes`])
    /// into packets stamped `timestamp` (90 kHz) and hands each to `emit`, the last with
    /// the marker bit. Returns the number of packets.
    pub fn packetize(
        &mut self,
        frame: &[u8],
        timestamp: u32,
        second_field: bool,
        emit: &mut dyn FnMut(&[u8]),
    ) -> Result<usize, Rfc4175Error> {
        let mut packet = std::mem::take(&mut self.joined);
        let result = self.packetize_parts(frame, timestamp, second_field, &mut |header, data| {
            packet.clear();
            packet.extend_from_slice(header);
            packet.extend_from_slice(data);
            emit(&packet);
        });
        self.joined = packet;
        result
    }

    /// As [`packetize`](Self::packetize), but each packet comes as its headers (RTP,
    /// extended sequence number, SRDs) and its data, a stretch of `frame` itself: a sender
    /// can hand both to the kernel without copying the data (the segments of one packet
    /// are consecutive in a tightly packed frame).
    pub fn packetize_parts<'f>(
        &mut self,
        frame: &'f [u8],
        timestamp: u32,
        second_field: bool,
        emit: &mut dyn FnMut(&[u8], &'f [u8]),
    ) -> Result<usize, Rfc4175Error> {
        let want = self.geometry.frame_bytes();
        if frame.len() != want {
            return Err(Rfc4175Error::FrameSize {
                got: frame.len(),
                want,
            });
        }
        let mut header = std::mem::take(&mut self.buf);
        let mut pos = 0usize;
        let mut count = 0;
        while pos < want {
            header.clear();
            let data = self.next_packet(pos, timestamp, second_field, &mut header);
            pos = data.end;
            emit(&header, &frame[data]);
            count += 1;
        }
        self.buf = header;
        Ok(count)
    }

    /// One packet of a frame (or field) at a time, for a sender that makes the frame's
    /// bytes only as it sends them: appends the headers (RTP, extended sequence number,
    /// SRDs) of the packet whose data starts at byte `pos` of the tightly packed frame to
    /// `header` and returns the range of frame bytes it carries; the next packet starts at
    /// its end. The frame is done when that end is [`VideoGeometry::frame_bytes`].
    pub fn next_packet(
        &mut self,
        pos: usize,
        timestamp: u32,
        second_field: bool,
        header: &mut Vec<u8>,
    ) -> std::ops::Range<usize> {
        let line_bytes = self.geometry.line_bytes();
        let pg = self.geometry.pgroup;
        let mut segments = std::mem::take(&mut self.segments);
        let end = self.gather(pos, &mut segments);
        let rtp = RtpHeader {
            marker: end >= self.geometry.frame_bytes(),
            payload_type: self.payload_type,
            sequence: self.sequence as u16,
            timestamp,
            ssrc: self.ssrc,
        };
        let at = header.len();
        header.resize(at + RTP_HEADER_LEN, 0);
        rtp.write(
            (&mut header[at..at + RTP_HEADER_LEN])
                .try_into()
                .expect("12 bytes"),
        );
        header.extend_from_slice(&((self.sequence >> 16) as u16).to_be_bytes());
        for (i, &(at, len)) in segments.iter().enumerate() {
            let line = (at / line_bytes * pg.lines) as u16;
            let offset = ((at % line_bytes) / pg.bytes * pg.pixels) as u16;
            let more = i + 1 < segments.len();
            header.extend_from_slice(&(len as u16).to_be_bytes());
            header.extend_from_slice(&(line | (u16::from(second_field) << 15)).to_be_bytes());
            header.extend_from_slice(&(offset | (u16::from(more) << 15)).to_be_bytes());
        }
        let start = segments.first().map_or(pos, |&(at, _)| at);
        self.segments = segments;
        self.sequence = self.sequence.wrapping_add(1);
        start..end
    }
}

/// What the assembler saw, for the stream's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReceiverStats {
    pub packets: u64,
    pub frames_complete: u64,
    /// Frames given up with data missing (lost packets): never delivered as complete.
    pub frames_incomplete: u64,
    pub duplicates: u64,
    /// Packets for a frame already delivered or given up.
    pub late: u64,
    pub wrong_payload_type: u64,
    pub wrong_ssrc: u64,
    /// Not RTP, or SRDs that do not fit the geometry: dropped whole.
    pub malformed: u64,
    /// A new SSRC (the sender restarted): the stream starts over.
    pub sender_restarts: u64,
}

/// A frame handed out by the assembler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameInfo {
    /// RTP timestamp (90 kHz).
    pub timestamp: u32,
    pub second_field: bool,
    /// Every byte arrived. Incomplete frames are handed out only so the caller can count
    /// or conceal them; missing bytes still hold an earlier frame's (zero before any), so
    /// a frame is never cleared: that would cost a pass over it per frame.
    pub complete: bool,
    pub bytes_received: usize,
}

/// Where an [`Assembler`] puts the bytes of the (at most two) frames in flight: its own
/// frame buffers ([`Assembler::push`]), or the caller's, such as flow grains written in
/// place with any conversion done packet by packet ([`Assembler::push_into`]).
pub trait FrameStore {
    /// Frame slot `slot` (0 or 1) starts a frame.
    fn open(&mut self, slot: usize, timestamp: u32, second_field: bool);
    /// Bytes of wire pgroup row `row` (the SRD line over the pgroup's lines) from byte
    /// `offset` of the row on: RFC 4175 §4.3 pgroups, within the row. Arrives in any
    /// order; a frame is complete once every byte arrived.
    fn write(&mut self, slot: usize, row: usize, offset: usize, data: &[u8]);
    /// The frame in `slot` is done: complete, or given up (`info.complete` false).
    fn finish(&mut self, slot: usize, info: &FrameInfo);
}

#[derive(Debug)]
struct Slot {
    open: bool,
    timestamp: u32,
    second_field: bool,
    /// Distinct bytes received (each pgroup counted once, see `covered`).
    received: usize,
    /// One bit per pgroup of the frame: set once its bytes arrived. Overlapping SRDs in
    /// different packets (a broken or hostile sender) would otherwise count bytes twice and
    /// pass a frame with holes as complete.
    covered: Vec<u64>,
}

/// [`Assembler::push`]'s store: a frame buffer per slot, handed to a callback when done.
/// Missing bytes of an incomplete frame still hold an earlier frame's (zero before any).
struct Buffers<'a> {
    data: &'a mut [Vec<u8>; 2],
    on_frame: &'a mut dyn FnMut(&FrameInfo, &[u8]),
    line_bytes: usize,
    frame_bytes: usize,
}

impl FrameStore for Buffers<'_> {
    fn open(&mut self, slot: usize, _: u32, _: bool) {
        // Sized on first use, so assemblers fed through `push_into` never allocate one.
        self.data[slot].resize(self.frame_bytes, 0);
    }
    fn write(&mut self, slot: usize, row: usize, offset: usize, data: &[u8]) {
        let at = row * self.line_bytes + offset;
        self.data[slot][at..at + data.len()].copy_from_slice(data);
    }
    fn finish(&mut self, slot: usize, info: &FrameInfo) {
        (self.on_frame)(info, &self.data[slot]);
    }
}

/// Sets bits `start..start + count` of `bits`; returns how many were clear before.
fn mark(bits: &mut [u64], start: usize, count: usize) -> usize {
    let mut newly = 0;
    let (mut at, end) = (start, start + count);
    while at < end {
        let (word, bit) = (at / 64, at % 64);
        let n = (64 - bit).min(end - at);
        let mask = if n == 64 {
            u64::MAX
        } else {
            ((1u64 << n) - 1) << bit
        };
        newly += (mask & !bits[word]).count_ones() as usize;
        bits[word] |= mask;
        at += n;
    }
    newly
}

/// Which packets to take.
#[derive(Debug, Clone, Copy)]
pub struct AssemblerConfig {
    pub geometry: VideoGeometry,
    /// Only this payload type (others counted as wrong).
    pub payload_type: Option<u8>,
    /// Only this SSRC; `None` follows the first one seen and treats a new one as the
    /// sender restarting.
    pub ssrc: Option<u32>,
}

/// Rebuilds frames from packets: reordering within one frame's distance, duplicates
/// dropped, loss detected (a frame is complete when all its bytes arrived), garbage
/// counted and dropped, the 16-bit sequence number wrapping.
#[derive(Debug)]
pub struct Assembler {
    config: AssemblerConfig,
    slots: [Slot; 2],
    sequences: SequenceExtender,
    /// Extended sequence numbers seen recently, by `ext % len`: duplicates.
    seen: Vec<u64>,
    ssrc: Option<u32>,
    /// Timestamp of the newest frame delivered or given up (older packets are late).
    last_done: Option<u32>,
    stats: ReceiverStats,
    /// Frame buffers of [`Self::push`] (empty until used).
    buffers: [Vec<u8>; 2],
}

const SEEN_WINDOW: usize = 8192;

/// True when RTP timestamp `a` is after `b` (modulo 2^32).
fn after(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) > 0
}

impl Assembler {
    pub fn new(config: AssemblerConfig) -> Self {
        let slot = || Slot {
            open: false,
            timestamp: 0,
            second_field: false,
            received: 0,
            covered: vec![
                0;
                (config.geometry.frame_bytes() / config.geometry.pgroup.bytes)
                    .div_ceil(64)
            ],
        };
        Self {
            config,
            slots: [slot(), slot()],
            sequences: SequenceExtender::default(),
            seen: vec![u64::MAX; SEEN_WINDOW],
            ssrc: config.ssrc,
            last_done: None,
            stats: ReceiverStats::default(),
            buffers: [Vec::new(), Vec::new()],
        }
    }

    pub fn stats(&self) -> ReceiverStats {
        self.stats
    }

    /// Takes one datagram into the assembler's own frame buffers. Completed frames (and
    /// frames given up) go to `on_frame`.
    pub fn push(&mut self, packet: &[u8], on_frame: &mut dyn FnMut(&FrameInfo, &[u8])) {
        let mut data = std::mem::take(&mut self.buffers);
        self.push_into(packet, &mut self.buffers_store(&mut data, on_frame));
        self.buffers = data;
    }

    /// Gives up every frame in flight (end of stream, or a restarted sender).
    pub fn flush(&mut self, on_frame: &mut dyn FnMut(&FrameInfo, &[u8])) {
        let mut data = std::mem::take(&mut self.buffers);
        self.flush_into(&mut self.buffers_store(&mut data, on_frame));
        self.buffers = data;
    }

    fn buffers_store<'a>(
        &self,
        data: &'a mut [Vec<u8>; 2],
        on_frame: &'a mut dyn FnMut(&FrameInfo, &[u8]),
    ) -> Buffers<'a> {
        Buffers {
            data,
            on_frame,
            line_bytes: self.config.geometry.line_bytes(),
            frame_bytes: self.config.geometry.frame_bytes(),
        }
    }

    /// Takes one datagram, its bytes written to `store`.
    pub fn push_into(&mut self, packet: &[u8], store: &mut dyn FrameStore) {
        self.stats.packets += 1;
        let (rtp, payload) = match RtpHeader::parse(packet) {
            Ok(x) => x,
            Err(RtpError::TooShort(_) | RtpError::Version(_) | RtpError::Unsupported) => {
                self.stats.malformed += 1;
                return;
            }
        };
        if self
            .config
            .payload_type
            .is_some_and(|pt| pt != rtp.payload_type)
        {
            self.stats.wrong_payload_type += 1;
            return;
        }
        match (self.config.ssrc, self.ssrc) {
            (Some(want), _) if want != rtp.ssrc => {
                self.stats.wrong_ssrc += 1;
                return;
            }
            (None, Some(current)) if current != rtp.ssrc => {
                // The sender restarted: what was in flight is given up.
                self.flush_into(store);
                self.sequences.reset();
                self.seen.fill(u64::MAX);
                self.last_done = None;
                self.stats.sender_restarts += 1;
                self.ssrc = Some(rtp.ssrc);
            }
            (None, None) => self.ssrc = Some(rtp.ssrc),
            _ => {}
        }
        let Some(segments) = self.segments(payload) else {
            self.stats.malformed += 1;
            return;
        };
        let ext = self.sequences.extend(rtp.sequence);
        let seen = &mut self.seen[(ext % SEEN_WINDOW as u64) as usize];
        if *seen == ext {
            self.stats.duplicates += 1;
            return;
        }
        *seen = ext;
        if self.last_done.is_some_and(|d| !after(rtp.timestamp, d)) {
            self.stats.late += 1;
            return;
        }
        let second_field = segments.second_field;
        let Some(i) = self.slot_for(rtp.timestamp, second_field, store) else {
            self.stats.late += 1;
            return;
        };
        let line_bytes = self.config.geometry.line_bytes();
        let pg = self.config.geometry.pgroup;
        let slot = &mut self.slots[i];
        let mut data_at = segments.data_start;
        for k in 0..segments.count {
            let s = Srd::decode(&payload[ESN_LEN + k * SRD_LEN..], pg.lines);
            let offset = s.offset as usize / pg.pixels * pg.bytes;
            let at = s.row as usize * line_bytes + offset;
            store.write(
                i,
                s.row as usize,
                offset,
                &payload[data_at..data_at + s.len],
            );
            data_at += s.len;
            slot.received += mark(&mut slot.covered, at / pg.bytes, s.len / pg.bytes) * pg.bytes;
        }
        if slot.received >= self.config.geometry.frame_bytes() {
            self.finish(i, store);
        }
    }

    /// Gives up every frame in flight into `store`.
    pub fn flush_into(&mut self, store: &mut dyn FrameStore) {
        let mut order = [0, 1];
        if self.slots[0].open
            && self.slots[1].open
            && after(self.slots[0].timestamp, self.slots[1].timestamp)
        {
            order = [1, 0];
        }
        for i in order {
            if self.slots[i].open {
                self.finish(i, store);
            }
        }
    }

    /// The slot of the frame with this timestamp: an open one, or a new one (giving up the
    /// oldest if both are busy). `None` for a packet older than both open frames.
    fn slot_for(
        &mut self,
        timestamp: u32,
        second_field: bool,
        store: &mut dyn FrameStore,
    ) -> Option<usize> {
        if let Some(i) = (0..2).find(|&i| {
            self.slots[i].open
                && self.slots[i].timestamp == timestamp
                && self.slots[i].second_field == second_field
        }) {
            return Some(i);
        }
        let free = (0..2).find(|&i| !self.slots[i].open);
        let i = match free {
            Some(i) => i,
            None => {
                let oldest = if after(self.slots[0].timestamp, self.slots[1].timestamp) {
                    1
                } else {
                    0
                };
                if after(self.slots[oldest].timestamp, timestamp) {
                    return None;
                }
                self.finish(oldest, store);
                oldest
            }
        };
        let slot = &mut self.slots[i];
        slot.open = true;
        slot.timestamp = timestamp;
        slot.second_field = second_field;
        slot.received = 0;
        slot.covered.fill(0);
        store.open(i, timestamp, second_field);
        Some(i)
    }

    fn finish(&mut self, i: usize, store: &mut dyn FrameStore) {
        let other = 1 - i;
        if self.slots[other].open && after(self.slots[i].timestamp, self.slots[other].timestamp) {
            // An older frame still open can no longer complete: once this one is done its
            // packets count as late. It is given up first, in order, rather than held (a
            // store may hold a grain for it) until a third frame pushes it out.
            self.finish(other, store);
        }
        let slot = &mut self.slots[i];
        slot.open = false;
        let info = FrameInfo {
            timestamp: slot.timestamp,
            second_field: slot.second_field,
            complete: slot.received == self.config.geometry.frame_bytes(),
            bytes_received: slot.received,
        };
        if info.complete {
            self.stats.frames_complete += 1;
        } else {
            self.stats.frames_incomplete += 1;
        }
        if self.last_done.is_none_or(|d| after(slot.timestamp, d)) {
            self.last_done = Some(slot.timestamp);
        }
        store.finish(i, &info);
    }

    /// The SRDs of a payload, checked against the geometry; `None` if anything is off.
    fn segments(&self, payload: &[u8]) -> Option<Segments> {
        let g = &self.config.geometry;
        let pg = g.pgroup;
        let line_bytes = g.line_bytes();
        let mut out = Segments {
            count: 0,
            data_start: 0,
            second_field: false,
        };
        let mut total = 0;
        let mut at = ESN_LEN;
        loop {
            let h = payload.get(at..at + SRD_LEN)?;
            at += SRD_LEN;
            let len = usize::from(u16::from_be_bytes([h[0], h[1]]));
            let line_field = u16::from_be_bytes([h[2], h[3]]);
            let offset_more = u16::from_be_bytes([h[4], h[5]]);
            let field = line_field & 0x8000 != 0;
            let line = line_field & 0x7FFF;
            let offset = usize::from(offset_more & 0x7FFF);
            let more = offset_more & 0x8000 != 0;
            if out.count == MAX_SRDS
                || (out.count > 0 && field != out.second_field)
                || (field && !g.interlaced)
                || !usize::from(line).is_multiple_of(pg.lines)
                || u32::from(line) / pg.lines as u32 >= g.lines()
                || len == 0
                || len % pg.bytes != 0
                || offset % pg.pixels != 0
                || offset / pg.pixels * pg.bytes + len > line_bytes
            {
                return None;
            }
            out.second_field = field;
            out.count += 1;
            total += len;
            if !more {
                break;
            }
        }
        out.data_start = at;
        (payload.len() >= at + total).then_some(out)
    }
}

/// Most SRDs one packet may carry (a 1460-byte payload of the narrowest lines).
const MAX_SRDS: usize = 64;

#[derive(Debug, Clone, Copy, Default)]
struct Srd {
    len: usize,
    /// Row of pgroups: the line number over the pgroup's lines.
    row: u16,
    offset: u16,
}

impl Srd {
    /// The SRD header at the start of `h` (at least [`SRD_LEN`] bytes, checked by
    /// [`Assembler::segments`]), for pgroups of `pgroup_lines` lines.
    fn decode(h: &[u8], pgroup_lines: usize) -> Self {
        Self {
            len: usize::from(u16::from_be_bytes([h[0], h[1]])),
            row: (u16::from_be_bytes([h[2], h[3]]) & 0x7FFF) / pgroup_lines as u16,
            offset: u16::from_be_bytes([h[4], h[5]]) & 0x7FFF,
        }
    }
}

/// A payload's SRD headers, checked: decoded again where they are used (a list of them
/// per packet, zeroed on every call, cost more than the rest of the packet's handling).
struct Segments {
    count: usize,
    data_start: usize,
    second_field: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(g: &VideoGeometry, seed: u8) -> Vec<u8> {
        (0..g.frame_bytes())
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 9) as u8)
            .collect()
    }

    fn packets(p: &mut Packetizer, f: &[u8], ts: u32) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        p.packetize(f, ts, false, &mut |b| out.push(b.to_vec()))
            .unwrap();
        out
    }

    fn assemble(a: &mut Assembler, pkts: &[Vec<u8>]) -> Vec<(FrameInfo, Vec<u8>)> {
        let mut got = Vec::new();
        for p in pkts {
            a.push(p, &mut |i, d| got.push((*i, d.to_vec())));
        }
        got
    }

    fn config(g: VideoGeometry) -> AssemblerConfig {
        AssemblerConfig {
            geometry: g,
            payload_type: Some(96),
            ssrc: None,
        }
    }

    /// Single-line packets are all one size where a packet count up to twice the fewest
    /// divides the line (so GSO sends runs): 1280 wide goes in 4 packets of 800 bytes,
    /// not 1070, 1070 and 1060.
    #[test]
    fn single_line_packets_are_one_size() {
        for (width, sizes) in [
            (1280u32, vec![800usize]),
            (1920, vec![1200]),
            (3840, vec![1200]),
        ] {
            let g = VideoGeometry::new(width, 4, Sampling::YCbCr422, 10, false).unwrap();
            let mut p =
                Packetizer::new(g, PackingMode::SingleLine, 96, 7, DEFAULT_PACKET_SIZE).unwrap();
            let mut seen = std::collections::BTreeSet::new();
            let frame = vec![0u8; g.frame_bytes()];
            p.packetize(&frame, 0, false, &mut |b| {
                seen.insert(b.len() - RTP_HEADER_LEN - ESN_LEN - SRD_LEN);
            })
            .unwrap();
            assert_eq!(seen.into_iter().collect::<Vec<_>>(), sizes, "width {width}");
        }
    }

    #[test]
    fn packet_counts_match_st2110_figures_for_1080p_10_bit() {
        let g = VideoGeometry::new(1920, 1080, Sampling::YCbCr422, 10, false).unwrap();
        assert_eq!(g.frame_bytes(), 5_184_000);
        let count = |mode| {
            Packetizer::new(g, mode, 96, 1, DEFAULT_PACKET_SIZE)
                .unwrap()
                .packets_per_frame()
        };
        assert_eq!(count(PackingMode::Block), 4115);
        assert_eq!(count(PackingMode::SingleLine), 4320);
        // The count a sender paces by is the count it sends.
        for mode in [
            PackingMode::General,
            PackingMode::Block,
            PackingMode::SingleLine,
        ] {
            let mut p = Packetizer::new(g, mode, 96, 1, DEFAULT_PACKET_SIZE).unwrap();
            let sent = packets(&mut p, &frame(&g, 0), 0).len();
            assert_eq!(p.packets_per_frame(), sent, "{mode:?}");
        }
        let mut p = Packetizer::new(g, PackingMode::Block, 96, 1, DEFAULT_PACKET_SIZE).unwrap();
        let f = frame(&g, 0);
        let pk = packets(&mut p, &f, 0);
        assert_eq!(pk.len(), 4115);
        assert!(pk[..4114].iter().all(|b| {
            let srds = b[RTP_HEADER_LEN + 2..]
                .chunks(6)
                .position(|h| h[4] & 0x80 == 0)
                .unwrap()
                + 1;
            b.len() == RTP_HEADER_LEN + 2 + 6 * srds + BPM_PAYLOAD
        }));
        assert!(
            pk.last().unwrap()[1] & 0x80 != 0,
            "marker on the last packet"
        );
        assert!(pk[..4114].iter().all(|b| b[1] & 0x80 == 0));
    }

    #[test]
    fn a_4_2_0_row_spans_two_lines_and_srds_name_the_upper_one() {
        let g = VideoGeometry::new(8, 4, Sampling::YCbCr420, 8, false).unwrap();
        // 4 pgroups of 6 bytes a row, 2 rows.
        assert_eq!((g.line_bytes(), g.lines(), g.frame_bytes()), (24, 2, 48));
        assert!(VideoGeometry::new(8, 3, Sampling::YCbCr420, 8, false).is_err());
        assert!(VideoGeometry::new(8, 6, Sampling::YCbCr420, 8, true).is_err());
        let mut p = Packetizer::new(g, PackingMode::SingleLine, 96, 7, 100).unwrap();
        let pk = packets(&mut p, &frame(&g, 1), 0);
        let srd_lines: Vec<u16> = pk
            .iter()
            .map(|b| u16::from_be_bytes([b[16], b[17]]))
            .collect();
        assert_eq!(srd_lines, [0, 2]);
        // An odd line number is no 4:2:0 row: the packet is malformed.
        let mut a = Assembler::new(config(g));
        let mut odd = pk[1].clone();
        odd[17] = 1;
        assemble(&mut a, &[odd]);
        assert_eq!(a.stats().malformed, 1);
    }

    #[test]
    fn every_mode_round_trips_and_the_esn_carries_the_high_half() {
        for (w, h, s, d) in [
            (64, 8, Sampling::YCbCr422, 8),
            (1920, 4, Sampling::YCbCr422, 10),
            (64, 8, Sampling::Rgb, 10),
            (30, 5, Sampling::YCbCr444, 12),
            (64, 8, Sampling::YCbCr420, 8),
            (1920, 6, Sampling::YCbCr420, 10),
        ] {
            let g = VideoGeometry::new(w, h, s, d, false).unwrap();
            for mode in [
                PackingMode::General,
                PackingMode::Block,
                PackingMode::SingleLine,
            ] {
                let mut p = Packetizer::new(g, mode, 96, 7, DEFAULT_PACKET_SIZE).unwrap();
                p.set_sequence(0xFFFF_FFF0);
                let mut a = Assembler::new(config(g));
                for n in 0..3u8 {
                    let f = frame(&g, n);
                    let pk = packets(&mut p, &f, 3000 * u32::from(n));
                    assert!(pk.iter().all(|b| b.len()
                        <= DEFAULT_PACKET_SIZE
                            .max(RTP_HEADER_LEN + 2 + 6 * MAX_SRDS + BPM_PAYLOAD)));
                    let got = assemble(&mut a, &pk);
                    assert_eq!(got.len(), 1, "{mode:?} {w}x{h}");
                    assert!(got[0].0.complete);
                    assert!(got[0].1 == f, "{mode:?} {w}x{h} frame {n}");
                }
                assert_eq!(a.stats().frames_complete, 3);
            }
        }
        // The ESN is the high half: after 0xFFFF_FFF0 + 16 packets it wraps to 0.
        let g = VideoGeometry::new(64, 2, Sampling::YCbCr422, 8, false).unwrap();
        let mut p = Packetizer::new(g, PackingMode::SingleLine, 96, 7, 100).unwrap();
        p.set_sequence(0x0001_FFFF);
        let pk = packets(&mut p, &frame(&g, 0), 0);
        assert_eq!(&pk[0][2..4], &[0xFF, 0xFF]);
        assert_eq!(&pk[0][12..14], &[0x00, 0x01]);
        assert_eq!(&pk[1][2..4], &[0x00, 0x00]);
        assert_eq!(&pk[1][12..14], &[0x00, 0x02]);
    }

    /// A packet lost and another's data sent again under its sequence number: as many
    /// bytes arrive as the frame holds, but not all of the frame. Incomplete, not whole.
    #[test]
    fn overlapping_srds_never_make_a_frame_with_holes_complete() {
        let g = VideoGeometry::new(64, 8, Sampling::YCbCr422, 10, false).unwrap();
        let mut p = Packetizer::new(g, PackingMode::SingleLine, 96, 5, 200).unwrap();
        let mut pk = packets(&mut p, &frame(&g, 3), 0);
        assert!(pk.len() > 5);
        let mut again = pk[2].clone();
        again[2..4].copy_from_slice(&pk[3][2..4]);
        again[12..14].copy_from_slice(&pk[3][12..14]);
        assert_eq!(again.len(), pk[3].len());
        pk[3] = again;
        let mut a = Assembler::new(config(g));
        let mut complete = Vec::new();
        for d in &pk {
            a.push(d, &mut |info, _| complete.push(info.complete));
        }
        a.flush(&mut |info, _| complete.push(info.complete));
        assert_eq!(complete, vec![false]);
        assert_eq!(
            (a.stats().frames_complete, a.stats().frames_incomplete),
            (0, 1)
        );
    }

    /// A receiver that joins mid-frame holds that frame open; it is handed out (given up)
    /// as soon as a later frame completes, before it, not when a third frame needs a slot.
    #[test]
    fn a_frame_joined_mid_way_is_given_up_when_the_next_completes() {
        let g = VideoGeometry::new(128, 16, Sampling::YCbCr422, 10, false).unwrap();
        let mut p = Packetizer::new(g, PackingMode::General, 96, 9, 400).unwrap();
        let first = packets(&mut p, &frame(&g, 0), 0);
        let mut stream = first[first.len() / 2..].to_vec();
        stream.extend(packets(&mut p, &frame(&g, 1), 1500));
        let mut a = Assembler::new(config(g));
        let got: Vec<(u32, bool)> = assemble(&mut a, &stream)
            .iter()
            .map(|(i, _)| (i.timestamp, i.complete))
            .collect();
        assert_eq!(got, [(0, false), (1500, true)]);
    }

    #[test]
    fn loss_reorder_duplicates_and_garbage() {
        let g = VideoGeometry::new(128, 16, Sampling::YCbCr422, 10, false).unwrap();
        let mut p = Packetizer::new(g, PackingMode::General, 96, 9, 400).unwrap();
        let frames: Vec<Vec<u8>> = (0..4).map(|n| frame(&g, n)).collect();
        let mut all: Vec<Vec<Vec<u8>>> = frames
            .iter()
            .enumerate()
            .map(|(n, f)| packets(&mut p, f, 1500 * n as u32))
            .collect();
        assert!(all[0].len() > 4);
        // Frame 1 loses a packet; frame 2 arrives reversed with duplicates; garbage and a
        // foreign payload type in between.
        all[1].remove(2);
        all[2].reverse();
        let dup = all[2][1].clone();
        all[2].push(dup);
        let mut stream: Vec<Vec<u8>> = Vec::new();
        for (n, f) in all.iter().enumerate() {
            stream.extend(f.iter().cloned());
            stream.push(vec![0x80, 96, 0, 0]);
            if n == 0 {
                let mut foreign = all[0][0].clone();
                foreign[1] = 97;
                stream.push(foreign);
            }
        }
        let mut a = Assembler::new(config(g));
        let mut got = assemble(&mut a, &stream);
        a.flush(&mut |i, d| got.push((*i, d.to_vec())));
        let complete: Vec<u32> = got
            .iter()
            .filter(|(i, _)| i.complete)
            .map(|(i, _)| i.timestamp)
            .collect();
        assert_eq!(complete, [0, 3000, 4500], "frame 1 is never complete");
        for (i, d) in &got {
            if i.complete {
                assert!(*d == frames[(i.timestamp / 1500) as usize]);
            }
        }
        let s = a.stats();
        assert_eq!(
            (
                s.frames_incomplete,
                s.duplicates,
                s.malformed,
                s.wrong_payload_type
            ),
            (1, 1, 4, 1)
        );
    }

    #[test]
    fn a_new_ssrc_is_a_restarted_sender_and_a_fixed_one_filters() {
        let g = VideoGeometry::new(64, 4, Sampling::YCbCr422, 8, false).unwrap();
        let mut a1 = Packetizer::new(g, PackingMode::General, 96, 1, 200).unwrap();
        let mut a2 = Packetizer::new(g, PackingMode::General, 96, 2, 200).unwrap();
        let f = frame(&g, 5);
        let first = packets(&mut a1, &f, 100);
        let second = packets(&mut a2, &f, 7);
        let mut a = Assembler::new(config(g));
        let mut got = assemble(&mut a, &first[..first.len() - 1]);
        got.extend(assemble(&mut a, &second));
        assert_eq!(got.len(), 2);
        assert!(!got[0].0.complete && got[1].0.complete);
        assert_eq!(a.stats().sender_restarts, 1);
        let mut fixed = Assembler::new(AssemblerConfig {
            ssrc: Some(2),
            ..config(g)
        });
        let got = assemble(&mut fixed, &[first.clone(), second.clone()].concat());
        assert_eq!(got.len(), 1);
        assert_eq!(fixed.stats().wrong_ssrc, first.len() as u64);
    }

    mod fuzz {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]
            /// Arbitrary datagrams, and valid packets with bytes flipped, never panic the
            /// assembler; what it counts adds up.
            #[test]
            fn garbage_never_panics(noise in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..200), 0..40),
                                    flips in proptest::collection::vec((0usize..4096, any::<u8>()), 0..8)) {
                let g = VideoGeometry::new(32, 4, Sampling::YCbCr422, 10, false).unwrap();
                let mut p = Packetizer::new(g, PackingMode::General, 96, 3, 120).unwrap();
                let mut pk = packets(&mut p, &frame(&g, 9), 0);
                let n = pk.len();
                for (at, v) in flips {
                    let i = at % n;
                    let j = at / n % pk[i].len();
                    pk[i][j] ^= v;
                }
                let mut a = Assembler::new(config(g));
                let mut stream = noise;
                stream.extend(pk);
                let mut frames = 0u64;
                for d in &stream {
                    a.push(d, &mut |_, _| frames += 1);
                }
                a.flush(&mut |_, _| frames += 1);
                let s = a.stats();
                prop_assert_eq!(s.packets, stream.len() as u64);
                prop_assert_eq!(frames, s.frames_complete + s.frames_incomplete);
            }
        }
    }
}
