//! SMPTE ST 2038 ancillary data packets, as GStreamer carries them (`meta/x-st-2038`), to
//! and from [`AncPacket`]s, so ANC from a GStreamer pipeline can travel as RFC 8331
//! (ST 2110-40) and back. Sans-IO.
//!
//! Per packet (ST 2038 §5, the PES payload's ANC data): six zero bits, `c_not_y_channel_flag`
//! (1), `line_number` (11), `horizontal_offset` (12), then DID, SDID and `data_count` as
//! 10-bit words with parity, the user data words and the checksum word, and `1` bits up to
//! the next byte. Packets follow one another; `0xFF` bytes after the last are stuffing.
//! ST 2038 has no data stream number: packets read from it are stream 0 (`S` clear).

use super::anc::{get_words, put_words, AncError, AncPacket, BitReader, BitWriter};

/// The ST 2038 bytes of `packets`, appended to `out`. The RFC 8331 stream number does not
/// exist in ST 2038 and is dropped.
pub fn write(packets: &[AncPacket], out: &mut Vec<u8>) -> Result<(), AncError> {
    let mut w = BitWriter::new();
    for p in packets {
        if p.udw.len() > 255 {
            return Err(AncError::TooLong(p.udw.len()));
        }
        w.put(0, 6);
        w.put(u32::from(p.c), 1);
        w.put(u32::from(p.line), 11);
        w.put(u32::from(p.offset), 12);
        put_words(&mut w, p);
        w.align8_with_ones();
    }
    out.extend_from_slice(&w.out);
    Ok(())
}

/// The ANC packets of ST 2038 `data`, with parity and checksums verified; stops at
/// stuffing (a packet that does not start with six zero bits) or the end.
pub fn parse(data: &[u8]) -> Result<Vec<AncPacket>, AncError> {
    let mut r = BitReader { data, pos: 0 };
    let mut packets = Vec::new();
    // The fixed part of a packet: 6 + 1 + 11 + 12 bits, then four 10-bit words at least.
    while data.len() * 8 - r.pos >= 30 + 40 {
        if r.get(6)? != 0 {
            break; // stuffing
        }
        let c = r.get(1)? == 1;
        let line = r.get(11)? as u16;
        let offset = r.get(12)? as u16;
        let (did, sdid, udw) = get_words(&mut r)?;
        r.pos = r.pos.div_ceil(8) * 8;
        packets.push(AncPacket {
            c,
            line,
            offset,
            s: false,
            stream: 0,
            did,
            sdid,
            udw,
        });
    }
    Ok(packets)
}

#[cfg(test)]
mod tests {
    use super::super::anc::with_parity;
    use super::*;
    use proptest::prelude::*;

    fn caption(line: u16) -> AncPacket {
        AncPacket {
            c: false,
            line,
            offset: 0,
            s: false,
            stream: 0,
            did: 0x61,
            sdid: 0x01,
            udw: [0x96u8, 0x69, 0x55, 0x4F, 0x43, 0x00, 0x00, 0x72]
                .iter()
                .map(|&b| with_parity(b))
                .collect(),
        }
    }

    #[test]
    fn a_caption_packet_has_the_st_2038_bit_layout() {
        let mut out = Vec::new();
        write(&[caption(9)], &mut out).unwrap();
        // 30 header bits + (3 + 8 + 1) words of 10 bits = 150 bits: 19 bytes, 2 bits of
        // `1` padding.
        assert_eq!(out.len(), 19);
        // 000000 0 00000001001 000000000000 | DID 0x61 with parity (0x161)...
        assert_eq!(out[0], 0b0000_0000);
        assert_eq!(out[1], 0b0000_0010);
        assert_eq!(out[2], 0b0100_0000);
        assert_eq!(out[3] >> 2, 0b00_0000);
        assert_eq!(out[18] & 0b11, 0b11, "padded with ones");
        assert_eq!(parse(&out).unwrap(), vec![caption(9)]);
    }

    #[test]
    fn stuffing_ends_the_packets_and_damage_is_an_error() {
        let mut out = Vec::new();
        write(&[caption(9), caption(10)], &mut out).unwrap();
        out.extend_from_slice(&[0xFF; 7]);
        assert_eq!(parse(&out).unwrap(), vec![caption(9), caption(10)]);
        let mut bad = out.clone();
        bad[10] ^= 0x01;
        assert!(parse(&bad).is_err());
        assert_eq!(parse(&[]).unwrap(), vec![]);
    }

    fn any_packet() -> impl Strategy<Value = AncPacket> {
        (
            any::<bool>(),
            0u16..0x800,
            0u16..0x1000,
            any::<u8>(),
            any::<u8>(),
            proptest::collection::vec(0u16..0x400, 0..255),
        )
            .prop_map(|(c, line, offset, did, sdid, udw)| AncPacket {
                c,
                line,
                offset,
                s: false,
                stream: 0,
                did,
                sdid,
                udw,
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..Default::default() })]
        /// ST 2038 -> packets -> RFC 8331 payload -> packets -> ST 2038: the same bytes.
        #[test]
        fn st2038_and_rfc8331_carry_the_same_packets(packets in proptest::collection::vec(any_packet(), 0..6)) {
            let mut st2038 = Vec::new();
            write(&packets, &mut st2038).unwrap();
            let parsed = parse(&st2038).unwrap();
            prop_assert_eq!(&parsed, &packets);
            let grain = super::super::anc::payload(super::super::anc::AncField::Progressive, &parsed).unwrap();
            let (_, back) = super::super::anc::parse_payload(&grain).unwrap();
            let mut again = Vec::new();
            write(&back, &mut again).unwrap();
            prop_assert_eq!(again, st2038);
        }

        #[test]
        fn any_bytes_parse_or_fail_cleanly(data in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = parse(&data);
        }
    }
}
