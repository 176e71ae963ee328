//! The media proxy, the SDK and its samples as real processes on one host.

use std::path::Path;
use std::process::Command;

use mcm_tests::{start_proxy, workspace_bin, Proc};

const VIDEO: &[&str] = &["--video", "640x360", "--pixel-format", "v210"];

fn sample(name: &str, proxy_unix: &Path, urn: &str, args: &[&str]) -> Proc {
    let mut cmd = Command::new(workspace_bin(name));
    cmd.env("MCM_PROXY_SOCKET", proxy_unix)
        .env_remove("MCM_MEDIA_PROXY_IP")
        .env_remove("MCM_MEDIA_PROXY_PORT")
        .args(["--urn", urn])
        .args(args);
    let mut p = Proc::spawn(name, &mut cmd);
    p.wait_for(|l| l.starts_with("ready") || l.starts_with("error"));
    assert!(
        p.log.last().is_some_and(|l| l.starts_with("ready")),
        "{name}: {:?}",
        p.log
    );
    p
}

fn done_line(p: Proc) -> String {
    let name = p.name.clone();
    let (status, log) = p.finish();
    let done = log
        .iter()
        .find(|l| l.starts_with("done"))
        .cloned()
        .unwrap_or_else(|| panic!("{name}: no done line: {log:?}"));
    assert!(status.success(), "{name} failed: {log:?}");
    assert!(!log.iter().any(|l| l.starts_with("bad")), "{name}: {log:?}");
    done
}

fn field(line: &str, key: &str) -> u64 {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(&format!("{key}=")))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {key}= in `{line}`"))
}

fn flows_left(domain: &Path) -> usize {
    std::fs::read_dir(domain)
        .map(|d| {
            d.flatten()
                .filter(|e| e.file_name().to_string_lossy().ends_with(".mxl-flow"))
                .count()
        })
        .unwrap_or(0)
}

#[test]
fn one_sender_three_receivers_every_grain_verified() {
    let dir = tempfile::tempdir().unwrap();
    let domain = mcm_tests::temp_domain();
    let proxy = start_proxy(dir.path(), domain.path(), &[]);
    let tcp = format!("127.0.0.1:{}", proxy.tcp_port);
    let rx_args = [VIDEO, &["--reliable", "--verify", "--progress", "0"]].concat();
    let receivers: Vec<Proc> = vec![
        sample("mcm-receiver", &proxy.unix, "studio/cam1", &rx_args),
        sample("mcm-receiver", &proxy.unix, "studio/cam1", &rx_args),
        // The third one reaches the proxy over TCP instead of the unix socket.
        sample(
            "mcm-receiver",
            &proxy.unix,
            "studio/cam1",
            &[&rx_args[..], &["--proxy", &tcp]].concat(),
        ),
    ];
    let sender = sample(
        "mcm-sender",
        &proxy.unix,
        "studio/cam1",
        &[
            VIDEO,
            &["--reliable", "--fast", "--count", "300", "--progress", "0"],
        ]
        .concat(),
    );
    assert_eq!(done_line(sender), "done sent=300");
    for r in receivers {
        assert_eq!(done_line(r), "done received=300 bad=0 drops=0 closed=true");
    }
    assert_eq!(
        flows_left(domain.path()),
        0,
        "the last writer removes the flow"
    );
}

