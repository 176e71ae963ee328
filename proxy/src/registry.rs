//! The proxy's registry of client sessions, connections, multipoint groups and bridges.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use mcm_core::sdk::{ConnectionConfig, ConnectionType};
use mcm_proto::v1::{
    ConnectionCounters, ConnectionInfo, ConnectionKind, ConnectionState, GroupInfo,
};

/// Closed connections stay visible (with their final counters) this long.
const CLOSED_GRACE: Duration = Duration::from_secs(30);

/// Limits that keep one client (or a flood of requests) from exhausting the proxy.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_connections: usize,
    pub max_connections_per_client: usize,
    pub max_sessions: usize,
    pub max_bridges: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: 1024,
            max_connections_per_client: 128,
            max_sessions: 256,
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
    pub closed_at: Option<Instant>,
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

    fn is_open(&self) -> bool {
        self.state != ConnectionState::Closed
    }

    /// What every member of a group must agree on: the flow geometry and back-pressure.
    fn group_terms(&self) -> (String, bool) {
        let geometry = self
            .config
            .flow_def(uuid::Uuid::nil())
            .map(|d| {
                format!(
                    "{:?} @{} meta {}",
                    d.media,
                    d.index_rate(),
                    d.metadata_capacity()
                )
            })
            .unwrap_or_default();
        (geometry, self.config.reliable)
    }
}

#[derive(Debug, Clone)]
pub struct Bridge {
    pub id: String,
    pub group: String,
    pub kind: ConnectionKind,
    pub config: ConnectionConfig,
}

/// Why a request was refused; mapped to gRPC statuses by the services.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegistryError {
    Limit(String),
    Incompatible(String),
    NotFound(String),
    NotOwner(String),
    NoSession(String),
}

/// One client's attach stream: `generation` tells a reconnected session from the old one.
struct Session {
    generation: u64,
    peer_uid: Option<u32>,
}

pub struct Registry {
    pub started: Instant,
    limits: Limits,
    connections: HashMap<String, Connection>,
    bridges: BTreeMap<String, Bridge>,
    sessions: HashMap<String, Session>,
    next_generation: u64,
}

impl Registry {
    pub fn new(limits: Limits) -> Self {
        Self {
            started: Instant::now(),
            limits,
            connections: HashMap::new(),
            bridges: BTreeMap::new(),
            sessions: HashMap::new(),
            next_generation: 1,
        }
    }

    /// Opens (or re-opens, after a reconnect) a client's session; returns its generation.
    /// An id already attached by another peer uid is refused.
    pub fn attach(&mut self, client_id: &str, peer_uid: Option<u32>) -> Result<u64, RegistryError> {
        if let Some(s) = self.sessions.get(client_id) {
            if s.peer_uid != peer_uid {
                return Err(RegistryError::NotOwner(format!(
                    "client id {client_id} is attached by another peer"
                )));
            }
        } else if self.sessions.len() >= self.limits.max_sessions {
            return Err(RegistryError::Limit(format!(
                "the proxy holds its maximum of {} client sessions",
                self.limits.max_sessions
            )));
        }
        let generation = self.next_generation;
        self.next_generation += 1;
        self.sessions.insert(
            client_id.to_owned(),
            Session {
                generation,
                peer_uid,
            },
        );
        Ok(generation)
    }

    /// Ends a session if it is still the given generation: its connections are closed.
    pub fn detach(&mut self, client_id: &str, generation: u64) -> usize {
        if self
            .sessions
            .get(client_id)
            .is_none_or(|s| s.generation != generation)
        {
            return 0; // superseded by a reconnect: its connections live on
        }
        self.sessions.remove(client_id);
        let now = Instant::now();
        let mut closed = 0;
        for c in self
            .connections
            .values_mut()
            .filter(|c| c.client_id == client_id && c.is_open())
        {
            c.state = ConnectionState::Closed;
            c.closed_at = Some(now);
            closed += 1;
        }
        closed
    }

    fn check_session(&self, client_id: &str, peer_uid: Option<u32>) -> Result<(), RegistryError> {
        match self.sessions.get(client_id) {
            Some(s) if s.peer_uid == peer_uid => Ok(()),
            Some(_) => Err(RegistryError::NotOwner(format!(
                "client id {client_id} belongs to another peer"
            ))),
            None => Err(RegistryError::NoSession(format!(
                "client {client_id} has no open Attach session"
            ))),
        }
    }

