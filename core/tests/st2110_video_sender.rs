//! ST 2110-20 senders over loopback UDP.
//! - UYVP grains are sent from the flow in place (no conversion copy). A writer that
//!   reuses a grain's ring slot while it is being sent must never produce a torn frame
//!   that the receiver takes as complete: the frame's last packet goes out only after a
//!   check.
//! - Several streams paced by one thread (`send_videos`): each reaches its own
//!   destination as the frames of its own flow, in order, byte for byte. A stream that
//!   fails ends alone; streams join and leave a running `SharedPacer`.
//! - With ST 2110-10's extended UDP size, a 1920-pixel line goes in one packet, the SDP
//!   says `MAXUDP=8960`, and frames arrive byte for byte.

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use mcm_core::flow::{Domain, GrainWriter, WriterOptions};
use mcm_core::format::{FlowDef, InterlaceMode, VideoFormat};
use mcm_core::st2110::rfc4175::{Assembler, AssemblerConfig, PackingMode, Sampling, VideoGeometry};
use mcm_core::st2110::video_bridge::{
    send_video, send_videos, Pacing, SenderOptions, SenderStats, SharedPacer, UdpSize,
};
use mcm_core::time::{current_index, index_to_timestamp, sleep_until_tai, Rational};
use uuid::Uuid;

mod common;
use common::domain;

/// Wide-paced, from any loopback port to `destination`.
fn sender(destination: SocketAddr, ssrc: u32, packing: PackingMode) -> SenderOptions {
    SenderOptions {
        destination,
        bind: "127.0.0.1:0".parse().unwrap(),
        payload_type: 96,
        ssrc,
        packing,
        pacing: Pacing::Wide,
        udp_size: Default::default(),
        frames: 0,
        offload: true,
        counters: None,
        sdp_file: None,
        sdp_written: None,
    }
}

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
    let (_dir, domain) = domain();
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
    let options = sender(rx.local_addr().unwrap(), 0x1234_5678, PackingMode::General);
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
            let first = current_index(rate);
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

const FRAMES: u64 = 40;

/// Frame `n` of stream `s`: its number in the first 8 bytes, then bytes from both.
fn picture(s: usize, n: u64, len: usize) -> Vec<u8> {
    let mut p: Vec<u8> = (0..len)
        .map(|i| (i as u64 * 7 + n * 13 + s as u64 * 101) as u8)
        .collect();
    p[..8].copy_from_slice(&n.to_le_bytes());
    p
}

/// Stream `s`: a progressive video flow in `domain` with its writer, and a loopback
/// socket to receive it on (300 ms read timeout).
fn video_stream(
    domain: &Domain,
    s: usize,
    format: VideoFormat,
    (w, h): (u32, u32),
    rate: Rational,
) -> (Uuid, GrainWriter, UdpSocket) {
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
    let writer = domain
        .create_grain_writer(&def, &WriterOptions::default())
        .unwrap();
    let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
    rx.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    (def.id, writer, rx)
}

/// The numbers of the complete frames of stream `s` that reach `rx`, each checked against
/// [`picture`], in arrival order; reads until `written` is set and the socket goes quiet
/// for its read timeout (bounded).
fn receive_pictures(
    rx: &UdpSocket,
    geometry: VideoGeometry,
    s: usize,
    written: &AtomicBool,
) -> Vec<u64> {
    let mut a = Assembler::new(AssemblerConfig {
        geometry,
        payload_type: Some(96),
        ssrc: None,
    });
    let len = geometry.frame_bytes();
    // Room for jumbo packets (ST 2110-10 extended UDP size).
    let (mut buf, mut numbers) = (vec![0u8; 9000], Vec::new());
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
}

#[test]
fn streams_paced_by_one_thread_each_arrive_byte_exact() {
    let (_dir, domain) = domain();
    let rate = Rational::new(50, 1);
    // Two 10-bit and one 8-bit 4:2:2 stream (pgroup flows, sent in place), 96x16.
    let formats = [VideoFormat::Uyvp, VideoFormat::Uyvy, VideoFormat::Uyvp];
    let (w, h) = (96u32, 16u32);
    let mut writers = Vec::new();
    let mut sockets = Vec::new();
    let mut streams = Vec::new();
    let mut geometries = Vec::new();
    for (s, &format) in formats.iter().enumerate() {
        let (id, writer, rx) = video_stream(&domain, s, format, (w, h), rate);
        writers.push(writer);
        streams.push((
            id,
            sender(
                rx.local_addr().unwrap(),
                0x2110_0000 + s as u32,
                PackingMode::SingleLine,
            ),
        ));
        sockets.push(rx);
        let depth = if format == VideoFormat::Uyvy { 8 } else { 10 };
        geometries.push(VideoGeometry::new(w, h, Sampling::YCbCr422, depth, false).unwrap());
    }
    let stop = AtomicBool::new(false);
    let written = AtomicBool::new(false);
    let lens: Vec<usize> = geometries.iter().map(VideoGeometry::frame_bytes).collect();
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
            .iter()
            .zip(&geometries)
            .enumerate()
            .map(|(s, (rx, &g))| scope.spawn(move || receive_pictures(rx, g, s, written)))
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
            stats[s].0
        );
        let (stats, failure) = &stats[s];
        assert!(failure.is_none(), "stream {s}: {failure:?}");
        assert_eq!(stats.timing.iter().sum::<u64>(), stats.frames, "stream {s}");
    }
}

