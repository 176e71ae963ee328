//! `mcm info` and `mcm gc`.

use std::path::Path;

use anyhow::{Context, Result};
use mcm_core::flow::{layout, Domain, FlowStatus};
use mcm_core::time::{index_to_timestamp, now_tai_ns};
use uuid::Uuid;

pub fn run(domain: &Path, flow: Option<Uuid>) -> Result<()> {
    let d = Domain::open(domain).with_context(|| format!("opening domain {}", domain.display()))?;
    match flow {
        Some(id) => show(&d.status(id)?),
        None => list(&d),
    }
}

fn list(d: &Domain) -> Result<()> {
    let ids = d.flow_ids()?;
    println!(
        "domain {} ({} flows, history {} ms)",
        d.path().display(),
        ids.len(),
        d.options().history_ns / 1_000_000
    );
    for id in ids {
        match d.status(id) {
            Ok(s) => println!(
                "  {id}  {:<8} {:<16} {:>11}  head {:>14}  latency {:>6} {:<7}  {}  {}",
                if s.active { "active" } else { "STALE" },
                s.media_type.as_deref().unwrap_or("?"),
                s.rate.to_string(),
                s.head_index,
                s.latency,
                if s.grains.is_some() {
                    "grains"
                } else {
                    "samples"
                },
                s.label.as_deref().unwrap_or("n/a"),
                match s
                    .readers
                    .iter()
                    .map(|r| s.head_index.saturating_add(1).saturating_sub(r.next_index))
                    .max()
                {
                    None => String::new(),
                    Some(lag) => format!("{} reliable readers, max lag {lag}", s.readers.len()),
                },
            ),
            Err(e) => println!("  {id}  unreadable: {e}"),
        }
    }
    Ok(())
}

fn format_name(f: u32) -> &'static str {
    match f {
        layout::DATA_FORMAT_VIDEO => "Video",
        layout::DATA_FORMAT_AUDIO => "Audio",
        layout::DATA_FORMAT_DATA => "Data",
        layout::DATA_FORMAT_UNSPECIFIED => "UNSPECIFIED",
        _ => "UNKNOWN",
    }
}

fn show(s: &FlowStatus) -> Result<()> {
    let row = |k: &str, v: String| println!("{k:>20}: {v}");
    println!("- Flow [{}]", s.id);
    row("Label", s.label.clone().unwrap_or_else(|| "n/a".into()));
    row(
        "Media type",
        s.media_type.clone().unwrap_or_else(|| "n/a".into()),
    );
    row("Version", s.version.to_string());
    row("Format", format_name(s.format).into());
    row("Grain/sample rate", s.rate.to_string());
    row("Commit batch size", s.commit_batch_hint.to_string());
    row("Sync batch size", s.sync_batch_hint.to_string());
    if let Some((count, slices)) = s.grains {
        row("Grain count", count.to_string());
        row("Slice sizes", format!("{slices:?}"));
    }
    if let Some((channels, len)) = s.samples {
        row("Channel count", channels.to_string());
        row("Buffer length", len.to_string());
    }
    println!();
    row("Head index", s.head_index.to_string());
    let now = now_tai_ns();
    let ago = |t: u64| format!("{t} ({:.1} ms ago)", now.saturating_sub(t) as f64 / 1e6);
    row("Last write time", ago(s.last_write_time));
    row("Last read time", ago(s.last_read_time));
    let head_ts = index_to_timestamp(s.rate, s.head_index);
    row(
        "Latency",
        format!(
            "{} grains/samples ({:.2} ms behind now)",
            s.latency,
            (now as f64 - head_ts as f64) / 1e6
        ),
    );
    row("Active", s.active.to_string());
    row("End of stream", s.end_of_stream.to_string());
    for r in &s.readers {
        row(
            "Reliable reader",
            format!(
                "pid {} next index {} lag {} {}",
                r.pid,
                r.next_index,
                s.head_index.saturating_add(1).saturating_sub(r.next_index),
                if r.alive { "" } else { "(dead)" }
            ),
        );
    }
    Ok(())
}

pub fn gc(domain: &Path) -> Result<()> {
    let d = Domain::open(domain).with_context(|| format!("opening domain {}", domain.display()))?;
    let r = d.collect_garbage()?;
    for id in &r.removed_flows {
        println!("removed stale flow {id}");
    }
    println!(
        "gc: removed {} stale flows and {} temporary directories; {} active flows kept",
        r.removed_flows.len(),
        r.removed_tmp_dirs,
        r.active_flows
    );
    Ok(())
}
