//! ST 2110-40 ancillary data in RTP (RFC 8331): SMPTE ST 291 packets (closed captions,
//! timecode, ...) with their 10-bit words, parity and checksum. Sans-IO.
//!
//! Payload: extended sequence number (16), length (16, bytes after this header), ANC_Count
//! (8), F (2: 00 progressive, 10 first field, 11 second field), reserved (22); then per ANC
//! packet: C (1), line number (11), horizontal offset (12), S (1), stream number (7), then
//! DID, SDID and Data_Count as 10-bit words with parity (bit 8 = even parity of bits 0-7,
//! bit 9 = not bit 8), the user data words, and the checksum word; each ANC packet padded
//! with zero bits to a 32-bit boundary.

use super::rtp::{RtpHeader, RTP_HEADER_LEN};

/// One SMPTE ST 291 ancillary data packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AncPacket {
    /// Colour difference channel (C bit).
    pub c: bool,
    /// Line number (11 bits; 0x7FF: no specific line).
    pub line: u16,
    /// Horizontal offset (12 bits; 0xFFF: no specific position).
    pub offset: u16,
    /// Data stream flag and number.
    pub s: bool,
    pub stream: u8,
    pub did: u8,
    pub sdid: u8,
    /// User data words, 10 bits each (the caller sets parity bits as the format needs;
    /// 8-bit data can use [`with_parity`]).
    pub udw: Vec<u16>,
}

/// Why an ANC payload was refused (counted by receivers, never a panic).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AncError {
    #[error("payload shorter than its headers say")]
    Truncated,
    #[error("{0} with wrong parity")]
    Parity(&'static str),
    #[error("checksum {got:#05x}, computed {want:#05x}")]
    Checksum { got: u16, want: u16 },
    #[error("{0} user data words: at most 255")]
    TooLong(usize),
    #[error(transparent)]
    Rtp(#[from] super::rtp::RtpError),
}

/// An 8-bit value as a 10-bit word with ST 291 parity (b8 even parity, b9 = !b8).
pub fn with_parity(v: u8) -> u16 {
    let p = (v.count_ones() & 1) as u16;
    u16::from(v) | (p << 8) | ((p ^ 1) << 9)
}

fn parity_ok(w: u16) -> bool {
    w == with_parity(w as u8)
}

/// The checksum word: 9-bit sum of DID .. last UDW, b9 = !b8.
fn checksum(words: &[u16]) -> u16 {
    let sum = words.iter().fold(0u16, |s, w| s.wrapping_add(w & 0x1FF)) & 0x1FF;
    sum | ((!sum >> 8 & 1) << 9)
}

pub(crate) struct BitWriter {
    pub(crate) out: Vec<u8>,
    acc: u64,
    bits: u32,
}

impl BitWriter {
    pub(crate) fn new() -> Self {
        Self {
            out: Vec::new(),
            acc: 0,
            bits: 0,
        }
    }
    pub(crate) fn put(&mut self, value: u32, n: u32) {
        self.acc = (self.acc << n) | u64::from(value & ((1 << n) - 1));
        self.bits += n;
        while self.bits >= 8 {
            self.bits -= 8;
            self.out.push((self.acc >> self.bits) as u8);
        }
    }
    fn align32(&mut self) {
        let pad = (32 - (self.out.len() * 8 + self.bits as usize) % 32) % 32;
        self.put(0, pad as u32);
    }
    /// Pads with `1` bits to the next byte (ST 2038's word alignment).
    pub(crate) fn align8_with_ones(&mut self) {
        let pad = (8 - self.bits % 8) % 8;
        self.put(u32::MAX, pad);
    }
}

pub(crate) struct BitReader<'a> {
    pub(crate) data: &'a [u8],
    pub(crate) pos: usize,
}

impl BitReader<'_> {
    pub(crate) fn get(&mut self, n: usize) -> Result<u32, AncError> {
        let mut v = 0u32;
        for _ in 0..n {
            let byte = *self.data.get(self.pos / 8).ok_or(AncError::Truncated)?;
            v = (v << 1) | u32::from(byte >> (7 - self.pos % 8) & 1);
            self.pos += 1;
        }
        Ok(v)
    }
    fn align32(&mut self) {
        self.pos = self.pos.div_ceil(32) * 32;
    }
}

