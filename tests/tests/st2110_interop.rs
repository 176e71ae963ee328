//! mcm's ST 2110-20 packetizer and assembler against GStreamer's RFC 4175 elements, over
//! UDP on loopback: mcm -> `rtpvrawdepay` and `rtpvrawpay` -> mcm, UYVY (8-bit) and UYVP
//! (10-bit 4:2:2, the wire pgroup itself), and I420 (8-bit 4:2:0 pgroups, which span two
//! lines, converted to and from the planes as the bridges do). Frames compared by MD5.

use std::net::UdpSocket;
use std::time::Duration;

use mcm_core::format::VideoFormat;
use mcm_core::st2110::audio::{AudioDepacketizer, AudioFormat, AudioPacketizer, PcmEncoding};
use mcm_core::st2110::rfc4175::{
    Assembler, AssemblerConfig, Packetizer, PackingMode, Sampling, VideoGeometry,
};
use mcm_core::st2110::video_bridge::wire_to_grain;
use mcm_tests::{gst_launch, gst_launch_started};
use md5::{Digest, Md5};
use socket2::{Domain, Protocol, Socket, Type};

const W: u32 = 64;
const H: u32 = 48;
const FRAMES: usize = 20;

fn md5_hex(data: &[u8]) -> String {
    Md5::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// `checksumsink hash=md5` lines: the md5 of each buffer.
fn md5_lines(log: &[String]) -> Vec<String> {
    log.iter()
        .filter_map(|l| l.split_whitespace().nth(1))
        .filter(|h| h.len() == 32)
        .map(str::to_owned)
        .collect()
}

/// A UDP port free now on loopback (bound and released; the peer binds it next).
fn free_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .expect("a free UDP port")
}

/// A loopback UDP socket with a large receive buffer (GStreamer's payloaders send as fast
/// as they can) and a 200 ms read timeout, and its port.
fn receiving_socket() -> (UdpSocket, u16) {
    let raw = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP)).unwrap();
    let _ = raw.set_recv_buffer_size(8 << 20);
    raw.bind(
        &"127.0.0.1:0"
            .parse::<std::net::SocketAddr>()
            .unwrap()
            .into(),
    )
    .unwrap();
    let socket: UdpSocket = raw.into();
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let port = socket.local_addr().unwrap().port();
    (socket, port)
}

/// A wire frame as the flow (and GStreamer) lays it out.
fn picture(flow: VideoFormat, wire: &[u8]) -> Vec<u8> {
    // UYVY and UYVP are the pgroups; I420 is 1.5 bytes a pixel.
    let size = match flow {
        VideoFormat::I420 => (W * H * 3 / 2) as usize,
        _ => wire.len(),
    };
    let mut out = vec![0u8; size];
    wire_to_grain(flow, W as usize, H as usize, wire, &mut out);
    out
}

fn mcm_to_rtpvrawdepay(sampling: Sampling, depth: u8, format: &str, flow: VideoFormat) {
    mcm_to_rtpvrawdepay_in(sampling, depth, format, flow, 1400);
}

/// mcm's packetizer with RTP packets of up to `packet_size` bytes to GStreamer's
/// depayloader: every frame MD5-equal.
fn mcm_to_rtpvrawdepay_in(
    sampling: Sampling,
    depth: u8,
    format: &str,
    flow: VideoFormat,
    packet_size: usize,
) {
    let port = free_port();
    let rx = gst_launch_started(
        "gst receiver",
        &format!(
            "udpsrc address=127.0.0.1 port={port} mtu=9000 caps=application/x-rtp,media=(string)video,clock-rate=(int)90000,encoding-name=(string)RAW,sampling=(string){},depth=(string){depth},width=(string){W},height=(string){H},payload=(int)96 ! rtpvrawdepay ! video/x-raw,format={format} ! checksumsink hash=md5 sync=false",
            sampling.name()
        ),
    );
    let g = VideoGeometry::new(W, H, sampling, depth, false).unwrap();
    let mut p = Packetizer::new(g, PackingMode::General, 96, 0x5110_2110, packet_size).unwrap();
    p.set_sequence(0xFFFF_FFF8); // the ESN and the 16-bit number wrap during the test
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut rx = rx;
    let (mut sent, mut got) = (Vec::new(), Vec::new());
    for n in 0..FRAMES {
        let frame: Vec<u8> = (0..g.frame_bytes())
            .map(|i| ((i * 7 + n * 13) % 251) as u8)
            .collect();
        sent.push(md5_hex(&picture(flow, &frame)));
        p.packetize(&frame, (n * 3600) as u32, false, &mut |pkt| {
            socket.send_to(pkt, ("127.0.0.1", port)).unwrap();
        })
        .unwrap();
        // One frame in flight: the next goes once the depayloader has output this one
        // (no UDP buffer can overflow on loopback).
        let line = rx.wait_for(|l| md5_lines(&[l.to_string()]).len() == 1);
        got.extend(md5_lines(&[line]));
    }
    rx.kill();
    assert_eq!(got, sent, "{format}: frames differ");
}

