//! Cross-process flow benchmarks, each against a Unix-domain-socket peer in the same run.
//!
//! * handoff latency: commit in one process to wake-up in another, one way, measured with
//!   CLOCK_MONOTONIC stamps carried in the grain; futex wait and busy-poll; a 128-byte grain
//!   and a 1080p v210 grain whose payload is not touched (zero copy).
//! * throughput: 1080p and 2160p v210 grains, every byte written by the writer and read by
//!   the reader, with back-pressure so nothing is lost.
//!
//! Run: `cargo bench -p mcm-core --bench handoff` (`MCM_BENCH_QUICK=1` for a short run).

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use mcm_core::flow::{Domain, FlowError, GrainReader, GrainWriter, ReaderOptions, WriterOptions};
use mcm_core::format::{FlowDef, InterlaceMode, VideoFormat};
use mcm_core::time::Rational;
use uuid::Uuid;

const TIMEOUT: Duration = Duration::from_secs(10);

fn mono_ns() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}

fn v210(id: Uuid, w: u32, h: u32) -> FlowDef {
    FlowDef::video(
        id,
        "bench",
        VideoFormat::V210,
        w,
        h,
        Rational::new(25, 1),
        InterlaceMode::Progressive,
    )
    .expect("valid bench flow")
}

fn wait(reader: &GrainReader, index: u64, spin: bool) -> mcm_core::flow::Grain<'_> {
    if spin {
        loop {
            match reader.try_get_grain_slices(index, mcm_core::flow::VALID_SLICES_ALL) {
                Ok(g) => return g,
                Err(FlowError::TooEarly { .. }) => std::hint::spin_loop(),
                Err(e) => panic!("grain {index}: {e}"),
            }
        }
    }
    reader
        .get_grain(index, TIMEOUT)
        .unwrap_or_else(|e| panic!("grain {index}: {e}"))
}

fn percentiles(mut v: Vec<u64>) -> String {
    v.sort_unstable();
    let p = |q: f64| v[((v.len() - 1) as f64 * q) as usize] as f64 / 1000.0;
    format!(
        "p50 {:>7.2} us  p99 {:>7.2} us  p99.9 {:>7.2} us  (n={})",
        p(0.5),
        p(0.99),
        p(0.999),
        v.len()
    )
}

// ---- child roles -------------------------------------------------------------------

/// Echo side of the latency test: wait for grain i on `ab`, record latency, ack on `ba`.
fn echo(domain: &Domain, ab: Uuid, ba: Uuid, w: u32, h: u32, n: u64, spin: bool) {
    let mut ack = domain
        .create_grain_writer(&v210(ba, w, h), &WriterOptions::default())
        .expect("ack writer");
    let reader = open_reader(domain, ab, None);
    println!("ready");
    let mut lat = Vec::with_capacity(n as usize);
    for i in 0..n {
        let g = wait(&reader, i, spin);
        let t1 = mono_ns();
        let t0 = u64::from_ne_bytes(g.payload()[..8].try_into().expect("8 bytes"));
        lat.push(t1.saturating_sub(t0));
        drop(g);
        ack.open_grain(i).and_then(|g| g.commit()).expect("ack");
    }
    println!("{}", percentiles(lat[lat.len() / 10..].to_vec()));
}

fn open_reader(domain: &Domain, id: Uuid, reliable_from: Option<u64>) -> GrainReader {
    let options = ReaderOptions {
        reliable: reliable_from.is_some(),
        start_index: reliable_from,
    };
    domain.open_grain_reader(id, &options).expect("reader")
}

/// Reader side of the throughput test: read every byte of n grains.
fn drink(domain: &Domain, id: Uuid, n: u64) {
    let reader = open_reader(domain, id, Some(0));
    println!("ready");
    let mut sum = 0u64;
    for i in 0..n {
        let g = reader.get_grain(i, TIMEOUT).expect("grain");
        let p = g.payload();
        assert_eq!(p[p.len() - 1], i as u8, "grain {i} content");
        sum = sum.wrapping_add(sum_bytes(p));
    }
    println!("done {sum}");
}

