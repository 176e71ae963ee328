//! `mcm st2110-send` / `mcm st2110-recv`: a flow to an ST 2110-20 stream and back, by hand
//! (the proxy's bridges use the same code).

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use anyhow::Context;
use mcm_core::format::{FlowDef, InterlaceMode, MediaFormat, PcmFormat, VideoFormat};
use mcm_core::st2110::anc_bridge::{self, AncReceiverOptions, AncSenderOptions};
use mcm_core::st2110::audio_bridge::{self, AudioReceiverOptions, AudioSenderOptions};
use mcm_core::st2110::compressed_bridge::{
    self, CompressedReceiverOptions, CompressedSenderOptions,
};
use mcm_core::st2110::rfc4175::{PackingMode, UdpSize};
use mcm_core::st2110::video_bridge::{self, Pacing, ReceiverOptions, SenderOptions};
use mcm_core::{Domain, Rational};

#[derive(clap::Args)]
pub struct SendArgs {
    /// Flow to send: v210, UYVP or UYVY video (ST 2110-20), big-endian PCM (ST 2110-30) or
    /// ancillary data (ST 2110-40), picked from the flow's description. Several video
    /// flows (repeat `--flow-id` and `--dest`, paired in order) are paced by one thread,
    /// which sends a burst of each on one wake-up.
    #[arg(long, required = true)]
    flow_id: Vec<uuid::Uuid>,
    /// Destination, e.g. 239.10.10.10:20000 or 127.0.0.1:5004 (one per `--flow-id`).
    #[arg(long, required = true)]
    dest: Vec<SocketAddr>,
    /// Local address to send from.
    #[arg(long, default_value = "0.0.0.0:0")]
    bind: SocketAddr,
    #[arg(long, default_value_t = 96)]
    payload_type: u8,
    /// Packing mode: single-line (GPM whose packets never cross a line: each line in equal
    /// packets, which UDP segmentation offload sends in runs), gpm or bpm.
    #[arg(long, default_value = "single-line")]
    packing: String,
    /// Pacing: wide (ST 2110-21 wide sender, TP=2110TPW: bursts kept under the network
    /// model's CMAX) or coarse (32 large bursts per frame: less CPU, no TP claimed).
    #[arg(long, default_value = "wide")]
    pacing: String,
    /// UDP size limit (ST 2110-10): standard (packets of 1352 bytes, any network) or
    /// extended (up to 8960, signalled MAXUDP=8960: needs a 9000-byte MTU on the way).
    #[arg(long, default_value = "standard")]
    udp_size: String,
    /// Stop after this many frames (0: until the flow ends).
    #[arg(long, default_value_t = 0)]
    frames: u64,
    /// Write the stream's SDP here once the flow's format is known.
    #[arg(long)]
    sdp: Option<std::path::PathBuf>,
    /// One datagram per message: no UDP segmentation offload (to compare, or for kernels
    /// and devices that mishandle it).
    #[arg(long)]
    no_offload: bool,
}

