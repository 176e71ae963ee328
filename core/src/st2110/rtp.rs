//! The 12-byte RTP fixed header (RFC 3550 §5.1) and sequence-number extension (RFC 3550
//! appendix A.1), as ST 2110 uses them: version 2, no padding, extension or CSRCs.

/// Bytes of the fixed RTP header.
pub const RTP_HEADER_LEN: usize = 12;

/// Why a datagram is not an RTP packet mcm can use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RtpError {
    #[error("{0} bytes: shorter than the 12-byte RTP header")]
    TooShort(usize),
    #[error("RTP version {0}, not 2")]
    Version(u8),
    #[error("RTP padding, extension or CSRCs (not used by ST 2110)")]
    Unsupported,
}

/// The fields of an RTP header ST 2110 uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtpHeader {
    /// Last packet of a frame (or field).
    pub marker: bool,
    pub payload_type: u8,
    /// Low 16 bits of the sequence number.
    pub sequence: u16,
    /// Media clock (90 kHz for video, the sample rate for audio).
    pub timestamp: u32,
    pub ssrc: u32,
}

impl RtpHeader {
    /// Splits a datagram into its header and payload.
    pub fn parse(packet: &[u8]) -> Result<(Self, &[u8]), RtpError> {
        let Some(h) = packet.get(..RTP_HEADER_LEN) else {
            return Err(RtpError::TooShort(packet.len()));
        };
        let version = h[0] >> 6;
        if version != 2 {
            return Err(RtpError::Version(version));
        }
        // Padding (P), extension (X) or a CSRC count: not ST 2110 (ST 2110-10 §6).
        if h[0] & 0x3F != 0 {
            return Err(RtpError::Unsupported);
        }
        let header = Self {
            marker: h[1] & 0x80 != 0,
            payload_type: h[1] & 0x7F,
            sequence: u16::from_be_bytes([h[2], h[3]]),
            timestamp: u32::from_be_bytes([h[4], h[5], h[6], h[7]]),
            ssrc: u32::from_be_bytes([h[8], h[9], h[10], h[11]]),
        };
        Ok((header, &packet[RTP_HEADER_LEN..]))
    }

    /// Writes the header into the first 12 bytes of `out` (which must hold them).
    pub fn write(&self, out: &mut [u8; RTP_HEADER_LEN]) {
        out[0] = 0x80;
        out[1] = (u8::from(self.marker) << 7) | (self.payload_type & 0x7F);
        out[2..4].copy_from_slice(&self.sequence.to_be_bytes());
        out[4..8].copy_from_slice(&self.timestamp.to_be_bytes());
        out[8..12].copy_from_slice(&self.ssrc.to_be_bytes());
    }
}

/// Extends 16-bit sequence numbers to 64 bits as they arrive (RFC 3550 A.1): a number
/// within half the range of the highest seen is taken as the nearest; reordered and
/// duplicated packets therefore get the extended number they were sent with.
#[derive(Debug, Clone, Default)]
pub struct SequenceExtender {
    highest: Option<u64>,
}

impl SequenceExtender {
    pub fn extend(&mut self, sequence: u16) -> u64 {
        let Some(highest) = self.highest else {
            let first = u64::from(sequence) + (1 << 16);
            self.highest = Some(first);
            return first;
        };
        let delta = sequence.wrapping_sub(highest as u16) as i16;
        let extended = highest.wrapping_add_signed(i64::from(delta));
        if extended > highest {
            self.highest = Some(extended);
        }
        extended
    }

    /// Forgets the stream (a sender restarting with new numbers).
    pub fn reset(&mut self) {
        self.highest = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trip_and_errors() {
        let h = RtpHeader {
            marker: true,
            payload_type: 96,
            sequence: 0xFFFE,
            timestamp: 0x0123_4567,
            ssrc: 0xDEAD_BEEF,
        };
        let mut b = [0u8; 14];
        h.write((&mut b[..12]).try_into().unwrap());
        b[12] = 7;
        let (back, payload) = RtpHeader::parse(&b).unwrap();
        assert_eq!((back, payload), (h, &[7u8, 0][..]));
        assert_eq!(RtpHeader::parse(&b[..11]), Err(RtpError::TooShort(11)));
        b[0] = 0x40;
        assert_eq!(RtpHeader::parse(&b), Err(RtpError::Version(1)));
        b[0] = 0x90;
        assert_eq!(RtpHeader::parse(&b), Err(RtpError::Unsupported));
    }

    #[test]
    fn sequence_extension_wraps_and_keeps_reordered_packets_in_place() {
        let mut x = SequenceExtender::default();
        let a = x.extend(65534);
        assert_eq!(x.extend(65535), a + 1);
        assert_eq!(x.extend(1), a + 3, "wrap");
        assert_eq!(x.extend(0), a + 2, "late packet from before the wrap point");
        assert_eq!(x.extend(65535), a + 1, "duplicate from before the wrap");
        assert_eq!(x.extend(2), a + 4);
    }
}
