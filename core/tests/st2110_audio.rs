//! ST 2110-30 bridges over loopback UDP: a PCM flow sent as L24 and received into another
//! flow arrives sample-exact, grain for grain.

use std::net::UdpSocket;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use mcm_core::flow::{Domain, FollowError, Follower, WriterOptions};
use mcm_core::format::{FlowDef, PcmFormat};
use mcm_core::st2110::audio_bridge::{
    bind_receiver, receive_audio_on, send_audio_from, AudioReceiverOptions, AudioSenderOptions,
};
use uuid::Uuid;

mod common;
use common::domain;

/// Grain `i` of the test stream: 48 stereo L24 samples, every byte depending on `i`.
fn grain_bytes(i: u64) -> Vec<u8> {
    (0..48 * 2 * 3)
        .map(|b| (b as u64 * 31 + i * 7 + (b as u64 >> 3) * i) as u8)
        .collect()
}

#[test]
fn l24_grains_cross_st2110_30_sample_exact() {
    const GRAINS: u64 = 300;
    let (_da, a) = domain();
    let (_db, b) = domain();
    let sent_def = FlowDef::pcm(Uuid::new_v4(), "tx", PcmFormat::S24Be, 48_000, 2, 48).unwrap();
    let got_def = FlowDef::pcm(Uuid::new_v4(), "rx", PcmFormat::S24Be, 48_000, 2, 48).unwrap();
    let port = UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .unwrap()
        .port();
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        // The receiver (socket bound before anything is sent) and a reliable reader of its
        // flow, so the test sees every grain it writes.
        let receiver_options = AudioReceiverOptions {
            bind: format!("127.0.0.1:{port}").parse().unwrap(),
            multicast: None,
            payload_type: Some(97),
            flow: got_def.clone(),
            reliable: true,
            reorder_window: 8,
            grains: GRAINS,
            counters: None,
        };
        let socket = bind_receiver(&receiver_options).unwrap();
        let b_for_receiver = Domain::open(b.path()).unwrap();
        let stop = &stop;
        let receiver =
            s.spawn(move || receive_audio_on(socket, b_for_receiver, &receiver_options, stop));
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
        // Writer and a reliable sender: every grain is sent, none skipped.
        let mut writer = a
            .create_grain_writer(
                &sent_def,
                &WriterOptions {
                    back_pressure: Some(Duration::from_secs(5)),
                    ..Default::default()
                },
            )
            .unwrap();
        let sender_options = AudioSenderOptions {
            destination: format!("127.0.0.1:{port}").parse().unwrap(),
            bind: "127.0.0.1:0".parse().unwrap(),
            payload_type: 97,
            ssrc: 0x2110_0030,
            packets: 0,
            reliable: true,
            counters: None,
        };
        // The sender's reliable follower exists before the first grain: it gets them all.
        let follower = Follower::new(Domain::open(a.path()).unwrap(), sent_def.id, true).unwrap();
        let sender = s.spawn(move || send_audio_from(follower, &sender_options, stop));
        let first = mcm_core::time::current_index(writer.grain_rate());
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
            g.commit_len(bytes.len()).unwrap();
        }
        writer.end_of_stream().unwrap();
        let sent = sender.join().unwrap().unwrap();
        assert_eq!(sent.packets, GRAINS);
        let stats = receiver.join().unwrap().unwrap();
        assert_eq!((stats.lost, stats.malformed), (0, 0), "{stats:?}");
        let got = reader.join().unwrap();
        assert_eq!(got.len() as u64, GRAINS);
        for (i, g) in got.iter().enumerate() {
            assert!(*g == grain_bytes(i as u64), "grain {i} differs");
        }
    });
}
