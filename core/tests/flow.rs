//! In-process tests of the MXL v1 flow layout, read windows and error handling.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::time::Duration;

use mcm_core::flow::{
    Domain, FlowError, GrainReader, GrainWriter, ReaderOptions, WriterOptions, VALID_SLICES_ALL,
    VALID_SLICES_ANY,
};
use mcm_core::format::{FlowDef, InterlaceMode, SampleFormat, VideoFormat};
use mcm_core::testpattern::{fill_v210, fill_v210_lines, verify_v210};
use mcm_core::time::Rational;
use uuid::Uuid;

const NO_WAIT: Duration = Duration::ZERO;

fn domain() -> (tempfile::TempDir, Domain) {
    let base = if std::path::Path::new("/dev/shm").is_dir() {
        "/dev/shm"
    } else {
        "/tmp"
    };
    let dir = tempfile::Builder::new()
        .prefix("mcm-test-")
        .tempdir_in(base)
        .unwrap();
    let d = Domain::open(dir.path()).unwrap();
    (dir, d)
}

fn v210(w: u32, h: u32, rate: Rational) -> FlowDef {
    FlowDef::video(
        Uuid::new_v4(),
        "test",
        VideoFormat::V210,
        w,
        h,
        rate,
        InterlaceMode::Progressive,
    )
    .unwrap()
}

/// The cursor files of the reliable readers of flow `id`.
fn cursor_files(d: &Domain, id: Uuid) -> Vec<std::path::PathBuf> {
    let dir = d.path().join(".mcm-cursors").join(id.to_string());
    fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|e| e == "cursor"))
                .collect()
        })
        .unwrap_or_default()
}

/// Writer options with back-pressure: wait up to `t` for reliable readers.
fn waiting_up_to(t: Duration) -> WriterOptions {
    WriterOptions {
        back_pressure: Some(t),
        ..Default::default()
    }
}

/// A writer of `def` with default options and a plain reader of it.
fn writer_and_reader(d: &Domain, def: &FlowDef) -> (GrainWriter, GrainReader) {
    let w = d
        .create_grain_writer(def, &WriterOptions::default())
        .unwrap();
    let r = d
        .open_grain_reader(def.id, &ReaderOptions::default())
        .unwrap();
    (w, r)
}

/// A writer waiting up to `back_pressure` for reliable readers, and a reliable reader from
/// grain 0.
fn reliable_pair(d: &Domain, def: &FlowDef, back_pressure: Duration) -> (GrainWriter, GrainReader) {
    let opts = waiting_up_to(back_pressure);
    let w = d.create_grain_writer(def, &opts).unwrap();
    (w, reliable_reader_from_0(d, def.id))
}

/// A reliable reader whose cursor starts at grain 0.
fn reliable_reader_from_0(d: &Domain, id: Uuid) -> GrainReader {
    d.open_grain_reader(
        id,
        &ReaderOptions {
            reliable: true,
            start_index: Some(0),
        },
    )
    .unwrap()
}

/// A v210 flow of 5 grains, a writer of it waiting up to `back_pressure` (and its
/// options), and a reliable reader from grain 0 (shared, so it can hold grains); grains 0
/// to 2 written, each filled with `fill + index`, and 0 and 1 read.
fn three_grains_two_read(
    d: &Domain,
    back_pressure: Duration,
    fill: u8,
) -> (
    FlowDef,
    WriterOptions,
    GrainWriter,
    std::sync::Arc<GrainReader>,
) {
    let def = v210(48, 2, Rational::new(25, 1));
    let opts = waiting_up_to(back_pressure);
    let mut w = d.create_grain_writer(&def, &opts).unwrap();
    let r = std::sync::Arc::new(reliable_reader_from_0(d, def.id));
    for i in 0..=2u8 {
        let mut g = w.open_grain(u64::from(i)).unwrap();
        g.payload().fill(fill + i);
        g.commit().unwrap();
    }
    drop(r.get_grain(0, NO_WAIT).unwrap());
    drop(r.get_grain(1, NO_WAIT).unwrap());
    (def, opts, w, r)
}

/// An opaque flow of 64-byte grains at 1000/s, a ring of 4, `metadata` bytes of metadata
/// per grain: a writer and a plain reader.
fn blob_ring_of_4(d: &Domain, metadata: u32) -> (GrainWriter, GrainReader) {
    let def = FlowDef::opaque(
        Uuid::new_v4(),
        "blob",
        "application/octet-stream",
        Rational::new(1000, 1),
        64,
    )
    .unwrap()
    .with_metadata_capacity(metadata)
    .unwrap();
    let opts = WriterOptions {
        grain_count: Some(4),
        ..Default::default()
    };
    let w = d.create_grain_writer(&def, &opts).unwrap();
    let r = d
        .open_grain_reader(def.id, &ReaderOptions::default())
        .unwrap();
    (w, r)
}

fn u32_at(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes(b[off..off + 4].try_into().unwrap())
}
fn u64_at(b: &[u8], off: usize) -> u64 {
    u64::from_le_bytes(b[off..off + 8].try_into().unwrap())
}
fn u16_at(b: &[u8], off: usize) -> u16 {
    u16::from_le_bytes(b[off..off + 2].try_into().unwrap())
}

