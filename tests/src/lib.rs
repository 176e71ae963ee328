//! Harness for cross-process tests: helper processes driven line by line over pipes, so
//! tests synchronise on explicit replies, never on sleeps.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};

use std::sync::mpsc::{channel, Receiver};
use std::time::Duration;

/// Longest wait for one reply; a helper that hangs fails the test instead of hanging it.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(60);

/// A helper process speaking the line protocol of `flow-helper`: one command, one reply.
pub struct Helper(Proc);

impl Helper {
    /// Starts a prepared command (e.g. with another uid) and waits for its `ready` line.
    pub fn spawn_with(cmd: &mut Command) -> (Self, String) {
        let mut proc = Proc::spawn("flow-helper", cmd);
        let ready = proc.next_line();
        assert!(ready.starts_with("ready"), "helper did not start: {ready}");
        (Self(proc), ready)
    }

    /// The next line the helper prints.
    pub fn reply(&mut self) -> String {
        self.0.next_line()
    }

    /// Sends one command and returns the reply line.
    pub fn cmd(&mut self, line: &str) -> String {
        self.0.send(line);
        self.reply()
    }

    /// Closes stdin and waits for the helper to exit.
    pub fn finish(self) -> std::process::ExitStatus {
        self.0.finish().0
    }

    /// SIGKILLs the helper and reaps it.
    pub fn kill(mut self) {
        self.0.kill();
    }
}

/// A fresh domain directory on tmpfs (or /tmp), removed when dropped.
pub fn temp_domain() -> tempfile::TempDir {
    let base = if Path::new("/dev/shm").is_dir() {
        "/dev/shm"
    } else {
        "/tmp"
    };
    tempfile::Builder::new()
        .prefix("mcm-xproc-")
        .tempdir_in(base)
        .expect("temp domain")
}

/// A binary of the workspace (`mcm-proxy`, `mcm-sender`, ...), built (or found fresh) once per
/// test process, so a test never runs a stale binary.
pub fn workspace_bin(name: &str) -> std::path::PathBuf {
    use std::collections::HashSet;
    use std::sync::Mutex;
    static BUILT: Mutex<Option<HashSet<String>>> = Mutex::new(None);
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test> -> target/<profile>/<name>
    let dir = exe.parent().and_then(|d| d.parent()).expect("target dir");
    let mut built = BUILT.lock().unwrap_or_else(|p| p.into_inner());
    if built
        .get_or_insert_with(HashSet::new)
        .insert(name.to_owned())
    {
        let package = match name {
            "mcm-sender" | "mcm-receiver" => "mcm-samples",
            _ => "mcm-proxy",
        };
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.args(["build", "--quiet", "-p", package, "--bin", name]);
        if dir.file_name().is_some_and(|d| d == "release") {
            cmd.arg("--release");
        }
        let status = cmd.status().expect("cargo build");
        assert!(status.success(), "building {name}");
    }
    dir.join(name)
}

/// A process whose stdout lines are collected; tests wait for specific lines.
pub struct Proc {
    pub name: String,
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    pub log: Vec<String>,
}

impl Proc {
    pub fn spawn(name: &str, cmd: &mut Command) -> Self {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {name}: {e}"));
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stdin = child.stdin.take();
        Self {
            name: name.to_owned(),
            child,
            stdin,
            lines: rx,
            log: Vec::new(),
        }
    }

    /// The next line (bounded wait); panics with the log if the process ends or stays silent.
    pub fn next_line(&mut self) -> String {
        self.wait_for(|_| true)
    }

    /// Writes one line to the process's stdin.
    pub fn send(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        writeln!(stdin, "{line}").expect("write to child");
        stdin.flush().expect("flush child stdin");
    }

    /// Waits (bounded) for a line matching `pred` and returns it; panics with the log if
    /// the process ends or stays silent.
    pub fn wait_for(&mut self, pred: impl Fn(&str) -> bool) -> String {
        loop {
            match self.lines.recv_timeout(REPLY_TIMEOUT) {
                Ok(line) => {
                    self.log.push(line.clone());
                    if pred(&line) {
                        return line;
                    }
                }
                Err(e) => panic!(
                    "{}: no matching line ({e}); output so far:\n{}",
                    self.name,
                    self.log.join("\n")
                ),
            }
        }
    }

    /// Closes stdin (a sender started with --stdin-stop then ends its stream).
    pub fn close_stdin(&mut self) {
        self.stdin.take();
    }