#[derive(clap::Args)]
pub struct RecvArgs {
    /// Flow to write the received frames into.
    #[arg(long)]
    flow_id: uuid::Uuid,
    /// Local address and port to receive on.
    #[arg(long)]
    bind: SocketAddr,
    /// Multicast group to join (IPv4), on --interface.
    #[arg(long)]
    group: Option<Ipv4Addr>,
    #[arg(long, default_value = "0.0.0.0")]
    interface: Ipv4Addr,
    #[arg(long)]
    payload_type: Option<u8>,
    /// Video: frame width.
    #[arg(long)]
    width: Option<u32>,
    /// Video: frame height.
    #[arg(long)]
    height: Option<u32>,
    /// Frame rate, N or N/D.
    #[arg(long, default_value = "25")]
    rate: String,
    /// Flow pixel format: v210, UYVP, I422_10LE (10-bit 4:2:2 on the wire), UYVY, YUY2
    /// (8-bit 4:2:2), I420 or NV12 (8-bit 4:2:0), P010_10LE (10-bit 4:2:0), RGBA or BGRA
    /// (RGB 8-bit).
    #[arg(long, default_value = "v210")]
    format: String,
    /// Video: interlaced, `tff` or `bff` (fields with the F bit; one grain per field, at
    /// twice --rate).
    #[arg(long)]
    interlace: Option<String>,
    /// What the stream carries: video (ST 2110-20), audio (-30), anc (-40) or compressed
    /// (-22: RFC 9134 frames, into an opaque flow).
    #[arg(long, default_value = "video")]
    media: String,
    /// Compressed: the frames' media type, written in the flow description (e.g.
    /// image/jpeg, video/x-h264, image/x-jxsc).
    #[arg(long, default_value = "application/octet-stream")]
    media_type: String,
    /// Compressed: the largest frame, in bytes (larger ones are counted and dropped).
    #[arg(long, default_value_t = 4 << 20)]
    max_frame_size: u32,
    /// Audio: channels.
    #[arg(long, default_value_t = 2)]
    channels: u32,
    /// Audio: sample rate (48000 or 96000; 1 ms packets).
    #[arg(long, default_value_t = 48_000)]
    sample_rate: u32,
    /// Audio: L24 or L16.
    #[arg(long, default_value = "L24")]
    encoding: String,
    /// Back-pressure for local readers (nothing dropped in the flow).
    #[arg(long)]
    reliable: bool,
    /// End the flow and exit after this many complete frames (0: on SIGINT/SIGTERM).
    #[arg(long, default_value_t = 0)]
    frames: u64,
    /// One datagram per buffer: no UDP receive offload (GRO).
    #[arg(long)]
    no_offload: bool,
}

fn stop_flag() -> anyhow::Result<Arc<AtomicBool>> {
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, stop.clone()).context("signal handler")?;
    }
    Ok(stop)
}