#[test]
fn raw_bytes_of_data_and_grain_files_match_mxl_v1() {
    let (_t, d) = domain();
    let def = v210(1920, 1080, Rational::new(25, 1));
    let mut w = d
        .create_grain_writer(&def, &WriterOptions::default())
        .unwrap();
    assert!(w.created());
    let mut g = w.open_grain(7).unwrap();
    fill_v210(1920, 1080, 7, g.payload());
    g.commit().unwrap();

    let dir = d.flow_dir(def.id);
    assert_eq!(
        dir.file_name().unwrap().to_str().unwrap(),
        format!("{}.mxl-flow", def.id)
    );
    let data = fs::read(dir.join("data")).unwrap();
    assert_eq!(data.len(), 2064);
    assert_eq!(u32_at(&data, 0x000), 1, "version");
    assert_eq!(u32_at(&data, 0x004), 2048, "size");
    assert_eq!(&data[0x008..0x018], def.id.as_bytes());
    assert_eq!(u32_at(&data, 0x018), 1, "format VIDEO");
    assert_eq!(u64_at(&data, 0x020), 25);
    assert_eq!(u64_at(&data, 0x028), 1);
    assert_eq!(
        u32_at(&data, 0x030),
        1080,
        "commit batch hint = totalSlices"
    );
    assert_eq!(u32_at(&data, 0x034), 1080, "sync batch hint");
    assert_eq!(u32_at(&data, 0x038), 0, "payload in host memory");
    assert_eq!(u32_at(&data, 0x03C) as i32, -1, "device index");
    assert_eq!(u32_at(&data, 0x088), 5120, "sliceSizes[0] = v210 stride");
    assert_eq!(u32_at(&data, 0x08C), 0);
    assert_eq!(u32_at(&data, 0x098), 5, "grainCount = floor(200 ms * 25)");
    assert_eq!(u64_at(&data, 0x0C8), 7, "headIndex");
    assert!(
        u64_at(&data, 0x0D0) > 1_700_000_000_000_000_000,
        "lastWriteTime is TAI ns"
    );
    let ino = fs::metadata(dir.join("data")).unwrap().ino();
    assert_eq!(u64_at(&data, 0x800), ino, "state.inode");
    assert!(u32_at(&data, 0x808) >= 1, "syncCounter bumped on commit");

    let grain = fs::read(dir.join("grains").join("data.2")).unwrap();
    assert_eq!(grain.len(), 8192 + 5_529_600);
    assert_eq!(u32_at(&grain, 0x00), 1, "grain version");
    assert_eq!(u32_at(&grain, 0x04), 4096, "grain info size");
    assert_eq!(u64_at(&grain, 0x08), 7, "index");
    assert_eq!(u32_at(&grain, 0x10), 0, "flags");
    assert_eq!(u32_at(&grain, 0x14), 5_529_600, "grainSize");
    assert_eq!(u16_at(&grain, 0x18), 1080, "totalSlices");
    assert_eq!(u16_at(&grain, 0x1A), 1080, "validSlices");
    assert!(
        grain[0x1C..8192].iter().all(|&b| b == 0),
        "reserved and padding zero"
    );
    verify_v210(1920, 1080, 7, &grain[8192..]).unwrap();
    for slot in [0, 1, 3, 4] {
        let g = fs::read(dir.join("grains").join(format!("data.{slot}"))).unwrap();
        assert_eq!(
            u16_at(&g, 0x1A),
            0,
            "untouched slot {slot} has no valid slices"
        );
    }
    assert!(dir.join("access").is_file());
    let def_back = FlowDef::parse(&fs::read_to_string(dir.join("flow_def.json")).unwrap()).unwrap();
    assert_eq!(def_back.media, def.media);
}

#[test]
fn continuous_flow_layout() {
    let (_t, d) = domain();
    let def = FlowDef::audio(Uuid::new_v4(), "a", SampleFormat::Float32, 48000, 2).unwrap();
    let _w = d
        .create_samples_writer(&def, &WriterOptions::default())
        .unwrap();
    let dir = d.flow_dir(def.id);
    let data = fs::read(dir.join("data")).unwrap();
    assert_eq!(u32_at(&data, 0x018), 2, "format AUDIO");
    assert_eq!(u64_at(&data, 0x020), 48000);
    assert_eq!(u32_at(&data, 0x030), 480, "commit hint = 10 ms");
    assert_eq!(u32_at(&data, 0x088), 2, "channelCount");
    assert_eq!(
        u32_at(&data, 0x08C),
        19456,
        "bufferLength: 19200 rounded up to 1024"
    );
    assert_eq!(fs::metadata(dir.join("channels")).unwrap().len(), 155_648);
    assert!(
        !dir.join("access").exists(),
        "continuous flows have no access file"
    );
}

#[test]
fn ring_sizes_follow_mxl() {
    let (_t, d) = domain();
    assert_eq!(d.grain_count(Rational::new(30000, 1001)).unwrap(), 5);
    assert_eq!(d.grain_count(Rational::new(50, 1)).unwrap(), 10);
    assert_eq!(d.grain_count(Rational::new(60000, 1001)).unwrap(), 11);
    assert!(matches!(
        d.grain_count(Rational::new(1, 1)),
        Err(FlowError::InvalidArgument(_))
    ));
}

#[test]
fn read_windows_too_early_and_too_late() {
    let (_t, d) = domain();
    let def = v210(64, 4, Rational::new(50, 1)); // 10 grains
    let (mut w, r) = writer_and_reader(&d, &def);
    for i in 100..120 {
        let mut g = w.open_grain(i).unwrap();
        fill_v210(64, 4, i, g.payload());
        g.commit().unwrap();
    }
    // head 119, ring of 10: oldest readable is 119 - 10 + 2 = 111 (the tail slot is reserved).
    assert!(matches!(
        r.get_grain(120, NO_WAIT),
        Err(FlowError::TooEarly {
            index: 120,
            head: 119
        })
    ));
    assert!(matches!(
        r.get_grain(110, NO_WAIT),
        Err(FlowError::TooLate {
            index: 110,
            oldest: 111
        })
    ));
    for i in 111..=119 {
        let g = r.get_grain(i, NO_WAIT).unwrap();
        assert_eq!(g.index(), i);
        verify_v210(64, 4, i, g.payload()).unwrap();
        assert!(g.is_intact());
    }
    // A blocking read of a future grain times out as TooEarly.
    assert!(matches!(
        r.get_grain(125, Duration::from_millis(20)),
        Err(FlowError::TooEarly { .. })
    ));
}

#[test]
fn partial_grains_are_read_slice_by_slice() {
    let (_t, d) = domain();
    let def = v210(96, 8, Rational::new(25, 1));
    let (mut w, r) = writer_and_reader(&d, &def);
    let mut g = w.open_grain(3).unwrap();
    for line in 0..8u16 {
        fill_v210_lines(96, 3, u32::from(line), u32::from(line) + 1, g.payload());
        g.commit_slices(line + 1).unwrap();
        let got = r.get_grain_slices(3, line + 1, NO_WAIT).unwrap();
        assert_eq!(got.valid_slices(), line + 1);
        verify_v210(96, u32::from(line) + 1, 3, got.valid_plane(0)).unwrap();
        assert_eq!(got.valid_plane(0).len(), 256 * (usize::from(line) + 1));
        if line < 7 {
            assert!(!got.is_complete());
            assert!(matches!(
                r.get_grain(3, NO_WAIT),
                Err(FlowError::TooEarly { .. })
            ));
        }
    }
    drop(g);
    assert!(r.get_grain(3, NO_WAIT).unwrap().is_complete());
    assert!(r.get_grain_slices(3, VALID_SLICES_ANY, NO_WAIT).is_ok());
    assert!(r.get_grain_slices(3, VALID_SLICES_ALL, NO_WAIT).is_ok());
}