    /// Waits (bounded) for the process to exit; returns its status and all its output.
    pub fn finish(mut self) -> (std::process::ExitStatus, Vec<String>) {
        self.stdin.take();
        let deadline = std::time::Instant::now() + REPLY_TIMEOUT;
        let status = loop {
            if let Some(s) = self.child.try_wait().expect("wait") {
                break s;
            }
            if let Ok(line) = self.lines.recv_timeout(Duration::from_millis(100)) {
                self.log.push(line);
            }
            if std::time::Instant::now() > deadline {
                let _ = self.child.kill();
                panic!(
                    "{} did not exit; output:\n{}",
                    self.name,
                    self.log.join("\n")
                );
            }
        };
        while let Ok(line) = self.lines.recv_timeout(Duration::from_millis(200)) {
            self.log.push(line);
        }
        (status, std::mem::take(&mut self.log))
    }

    /// SIGKILL.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM.
    pub fn terminate(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A running `mcm-proxy` with its ports and socket.
pub struct Proxy {
    pub proc: Proc,
    pub tcp_port: u16,
    pub grpc_port: u16,
    pub unix: std::path::PathBuf,
}

/// Starts `mcm-proxy` on free loopback ports with a unix socket in `dir` and flows in `domain`.
pub fn start_proxy(dir: &Path, domain: &Path, extra: &[&str]) -> Proxy {
    start_proxy_in(None, dir, domain, extra)
}

/// [`start_proxy`] inside network namespace `netns` (its ST 2110 bridges use that
/// namespace's interfaces; the unix socket and the domain are on the shared filesystem).
pub fn start_proxy_in(netns: Option<&str>, dir: &Path, domain: &Path, extra: &[&str]) -> Proxy {
    let unix = dir.join("proxy.sock");
    let mut cmd = match netns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns])
                .arg(workspace_bin("mcm-proxy"));
            c
        }
        None => Command::new(workspace_bin("mcm-proxy")),
    };
    cmd.args(["-t", "0", "-g", "0", "--log", "warn"])
        .arg("--unix")
        .arg(&unix)
        .arg("--domain")
        .arg(domain)
        .args(extra);
    let mut proc = Proc::spawn("mcm-proxy", &mut cmd);
    let port = |l: &str| {
        l.rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("port")
    };
    let tcp_port = port(&proc.wait_for(|l| l.starts_with("INFO: TCP Server listening on")));
    let grpc_port = port(&proc.wait_for(|l| l.starts_with("INFO: gRPC Server listening on")));
    proc.wait_for(|l| l.starts_with("INFO: Unix Server listening on"));
    Proxy {
        proc,
        tcp_port,
        grpc_port,
        unix,
    }
}

impl Proxy {
    /// The token the proxy wrote for TCP clients beside its unix socket.
    pub fn token(&self) -> Option<String> {
        std::fs::read_to_string(mcm_core::sdk::token_path(&self.unix)).ok()
    }
}

/// Raw gRPC clients of the proxy, for protocol tests.
pub mod grpc {
    use mcm_proto::v1::control_client::ControlClient;
    use mcm_proto::v1::sdk_api_client::SdkApiClient;
    use mcm_proto::v1::{AttachRequest, ProxyEvent};
    use tonic::service::interceptor::InterceptedService;
    use tonic::transport::Channel;

    /// Adds `authorization: Bearer <token>` when a token is given.
    #[derive(Clone)]
    pub struct Bearer(pub Option<String>);

    impl tonic::service::Interceptor for Bearer {
        fn call(
            &mut self,
            mut req: tonic::Request<()>,
        ) -> Result<tonic::Request<()>, tonic::Status> {
            if let Some(t) = &self.0 {
                req.metadata_mut().insert(
                    "authorization",
                    format!("Bearer {t}").parse().expect("ascii token"),
                );
            }
            Ok(req)
        }
    }

    pub type Sdk = SdkApiClient<InterceptedService<Channel, Bearer>>;
    pub type Control = ControlClient<InterceptedService<Channel, Bearer>>;

    async fn channel(port: u16) -> Channel {
        tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
            .expect("endpoint")
            .connect()
            .await
            .expect("connect to the proxy")
    }

    pub async fn sdk(port: u16, token: Option<String>) -> Sdk {
        SdkApiClient::with_interceptor(channel(port).await, Bearer(token))
    }

    pub async fn control(port: u16, token: Option<String>) -> Control {
        ControlClient::with_interceptor(channel(port).await, Bearer(token))
    }

    /// Opens a client session; keep the stream alive as long as the client's connections.
    pub async fn attach(sdk: &mut Sdk, client_id: &str) -> tonic::Streaming<ProxyEvent> {
        let mut s = sdk
            .attach(AttachRequest {
                api_version: 1,
                client_id: client_id.into(),
            })
            .await
            .expect("attach")
            .into_inner();
        s.message().await.expect("hello");
        s
    }
}

/// Control API helpers (gRPC on the proxy's `-g` port).
pub mod control {
    use std::time::Duration;

