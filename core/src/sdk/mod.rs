//! The mcm SDK: MCM-compatible client and connections with a zero-copy buffer API.
//!
//! A [`Client`] talks to the media proxy of its host (TCP or unix socket); each connection
//! is registered with the proxy, then reads or writes the group's flow directly in shared
//! memory. Timeouts are `Duration`s everywhere in Rust; the JSON gives microseconds
//! (`apiDefaultTimeoutMicroseconds`), the C API milliseconds.

mod client;
mod config;
mod connection;
mod error;

pub use client::{Client, Counters};
pub use connection::{Buffer, Connection};

pub use config::{
    fps_to_rational, group_flow_id, token_path, ClientConfig, ConnectionConfig, ConnectionType,
    Payload, ProxyEndpoint, St2110Config, DEFAULT_SDK_PORT, DEFAULT_UNIX_SOCKET, MAX_CONFIG_JSON,
    MAX_URN_LEN,
};
pub use error::{MeshErrorCode, SdkError, SdkResult};
