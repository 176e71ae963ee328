//! SMPTE ST 2110 protocol core, sans-IO: RTP headers, the ST 2110-20 (RFC 4175) video
//! packetizer and frame assembler, conversions between wire pgroups and flow pixel
//! formats, and SDP. Sockets, pacing and the proxy's bridges are built around it.

pub mod anc;
pub mod anc_bridge;
pub mod audio;
pub mod audio_bridge;
pub mod compressed_bridge;
pub mod convert;
mod convert_simd;
pub mod counters;
mod grain_frames;
pub mod pacing;
pub mod rfc4175;
pub mod rfc9134;
pub mod rtp;
pub mod sdp;
pub mod st2038;
pub mod udp;
pub mod video_bridge;
mod video_sender;
