//! The mcm media proxy: SDK API (TCP 8002 and a unix socket) and control API (8001), and the
//! `mcm` command-line tool (`src/bin/mcm`).
//!
//! On one host the proxy arranges rendezvous only: applications read and write the group's
//! flow directly in shared memory, so the proxy is never in the local data path. Across
//! hosts it bridges flows to ST 2110 streams (`bridges`).

pub mod auth;
pub mod bridges;
pub mod control_service;
pub mod registry;
pub mod sdk_service;
pub mod server;
