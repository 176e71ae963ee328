//! The SDK client: a session with the host's media proxy, and connection set-up.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use mcm_proto::v1::sdk_api_client::SdkApiClient;
use mcm_proto::v1::{
    AttachRequest, ConnectionCounters, ConnectionKind, ConnectionRef, CreateConnectionRequest,
    FlowLocation, ProxyEvent, ReportRequest,
};
use mcm_proto::API_VERSION;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint, Uri};

use super::config::{ClientConfig, ConnectionConfig, ProxyEndpoint};
use super::connection::Connection;
use super::error::{MeshErrorCode, SdkError, SdkResult};

/// Deadline of each call to the proxy.
const RPC_TIMEOUT: Duration = Duration::from_secs(5);
/// How often a client retries a lost proxy, and reports counters.
const RETRY_PERIOD: Duration = Duration::from_millis(500);
const REPORT_PERIOD: Duration = Duration::from_secs(1);

#[derive(Clone)]
pub(crate) struct Auth(Option<MetadataValue<Ascii>>);

impl tonic::service::Interceptor for Auth {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(v) = &self.0 {
            req.metadata_mut().insert("authorization", v.clone());
        }
        Ok(req)
    }
}

pub(crate) type Api = SdkApiClient<InterceptedService<Channel, Auth>>;

/// Per-connection counters, reported to the proxy every second.
#[derive(Debug, Default)]
pub struct Counters {
    pub grains: AtomicU64,
    pub bytes: AtomicU64,
    pub drops: AtomicU64,
    pub errors: AtomicU64,
}

impl Counters {
    fn snapshot(&self) -> ConnectionCounters {
        ConnectionCounters {
            grains: self.grains.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
            drops: self.drops.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
        }
    }
}

/// What the client remembers of a connection to re-register it with a restarted proxy.
#[derive(Clone)]
pub(crate) struct Registration {
    pub conn_id: String,
    pub kind: ConnectionKind,
    pub config_json: String,
    pub counters: Arc<Counters>,
}

pub(crate) struct ClientInner {
    pub config: ClientConfig,
    /// Always `Some` until drop; taken there to shut down without blocking (the last
    /// reference may be dropped on one of the runtime's own threads).
    runtime: Option<tokio::runtime::Runtime>,
    pub id: String,
    api: Mutex<Api>,
    pub registrations: Mutex<Vec<Registration>>,
    /// The proxy's flow domain, from its hello.
    pub domain: String,
    /// Serialises connection creation so `maxMediaConnections` holds under concurrency.
    creating: Mutex<()>,
    pub proxy_up: AtomicBool,
}

impl Drop for ClientInner {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

/// Runs a future on the SDK's runtime and waits for it from any thread, including one that
/// is itself inside a tokio runtime (where `block_on` would panic).
fn run<T: Send + 'static>(
    rt: &tokio::runtime::Runtime,
    fut: impl Future<Output = SdkResult<T>> + Send + 'static,
) -> SdkResult<T> {
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    rt.spawn(async move {
        let r = match tokio::time::timeout(RPC_TIMEOUT, fut).await {
            Ok(r) => r,
            Err(_) => Err(SdkError::new(
                MeshErrorCode::Timeout,
                "the media proxy did not answer within 5 s",
            )),
        };
        let _ = tx.send(r);
    });
    rx.recv().unwrap_or_else(|_| {
        Err(SdkError::new(
            MeshErrorCode::ConnFailed,
            "the SDK runtime stopped",
        ))
    })
}

impl ClientInner {
    fn rt(&self) -> &tokio::runtime::Runtime {
        self.runtime
            .as_ref()
            .expect("the runtime lives until the client is dropped")
    }

