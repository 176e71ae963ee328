//! UYVP grains are sent from the flow in place (no conversion copy). A writer that reuses
//! a grain's ring slot while it is being sent must never produce a torn frame that the
//! receiver takes as complete: the frame's last packet goes out only after a check.

use std::net::UdpSocket;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use mcm_core::flow::{Domain, WriterOptions};
use mcm_core::format::{FlowDef, InterlaceMode, VideoFormat};
use mcm_core::st2110::rfc4175::{Assembler, AssemblerConfig, PackingMode, Sampling, VideoGeometry};
use mcm_core::st2110::video_bridge::{send_video, Pacing, SenderOptions};
use mcm_core::time::Rational;
use uuid::Uuid;

/// Grains written, in pairs: the second's successor rewrites the first's ring slot (of
/// two) while the sender may still be sending it; then a pause.
const GRAINS: u64 = 1200;

/// Busy-waits `d` (load shape for the writer, not synchronization).
fn spin(d: Duration) {
    let until = Instant::now() + d;
    while Instant::now() < until {
        std::hint::spin_loop();
    }
}

#[test]
fn grains_overwritten_while_sent_in_place_never_arrive_as_complete_frames() {
    let dir = tempfile::Builder::new()
        .prefix("mcm-test-")
        .tempdir_in("/dev/shm")
        .unwrap();
    let domain = Domain::open(dir.path()).unwrap();
    // 96x2 UYVP: 480 bytes, one GPM packet a frame.
    let (w, h) = (96u32, 2u32);
    let rate = Rational::new(1000, 1);
    let id = Uuid::new_v4();
    let def = FlowDef::video(
        id,
        "in place",
        VideoFormat::Uyvp,
        w,
        h,
        rate,
        InterlaceMode::Progressive,
    )
    .unwrap();
    let mut writer = domain
        .create_grain_writer(
            &def,
            &WriterOptions {
                grain_count: Some(2),
                ..Default::default()
            },
        )
        .unwrap();
    let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
    rx.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let options = SenderOptions {
        destination: rx.local_addr().unwrap(),
        bind: "127.0.0.1:0".parse().unwrap(),
        payload_type: 96,
        ssrc: 0x1234_5678,
        packing: PackingMode::General,
        pacing: Pacing::Wide,
        frames: 0,
        offload: true,
        counters: None,
        sdp_file: None,
        sdp_written: None,
    };
    let stop = AtomicBool::new(false);
    let written = AtomicBool::new(false);
    let g = VideoGeometry::new(w, h, Sampling::YCbCr422, 10, false).unwrap();
    let mut assembler = Assembler::new(AssemblerConfig {
        geometry: g,
        payload_type: Some(96),
        ssrc: None,
    });
    let (mut complete, mut torn_complete) = (0u64, 0u64);
    let stats = std::thread::scope(|s| {
        let sender = s.spawn(|| send_video(domain.clone(), id, &options, &stop));
        s.spawn(|| {
            let first = mcm_core::time::current_index(rate);
            for i in first..first + GRAINS {
                let mut grain = writer.open_grain(i).unwrap();
                // Each grain is one byte value throughout: a torn one mixes two. Written
                // slowly, in pieces, so a sender reading the slot meanwhile sees both.
                let payload = grain.payload();
                let piece = payload.len().div_ceil(8);
                for chunk in payload.chunks_mut(piece) {
                    chunk.fill((i % 251) as u8);
                    spin(Duration::from_micros(25));
                }
                grain.commit().unwrap();
                if i % 2 == 1 {
                    spin(Duration::from_micros(1000));
                }
            }
            written.store(true, Ordering::Release);
        });
        let mut buf = vec![0u8; 2048];
        // Bounded: the writer ends after GRAINS grains, then the socket goes quiet.
        for _ in 0..100_000 {
            match rx.recv(&mut buf) {
                Ok(n) => assembler.push(&buf[..n], &mut |info, frame| {
                    if info.complete {
                        complete += 1;
                        if frame.iter().any(|&b| b != frame[0]) {
                            torn_complete += 1;
                        }
                    }
                }),
                Err(_) if written.load(Ordering::Acquire) => break,
                Err(_) => {}
            }
        }
        stop.store(true, Ordering::Release);
        sender.join().unwrap().unwrap()
    });
    assert_eq!(torn_complete, 0, "{complete} complete frames, {stats:?}");
    assert!(
        stats.torn > 0,
        "the writer never overwrote a grain being sent: {stats:?}"
    );
    assert!(complete > 0, "no frame arrived complete: {stats:?}");
}
