//! Proxy start-up, listeners and graceful shutdown.

use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::{bail, Context, Result};
use mcm_core::flow::Domain;
use mcm_proto::v1::control_server::ControlServer;
use mcm_proto::v1::sdk_api_server::SdkApiServer;
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::watch;
use tokio_stream::wrappers::{TcpListenerStream, UnixListenerStream};
use tonic::transport::Server;

use crate::auth::AccessPolicy;
use crate::control_service::ControlService;
use crate::registry::{Limits, Registry};
use crate::sdk_service::SdkService;

/// Largest request the proxy decodes.
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;

/// Validated proxy settings.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    pub bind: IpAddr,
    pub sdk_port: u16,
    pub grpc_port: u16,
    /// `None` disables the unix socket.
    pub unix: Option<PathBuf>,
    pub domain: PathBuf,
    pub token: Option<String>,
    pub allowed_uids: Vec<u32>,
    pub dev: Option<String>,
    pub dataplane_ip: Option<IpAddr>,
}

/// Checks `-d/--dev`: a PCI address (`0000:31:00.0`), `native_af_xdp:IFACE` or `kernel:IFACE`.
pub fn validate_dev(dev: &str) -> Result<()> {
    let iface_ok = |i: &str| {
        !i.is_empty()
            && i.len() <= 15
            && i.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.@".contains(c))
    };
    if let Some(i) = dev
        .strip_prefix("native_af_xdp:")
        .or_else(|| dev.strip_prefix("kernel:"))
    {
        if iface_ok(i) {
            return Ok(());
        }
        bail!("--dev `{dev}`: interface name must be 1..=15 characters of [A-Za-z0-9-_.@]");
    }
    let parts: Vec<&str> = dev.split([':', '.']).collect();
    let hex = |s: &str, n: usize| s.len() == n && s.chars().all(|c| c.is_ascii_hexdigit());
    if parts.len() == 4
        && hex(parts[0], 4)
        && hex(parts[1], 2)
        && hex(parts[2], 2)
        && parts[3].len() == 1
        && matches!(parts[3], "0" | "1" | "2" | "3" | "4" | "5" | "6" | "7")
    {
        return Ok(());
    }
    bail!("--dev `{dev}`: expected a PCI address like 0000:31:00.0, native_af_xdp:IFACE or kernel:IFACE")
}

impl ProxyConfig {
    /// Refuses settings that would expose the proxy without authentication.
    pub fn validate(&self) -> Result<()> {
        if !self.bind.is_loopback() && self.token.is_none() {
            bail!(
                "refusing to listen on {} without an auth token: pass --auth-token-file FILE or set MCM_AUTH_TOKEN \
                 (binding beyond loopback exposes the proxy to the network)",
                self.bind
            );
        }
        if let Some(dev) = &self.dev {
            validate_dev(dev)?;
        }
        Ok(())
    }
}

fn say(line: String) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// Removes a socket file left by a proxy that died, refusing to steal a live one.
fn prepare_unix_path(path: &Path) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        use std::os::unix::fs::FileTypeExt;
        if !meta.file_type().is_socket() {
            bail!(
                "{} exists and is not a socket; refusing to replace it",
                path.display()
            );
        }
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            bail!("{} is in use by a running proxy", path.display());
        }
        std::fs::remove_file(path)
            .with_context(|| format!("removing stale socket {}", path.display()))?;
    }
    Ok(())
}

/// Writes a fresh random token readable by the proxy's uid only, for local TCP clients.
fn write_token_file(path: &Path) -> Result<String> {
    use std::os::unix::fs::OpenOptionsExt;
    let token = format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    );
    let _ = std::fs::remove_file(path);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing the token file {}", path.display()))?;
    f.write_all(token.as_bytes())?;
    Ok(token)
}