    fn api(&self) -> Api {
        self.api
            .lock()
            .map(|a| a.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }

    /// One proxy call, with the deadline, from any thread.
    pub(crate) fn call<T, F>(&self, f: impl FnOnce(Api) -> F + Send + 'static) -> SdkResult<T>
    where
        T: Send + 'static,
        F: Future<Output = Result<tonic::Response<T>, tonic::Status>> + Send + 'static,
    {
        let api = self.api();
        run(self.rt(), async move {
            f(api)
                .await
                .map(tonic::Response::into_inner)
                .map_err(|s| status_to_error(&s))
        })
    }

    pub(crate) fn conn_ref(&self, conn_id: &str) -> ConnectionRef {
        ConnectionRef {
            api_version: API_VERSION,
            conn_id: conn_id.to_owned(),
            client_id: self.id.clone(),
        }
    }

    /// Sends the final counters, then closes the connection at the proxy.
    pub(crate) fn unregister(&self, conn_id: &str) {
        let reg = self.registrations.lock().ok().and_then(|mut regs| {
            let pos = regs.iter().position(|r| r.conn_id == conn_id)?;
            Some(regs.remove(pos))
        });
        if !self.proxy_up.load(Ordering::Acquire) {
            return;
        }
        if let Some(reg) = reg {
            let report = ReportRequest {
                api_version: API_VERSION,
                conn_id: conn_id.to_owned(),
                counters: Some(reg.counters.snapshot()),
                client_id: self.id.clone(),
            };
            let _ = self.call(|mut api| async move { api.report(report).await });
        }
        let req = self.conn_ref(conn_id);
        let _ = self.call(|mut api| async move { api.delete_connection(req).await });
    }
}

/// Maps a proxy status to MCM's error: the proxy puts the code first, as `[1009] ...`.
fn status_to_error(status: &tonic::Status) -> SdkError {
    let msg = status.message();
    if let Some((code, text)) = msg.strip_prefix('[').and_then(|m| m.split_once(']')) {
        if let Some(code) = code.parse::<i32>().ok().and_then(MeshErrorCode::from_code) {
            return SdkError::new(code, format!("proxy:{text}"));
        }
    }
    let code = match status.code() {
        tonic::Code::DeadlineExceeded => MeshErrorCode::Timeout,
        tonic::Code::Unimplemented => MeshErrorCode::NotImplemented,
        tonic::Code::InvalidArgument => MeshErrorCode::ConnConfigInval,
        tonic::Code::ResourceExhausted => MeshErrorCode::MaxConn,
        _ => MeshErrorCode::ConnFailed,
    };
    SdkError::new(code, format!("proxy: {} ({:?})", msg, status.code()))
}

async fn connect(config: &ClientConfig) -> Result<Api, String> {
    let channel = match &config.endpoint {
        ProxyEndpoint::Tcp { host, port } => {
            let host = if host.contains(':') {
                format!("[{host}]")
            } else {
                host.clone()
            };
            Endpoint::from_shared(format!("http://{host}:{port}"))
                .map_err(|e| e.to_string())?
                .connect_timeout(Duration::from_secs(3))
                .connect()
                .await
                .map_err(|e| format!("{host}:{port}: {e}"))?
        }
        ProxyEndpoint::Unix(path) => {
            let path = path.clone();
            let shown = path.display().to_string();
            Endpoint::from_static("http://localhost")
                .connect_with_connector(tower::service_fn(move |_: Uri| {
                    let path = path.clone();
                    async move {
                        Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                            tokio::net::UnixStream::connect(path).await?,
                        ))
                    }
                }))
                .await
                .map_err(|e| format!("{shown}: {e}"))?
        }
    };
    let token =
        match &config.auth_token {
            Some(t) => Some(format!("Bearer {t}").parse().map_err(|_| {
                "the auth token holds characters not allowed in a header".to_owned()
            })?),
            None => None,
        };
    Ok(SdkApiClient::with_interceptor(channel, Auth(token)))
}

/// Connects and opens the session stream (whose end tells the client the proxy went away),
/// within the call deadline.
async fn connect_and_attach(
    config: &ClientConfig,
    client_id: &str,
) -> Result<(Api, tonic::Streaming<ProxyEvent>, String), String> {
    let attempt = async {
        let mut api = connect(config).await?;
        let mut stream = api
            .attach(AttachRequest {
                api_version: API_VERSION,
                client_id: client_id.to_owned(),
            })
            .await
            .map_err(|s| status_to_error(&s).to_string())?
            .into_inner();
        // The first event is the proxy's hello: it proves the session is registered.
        let hello = stream
            .message()
            .await
            .map_err(|s| status_to_error(&s).to_string())?
            .ok_or("the proxy closed the session")?;
        Ok((api, stream, hello.domain))
    };
    tokio::time::timeout(RPC_TIMEOUT, attempt)
        .await
        .map_err(|_| "no answer within 5 s".to_owned())?
}

