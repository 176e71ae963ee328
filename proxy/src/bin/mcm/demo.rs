//! `mcm demo`: a moving v210 test pattern written to a flow by this process and read back,
//! zero-copy, by a second process that verifies every grain byte for byte.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use mcm_core::flow::{Domain, FlowError, ReaderOptions, WriterOptions};
use mcm_core::format::{FlowDef, InterlaceMode, MediaFormat, VideoFormat};
use mcm_core::testpattern::{fill_v210, verify_v210};
use mcm_core::time::{current_index, index_to_timestamp, now_tai_ns, sleep_until_tai, Rational};
use uuid::Uuid;

#[derive(clap::Args)]
pub struct DemoArgs {
    /// Frame width in pixels.
    #[arg(long, default_value_t = 1920)]
    width: u32,
    /// Frame height in lines.
    #[arg(long, default_value_t = 1080)]
    height: u32,
    /// Grain rate, `N` or `N/D` (e.g. 30000/1001).
    #[arg(long, default_value = "25")]
    rate: String,
    /// Number of grains to send.
    #[arg(long, default_value_t = 125)]
    frames: u64,
    /// Send as fast as the reader consumes (back-pressure) instead of at the grain rate.
    #[arg(long)]
    fast: bool,
}

#[derive(clap::Args)]
pub struct ReadArgs {
    #[arg(long)]
    id: Uuid,
    #[arg(long)]
    first: u64,
    #[arg(long)]
    frames: u64,
}

fn parse_rate(s: &str) -> Result<Rational> {
    let (n, d) = s.split_once('/').unwrap_or((s, "1"));
    let rate = Rational::new(
        n.trim().parse().with_context(|| format!("rate `{s}`"))?,
        d.trim().parse().with_context(|| format!("rate `{s}`"))?,
    );
    if !rate.is_valid() {
        bail!("rate `{s}` must be positive");
    }
    Ok(rate)
}

pub fn run(domain: &Path, args: DemoArgs) -> Result<()> {
    let rate = parse_rate(&args.rate)?;
    if args.frames == 0 {
        bail!("--frames must be at least 1");
    }
    let d = Domain::create(domain).with_context(|| format!("domain {}", domain.display()))?;
    let def = FlowDef::video(
        Uuid::new_v4(),
        "mcm demo",
        VideoFormat::V210,
        args.width,
        args.height,
        rate,
        InterlaceMode::Progressive,
    )?;
    let options = WriterOptions {
        back_pressure: Some(Duration::from_secs(5)),
        ..Default::default()
    };
    let mut writer = d.create_grain_writer(&def, &options)?;
    let size = writer.geometry().grain_size;
    println!(
        "mcm demo: flow {} in {}: v210 {}x{} at {} fps, {} grains of {} bytes, ring of {}",
        def.id,
        d.path().display(),
        args.width,
        args.height,
        rate,
        args.frames,
        size,
        writer.grain_count()
    );
    let first = current_index(rate) + 2;
    let mut child = Command::new(std::env::current_exe()?)
        .arg("--domain")
        .arg(d.path())
        .args(["demo-read", "--id", &def.id.to_string()])
        .args([
            "--first",
            &first.to_string(),
            "--frames",
            &args.frames.to_string(),
        ])
        .stdout(Stdio::piped())
        .spawn()
        .context("starting the reader process")?;
    let mut lines = BufReader::new(child.stdout.take().context("reader stdout")?).lines();
    match lines.next() {
        Some(Ok(l)) if l.starts_with("ready") => println!("reader | {l}"),
        other => bail!("reader did not start: {other:?}"),
    }
    let forward = std::thread::spawn(move || {
        let mut result = None;
        for line in lines.map_while(std::result::Result::ok) {
            println!("reader | {line}");
            if line.starts_with("result") {
                result = Some(line);
            }
        }
        result
    });

    let started = Instant::now();
    let mut last_report = Instant::now();
    let mut sent_since = 0u64;
    for k in 0..args.frames {
        let index = first + k;
        if !args.fast {
            sleep_until_tai(index_to_timestamp(rate, index));
        }
        let mut grain = writer.open_grain(index)?;
        fill_v210(args.width, args.height, index, grain.payload());
        grain.commit()?;
        sent_since += 1;
        if last_report.elapsed() >= Duration::from_secs(1) {
            println!(
                "writer | sent {} grains, {:.1} grains/s",
                k + 1,
                sent_since as f64 / last_report.elapsed().as_secs_f64()
            );
            last_report = Instant::now();
            sent_since = 0;
        }
    }
    writer.end_of_stream()?;
    let elapsed = started.elapsed().as_secs_f64();
    println!(
        "writer | sent {} grains in {elapsed:.2} s: {:.1} grains/s, {:.0} MB/s written to shared memory",
        args.frames,
        args.frames as f64 / elapsed,
        args.frames as f64 * f64::from(size) / elapsed / 1e6
    );
    let status = child.wait()?;
    let result = forward.join().ok().flatten();
    drop(writer);
    if !status.success() {
        bail!(
            "the reader failed ({status}): {}",
            result.unwrap_or_default()
        );
    }
    println!(
        "mcm demo: OK, every grain arrived and matched, payload never copied between processes"
    );
    Ok(())
}

