//! The control API service (port 8001): connections, groups, bridges, health, metrics.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mcm_core::sdk::ConnectionConfig;
use mcm_proto::v1::control_server::Control;
use mcm_proto::v1::{
    ApplyBridgesReply, ApplyBridgesRequest, BridgeInfo, BridgeList, ConnectionInfo, ConnectionKind,
    ConnectionList, GetRequest, GroupList, HealthReply, ListRequest, MetricsRequest, MetricsSample,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use crate::auth::AccessPolicy;
use crate::registry::{Bridge, Registry};

pub struct ControlService {
    pub registry: Arc<Mutex<Registry>>,
    pub bridges: Arc<Mutex<crate::bridges::Bridges>>,
    pub policy: AccessPolicy,
    pub shutdown: tokio::sync::watch::Receiver<bool>,
    /// Open metrics streams, bounded.
    pub streams: Arc<std::sync::atomic::AtomicUsize>,
}

/// Most metrics streams served at once.
const MAX_METRICS_STREAMS: usize = 16;

impl ControlService {
    fn reg(&self) -> Result<std::sync::MutexGuard<'_, Registry>, Status> {
        self.registry
            .lock()
            .map_err(|_| Status::internal("registry poisoned"))
    }
}

type Metrics = Pin<Box<dyn Stream<Item = Result<MetricsSample, Status>> + Send>>;

#[tonic::async_trait]
impl Control for ControlService {
    type StreamMetricsStream = Metrics;

    async fn list_connections(
        &self,
        req: Request<ListRequest>,
    ) -> Result<Response<ConnectionList>, Status> {
        self.policy.admit(req)?;
        Ok(Response::new(ConnectionList {
            connections: self.reg()?.connections(),
        }))
    }

    async fn get_connection(
        &self,
        req: Request<GetRequest>,
    ) -> Result<Response<ConnectionInfo>, Status> {
        let (_, r) = self.policy.admit(req)?;
        self.reg()?
            .get(&r.id)
            .map(|c| Response::new(c.info()))
            .ok_or_else(|| Status::not_found(format!("no connection {}", r.id)))
    }

    async fn list_groups(&self, req: Request<ListRequest>) -> Result<Response<GroupList>, Status> {
        self.policy.admit(req)?;
        Ok(Response::new(GroupList {
            groups: self.reg()?.groups(),
        }))
    }

    async fn apply_bridges(
        &self,
        req: Request<ApplyBridgesRequest>,
    ) -> Result<Response<ApplyBridgesReply>, Status> {
        let (_, r) = self.policy.admit(req)?;
        let mut bridges = Vec::new();
        let mut rejected = Vec::new();
        for b in r.bridges {
            let kind = ConnectionKind::try_from(b.kind).unwrap_or(ConnectionKind::Unspecified);
            if b.bridge_id.is_empty()
                || b.bridge_id.len() > 128
                || kind == ConnectionKind::Unspecified
            {
                rejected.push(format!(
                    "{}: needs an id (1..=128 characters) and a kind",
                    b.bridge_id
                ));
                continue;
            }
            match ConnectionConfig::parse(&b.config_json) {
                Ok(config) => bridges.push(Bridge {
                    id: b.bridge_id,
                    group: b.group,
                    kind,
                    config,
                }),
                Err(e) => rejected.push(format!("{}: {e}", b.bridge_id)),
            }
        }
        // The registry takes the set first (limits, kinds, one per id); the network side
        // of each bridge it accepted is the group's flow, sent or received.
        let wanted: Vec<_> = {
            let mut reg = self.reg()?;
            rejected.extend(reg.apply_bridges(bridges));
            reg.bridges()
                .filter_map(|b| {
                    let flow = mcm_core::sdk::group_flow_id(&b.group);
                    match b.config.flow_def(flow) {
                        Ok(def) => Some((
                            b.id.clone(),
                            b.kind == ConnectionKind::Transmitter,
                            b.config.clone(),
                            def,
                        )),
                        Err(e) => {
                            rejected.push(format!("{}: no flow description: {e}", b.id));
                            None
                        }
                    }
                })
                .collect()
        };
        rejected.extend(
            self.bridges
                .lock()
                .map_err(|_| Status::internal("bridges poisoned"))?
                .apply_control(wanted),
        );
        Ok(Response::new(ApplyBridgesReply { rejected }))
    }

    async fn list_bridges(
        &self,
        req: Request<ListRequest>,
    ) -> Result<Response<BridgeList>, Status> {
        self.policy.admit(req)?;
        let list = self
            .bridges
            .lock()
            .map_err(|_| Status::internal("bridges poisoned"))?
            .list();
        Ok(Response::new(BridgeList {
            bridges: list
                .into_iter()
                .map(|b| BridgeInfo {
                    key: b.key,
                    transport: b.transport,
                    flow_id: b.flow_id,
                    users: b.users,
                    packets: b.packets,
                    grains: b.grains,
                    incomplete: b.incomplete,
                    lost: b.lost,
                    dropped: b.dropped,
                    timing: b.timing,
                    sdp: b.sdp,
                    state: b.state,
                })
                .collect(),
        }))
    }

    async fn health(&self, req: Request<ListRequest>) -> Result<Response<HealthReply>, Status> {
        self.policy.admit(req)?;
        let reg = self.reg()?;
        Ok(Response::new(HealthReply {
            status: "serving".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            uptime_ms: reg.started.elapsed().as_millis() as u64,
            connections: reg.connection_count() as u32,
            groups: reg.groups().len() as u32,
        }))
    }

    async fn stream_metrics(
        &self,
        req: Request<MetricsRequest>,
    ) -> Result<Response<Self::StreamMetricsStream>, Status> {
        let (_, r) = self.policy.admit(req)?;
        let interval = match r.interval_ms {
            0 => 1000,
            ms if (100..=60_000).contains(&ms) => ms,
            ms => {
                return Err(Status::invalid_argument(format!(
                    "interval_ms {ms} not in 100..=60000"
                )))
            }
        };
        use std::sync::atomic::Ordering;
        if self.streams.fetch_add(1, Ordering::AcqRel) >= MAX_METRICS_STREAMS {
            self.streams.fetch_sub(1, Ordering::AcqRel);
            return Err(Status::resource_exhausted(format!(
                "at most {MAX_METRICS_STREAMS} metrics streams"
            )));
        }
        let (tx, rx) = mpsc::channel(2);
        let registry = self.registry.clone();
        let mut shutdown = self.shutdown.clone();
        let streams = self.streams.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(u64::from(interval)));
            loop {
                // Stop with the proxy, so shutdown never waits for a monitoring client.
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = async { shutdown.wait_for(|s| *s).await.map(|_| ()) } => break,
                }
                let connections = match registry.lock() {
                    Ok(r) => r.connections(),
                    Err(_) => break,
                };
                let sample = MetricsSample {
                    timestamp_ns: mcm_core::time::now_tai_ns(),
                    connections,
                };
                tokio::select! {
                    sent = tx.send(Ok(sample)) => if sent.is_err() { break },
                    _ = async { shutdown.wait_for(|s| *s).await.map(|_| ()) } => break,
                }
            }
            streams.fetch_sub(1, Ordering::AcqRel);
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}