#[test]
fn writer_rules_skipped_slots_invalid_and_indices_increase() {
    let (_t, d) = domain();
    let def = v210(48, 2, Rational::new(50, 1));
    let (mut w, r) = writer_and_reader(&d, &def);
    w.open_grain(10).unwrap().commit().unwrap();
    w.open_grain(14).unwrap().commit().unwrap();
    for skipped in 11..14 {
        assert!(
            r.get_grain(skipped, NO_WAIT).unwrap().is_invalid(),
            "slot {skipped}"
        );
    }
    assert!(matches!(
        w.open_grain(12),
        Err(FlowError::InvalidArgument(_))
    ));
    // Open, then cancel: nothing is published.
    w.open_grain(15).unwrap().cancel();
    assert!(matches!(
        r.get_grain(15, NO_WAIT),
        Err(FlowError::TooEarly { .. })
    ));
    // Only one grain can be open at a time: the borrow checker enforces it (GrainWrite
    // borrows the writer mutably), so there is no runtime case to test.
    w.open_grain(15).unwrap().commit().unwrap();
    assert!(r.get_grain(15, NO_WAIT).unwrap().is_complete());
}

#[test]
fn end_of_stream_is_distinct_from_waiting() {
    let (_t, d) = domain();
    let def = v210(48, 2, Rational::new(25, 1));
    let (mut w, r) = writer_and_reader(&d, &def);
    w.open_grain(1).unwrap().commit().unwrap();
    w.end_of_stream().unwrap();
    assert!(r.get_grain(1, NO_WAIT).is_ok());
    assert!(matches!(
        r.get_grain(2, Duration::from_secs(5)),
        Err(FlowError::EndOfStream { end_index: 2 })
    ));
    assert_eq!(r.end_of_stream(), Some(2));
}

#[test]
fn second_writer_joins_and_last_writer_removes_the_flow() {
    let (_t, d) = domain();
    let def = v210(48, 2, Rational::new(25, 1));
    let w1 = d
        .create_grain_writer(&def, &WriterOptions::default())
        .unwrap();
    let w2 = d
        .create_grain_writer(&def, &WriterOptions::default())
        .unwrap();
    assert!(w1.created() && !w2.created());
    assert!(d.is_flow_active(def.id).unwrap());
    drop(w1);
    assert!(d.flow_dir(def.id).exists(), "second writer still holds it");
    drop(w2);
    assert!(!d.flow_dir(def.id).exists(), "last writer removes the flow");
    assert!(matches!(
        d.is_flow_active(def.id),
        Err(FlowError::NotFound { .. })
    ));
    // A different geometry under the same id is a conflict.
    let _w = d
        .create_grain_writer(&def, &WriterOptions::default())
        .unwrap();
    let mut other = v210(96, 2, Rational::new(25, 1));
    other.id = def.id;
    assert!(matches!(
        d.create_grain_writer(&other, &WriterOptions::default()),
        Err(FlowError::Conflict { .. })
    ));
}

#[test]
fn recreated_flow_is_invalid_for_old_readers() {
    let (_t, d) = domain();
    let def = v210(48, 2, Rational::new(25, 1));
    let mut w = d
        .create_grain_writer(&def, &WriterOptions::default())
        .unwrap();
    w.open_grain(1).unwrap().commit().unwrap();
    let r = d
        .open_grain_reader(def.id, &ReaderOptions::default())
        .unwrap();
    drop(w);
    let _w2 = d
        .create_grain_writer(&def, &WriterOptions::default())
        .unwrap();
    assert!(matches!(
        r.get_grain(2, Duration::from_millis(10)),
        Err(FlowError::FlowInvalid { .. })
    ));
}

#[test]
fn samples_round_trip_with_wrap_around() {
    let (_t, d) = domain();
    let def = FlowDef::audio(Uuid::new_v4(), "a", SampleFormat::Float32, 48000, 3).unwrap();
    let mut w = d
        .create_samples_writer(&def, &WriterOptions::default())
        .unwrap();
    let r = d.open_samples_reader(def.id).unwrap();
    let ring = w.buffer_length();
    assert_eq!(ring, 19456);
    let value = |c: u32, s: u64| (s as f32) * 0.5 + c as f32 * 1e6;
    let batch = 480u64;
    let mut end = batch;
    // Write past the ring length so windows wrap.
    while end <= ring * 3 {
        let mut win = w.open_samples(end, batch).unwrap();
        for c in 0..3 {
            let v: Vec<f32> = (end - batch..end).map(|s| value(c, s)).collect();
            win.write_f32(c, &v).unwrap();
        }
        win.commit();
        let read = r.get_samples(end, batch, NO_WAIT).unwrap();
        for c in 0..3 {
            let expect: Vec<f32> = (end - batch..end).map(|s| value(c, s)).collect();
            assert_eq!(read.channel_f32(c), expect, "channel {c} at {end}");
        }
        end += batch;
    }
    let head = r.head_index();
    // A window that wraps the ring end: samples head-1000 .. head-400.
    let read = r.get_samples(head - 400, 600, NO_WAIT).unwrap();
    let expect: Vec<f32> = (head - 1000..head - 400).map(|s| value(1, s)).collect();
    assert_eq!(read.channel_f32(1), expect);
    assert!(matches!(
        r.get_samples(head + 1, 10, NO_WAIT),
        Err(FlowError::TooEarly { .. })
    ));
    assert!(matches!(
        r.get_samples(head - ring / 2 + 5, 10, NO_WAIT),
        Err(FlowError::TooLate { .. })
    ));
    assert!(matches!(
        r.get_samples(head, ring, NO_WAIT),
        Err(FlowError::InvalidArgument(_))
    ));
    // Skipped samples are silence.
    let next = head + 1000 + batch;
    let mut win = w.open_samples(next, batch).unwrap();
    win.write_f32(0, &vec![1.0; batch as usize]).unwrap();
    win.commit();
    let gap = r.get_samples(next - batch, 1000, NO_WAIT).unwrap();
    assert!(gap.channel_f32(0).iter().all(|&s| s == 0.0));
}