    use mcm_proto::v1::{ConnectionInfo, MetricsRequest};

    /// Waits (bounded) until the proxy's metrics stream lists `n` connections.
    pub fn wait_for_connections(proxy: &super::Proxy, n: usize) -> Vec<ConnectionInfo> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let mut client = super::grpc::control(proxy.grpc_port, proxy.token()).await;
            let mut stream = client
                .stream_metrics(MetricsRequest {
                    api_version: 1,
                    interval_ms: 100,
                })
                .await
                .expect("metrics")
                .into_inner();
            let wait = async {
                while let Some(sample) = stream.message().await.expect("metrics stream") {
                    if sample.connections.len() == n {
                        return sample.connections;
                    }
                }
                panic!("metrics stream ended");
            };
            tokio::time::timeout(Duration::from_secs(30), wait)
                .await
                .expect("connections re-registered in time")
        })
    }

    /// Opens a metrics stream and never reads it (a stuck monitoring client). The stream
    /// and its runtime live as long as the returned value.
    pub fn hold_metrics_stream(proxy: &super::Proxy) -> impl Drop {
        struct Held(
            Option<tokio::runtime::Runtime>,
            Option<tonic::Streaming<mcm_proto::v1::MetricsSample>>,
        );
        impl Drop for Held {
            fn drop(&mut self) {
                self.1.take();
                if let Some(rt) = self.0.take() {
                    rt.shutdown_background();
                }
            }
        }
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let stream = rt.block_on(async {
            let mut client = super::grpc::control(proxy.grpc_port, proxy.token()).await;
            client
                .stream_metrics(MetricsRequest {
                    api_version: 1,
                    interval_ms: 100,
                })
                .await
                .expect("metrics")
                .into_inner()
        });
        Held(Some(rt), Some(stream))
    }
}

/// The directory holding the built GStreamer plugin (`libgstmcm.so`), for `GST_PLUGIN_PATH`;
/// built once per test process.
pub fn gst_plugin_dir() -> std::path::PathBuf {
    static BUILT: std::sync::Once = std::sync::Once::new();
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe
        .parent()
        .and_then(|d| d.parent())
        .expect("target dir")
        .to_owned();
    BUILT.call_once(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.args(["build", "--quiet", "-p", "gst-mcm", "--lib"]);
        if dir.file_name().is_some_and(|d| d == "release") {
            cmd.arg("--release");
        }
        assert!(
            cmd.status().expect("cargo build").success(),
            "building gst-mcm"
        );
    });
    dir
}