/// A session with the media proxy of this host (MCM's `MeshClient`).
pub struct Client {
    pub(crate) inner: Arc<ClientInner>,
}

impl Client {
    /// Creates a client from MCM client JSON (see [`ClientConfig::parse`]) and connects to
    /// the proxy. Usable from any thread, inside a tokio runtime or not.
    pub fn new(json: &str) -> SdkResult<Self> {
        let config = ClientConfig::parse(json)?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("mcm-sdk")
            .enable_all()
            .build()
            .map_err(|e| {
                SdkError::new(
                    MeshErrorCode::ConnFailed,
                    format!("starting the SDK runtime: {e}"),
                )
            })?;
        let id = uuid::Uuid::new_v4().to_string();
        let (cfg, cid) = (config.clone(), id.clone());
        let (api, stream, domain) = run(&runtime, async move {
            connect_and_attach(&cfg, &cid).await.map_err(|e| {
                SdkError::new(
                    MeshErrorCode::ConnFailed,
                    format!("cannot reach the media proxy at {:?}: {e}", cfg.endpoint),
                )
            })
        })?;
        let inner = Arc::new(ClientInner {
            config,
            runtime: Some(runtime),
            id,
            api: Mutex::new(api),
            registrations: Mutex::new(Vec::new()),
            domain,
            creating: Mutex::new(()),
            proxy_up: AtomicBool::new(true),
        });
        inner.rt().spawn(session(Arc::downgrade(&inner), stream));
        inner.rt().spawn(reporter(Arc::downgrade(&inner)));
        Ok(Self { inner })
    }

    /// The parsed client configuration.
    pub fn config(&self) -> &ClientConfig {
        &self.inner.config
    }

    /// The flow domain of this host's proxy: where every multipoint group's flow lives.
    pub fn domain(&self) -> &str {
        &self.inner.domain
    }

    /// False while the proxy is unreachable (connections keep moving data meanwhile).
    pub fn proxy_connected(&self) -> bool {
        self.inner.proxy_up.load(Ordering::Acquire)
    }

    /// Creates a transmitter (MCM `mesh_create_tx_connection`).
    pub fn create_tx_connection(&self, json: &str) -> SdkResult<Connection> {
        self.create(json, ConnectionKind::Transmitter)
    }

    /// Creates a receiver (MCM `mesh_create_rx_connection`).
    pub fn create_rx_connection(&self, json: &str) -> SdkResult<Connection> {
        self.create(json, ConnectionKind::Receiver)
    }

    fn create(&self, json: &str, kind: ConnectionKind) -> SdkResult<Connection> {
        let config = ConnectionConfig::parse(json)?;
        let creating = self
            .inner
            .creating
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let open = self
            .inner
            .registrations
            .lock()
            .map(|r| r.len())
            .unwrap_or(0);
        if open >= self.inner.config.max_media_connections as usize {
            return Err(SdkError::new(
                MeshErrorCode::MaxConn,
                format!(
                    "this client already has maxMediaConnections = {} connections",
                    self.inner.config.max_media_connections
                ),
            ));
        }
        let req = CreateConnectionRequest {
            api_version: API_VERSION,
            client_id: self.inner.id.clone(),
            kind: kind as i32,
            config_json: json.to_owned(),
            conn_id: String::new(),
        };
        let reply = self
            .inner
            .call(|mut api| async move { api.create_connection(req).await })?;
        let flow: FlowLocation = reply
            .flow
            .ok_or_else(|| SdkError::new(MeshErrorCode::ConnFailed, "proxy reply names no flow"))?;
        let counters = Arc::new(Counters::default());
        if let Ok(mut regs) = self.inner.registrations.lock() {
            regs.push(Registration {
                conn_id: reply.conn_id.clone(),
                kind,
                config_json: json.to_owned(),
                counters: counters.clone(),
            });
        }
        let conn = match Connection::open(
            self.inner.clone(),
            reply.conn_id.clone(),
            kind,
            config,
            flow,
            counters,
        ) {
            Ok(c) => c,
            Err(e) => {
                self.inner.unregister(&reply.conn_id);
                return Err(e);
            }
        };
        // From here on, dropping the connection (also on error) unregisters it.
        let req = self.inner.conn_ref(&reply.conn_id);
        self.inner
            .call(|mut api| async move { api.activate_connection(req).await })?;
        drop(creating);
        conn.after_activation();
        Ok(conn)
    }
}

