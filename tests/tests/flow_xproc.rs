//! Writer and readers in separate processes, through a real tmpfs domain.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use mcm_core::flow::Domain;
use mcm_tests::{temp_domain, Helper};
use uuid::Uuid;

fn helper(args: &[&str]) -> (Helper, String) {
    Helper::spawn_with(Command::new(env!("CARGO_BIN_EXE_flow-helper")).args(args))
}

fn field(reply: &str, key: &str) -> u64 {
    reply
        .split_whitespace()
        .find_map(|w| w.strip_prefix(&format!("{key}=")))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {key}= in `{reply}`"))
}

#[test]
fn full_hd_grains_cross_process_content_verified() {
    let dom = temp_domain();
    let d = dom.path().to_str().unwrap();
    let id = Uuid::new_v4().to_string();
    let (mut w, ready) = helper(&["writer", d, &id, "1920", "1080", "25", "1", "10000"]);
    assert!(
        ready.contains("created=true") && ready.contains("grains=5"),
        "{ready}"
    );
    let (mut r, _) = helper(&["reader", d, &id, "reliable", "1000"]);
    // The writer blocks on the reliable reader, so all 60 grains arrive while both run.
    let writes = std::thread::spawn(move || {
        let reply = w.cmd("grains 1000 60");
        (w, reply)
    });
    let done = r.cmd("drain 1000 60 10000 0");
    assert_eq!(done.trim(), "done read=60 late=0 bad=0", "{done}");
    let (w, reply) = writes.join().unwrap();
    assert_eq!(reply, "ok");
    // Single reads of the newest grain and outside the window.
    assert!(r.cmd("read 1059 0").starts_with("ok 1059 valid=1080"));
    assert_eq!(r.cmd("read 1060 0"), "err TooEarly");
    assert_eq!(r.cmd("read 1000 0"), "err TooLate");
    drop(w);
    r.finish();
}

#[test]
fn partial_grain_read_slice_by_slice_across_processes() {
    let dom = temp_domain();
    let d = dom.path().to_str().unwrap();
    let id = Uuid::new_v4().to_string();
    let (mut w, _) = helper(&["writer", d, &id, "1280", "16", "50", "1"]);
    let (mut r, _) = helper(&["reader", d, &id]);
    for k in 1..=16 {
        assert_eq!(w.cmd(&format!("slice 77 {k}")), "ok");
        // The reader asks for k slices and verifies exactly lines 0..k.
        let got = r.cmd(&format!("read 77 1000 {k}"));
        assert_eq!(got, format!("ok 77 valid={k} invalid=false"));
        if k < 16 {
            assert_eq!(r.cmd(&format!("read 77 0 {}", k + 1)), "err TooEarly");
        }
    }
    assert_eq!(r.cmd("read 77 0"), "ok 77 valid=16 invalid=false");
    drop(w);
}

#[test]
fn blocking_reader_wakes_on_commit_and_sees_end_of_stream() {
    let dom = temp_domain();
    let d = dom.path().to_str().unwrap();
    let id = Uuid::new_v4().to_string();
    let (mut w, _) = helper(&["writer", d, &id, "96", "4", "25", "1"]);
    let (mut r, _) = helper(&["reader", d, &id]);
    assert_eq!(w.cmd("grain 5"), "ok");
    // A long timeout: the reply comes from the futex wake-up after the commit below.
    let reader = std::thread::spawn(move || {
        let got = r.cmd("read 6 30000");
        (r, got)
    });
    assert_eq!(w.cmd("grain 6"), "ok");
    let (mut r, got) = reader.join().unwrap();
    assert_eq!(got, "ok 6 valid=4 invalid=false");
    assert_eq!(w.cmd("eos"), "ok");
    assert_eq!(r.cmd("read 7 30000"), "err EndOfStream");
}

#[test]
fn killed_writer_is_stale_and_collected() {
    let dom = temp_domain();
    let d = dom.path().to_str().unwrap();
    let uuid = Uuid::new_v4();
    let id = uuid.to_string();
    let (mut w, _) = helper(&["writer", d, &id, "96", "4", "25", "1"]);
    assert_eq!(w.cmd("grain 1"), "ok");
    let domain = Domain::open(dom.path()).unwrap();
    assert!(domain.is_flow_active(uuid).unwrap());
    assert_eq!(domain.collect_garbage().unwrap().active_flows, 1);
    w.kill();
    assert!(
        !domain.is_flow_active(uuid).unwrap(),
        "SIGKILLed writer must not look active"
    );
    assert!(
        domain.flow_dir(uuid).exists(),
        "a killed writer leaves its flow behind"
    );
    let report = domain.collect_garbage().unwrap();
    assert_eq!(report.removed_flows, vec![uuid]);
    assert!(!domain.flow_dir(uuid).exists());
}

