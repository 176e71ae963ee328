//! GStreamer pipelines in separate processes through mcmsink and mcmsrc.

use std::path::PathBuf;

use mcm_tests::{checksums, gst_launch, gst_launch_started, start_proxy};

fn clip() -> Option<PathBuf> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/media/bigbuckbunny.mp4");
    p.exists().then_some(p)
}

/// Source of decoded frames: the shared clip when present, else a moving test pattern.
fn source(fmt: &str) -> String {
    match clip() {
        Some(p) => format!("filesrc location={} ! qtdemux ! h264parse ! avdec_h264 ! videoconvert ! video/x-raw,format={fmt}", p.display()),
        None => format!("videotestsrc num-buffers=132 pattern=ball ! video/x-raw,format={fmt},width=1280,height=720,framerate=25/1"),
    }
}

#[test]
fn decoded_clip_frames_arrive_bit_exact_in_another_process() {
    let domain = mcm_tests::temp_domain();
    for fmt in ["I420", "UYVY", "v210"] {
        let flow = uuid::Uuid::new_v4();
        let at = format!(
            "domain={} flow-id={flow} reliable=true",
            domain.path().display()
        );
        // The receiver starts first and is reliable: it must get every frame, in order.
        // v210 at 1280 wide has the same layout in grain and buffer: mcmsrc lends the grains.
        let zero_copy = if fmt == "v210" { "zero-copy=true" } else { "" };
        let rx = gst_launch_started(
            "receiver",
            &format!("mcmsrc {at} {zero_copy} ! checksumsink hash=sha1"),
        );
        let tx = gst_launch(
            "sender",
            &format!(
                "{} ! tee name=t ! queue ! mcmsink {at} t. ! queue ! checksumsink hash=sha1",
                source(fmt)
            ),
        );
        let (tx_status, tx_log) = tx.finish();
        let (rx_status, rx_log) = rx.finish();
        assert!(
            tx_status.success() && rx_status.success(),
            "{fmt}: {tx_log:?} {rx_log:?}"
        );
        let (sent, received) = (checksums(&tx_log), checksums(&rx_log));
        assert_eq!(
            sent.len(),
            132,
            "{fmt}: the clip and the fallback pattern have 132 frames"
        );
        assert_eq!(received, sent, "{fmt}: frames differ or are missing");
    }
}