pub fn read(domain: &Path, args: ReadArgs) -> Result<()> {
    let d = Domain::open(domain)?;
    let options = ReaderOptions {
        reliable: true,
        start_index: Some(args.first),
    };
    let reader = d.open_grain_reader(args.id, &options)?;
    let Some(MediaFormat::Video { width, height, .. }) = reader.flow_def().map(|f| f.media.clone())
    else {
        bail!("flow {} is not a video flow", args.id);
    };
    println!("ready: reading flow {} from index {}", args.id, args.first);
    std::io::stdout().flush()?;
    let (mut received, mut lost, mut corrupt) = (0u64, 0u64, 0u64);
    let mut ages_us = Vec::with_capacity(args.frames as usize);
    let started = Instant::now();
    let mut last_report = Instant::now();
    let mut index = args.first;
    while index < args.first + args.frames {
        match reader.get_grain(index, Duration::from_secs(10)) {
            Ok(grain) => {
                let age = now_tai_ns().saturating_sub(grain.timestamp());
                ages_us.push(age / 1000);
                if let Err(e) = verify_v210(width, height, index, grain.payload()) {
                    corrupt += 1;
                    println!("corrupt grain: {e}");
                } else if !grain.is_intact() {
                    lost += 1;
                } else {
                    received += 1;
                }
                index += 1;
            }
            Err(FlowError::TooLate { oldest, .. }) => {
                lost += oldest - index;
                index = oldest;
            }
            Err(FlowError::EndOfStream { .. }) => break,
            Err(e) => bail!("reading grain {index}: {e}"),
        }
        if last_report.elapsed() >= Duration::from_secs(1) {
            println!(
                "received {received} grains, all verified so far: {corrupt} corrupt, {lost} lost"
            );
            last_report = Instant::now();
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    ages_us.sort_unstable();
    let pct = |p: f64| {
        ages_us
            .get(((ages_us.len() as f64 - 1.0) * p) as usize)
            .copied()
            .unwrap_or(0)
    };
    // Grain age (read time minus the grain's TAI time) only means something when paced.
    let ages = if pct(0.99) > 0 {
        format!(
            "; grain age at read p50 {} us, p99 {} us",
            pct(0.5),
            pct(0.99)
        )
    } else {
        String::new()
    };
    println!(
        "result: received {received}/{} grains verified byte for byte, {lost} lost, {corrupt} corrupt; \
         {:.1} grains/s{ages}",
        args.frames,
        received as f64 / elapsed,
    );
    if received != args.frames || corrupt > 0 || lost > 0 {
        bail!("{} grains missing or wrong", args.frames - received);
    }
    Ok(())
}
