//! mcm core: shared-memory flows of grains in the EBU/LF MXL v1 layout, media formats
//! and their exact sizes, and (in later modules) RTP packetization and transports.
//!
//! Start with [`flow::Domain`]: it creates flow writers and opens flow readers.

pub mod flow;
pub mod format;
pub mod sdk;
pub mod testpattern;
pub mod time;

pub use flow::{Domain, FlowError};
pub use format::{FlowDef, MediaFormat};
pub use time::Rational;
