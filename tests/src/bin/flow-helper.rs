//! Test helper: a flow writer or reader in its own process, driven by stdin commands.
//!
//! `flow-helper writer DOMAIN ID WIDTH HEIGHT RATE_NUM RATE_DEN [BACK_PRESSURE_MS]`
//!   commands: `grain I`, `grains I N`, `slice I K` (fill line K-1, commit K slices), `eos`
//! `flow-helper reader DOMAIN ID [reliable START]`
//!   commands: `read I TIMEOUT_MS [MIN_SLICES]`,
//!             `drain START N TIMEOUT_MS WORK_US` (reads N grains in order, verifying each)
//! Every reply is one line; `ready ...` is printed once at start.

use std::io::{BufRead, Write};
use std::time::{Duration, Instant};

use mcm_core::flow::{Domain, FlowError, GrainReader, GrainWriter, ReaderOptions, WriterOptions};
use mcm_core::format::{FlowDef, InterlaceMode, VideoFormat};
use mcm_core::testpattern::{fill_v210, fill_v210_lines, verify_v210};
use mcm_core::time::Rational;
use uuid::Uuid;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize| args.get(i).map(String::as_str).unwrap_or("");
    let num = |i: usize| {
        arg(i)
            .parse::<u64>()
            .unwrap_or_else(|_| die(&format!("bad number `{}`", arg(i))))
    };
    let domain = Domain::open(arg(1)).unwrap_or_else(|e| die(&e.to_string()));
    let id = Uuid::parse_str(arg(2)).unwrap_or_else(|e| die(&e.to_string()));
    match arg(0) {
        "writer" => {
            let (w, h) = (num(3) as u32, num(4) as u32);
            let rate = Rational::new(num(5) as i64, num(6) as i64);
            let mut def = FlowDef::video(
                id,
                "helper",
                VideoFormat::V210,
                w,
                h,
                rate,
                InterlaceMode::Progressive,
            )
            .unwrap_or_else(|e| die(&e.to_string()));
            def.id = id;
            let options = WriterOptions {
                back_pressure: args.get(7).map(|_| Duration::from_millis(num(7))),
                ..Default::default()
            };
            let writer = domain
                .create_grain_writer(&def, &options)
                .unwrap_or_else(|e| die(&e.to_string()));
            println!(
                "ready created={} grains={}",
                writer.created(),
                writer.grain_count()
            );
            run_writer(writer, w, h);
        }
        "reader" => {
            let options = ReaderOptions {
                reliable: arg(3) == "reliable",
                start_index: args.get(4).map(|_| num(4)),
            };
            let reader = domain
                .open_grain_reader(id, &options)
                .unwrap_or_else(|e| die(&e.to_string()));
            let def = reader
                .flow_def()
                .cloned()
                .unwrap_or_else(|| die("flow_def unreadable"));
            let mcm_core::format::MediaFormat::Video { width, .. } = def.media else {
                die("not video")
            };
            println!("ready head={}", reader.head_index());
            run_reader(reader, width);
        }
        other => die(&format!("unknown role `{other}`")),
    }
}

fn die(msg: &str) -> ! {
    println!("fatal {msg}");
    std::process::exit(2)
}

fn commands() -> impl Iterator<Item = Vec<u64>> {
    std::io::stdin()
        .lock()
        .lines()
        .map_while(Result::ok)
        .map(|l| {
            let mut words = l.split_whitespace();
            let verb = words.next().unwrap_or("");
            let code = match verb {
                "grain" => 0,
                "grains" => 1,
                "slice" => 2,
                "eos" => 3,
                "read" => 10,
                "drain" => 11,
                _ => 99,
            };
            std::iter::once(code)
                .chain(words.filter_map(|w| w.parse().ok()))
                .collect()
        })
}

fn reply(line: String) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

