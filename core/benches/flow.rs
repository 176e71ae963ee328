//! In-process micro benchmarks of the flow hot paths (criterion).

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use mcm_core::flow::{Domain, ReaderOptions, WriterOptions, VALID_SLICES_ALL};
use mcm_core::format::{FlowDef, InterlaceMode, VideoFormat};
use mcm_core::time::{index_to_timestamp, now_tai_ns, timestamp_to_index, Rational};
use uuid::Uuid;

fn benches(c: &mut Criterion) {
    let dir = tempfile::Builder::new()
        .prefix("mcm-crit-")
        .tempdir_in("/dev/shm")
        .expect("tmpfs");
    let domain = Domain::open(dir.path()).expect("domain");
    let def = FlowDef::video(
        Uuid::new_v4(),
        "b",
        VideoFormat::V210,
        48,
        1,
        Rational::new(25, 1),
        InterlaceMode::Progressive,
    )
    .expect("def");
    let mut writer = domain
        .create_grain_writer(&def, &WriterOptions::default())
        .expect("writer");
    let reader = domain
        .open_grain_reader(def.id, &ReaderOptions::default())
        .expect("reader");

    let rate = Rational::new(30000, 1001);
    c.bench_function("time/now_tai_ns", |b| b.iter(now_tai_ns));
    c.bench_function("time/timestamp_to_index", |b| {
        b.iter(|| timestamp_to_index(rate, black_box(1_763_000_000_123_456_789)))
    });
    c.bench_function("time/index_to_timestamp", |b| {
        b.iter(|| index_to_timestamp(rate, black_box(52_000_000_000)))
    });
    let mut i = 0u64;
    c.bench_function("grain/open_commit_no_reader_waiting", |b| {
        b.iter(|| {
            i += 1;
            writer
                .open_grain(i)
                .and_then(|g| g.commit())
                .expect("commit");
        })
    });
    let head = i + 1;
    writer
        .open_grain(head)
        .and_then(|g| g.commit())
        .expect("commit");
    c.bench_function("grain/try_get_grain", |b| {
        b.iter(|| {
            let g = reader
                .try_get_grain_slices(black_box(head), VALID_SLICES_ALL)
                .expect("grain");
            black_box(g.payload().len())
        })
    });

    let big = FlowDef::video(
        Uuid::new_v4(),
        "b",
        VideoFormat::V210,
        1920,
        1080,
        Rational::new(25, 1),
        InterlaceMode::Progressive,
    )
    .expect("def");
    let mut w = domain
        .create_grain_writer(&big, &WriterOptions::default())
        .expect("writer");
    let mut group = c.benchmark_group("grain_1080p_v210");
    group.throughput(Throughput::Bytes(5_529_600));
    group.measurement_time(Duration::from_secs(3));
    let mut j = 0u64;
    group.bench_function("fill_and_commit", |b| {
        b.iter(|| {
            j += 1;
            let mut g = w.open_grain(j).expect("open");
            g.payload().fill(j as u8);
            g.commit().expect("commit");
        })
    });
    group.finish();
}

criterion_group!(flow, benches);
criterion_main!(flow);
