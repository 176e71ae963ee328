//! mcm's protocols, generated from `proto/mcm/v1/*.proto` with tonic and prost.
//!
//! * [`v1::sdk_api_server`] / [`v1::sdk_api_client`]: the SDK API an application uses to ask
//!   its host's proxy for connections (TCP 8002 and a unix socket).
//! * [`v1::control_server`] / [`v1::control_client`]: the control plane (TCP 8001).

/// Version 1 of the SDK and control APIs.
pub mod v1 {
    #![allow(clippy::all, unreachable_pub, unused_qualifications)]
    tonic::include_proto!("mcm.v1");
}

/// The API version this build speaks; requests carry it in `api_version`.
pub const API_VERSION: u32 = 1;