/// Runs the proxy until `shutdown` resolves (or SIGINT/SIGTERM when driven by `main`).
pub async fn run(
    config: ProxyConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<()> {
    config.validate()?;
    let domain = Domain::create(&config.domain)
        .with_context(|| format!("flow domain {}", config.domain.display()))?;
    let gc = domain.collect_garbage()?;
    if !gc.removed_flows.is_empty() {
        tracing::info!("removed {} stale flows at start", gc.removed_flows.len());
    }
    // TCP is authenticated even on loopback: without a configured token the proxy makes one
    // and leaves it beside its unix socket, readable by its own uid only (the SDK finds it).
    let mut token = config.token.clone();
    let mut token_file = None;
    if token.is_none() {
        if let Some(unix) = &config.unix {
            if let Some(dir) = unix.parent() {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("creating {}", dir.display()))?;
            }
            let path = mcm_core::sdk::token_path(unix);
            token = Some(write_token_file(&path)?);
            token_file = Some(path);
        } else {
            tracing::warn!(
                "no unix socket and no token: TCP clients on this host are not authenticated"
            );
        }
    }
    let policy = AccessPolicy {
        token: token.as_deref().map(Arc::from),
        allowed_uids: config.allowed_uids.clone(),
        own_uid: rustix::process::geteuid().as_raw(),
    };
    let registry = Arc::new(Mutex::new(Registry::new(Limits::default())));
    let bridges = Arc::new(Mutex::new(crate::bridges::Bridges::new(
        config.domain.clone(),
    )));
    let (stop_tx, stop_rx) = watch::channel(false);
    // Bridges whose connections all closed (clients gone, deleted) stop within a second.
    {
        let (registry, bridges, mut stop) = (registry.clone(), bridges.clone(), stop_rx.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = stop.wait_for(|s| *s) => break,
                }
                let open = registry.lock().map(|r| r.open_ids()).unwrap_or_default();
                if let Ok(mut b) = bridges.lock() {
                    b.retain_open(&open);
                }
            }
        });
    }
    let sdk = || {
        SdkApiServer::new(SdkService {
            registry: registry.clone(),
            bridges: bridges.clone(),
            policy: policy.clone(),
            domain: config.domain.clone(),
            shutdown: stop_rx.clone(),
        })
        .max_decoding_message_size(MAX_REQUEST_BYTES)
    };
    let control = ControlServer::new(ControlService {
        registry: registry.clone(),
        bridges: bridges.clone(),
        policy: policy.clone(),
        shutdown: stop_rx.clone(),
        streams: Default::default(),
    })
    .max_decoding_message_size(MAX_REQUEST_BYTES);

    let tcp = TcpListener::bind(SocketAddr::new(config.bind, config.sdk_port))
        .await
        .with_context(|| format!("SDK API on {}:{}", config.bind, config.sdk_port))?;
    let grpc = TcpListener::bind(SocketAddr::new(config.bind, config.grpc_port))
        .await
        .with_context(|| format!("control API on {}:{}", config.bind, config.grpc_port))?;
    say(format!(
        "INFO: TCP Server listening on {}",
        tcp.local_addr()?
    ));
    say(format!(
        "INFO: gRPC Server listening on {}",
        grpc.local_addr()?
    ));
    let unix = match &config.unix {
        Some(path) => {
            prepare_unix_path(path)?;
            let l = UnixListener::bind(path)
                .with_context(|| format!("unix socket {}", path.display()))?;
            // Anyone may connect; SO_PEERCRED decides who is served, with a clear error.
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666))?;
            say(format!("INFO: Unix Server listening on {}", path.display()));
            Some(l)
        }
        None => None,
    };
    say(format!("INFO: flow domain {}", config.domain.display()));
    if let Some(path) = &token_file {
        say(format!(
            "INFO: TCP clients authenticate with the token in {}",
            path.display()
        ));
    }
    if let Some(dev) = &config.dev {
        say(format!(
            "INFO: ST 2110 device {dev}{}",
            config
                .dataplane_ip
                .map(|i| format!(", data-plane address {i}"))
                .unwrap_or_default()
        ));
    }

    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    // Keepalives find clients that vanished without closing their connection.
    let builder = || {
        Server::builder()
            .concurrency_limit_per_connection(64)
            .http2_keepalive_interval(Some(std::time::Duration::from_secs(10)))
            .http2_keepalive_timeout(Some(std::time::Duration::from_secs(20)))
            .tcp_keepalive(Some(std::time::Duration::from_secs(30)))
    };
    let tcp_server = builder()
        .add_service(sdk())
        .serve_with_incoming_shutdown(TcpListenerStream::new(tcp), stopped(stop_rx.clone()));
    let grpc_server = builder()
        .add_service(control)
        .serve_with_incoming_shutdown(TcpListenerStream::new(grpc), stopped(stop_rx.clone()));
    let unix_server = async {
        match unix {
            Some(l) => builder()
                .add_service(sdk())
                .serve_with_incoming_shutdown(UnixListenerStream::new(l), stopped(stop_rx.clone()))
                .await
                .map_err(anyhow::Error::from),
            None => Ok(()),
        }
    };
    let (a, b, c) = tokio::join!(tcp_server, grpc_server, unix_server);
    for path in config.unix.iter().chain(token_file.iter()) {
        let _ = std::fs::remove_file(path);
    }
    let closed = registry.lock().map(|mut r| r.close_all()).unwrap_or(0);
    if let Ok(mut b) = bridges.lock() {
        b.stop_all();
    }
    let gc = domain.collect_garbage()?;
    say(format!(
        "INFO: mcm-proxy stopped; {closed} connections closed, {} stale flows removed",
        gc.removed_flows.len()
    ));
    a?;
    b?;
    c?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dev_forms() {
        for ok in ["0000:31:00.0", "native_af_xdp:eth0", "kernel:ens801f0"] {
            validate_dev(ok).unwrap();
        }
        for bad in [
            "",
            "0000:31:00",
            "kernel:",
            "native_af_xdp:waytoolonginterfacename",
            "31:00.0",
            "0000:zz:00.0",
        ] {
            assert!(validate_dev(bad).is_err(), "{bad}");
        }
    }
}
