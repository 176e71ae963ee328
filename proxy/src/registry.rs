//! The proxy's registry of clients, connections, multipoint groups and bridges.

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use mcm_core::sdk::{ConnectionConfig, ConnectionType};
use mcm_proto::v1::{
    ConnectionCounters, ConnectionInfo, ConnectionKind, ConnectionState, GroupInfo,
};

/// Limits that keep one client (or a flood of requests) from exhausting the proxy.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_connections: usize,
    pub max_connections_per_client: usize,
    pub max_bridges: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: 1024,
            max_connections_per_client: 128,
            max_bridges: 256,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Connection {
    pub id: String,
    pub client_id: String,
    pub kind: ConnectionKind,
    pub state: ConnectionState,
    pub config: ConnectionConfig,
    pub group: String,
    pub flow_id: String,
    pub counters: ConnectionCounters,
    pub peer_uid: Option<u32>,
}

impl Connection {
    pub fn info(&self) -> ConnectionInfo {
        ConnectionInfo {
            conn_id: self.id.clone(),
            client_id: self.client_id.clone(),
            kind: self.kind as i32,
            state: self.state as i32,
            group: self.group.clone(),
            flow_id: self.flow_id.clone(),
            counters: Some(self.counters),
            peer_uid: self.peer_uid,
            config_json: self.config.json.clone(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Bridge {
    pub id: String,
    pub group: String,
    pub kind: ConnectionKind,
    pub config: ConnectionConfig,
}

/// Why a registration was refused; mapped to gRPC statuses by the services.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegistryError {
    Limit(String),
    Incompatible(String),
    NotFound(String),
}

pub struct Registry {
    pub started: Instant,
    limits: Limits,
    connections: HashMap<String, Connection>,
    bridges: BTreeMap<String, Bridge>,
}

impl Registry {
    pub fn new(limits: Limits) -> Self {
        Self {
            started: Instant::now(),
            limits,
            connections: HashMap::new(),
            bridges: BTreeMap::new(),
        }
    }

    /// Adds a connection after checking limits and group rules: one transmitter per group,
    /// and every member of a group agreeing on the payload.
    pub fn add(&mut self, conn: Connection) -> Result<(), RegistryError> {
        if self.connections.contains_key(&conn.id) {
            // Re-registration after a proxy restart: replace.
            self.connections.insert(conn.id.clone(), conn);
            return Ok(());
        }
        if self.connections.len() >= self.limits.max_connections {
            return Err(RegistryError::Limit(format!(
                "the proxy holds its maximum of {} connections",
                self.limits.max_connections
            )));
        }
        let of_client = self
            .connections
            .values()
            .filter(|c| c.client_id == conn.client_id)
            .count();
        if of_client >= self.limits.max_connections_per_client {
            return Err(RegistryError::Limit(format!(
                "client {} holds its maximum of {} connections",
                conn.client_id, self.limits.max_connections_per_client
            )));
        }
        for other in self.connections.values().filter(|c| c.group == conn.group) {
            if conn.kind == ConnectionKind::Transmitter && other.kind == ConnectionKind::Transmitter
            {
                return Err(RegistryError::Incompatible(format!(
                    "group `{}` already has a transmitter ({})",
                    conn.group, other.id
                )));
            }
            if other.config.payload != conn.config.payload {
                return Err(RegistryError::Incompatible(format!(
                    "group `{}` carries {:?}, the connection asks for {:?}",
                    conn.group, other.config.payload, conn.config.payload
                )));
            }
        }
        self.connections.insert(conn.id.clone(), conn);
        Ok(())
    }

    pub fn get(&self, id: &str) -> Option<&Connection> {
        self.connections.get(id)
    }

    pub fn get_mut(&mut self, id: &str) -> Option<&mut Connection> {
        self.connections.get_mut(id)
    }

    pub fn remove(&mut self, id: &str) -> Option<Connection> {
        self.connections.remove(id)
    }

    /// Removes every connection of a client (its session ended).
    pub fn remove_client(&mut self, client_id: &str) -> Vec<String> {
        let ids: Vec<String> = self
            .connections
            .values()
            .filter(|c| c.client_id == client_id)
            .map(|c| c.id.clone())
            .collect();
        for id in &ids {
            self.connections.remove(id);
        }
        ids
    }

    pub fn connections(&self) -> Vec<ConnectionInfo> {
        let mut v: Vec<_> = self.connections.values().map(Connection::info).collect();
        v.sort_by(|a, b| a.conn_id.cmp(&b.conn_id));
        v
    }

    pub fn connection_count(&self) -> usize {
        self.connections.len()
    }

    pub fn groups(&self) -> Vec<GroupInfo> {
        let mut groups: BTreeMap<String, GroupInfo> = BTreeMap::new();
        for c in self.connections.values() {
            let g = groups.entry(c.group.clone()).or_insert_with(|| GroupInfo {
                urn: c.group.clone(),
                flow_id: c.flow_id.clone(),
                ..Default::default()
            });
            match c.kind {
                ConnectionKind::Transmitter => g.transmitters.push(c.id.clone()),
                _ => g.receivers.push(c.id.clone()),
            }
        }
        for b in self.bridges.values() {
            groups
                .entry(b.group.clone())
                .or_insert_with(|| GroupInfo {
                    urn: b.group.clone(),
                    ..Default::default()
                })
                .bridges
                .push(b.id.clone());
        }
        groups.into_values().collect()
    }

    /// Replaces the set of bridges; returns the ids refused with the reason.
    pub fn apply_bridges(&mut self, bridges: Vec<Bridge>) -> Vec<String> {
        let mut rejected = Vec::new();
        let mut next = BTreeMap::new();
        for b in bridges {
            if next.len() >= self.limits.max_bridges {
                rejected.push(format!(
                    "{}: more than {} bridges",
                    b.id, self.limits.max_bridges
                ));
                continue;
            }
            if matches!(b.config.connection, ConnectionType::MultipointGroup { .. }) {
                rejected.push(format!(
                    "{}: a bridge needs an st2110 or rdma connection",
                    b.id
                ));
                continue;
            }
            next.insert(b.id.clone(), b);
        }
        self.bridges = next;
        rejected
    }
}