    /// Adds (or re-registers) a connection after checking its session, its owner, limits
    /// and group rules: one transmitter per group, and every member agreeing on geometry
    /// and back-pressure.
    pub fn add(&mut self, conn: Connection) -> Result<(), RegistryError> {
        self.purge_closed();
        self.check_session(&conn.client_id, conn.peer_uid)?;
        let reregistering = match self.connections.get(&conn.id) {
            Some(old) if old.client_id != conn.client_id || old.peer_uid != conn.peer_uid => {
                return Err(RegistryError::NotOwner(format!(
                    "connection {} belongs to another client",
                    conn.id
                )));
            }
            Some(_) => true,
            None => false,
        };
        let open = self
            .connections
            .values()
            .filter(|c| c.is_open() && c.id != conn.id);
        if !reregistering && open.clone().count() >= self.limits.max_connections {
            return Err(RegistryError::Limit(format!(
                "the proxy holds its maximum of {} connections",
                self.limits.max_connections
            )));
        }
        if !reregistering
            && open
                .clone()
                .filter(|c| c.client_id == conn.client_id)
                .count()
                >= self.limits.max_connections_per_client
        {
            return Err(RegistryError::Limit(format!(
                "client {} holds its maximum of {} connections",
                conn.client_id, self.limits.max_connections_per_client
            )));
        }
        for other in open.filter(|c| c.group == conn.group) {
            if conn.kind == ConnectionKind::Transmitter && other.kind == ConnectionKind::Transmitter
            {
                return Err(RegistryError::Incompatible(format!(
                    "group `{}` already has a transmitter ({})",
                    conn.group, other.id
                )));
            }
            let (mine, theirs) = (conn.group_terms(), other.group_terms());
            if mine != theirs {
                return Err(RegistryError::Incompatible(format!(
                    "group `{}` carries {} (reliable {}), the connection asks for {} (reliable {})",
                    conn.group, theirs.0, theirs.1, mine.0, mine.1
                )));
            }
        }
        self.connections.insert(conn.id.clone(), conn);
        Ok(())
    }

    /// The open connection `id`, if `client_id` (from `peer_uid`) owns it.
    pub fn owned_mut(
        &mut self,
        id: &str,
        client_id: &str,
        peer_uid: Option<u32>,
    ) -> Result<&mut Connection, RegistryError> {
        match self.connections.get_mut(id) {
            Some(c) if c.client_id != client_id || c.peer_uid != peer_uid => Err(
                RegistryError::NotOwner(format!("connection {id} belongs to another client")),
            ),
            Some(c) if c.is_open() => Ok(c),
            _ => Err(RegistryError::NotFound(format!("no open connection {id}"))),
        }
    }

    pub fn get(&self, id: &str) -> Option<&Connection> {
        self.connections.get(id)
    }

    /// Marks a connection closed; it stays listed with its final counters for a while.
    pub fn close(
        &mut self,
        id: &str,
        client_id: &str,
        peer_uid: Option<u32>,
    ) -> Result<(), RegistryError> {
        let c = self.owned_mut(id, client_id, peer_uid)?;
        c.state = ConnectionState::Closed;
        c.closed_at = Some(Instant::now());
        Ok(())
    }

    /// Closes every connection (proxy shutdown); returns how many were open.
    pub fn close_all(&mut self) -> usize {
        let now = Instant::now();
        let mut n = 0;
        for c in self.connections.values_mut().filter(|c| c.is_open()) {
            c.state = ConnectionState::Closed;
            c.closed_at = Some(now);
            n += 1;
        }
        self.sessions.clear();
        n
    }

    fn purge_closed(&mut self) {
        self.connections
            .retain(|_, c| c.closed_at.is_none_or(|t| t.elapsed() < CLOSED_GRACE));
    }

    /// Ids of the connections still open.
    pub fn open_ids(&self) -> std::collections::HashSet<String> {
        self.connections
            .values()
            .filter(|c| c.is_open())
            .map(|c| c.id.clone())
            .collect()
    }

    pub fn connections(&self) -> Vec<ConnectionInfo> {
        let mut v: Vec<_> = self.connections.values().map(Connection::info).collect();
        v.sort_by(|a, b| a.conn_id.cmp(&b.conn_id));
        v
    }

    pub fn connection_count(&self) -> usize {
        self.connections.values().filter(|c| c.is_open()).count()
    }