#[test]
fn recreated_flow_is_invalid_for_a_reader_in_another_process() {
    let dom = temp_domain();
    let d = dom.path().to_str().unwrap();
    let id = Uuid::new_v4().to_string();
    let (mut w, _) = helper(&["writer", d, &id, "96", "4", "25", "1"]);
    assert_eq!(w.cmd("grain 1"), "ok");
    let (mut r, _) = helper(&["reader", d, &id]);
    assert!(r.cmd("read 1 0").starts_with("ok 1"));
    assert!(w.finish().success());
    let (mut w2, ready) = helper(&["writer", d, &id, "96", "4", "25", "1"]);
    assert!(ready.contains("created=true"), "{ready}");
    assert_eq!(w2.cmd("grain 2"), "ok");
    assert_eq!(r.cmd("read 2 200"), "err FlowInvalid");
}

#[test]
fn reliable_mode_loses_nothing_with_a_slow_reader_and_plain_mode_does() {
    let dom = temp_domain();
    let d = dom.path().to_str().unwrap();

    // Reliable: the writer waits for the slow reader; all 150 grains arrive intact.
    let id = Uuid::new_v4().to_string();
    let (mut w, _) = helper(&["writer", d, &id, "1920", "1080", "25", "1", "10000"]);
    let (mut r, _) = helper(&["reader", d, &id, "reliable", "0"]);
    let writer = std::thread::spawn(move || (w.cmd("grains 0 150"), w));
    let done = r.cmd("drain 0 150 10000 3000");
    let (reply, _w) = writer.join().unwrap();
    assert_eq!(reply, "ok");
    assert_eq!(done.trim(), "done read=150 late=0 bad=0");

    // Plain MXL mode: a writer that ran ahead by the whole stream has overwritten all but
    // the newest grains; the reader counts what it lost instead of returning stale content.
    let id = Uuid::new_v4().to_string();
    let (mut w, _) = helper(&["writer", d, &id, "1920", "1080", "25", "1"]);
    let (mut r, _) = helper(&["reader", d, &id]);
    assert_eq!(w.cmd("grains 0 150"), "ok");
    let done = r.cmd("drain 0 150 2000 0");
    let (read, late, bad) = (
        field(&done, "read"),
        field(&done, "late"),
        field(&done, "bad"),
    );
    // Ring of 5, head 149: only 146..=149 are readable (the tail slot is the writer's).
    assert_eq!((read, late, bad), (4, 146, 0), "{done}");
}

#[test]
fn reader_works_on_a_read_only_domain() {
    let dom = temp_domain();
    let d = dom.path().to_str().unwrap();
    let id = Uuid::new_v4().to_string();
    let (mut w, _) = helper(&["writer", d, &id, "96", "4", "25", "1"]);
    assert_eq!(w.cmd("grain 3"), "ok");
    let flow_dir = dom.path().join(format!("{id}.mxl-flow"));
    let is_root = rustix::process::geteuid().is_root();
    let bin_dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_flow-helper"));
    if is_root {
        // root ignores permission bits: run the reader as `nobody`, who may read, not write.
        // A copy of the helper in a world-readable directory, wherever the checkout is.
        use std::os::unix::process::CommandExt;
        let bin = bin_dir.path().join("flow-helper");
        std::fs::copy(env!("CARGO_BIN_EXE_flow-helper"), &bin).unwrap();
        for p in [bin_dir.path(), dom.path()] {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        cmd = Command::new(&bin);
        cmd.uid(65534).gid(65534);
    } else {
        for p in walk(&flow_dir) {
            let mode = if p.is_dir() { 0o555 } else { 0o444 };
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        }
    }
    cmd.args(["reader", d, &id]);
    let (mut r, _) = Helper::spawn_with(&mut cmd);
    assert_eq!(r.cmd("read 3 0"), "ok 3 valid=4 invalid=false");
    assert_eq!(w.cmd("grain 4"), "ok");
    assert_eq!(r.cmd("read 4 1000"), "ok 4 valid=4 invalid=false");
    if is_root {
        // A reliable reader needs no write access to the flow either: its cursor lives in
        // its own file in the sticky, world-writable `mcm-cursors/`.
        use std::os::unix::process::CommandExt;
        let mut cmd2 = Command::new(cmd.get_program());
        cmd2.uid(65534)
            .gid(65534)
            .args(["reader", d, &id, "reliable", "4"]);
        let (mut r2, _) = Helper::spawn_with(&mut cmd2);
        assert_eq!(r2.cmd("read 4 0"), "ok 4 valid=4 invalid=false");
        let status = Domain::open(dom.path())
            .unwrap()
            .status(Uuid::parse_str(&id).unwrap())
            .unwrap();
        assert_eq!(status.readers.len(), 1);
        assert_eq!(status.readers[0].next_index, 5);
    }
    if !is_root {
        for p in walk(&flow_dir) {
            let mode = if p.is_dir() { 0o755 } else { 0o644 };
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        }
    }
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = vec![dir.to_owned()];
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        if e.path().is_dir() {
            out.extend(walk(&e.path()));
        } else {
            out.push(e.path());
        }
    }
    out
}