pub fn send(domain: &Path, args: SendArgs) -> anyhow::Result<()> {
    if args.flow_id.len() != args.dest.len() {
        anyhow::bail!(
            "{} --flow-id for {} --dest: give one destination per flow",
            args.flow_id.len(),
            args.dest.len()
        );
    }
    if args.flow_id.len() > 1 {
        return send_several(domain, args);
    }
    let (flow_id, dest) = (args.flow_id[0], args.dest[0]);
    let packing = packing_of(&args.packing)?;
    let options = SenderOptions {
        destination: dest,
        bind: args.bind,
        payload_type: args.payload_type,
        ssrc: rand_ssrc(),
        packing,
        pacing: pacing_of(&args.pacing)?,
        udp_size: udp_size_of(&args.udp_size)?,
        frames: args.frames,
        sdp_file: args.sdp.clone(),
        sdp_written: None,
        offload: !args.no_offload,
        counters: None,
    };
    let mut options = options;
    if let Some(path) = args.sdp.clone() {
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        options.sdp_written = Some(tx);
        std::thread::spawn(move || {
            for _ in rx {
                println!("st2110-send: SDP written to {}", path.display());
            }
        });
    }
    let stop = stop_flag()?;
    // The flow's media picks the bridge: ST 2110-30 for PCM, -40 for ancillary data, -22
    // for compressed frames (opaque flows), -20 for video (waiting for the flow to appear,
    // as the bridges do).
    let media = loop {
        match Domain::open(domain)?.flow_def(flow_id) {
            Ok(text) => break FlowDef::parse(&text)?.media,
            Err(mcm_core::flow::FlowError::NotFound { .. })
                if !stop.load(std::sync::atomic::Ordering::Acquire) =>
            {
                // A CLI waiting for its flow's writer: poll, as `Follower` does.
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            Err(e) => return Err(e.into()),
        }
    };
    match media {
        MediaFormat::Pcm { .. } => {
            let options = AudioSenderOptions {
                destination: dest,
                bind: args.bind,
                payload_type: args.payload_type,
                ssrc: rand_ssrc(),
                packets: 0,
                reliable: false,
                counters: None,
            };
            let s = audio_bridge::send_audio(Domain::open(domain)?, flow_id, &options, &stop)?;
            println!(
                "st2110-send: ST 2110-30, {} packets, {} torn, {} dropped, {} port unreachable",
                s.packets, s.torn, s.dropped, s.unreachable
            );
            return Ok(());
        }
        MediaFormat::Ancillary => {
            let options = AncSenderOptions {
                destination: dest,
                bind: args.bind,
                payload_type: args.payload_type,
                ssrc: rand_ssrc(),
                reliable: false,
                counters: None,
                sdp_file: args.sdp.clone(),
            };
            let s = anc_bridge::send_anc(Domain::open(domain)?, flow_id, &options, &stop)?;
            println!(
                "st2110-send: ST 2110-40, {} packets, {} malformed grains, {} torn, {} dropped",
                s.packets, s.malformed, s.torn, s.dropped
            );
            return Ok(());
        }
        MediaFormat::Opaque { .. } => {
            let options = CompressedSenderOptions {
                destination: dest,
                bind: args.bind,
                payload_type: args.payload_type,
                ssrc: rand_ssrc(),
                reliable: false,
                counters: None,
                sdp_file: args.sdp.clone(),
            };
            let s = compressed_bridge::send_compressed(
                Domain::open(domain)?,
                flow_id,
                &options,
                &stop,
            )?;
            println!(
                "st2110-send: ST 2110-22, {} frames, {} packets, {} torn, {} dropped",
                s.frames, s.packets, s.torn, s.dropped
            );
            let [narrow, wide, off] = s.timing;
            println!(
                "st2110-send: ST 2110-21 pacing as sent: {narrow} frames narrow, {wide} wide, {off} non-compliant"
            );
            return Ok(());
        }
        _ => {}
    }
    let stats = video_bridge::send_video(Domain::open(domain)?, flow_id, &options, &stop)?;
    println!(
        "st2110-send: {} frames, {} packets in {} system calls, {} torn, {} dropped, {} port unreachable, {} packets unsent",
        stats.frames, stats.packets, stats.syscalls, stats.torn, stats.dropped, stats.unreachable, stats.unsent
    );
    let [narrow, wide, off] = stats.timing;
    println!(
        "st2110-send: ST 2110-21 pacing as sent: {narrow} frames narrow, {wide} wide, {off} non-compliant"
    );
    println!(
        "st2110-send: {} of {} bursts went out more than {} µs late (timer wake-ups)",
        stats.late_bursts,
        stats.bursts,
        video_bridge::LATE_WAKE_UP.as_micros()
    );
    Ok(())
}

fn packing_of(name: &str) -> anyhow::Result<PackingMode> {
    Ok(match name {
        "gpm" => PackingMode::General,
        "bpm" => PackingMode::Block,
        "single-line" => PackingMode::SingleLine,
        other => anyhow::bail!("packing `{other}`: gpm, bpm or single-line"),
    })
}

fn pacing_of(name: &str) -> anyhow::Result<Pacing> {
    Ok(match name {
        "wide" => Pacing::Wide,
        "coarse" => Pacing::Coarse,
        other => anyhow::bail!("pacing `{other}`: wide or coarse"),
    })
}

fn udp_size_of(name: &str) -> anyhow::Result<UdpSize> {
    Ok(match name {
        "standard" => UdpSize::Standard,
        "extended" => UdpSize::Extended,
        other => anyhow::bail!("UDP size `{other}`: standard or extended"),
    })
}

/// Several video flows from one pacing thread ([`video_bridge::send_videos`]).
fn send_several(domain: &Path, args: SendArgs) -> anyhow::Result<()> {
    if args.sdp.is_some() {
        anyhow::bail!("--sdp takes one flow (`mcm sdp` prints a running stream's)");
    }
    let stop = stop_flag()?;
    let domain = Domain::open(domain)?;
    let mut streams = Vec::new();
    for (&flow_id, &dest) in args.flow_id.iter().zip(&args.dest) {
        // Each flow must be video; wait for its writer, as the bridges do.
        loop {
            match domain.flow_def(flow_id) {
                Ok(text) => match FlowDef::parse(&text)?.media {
                    MediaFormat::Video { .. } => break,
                    _ => anyhow::bail!("flow {flow_id}: only video flows are sent together"),
                },
                Err(mcm_core::flow::FlowError::NotFound { .. })
                    if !stop.load(std::sync::atomic::Ordering::Acquire) =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
                Err(e) => return Err(e.into()),
            }
        }
        streams.push((
            flow_id,
            SenderOptions {
                destination: dest,
                bind: args.bind,
                payload_type: args.payload_type,
                ssrc: rand_ssrc(),
                packing: packing_of(&args.packing)?,
                pacing: pacing_of(&args.pacing)?,
                udp_size: udp_size_of(&args.udp_size)?,
                frames: args.frames,
                sdp_file: None,
                sdp_written: None,
                offload: !args.no_offload,
                counters: None,
            },
        ));
    }
    let all = video_bridge::send_videos(domain, &streams, &stop)?;
    let mut failed = 0;
    for ((flow_id, _), (stats, error)) in streams.iter().zip(all) {
        let [narrow, wide, off] = stats.timing;
        println!(
            "st2110-send: {flow_id}: {} frames, {} packets in {} system calls, {} torn, {} dropped; pacing as sent: {narrow} narrow, {wide} wide, {off} non-compliant",
            stats.frames, stats.packets, stats.syscalls, stats.torn, stats.dropped
        );
        if let Some(e) = error {
            eprintln!("st2110-send: {flow_id}: stopped early: {e}");
            failed += 1;
        }
    }
    if failed > 0 {
        anyhow::bail!("{failed} of {} streams stopped early", streams.len());
    }
    Ok(())
}

pub fn recv(domain: &Path, args: RecvArgs) -> anyhow::Result<()> {
    let rate = match args.rate.split_once('/') {
        Some((n, d)) => Rational::new(n.parse()?, d.parse()?),
        None => Rational::new(args.rate.parse()?, 1),
    };
    if args.media != "video" {
        return recv_data(domain, &args, rate);
    }
    let format = VideoFormat::from_name(&args.format)
        .with_context(|| format!("pixel format `{}`", args.format))?;
    let (Some(width), Some(height)) = (args.width, args.height) else {
        anyhow::bail!("video needs --width and --height");
    };
    let options = ReceiverOptions {
        bind: args.bind,
        multicast: args.group.map(|g| (g, args.interface)),
        payload_type: args.payload_type,
        width,
        height,
        rate,
        format,
        interlace: match args.interlace.as_deref() {
            None => InterlaceMode::Progressive,
            Some("tff") => InterlaceMode::InterlacedTff,
            Some("bff") => InterlaceMode::InterlacedBff,
            Some(other) => anyhow::bail!("--interlace {other}: tff or bff"),
        },
        flow_id: args.flow_id,
        reliable: args.reliable,
        frames: args.frames,
        offload: !args.no_offload,
        counters: None,
    };
    println!("st2110-recv: listening on {}", args.bind);
    let stop = stop_flag()?;
    let report = video_bridge::receive_video(Domain::create(domain)?, &options, &stop)?;
    let s = report.stats;
    println!(
        "st2110-recv: {} frames complete, {} incomplete, {} packets, {} duplicates, {} late, {} malformed, {} wrong payload type, {} sender restarts",
        s.frames_complete, s.frames_incomplete, s.packets, s.duplicates, s.late, s.malformed, s.wrong_payload_type, s.sender_restarts
    );
    match report.timing {
        Some(t) => {
            let [narrow, wide, off] = report.frames_by_verdict;
            println!(
                "st2110-recv: ST 2110-21 timing over {} frames: {t:?} ({narrow} frames narrow, {wide} wide, {off} non-compliant)",
                report.frames_timed
            )
        }
        None => println!("st2110-recv: ST 2110-21 timing: no whole frame to learn the model from"),
    }
    Ok(())
}

/// `st2110-recv --media audio|anc`: an ST 2110-30 or -40 stream into a PCM or data flow.
fn recv_data(domain: &Path, args: &RecvArgs, rate: Rational) -> anyhow::Result<()> {
    let stop = stop_flag()?;
    let multicast = args.group.map(|g| (g, args.interface));
    match args.media.as_str() {
        "audio" => {
            let format = match args.encoding.as_str() {
                "L24" => PcmFormat::S24Be,
                "L16" => PcmFormat::S16Be,
                other => anyhow::bail!("encoding `{other}`: L24 or L16"),
            };
            let flow = FlowDef::pcm(
                args.flow_id,
                "st2110-30 receiver",
                format,
                args.sample_rate,
                args.channels,
                args.sample_rate / 1000,
            )?;
            let options = AudioReceiverOptions {
                bind: args.bind,
                multicast,
                payload_type: args.payload_type,
                flow,
                reliable: args.reliable,
                reorder_window: 8,
                grains: args.frames,
                counters: None,
            };
            let socket = audio_bridge::bind_receiver(&options)?;
            println!("st2110-recv: listening on {}", args.bind);
            let s =
                audio_bridge::receive_audio_on(socket, Domain::create(domain)?, &options, &stop)?;
            println!(
                "st2110-recv: ST 2110-30, {} packets, {} lost, {} duplicates, {} late, {} malformed, {} wrong payload type, {} restarts",
                s.packets, s.lost, s.duplicates, s.late, s.malformed, s.wrong_payload_type, s.restarts
            );
        }
        "anc" => {
            let options = AncReceiverOptions {
                bind: args.bind,
                multicast,
                payload_type: args.payload_type,
                flow: FlowDef::ancillary(args.flow_id, "st2110-40 receiver", rate)?,
                reliable: args.reliable,
                grains: args.frames,
                counters: None,
            };
            let socket = anc_bridge::bind_receiver(&options)?;
            println!("st2110-recv: listening on {}", args.bind);
            let s = anc_bridge::receive_anc(socket, Domain::create(domain)?, &options, &stop)?;
            println!(
                "st2110-recv: ST 2110-40, {} packets, {} grains, {} malformed, {} wrong payload type",
                s.packets, s.grains, s.malformed, s.wrong_payload_type
            );
        }
        "compressed" => {
            let options = CompressedReceiverOptions {
                bind: args.bind,
                multicast,
                payload_type: args.payload_type,
                flow: FlowDef::opaque(
                    args.flow_id,
                    "st2110-22 receiver",
                    &args.media_type,
                    rate,
                    args.max_frame_size,
                )?,
                reliable: args.reliable,
                frames: args.frames,
                counters: None,
            };
            let socket = compressed_bridge::bind_receiver(&options)?;
            println!("st2110-recv: listening on {}", args.bind);
            let s = compressed_bridge::receive_compressed(
                socket,
                Domain::create(domain)?,
                &options,
                &stop,
            )?;
            println!(
                "st2110-recv: ST 2110-22, {} frames complete, {} incomplete, {} packets, {} duplicates, {} late, {} malformed, {} wrong payload type",
                s.frames_complete, s.frames_incomplete, s.packets, s.duplicates, s.late, s.malformed, s.wrong_payload_type
            );
        }
        other => anyhow::bail!("media `{other}`: video, audio, anc or compressed"),
    }
    Ok(())
}

/// An SSRC from the clock and pid (RFC 3550 asks for a random one; collisions between
/// senders of one host are what matters).
fn rand_ssrc() -> u32 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos() ^ d.as_secs() as u32)
        .unwrap_or(1);
    t ^ std::process::id().rotate_left(16)
}