fn run_writer(mut writer: GrainWriter, width: u32, height: u32) {
    for c in commands() {
        let r = match c.as_slice() {
            [0, i] => write_grain(&mut writer, *i, width, height),
            [1, start, n] => {
                (*start..start + n).try_for_each(|i| write_grain(&mut writer, i, width, height))
            }
            [2, i, k] => writer.open_grain(*i).and_then(|mut g| {
                let line = *k as u32 - 1;
                fill_v210_lines(width, *i, line, line + 1, g.payload());
                g.commit_slices(*k as u16)
            }),
            [3] => writer.end_of_stream(),
            _ => Err(FlowError::InvalidArgument(format!("bad command {c:?}"))),
        };
        reply(match r {
            Ok(()) => "ok".into(),
            Err(e) => format!("err {}", kind(&e)),
        });
    }
}

fn write_grain(w: &mut GrainWriter, index: u64, width: u32, height: u32) -> Result<(), FlowError> {
    let mut g = w.open_grain(index)?;
    fill_v210(width, height, index, g.payload());
    g.commit()
}

fn kind(e: &FlowError) -> String {
    let s = format!("{e:?}");
    s.split([' ', '{', '(']).next().unwrap_or("?").to_owned()
}

fn run_reader(reader: GrainReader, width: u32) {
    for c in commands() {
        let line = match c.as_slice() {
            [10, i, timeout, rest @ ..] => {
                let min = rest
                    .first()
                    .map_or(mcm_core::flow::VALID_SLICES_ALL, |&m| m as u16);
                match reader.get_grain_slices(*i, min, Duration::from_millis(*timeout)) {
                    Ok(g) => {
                        let valid = g.valid_slices();
                        let lines = if g.is_invalid() { 0 } else { u32::from(valid) };
                        match verify_v210(width, lines, *i, g.valid_plane(0)) {
                            Ok(()) => format!("ok {i} valid={valid} invalid={}", g.is_invalid()),
                            Err(e) => format!("bad {e}"),
                        }
                    }
                    Err(e) => format!("err {}", kind(&e)),
                }
            }
            [11, start, n, timeout, work_us] => {
                drain(&reader, width, *start, *n, *timeout, *work_us)
            }
            _ => format!("err bad command {c:?}"),
        };
        reply(line);
    }
}

/// Reads `n` grains from `start` in order; a grain already overwritten counts as late and the
/// reader skips to the oldest readable one. `work_us` simulates per-grain processing time.
fn drain(
    reader: &GrainReader,
    width: u32,
    start: u64,
    n: u64,
    timeout_ms: u64,
    work_us: u64,
) -> String {
    let (mut read, mut late, mut bad) = (0u64, 0u64, 0u64);
    let mut first_bad = String::new();
    let mut index = start;
    let lines = reader.flow_def().map_or(0, |d| match d.media {
        mcm_core::format::MediaFormat::Video { height, .. } => height,
        _ => 0,
    });
    while index < start + n {
        match reader.get_grain(index, Duration::from_millis(timeout_ms)) {
            Ok(g) => {
                let t = Instant::now();
                let verdict = verify_v210(width, lines, index, g.payload());
                while t.elapsed() < Duration::from_micros(work_us) {
                    std::hint::spin_loop();
                }
                // A grain the writer lapped while we used it is dropped and counted as late;
                // only an intact grain with wrong content is an error.
                if !g.is_intact() {
                    late += 1;
                } else if let Err(e) = verdict {
                    bad += 1;
                    if first_bad.is_empty() {
                        first_bad = e;
                    }
                } else {
                    read += 1;
                }
                index += 1;
            }
            Err(FlowError::TooLate { oldest, .. }) => {
                let skip = oldest.max(index + 1).min(start + n);
                late += skip - index;
                index = skip;
            }
            Err(e) => {
                return format!(
                    "done read={read} late={late} bad={bad} stop={} {first_bad}",
                    kind(&e)
                )
            }
        }
    }
    format!("done read={read} late={late} bad={bad} {first_bad}")
}