#[test]
fn live_stream_through_the_proxy_with_a_late_receiver_and_eos_on_stop() {
    let dir = tempfile::tempdir().unwrap();
    let domain = mcm_tests::temp_domain();
    let proxy = start_proxy(dir.path(), domain.path(), &[]);
    let socket = proxy.unix.display().to_string();
    let caps = "video/x-raw,format=UYVY,width=320,height=240,framerate=25/1";
    // The early receiver describes its connection (caps, as MCM receivers do); the late one
    // says nothing but the urn and takes the caps from the group's flow.
    let rx = |name: &str| {
        let described = match name {
            "early" => format!("caps={caps}"),
            // Stops by itself after 10 frames, while the stream goes on.
            "brief" => "num-buffers=10".to_string(),
            _ => String::new(),
        };
        let cmd_line = format!("mcmsrc urn=live1 {described} ! checksumsink hash=sha1");
        let mut p = std::process::Command::new("gst-launch-1.0");
        p.arg("-q")
            .args(cmd_line.split_whitespace())
            .env("GST_PLUGIN_PATH", mcm_tests::gst_plugin_dir())
            .env("MCM_PROXY_SOCKET", &socket);
        mcm_tests::Proc::spawn(name, &mut p)
    };
    let mut early = rx("early");
    let mut tx = std::process::Command::new("gst-launch-1.0");
    tx.arg("-q")
        .args(format!("videotestsrc is-live=true num-buffers=150 pattern=ball ! {caps} ! tee name=t ! queue ! mcmsink urn=live1 t. ! queue ! checksumsink hash=sha1").split_whitespace())
        .env("GST_PLUGIN_PATH", mcm_tests::gst_plugin_dir())
        .env("MCM_PROXY_SOCKET", &socket);
    let tx = mcm_tests::Proc::spawn("sender", &mut tx);
    // Once the early receiver has 20 frames, a second one joins.
    for _ in 0..20 {
        early.next_line();
    }
    let late = rx("late");
    // A receiver that stops, and one started after it (a receiver stopping and starting).
    let (status, brief_log) = rx("brief").finish();
    assert!(status.success(), "brief: {brief_log:?}");
    let again = rx("again");
    let (tx_status, tx_log) = tx.finish();
    assert!(tx_status.success(), "{tx_log:?}");
    let sent = checksums(&tx_log);
    let brief = checksums(&brief_log);
    assert_eq!(brief.len(), 10, "the brief receiver stops after 10 frames");
    let brief_start = sent
        .windows(10)
        .position(|w| w == &brief[..])
        .expect("the brief receiver got a run of the sender's frames");
    // The sender's EOS reaches the receivers still running: they end by themselves.
    let mut starts = Vec::new();
    for (name, r) in [("early", early), ("late", late), ("again", again)] {
        let (status, log) = r.finish();
        assert!(status.success(), "{name}: {log:?}");
        let got = checksums(&log);
        assert!(got.len() >= 10, "{name} got {} frames", got.len());
        // What a live receiver gets is a run of the sender's frames, in order, none altered.
        let start = sent
            .iter()
            .position(|h| *h == got[0])
            .unwrap_or_else(|| panic!("{name}: first frame never sent"));
        assert_eq!(
            got[..],
            sent[start..start + got.len()],
            "{name}: frames out of order or altered"
        );
        starts.push(start);
    }
    // The early receiver had frames start..=start+19 when the late one joined: the late one
    // begins at the newest frame then, not with the ring's history.
    assert!(
        starts[1] >= starts[0] + 19,
        "late receiver started at frame {}, early at {}",
        starts[1],
        starts[0]
    );
    assert!(
        // A live receiver joins at the newest frame: at best the stopped one's last.
        starts[2] >= brief_start + 9,
        "the restarted receiver begins after the stopped one's last frame: {starts:?}, brief at {brief_start}"
    );
}

#[test]
fn compressed_units_travel_as_opaque_grains_and_decode_identically() {
    let domain = mcm_tests::temp_domain();
    let flow = uuid::Uuid::new_v4();
    let at = format!(
        "domain={} flow-id={flow} reliable=true",
        domain.path().display()
    );
    // H.264 access units of the clip, or JPEG frames of a test pattern without it.
    let (encoded, decode) = match clip() {
        Some(p) => (
            format!("filesrc location={} ! qtdemux ! h264parse ! video/x-h264,stream-format=byte-stream,alignment=au", p.display()),
            "h264parse ! avdec_h264",
        ),
        None => ("videotestsrc num-buffers=60 pattern=ball ! video/x-raw,width=640,height=360,framerate=25/1 ! jpegenc".to_owned(), "jpegdec"),
    };
    let reference = gst_launch(
        "reference",
        &format!("{encoded} ! {decode} ! checksumsink hash=sha1"),
    );
    let rx = gst_launch_started(
        "receiver",
        &format!("mcmsrc {at} ! {decode} ! checksumsink hash=sha1"),
    );
    let tx = gst_launch("sender", &format!("{encoded} ! mcmsink {at}"));
    let (tx_status, tx_log) = tx.finish();
    let (rx_status, rx_log) = rx.finish();
    let (ref_status, ref_log) = reference.finish();
    assert!(
        tx_status.success() && rx_status.success() && ref_status.success(),
        "{tx_log:?} {rx_log:?} {ref_log:?}"
    );
    let (expected, got) = (checksums(&ref_log), checksums(&rx_log));
    assert!(expected.len() >= 60, "{} reference frames", expected.len());
    assert_eq!(got, expected, "frames decoded on the receiving side differ");
}