#[test]
fn reliable_reader_holds_back_the_writer() {
    let (_t, d) = domain();
    let def = v210(48, 2, Rational::new(25, 1)); // 5 grains
    let (mut w, r) = reliable_pair(&d, &def, Duration::from_millis(30));
    // The reader needs 0: the writer may run ahead to 0 + 5 - 2 = 3.
    for i in 0..=3 {
        w.open_grain(i).unwrap().commit().unwrap();
    }
    match w.open_grain(4) {
        Err(FlowError::BackPressureTimeout {
            index: 4,
            reader_next: 0,
            ..
        }) => {}
        other => panic!(
            "expected back-pressure timeout, got {:?}",
            other.map(|g| g.index())
        ),
    }
    drop(r.get_grain(0, NO_WAIT).unwrap());
    assert_eq!(r.cursor(), Some(1));
    w.open_grain(4).unwrap().commit().unwrap();
    // A reader that goes away stops holding the writer back.
    drop(r);
    for i in 5..20 {
        w.open_grain(i).unwrap().commit().unwrap();
    }
    let status = d.status(def.id).unwrap();
    assert!(status.readers.is_empty());
}

#[test]
fn giving_a_held_grain_back_moves_the_cursor_past_grains_read_meanwhile() {
    let (_t, d) = domain();
    let def = v210(48, 2, Rational::new(25, 1)); // 5 grains
    let mut w = d
        .create_grain_writer(&def, &waiting_up_to(Duration::from_millis(30)))
        .unwrap();
    let r = std::sync::Arc::new(
        d.open_grain_reader(
            def.id,
            &ReaderOptions {
                reliable: true,
                start_index: Some(0),
            },
        )
        .unwrap(),
    );
    for i in 0..=2 {
        w.open_grain(i).unwrap().commit().unwrap();
    }
    // Grain 0 lent downstream; 1 and 2 read and consumed while it is out.
    let held = GrainReader::hold(&r, r.get_grain(0, NO_WAIT).unwrap());
    drop(r.get_grain(1, NO_WAIT).unwrap());
    drop(r.get_grain(2, NO_WAIT).unwrap());
    assert_eq!(r.cursor(), Some(0), "the held grain keeps the cursor");
    drop(held);
    assert_eq!(
        r.cursor(),
        Some(3),
        "nothing the reader consumed holds the writer back"
    );
    // The writer may run to 3 + 5 - 2 = 6 without waiting.
    for i in 3..=6 {
        w.open_grain(i).unwrap().commit().unwrap();
    }
}

#[test]
fn bad_files_are_typed_errors() {
    let (_t, d) = domain();
    let def = v210(48, 2, Rational::new(25, 1));
    let mut w = d
        .create_grain_writer(&def, &WriterOptions::default())
        .unwrap();
    w.open_grain(1).unwrap().commit().unwrap();
    let dir = d.flow_dir(def.id);
    let data = dir.join("data");
    let original = fs::read(&data).unwrap();
    let open = || {
        d.open_grain_reader(def.id, &ReaderOptions::default())
            .map(|_| ())
    };

    // Wrong version.
    let mut bad = original.clone();
    bad[0] = 2;
    fs::write(&data, &bad).unwrap();
    assert!(matches!(
        open(),
        Err(FlowError::Version {
            found: 2,
            expected: 1,
            ..
        })
    ));
    // Truncated.
    fs::write(&data, &original[..100]).unwrap();
    assert!(matches!(open(), Err(FlowError::Corrupt { .. })));
    // Absurd grain count.
    let mut bad = original.clone();
    bad[0x98..0x9C].copy_from_slice(&u32::MAX.to_le_bytes());
    fs::write(&data, &bad).unwrap();
    assert!(matches!(open(), Err(FlowError::Corrupt { .. })));
    // Zero rate.
    let mut bad = original.clone();
    bad[0x20..0x30].fill(0);
    fs::write(&data, &bad).unwrap();
    assert!(matches!(open(), Err(FlowError::Corrupt { .. })));
    fs::write(&data, &original).unwrap();
    open().unwrap();

    // Grain file of the wrong size, and with a wrong version.
    let g0 = dir.join("grains").join("data.0");
    let grain = fs::read(&g0).unwrap();
    fs::write(&g0, &grain[..grain.len() - 1]).unwrap();
    assert!(matches!(open(), Err(FlowError::Corrupt { .. })));
    let mut bad = grain.clone();
    bad[0] = 9;
    fs::write(&g0, &bad).unwrap();
    assert!(matches!(open(), Err(FlowError::Version { found: 9, .. })));
    fs::write(&g0, &grain).unwrap();
    open().unwrap();

    assert!(matches!(
        d.open_grain_reader(Uuid::new_v4(), &ReaderOptions::default()),
        Err(FlowError::NotFound { .. })
    ));
}

#[test]
fn bad_domain_options_are_typed_errors() {
    let (t, _d) = domain();
    fs::write(t.path().join("options.json"), "{not json").unwrap();
    assert!(matches!(
        Domain::open(t.path()),
        Err(FlowError::Corrupt { .. })
    ));
    fs::write(
        t.path().join("options.json"),
        r#"{"urn:x-mxl:option:history_duration/v1.0": -3}"#,
    )
    .unwrap();
    assert!(matches!(
        Domain::open(t.path()),
        Err(FlowError::Corrupt { .. })
    ));
    fs::write(
        t.path().join("options.json"),
        r#"{"urn:x-mxl:option:history_duration/v1.0": 1000000000}"#,
    )
    .unwrap();
    let d = Domain::open(t.path()).unwrap();
    assert_eq!(d.grain_count(Rational::new(25, 1)).unwrap(), 25);
}

#[test]
fn gc_removes_stale_tmp_dirs_but_not_fresh_ones() {
    let (t, d) = domain();
    let stale = t.path().join(".mxl-tmp-0123456789abcdef");
    fs::create_dir(&stale).unwrap();
    let old = std::time::SystemTime::now() - Duration::from_secs(3600);
    fs::File::open(&stale).unwrap().set_modified(old).unwrap();
    let fresh = t.path().join(".mxl-tmp-fedcba9876543210");
    fs::create_dir(&fresh).unwrap();
    let report = d.collect_garbage().unwrap();
    assert_eq!(report.removed_tmp_dirs, 1);
    assert!(!stale.exists() && fresh.exists());
}

