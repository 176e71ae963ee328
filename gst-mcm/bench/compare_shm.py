#!/usr/bin/env python3
"""mcmsink -> mcmsrc against shmsink -> shmsrc, in the same run, on the same frames.

For 1080p and 2160p v210 from videotestsrc, a sender and a receiver process per transport
(mcmsrc as users get it, zero copy, and with zero-copy=false for reference); prints
- frames per second at full speed, and the transport's own CPU time per frame: both
  processes' user+system CPU minus that of the same source into fakesink;
- the same in steady state: the CPU of a run of 3N frames less that of a run of N, over
  2N frames (each transport's one-time costs cancel out: mcm's ring of grains, 4 for
  a reliable video flow, is faulted in on its first lap, shmsink's area as its
  allocator reaches it);
- end-to-end latency, p50 and p99, from the buffer reaching the sender's sink to it
  reaching the receiver's fakesink, on a live 50 fps stream (so no frame waits in a queue),
  stamped with the host's monotonic clock by `latency_probe` (gst-mcm/examples); and
  once more for mcm as a low-latency user runs it: `mcmsrc busy-poll=200`, the sender
  and the receiver each on a CPU of its own (latency only: the spin is CPU spent on
  purpose).

Usage: gst-mcm/bench/compare_shm.py [--frames N]   (builds nothing: run
`cargo build --release -p gst-mcm --lib --examples` first: without `--lib` the plugin's
shared library, which gst-launch loads, is not rebuilt; GST_PLUGIN_PATH is set to
target/release).
"""
import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ENV = dict(os.environ, GST_PLUGIN_PATH=os.path.join(ROOT, "target", "release"))
PROBE = os.path.join(ROOT, "target", "release", "examples", "latency_probe")
LIVE_FRAMES = 150
SKIP = 10
# mcmsrc's spin either side of the next grain's expected commit in the low-latency row.
BUSY_POLL_US = 200


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


class Watchdog:
    """Kills processes still running after `seconds` (a shmsink/shmsrc pair sometimes never
    ends); `fired` tells the run to be discarded."""

    def __init__(self, seconds):
        self.procs, self.fired = [], False
        self.timer = threading.Timer(seconds, self._fire)
        self.timer.start()

    def _fire(self):
        self.fired = True
        for p in self.procs:
            if p.poll() is None:
                p.kill()

    def watch(self, proc):
        self.procs.append(proc)
        return proc

    def cancel(self):
        self.timer.cancel()


def run_pair(receiver, sender, sender_first_socket=None, timeout=120):
    """Runs both sides; shmsrc can only connect once shmsink has made its socket. None if
    the pair had to be killed."""
    dog = Watchdog(timeout)
    try:
        cpu, wall = run_pair_watched(receiver, sender, sender_first_socket, dog)
    finally:
        dog.cancel()
    return None if dog.fired else (cpu, wall)


def run_pair_watched(receiver, sender, sender_first_socket, dog):
    def watched(pipeline):
        return dog.watch(launch(pipeline))

    start = time.monotonic()
    if sender_first_socket:
        tx = watched(sender)
        while not os.path.exists(sender_first_socket) and not dog.fired:
            time.sleep(0.01)  # bench harness only: wait for shmsink's socket file
        rx = watched(receiver)
    else:
        rx = watched(receiver)
        time.sleep(0.5)  # bench harness only: a reliable mcmsrc registers as it starts
        start = time.monotonic()
        tx = watched(sender)
    rx_cpu, end = reap(rx, must_succeed=False)
    # shmsink has no end of stream: it errors out when shmsrc leaves after num-buffers,
    # or lingers; its CPU counts either way.
    linger = threading.Timer(5, tx.kill) if sender_first_socket else None
    if linger:
        linger.start()
    tx_cpu, _ = reap(tx, must_succeed=False)
    if linger:
        linger.cancel()
    if not dog.fired and rx.returncode != 0:
        sys.exit(f"receiver failed: {rx.stderr.read().decode()}")
    if not dog.fired and tx.returncode != 0 and not sender_first_socket:
        sys.exit(f"sender failed: {tx.stderr.read().decode()}")
    return tx_cpu + rx_cpu, end - start