/// DID, SDID and Data_Count with parity, the user data words and the checksum: the
/// 10-bit words RFC 8331 and ST 2038 share.
pub(crate) fn put_words(w: &mut BitWriter, p: &AncPacket) {
    let mut words = vec![
        with_parity(p.did),
        with_parity(p.sdid),
        with_parity(p.udw.len() as u8),
    ];
    words.extend(p.udw.iter().map(|u| u & 0x3FF));
    let sum = checksum(&words);
    for word in words.iter().chain(std::iter::once(&sum)) {
        w.put(u32::from(*word), 10);
    }
}

/// Reads what [`put_words`] writes: DID, SDID and the user data words, with parity and
/// the checksum verified.
pub(crate) fn get_words(r: &mut BitReader<'_>) -> Result<(u8, u8, Vec<u16>), AncError> {
    let did = r.get(10)? as u16;
    let sdid = r.get(10)? as u16;
    let dc = r.get(10)? as u16;
    for (name, w) in [("DID", did), ("SDID", sdid), ("Data_Count", dc)] {
        if !parity_ok(w) {
            return Err(AncError::Parity(name));
        }
    }
    let mut words = vec![did, sdid, dc];
    for _ in 0..(dc & 0xFF) {
        words.push(r.get(10)? as u16);
    }
    let got = r.get(10)? as u16;
    let want = checksum(&words);
    if got != want {
        return Err(AncError::Checksum { got, want });
    }
    Ok((did as u8, sdid as u8, words.split_off(3)))
}

/// Field bits of the payload header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AncField {
    Progressive,
    First,
    Second,
}

/// Builds one RTP packet carrying `packets` (the marker set: all of a frame's ANC in one).
pub fn packetize(
    header: RtpHeader,
    extended_sequence: u16,
    field: AncField,
    packets: &[AncPacket],
) -> Result<Vec<u8>, AncError> {
    let mut out = vec![0u8; RTP_HEADER_LEN];
    header.write((&mut out[..RTP_HEADER_LEN]).try_into().expect("12 bytes"));
    out.extend_from_slice(&extended_sequence.to_be_bytes());
    out.extend_from_slice(&payload(field, packets)?);
    Ok(out)
}

/// The RFC 8331 payload from its Length field on (Length, ANC_Count, F, the ANC packets):
/// what an MXL `video/smpte291` data grain holds.
pub fn payload(field: AncField, packets: &[AncPacket]) -> Result<Vec<u8>, AncError> {
    let mut w = BitWriter::new();
    for p in packets {
        if p.udw.len() > 255 {
            return Err(AncError::TooLong(p.udw.len()));
        }
        w.put(u32::from(p.c), 1);
        w.put(u32::from(p.line), 11);
        w.put(u32::from(p.offset), 12);
        w.put(u32::from(p.s), 1);
        w.put(u32::from(p.stream), 7);
        put_words(&mut w, p);
        w.align32();
    }
    let body = w.out;
    let length = u16::try_from(body.len()).map_err(|_| AncError::TooLong(packets.len()))?;
    let count = u8::try_from(packets.len()).map_err(|_| AncError::TooLong(packets.len()))?;
    let mut out = Vec::with_capacity(6 + body.len());
    out.extend_from_slice(&length.to_be_bytes());
    out.push(count);
    let f: u8 = match field {
        AncField::Progressive => 0,
        AncField::First => 2,
        AncField::Second => 3,
    };
    out.extend_from_slice(&[f << 6, 0, 0]);
    out.extend_from_slice(&body);
    Ok(out)
}

/// Parses an RTP packet of ANC data: the header, the field and the ANC packets, with
/// parity and checksums verified.
pub fn parse(packet: &[u8]) -> Result<(RtpHeader, AncField, Vec<AncPacket>), AncError> {
    let (rtp, payload) = RtpHeader::parse(packet)?;
    // After the extended sequence number: the payload from its Length field.
    let (field, packets) = parse_payload(payload.get(2..).ok_or(AncError::Truncated)?)?;
    Ok((rtp, field, packets))
}