fn rtpvrawpay_to_mcm(sampling: Sampling, depth: u8, format: &str, flow: VideoFormat) {
    rtpvrawpay_to_mcm_in(sampling, depth, format, flow, 1400);
}

/// GStreamer's payloader with packets of up to `mtu` bytes to mcm's assembler: every frame
/// MD5-equal, none incomplete or malformed.
fn rtpvrawpay_to_mcm_in(sampling: Sampling, depth: u8, format: &str, flow: VideoFormat, mtu: u32) {
    let (socket, port) = receiving_socket();
    let tx = gst_launch(
        "gst sender",
        &format!(
            "videotestsrc num-buffers={FRAMES} pattern=ball ! video/x-raw,format={format},width={W},height={H},framerate=25/1 ! tee name=t ! queue ! rtpvrawpay pt=96 mtu={mtu} ! udpsink host=127.0.0.1 port={port} sync=false t. ! queue ! checksumsink hash=md5"
        ),
    );
    let mut a = Assembler::new(AssemblerConfig {
        geometry: VideoGeometry::new(W, H, sampling, depth, false).unwrap(),
        payload_type: Some(96),
        ssrc: None,
    });
    let mut got = Vec::new();
    let mut buf = vec![0u8; 65536];
    // Bounded: stops at the frame count or after 25 quiet reads (5 s) in a row.
    let mut quiet = 0;
    while got.len() < FRAMES && quiet < 25 {
        match socket.recv(&mut buf) {
            Ok(n) => {
                quiet = 0;
                a.push(&buf[..n], &mut |info, data| {
                    if info.complete {
                        got.push(md5_hex(&picture(flow, data)));
                    }
                });
            }
            Err(_) => quiet += 1,
        }
    }
    let (status, log) = tx.finish();
    assert!(status.success(), "{log:?}");
    assert_eq!(got, md5_lines(&log), "{format}: frames differ");
    let s = a.stats();
    assert_eq!(
        (s.frames_complete as usize, s.frames_incomplete, s.malformed),
        (FRAMES, 0, 0)
    );
}

#[test]
fn mcm_sends_uyvy_to_rtpvrawdepay() {
    mcm_to_rtpvrawdepay(Sampling::YCbCr422, 8, "UYVY", VideoFormat::Uyvy);
}

#[test]
fn mcm_sends_10_bit_pgroups_to_rtpvrawdepay() {
    mcm_to_rtpvrawdepay(Sampling::YCbCr422, 10, "UYVP", VideoFormat::Uyvp);
}

#[test]
fn mcm_sends_i420_as_4_2_0_pgroups_to_rtpvrawdepay() {
    mcm_to_rtpvrawdepay(Sampling::YCbCr420, 8, "I420", VideoFormat::I420);
}

/// ST 2110-10's extended UDP size (jumbo packets, up to 8960 bytes) both ways.
#[test]
fn jumbo_10_bit_pgroups_cross_both_ways() {
    mcm_to_rtpvrawdepay_in(Sampling::YCbCr422, 10, "UYVP", VideoFormat::Uyvp, 8960);
    rtpvrawpay_to_mcm_in(Sampling::YCbCr422, 10, "UYVP", VideoFormat::Uyvp, 8960);
}

