//! Several ST 2110-20 streams paced by one thread (`send_videos`): each reaches its own
//! destination as the frames of its own flow, in order, byte for byte.

use std::net::UdpSocket;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use mcm_core::flow::{Domain, WriterOptions};
use mcm_core::format::{FlowDef, InterlaceMode, VideoFormat};
use mcm_core::st2110::rfc4175::{Assembler, AssemblerConfig, PackingMode, Sampling, VideoGeometry};
use mcm_core::st2110::video_bridge::{send_videos, Pacing, SenderOptions};
use mcm_core::time::{current_index, index_to_timestamp, sleep_until_tai, Rational};
use uuid::Uuid;

const FRAMES: u64 = 40;

/// Frame `n` of stream `s`: its number in the first 8 bytes, then bytes from both.
fn picture(s: usize, n: u64, len: usize) -> Vec<u8> {
    let mut p: Vec<u8> = (0..len)
        .map(|i| (i as u64 * 7 + n * 13 + s as u64 * 101) as u8)
        .collect();
    p[..8].copy_from_slice(&n.to_le_bytes());
    p
}

#[test]
fn streams_paced_by_one_thread_each_arrive_byte_exact() {
    let dir = tempfile::Builder::new()
        .prefix("mcm-test-")
        .tempdir_in("/dev/shm")
        .unwrap();
    let domain = Domain::open(dir.path()).unwrap();
    let rate = Rational::new(50, 1);
    // Two 10-bit and one 8-bit 4:2:2 stream (pgroup flows, sent in place), 96x16.
    let formats = [VideoFormat::Uyvp, VideoFormat::Uyvy, VideoFormat::Uyvp];
    let (w, h) = (96u32, 16u32);
    let mut writers = Vec::new();
    let mut sockets = Vec::new();
    let mut streams = Vec::new();
    let mut assemblers = Vec::new();
    for (s, &format) in formats.iter().enumerate() {
        let def = FlowDef::video(
            Uuid::new_v4(),
            &format!("stream {s}"),
            format,
            w,
            h,
            rate,
            InterlaceMode::Progressive,
        )
        .unwrap();
        writers.push(
            domain
                .create_grain_writer(&def, &WriterOptions::default())
                .unwrap(),
        );
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        rx.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        streams.push((
            def.id,
            SenderOptions {
                destination: rx.local_addr().unwrap(),
                bind: "127.0.0.1:0".parse().unwrap(),
                payload_type: 96,
                ssrc: 0x2110_0000 + s as u32,
                packing: PackingMode::SingleLine,
                pacing: Pacing::Wide,
                frames: 0,
                offload: true,
                counters: None,
                sdp_file: None,
                sdp_written: None,
            },
        ));
        sockets.push(rx);
        let depth = if format == VideoFormat::Uyvy { 8 } else { 10 };
        let g = VideoGeometry::new(w, h, Sampling::YCbCr422, depth, false).unwrap();
        assemblers.push((
            g,
            Assembler::new(AssemblerConfig {
                geometry: g,
                payload_type: Some(96),
                ssrc: None,
            }),
        ));
    }
    let stop = AtomicBool::new(false);
    let written = AtomicBool::new(false);
    let lens: Vec<usize> = assemblers.iter().map(|(g, _)| g.frame_bytes()).collect();
    let (received, stats) = std::thread::scope(|scope| {
        let sender = scope.spawn(|| send_videos(domain.clone(), &streams, &stop));
        let lens = &lens;
        scope.spawn(|| {
            // A live source: each grain at its time.
            let first = current_index(rate) + 2;
            for n in 0..FRAMES {
                sleep_until_tai(index_to_timestamp(rate, first + n));
                for (s, writer) in writers.iter_mut().enumerate() {
                    let mut grain = writer.open_grain(first + n).unwrap();
                    grain.payload()[..lens[s]].copy_from_slice(&picture(s, n, lens[s]));
                    grain.commit().unwrap();
                }
            }
            written.store(true, Ordering::Release);
        });
        // One receiver per stream; done once the source ended and its socket went quiet
        // for a read timeout (bounded).
        let written = &written;
        let receivers: Vec<_> = sockets
            .into_iter()
            .zip(assemblers)
            .enumerate()
            .map(|(s, (rx, (g, mut a)))| {
                scope.spawn(move || {
                    let (mut buf, mut numbers) = (vec![0u8; 2048], Vec::new());
                    let len = g.frame_bytes();
                    for _ in 0..100_000 {
                        let Ok(n) = rx.recv(&mut buf) else {
                            if written.load(Ordering::Acquire) {
                                break;
                            }
                            continue;
                        };
                        a.push(&buf[..n], &mut |info, frame| {
                            if info.complete {
                                let number = u64::from_le_bytes(frame[..8].try_into().unwrap());
                                assert!(
                                    frame == picture(s, number, len),
                                    "stream {s} frame {number} differs"
                                );
                                numbers.push(number);
                            }
                        });
                    }
                    numbers
                })
            })
            .collect();
        let received: Vec<Vec<u64>> = receivers.into_iter().map(|r| r.join().unwrap()).collect();
        stop.store(true, Ordering::Release);
        (received, sender.join().unwrap().unwrap())
    });
    for (s, numbers) in received.iter().enumerate() {
        assert!(
            numbers.windows(2).all(|p| p[0] < p[1]),
            "stream {s} out of order: {numbers:?}"
        );
        // A live sender on a loaded machine may skip a grain now and then.
        assert!(
            numbers.len() as u64 >= FRAMES * 3 / 4,
            "stream {s}: {} of {FRAMES} frames ({:?})",
            numbers.len(),
            stats[s]
        );
        assert_eq!(
            stats[s].timing.iter().sum::<u64>(),
            stats[s].frames,
            "stream {s}"
        );
    }
}