#[test]
fn reliable_readers_registered_late_and_several_at_once() {
    let (_t, d) = domain();
    let def = v210(48, 2, Rational::new(50, 1)); // 10 grains
    let opts = waiting_up_to(Duration::from_millis(20));
    let mut w = d.create_grain_writer(&def, &opts).unwrap();
    for i in 0..30 {
        w.open_grain(i).unwrap().commit().unwrap();
    }
    // Registered while the writer is running: they start at the head (29).
    let a = d
        .open_grain_reader(
            def.id,
            &ReaderOptions {
                reliable: true,
                start_index: None,
            },
        )
        .unwrap();
    let b = d
        .open_grain_reader(
            def.id,
            &ReaderOptions {
                reliable: true,
                start_index: None,
            },
        )
        .unwrap();
    assert_eq!((a.cursor(), b.cursor()), (Some(29), Some(29)));
    // The writer may go up to 29 + 10 - 2 = 37, not further.
    for i in 30..=37 {
        w.open_grain(i).unwrap().commit().unwrap();
    }
    assert!(matches!(
        w.open_grain(38),
        Err(FlowError::BackPressureTimeout { .. })
    ));
    // One reader catching up is not enough: the slowest one holds the writer.
    for i in 29..=33 {
        drop(a.get_grain(i, NO_WAIT).unwrap());
    }
    assert!(matches!(
        w.open_grain(38),
        Err(FlowError::BackPressureTimeout {
            reader_next: 29,
            ..
        })
    ));
    drop(b.get_grain(29, NO_WAIT).unwrap());
    w.open_grain(38).unwrap().commit().unwrap();
    assert_eq!(d.status(def.id).unwrap().readers.len(), 2);
}

#[test]
fn reliable_reader_told_too_late_releases_the_writer() {
    let (_t, d) = domain();
    let def = v210(48, 2, Rational::new(25, 1)); // 5 grains
    let mut w = d
        .create_grain_writer(&def, &WriterOptions::default())
        .unwrap();
    for i in 0..10 {
        w.open_grain(i).unwrap().commit().unwrap();
    }
    // A cursor at 0 on a flow already at 9: the reader learns 0..=5 are gone and moves on.
    let r = reliable_reader_from_0(&d, def.id);
    assert!(matches!(
        r.get_grain(0, NO_WAIT),
        Err(FlowError::TooLate { oldest: 6, .. })
    ));
    assert_eq!(r.cursor(), Some(6));
}

#[test]
fn window_edge_cases() {
    let (_t, d) = domain();
    let def = v210(48, 2, Rational::new(25, 1)); // 5 grains
    let (mut w, r) = writer_and_reader(&d, &def);
    // Nothing written: not even "any slices" of grain 0 is readable.
    assert!(matches!(
        r.get_grain_slices(0, VALID_SLICES_ANY, NO_WAIT),
        Err(FlowError::TooEarly { .. })
    ));
    // Head below the ring length: every written grain is readable.
    for i in 0..3 {
        w.open_grain(i).unwrap().commit().unwrap();
    }
    for i in 0..3 {
        assert!(r.get_grain(i, NO_WAIT).is_ok());
    }
    // A ring of one grain could never be read: refused.
    let slow = FlowDef::video(
        Uuid::new_v4(),
        "s",
        VideoFormat::V210,
        48,
        2,
        Rational::new(5, 1),
        InterlaceMode::Progressive,
    )
    .unwrap();
    assert!(matches!(
        d.create_grain_writer(&slow, &WriterOptions::default()),
        Err(FlowError::InvalidArgument(_))
    ));
    let one = WriterOptions {
        grain_count: Some(1),
        ..Default::default()
    };
    assert!(matches!(
        d.create_grain_writer(&v210(48, 2, Rational::new(25, 1)), &one),
        Err(FlowError::InvalidArgument(_))
    ));
}

#[test]
fn metadata_travels_with_its_grain_and_never_leaks_to_the_next() {
    let (_t, d) = domain();
    let (mut w, r) = blob_ring_of_4(&d, 16);
    assert_eq!(w.grain_count(), 4);
    let mut g = w.open_grain(10).unwrap();
    g.payload()[..5].copy_from_slice(b"hello");
    g.metadata()[..3].copy_from_slice(b"abc");
    g.set_metadata_len(3).unwrap();
    assert!(g.set_metadata_len(17).is_err());
    g.commit_len(5).unwrap();
    let got = r.get_grain(10, NO_WAIT).unwrap();
    assert_eq!(
        (got.payload(), got.metadata()),
        (&b"hello"[..], &b"abc"[..])
    );
    drop(got);
    // Grain 14 reuses slot 2 without metadata: it must not show grain 10's.
    for i in 11..=14 {
        w.open_grain(i).unwrap().commit_len(1).unwrap();
    }
    assert_eq!(r.get_grain(14, NO_WAIT).unwrap().metadata(), b"");
}

#[test]
fn leased_grains_are_written_in_place_and_committed_in_any_order() {
    let (_t, d) = domain();
    let (mut w, r) = blob_ring_of_4(&d, 8);
    let i = w.next_free_index(10);
    assert_eq!(i, 10);
    let mut a = w.lease_grain(i).unwrap();
    let j = w.next_free_index(0);
    assert_eq!(j, 11, "after the outstanding lease");
    let mut b = w.lease_grain(j).unwrap();
    assert_eq!(a.payload_mut().len(), 64);
    a.payload_mut()[..3].copy_from_slice(b"aaa");
    b.payload_mut()[..2].copy_from_slice(b"bb");
    // Neither is readable before its commit, nor is the slot of a lease reopened.
    assert!(matches!(
        r.get_grain(10, NO_WAIT),
        Err(FlowError::TooEarly { .. })
    ));
    assert!(matches!(
        w.open_grain(14),
        Err(FlowError::InvalidArgument(_))
    ));
    // Out of order: 11 first, then 10; the head stays at 11.
    w.commit_lease(11, 2, b"m11").unwrap();
    assert!(
        w.commit_lease(11, 2, b"").is_err(),
        "a second commit is refused"
    );
    assert!(matches!(
        r.get_grain(10, NO_WAIT),
        Err(FlowError::TooEarly { .. })
    ));
    w.commit_lease(10, 3, b"m10").unwrap();
    assert_eq!(r.head_index(), 11);
    let g = r.get_grain(10, NO_WAIT).unwrap();
    assert_eq!((g.payload(), g.metadata()), (&b"aaa"[..], &b"m10"[..]));
    drop(g);
    let g = r.get_grain(11, NO_WAIT).unwrap();
    assert_eq!((g.payload(), g.metadata()), (&b"bb"[..], &b"m11"[..]));
    drop(g);
    // While lease 10 lives (a buffer still held downstream), its slot is stepped over.
    drop(b);
    assert_eq!(w.next_free_index(12), 12);
    assert_eq!(
        w.next_free_index(14),
        15,
        "slot 2 (grain 14) still belongs to lease 10"
    );
    drop(a);
    assert_eq!(w.next_free_index(14), 14);
    // A lease dropped before its commit leaves an invalid grain, never a stale one.
    let c = w.lease_grain(12).unwrap();
    drop(c);
    w.open_grain(13).unwrap().commit_len(1).unwrap();
    assert!(r.get_grain(12, NO_WAIT).unwrap().is_invalid());
    assert!(r.get_grain(13, NO_WAIT).unwrap().is_complete());
    assert!(w.commit_lease(12, 1, b"").is_err());
}

