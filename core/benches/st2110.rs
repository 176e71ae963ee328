//! CPU cost per 1080p 10-bit 4:2:2 frame of the ST 2110-20 protocol core, sans I/O:
//! v210 -> pgroups, packetizing (GPM and BPM, into a reused buffer), reassembling, and
//! pgroups -> v210. At 59.94 fps one frame period is 16.7 ms: the sum of these per frame,
//! against that, bounds the streams one core can carry before any socket cost.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use mcm_core::format::VideoFormat;
use mcm_core::st2110::convert::{uyvp_frame_to_v210, v210_frame_to_uyvp, v210_stride};
use mcm_core::st2110::rfc4175::{
    Assembler, AssemblerConfig, Packetizer, PackingMode, Sampling, VideoGeometry,
    DEFAULT_PACKET_SIZE,
};
use mcm_core::st2110::video_bridge::{grain_to_wire, wire_of, wire_to_grain};
use mcm_core::testpattern::fill_v210;

fn benches(c: &mut Criterion) {
    let (w, h) = (1920usize, 1080usize);
    let g = VideoGeometry::new(w as u32, h as u32, Sampling::YCbCr422, 10, false).unwrap();
    let mut v210 = vec![0u8; v210_stride(w) * h];
    fill_v210(w as u32, h as u32, 3, &mut v210);
    let mut wire = vec![0u8; g.frame_bytes()];
    v210_frame_to_uyvp(&v210, w, h, &mut wire);

    let mut group = c.benchmark_group("st2110-20 1080p 10-bit");
    group.throughput(Throughput::Bytes(g.frame_bytes() as u64));
    group.bench_function("v210 -> pgroups", |b| {
        b.iter(|| v210_frame_to_uyvp(black_box(&v210), w, h, &mut wire))
    });
    let mut back = vec![0u8; v210.len()];
    group.bench_function("pgroups -> v210", |b| {
        b.iter(|| uyvp_frame_to_v210(black_box(&wire), w, h, &mut back))
    });
    for mode in [PackingMode::General, PackingMode::Block] {
        let mut p = Packetizer::new(g, mode, 96, 1, DEFAULT_PACKET_SIZE).unwrap();
        let mut bytes = 0usize;
        group.bench_function(format!("packetize {mode:?}"), |b| {
            b.iter(|| {
                p.packetize(black_box(&wire), 0, false, &mut |pkt| bytes += pkt.len())
                    .unwrap()
            })
        });
        black_box(bytes);
    }
    let mut p = Packetizer::new(g, PackingMode::General, 96, 1, DEFAULT_PACKET_SIZE).unwrap();
    let mut packets: Vec<Vec<u8>> = Vec::new();
    for n in 0..8u32 {
        p.packetize(&wire, n * 1501, false, &mut |pkt| {
            packets.push(pkt.to_vec())
        })
        .unwrap();
    }
    let per_frame = packets.len() / 8;
    let mut a = Assembler::new(AssemblerConfig {
        geometry: g,
        payload_type: Some(96),
        ssrc: None,
    });
    let mut next = 0usize;
    group.bench_function("assemble", |b| {
        b.iter(|| {
            // One frame's packets per iteration, cycling through 8 frames.
            let start = (next % 8) * per_frame;
            next += 1;
            let mut frames = 0;
            for pkt in &packets[start..start + per_frame] {
                a.push(pkt, &mut |info, _| frames += usize::from(info.complete));
            }
            frames
        })
    });
    group.finish();

    // The planar formats' conversions, per 1080p frame.
    let mut group = c.benchmark_group("st2110-20 1080p planar");
    for format in [
        VideoFormat::I420,
        VideoFormat::I422_10le,
        VideoFormat::P010_10le,
    ] {
        let (sampling, depth) = wire_of(format).unwrap();
        let g = VideoGeometry::new(w as u32, h as u32, sampling, depth, false).unwrap();
        let size: usize = format
            .planes(w as u32, h as u32)
            .iter()
            .map(|(row, rows)| row * rows)
            .sum();
        let grain: Vec<u8> = (0..size).map(|i| (i % 251) as u8 & 0x3F).collect();
        let mut wire = vec![0u8; g.frame_bytes()];
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_function(format!("{} -> pgroups", format.name()), |b| {
            b.iter(|| grain_to_wire(format, w, h, black_box(&grain), &mut wire))
        });
        let mut back = vec![0u8; size];
        group.bench_function(format!("pgroups -> {}", format.name()), |b| {
            b.iter(|| wire_to_grain(format, w, h, black_box(&wire), &mut back))
        });
    }
    group.finish();
}

criterion_group!(st2110, benches);
criterion_main!(st2110);