#[test]
fn decoded_clip_audio_arrives_byte_exact_as_pcm_grains() {
    let domain = mcm_tests::temp_domain();
    let dir = tempfile::tempdir().unwrap();
    // F32LE is carried as opaque grains (one decoded buffer each), not yet as an MXL sample flow.
    for fmt in ["S24BE", "S16BE", "S24LE", "F32LE"] {
        let flow = uuid::Uuid::new_v4();
        let at = format!(
            "domain={} flow-id={flow} reliable=true",
            domain.path().display()
        );
        let (sent, got) = (
            dir.path().join(format!("tx-{fmt}.raw")),
            dir.path().join(format!("rx-{fmt}.raw")),
        );
        // The clip's 6-channel AAC, decoded; without the clip, a 6-channel test tone. The
        // stream length is no multiple of the 1 ms grain: the last grain is short, not padded.
        let audio = match clip() {
            Some(p) => format!("filesrc location={} ! qtdemux ! aacparse ! avdec_aac ! audioconvert", p.display()),
            None => "audiotestsrc num-buffers=50 samplesperbuffer=1031 ! audio/x-raw,rate=48000,channels=6 ! audioconvert".to_owned(),
        };
        let rx = gst_launch_started(
            "receiver",
            &format!("mcmsrc {at} ! filesink location={}", got.display()),
        );
        let tx = gst_launch(
            "sender",
            &format!("{audio} ! audio/x-raw,format={fmt} ! tee name=t ! queue ! mcmsink {at} t. ! queue ! filesink location={}", sent.display()),
        );
        let (tx_status, tx_log) = tx.finish();
        let (rx_status, rx_log) = rx.finish();
        assert!(
            tx_status.success() && rx_status.success(),
            "{fmt}: {tx_log:?} {rx_log:?}"
        );
        let (a, b) = (std::fs::read(&sent).unwrap(), std::fs::read(&got).unwrap());
        assert!(
            a.len() > 1_000_000 || clip().is_none(),
            "{fmt}: only {} bytes sent",
            a.len()
        );
        assert!(
            a == b,
            "{fmt}: {} bytes sent, {} received, or different bytes",
            a.len(),
            b.len()
        );
    }
}

#[test]
fn a_sender_that_vanishes_gives_a_clear_error_when_asked() {
    let domain = mcm_tests::temp_domain();
    let at = format!(
        "domain={} flow-id={}",
        domain.path().display(),
        uuid::Uuid::new_v4()
    );
    // The live sender runs first, so the receiver's clock only starts once frames flow.
    let mut tx = gst_launch(
        "sender",
        &format!("videotestsrc is-live=true ! video/x-raw,format=UYVY,width=320,height=240,framerate=25/1 ! mcmsink {at}"),
    );
    // stderr merged into stdout so the test sees gst-launch's error message. One receiver
    // fails (the default), the other ends its stream (sender-timeout-eos=true).
    let rx = |name: &str, extra: &str| {
        let mut cmd = std::process::Command::new("sh");
        cmd.arg("-c")
            .arg(format!(
                "exec gst-launch-1.0 mcmsrc {at} sender-timeout=3000 {extra} ! checksumsink hash=sha1 2>&1"
            ))
            .env("GST_PLUGIN_PATH", mcm_tests::gst_plugin_dir());
        mcm_tests::Proc::spawn(name, &mut cmd)
    };
    let mut failing = rx("error receiver", "");
    let mut ending = rx("eos receiver", "sender-timeout-eos=true");
    for r in [&mut failing, &mut ending] {
        for _ in 0..10 {
            r.wait_for(|l| l.split_whitespace().nth(1).is_some_and(|h| h.len() == 40));
        }
    }
    // Killed, the sender never ends its stream: the receivers give up, as each was told.
    tx.kill();
    let (status, log) = failing.finish();
    assert!(!status.success(), "{log:?}");
    assert!(
        log.iter().any(|l| l.starts_with("ERROR"))
            && log.iter().any(|l| l.contains("sender-timeout")),
        "{log:?}"
    );
    let (status, log) = ending.finish();
    assert!(status.success(), "{log:?}");
    assert!(
        log.iter().any(|l| l.starts_with("WARNING"))
            && log.iter().any(|l| l.contains("sender-timeout")),
        "{log:?}"
    );
    assert!(log.iter().any(|l| l.contains("EOS")), "{log:?}");
}
