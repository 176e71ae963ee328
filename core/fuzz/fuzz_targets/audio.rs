//! ST 2110-30 depacketizer: any datagrams. It never panics, counts every datagram, and
//! hands out whole sample frames only.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mcm_core::st2110::audio::{AudioDepacketizer, AudioFormat, PcmEncoding};

fn datagrams(mut data: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    while let Some((&len, rest)) = data.split_first() {
        let len = (len as usize * 2).min(rest.len());
        out.push(&rest[..len]);
        data = &rest[len..];
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let format = AudioFormat::new(PcmEncoding::L24, 2, 48_000, 125).unwrap();
    let mut depacketizer = AudioDepacketizer::new(format, Some(97), 8);
    let packets = datagrams(data);
    for packet in &packets {
        depacketizer.push(packet, &mut |_, samples| {
            assert_eq!(samples.len() % 6, 0, "whole L24 stereo sample frames");
        });
    }
    assert_eq!(depacketizer.stats().packets, packets.len() as u64);
});