#[test]
fn receiver_killed_and_restarted_mid_stream() {
    let dir = tempfile::tempdir().unwrap();
    let domain = mcm_tests::temp_domain();
    let proxy = start_proxy(dir.path(), domain.path(), &[]);
    let rx_args = [
        VIDEO,
        &["--fps", "200", "--reliable", "--verify", "--progress", "10"],
    ]
    .concat();
    let mut steady = sample("mcm-receiver", &proxy.unix, "g", &rx_args);
    let mut victim = sample("mcm-receiver", &proxy.unix, "g", &rx_args);
    let mut sender = sample(
        "mcm-sender",
        &proxy.unix,
        "g",
        &[
            VIDEO,
            &[
                "--fps",
                "200",
                "--reliable",
                "--timeout-ms",
                "10000",
                "--stdin-stop",
                "--progress",
                "0",
            ],
        ]
        .concat(),
    );
    let first = field(&steady.wait_for(|l| l.starts_with("first seq=")), "seq");
    victim.wait_for(|l| l == "progress received=30");
    victim.kill();
    // The sender is not held back by the dead reliable receiver; a new one joins mid-stream
    // and, being reliable, starts at the oldest grain still in the ring.
    let mut again = sample("mcm-receiver", &proxy.unix, "g", &rx_args);
    let again_first = field(&again.wait_for(|l| l.starts_with("first seq=")), "seq");
    assert!(
        again_first > first,
        "joined mid-stream: {again_first} after {first}"
    );
    again.wait_for(|l| l == "progress received=30");
    sender.close_stdin();
    let sent = field(&done_line(sender), "sent");
    let steady = done_line(steady);
    assert_eq!(field(&steady, "received"), sent, "{steady}");
    assert_eq!(field(&steady, "drops"), 0);
    let again = done_line(again);
    assert!(
        field(&again, "received") >= 30 && field(&again, "received") < sent,
        "{again}"
    );
}

#[test]
fn live_receiver_joining_late_starts_at_the_newest_grain() {
    let dir = tempfile::tempdir().unwrap();
    let domain = mcm_tests::temp_domain();
    let proxy = start_proxy(dir.path(), domain.path(), &[]);
    let rx_args = [VIDEO, &["--fps", "100", "--verify", "--progress", "10"]].concat();
    let mut early = sample("mcm-receiver", &proxy.unix, "late", &rx_args);
    let mut sender = sample(
        "mcm-sender",
        &proxy.unix,
        "late",
        &[VIDEO, &["--fps", "100", "--stdin-stop", "--progress", "0"]].concat(),
    );
    let first = field(&early.wait_for(|l| l.starts_with("first seq=")), "seq");
    early.wait_for(|l| l == "progress received=40");
    let mut late = sample("mcm-receiver", &proxy.unix, "late", &rx_args);
    // The early receiver has read grains first..=first+39, so the head is at least there; the
    // ring (16 grains) no longer holds the stream's start, and a late live receiver begins at
    // the head rather than with what little history is left.
    let late_first = field(&late.wait_for(|l| l.starts_with("first seq=")), "seq");
    assert!(
        late_first >= first + 39,
        "late receiver started at {late_first}, stream began at {first}"
    );
    late.wait_for(|l| l == "progress received=20");
    sender.close_stdin();
    done_line(sender);
    for r in [early, late] {
        let done = done_line(r);
        assert!(
            done.contains("bad=0") && done.ends_with("closed=true"),
            "{done}"
        );
    }
}

#[test]
fn killed_sender_is_picked_up_again_when_it_returns() {
    let dir = tempfile::tempdir().unwrap();
    let domain = mcm_tests::temp_domain();
    let proxy = start_proxy(dir.path(), domain.path(), &[]);
    let mut rx = sample(
        "mcm-receiver",
        &proxy.unix,
        "g2",
        &[
            VIDEO,
            &[
                "--fps",
                "100",
                "--verify",
                "--progress",
                "10",
                "--timeout-ms",
                "200",
                "--idle-ms",
                "30000",
            ],
        ]
        .concat(),
    );
    let tx_args = [VIDEO, &["--fps", "100", "--stdin-stop", "--progress", "0"]].concat();
    let mut first = sample("mcm-sender", &proxy.unix, "g2", &tx_args);
    rx.wait_for(|l| l == "progress received=20");
    first.kill();
    let waiting = rx.wait_for(|l| l.starts_with("waiting"));
    assert!(
        waiting.contains("1012"),
        "a clear timeout error while the sender is gone: {waiting}"
    );
    let mut second = sample("mcm-sender", &proxy.unix, "g2", &tx_args);
    rx.wait_for(|l| l == "resumed");
    rx.wait_for(|l| l == "progress received=60");
    second.close_stdin();
    done_line(second);
    let done = done_line(rx);
    assert!(done.ends_with("closed=true"), "{done}");
    assert_eq!(
        flows_left(domain.path()),
        0,
        "the restarted sender released the flow it joined"
    );
}