def probe(role, pipeline, cpu=None):
    """One side of a latency run; on `cpu` alone when given."""
    pin = (lambda: os.sched_setaffinity(0, {cpu})) if cpu is not None else None
    return subprocess.Popen([PROBE, role, pipeline, str(SKIP)], env=ENV, preexec_fn=pin,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def latency(receiver, sender, sender_first_socket=None, pinned=False):
    """p50 and p99 in microseconds of a live stream, receiver and sender as in run_pair;
    `pinned`: the sender on CPU 0, the receiver on CPU 1."""
    tx_cpu, rx_cpu = (0, 1) if pinned else (None, None)
    if sender_first_socket:
        tx = probe("send", sender, tx_cpu)
        while not os.path.exists(sender_first_socket):
            time.sleep(0.01)  # bench harness only: wait for shmsink's socket file
        rx = probe("recv", receiver, rx_cpu)
    else:
        rx = probe("recv", receiver, rx_cpu)
        time.sleep(0.5)  # bench harness only: let the receiver start
        tx = probe("send", sender, tx_cpu)
    out, err = rx.communicate(timeout=120)
    tx.wait(timeout=30)
    fields = out.decode().split()
    if rx.returncode != 0 or len(fields) != 4:
        sys.exit(f"latency run failed: {err.decode()}")
    return float(fields[1]), float(fields[2])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=600)
    ap.add_argument("--runs", type=int, default=3,
                    help="runs per configuration; the least CPU of them counts (noise only adds)")
    args = ap.parse_args()
    shm_dir = "/dev/shm" if os.path.isdir("/dev/shm") else tempfile.gettempdir()
    print(f"{'size':>9} {'transport':>22} {'fps':>8} {'CPU/frame':>12} {'steady':>12} {'lat p50':>12} {'lat p99':>12}")
    for (w, h) in [(1920, 1080), (3840, 2160)]:
        n = args.frames if h == 1080 else max(args.frames // 3, 20)
        caps = f"video/x-raw,format=v210,width={w},height={h},framerate=25/1"

        def src(frames):
            return f"videotestsrc num-buffers={frames} pattern=black ! {caps}"

        def base(frames):
            return min(reap(launch(f"{src(frames)} ! fakesink sync=false"))[0] for _ in range(args.runs))

        base_cpu, base_cpu3 = base(n), base(3 * n)
        frame_bytes = ((w + 47) // 48) * 128 * h
        results, results3 = {}, {}

        def best(name, run):
            for frames, into in [(n, results), (3 * n, results3)]:
                runs = [r for r in (run(frames) for _ in range(args.runs)) if r is not None]
                if not runs:
                    sys.exit(f"{name}: every run hung and was killed")
                into[name] = min(runs)  # (cpu, wall): least CPU

        def mcm(receiver_options):
            def run(frames):
                with tempfile.TemporaryDirectory(dir=shm_dir) as domain:
                    at = f"domain={domain} flow-id={uuid.uuid4()} reliable=true"
                    return run_pair(f"mcmsrc {at} {receiver_options} ! fakesink sync=false",
                                    f"{src(frames)} ! mcmsink {at}")
            return run

        def shm(frames):
            sock = os.path.join(tempfile.gettempdir(), f"shm-bench-{uuid.uuid4().hex}")
            return run_pair(
                f"shmsrc socket-path={sock} is-live=false num-buffers={frames} ! {caps} ! fakesink sync=false",
                f"{src(frames)} ! shmsink socket-path={sock} shm-size={frame_bytes * 8} wait-for-connection=true sync=false",
                sender_first_socket=sock,
            )

        best("mcmsink -> mcmsrc", mcm(""))
        best("mcmsrc zero-copy=false", mcm("zero-copy=false"))
        best("shmsink -> shmsrc", shm)
        live_caps = caps.replace("framerate=25/1", "framerate=50/1")
        live = f"videotestsrc is-live=true num-buffers={LIVE_FRAMES} pattern=black ! {live_caps}"
        lat = {}
        with tempfile.TemporaryDirectory(dir=shm_dir) as domain:
            at = f"domain={domain} flow-id={uuid.uuid4()}"
            lat["mcmsink -> mcmsrc"] = latency(
                f"mcmsrc {at} ! fakesink name=sink sync=false", f"{live} ! mcmsink name=sink {at}")
        with tempfile.TemporaryDirectory(dir=shm_dir) as domain:
            at = f"domain={domain} flow-id={uuid.uuid4()}"
            lat["mcmsrc zero-copy=false"] = latency(
                f"mcmsrc {at} zero-copy=false ! fakesink name=sink sync=false",
                f"{live} ! mcmsink name=sink {at}")
        busy = None
        if len(os.sched_getaffinity(0)) >= 2:
            with tempfile.TemporaryDirectory(dir=shm_dir) as domain:
                at = f"domain={domain} flow-id={uuid.uuid4()}"
                busy = latency(
                    f"mcmsrc {at} busy-poll={BUSY_POLL_US} ! fakesink name=sink sync=false",
                    f"{live} ! mcmsink name=sink {at}", pinned=True)
        sock = os.path.join(tempfile.gettempdir(), f"shm-bench-{uuid.uuid4().hex}")
        lat["shmsink -> shmsrc"] = latency(
            f"shmsrc socket-path={sock} is-live=true num-buffers={LIVE_FRAMES} ! {live_caps} ! fakesink name=sink sync=false",
            f"{live} ! shmsink name=sink socket-path={sock} shm-size={frame_bytes * 8} wait-for-connection=true sync=false",
            sender_first_socket=sock,
        )
        def steady(name):
            return ((results3[name][0] - results[name][0]) - (base_cpu3 - base_cpu)) / (2 * n)

        for name, (cpu, wall) in results.items():
            per_frame = (cpu - base_cpu) / n * 1e3
            p50, p99 = lat[name]
            print(f"{w}x{h:<4} {name:>22} {n / wall:8.1f} {per_frame:9.3f} ms {steady(name) * 1e3:9.3f} ms"
                  f" {p50:9.1f} us {p99:9.1f} us")
        if busy:
            print(f"{w}x{h:<4} {'mcm busy-poll, pinned':>22} {'':8} {'':12} {'':12}"
                  f" {busy[0]:9.1f} us {busy[1]:9.1f} us")
        (m_cpu, _), (s_cpu, _) = results["mcmsink -> mcmsrc"], results["shmsink -> shmsrc"]
        ratio = (m_cpu - base_cpu) / max(s_cpu - base_cpu, 1e-9)
        steady_ratio = steady("mcmsink -> mcmsrc") / max(steady("shmsink -> shmsrc"), 1e-9)
        lat_ratio = lat["shmsink -> shmsrc"][0] / max(lat["mcmsink -> mcmsrc"][0], 1e-9)
        print(f"{w}x{h:<4} {'ratio mcm / shm CPU':>22} {'':8} {ratio:9.2f}x {steady_ratio:9.2f}x")
        print(f"{w}x{h:<4} {'shm / mcm latency p50':>22} {'':8} {'':12} {'':12} {lat_ratio:9.2f}x")
        if busy:
            busy_ratio = lat["shmsink -> shmsrc"][0] / max(busy[0], 1e-9)
            print(f"{w}x{h:<4} {'shm / mcm busy-poll':>22} {'':8} {'':12} {'':12} {busy_ratio:9.2f}x")


if __name__ == "__main__":
    main()
