//! RFC 4175 (ST 2110-20) assembler.
//!
//! The input drives what a network does to two frames' packets: drops, duplicates,
//! reordering, another packet's data replayed under a packet's sequence number, and
//! garbage datagrams in between. Whatever happens, a frame handed out as complete is
//! exactly the frame sent; every datagram is counted; nothing panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mcm_core::st2110::rfc4175::{
    Assembler, AssemblerConfig, Packetizer, PackingMode, Sampling, VideoGeometry,
};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, ops)) = data.split_first() else {
        return;
    };
    let geometry = VideoGeometry::new(32, 4, Sampling::YCbCr422, 10, false).unwrap();
    let mode = [PackingMode::General, PackingMode::Block, PackingMode::SingleLine][mode as usize % 3];
    let mut packetizer = Packetizer::new(geometry, mode, 96, 7, 120).unwrap();
    let frames: Vec<(u32, Vec<u8>)> = (0..2u32)
        .map(|n| {
            let bytes = (0..geometry.frame_bytes()).map(|i| (i as u32 * 7 + n * 101) as u8).collect();
            (n * 3000, bytes)
        })
        .collect();
    let mut packets: Vec<Vec<u8>> = Vec::new();
    for (timestamp, frame) in &frames {
        packetizer
            .packetize(frame, *timestamp, false, &mut |p| packets.push(p.to_vec()))
            .unwrap();
    }
    // Each op: a packet position and what to do there.
    let mut stream: Vec<Vec<u8>> = packets.clone();
    for op in ops.chunks(2) {
        let (kind, at) = (op[0] % 5, op.get(1).copied().unwrap_or(0) as usize);
        if stream.is_empty() {
            break;
        }
        let i = at % stream.len();
        match kind {
            0 => {
                stream.remove(i);
            }
            1 => {
                let p = stream[i].clone();
                stream.insert(i, p);
            }
            2 if i + 1 < stream.len() => stream.swap(i, i + 1),
            3 => {
                // Another packet's data under this one's sequence numbers (RTP and
                // extended): a new packet to the receiver, covering bytes twice.
                let j = (i + 1 + at / 7) % packets.len();
                let mut replay = packets[j].clone();
                if replay.len() >= 14 && stream[i].len() >= 14 {
                    replay[2..4].copy_from_slice(&stream[i][2..4]);
                    replay[12..14].copy_from_slice(&stream[i][12..14]);
                    stream[i] = replay;
                }
            }
            _ => stream.insert(i, op.to_vec()),
        }
    }
    let mut assembler = Assembler::new(AssemblerConfig {
        geometry,
        payload_type: Some(96),
        ssrc: None,
    });
    let mut check = |info: &mcm_core::st2110::rfc4175::FrameInfo, got: &[u8]| {
        assert_eq!(got.len(), geometry.frame_bytes());
        if info.complete {
            let sent = frames
                .iter()
                .find(|(t, _)| *t == info.timestamp)
                .expect("a complete frame has a sent frame's timestamp");
            assert!(got == &sent.1[..], "a complete frame differs from the one sent");
        }
    };
    for datagram in &stream {
        assembler.push(datagram, &mut check);
    }
    assembler.flush(&mut check);
    assert_eq!(assembler.stats().packets, stream.len() as u64);
});
