//! The proxy's ST 2110 bridges: a transmitter connection with `conn-type st2110` makes the
//! proxy send the connection's flow as an ST 2110-20 stream to `ipAddr:port`; a receiver
//! makes it receive that stream into the flow the application reads. Connections to the
//! same stream share one bridge; the last one closed stops it.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use mcm_core::format::{FlowDef, MediaFormat};
use mcm_core::sdk::{ConnectionConfig, ConnectionType};
use mcm_core::st2110::audio_bridge::{self, AudioReceiverOptions, AudioSenderOptions};
use mcm_core::st2110::rfc4175::PackingMode;
use mcm_core::st2110::video_bridge::{self, ReceiverOptions, SenderOptions};
use mcm_core::Domain;

struct Bridge {
    stop: Arc<AtomicBool>,
    connections: HashSet<String>,
}

/// The bridges running, by stream (`tx/<ip>:<port>` or `rx/<ip>:<port>`).
pub struct Bridges {
    domain: PathBuf,
    active: HashMap<String, Bridge>,
}

impl Bridges {
    pub fn new(domain: PathBuf) -> Self {
        Self {
            domain,
            active: HashMap::new(),
        }
    }

    /// Starts (or joins) the bridge connection `conn_id` needs; nothing for local groups.
    /// `Err` says why this stream cannot be bridged (yet).
    pub fn attach(
        &mut self,
        conn_id: &str,
        transmitter: bool,
        config: &ConnectionConfig,
        def: &FlowDef,
    ) -> Result<(), String> {
        let ConnectionType::St2110(st) = &config.connection else {
            return Ok(());
        };
        let video = match st.transport.as_str() {
            "st2110-20" => true,
            "st2110-30" => false,
            other => {
                return Err(format!(
                    "{other} is not bridged yet (st2110-20 video and st2110-30 audio are)"
                ))
            }
        };
        if video {
            let MediaFormat::Video { format, .. } = def.media else {
                return Err("st2110-20 needs a video payload".into());
            };
            video_bridge::wire_of(format).map_err(|e| e.to_string())?;
        } else {
            audio_bridge::audio_format_of(def).map_err(|e| e.to_string())?;
        }
        let key = format!(
            "{}/{}:{}",
            if transmitter { "tx" } else { "rx" },
            st.ip_addr,
            st.port
        );
        if let Some(b) = self.active.get_mut(&key) {
            b.connections.insert(conn_id.to_owned());
            return Ok(());
        }
        let domain = Domain::open(&self.domain).map_err(|e| e.to_string())?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let stream = SocketAddr::new(st.ip_addr, st.port);
        let (bind, multicast) = match st.ip_addr {
            IpAddr::V4(g) if g.is_multicast() => (
                SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), st.port),
                Some((g, Ipv4Addr::UNSPECIFIED)),
            ),
            ip => (SocketAddr::new(ip, st.port), None),
        };
        match (transmitter, video) {
            (true, true) => spawn_video_sender(domain, def, st.payload_type, stream, flag),
            (false, true) => {
                let MediaFormat::Video {
                    format,
                    width,
                    height,
                    ..
                } = def.media
                else {
                    return Err("st2110-20 needs a video payload".into());
                };
                let options = ReceiverOptions {
                    bind,
                    multicast,
                    payload_type: Some(st.payload_type),
                    width,
                    height,
                    rate: def.rate,
                    format,
                    flow_id: def.id,
                    reliable: config.reliable,
                    frames: 0,
                    offload: true,
                };
                std::thread::spawn(move || {
                    match video_bridge::receive_video(domain, &options, &flag) {
                        Ok(s) => tracing::info!(?s, %stream, "st2110-20 receive bridge ended"),
                        Err(e) => tracing::warn!(%stream, "st2110-20 receive bridge failed: {e}"),
                    }
                });
            }
            (true, false) => {
                let options = AudioSenderOptions {
                    destination: stream,
                    bind: SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0),
                    payload_type: st.payload_type,
                    ssrc: def.id.as_u128() as u32,
                    packets: 0,
                    reliable: false,
                };
                let flow_id = def.id;
                std::thread::spawn(move || {
                    match audio_bridge::send_audio(domain, flow_id, &options, &flag) {
                        Ok(s) => tracing::info!(?s, %stream, "st2110-30 transmit bridge ended"),
                        Err(e) => tracing::warn!(%stream, "st2110-30 transmit bridge failed: {e}"),
                    }
                });
            }
            (false, false) => {
                let options = AudioReceiverOptions {
                    bind,
                    multicast,
                    payload_type: Some(st.payload_type),
                    flow: def.clone(),
                    reliable: config.reliable,
                    reorder_window: 8,
                    grains: 0,
                };
                // Bound here, so the bridge listens before the connection is answered.
                let socket = audio_bridge::bind_receiver(&options).map_err(|e| e.to_string())?;
                std::thread::spawn(move || {
                    match audio_bridge::receive_audio_on(socket, domain, &options, &flag) {
                        Ok(s) => tracing::info!(?s, %stream, "st2110-30 receive bridge ended"),
                        Err(e) => tracing::warn!(%stream, "st2110-30 receive bridge failed: {e}"),
                    }
                });
            }
        }
        tracing::info!(bridge = %key, conn = %conn_id, "st2110 bridge started");
        self.active.insert(
            key,
            Bridge {
                stop,
                connections: HashSet::from([conn_id.to_owned()]),
            },
        );
        Ok(())
    }
}

/// The ST 2110-20 transmit bridge of flow `def`, on its own thread until `stop`.
fn spawn_video_sender(
    domain: Domain,
    def: &FlowDef,
    payload_type: u8,
    stream: SocketAddr,
    stop: Arc<AtomicBool>,
) {
    let options = SenderOptions {
        destination: stream,
        bind: SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0),
        payload_type,
        ssrc: def.id.as_u128() as u32,
        // GPM-compliant, and equal packets: the kernel can segment runs of them.
        packing: PackingMode::SingleLine,
        frames: 0,
        sdp_file: None,
        sdp_written: None,
        offload: true,
    };
    let flow_id = def.id;
    std::thread::spawn(
        move || match video_bridge::send_video(domain, flow_id, &options, &stop) {
            Ok(s) => tracing::info!(?s, %stream, "st2110-20 transmit bridge ended"),
            Err(e) => tracing::warn!(%stream, "st2110-20 transmit bridge failed: {e}"),
        },
    );
}

impl Bridges {
    /// Forgets connections that are no longer open; a bridge with none left stops.
    pub fn retain_open(&mut self, open: &HashSet<String>) {
        self.active.retain(|key, b| {
            b.connections.retain(|c| open.contains(c));
            let keep = !b.connections.is_empty();
            if !keep {
                b.stop.store(true, Ordering::Release);
                tracing::info!(bridge = %key, "st2110 bridge stopped: no connection left");
            }
            keep
        });
    }

    pub fn stop_all(&mut self) {
        self.retain_open(&HashSet::new());
    }
}
