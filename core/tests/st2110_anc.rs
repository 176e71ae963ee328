//! ST 2110-40 bridges over loopback UDP: an ancillary data flow (closed captions and
//! timecode, RFC 8331 in MXL data grains) arrives grain for grain, byte-exact, and
//! corrupt packets are counted, never committed.

use std::net::UdpSocket;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use mcm_core::flow::{Domain, FollowError, Follower, WriterOptions};
use mcm_core::format::FlowDef;
use mcm_core::st2110::anc::{self, with_parity, AncField, AncPacket};
use mcm_core::st2110::anc_bridge::{
    receive_anc, send_anc_from, AncReceiverOptions, AncSenderOptions,
};
use mcm_core::st2110::rtp::RtpHeader;
use mcm_core::time::Rational;
use uuid::Uuid;

mod common;
use common::domain;

/// Frame `i`'s ANC: a CEA-708 caption packet (DID 0x61, SDID 0x01) and an ATC timecode
/// packet (DID 0x60, SDID 0x60), their words depending on `i`.
fn frame_anc(i: u64) -> Vec<AncPacket> {
    let cdp: Vec<u16> = (0..20u64)
        .map(|k| with_parity((k * 13 + i) as u8))
        .collect();
    let tc: Vec<u16> = (0..16u64).map(|k| with_parity((k + i * 3) as u8)).collect();
    vec![
        AncPacket {
            c: false,
            line: 9,
            offset: 0xFFF,
            s: false,
            stream: 0,
            did: 0x61,
            sdid: 0x01,
            udw: cdp,
        },
        AncPacket {
            c: false,
            line: 10,
            offset: 0xFFF,
            s: false,
            stream: 0,
            did: 0x60,
            sdid: 0x60,
            udw: tc,
        },
    ]
}

/// The grain bytes of frame `i`: the RFC 8331 payload from its Length field on (MXL).
fn grain_bytes(i: u64) -> Vec<u8> {
    let header = RtpHeader {
        marker: true,
        payload_type: 100,
        sequence: 0,
        timestamp: 0,
        ssrc: 0,
    };
    anc::packetize(header, 0, AncField::Progressive, &frame_anc(i)).unwrap()[14..].to_vec()
}

#[test]
fn captions_and_timecode_cross_st2110_40_exact() {
    const GRAINS: u64 = 50;
    let (_da, a) = domain();
    let (_db, b) = domain();
    let rate = Rational::new(50, 1);
    let sent_def = FlowDef::ancillary(Uuid::new_v4(), "anc tx", rate).unwrap();
    let got_def = FlowDef::ancillary(Uuid::new_v4(), "anc rx", rate).unwrap();
    let socket = mcm_core::st2110::udp::udp_socket("127.0.0.1:0".parse().unwrap()).unwrap();
    let port = socket.local_addr().unwrap().port();
    let stop = AtomicBool::new(false);
    let sdp_dir = tempfile::tempdir().unwrap();
    let sdp_path = sdp_dir.path().join("anc.sdp");
    std::thread::scope(|s| {
        let receiver_options = AncReceiverOptions {
            bind: format!("127.0.0.1:{port}").parse().unwrap(),
            multicast: None,
            payload_type: Some(100),
            flow: got_def.clone(),
            reliable: true,
            grains: GRAINS,
            counters: None,
        };
        let stop = &stop;
        let b_rx = Domain::open(b.path()).unwrap();
        let receiver = s.spawn(move || receive_anc(socket, b_rx, &receiver_options, stop));
        let reader = s.spawn(|| {
            let mut f = Follower::new(Domain::open(b.path()).unwrap(), got_def.id, true).unwrap();
            let mut got = Vec::new();
            loop {
                match f.next_grain(Duration::from_secs(10)) {
                    Ok(g) => got.push(g.payload().to_vec()),
                    Err(FollowError::Closed) => break got,
                    Err(e) => panic!("reader: {e:?} after {} grains", got.len()),
                }
            }
        });
        // Garbage and a caption packet with a broken checksum first: counted, not committed.
        let junk = UdpSocket::bind("127.0.0.1:0").unwrap();
        junk.send_to(b"not rtp", ("127.0.0.1", port)).unwrap();
        let header = RtpHeader {
            marker: true,
            payload_type: 100,
            sequence: 0,
            timestamp: 0,
            ssrc: 9,
        };
        let mut bad = anc::packetize(header, 0, AncField::Progressive, &frame_anc(0)).unwrap();
        let last = bad.len() - 5;
        bad[last] ^= 0x10;
        junk.send_to(&bad, ("127.0.0.1", port)).unwrap();

        let mut writer = a
            .create_grain_writer(
                &sent_def,
                &WriterOptions {
                    back_pressure: Some(Duration::from_secs(5)),
                    ..Default::default()
                },
            )
            .unwrap();
        let sender_options = AncSenderOptions {
            destination: format!("127.0.0.1:{port}").parse().unwrap(),
            bind: "127.0.0.1:0".parse().unwrap(),
            payload_type: 100,
            ssrc: 0x2110_0040,
            reliable: true,
            counters: None,
            sdp_file: Some(sdp_path.clone()),
        };
        // The sender's reliable follower exists before the first grain: it gets them all.
        let follower = Follower::new(Domain::open(a.path()).unwrap(), sent_def.id, true).unwrap();
        let sender = s.spawn(move || send_anc_from(follower, &sender_options, stop));
        let first = mcm_core::time::current_index(rate);
        for i in 0..GRAINS {
            let mut g = loop {
                match writer.open_grain(first + i) {
                    Ok(g) => break g,
                    Err(mcm_core::flow::FlowError::BackPressureTimeout { .. }) => continue,
                    Err(e) => panic!("{e}"),
                }
            };
            let bytes = grain_bytes(i);
            g.payload()[..bytes.len()].copy_from_slice(&bytes);
            g.commit().unwrap();
        }
        writer.end_of_stream().unwrap();
        let sent = sender.join().unwrap().unwrap();
        assert_eq!((sent.packets, sent.malformed), (GRAINS, 0));
        // The sender published its stream's SDP: RFC 8331 at the receiver's port.
        let sdp = std::fs::read_to_string(&sdp_path).unwrap();
        let media = &mcm_core::st2110::sdp::parse(&sdp).unwrap()[0];
        assert_eq!(
            (
                media.encoding.as_str(),
                media.clock_rate,
                media.port,
                media.payload_type
            ),
            ("smpte291", 90000, port, 100),
            "{sdp}"
        );
        let stats = receiver.join().unwrap().unwrap();
        assert_eq!((stats.grains, stats.malformed), (GRAINS, 2), "{stats:?}");
        let got = reader.join().unwrap();
        assert_eq!(got.len() as u64, GRAINS);
        for (i, g) in got.iter().enumerate() {
            let want = grain_bytes(i as u64);
            assert_eq!(g[..want.len()], want[..], "grain {i}");
        }
    });
}