/// Parses an RFC 8331 payload from its Length field on (an MXL data grain), with parity
/// and checksums verified.
pub fn parse_payload(payload: &[u8]) -> Result<(AncField, Vec<AncPacket>), AncError> {
    let h = payload.get(..6).ok_or(AncError::Truncated)?;
    let length = usize::from(u16::from_be_bytes([h[0], h[1]]));
    let count = h[2];
    let field = match h[3] >> 6 {
        2 => AncField::First,
        3 => AncField::Second,
        _ => AncField::Progressive,
    };
    let body = payload.get(6..6 + length).ok_or(AncError::Truncated)?;
    let mut r = BitReader { data: body, pos: 0 };
    let mut packets = Vec::with_capacity(usize::from(count));
    for _ in 0..count {
        let c = r.get(1)? == 1;
        let line = r.get(11)? as u16;
        let offset = r.get(12)? as u16;
        let s = r.get(1)? == 1;
        let stream = r.get(7)? as u8;
        let (did, sdid, udw) = get_words(&mut r)?;
        r.align32();
        packets.push(AncPacket {
            c,
            line,
            offset,
            s,
            stream,
            did,
            sdid,
            udw,
        });
    }
    Ok((field, packets))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn captions() -> AncPacket {
        // A CEA-708 caption data packet (DID 0x61, SDID 0x01) on line 9.
        AncPacket {
            c: false,
            line: 9,
            offset: 0xFFF,
            s: false,
            stream: 0,
            did: 0x61,
            sdid: 0x01,
            udw: [
                0x96u8, 0x69, 0x55, 0x4F, 0x43, 0x00, 0x00, 0x72, 0xF4, 0xFC, 0x94, 0x20,
            ]
            .iter()
            .map(|&b| with_parity(b))
            .collect(),
        }
    }

    fn timecode() -> AncPacket {
        // ST 12-2 ancillary timecode (DID 0x60, SDID 0x60), 16 words.
        AncPacket {
            c: false,
            line: 10,
            offset: 0xFFF,
            s: false,
            stream: 0,
            did: 0x60,
            sdid: 0x60,
            udw: (0..16u8).map(|i| with_parity(i * 16)).collect(),
        }
    }

    fn header() -> RtpHeader {
        RtpHeader {
            marker: true,
            payload_type: 100,
            sequence: 7,
            timestamp: 90_000,
            ssrc: 42,
        }
    }

    #[test]
    fn captions_and_timecode_round_trip_exactly() {
        let packets = [captions(), timecode()];
        let pkt = packetize(header(), 0, AncField::Progressive, &packets).unwrap();
        // Every ANC packet ends on a 32-bit boundary.
        assert_eq!((pkt.len() - RTP_HEADER_LEN - 8) % 4, 0);
        let (rtp, field, back) = parse(&pkt).unwrap();
        assert_eq!((rtp, field), (header(), AncField::Progressive));
        assert_eq!(back, packets);
        // 0x61 has three ones: b8 set (even parity), b9 clear; 0x60 has two: b9 set.
        assert_eq!((with_parity(0x61), with_parity(0x60)), (0x161, 0x260));
    }

    #[test]
    fn bad_checksums_and_parity_are_refused() {
        let mut pkt = packetize(header(), 0, AncField::First, &[captions()]).unwrap();
        // Flip one bit of the last user data word: the checksum no longer matches.
        let at = pkt.len() - 5;
        pkt[at] ^= 0x01;
        assert!(matches!(
            parse(&pkt),
            Err(AncError::Checksum { .. }) | Err(AncError::Parity(_))
        ));
        let mut pkt = packetize(header(), 0, AncField::First, &[captions()]).unwrap();
        // The DID's parity bits: bits 0-9 of the ANC body after the first 32 bits.
        pkt[RTP_HEADER_LEN + 8 + 4] ^= 0x40;
        assert_eq!(parse(&pkt), Err(AncError::Parity("DID")));
        assert_eq!(parse(&pkt[..20]), Err(AncError::Truncated));
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]
        #[test]
        fn garbage_never_panics(data in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = parse(&data);
        }

        #[test]
        fn any_packets_round_trip(udw in proptest::collection::vec(any::<u8>(), 0..255), line in 0u16..0x7FF) {
            let p = AncPacket { line, udw: udw.iter().map(|&b| with_parity(b)).collect(), ..captions() };
            let pkt = packetize(header(), 3, AncField::Second, std::slice::from_ref(&p)).unwrap();
            let (_, f, back) = parse(&pkt).unwrap();
            prop_assert_eq!(f, AncField::Second);
            prop_assert_eq!(back, vec![p]);
        }
    }
}
