#!/usr/bin/env python3
"""mcmsink -> mcmsrc against shmsink -> shmsrc, in the same run, on the same frames.

For 1080p and 2160p v210 from videotestsrc, a sender and a receiver gst-launch-1.0 process
per transport; prints frames per second at full speed and the transport's own CPU time per
frame: both processes' user+system CPU minus that of the same source into fakesink.

Usage: gst-mcm/bench/compare_shm.py [--frames N]   (builds nothing: run `cargo build
--release -p gst-mcm` first; GST_PLUGIN_PATH is set to target/release).
"""
import argparse
import os
import subprocess
import sys
import tempfile
import time
import uuid

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ENV = dict(os.environ, GST_PLUGIN_PATH=os.path.join(ROOT, "target", "release"))


def launch(pipeline):
    return subprocess.Popen(["gst-launch-1.0", "-q"] + pipeline.split(), env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def reap(proc, must_succeed=True):
    """Waits for a process; returns (cpu seconds, wall end time)."""
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0 and must_succeed:
        sys.exit(f"pipeline failed: {proc.stderr.read().decode()}")
    return usage.ru_utime + usage.ru_stime, time.monotonic()


def run_pair(receiver, sender, sender_first_socket=None):
    """Runs both sides; shmsrc can only connect once shmsink has made its socket."""
    start = time.monotonic()
    if sender_first_socket:
        tx = launch(sender)
        while not os.path.exists(sender_first_socket):
            time.sleep(0.01)  # bench harness only: wait for shmsink's socket file
        rx = launch(receiver)
    else:
        rx = launch(receiver)
        time.sleep(0.5)  # bench harness only: a reliable mcmsrc registers as it starts
        start = time.monotonic()
        tx = launch(sender)
    rx_cpu, end = reap(rx)
    # shmsink has no end of stream: it errors out when shmsrc leaves after num-buffers.
    tx_cpu, _ = reap(tx, must_succeed=not sender_first_socket)
    return tx_cpu + rx_cpu, end - start


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=300)
    args = ap.parse_args()
    shm_dir = "/dev/shm" if os.path.isdir("/dev/shm") else tempfile.gettempdir()
    print(f"{'size':>9} {'transport':>22} {'fps':>8} {'CPU/frame':>12}")
    for (w, h) in [(1920, 1080), (3840, 2160)]:
        n = args.frames if h == 1080 else max(args.frames // 4, 20)
        caps = f"video/x-raw,format=v210,width={w},height={h},framerate=25/1"
        src = f"videotestsrc num-buffers={n} pattern=black ! {caps}"
        p = launch(f"{src} ! fakesink sync=false")
        base_cpu, _ = reap(p)
        frame_bytes = ((w + 47) // 48) * 128 * h
        results = {}
        with tempfile.TemporaryDirectory(dir=shm_dir) as domain:
            flow = uuid.uuid4()
            at = f"domain={domain} flow-id={flow} reliable=true"
            results["mcmsink -> mcmsrc"] = run_pair(f"mcmsrc {at} ! fakesink sync=false", f"{src} ! mcmsink {at}")
        with tempfile.TemporaryDirectory(dir=shm_dir) as domain:
            at = f"domain={domain} flow-id={uuid.uuid4()} reliable=true"
            results["mcm, mcmsrc zero-copy"] = run_pair(
                f"mcmsrc {at} zero-copy=true ! fakesink sync=false", f"{src} ! mcmsink {at}"
            )
        sock = os.path.join(tempfile.gettempdir(), f"shm-bench-{uuid.uuid4().hex}")
        results["shmsink -> shmsrc"] = run_pair(
            f"shmsrc socket-path={sock} is-live=false num-buffers={n} ! {caps} ! fakesink sync=false",
            f"{src} ! shmsink socket-path={sock} shm-size={frame_bytes * 8} wait-for-connection=true sync=false",
            sender_first_socket=sock,
        )
        for name, (cpu, wall) in results.items():
            per_frame = (cpu - base_cpu) / n * 1e3
            print(f"{w}x{h:<4} {name:>22} {n / wall:8.1f} {per_frame:9.3f} ms")
        (m_cpu, _), (s_cpu, _) = results["mcm, mcmsrc zero-copy"], results["shmsink -> shmsrc"]
        ratio = (m_cpu - base_cpu) / max(s_cpu - base_cpu, 1e-9)
        print(f"{w}x{h:<4} {'ratio mcm / shm CPU':>22} {'':8} {ratio:9.2f}x")


if __name__ == "__main__":
    main()