    pub fn groups(&self) -> Vec<GroupInfo> {
        let mut groups: BTreeMap<String, GroupInfo> = BTreeMap::new();
        for c in self.connections.values().filter(|c| c.is_open()) {
            let g = groups.entry(c.group.clone()).or_insert_with(|| GroupInfo {
                urn: c.group.clone(),
                flow_id: c.flow_id.clone(),
                counters: Some(ConnectionCounters::default()),
                ..Default::default()
            });
            match c.kind {
                ConnectionKind::Transmitter => g.transmitters.push(c.id.clone()),
                _ => g.receivers.push(c.id.clone()),
            }
            if let Some(sum) = g.counters.as_mut() {
                sum.grains += c.counters.grains;
                sum.bytes += c.counters.bytes;
                sum.drops += c.counters.drops;
                sum.errors += c.counters.errors;
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
    /// The bridges the control API set (accepted by [`Registry::apply_bridges`]).
    pub fn bridges(&self) -> impl Iterator<Item = &Bridge> {
        self.bridges.values()
    }

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

#[cfg(test)]
mod tests {
    use super::*;

    fn conn(id: &str, client: &str, kind: ConnectionKind, json: &str) -> Connection {
        let config = ConnectionConfig::parse(json).unwrap();
        Connection {
            id: id.into(),
            client_id: client.into(),
            kind,
            state: ConnectionState::Configured,
            group: config.group(),
            flow_id: config.flow_id().to_string(),
            config,
            counters: Default::default(),
            peer_uid: None,
            closed_at: None,
        }
    }

    const VIDEO: &str = r#"{"connection":{"multipointGroup":{"urn":"g"}},"payload":{"video":{"width":64,"height":4,"fps":25,"pixelFormat":"v210"}}}"#;

    #[test]
    fn a_reconnected_session_keeps_its_connections_when_the_old_stream_ends() {
        let mut r = Registry::new(Limits::default());
        let old = r.attach("c", None).unwrap();
        r.add(conn("1", "c", ConnectionKind::Receiver, VIDEO))
            .unwrap();
        let new = r.attach("c", None).unwrap();
        assert_eq!(
            r.detach("c", old),
            0,
            "the superseded stream closes nothing"
        );
        assert_eq!(r.connection_count(), 1);
        assert_eq!(r.detach("c", new), 1);
        assert_eq!(r.connection_count(), 0);
        assert_eq!(r.get("1").unwrap().state, ConnectionState::Closed);
    }

    #[test]
    fn owners_sessions_and_group_terms_are_enforced() {
        let mut r = Registry::new(Limits::default());
        assert!(matches!(
            r.add(conn("1", "a", ConnectionKind::Receiver, VIDEO)),
            Err(RegistryError::NoSession(_))
        ));
        r.attach("a", None).unwrap();
        r.attach("b", None).unwrap();
        assert!(matches!(
            r.attach("a", Some(1000)),
            Err(RegistryError::NotOwner(_))
        ));
        r.add(conn("1", "a", ConnectionKind::Receiver, VIDEO))
            .unwrap();
        // b cannot take over a's connection, nor act on it.
        assert!(matches!(
            r.add(conn("1", "b", ConnectionKind::Transmitter, VIDEO)),
            Err(RegistryError::NotOwner(_))
        ));
        assert!(matches!(
            r.close("1", "b", None),
            Err(RegistryError::NotOwner(_))
        ));
        assert!(matches!(
            r.owned_mut("1", "b", None),
            Err(RegistryError::NotOwner(_))
        ));
        // Same group, other geometry or other back-pressure: incompatible.
        let other = VIDEO.replace("64", "128");
        assert!(matches!(
            r.add(conn("2", "b", ConnectionKind::Receiver, &other)),
            Err(RegistryError::Incompatible(_))
        ));
        let reliable = format!("{}{}", &VIDEO[..VIDEO.len() - 1], r#","reliable":true}"#);
        assert!(matches!(
            r.add(conn("3", "b", ConnectionKind::Transmitter, &reliable)),
            Err(RegistryError::Incompatible(_))
        ));
        r.add(conn("4", "b", ConnectionKind::Transmitter, VIDEO))
            .unwrap();
        assert!(matches!(
            r.add(conn("5", "a", ConnectionKind::Transmitter, VIDEO)),
            Err(RegistryError::Incompatible(_))
        ));
        let groups = r.groups();
        assert_eq!(
            (groups[0].transmitters.len(), groups[0].receivers.len()),
            (1, 1)
        );
    }
}