#[test]
fn proxy_killed_and_restarted_while_media_keeps_flowing() {
    let dir = tempfile::tempdir().unwrap();
    let domain = mcm_tests::temp_domain();
    let mut proxy = start_proxy(dir.path(), domain.path(), &[]);
    let mut rx = sample(
        "mcm-receiver",
        &proxy.unix,
        "g3",
        &[VIDEO, &["--fps", "100", "--verify", "--progress", "10"]].concat(),
    );
    let mut tx = sample(
        "mcm-sender",
        &proxy.unix,
        "g3",
        &[VIDEO, &["--fps", "100", "--stdin-stop", "--progress", "0"]].concat(),
    );
    rx.wait_for(|l| l == "progress received=20");
    proxy.proc.kill();
    // Shared memory does not need the proxy: grains keep arriving.
    rx.wait_for(|l| l == "progress received=60");
    let mut proxy2 = start_proxy(dir.path(), domain.path(), &[]);
    // The clients re-register with the new proxy: its control API lists both connections.
    let listed = mcm_tests::control::wait_for_connections(&proxy2, 2);
    assert!(listed.iter().all(|c| c.group == "g3"), "{listed:?}");
    // Stopping the proxy while clients are attached and a monitor holds a metrics stream it
    // never reads: the proxy still exits, and media still flows.
    let _monitor = mcm_tests::control::hold_metrics_stream(&proxy2);
    proxy2.proc.terminate();
    let (status, log) = proxy2.proc.finish();
    assert!(status.success(), "{log:?}");
    assert!(
        log.iter()
            .any(|l| l == "INFO: mcm-proxy stopped; 2 connections closed, 0 stale flows removed"),
        "{log:?}"
    );
    assert!(!proxy2.unix.exists(), "the unix socket is removed");
    rx.wait_for(|l| l == "progress received=100");
    // A sender killed while no proxy runs leaves a stale flow; the next proxy collects it.
    tx.kill();
    assert_eq!(flows_left(domain.path()), 1);
    let proxy3 = start_proxy(dir.path(), domain.path(), &[]);
    assert_eq!(
        flows_left(domain.path()),
        0,
        "stale flows are collected when a proxy starts"
    );
    drop(proxy3);
    rx.kill();
}

#[test]
fn reliable_file_copy_is_byte_exact_even_when_the_receiver_starts_first() {
    let dir = tempfile::tempdir().unwrap();
    let domain = mcm_tests::temp_domain();
    let proxy = start_proxy(dir.path(), domain.path(), &[]);
    // 40 frames of 640x360 v210 (1792 bytes per line), arbitrary content.
    let frame = 1792 * 360;
    let mut frames = vec![0u8; frame * 40];
    mcm_core::testpattern::fill_bytes(99, &mut frames);
    let input = dir.path().join("in.v210");
    let output = dir.path().join("out.v210");
    std::fs::write(&input, &frames).unwrap();
    let rx = sample(
        "mcm-receiver",
        &proxy.unix,
        "copy",
        &[
            VIDEO,
            &[
                "--reliable",
                "--progress",
                "0",
                "--output",
                output.to_str().unwrap(),
            ],
        ]
        .concat(),
    );
    let tx = sample(
        "mcm-sender",
        &proxy.unix,
        "copy",
        &[
            VIDEO,
            &[
                "--reliable",
                "--fast",
                "--progress",
                "0",
                "--input",
                input.to_str().unwrap(),
            ],
        ]
        .concat(),
    );
    assert_eq!(done_line(tx), "done sent=40");
    assert_eq!(done_line(rx), "done received=40 bad=0 drops=0 closed=true");
    assert!(
        std::fs::read(&output).unwrap() == frames,
        "the copy differs from the input"
    );
}
