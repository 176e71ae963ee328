//! The SDK API service: connection setup for applications on this host.

use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use mcm_core::sdk::{ConnectionConfig, ConnectionType, MeshErrorCode, SdkError};
use mcm_proto::v1::sdk_api_server::SdkApi;
use mcm_proto::v1::{
    proxy_event, AttachRequest, BufferPartitions, ConnectionKind, ConnectionRef, ConnectionState,
    CreateConnectionReply, CreateConnectionRequest, Empty, FlowLocation, Partition, ProxyEvent,
    ReportRequest,
};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use crate::auth::AccessPolicy;
use crate::registry::{Connection, Registry, RegistryError};

const MAX_CLIENT_ID: usize = 128;

pub struct SdkService {
    pub registry: Arc<Mutex<Registry>>,
    pub bridges: Arc<Mutex<crate::bridges::Bridges>>,
    pub policy: AccessPolicy,
    pub domain: PathBuf,
    pub shutdown: watch::Receiver<bool>,
}

/// A gRPC status carrying MCM's error code in its message: `[1009] ...`.
fn mesh_status(code: tonic::Code, e: &SdkError) -> Status {
    Status::new(code, format!("[{}] {}", e.code as i32, e.message))
}

fn registry_status(e: RegistryError) -> Status {
    match e {
        RegistryError::Limit(m) => mesh_status(
            tonic::Code::ResourceExhausted,
            &SdkError::new(MeshErrorCode::MaxConn, m),
        ),
        RegistryError::Incompatible(m) => mesh_status(
            tonic::Code::FailedPrecondition,
            &SdkError::new(MeshErrorCode::ConnConfigIncompat, m),
        ),
        RegistryError::NotFound(m) => Status::not_found(m),
        RegistryError::NotOwner(m) => Status::permission_denied(m),
        RegistryError::NoSession(m) => Status::failed_precondition(m),
    }
}

fn check_client_id(id: &str) -> Result<(), Status> {
    if id.is_empty() || id.len() > MAX_CLIENT_ID || !id.chars().all(|c| c.is_ascii_graphic()) {
        return Err(Status::invalid_argument(format!(
            "client_id must be 1..={MAX_CLIENT_ID} printable ASCII characters"
        )));
    }
    Ok(())
}

impl SdkService {
    fn reg(&self) -> Result<std::sync::MutexGuard<'_, Registry>, Status> {
        self.registry
            .lock()
            .map_err(|_| Status::internal("registry poisoned"))
    }
}

type EventStream = Pin<Box<dyn Stream<Item = Result<ProxyEvent, Status>> + Send>>;

#[tonic::async_trait]
impl SdkApi for SdkService {
    type AttachStream = EventStream;

