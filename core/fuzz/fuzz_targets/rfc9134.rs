//! RFC 9134 (ST 2110-22) assembler: any datagrams. It never panics, counts every
//! datagram, and never hands out a frame beyond its size bound.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mcm_core::st2110::rfc9134::Assembler;

fn datagrams(mut data: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    while let Some((&len, rest)) = data.split_first() {
        let len = (len as usize).min(rest.len());
        out.push(&rest[..len]);
        data = &rest[len..];
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let mut assembler = Assembler::new(None, 4096);
    let packets = datagrams(data);
    for packet in &packets {
        assembler.push(packet, &mut |_, frame| assert!(frame.len() <= 4096));
    }
    assert_eq!(assembler.stats().packets, packets.len() as u64);
});