/// One thread, two streams, and one of them cannot be sent (an ancillary flow): that
/// stream ends with its error and the other goes on, its frames whole and in order.
#[test]
fn a_stream_that_fails_ends_alone() {
    let (_dir, domain) = domain();
    let rate = Rational::new(50, 1);
    let (w, h) = (96u32, 16u32);
    let video = FlowDef::video(
        Uuid::new_v4(),
        "video",
        VideoFormat::Uyvp,
        w,
        h,
        rate,
        InterlaceMode::Progressive,
    )
    .unwrap();
    let anc = FlowDef::ancillary(Uuid::new_v4(), "anc", rate).unwrap();
    let options = WriterOptions::default();
    let mut video_writer = domain.create_grain_writer(&video, &options).unwrap();
    let mut anc_writer = domain.create_grain_writer(&anc, &options).unwrap();
    let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
    rx.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let elsewhere = UdpSocket::bind("127.0.0.1:0").unwrap();
    let streams = vec![
        (
            video.id,
            sender(rx.local_addr().unwrap(), 0x2110, PackingMode::SingleLine),
        ),
        (
            anc.id,
            sender(
                elsewhere.local_addr().unwrap(),
                0x2111,
                PackingMode::SingleLine,
            ),
        ),
    ];
    let g = VideoGeometry::new(w, h, Sampling::YCbCr422, 10, false).unwrap();
    let len = g.frame_bytes();
    let (stop, written) = (AtomicBool::new(false), AtomicBool::new(false));
    const N: u64 = 10;
    let (numbers, results) = std::thread::scope(|scope| {
        let sender = scope.spawn(|| send_videos(domain.clone(), &streams, &stop));
        scope.spawn(|| {
            let first = current_index(rate) + 2;
            for n in 0..N {
                sleep_until_tai(index_to_timestamp(rate, first + n));
                anc_writer.open_grain(first + n).unwrap().commit().unwrap();
                let mut grain = video_writer.open_grain(first + n).unwrap();
                grain.payload()[..len].copy_from_slice(&picture(0, n, len));
                grain.commit().unwrap();
            }
            written.store(true, Ordering::Release);
        });
        let numbers = receive_pictures(&rx, g, 0, &written);
        stop.store(true, Ordering::Release);
        (numbers, sender.join().unwrap().unwrap())
    });
    let (video_stats, video_failure) = &results[0];
    assert!(video_failure.is_none(), "{video_failure:?}");
    assert!(
        numbers.len() as u64 >= N * 3 / 4 && numbers.windows(2).all(|p| p[0] < p[1]),
        "{numbers:?} ({video_stats:?})"
    );
    let failure = results[1].1.as_ref().map(|e| e.to_string());
    assert!(
        failure.as_deref().is_some_and(|e| e.contains("not video")),
        "{failure:?}"
    );
}