fn sum_bytes(p: &[u8]) -> u64 {
    p.chunks_exact(8)
        .map(|c| u64::from_ne_bytes(c.try_into().unwrap_or_default()))
        .fold(0u64, u64::wrapping_add)
}

fn uds_echo(path: &str, n: u64) {
    let mut s = UnixStream::connect(path).expect("connect");
    let mut lat = Vec::with_capacity(n as usize);
    let mut buf = [0u8; 8];
    for _ in 0..n {
        s.read_exact(&mut buf).expect("read");
        lat.push(mono_ns().saturating_sub(u64::from_ne_bytes(buf)));
        s.write_all(&[1]).expect("ack");
    }
    println!("{}", percentiles(lat[lat.len() / 10..].to_vec()));
}

fn uds_drink(path: &str, frame: usize, n: u64) {
    let mut s = UnixStream::connect(path).expect("connect");
    let mut buf = vec![0u8; frame];
    let mut sum = 0u64;
    for i in 0..n {
        s.read_exact(&mut buf).expect("read");
        assert_eq!(buf[frame - 1], i as u8);
        sum = sum.wrapping_add(sum_bytes(&buf));
    }
    println!("done {sum}");
}

// ---- parent ------------------------------------------------------------------------

struct Peer {
    child: Child,
    out: std::io::Lines<BufReader<std::process::ChildStdout>>,
}

impl Peer {
    fn start(domain: &Domain, args: &[String], expect_ready: bool) -> Self {
        let mut child = Command::new(std::env::current_exe().expect("exe"))
            .env("MCM_BENCH_ROLE", "child")
            .env("MCM_BENCH_DOMAIN", domain.path())
            .args(args)
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn peer");
        let out = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let mut p = Self { child, out };
        if expect_ready {
            assert_eq!(p.line(), "ready");
        }
        p
    }
    fn line(&mut self) -> String {
        self.out.next().expect("peer line").expect("peer output")
    }
    fn finish(mut self) -> String {
        let l = self.line();
        let _ = self.child.wait();
        l
    }
}

fn latency(domain: &Domain, w: u32, h: u32, n: u64, spin: bool) -> String {
    let (ab, ba) = (Uuid::new_v4(), Uuid::new_v4());
    let mut writer: GrainWriter = domain
        .create_grain_writer(&v210(ab, w, h), &WriterOptions::default())
        .expect("writer");
    let args = [
        "echo",
        &ab.to_string(),
        &ba.to_string(),
        &w.to_string(),
        &h.to_string(),
        &n.to_string(),
        if spin { "spin" } else { "futex" },
    ];
    let peer = Peer::start(domain, &args.map(String::from), true);
    let acks = open_reader(domain, ba, None);
    for i in 0..n {
        let mut g = writer.open_grain(i).expect("open");
        g.payload()[..8].copy_from_slice(&mono_ns().to_ne_bytes());
        g.commit().expect("commit");
        drop(wait(&acks, i, spin));
    }
    peer.finish()
}

fn uds_latency(domain: &Domain, n: u64) -> String {
    let path = domain.path().join("bench.sock");
    let listener = UnixListener::bind(&path).expect("bind");
    let peer = Peer::start(
        domain,
        &[
            "uds-echo".into(),
            path.to_string_lossy().into(),
            n.to_string(),
        ],
        false,
    );
    let (mut s, _) = listener.accept().expect("accept");
    let mut ack = [0u8; 1];
    for _ in 0..n {
        s.write_all(&mono_ns().to_ne_bytes()).expect("send");
        s.read_exact(&mut ack).expect("ack");
    }
    let r = peer.finish();
    let _ = std::fs::remove_file(path);
    r
}

fn throughput(domain: &Domain, w: u32, h: u32, n: u64) -> (f64, f64) {
    let id = Uuid::new_v4();
    let options = WriterOptions {
        back_pressure: Some(TIMEOUT),
        ..Default::default()
    };
    let mut writer = domain
        .create_grain_writer(&v210(id, w, h), &options)
        .expect("writer");
    let size = writer.geometry().grain_size as f64;
    let peer = Peer::start(
        domain,
        &["drink".into(), id.to_string(), n.to_string()],
        true,
    );
    let t = Instant::now();
    for i in 0..n {
        let mut g = writer.open_grain(i).expect("open");
        g.payload().fill(i as u8);
        g.commit().expect("commit");
    }
    let done = peer.finish();
    assert!(done.starts_with("done"), "{done}");
    let s = t.elapsed().as_secs_f64();
    (n as f64 / s, n as f64 * size / s / 1e9)
}

