//! Who may talk to the proxy: a shared token on TCP, `SO_PEERCRED` uids on the unix socket.

use std::sync::Arc;

use tonic::transport::server::UdsConnectInfo;
use tonic::{Request, Status};

/// Access policy shared by every service.
#[derive(Debug, Clone, Default)]
pub struct AccessPolicy {
    /// Required as `authorization: Bearer <token>` on TCP when set.
    pub token: Option<Arc<str>>,
    /// Unix-socket peers allowed besides root and the proxy's own uid.
    pub allowed_uids: Vec<u32>,
    /// The proxy's effective uid.
    pub own_uid: u32,
}

impl AccessPolicy {
    /// Checks a request; on success returns the peer's uid when it came over the unix socket.
    pub fn check<T>(&self, req: &Request<T>) -> Result<Option<u32>, Status> {
        if let Some(info) = req.extensions().get::<UdsConnectInfo>() {
            let uid = info.peer_cred.map(|c| c.uid()).ok_or_else(|| {
                Status::permission_denied("unix socket peer credentials unavailable")
            })?;
            if uid == 0 || uid == self.own_uid || self.allowed_uids.contains(&uid) {
                return Ok(Some(uid));
            }
            return Err(Status::permission_denied(format!(
                "uid {uid} may not use this proxy (allowed: root, {}{}); start the proxy with --allow-uid {uid}",
                self.own_uid,
                self.allowed_uids.iter().map(|u| format!(", {u}")).collect::<String>()
            )));
        }
        if let Some(token) = &self.token {
            let given = req
                .metadata()
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .unwrap_or("");
            if !constant_time_eq(given.as_bytes(), token.as_bytes()) {
                return Err(Status::unauthenticated(
                    "missing or wrong auth token (authorization: Bearer ...)",
                ));
            }
        }
        Ok(None)
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Requests that say which API version they speak.
pub trait Versioned {
    fn api_version(&self) -> u32;
}

macro_rules! versioned {
    ($($t:ty),*) => {$(
        impl Versioned for $t {
            fn api_version(&self) -> u32 {
                self.api_version
            }
        }
    )*};
}

use mcm_proto::v1 as pb;
versioned!(
    pb::AttachRequest,
    pb::CreateConnectionRequest,
    pb::ConnectionRef,
    pb::ReportRequest,
    pb::ListRequest,
    pb::GetRequest,
    pb::ApplyBridgesRequest,
    pb::MetricsRequest
);

impl AccessPolicy {
    /// Checks who is asking and the API version; returns the peer uid (unix socket) and the
    /// request body.
    pub fn admit<T: Versioned>(&self, req: Request<T>) -> Result<(Option<u32>, T), Status> {
        let peer_uid = self.check(&req)?;
        let body = req.into_inner();
        check_version(body.api_version())?;
        Ok((peer_uid, body))
    }
}

/// Rejects requests of an API version this proxy does not speak.
pub fn check_version(v: u32) -> Result<(), Status> {
    match v {
        mcm_proto::API_VERSION => Ok(()),
        0 => Err(Status::invalid_argument(
            "api_version missing (this proxy speaks 1)",
        )),
        other => Err(Status::failed_precondition(format!(
            "unsupported API version {other}: this proxy speaks version {}",
            mcm_proto::API_VERSION
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_checked_in_constant_time_shape() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
        let p = AccessPolicy {
            token: Some("s3cret".into()),
            ..Default::default()
        };
        let mut req = Request::new(());
        assert_eq!(
            p.check(&req).unwrap_err().code(),
            tonic::Code::Unauthenticated
        );
        req.metadata_mut()
            .insert("authorization", "Bearer s3cret".parse().unwrap());
        assert_eq!(p.check(&req).unwrap(), None);
        assert_eq!(
            check_version(2).unwrap_err().code(),
            tonic::Code::FailedPrecondition
        );
        assert_eq!(
            check_version(0).unwrap_err().code(),
            tonic::Code::InvalidArgument
        );
    }
}