    async fn attach(
        &self,
        req: Request<AttachRequest>,
    ) -> Result<Response<Self::AttachStream>, Status> {
        let (peer_uid, r) = self.policy.admit(req)?;
        check_client_id(&r.client_id)?;
        let generation = self
            .reg()?
            .attach(&r.client_id, peer_uid)
            .map_err(registry_status)?;
        let (tx, rx) = mpsc::channel(4);
        let _ = tx
            .send(Ok(ProxyEvent {
                event: Some(proxy_event::Event::Hello(format!(
                    "mcm-proxy {}",
                    env!("CARGO_PKG_VERSION")
                ))),
                domain: self.domain.to_string_lossy().into_owned(),
            }))
            .await;
        let registry = self.registry.clone();
        let mut shutdown = self.shutdown.clone();
        let client = r.client_id;
        tracing::info!(client = %client, generation, "client attached");
        tokio::spawn(async move {
            tokio::select! {
                _ = tx.closed() => {
                    let closed = registry.lock().map(|mut g| g.detach(&client, generation)).unwrap_or_default();
                    tracing::info!(client = %client, closed, "client detached; its connections are closed");
                }
                _ = async { shutdown.wait_for(|s| *s).await.map(|_| ()) } => {
                    let _ = tx.send(Ok(ProxyEvent { event: Some(proxy_event::Event::Shutdown("proxy shutting down".into())), domain: String::new() })).await;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn create_connection(
        &self,
        req: Request<CreateConnectionRequest>,
    ) -> Result<Response<CreateConnectionReply>, Status> {
        let (peer_uid, r) = self.policy.admit(req)?;
        check_client_id(&r.client_id)?;
        let kind = match ConnectionKind::try_from(r.kind) {
            Ok(k @ (ConnectionKind::Transmitter | ConnectionKind::Receiver)) => k,
            _ => {
                return Err(Status::invalid_argument(format!(
                    "kind {} is not transmitter (1) or receiver (2)",
                    r.kind
                )))
            }
        };
        let config = ConnectionConfig::parse(&r.config_json).map_err(|e| {
            let code = if e.code == MeshErrorCode::NotImplemented {
                tonic::Code::Unimplemented
            } else {
                tonic::Code::InvalidArgument
            };
            mesh_status(code, &e)
        })?;
        if matches!(config.connection, ConnectionType::Rdma { .. }) {
            return Err(mesh_status(
                tonic::Code::Unimplemented,
                &SdkError::new(
                    MeshErrorCode::NotImplemented,
                    "rdma connections need the RDMA bridges, not in this proxy yet",
                ),
            ));
        }
        let flow_id = config.flow_id();
        let def = config.flow_def(flow_id).map_err(|e| {
            mesh_status(
                tonic::Code::InvalidArgument,
                &SdkError::new(MeshErrorCode::ConnConfigInval, e.to_string()),
            )
        })?;
        let geometry = def
            .grain_geometry()
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let conn_id = if r.conn_id.is_empty() {
            uuid::Uuid::new_v4().to_string()
        } else {
            uuid::Uuid::parse_str(&r.conn_id)
                .map_err(|_| Status::invalid_argument("conn_id is not a UUID"))?
                .to_string()
        };
        let reply = CreateConnectionReply {
            conn_id: conn_id.clone(),
            flow: Some(FlowLocation {
                domain: self.domain.to_string_lossy().into_owned(),
                flow_id: flow_id.to_string(),
                flow_def_json: def.to_json_string(),
                grain_count: config.buffer_queue_capacity,
                partitions: Some(BufferPartitions {
                    payload: Some(Partition {
                        offset: 0,
                        size: u64::from(geometry.grain_size),
                    }),
                    metadata: Some(Partition {
                        offset: u64::from(geometry.grain_size) + 8,
                        size: u64::from(config.max_metadata_size),
                    }),
                }),
                reliable: config.reliable,
            }),
        };
        let config_for_bridge = config.clone();
        let r_client_id = r.client_id.clone();
        let conn = Connection {
            id: conn_id.clone(),
            client_id: r.client_id,
            kind,
            state: ConnectionState::Configured,
            group: config.group(),
            flow_id: flow_id.to_string(),
            config,
            counters: Default::default(),
            peer_uid,
            closed_at: None,
        };
        let group = conn.group.clone();
        self.reg()?.add(conn).map_err(registry_status)?;
        let attached = self
            .bridges
            .lock()
            .map_err(|_| Status::internal("bridges lock poisoned"))?
            .attach(
                &conn_id,
                kind == ConnectionKind::Transmitter,
                &config_for_bridge,
                &def,
            );
        if let Err(why) = attached {
            let _ = self.reg()?.close(&conn_id, &r_client_id, peer_uid);
            return Err(mesh_status(
                tonic::Code::Unimplemented,
                &SdkError::new(MeshErrorCode::NotImplemented, why),
            ));
        }
        tracing::info!(conn = %conn_id, ?kind, group = %group, "connection created");
        Ok(Response::new(reply))
    }

    async fn activate_connection(
        &self,
        req: Request<ConnectionRef>,
    ) -> Result<Response<Empty>, Status> {
        let (peer_uid, r) = self.policy.admit(req)?;
        let mut reg = self.reg()?;
        reg.owned_mut(&r.conn_id, &r.client_id, peer_uid)
            .map_err(registry_status)?
            .state = ConnectionState::Active;
        Ok(Response::new(Empty {}))
    }

    async fn delete_connection(
        &self,
        req: Request<ConnectionRef>,
    ) -> Result<Response<Empty>, Status> {
        let (peer_uid, r) = self.policy.admit(req)?;
        let open = {
            let mut reg = self.reg()?;
            reg.close(&r.conn_id, &r.client_id, peer_uid)
                .map_err(registry_status)?;
            reg.open_ids()
        };
        if let Ok(mut b) = self.bridges.lock() {
            b.retain_open(&open);
        }
        tracing::info!(conn = %r.conn_id, "connection closed");
        Ok(Response::new(Empty {}))
    }

    async fn report(&self, req: Request<ReportRequest>) -> Result<Response<Empty>, Status> {
        let (peer_uid, r) = self.policy.admit(req)?;
        let mut reg = self.reg()?;
        let conn = reg
            .owned_mut(&r.conn_id, &r.client_id, peer_uid)
            .map_err(registry_status)?;
        if let Some(c) = r.counters {
            conn.counters = c;
        }
        Ok(Response::new(Empty {}))
    }
}
