//! SDK costs against raw flows, in one run: connection set-up (create to first grain) and the
//! added cost per grain of the SDK buffer API over a raw `GrainWriter`.
//!
//! Run: `cargo bench -p mcm-proxy --bench sdk` (`MCM_BENCH_QUICK=1` for a short run).

use std::time::{Duration, Instant};

use mcm_core::flow::{Domain, WriterOptions};
use mcm_core::sdk::Client;
use mcm_proxy::server::{run, ProxyConfig};

fn pct(mut v: Vec<Duration>, q: f64) -> f64 {
    v.sort_unstable();
    v[((v.len() - 1) as f64 * q) as usize].as_secs_f64() * 1e3
}

fn conn_json(urn: &str) -> String {
    format!(
        r#"{{"connection":{{"multipointGroup":{{"urn":"{urn}"}}}},"payload":{{"video":{{"width":1920,"height":1080,"fps":25,"pixelFormat":"v210"}}}},"bufferQueueCapacity":8}}"#
    )
}

fn main() {
    if std::env::args().any(|a| a == "--test" || a == "--list") {
        return;
    }
    let quick = std::env::var_os("MCM_BENCH_QUICK").is_some();
    let dir = tempfile::tempdir().expect("tempdir");
    let shm = tempfile::Builder::new()
        .prefix("mcm-sdk-bench-")
        .tempdir_in("/dev/shm")
        .expect("tmpfs");
    let socket = dir.path().join("proxy.sock");
    let config = ProxyConfig {
        bind: "127.0.0.1".parse().expect("ip"),
        sdk_port: 0,
        grpc_port: 0,
        unix: Some(socket.clone()),
        domain: shm.path().to_owned(),
        token: None,
        allowed_uids: vec![],
        dev: None,
        dataplane_ip: None,
    };
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(run(config, async {
            let _ = stop_rx.await;
        }))
    });
    while !socket.exists() {
        std::thread::yield_now();
    }
    // Read by the SDK in Client::new; set while this thread is the only one using the env.
    std::env::set_var("MCM_PROXY_SOCKET", &socket);

    let rounds = if quick { 20 } else { 100 };
    let mut setup = Vec::new();
    for i in 0..rounds {
        let t = Instant::now();
        let client = Client::new("{}").expect("client");
        let mut conn = client
            .create_tx_connection(&conn_json(&format!("setup-{i}")))
            .expect("connection");
        conn.get_buffer(None).expect("buffer").put().expect("put");
        setup.push(t.elapsed());
    }
    println!(
        "connection set-up, Client::new + create_tx_connection + first grain (1080p v210, {rounds} runs): p50 {:.2} ms, p99 {:.2} ms",
        pct(setup.clone(), 0.5),
        pct(setup, 0.99)
    );

    let n = if quick { 20_000u64 } else { 200_000 };
    let client = Client::new("{}").expect("client");
    let mut conn = client
        .create_tx_connection(&conn_json("per-grain"))
        .expect("connection");
    let t = Instant::now();
    for _ in 0..n {
        conn.get_buffer(None).expect("buffer").put().expect("put");
    }
    let sdk_ns = t.elapsed().as_nanos() as f64 / n as f64;

    let domain = Domain::open(shm.path()).expect("domain");
    let def = mcm_core::sdk::ConnectionConfig::parse(&conn_json("raw"))
        .expect("config")
        .flow_def(uuid::Uuid::new_v4())
        .expect("def");
    let mut writer = domain
        .create_grain_writer(
            &def,
            &WriterOptions {
                grain_count: Some(8),
                ..Default::default()
            },
        )
        .expect("writer");
    let t = Instant::now();
    for i in 0..n {
        writer
            .open_grain(i)
            .and_then(|g| g.commit())
            .expect("commit");
    }
    let raw_ns = t.elapsed().as_nanos() as f64 / n as f64;
    println!(
        "per grain, get_buffer + put ({n} grains, payload untouched): SDK {sdk_ns:.0} ns, raw GrainWriter {raw_ns:.0} ns, SDK overhead {:.0} ns",
        sdk_ns - raw_ns
    );
    drop(conn);
    drop(client);
    let _ = stop_tx.send(());
    let _ = server.join();
}