fn uds_throughput(domain: &Domain, w: u32, h: u32, n: u64) -> (f64, f64) {
    let frame = mcm_core::testpattern::v210_stride(w) * h as usize;
    let path = domain.path().join("bench-tp.sock");
    let listener = UnixListener::bind(&path).expect("bind");
    let peer = Peer::start(
        domain,
        &[
            "uds-drink".into(),
            path.to_string_lossy().into(),
            frame.to_string(),
            n.to_string(),
        ],
        false,
    );
    let (mut s, _) = listener.accept().expect("accept");
    let mut buf = vec![0u8; frame];
    let t = Instant::now();
    for i in 0..n {
        buf.fill(i as u8);
        s.write_all(&buf).expect("send");
    }
    let done = peer.finish();
    assert!(done.starts_with("done"), "{done}");
    let secs = t.elapsed().as_secs_f64();
    let _ = std::fs::remove_file(path);
    (n as f64 / secs, n as f64 * frame as f64 / secs / 1e9)
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    if std::env::var("MCM_BENCH_ROLE").as_deref() == Ok("child") {
        let domain =
            Domain::open(std::env::var("MCM_BENCH_DOMAIN").expect("domain")).expect("domain");
        let num = |i: usize| args[i].parse::<u64>().expect("number");
        match args[0].as_str() {
            "echo" => echo(
                &domain,
                args[1].parse().expect("id"),
                args[2].parse().expect("id"),
                num(3) as u32,
                num(4) as u32,
                num(5),
                args[6] == "spin",
            ),
            "drink" => drink(&domain, args[1].parse().expect("id"), num(2)),
            "uds-echo" => uds_echo(&args[1], num(2)),
            "uds-drink" => uds_drink(&args[1], num(2) as usize, num(3)),
            other => panic!("unknown role {other}"),
        }
        return;
    }
    // Skip when cargo runs benches in test mode (`cargo test --benches`).
    if std::env::args().any(|a| a == "--test" || a == "--list") {
        return;
    }
    let quick = std::env::var_os("MCM_BENCH_QUICK").is_some();
    let n = if quick { 2_000 } else { 20_000 };
    let frames = if quick { 100 } else { 500 };
    let dir = tempfile::Builder::new()
        .prefix("mcm-bench-")
        .tempdir_in("/dev/shm")
        .expect("tmpfs");
    let domain = Domain::open(dir.path()).expect("domain");

    println!(
        "cross-process handoff, commit -> reader wake-up, one way ({n} grains, first 10% dropped)"
    );
    println!(
        "  flow, futex,     128 B grain      {}",
        latency(&domain, 48, 1, n, false)
    );
    println!(
        "  flow, futex,     1080p v210 grain {}",
        latency(&domain, 1920, 1080, n, false)
    );
    println!(
        "  flow, busy-poll, 128 B grain      {}",
        latency(&domain, 48, 1, n, true)
    );
    println!(
        "  flow, busy-poll, 1080p v210 grain {}",
        latency(&domain, 1920, 1080, n, true)
    );
    println!(
        "  peer: unix socket, 8 B message    {}",
        uds_latency(&domain, n)
    );
    println!("throughput, every payload byte written and read, writer and reader in two processes");
    for (name, w, h, k) in [
        ("1080p", 1920, 1080, frames),
        ("2160p", 3840, 2160, frames / 4),
    ] {
        let (fps, gbs) = throughput(&domain, w, h, k);
        let (pfps, pgbs) = uds_throughput(&domain, w, h, k);
        println!("  {name} v210 flow       {fps:>8.1} grains/s {gbs:>6.2} GB/s");
        println!("  {name} v210 unix socket {pfps:>7.1} frames/s {pgbs:>6.2} GB/s (peer: payload copied through the kernel)");
    }
}
