//! `mcm-sender`: sends raw video (test pattern or a file of frames) or blobs to a multipoint
//! group through the local media proxy, zero-copy.

use std::io::{Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Parser;
use mcm_core::sdk::Client;
use mcm_samples::{blob_len, fill, init_logging, Common};

#[derive(Parser)]
#[command(
    name = "mcm-sender",
    about = "Send video or blobs to an mcm multipoint group"
)]
struct Args {
    #[command(flatten)]
    common: Common,
    /// Grains to send; 0 sends until interrupted.
    #[arg(long, default_value_t = 0)]
    count: u64,
    /// Raw video frames to send (the file's frame size must match --video/--pixel-format).
    #[arg(long)]
    input: Option<std::path::PathBuf>,
    /// Send as fast as possible instead of at --fps (blobs: 100 per second).
    #[arg(long)]
    fast: bool,
    /// Print `progress sent=N` every N grains.
    #[arg(long, default_value_t = 100)]
    progress: u64,
    /// Stop (and end the stream) when standard input closes, e.g. from a controlling script.
    #[arg(long)]
    stdin_stop: bool,
}

fn main() {
    init_logging();
    if let Err(e) = run(Args::parse()) {
        println!("error {e:#}");
        std::process::exit(1);
    }
}

fn run(args: Args) -> Result<()> {
    let c = &args.common;
    let client = Client::new(&c.client_json())?;
    let mut conn = client.create_tx_connection(&c.connection_json())?;
    println!(
        "ready conn={} flow={} payload_size={}",
        conn.id(),
        conn.flow_id(),
        conn.payload_size()
    );
    std::io::stdout().flush()?;
    let mut input = args
        .input
        .as_ref()
        .map(std::fs::File::open)
        .transpose()
        .context("opening --input")?;
    let period = if c.video.is_some() {
        Duration::from_secs_f64(1.0 / c.fps)
    } else {
        Duration::from_millis(10)
    };
    let stop = Arc::new(AtomicBool::new(false));
    if args.stdin_stop {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let _ = std::io::copy(&mut std::io::stdin().lock(), &mut std::io::sink());
            stop.store(true, Ordering::Release);
        });
    }
    let start = Instant::now();
    let mut sent = 0u64;
    while (args.count == 0 || sent < args.count) && !stop.load(Ordering::Acquire) {
        if !args.fast {
            let due = start + period.mul_f64(sent as f64);
            std::thread::sleep(due.saturating_duration_since(Instant::now()));
        }
        let mut buf = conn.get_buffer(None)?;
        let seq = buf.seq();
        let len = match c.video {
            Some(_) => buf.payload_mut()?.len(),
            None => blob_len(seq, buf.payload_mut()?.len()),
        };
        let payload = &mut buf.payload_mut()?[..len];
        match &mut input {
            Some(f) => {
                if let Err(e) = f.read_exact(payload) {
                    if e.kind() == std::io::ErrorKind::UnexpectedEof {
                        break;
                    }
                    return Err(e.into());
                }
            }
            None => fill(seq, c.video, &c.pixel_format, payload),
        }
        buf.set_payload_len(len)?;
        let meta = format!("seq={seq}");
        buf.metadata_mut()?[..meta.len()].copy_from_slice(meta.as_bytes());
        buf.set_metadata_len(meta.len())?;
        buf.put()?;
        sent += 1;
        if args.progress > 0 && sent.is_multiple_of(args.progress) {
            println!("progress sent={sent}");
            std::io::stdout().flush()?;
        }
    }
    conn.shutdown()?;
    println!("done sent={sent}");
    Ok(())
}