mod corrupt_runtime_values {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 128, failure_persistence: None, ..ProptestConfig::default() })]

        /// Another process may write anything into a live flow's header, grain headers and
        /// cursor files: readers and `status` return values or typed errors, never panic.
        #[test]
        fn reads_survive_garbage_in_shared_memory(
            offsets in proptest::collection::vec((prop_oneof![
                // rate, slice sizes / channels, grain count, head, mcm extension words
                Just(0x20usize), Just(0x28), Just(0x88), Just(0x8C), Just(0x98), Just(0xC8), Just(0xE0), Just(0xE8),
                0usize..2064,
            ], any::<u64>()), 1..8),
            grain_garbage in proptest::collection::vec((0usize..32, any::<u64>()), 0..4),
            index in any::<u64>(),
            count in any::<u64>(),
        ) {
            let (_t, d) = domain();
            let def = v210(48, 2, Rational::new(25, 1));
            let mut w = d.create_grain_writer(&def, &WriterOptions::default()).unwrap();
            w.open_grain(3).unwrap().commit().unwrap();
            let audio = FlowDef::audio(Uuid::new_v4(), "a", SampleFormat::Float32, 48000, 2).unwrap();
            let _aw = d.create_samples_writer(&audio, &WriterOptions::default()).unwrap();
            let r = d.open_grain_reader(def.id, &ReaderOptions { reliable: true, start_index: Some(0) }).unwrap();
            let ar = d.open_samples_reader(audio.id).unwrap();
            // Scribble over the live mappings through the file system (same pages on tmpfs).
            use std::os::unix::fs::FileExt;
            for (dir, extra) in [(d.flow_dir(def.id), true), (d.flow_dir(audio.id), false)] {
                let f = fs::OpenOptions::new().write(true).open(dir.join("data")).unwrap();
                for (off, v) in &offsets {
                    let off = (*off).min(2064 - 8) as u64;
                    f.write_all_at(&v.to_le_bytes(), off).unwrap();
                }
                if extra {
                    let g = fs::OpenOptions::new().write(true).open(dir.join("grains/data.3")).unwrap();
                    for (off, v) in &grain_garbage {
                        g.write_all_at(&v.to_le_bytes(), *off as u64).unwrap();
                    }
                    let cursors = d.path().join(".mcm-cursors").join(def.id.to_string());
                    for c in fs::read_dir(cursors).unwrap().flatten() {
                        let f = fs::OpenOptions::new().write(true).open(c.path()).unwrap();
                        f.write_all_at(&index.to_le_bytes(), 16).unwrap();
                    }
                }
            }
            for i in [index, 3, index.wrapping_sub(1), u64::MAX] {
                if let Ok(g) = r.get_grain_slices(i, VALID_SLICES_ANY, Duration::from_millis(1)) {
                    let _ = (g.payload().len(), g.metadata().len(), g.timestamp(), g.valid_plane(0).len(), g.is_intact());
                }
            }
            if let Ok(s) = ar.try_get_samples(index, count) {
                let _ = (s.channel(0), s.channel(1), s.channel_f32(0).len());
            }
            if let Ok(s) = ar.try_get_samples(ar.head_index(), 100) {
                let _ = s.channel(1);
            }
            let _ = d.status(def.id);
            let _ = d.status(audio.id);
            let _ = w.open_grain(index).map(|g| g.commit());
        }
    }
}

#[test]
fn a_busy_polling_follower_receives_every_grain_of_a_paced_writer() {
    let (_t, d) = domain();
    // 200 grains a second, the writer committing on that rhythm in its own thread: the
    // follower learns it and spins around each expected commit instead of sleeping.
    let def = FlowDef::opaque(
        Uuid::new_v4(),
        "paced",
        "application/octet-stream",
        Rational::new(200, 1),
        64,
    )
    .unwrap();
    let mut follower =
        mcm_core::flow::Follower::new(Domain::open(d.path()).unwrap(), def.id, true).unwrap();
    follower.set_busy_poll(Duration::from_micros(500));
    let opts = WriterOptions {
        grain_count: Some(8),
        back_pressure: Some(Duration::from_millis(100)),
        ..Default::default()
    };
    let mut w = d.create_grain_writer(&def, &opts).unwrap();
    const GRAINS: u64 = 60;
    let writer = std::thread::spawn(move || {
        let start = std::time::Instant::now();
        for i in 0..GRAINS {
            // The writer's own rhythm (what a live source does), not synchronisation.
            let due = start + Duration::from_millis(5 * i);
            std::thread::sleep(due.saturating_duration_since(std::time::Instant::now()));
            let mut g = w.open_grain(i).unwrap();
            g.payload()[..8].copy_from_slice(&(i * 7919).to_le_bytes());
            g.commit().unwrap();
        }
        w.end_of_stream().unwrap();
    });
    let mut got = Vec::new();
    for _ in 0..GRAINS + 1 {
        match follower.next_grain(Duration::from_secs(5)) {
            Ok(g) => got.push((g.index(), u64_at(g.payload(), 0))),
            Err(mcm_core::flow::FollowError::Closed) => break,
            Err(e) => panic!("{e}"),
        }
    }
    writer.join().unwrap();
    let want: Vec<_> = (0..GRAINS).map(|i| (i, i * 7919)).collect();
    assert_eq!(got, want);
    assert_eq!(
        follower.drops().load(std::sync::atomic::Ordering::Relaxed),
        0
    );
}

