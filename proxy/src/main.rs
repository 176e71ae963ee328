//! `mcm-proxy`: the media proxy of one host.

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use mcm_proxy::server::{run, ProxyConfig};

#[derive(Parser)]
#[command(
    name = "mcm-proxy",
    version,
    about = "mcm media proxy: SDK API, control API, flow rendezvous and network bridges"
)]
struct Args {
    /// ST 2110 network device: PCI address (0000:31:00.0), native_af_xdp:IFACE or kernel:IFACE.
    #[arg(short = 'd', long = "dev")]
    dev: Option<String>,
    /// IP address of the ST 2110 data-plane interface.
    #[arg(short = 'i', long = "ip")]
    ip: Option<IpAddr>,
    /// Control API (gRPC) port.
    #[arg(short = 'g', long = "grpc", default_value_t = 8001)]
    grpc: u16,
    /// SDK API TCP port.
    #[arg(short = 't', long = "tcp", default_value_t = 8002)]
    tcp: u16,
    /// Address the TCP servers bind to; beyond loopback an auth token is required.
    #[arg(long, default_value = "127.0.0.1")]
    bind: IpAddr,
    /// SDK API unix socket; `none` disables it.
    #[arg(long, env = "MCM_PROXY_SOCKET", default_value = mcm_core::sdk::DEFAULT_UNIX_SOCKET)]
    unix: String,
    /// Flow domain directory (tmpfs).
    #[arg(long, env = "MCM_DOMAIN", default_value = mcm_core::Domain::DEFAULT_PATH)]
    domain: PathBuf,
    /// File holding the shared token TCP clients must present (or set MCM_AUTH_TOKEN).
    #[arg(long)]
    auth_token_file: Option<PathBuf>,
    /// Unix-socket client uid allowed besides root and the proxy's own uid (repeatable).
    #[arg(long = "allow-uid")]
    allow_uid: Vec<u32>,
    /// Log filter (error, warn, info, debug, trace).
    #[arg(long, env = "MCM_LOG", default_value = "info")]
    log: String,
}

fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(&args.log))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match start(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mcm-proxy: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn start(args: Args) -> anyhow::Result<()> {
    let token = match &args.auth_token_file {
        Some(f) => {
            let t =
                std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?;
            let t = t.trim().to_owned();
            anyhow::ensure!(
                t.len() >= 16,
                "the auth token in {} must be at least 16 characters",
                f.display()
            );
            Some(t)
        }
        None => match std::env::var("MCM_AUTH_TOKEN")
            .ok()
            .filter(|t| !t.is_empty())
        {
            Some(t) => {
                anyhow::ensure!(
                    t.len() >= 16,
                    "MCM_AUTH_TOKEN must be at least 16 characters"
                );
                Some(t)
            }
            None => None,
        },
    };
    let config = ProxyConfig {
        bind: args.bind,
        sdk_port: args.tcp,
        grpc_port: args.grpc,
        unix: (args.unix != "none").then(|| PathBuf::from(&args.unix)),
        domain: args.domain,
        token,
        allowed_uids: args.allow_uid,
        dev: args.dev,
        dataplane_ip: args.ip,
    };
    config.validate()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let shutdown = async {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    .expect("SIGTERM handler");
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            tracing::info!("shutting down");
        };
        run(config, shutdown).await
    })
}