#[test]
fn rtpvrawpay_uyvy_reaches_mcm() {
    rtpvrawpay_to_mcm(Sampling::YCbCr422, 8, "UYVY", VideoFormat::Uyvy);
}

#[test]
fn rtpvrawpay_10_bit_pgroups_reach_mcm() {
    rtpvrawpay_to_mcm(Sampling::YCbCr422, 10, "UYVP", VideoFormat::Uyvp);
}

#[test]
fn rtpvrawpay_i420_reaches_mcm_as_4_2_0_pgroups() {
    rtpvrawpay_to_mcm(Sampling::YCbCr420, 8, "I420", VideoFormat::I420);
}

fn l24() -> AudioFormat {
    AudioFormat::new(PcmEncoding::L24, 2, 48_000, 1000).unwrap()
}

#[test]
fn mcm_sends_l24_to_rtpl24depay() {
    let port = free_port();
    let mut rx = gst_launch_started(
        "gst receiver",
        &format!(
            "udpsrc address=127.0.0.1 port={port} caps=application/x-rtp,media=(string)audio,clock-rate=(int)48000,encoding-name=(string)L24,channels=(int)2,payload=(int)97 ! rtpL24depay ! audio/x-raw,format=S24BE ! checksumsink hash=md5 sync=false"
        ),
    );
    let f = l24();
    let mut p = AudioPacketizer::new(f, 97, 0x3030);
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let samples: Vec<u8> = (0..100 * f.packet_bytes())
        .map(|i| (i * 29 % 241) as u8)
        .collect();
    let (mut sent, mut got) = (Vec::new(), Vec::new());
    let mut ts = 0;
    // A packet at a time, the next once the depayloader has output this one.
    for chunk in samples.chunks(f.packet_bytes()) {
        sent.push(md5_hex(chunk));
        ts = p
            .packetize(chunk, ts, &mut |pkt| {
                socket.send_to(pkt, ("127.0.0.1", port)).unwrap();
            })
            .unwrap();
        let line = rx.wait_for(|l| md5_lines(&[l.to_string()]).len() == 1);
        got.extend(md5_lines(&[line]));
    }
    rx.kill();
    assert_eq!(got, sent, "L24 packets differ");
}

#[test]
fn rtpl24pay_reaches_mcm_sample_exact() {
    let (socket, port) = receiving_socket();
    let dir = tempfile::tempdir().unwrap();
    let reference = dir.path().join("sent.raw");
    let tx = gst_launch(
        "gst sender",
        &format!(
            "audiotestsrc num-buffers=20 samplesperbuffer=480 wave=ticks ! audio/x-raw,format=S24BE,rate=48000,channels=2 ! tee name=t ! queue ! rtpL24pay pt=97 min-ptime=1000000 max-ptime=1000000 ! udpsink host=127.0.0.1 port={port} sync=false t. ! queue ! filesink location={}",
            reference.display()
        ),
    );
    let f = l24();
    let want_bytes = 20 * 480 * f.frame_bytes();
    let mut d = AudioDepacketizer::new(f, Some(97), 8);
    let mut got = Vec::new();
    let mut buf = vec![0u8; 65536];
    let mut quiet = 0;
    while got.len() < want_bytes && quiet < 25 {
        match socket.recv(&mut buf) {
            Ok(n) => {
                quiet = 0;
                d.push(&buf[..n], &mut |_, s| got.extend_from_slice(s));
            }
            Err(_) => quiet += 1,
        }
    }
    d.flush(&mut |_, s| got.extend_from_slice(s));
    let (status, log) = tx.finish();
    assert!(status.success(), "{log:?}");
    let sent = std::fs::read(&reference).unwrap();
    assert_eq!(sent.len(), want_bytes);
    assert!(
        got == sent,
        "samples differ ({} vs {} bytes)",
        got.len(),
        sent.len()
    );
    assert_eq!((d.stats().lost, d.stats().malformed), (0, 0));
}