/// MXL's readers report that they read by touching `access` (the writer folds its atime
/// into `lastReadTime`). mcm's do it while they wait for a grain, which is idle time, and
/// on the way of a grain to the caller only when the last touch is a second old.
#[test]
fn readers_touch_access_while_they_wait_and_when_a_read_finds_it_stale() {
    let (_t, d) = domain();
    let def = v210(48, 2, Rational::new(25, 1));
    let (mut w, r) = writer_and_reader(&d, &def);
    let access = d.flow_dir(def.id).join("access");
    let atime = || fs::metadata(&access).unwrap().atime();
    // An atime far in the past, so any touch shows.
    let set_old = || {
        let old = rustix::fs::Timestamps {
            last_access: rustix::time::Timespec {
                tv_sec: 1_000_000,
                tv_nsec: 0,
            },
            last_modification: rustix::time::Timespec {
                tv_sec: 0,
                tv_nsec: rustix::fs::UTIME_OMIT,
            },
        };
        rustix::fs::futimens(fs::File::open(&access).unwrap(), &old).unwrap();
    };
    set_old();
    assert!(matches!(
        r.get_grain(0, NO_WAIT),
        Err(FlowError::TooEarly { .. })
    ));
    assert!(atime() > 1_000_000, "a reader told to wait touches access");
    set_old();
    w.open_grain(0).unwrap().commit().unwrap();
    drop(r.get_grain(0, NO_WAIT).unwrap());
    assert_eq!(
        atime(),
        1_000_000,
        "a read within a second of the last touch leaves access alone"
    );
    let fresh = d
        .open_grain_reader(def.id, &ReaderOptions::default())
        .unwrap();
    drop(fresh.get_grain(0, NO_WAIT).unwrap());
    assert!(atime() > 1_000_000, "a reader's first read touches access");
}

/// A back-pressure writer counts itself in the flow's `mcm_cursor_waiters` (data file
/// 0x0F0, an mcm extension word in MXL's reserved runtime area) while it waits for a
/// cursor, so readers wake it only then; the flow says so with `MCM_EXT_CURSOR_WAITERS`.
#[test]
fn a_writer_waiting_for_a_cursor_is_counted_and_the_reader_moving_it_lets_it_on() {
    let (_t, d) = domain();
    let def = v210(48, 2, Rational::new(25, 1)); // 5 grains
    let (mut w, r) = reliable_pair(&d, &def, Duration::from_secs(20));
    let data = d.flow_dir(def.id).join("data");
    let word = |off: usize| u32_at(&fs::read(&data).unwrap(), off);
    assert_eq!(word(0x0E0), 0x4d43_4d31, "mcm extension magic");
    assert_ne!(word(0x0E4) & 4, 0, "the writer keeps the waiter count");
    assert_eq!(word(0x0F0), 0, "nobody waits yet");
    for i in 0..=3 {
        w.open_grain(i).unwrap().commit().unwrap();
    }
    let _w = std::thread::scope(|s| {
        // Grain 4 would overwrite what the reader still needs (0): the writer waits.
        let writer = s.spawn(move || {
            w.open_grain(4).unwrap().commit().unwrap();
            w
        });
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while word(0x0F0) != 1 {
            assert!(
                std::time::Instant::now() < deadline,
                "the writer never waited"
            );
            std::thread::yield_now();
        }
        drop(r.get_grain(0, NO_WAIT).unwrap());
        let w = writer.join().unwrap();
        assert_eq!(w.head_index(), 4);
        w
    });
    assert_eq!(word(0x0F0), 0, "the writer no longer counts itself");
}

/// A reliable reader owns its cursor file and may shrink it. The back-pressure writer reads
/// cursors without loading from its mapping of them, so a shrunk file costs it no SIGBUS
/// (which would kill this test binary): the writer stops waiting for that cursor, whether it
/// was asleep on it or meets it afresh, and `status` leaves it out.
#[test]
fn a_cursor_file_shrunk_by_its_reader_neither_crashes_nor_holds_the_writer() {
    let (_t, d) = domain();
    let def = v210(48, 2, Rational::new(25, 1)); // 5 grains
    let (mut w, r) = reliable_pair(&d, &def, Duration::from_secs(20));
    let cursor_file = cursor_files(&d, def.id).remove(0);
    let data = d.flow_dir(def.id).join("data");
    let waiting = || u32_at(&fs::read(&data).unwrap(), 0x0F0);
    for i in 0..=3 {
        w.open_grain(i).unwrap().commit().unwrap();
    }
    // Asleep on the cursor (grain 4 would overwrite grain 0, which the reader needs) when
    // the reader truncates the file.
    let started = std::time::Instant::now();
    let mut w = std::thread::scope(|s| {
        let writer = s.spawn(move || {
            w.open_grain(4).unwrap().commit().unwrap();
            w
        });
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while waiting() != 1 {
            assert!(
                std::time::Instant::now() < deadline,
                "the writer never waited"
            );
            std::thread::yield_now();
        }
        fs::OpenOptions::new()
            .write(true)
            .open(&cursor_file)
            .unwrap()
            .set_len(0)
            .unwrap();
        writer.join().unwrap()
    });
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the writer waited out its back-pressure timeout"
    );
    assert_eq!(w.head_index(), 4);
    // A second reader's cursor, shrunk before the writer ever needs it, is skipped too.
    let r2 = reliable_reader_from_0(&d, def.id);
    assert_eq!(
        d.status(def.id).unwrap().readers.len(),
        1,
        "only r2 is whole"
    );
    let second = cursor_files(&d, def.id)
        .into_iter()
        .find(|p| *p != cursor_file)
        .unwrap();
    fs::OpenOptions::new()
        .write(true)
        .open(&second)
        .unwrap()
        .set_len(0)
        .unwrap();
    for i in 5..20 {
        w.open_grain(i).unwrap().commit().unwrap();
    }
    assert_eq!(w.head_index(), 19);
    assert!(d.status(def.id).unwrap().readers.is_empty());
    // Here, the readers share the process: their own stores to the shrunk files would fault.
    std::mem::forget((r, r2));
}