/// Waits (bounded, 30 s) until `n` reliable readers have registered their cursors on
/// multipoint group `urn`'s flow in `domain`: a sender started then waits for them from its
/// first grain. For receivers that print nothing once connected (FFmpeg's `-f mcm`).
pub fn wait_for_group_readers(domain: &Path, urn: &str, n: usize) {
    let d = mcm_core::flow::Domain::open(domain).expect("domain");
    let id = mcm_core::sdk::group_flow_id(urn);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while d.readers(id).len() < n {
        assert!(
            std::time::Instant::now() < deadline,
            "fewer than {n} reliable readers on group {urn} after 30 s"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// `gst-launch-1.0 -q <pipeline>` with the mcm plugin on the plugin path.
pub fn gst_launch(name: &str, pipeline: &str) -> Proc {
    launch(name, pipeline, true)
}

/// A receiving `gst-launch-1.0`, returned once its elements have started (the pipeline is
/// prerolling): a reliable `mcmsrc` has registered its cursor, so a sender started now waits
/// for it from the first grain.
pub fn gst_launch_started(name: &str, pipeline: &str) -> Proc {
    let mut p = launch(name, pipeline, false);
    p.wait_for(|l| l.starts_with("Pipeline is PREROLLING") || l.starts_with("Pipeline is live"));
    p
}

fn launch(name: &str, pipeline: &str, quiet: bool) -> Proc {
    launch_with(name, pipeline, quiet, None)
}

/// [`gst_launch`] or (`started`) [`gst_launch_started`] with the media proxy's socket in
/// `MCM_PROXY_SOCKET`.
pub fn gst_launch_via(name: &str, pipeline: &str, socket: &Path, started: bool) -> Proc {
    let mut p = launch_with(name, pipeline, !started, Some(socket));
    if started {
        p.wait_for(|l| {
            l.starts_with("Pipeline is PREROLLING") || l.starts_with("Pipeline is live")
        });
    }
    p
}

fn launch_with(name: &str, pipeline: &str, quiet: bool, socket: Option<&Path>) -> Proc {
    let mut cmd = Command::new("gst-launch-1.0");
    if quiet {
        cmd.arg("-q");
    }
    cmd.args(pipeline.split_whitespace())
        .env("GST_PLUGIN_PATH", gst_plugin_dir())
        .env("GST_REGISTRY_FORK", "no");
    if let Some(s) = socket {
        cmd.env("MCM_PROXY_SOCKET", s);
    }
    Proc::spawn(name, &mut cmd)
}

/// Waits for `p` to exit, asserts it succeeded (naming it and showing its output if not),
/// and returns its output lines.
pub fn finish_ok(p: Proc) -> Vec<String> {
    let name = p.name.clone();
    let (status, log) = p.finish();
    assert!(status.success(), "{name}: {status:?} {log:?}");
    log
}

/// The sha1 column of `checksumsink hash=sha1` output lines (`<pts> <sha1>`).
pub fn checksums(log: &[String]) -> Vec<String> {
    log.iter()
        .filter_map(|l| l.split_whitespace().nth(1))
        .filter(|h| h.len() == 40)
        .map(str::to_owned)
        .collect()
}

/// libmcm_dp (MCM's C API) installed for C builds by `ffmpeg-mcm/install.sh`, once per test
/// process, into `target/<profile>/libmcm_dp-prefix`; returns the prefix (include, lib,
/// lib/pkgconfig).
pub fn libmcm_dp_prefix() -> std::path::PathBuf {
    use std::sync::OnceLock;
    static PREFIX: OnceLock<std::path::PathBuf> = OnceLock::new();
    PREFIX
        .get_or_init(|| {
            let exe = std::env::current_exe().expect("test executable path");
            let dir = exe.parent().and_then(|d| d.parent()).expect("target dir");
            let prefix = dir.join("libmcm_dp-prefix");
            let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
            let mut cmd = Command::new("bash");
            cmd.arg(root.join("ffmpeg-mcm/install.sh")).arg(&prefix);
            if dir.file_name().is_none_or(|d| d != "release") {
                cmd.arg("--debug");
            }
            let out = cmd.output().expect("ffmpeg-mcm/install.sh");
            assert!(
                out.status.success(),
                "install.sh: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            prefix
        })
        .clone()
}

/// `pkg-config --cflags --libs libmcm_dp` against [`libmcm_dp_prefix`].
pub fn libmcm_dp_flags() -> Vec<String> {
    let prefix = libmcm_dp_prefix();
    let out = Command::new("pkg-config")
        .args(["--cflags", "--libs", "libmcm_dp"])
        .env("PKG_CONFIG_PATH", prefix.join("lib/pkgconfig"))
        .output()
        .expect("pkg-config");
    assert!(out.status.success(), "pkg-config finds libmcm_dp");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

/// Two network namespaces joined by a veth pair, `10.<a>.<b>.1/24` and `.2/24`: two hosts
/// for tests that cross a network. Removed (with the veth pair) when dropped, also when
/// the test fails.
pub struct NetnsPair {
    pub a: String,
    pub b: String,
    pub addr_a: std::net::Ipv4Addr,
    pub addr_b: std::net::Ipv4Addr,
}

impl NetnsPair {
    pub fn new() -> Self {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let id = std::process::id() % 10_000 * 10 + N.fetch_add(1, Ordering::Relaxed) % 10;
        let pair = Self {
            a: format!("mcm-a{id}"),
            b: format!("mcm-b{id}"),
            addr_a: std::net::Ipv4Addr::new(10, 200 + (id / 250 % 50) as u8, (id % 250) as u8, 1),
            addr_b: std::net::Ipv4Addr::new(10, 200 + (id / 250 % 50) as u8, (id % 250) as u8, 2),
        };
        let (va, vb) = (format!("mva{id}"), format!("mvb{id}"));
        let ip = |args: &[&str]| {
            let out = Command::new("ip").args(args).output().expect("iproute2");
            assert!(
                out.status.success(),
                "ip {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            );
        };
        ip(&["netns", "add", &pair.a]);
        ip(&["netns", "add", &pair.b]);
        ip(&[
            "link", "add", &va, "netns", &pair.a, "type", "veth", "peer", "name", &vb, "netns",
            &pair.b,
        ]);
        for (ns, dev, addr) in [(&pair.a, &va, pair.addr_a), (&pair.b, &vb, pair.addr_b)] {
            ip(&["-n", ns, "addr", "add", &format!("{addr}/24"), "dev", dev]);
            ip(&["-n", ns, "link", "set", dev, "up"]);
            ip(&["-n", ns, "link", "set", "lo", "up"]);
        }
        pair
    }
}

impl Drop for NetnsPair {
    fn drop(&mut self) {
        for ns in [&self.a, &self.b] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

impl Default for NetnsPair {
    fn default() -> Self {
        Self::new()
    }
}
