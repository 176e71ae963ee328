//! One side of the end-to-end latency benchmark (`gst-mcm/bench/compare_shm.py`).
//!
//! `latency_probe send "<pipeline ending in a sink named sink>"` stamps each buffer with the
//! monotonic clock (the first 8 bytes of the frame, little-endian ns) just before the sink
//! takes it; `latency_probe recv "<pipeline ending in a sink named sink>" <skip>` reads the
//! stamp as each buffer reaches its sink and prints `latency_us p50 p99 count` at the end.
//! The monotonic clock is one clock for every process on the host. With `MCM_LATENCY_ALL` set,
//! `recv` also prints every sample (µs, in arrival order) to stderr.

use gst::prelude::*;

fn main() {
    if let Err(e) = run() {
        eprintln!("latency_probe: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), String> {
    let args: Vec<String> = std::env::args().collect();
    let (role, desc) = match args.as_slice() {
        [_, role, desc, ..] => (role.as_str(), desc.as_str()),
        _ => return Err("usage: latency_probe send|recv PIPELINE [SKIP]".into()),
    };
    let skip: usize = args
        .get(3)
        .map_or(Ok(0), |s| s.parse())
        .map_err(|e| format!("{e}"))?;
    gst::init().map_err(|e| e.to_string())?;
    gstmcm::plugin_register_static().map_err(|e| e.to_string())?;
    let pipeline = gst::parse::launch(desc)
        .map_err(|e| e.to_string())?
        .downcast::<gst::Pipeline>()
        .map_err(|_| "not a pipeline")?;
    let sink = pipeline.by_name("sink").ok_or("no element named sink")?;
    let pad = sink.static_pad("sink").ok_or("sink has no sink pad")?;
    let samples = std::sync::Arc::new(std::sync::Mutex::new(Vec::<u64>::new()));
    // GStreamer's system clock is CLOCK_MONOTONIC by default: one clock for the host.
    let clock = gst::SystemClock::obtain();
    match role {
        "send" => {
            pad.add_probe(gst::PadProbeType::BUFFER, move |_, info| {
                if let Some(gst::PadProbeData::Buffer(buffer)) = &mut info.data {
                    let now = clock.time().nseconds();
                    if let Ok(mut map) = buffer.make_mut().map_writable() {
                        if let Some(head) = map.get_mut(..8) {
                            head.copy_from_slice(&now.to_le_bytes());
                        }
                    }
                }
                gst::PadProbeReturn::Ok
            });
        }
        "recv" => {
            let samples = samples.clone();
            let clock = clock.clone();
            pad.add_probe(gst::PadProbeType::BUFFER, move |_, info| {
                if let Some(gst::PadProbeData::Buffer(buffer)) = &info.data {
                    let now = clock.time().nseconds();
                    if let Ok(map) = buffer.map_readable() {
                        if let Some(head) = map.get(..8) {
                            let sent = u64::from_le_bytes(head.try_into().unwrap_or_default());
                            if let Ok(mut s) = samples.lock() {
                                s.push(now.saturating_sub(sent));
                            }
                        }
                    }
                }
                gst::PadProbeReturn::Ok
            });
        }
        other => return Err(format!("unknown role {other}")),
    }
    pipeline
        .set_state(gst::State::Playing)
        .map_err(|e| e.to_string())?;
    let bus = pipeline.bus().ok_or("no bus")?;
    let outcome = bus.iter_timed_filtered(
        gst::ClockTime::NONE,
        &[gst::MessageType::Eos, gst::MessageType::Error],
    );
    let mut result = Ok(());
    if let Some(msg) = outcome.into_iter().next() {
        if let gst::MessageView::Error(e) = msg.view() {
            result = Err(format!("{} ({:?})", e.error(), e.debug()));
        }
    }
    let _ = pipeline.set_state(gst::State::Null);
    if role == "recv" {
        let mut s = samples.lock().map_err(|_| "poisoned")?.clone();
        let s: Vec<u64> = if s.len() > skip {
            s.drain(skip..).collect()
        } else {
            Vec::new()
        };
        let mut s = s;
        if std::env::var_os("MCM_LATENCY_ALL").is_some() {
            eprintln!("{:?}", s.iter().map(|v| v / 1000).collect::<Vec<_>>());
        }
        s.sort_unstable();
        let pct = |p: usize| {
            s.get((s.len() * p / 100).min(s.len().saturating_sub(1)))
                .copied()
        };
        match (pct(50), pct(99)) {
            (Some(p50), Some(p99)) => println!(
                "latency_us {:.1} {:.1} {}",
                p50 as f64 / 1e3,
                p99 as f64 / 1e3,
                s.len()
            ),
            _ => println!("latency_us nan nan 0"),
        }
    }
    result
}
