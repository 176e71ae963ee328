//! mcm core: shared-memory flows of grains in the EBU/LF MXL v1 layout, media formats
//! and their exact sizes, the SDK client, and the ST 2110 protocol core (RTP, RFC 4175, SDP).
//!
//! Start with [`flow::Domain`]: it creates flow writers and opens flow readers.

pub mod flow;
pub mod format;
pub mod sdk;
pub mod st2110;
pub mod testpattern;
pub mod time;

pub use flow::{Domain, FlowError};
pub use format::{FlowDef, MediaFormat};
pub use time::Rational;