/// A writer's end of stream waits until reliable readers have read the last grain, not
/// until they let go of the grains they hold (a sink's last sample): the cursor file says
/// both (`next_index` at 16 stays at the oldest held grain, `consumed_next` at 32 is past
/// the last read, flagged by bit 0 of the word at 40). A held grain keeps its bytes after
/// the writer is gone. A cursor without the flag (an older reader) is waited for until it
/// lets go, as before.
#[test]
fn end_of_stream_waits_for_grains_read_not_for_grains_still_held() {
    let (_t, d) = domain();
    let (def, opts, mut w, r) = three_grains_two_read(&d, Duration::from_millis(200), 0xA0);
    match w.end_of_stream() {
        Err(FlowError::BackPressureTimeout { reader_next: 2, .. }) => {}
        other => panic!("the reader has not read grain 2 yet: {other:?}"),
    }
    let held = GrainReader::hold(&r, r.get_grain(2, NO_WAIT).unwrap());
    let cursor = fs::read(&cursor_files(&d, def.id)[0]).unwrap();
    assert_eq!(u64_at(&cursor, 16), 2, "the held grain keeps next_index");
    assert_eq!(u64_at(&cursor, 32), 3, "every grain before 3 was read");
    assert_eq!(u32_at(&cursor, 40) & 1, 1, "consumed_next is kept");
    w.end_of_stream().expect("the last grain was read");
    // Gone: the flow is removed, the held grain's bytes are what the writer wrote.
    drop(w);
    assert!(!d.flow_dir(def.id).exists());
    assert!(held.is_intact());
    assert!(held.payload().iter().all(|&b| b == 0xA2));
    drop(held);
    drop(r);

    // An older reader's cursor (no flag): held grains hold the end of stream.
    let mut w = d.create_grain_writer(&def, &opts).unwrap();
    let r = std::sync::Arc::new(reliable_reader_from_0(&d, def.id));
    w.open_grain(0).unwrap().commit().unwrap();
    let held = GrainReader::hold(&r, r.get_grain(0, NO_WAIT).unwrap());
    let cursor_file = cursor_files(&d, def.id).remove(0);
    use std::os::unix::fs::FileExt;
    fs::OpenOptions::new()
        .write(true)
        .open(&cursor_file)
        .unwrap()
        .write_all_at(&0u32.to_ne_bytes(), 40)
        .unwrap();
    match w.end_of_stream() {
        Err(FlowError::BackPressureTimeout { reader_next: 0, .. }) => {}
        other => panic!("an older reader holding grain 0 holds the writer: {other:?}"),
    }
    drop(held);
    w.end_of_stream().expect("let go of");
}

/// A reliable reader that finds its flow recreated retires its cursor, though it still
/// holds a grain of the old flow: the new flow's writer (same id, same cursor directory)
/// does not wait for it at its end of stream.
#[test]
fn a_reader_of_a_recreated_flow_no_longer_holds_the_new_writer() {
    let (_t, d) = domain();
    let (def, opts, mut w, r) = three_grains_two_read(&d, Duration::from_millis(500), 0xB0);
    let held = GrainReader::hold(&r, r.get_grain(2, NO_WAIT).unwrap());
    // Replaced without ending the stream (as `mcmsink` does on new caps).
    w.drain().unwrap();
    drop(w);
    // The flow again, from a new writer, far on.
    let mut w = d.create_grain_writer(&def, &opts).unwrap();
    w.open_grain(100).unwrap().commit().unwrap();
    assert!(matches!(
        r.get_grain(3, Duration::from_secs(5)),
        Err(FlowError::FlowInvalid { .. })
    ));
    w.end_of_stream()
        .expect("the old reader's cursor is retired, not waited for");
    assert!(held.is_intact());
    assert!(held.payload().iter().all(|&b| b == 0xB2));
}

/// A back-pressure writer joining a flow that already has grains takes those as existing:
/// it waits for a reliable reader that has not read the other writer's grains instead of
/// overwriting them (it used to take only its own grains as existing).
#[test]
fn a_writer_joining_a_flow_waits_for_readers_of_the_grains_already_there() {
    let (_t, d) = domain();
    let def = v210(48, 2, Rational::new(25, 1)); // 5 grains
    let opts = waiting_up_to(Duration::from_millis(100));
    let mut a = d.create_grain_writer(&def, &opts).unwrap();
    let r = reliable_reader_from_0(&d, def.id);
    for i in 0..=2 {
        a.open_grain(i).unwrap().commit().unwrap();
    }
    let mut b = d.create_grain_writer(&def, &opts).unwrap();
    assert!(!b.created());
    // The reader needs 0: 3 is the last grain either writer may write.
    b.open_grain(3).unwrap().commit().unwrap();
    match b.open_grain(4) {
        Err(FlowError::BackPressureTimeout { reader_next: 0, .. }) => {}
        other => panic!(
            "the joining writer must wait for grain 0's reader: {:?}",
            other.map(|g| g.index())
        ),
    }
    drop(r.get_grain(0, NO_WAIT).unwrap());
    b.open_grain(4).unwrap().commit().unwrap();
}

/// A back-pressure writer that jumps ahead (indices are TAI times: a writer restarted, or
/// one that paused) does not wait for a reliable reader that has read every grain there
/// is: nothing it needs exists to be overwritten. Once for a writer that created the flow,
/// once for one that joined it (as a restarted writer whose predecessor died does).
#[test]
fn a_writer_jumping_ahead_does_not_wait_for_a_reader_that_has_read_everything() {
    for join in [false, true] {
        let (_t, d) = domain();
        let def = v210(48, 2, Rational::new(25, 1)); // 5 grains
        let opts = waiting_up_to(Duration::from_secs(5));
        let mut first = d.create_grain_writer(&def, &opts).unwrap();
        let r = reliable_reader_from_0(&d, def.id);
        for i in 0..=2 {
            first.open_grain(i).unwrap().commit().unwrap();
            drop(r.get_grain(i, NO_WAIT).unwrap());
        }
        assert_eq!(r.cursor(), Some(3));
        let mut joined;
        let w = if join {
            joined = d.create_grain_writer(&def, &opts).unwrap();
            assert!(!joined.created());
            &mut joined
        } else {
            &mut first
        };
        let started = std::time::Instant::now();
        w.open_grain(100).unwrap().commit().unwrap();
        assert!(
            started.elapsed() < Duration::from_secs(4),
            "join {join}: the writer waited for a reader with nothing to read"
        );
        assert!(r.get_grain(100, NO_WAIT).unwrap().is_complete());
    }
}
