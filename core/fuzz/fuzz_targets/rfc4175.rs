//! RFC 4175 (ST 2110-20) assembler: any datagrams. It never panics, counts every
//! datagram, and hands out only whole-size frames, complete ones with every byte.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mcm_core::st2110::rfc4175::{Assembler, AssemblerConfig, Sampling, VideoGeometry};

/// Splits fuzz input into datagrams: a length byte (× 4), then that many bytes.
fn datagrams(mut data: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    while let Some((&len, rest)) = data.split_first() {
        let len = (len as usize * 4).min(rest.len());
        out.push(&rest[..len]);
        data = &rest[len..];
    }
    out
}

fuzz_target!(|data: &[u8]| {
    // A small picture, so random SRDs often land inside it.
    let geometry = VideoGeometry::new(32, 4, Sampling::YCbCr422, 10, false).unwrap();
    let mut assembler = Assembler::new(AssemblerConfig {
        geometry,
        payload_type: Some(96),
        ssrc: None,
    });
    let packets = datagrams(data);
    for packet in &packets {
        assembler.push(packet, &mut |info, frame| {
            assert_eq!(frame.len(), geometry.frame_bytes());
            assert!(!info.complete || info.bytes_received >= frame.len());
        });
    }
    assert_eq!(assembler.stats().packets, packets.len() as u64);
});
