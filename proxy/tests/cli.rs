//! The `mcm` binary: info, gc and demo against a real domain.

use std::process::Command;

use mcm_core::flow::{Domain, WriterOptions};
use mcm_core::format::{FlowDef, InterlaceMode, VideoFormat};
use mcm_core::time::Rational;
use uuid::Uuid;

fn mcm(domain: &std::path::Path, args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_mcm"))
        .arg("--domain")
        .arg(domain)
        .args(args)
        .output()
        .expect("run mcm");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

#[test]
fn info_lists_and_shows_flows_and_gc_keeps_active_ones() {
    let dir = tempfile::tempdir().unwrap();
    let d = Domain::open(dir.path()).unwrap();
    let def = FlowDef::video(
        Uuid::new_v4(),
        "camera 1",
        VideoFormat::V210,
        1920,
        1080,
        Rational::new(50, 1),
        InterlaceMode::Progressive,
    )
    .unwrap();
    let mut w = d
        .create_grain_writer(&def, &WriterOptions::default())
        .unwrap();
    w.open_grain(42).unwrap().commit().unwrap();

    let (ok, list) = mcm(dir.path(), &["info"]);
    assert!(ok, "{list}");
    let line = list
        .lines()
        .find(|l| l.contains(&def.id.to_string()))
        .expect(&list);
    assert!(
        line.contains("active")
            && line.contains("video/v210")
            && line.contains("50/1")
            && line.contains("camera 1"),
        "{line}"
    );

    let (ok, one) = mcm(dir.path(), &["info", &def.id.to_string()]);
    assert!(ok, "{one}");
    for expect in [
        "Format: Video",
        "Grain count: 10",
        "Head index: 42",
        "Active: true",
        "Slice sizes: [5120, 0, 0, 0]",
    ] {
        assert!(
            one.lines().any(|l| l.trim() == expect),
            "missing `{expect}` in\n{one}"
        );
    }
    let (ok, gc) = mcm(dir.path(), &["gc"]);
    assert!(
        ok && gc.contains("removed 0 stale flows") && gc.contains("1 active"),
        "{gc}"
    );
    assert!(d.flow_dir(def.id).exists());

    let (ok, err) = mcm(dir.path(), &["info", &Uuid::new_v4().to_string()]);
    assert!(!ok && err.contains("not found"), "{err}");
}

#[test]
fn demo_verifies_every_grain_in_a_second_process() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, out) = mcm(
        dir.path(),
        &[
            "demo", "--width", "1280", "--height", "720", "--frames", "40", "--fast",
        ],
    );
    assert!(ok, "{out}");
    assert!(
        out.contains("result: received 40/40 grains verified byte for byte, 0 lost, 0 corrupt"),
        "{out}"
    );
    // The demo's flow is released (deleted) when it ends.
    assert!(Domain::open(dir.path())
        .unwrap()
        .flow_ids()
        .unwrap()
        .is_empty());
}

#[test]
fn demo_rejects_bad_arguments_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, out) = mcm(dir.path(), &["demo", "--width", "0"]);
    assert!(!ok && out.contains("frame_width"), "{out}");
    let (ok, out) = mcm(dir.path(), &["demo", "--rate", "0/0"]);
    assert!(!ok && out.contains("positive"), "{out}");
}