/// A `SharedPacer` takes a stream, then a second while the first is under way; the first
/// leaves (its stop flag) and the second goes on. Each arrives byte-exact and in order,
/// and each is told its end with its figures.
#[test]
fn streams_join_and_leave_a_shared_pacer() {
    let (_dir, domain) = domain();
    let rate = Rational::new(50, 1);
    let (w, h) = (96u32, 16u32);
    let g = VideoGeometry::new(w, h, Sampling::YCbCr422, 10, false).unwrap();
    let len = g.frame_bytes();
    let mut writers = Vec::new();
    let mut ids = Vec::new();
    let mut sockets = Vec::new();
    for s in 0..2 {
        let (id, writer, rx) = video_stream(&domain, s, VideoFormat::Uyvp, (w, h), rate);
        writers.push(writer);
        ids.push(id);
        sockets.push(rx);
    }
    let pacer = SharedPacer::start();
    let stops = [
        std::sync::Arc::new(AtomicBool::new(false)),
        std::sync::Arc::new(AtomicBool::new(false)),
    ];
    let (ended_tx, ended) = std::sync::mpsc::channel::<(usize, Result<SenderStats, String>)>();
    let add = |s: usize| {
        let ended_tx = ended_tx.clone();
        let options = sender(
            sockets[s].local_addr().unwrap(),
            0x2120 + s as u32,
            PackingMode::SingleLine,
        );
        pacer
            .add(
                domain.clone(),
                ids[s],
                options,
                stops[s].clone(),
                move |r| {
                    let _ = ended_tx.send((s, r.map_err(|e| e.to_string())));
                },
            )
            .unwrap();
    };
    // Frames 0-5: stream 0 alone; 6-11: both; 12-17: stream 1 alone.
    const N: u64 = 18;
    let written = AtomicBool::new(false);
    let received = std::thread::scope(|scope| {
        let receivers: Vec<_> = sockets
            .iter()
            .enumerate()
            .map(|(s, rx)| {
                let written = &written;
                scope.spawn(move || receive_pictures(rx, g, s, written))
            })
            .collect();
        add(0);
        let first = current_index(rate) + 2;
        for n in 0..N {
            if n == 6 {
                add(1);
            }
            if n == 12 {
                stops[0].store(true, Ordering::Release);
            }
            sleep_until_tai(index_to_timestamp(rate, first + n));
            for (s, writer) in writers.iter_mut().enumerate() {
                let mut grain = writer.open_grain(first + n).unwrap();
                grain.payload()[..len].copy_from_slice(&picture(s, n, len));
                grain.commit().unwrap();
            }
        }
        written.store(true, Ordering::Release);
        let received: Vec<Vec<u64>> = receivers.into_iter().map(|r| r.join().unwrap()).collect();
        stops[1].store(true, Ordering::Release);
        received
    });
    // Both told their end, with what they sent.
    let mut ends: Vec<_> = (0..2)
        .map(|_| ended.recv_timeout(Duration::from_secs(10)).unwrap())
        .collect();
    ends.sort_by_key(|(s, _)| *s);
    for (s, result) in &ends {
        let stats = result.as_ref().unwrap();
        assert!(stats.frames >= 4, "stream {s}: {stats:?}");
    }
    for (s, numbers) in received.iter().enumerate() {
        assert!(numbers.windows(2).all(|p| p[0] < p[1]), "{s}: {numbers:?}");
    }
    // Stream 0 stopped at frame 12, stream 1 (joined at 6) went on to the end.
    assert!(received[0].iter().all(|&n| n < 13), "{:?}", received[0]);
    assert!(received[0].len() >= 8, "{:?}", received[0]);
    assert!(received[1].iter().any(|&n| n >= 15), "{:?}", received[1]);
    assert!(received[1].iter().all(|&n| n >= 5), "{:?}", received[1]);
}

#[test]
fn jumbo_packets_carry_a_line_each_and_arrive_byte_exact() {
    let (_dir, domain) = domain();
    let rate = Rational::new(50, 1);
    // 10-bit 4:2:2, 1920 pixels: 4800 bytes of pgroups a line, more than a standard
    // packet (1352 bytes) holds, less than an extended one (8960).
    let (w, h) = (1920u32, 8u32);
    let (id, mut writer, rx) = video_stream(&domain, 0, VideoFormat::Uyvp, (w, h), rate);
    let (sdp_tx, sdp_rx) = std::sync::mpsc::channel();
    let dir = tempfile::tempdir().unwrap();
    let options = SenderOptions {
        udp_size: UdpSize::Extended,
        sdp_file: Some(dir.path().join("jumbo.sdp")),
        sdp_written: Some(sdp_tx),
        ..sender(
            rx.local_addr().unwrap(),
            0x2110_8960,
            PackingMode::SingleLine,
        )
    };
    let geometry = VideoGeometry::new(w, h, Sampling::YCbCr422, 10, false).unwrap();
    let len = geometry.frame_bytes();
    let stop = AtomicBool::new(false);
    let written = AtomicBool::new(false);
    let (numbers, stats) = std::thread::scope(|scope| {
        let sender = scope.spawn(|| send_video(domain.clone(), id, &options, &stop));
        scope.spawn(|| {
            let first = current_index(rate) + 2;
            for n in 0..FRAMES {
                sleep_until_tai(index_to_timestamp(rate, first + n));
                let mut grain = writer.open_grain(first + n).unwrap();
                grain.payload()[..len].copy_from_slice(&picture(0, n, len));
                grain.commit().unwrap();
            }
            written.store(true, Ordering::Release);
        });
        let numbers = receive_pictures(&rx, geometry, 0, &written);
        stop.store(true, Ordering::Release);
        (numbers, sender.join().unwrap().unwrap())
    });
    assert!(
        numbers.len() as u64 >= FRAMES * 3 / 4 && numbers.windows(2).all(|p| p[0] < p[1]),
        "{} of {FRAMES} frames, in order: {numbers:?}",
        numbers.len()
    );
    // One packet a line: a standard-size sender needs four.
    assert_eq!(stats.packets, stats.frames * u64::from(h), "{stats:?}");
    let sdp = sdp_rx.recv_timeout(Duration::from_secs(5)).unwrap();
    assert!(sdp.contains("; MAXUDP=8960"), "{sdp}");
}
