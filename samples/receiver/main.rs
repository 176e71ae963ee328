//! `mcm-receiver`: receives a multipoint group's video or blobs, zero-copy, verifies the
//! sender's pattern grain by grain or writes the payloads to a file.

use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::Result;
use clap::Parser;
use mcm_core::sdk::{Client, MeshErrorCode};
use mcm_samples::{init_logging, verify, Common};

#[derive(Parser)]
#[command(
    name = "mcm-receiver",
    about = "Receive video or blobs from an mcm multipoint group"
)]
struct Args {
    #[command(flatten)]
    common: Common,
    /// Grains to receive; 0 receives until the sender closes the connection.
    #[arg(long, default_value_t = 0)]
    count: u64,
    /// Check every grain against mcm-sender's test pattern and its `seq=` metadata.
    #[arg(long)]
    verify: bool,
    /// Append every payload to this file.
    #[arg(long)]
    output: Option<std::path::PathBuf>,
    /// Give up after this long without a grain, in milliseconds.
    #[arg(long, default_value_t = 10_000)]
    idle_ms: u64,
    /// Print `progress received=N` every N grains.
    #[arg(long, default_value_t = 100)]
    progress: u64,
}

fn main() {
    init_logging();
    match run(Args::parse()) {
        Ok(0) => {}
        Ok(_) => std::process::exit(3),
        Err(e) => {
            println!("error {e:#}");
            std::process::exit(1);
        }
    }
}

fn run(args: Args) -> Result<u64> {
    let c = &args.common;
    let client = Client::new(&c.client_json())?;
    let mut conn = client.create_rx_connection(&c.connection_json())?;
    println!("ready conn={} flow={}", conn.id(), conn.flow_id());
    std::io::stdout().flush()?;
    let mut out = args
        .output
        .as_ref()
        .map(std::fs::File::create)
        .transpose()?;
    let (mut received, mut bad, mut last_seq) = (0u64, 0u64, None::<u64>);
    let mut last_grain = Instant::now();
    let mut waiting = false;
    let closed = loop {
        if args.count > 0 && received >= args.count {
            break false;
        }
        let mut buf = match conn.get_buffer(None) {
            Ok(b) => b,
            Err(e) if e.code == MeshErrorCode::ConnClosed => break true,
            Err(e) if e.code == MeshErrorCode::Timeout => {
                if !waiting {
                    println!("waiting {e}");
                    waiting = true;
                }
                if last_grain.elapsed() > Duration::from_millis(args.idle_ms) {
                    anyhow::bail!("no grain for {} ms", args.idle_ms);
                }
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        if waiting {
            println!("resumed");
            waiting = false;
        }
        last_grain = Instant::now();
        let seq = buf.seq();
        if last_seq.is_none() {
            println!("first seq={seq}");
        }
        if args.verify {
            let meta = format!("seq={seq}");
            let ok = verify(seq, c.video, &c.pixel_format, buf.payload()).and_then(|()| {
                if buf.metadata() == meta.as_bytes() {
                    Ok(())
                } else {
                    Err(format!(
                        "grain {seq}: metadata {:?}",
                        String::from_utf8_lossy(buf.metadata())
                    ))
                }
            });
            if let Err(e) = ok {
                bad += 1;
                println!("bad {e}");
            }
        }
        if let Some(f) = &mut out {
            f.write_all(buf.payload())?;
        }
        if last_seq.is_some_and(|l| seq <= l) {
            bad += 1;
            println!("bad grain {seq} after {last_seq:?}");
        }
        last_seq = Some(seq);
        buf.put()?;
        received += 1;
        if args.progress > 0 && received.is_multiple_of(args.progress) {
            println!("progress received={received}");
            std::io::stdout().flush()?;
        }
    };
    let drops = conn
        .counters()
        .drops
        .load(std::sync::atomic::Ordering::Relaxed);
    println!("done received={received} bad={bad} drops={drops} closed={closed}");
    Ok(bad)
}