/// Watches the session; when the proxy goes away, keeps retrying and re-registers every
/// connection once it is back. Data keeps flowing through shared memory meanwhile.
async fn session(client: Weak<ClientInner>, mut stream: tonic::Streaming<ProxyEvent>) {
    loop {
        while let Ok(Some(_event)) = stream.message().await {}
        let Some(inner) = client.upgrade() else {
            return;
        };
        inner.proxy_up.store(false, Ordering::Release);
        let (config, id) = (inner.config.clone(), inner.id.clone());
        drop(inner);
        tracing::warn!(
            "lost the media proxy; connections keep working, re-registering when it returns"
        );
        stream = loop {
            tokio::time::sleep(RETRY_PERIOD).await;
            if client.strong_count() == 0 {
                return;
            }
            let Ok((mut api, s, _)) = connect_and_attach(&config, &id).await else {
                continue;
            };
            let regs: Vec<Registration> = match client.upgrade() {
                Some(inner) => inner
                    .registrations
                    .lock()
                    .map(|r| r.clone())
                    .unwrap_or_default(),
                None => return,
            };
            for r in regs {
                let req = CreateConnectionRequest {
                    api_version: API_VERSION,
                    client_id: id.clone(),
                    kind: r.kind as i32,
                    config_json: r.config_json,
                    conn_id: r.conn_id.clone(),
                };
                let activate = ConnectionRef {
                    api_version: API_VERSION,
                    conn_id: r.conn_id.clone(),
                    client_id: id.clone(),
                };
                let result = tokio::time::timeout(RPC_TIMEOUT, async {
                    api.create_connection(req).await?;
                    api.activate_connection(activate).await
                })
                .await;
                match result {
                    Ok(Ok(_)) => {}
                    Ok(Err(status)) => {
                        tracing::warn!(conn = %r.conn_id, "re-registering: {}", status_to_error(&status))
                    }
                    Err(_) => {
                        tracing::warn!(conn = %r.conn_id, "re-registering: no answer within 5 s")
                    }
                }
            }
            let Some(inner) = client.upgrade() else {
                return;
            };
            if let Ok(mut a) = inner.api.lock() {
                *a = api;
            }
            inner.proxy_up.store(true, Ordering::Release);
            tracing::info!("media proxy is back; connections re-registered");
            break s;
        };
    }
}

/// Reports every connection's counters to the proxy once a second.
async fn reporter(client: Weak<ClientInner>) {
    loop {
        tokio::time::sleep(REPORT_PERIOD).await;
        let (reports, mut api) = {
            let Some(inner) = client.upgrade() else {
                return;
            };
            if !inner.proxy_up.load(Ordering::Acquire) {
                continue;
            }
            let reports: Vec<ReportRequest> = inner
                .registrations
                .lock()
                .map(|r| {
                    r.iter()
                        .map(|r| ReportRequest {
                            api_version: API_VERSION,
                            conn_id: r.conn_id.clone(),
                            counters: Some(r.counters.snapshot()),
                            client_id: inner.id.clone(),
                        })
                        .collect()
                })
                .unwrap_or_default();
            (reports, inner.api())
        };
        for r in reports {
            let _ = tokio::time::timeout(RPC_TIMEOUT, api.report(r)).await;
        }
    }
}
