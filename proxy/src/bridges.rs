//! The proxy's ST 2110 bridges. A transmitter connection with `conn-type st2110` makes the
//! proxy send the connection's flow as an ST 2110 stream to `ipAddr:port`; a receiver makes
//! it receive that stream into the flow the application reads. The control API can also
//! set bridges up directly (`ApplyBridges`), between a multipoint group and the network.
//! Users of the same stream share one bridge; it stops when the last one goes.
//! ST 2110-20 video and ST 2110-30 audio are bridged.

use std::collections::{BTreeMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use mcm_core::format::{FlowDef, MediaFormat};
use mcm_core::sdk::{ConnectionConfig, ConnectionType};
use mcm_core::st2110::anc_bridge::{self, AncReceiverOptions, AncSenderOptions};
use mcm_core::st2110::audio_bridge::{self, AudioReceiverOptions, AudioSenderOptions};
use mcm_core::st2110::compressed_bridge::{
    self, CompressedReceiverOptions, CompressedSenderOptions,
};
use mcm_core::st2110::counters::LiveCounters;
use mcm_core::st2110::pacing::SenderType;
use mcm_core::st2110::rfc4175::PackingMode;
use mcm_core::st2110::video_bridge::{self, Pacing, ReceiverOptions, SenderOptions};
use mcm_core::Domain;

/// Prefix of the user ids of bridges set up by the control API (connection ids otherwise).
pub const CONTROL_PREFIX: &str = "control:";

struct Bridge {
    stop: Arc<AtomicBool>,
    /// Connection ids (or `control:<bridge id>`) using this bridge.
    users: HashSet<String>,
    transport: String,
    flow_id: uuid::Uuid,
    counters: Arc<LiveCounters>,
}

/// What `ListBridges` shows of one bridge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BridgeSnapshot {
    /// `tx/<ip>:<port>` or `rx/<ip>:<port>`.
    pub key: String,
    pub transport: String,
    pub flow_id: String,
    pub users: Vec<String>,
    pub packets: u64,
    pub grains: u64,
    pub incomplete: u64,
    pub lost: u64,
    pub dropped: u64,
    /// `narrow`, `wide`, `non-compliant`, or empty before a verdict (receivers of video).
    pub timing: String,
    /// Transmitters: the stream's SDP.
    pub sdp: String,
    /// `running`, `ended`, or `failed: <why>`.
    pub state: String,
}

/// What an ST 2110 bridge carries, by its transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Essence {
    Video,
    Audio,
    Compressed,
    Ancillary,
}

/// Logs a bridge thread's end and records it, so the bridge shows as ended (or failed) and
/// starts again when next attached.
/// The proxy's pacing thread for video transmit bridges, started with the first.
fn shared_pacer() -> &'static video_bridge::SharedPacer {
    static PACER: std::sync::OnceLock<video_bridge::SharedPacer> = std::sync::OnceLock::new();
    PACER.get_or_init(video_bridge::SharedPacer::start)
}

fn ended<T: std::fmt::Debug, E: std::fmt::Display>(
    counters: &Option<Arc<LiveCounters>>,
    stream: SocketAddr,
    what: &str,
    result: Result<T, E>,
) {
    let error = match result {
        Ok(stats) => {
            tracing::info!(?stats, %stream, "{what} bridge ended");
            String::new()
        }
        Err(e) => {
            tracing::warn!(%stream, "{what} bridge failed: {e}");
            e.to_string()
        }
    };
    if let Some(c) = counters {
        c.set_ended(error);
    }
}

/// The bridges running, by stream.
pub struct Bridges {
    domain: PathBuf,
    active: BTreeMap<String, Bridge>,
    /// Users set up by the control API: kept until the next `ApplyBridges` leaves them out.
    control: HashSet<String>,
}

impl Bridges {
    pub fn new(domain: PathBuf) -> Self {
        Self {
            domain,
            active: BTreeMap::new(),
            control: HashSet::new(),
        }
    }

    /// Starts (or joins) the bridge user `user` (a connection id) needs; nothing for local
    /// groups. `Err` says why this stream cannot be bridged (yet).
    pub fn attach(
        &mut self,
        user: &str,
        transmitter: bool,
        config: &ConnectionConfig,
        def: &FlowDef,
    ) -> Result<(), String> {
        let ConnectionType::St2110(st) = &config.connection else {
            return Ok(());
        };
        let essence = match st.transport.as_str() {
            "st2110-20" => Essence::Video,
            "st2110-30" => Essence::Audio,
            "st2110-22" => Essence::Compressed,
            "st2110-40" => Essence::Ancillary,
            other => {
                return Err(format!(
                    "transport `{other}`: st2110-20, st2110-22, st2110-30 or st2110-40"
                ))
            }
        };
        match essence {
            Essence::Video => {
                let MediaFormat::Video { format, .. } = def.media else {
                    return Err("st2110-20 needs a video payload".into());
                };
                video_bridge::wire_of(format).map_err(|e| e.to_string())?;
            }
            Essence::Audio => {
                audio_bridge::audio_format_of(def).map_err(|e| e.to_string())?;
            }
            Essence::Ancillary if def.media != MediaFormat::Ancillary => {
                return Err("st2110-40 needs an ancillary payload".into());
            }
            Essence::Ancillary => {}
            Essence::Compressed if !matches!(def.media, MediaFormat::Opaque { .. }) => {
                return Err("st2110-22 needs a compressed payload".into());
            }
            Essence::Compressed => {}
        }
        let key = format!(
            "{}/{}:{}",
            if transmitter { "tx" } else { "rx" },
            st.ip_addr,
            st.port
        );
        // A user is on one bridge at a time: a control bridge whose stream changed leaves
        // its old one (which stops if no one else uses it).
        for (k, b) in self.active.iter_mut() {
            if *k != key {
                b.users.remove(user);
            }
        }
        self.stop_unused();
        let mut inherited = HashSet::new();
        if let Some(b) = self.active.get_mut(&key) {
            if b.flow_id != def.id || b.transport != st.transport {
                return Err(format!(
                    "{key} is already bridged for flow {} ({})",
                    b.flow_id, b.transport
                ));
            }
            if b.counters.ended().is_none() {
                b.users.insert(user.to_owned());
                return Ok(());
            }
            // Its thread ended (failed, or its flow ended): start it again for its users.
            inherited = std::mem::take(&mut b.users);
            self.active.remove(&key);
        }
        let domain = Domain::open(&self.domain).map_err(|e| e.to_string())?;
        let stop = Arc::new(AtomicBool::new(false));
        let counters = Arc::new(LiveCounters::default());
        let stream = SocketAddr::new(st.ip_addr, st.port);
        let (bind, multicast) = match st.ip_addr {
            IpAddr::V4(g) if g.is_multicast() => (
                SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), st.port),
                Some((g, Ipv4Addr::UNSPECIFIED)),
            ),
            ip => (SocketAddr::new(ip, st.port), None),
        };
        let any = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0);
        let (flag, live) = (stop.clone(), Some(counters.clone()));
        match (transmitter, essence) {
            (true, Essence::Video) => {
                let options = SenderOptions {
                    destination: stream,
                    bind: any,
                    payload_type: st.payload_type,
                    ssrc: def.id.as_u128() as u32,
                    // GPM-compliant, and equal packets: the kernel can segment runs of them.
                    packing: PackingMode::SingleLine,
                    pacing: Pacing::Wide,
                    udp_size: st.udp_size,
                    frames: 0,
                    sdp_file: None,
                    sdp_written: None,
                    offload: true,
                    counters: live,
                };
                // Every video transmit bridge of the proxy shares one pacing thread: a
                // wake-up sends a burst of each stream due, where a thread each would
                // wake for each (measured: 9.4 against 14.7 ms of CPU a frame and
                // stream with three streams, and better pacing).
                let counters = options.counters.clone();
                let done_counters = counters.clone();
                if let Err(e) = shared_pacer().add(domain, def.id, options, flag, move |result| {
                    ended(&done_counters, stream, "st2110-20 transmit", result)
                }) {
                    ended::<(), _>(&counters, stream, "st2110-20 transmit", Err(e));
                }
            }
            (false, Essence::Video) => {
                let MediaFormat::Video {
                    format,
                    width,
                    height,
                    interlace,
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
                    interlace,
                    flow_id: def.id,
                    reliable: config.reliable,
                    frames: 0,
                    offload: true,
                    counters: live,
                };
                std::thread::spawn(move || {
                    let result = video_bridge::receive_video(domain, &options, &flag);
                    ended(&options.counters, stream, "st2110-20 receive", result);
                });
            }
            (true, Essence::Audio) => {
                let options = AudioSenderOptions {
                    destination: stream,
                    bind: any,
                    payload_type: st.payload_type,
                    ssrc: def.id.as_u128() as u32,
                    packets: 0,
                    // A reliable connection holds its writer back until each grain is sent.
                    reliable: config.reliable,
                    counters: live,
                };
                let flow_id = def.id;
                std::thread::spawn(move || {
                    let result = audio_bridge::send_audio(domain, flow_id, &options, &flag);
                    ended(&options.counters, stream, "st2110-30 transmit", result);
                });
            }
            (false, Essence::Audio) => {
                let options = AudioReceiverOptions {
                    bind,
                    multicast,
                    payload_type: Some(st.payload_type),
                    flow: def.clone(),
                    reliable: config.reliable,
                    reorder_window: 8,
                    grains: 0,
                    counters: live,
                };
                // Bound here, so the bridge listens before the connection is answered.
                let socket = audio_bridge::bind_receiver(&options).map_err(|e| e.to_string())?;
                std::thread::spawn(move || {
                    let result = audio_bridge::receive_audio_on(socket, domain, &options, &flag);
                    ended(&options.counters, stream, "st2110-30 receive", result);
                });
            }
            (true, Essence::Ancillary) => {
                let options = AncSenderOptions {
                    destination: stream,
                    bind: any,
                    payload_type: st.payload_type,
                    ssrc: def.id.as_u128() as u32,
                    reliable: config.reliable,
                    counters: live,
                    sdp_file: None,
                };
                let flow_id = def.id;
                std::thread::spawn(move || {
                    let result = anc_bridge::send_anc(domain, flow_id, &options, &flag);
                    ended(&options.counters, stream, "st2110-40 transmit", result);
                });
            }
            (true, Essence::Compressed) => {
                let options = CompressedSenderOptions {
                    destination: stream,
                    bind: any,
                    payload_type: st.payload_type,
                    ssrc: def.id.as_u128() as u32,
                    reliable: config.reliable,
                    counters: live,
                    sdp_file: None,
                };
                let flow_id = def.id;
                std::thread::spawn(move || {
                    let result =
                        compressed_bridge::send_compressed(domain, flow_id, &options, &flag);
                    ended(&options.counters, stream, "st2110-22 transmit", result);
                });
            }
            (false, Essence::Compressed) => {
                let options = CompressedReceiverOptions {
                    bind,
                    multicast,
                    payload_type: Some(st.payload_type),
                    flow: def.clone(),
                    reliable: config.reliable,
                    frames: 0,
                    counters: live,
                };
                // Bound here, so the bridge listens before the connection is answered.
                let socket =
                    compressed_bridge::bind_receiver(&options).map_err(|e| e.to_string())?;
                std::thread::spawn(move || {
                    let result =
                        compressed_bridge::receive_compressed(socket, domain, &options, &flag);
                    ended(&options.counters, stream, "st2110-22 receive", result);
                });
            }
            (false, Essence::Ancillary) => {
                let options = AncReceiverOptions {
                    bind,
                    multicast,
                    payload_type: Some(st.payload_type),
                    flow: def.clone(),
                    reliable: config.reliable,
                    grains: 0,
                    counters: live,
                };
                // Bound here, so the bridge listens before the connection is answered.
                let socket = anc_bridge::bind_receiver(&options).map_err(|e| e.to_string())?;
                std::thread::spawn(move || {
                    let result = anc_bridge::receive_anc(socket, domain, &options, &flag);
                    ended(&options.counters, stream, "st2110-40 receive", result);
                });
            }
        }
        tracing::info!(bridge = %key, user = %user, "st2110 bridge started");
        inherited.insert(user.to_owned());
        self.active.insert(
            key,
            Bridge {
                stop,
                users: inherited,
                transport: st.transport.clone(),
                flow_id: def.id,
                counters,
            },
        );
        Ok(())
    }

    /// The control API's set of bridges: each `(bridge id, transmitter, config, flow)` is
    /// started (or kept); control bridges not in the set stop. Returns the refusals.
    pub fn apply_control(
        &mut self,
        wanted: Vec<(String, bool, ConnectionConfig, FlowDef)>,
    ) -> Vec<String> {
        let mut rejected = Vec::new();
        let mut users = HashSet::new();
        for (id, transmitter, config, def) in wanted {
            let user = format!("{CONTROL_PREFIX}{id}");
            match self.attach(&user, transmitter, &config, &def) {
                Ok(()) => {
                    users.insert(user);
                }
                Err(e) => rejected.push(format!("{id}: {e}")),
            }
        }
        // Control users left out of the new set are dropped like closed connections.
        let gone: HashSet<String> = self.control.difference(&users).cloned().collect();
        self.control = users;
        for b in self.active.values_mut() {
            b.users.retain(|u| !gone.contains(u));
        }
        self.stop_unused();
        rejected
    }

    /// Forgets connections that are no longer open; a bridge with no user left stops.
    pub fn retain_open(&mut self, open: &HashSet<String>) {
        let control = &self.control;
        for b in self.active.values_mut() {
            b.users.retain(|u| open.contains(u) || control.contains(u));
        }
        self.stop_unused();
    }

    fn stop_unused(&mut self) {
        self.active.retain(|key, b| {
            let keep = !b.users.is_empty();
            if !keep {
                b.stop.store(true, Ordering::Release);
                tracing::info!(bridge = %key, "st2110 bridge stopped: no user left");
            }
            keep
        });
    }

    pub fn stop_all(&mut self) {
        self.control.clear();
        self.retain_open(&HashSet::new());
    }

    /// The bridges running, with their counters, by key.
    pub fn list(&self) -> Vec<BridgeSnapshot> {
        self.active
            .iter()
            .map(|(key, b)| {
                let c = &b.counters;
                let mut users: Vec<String> = b.users.iter().cloned().collect();
                users.sort();
                BridgeSnapshot {
                    key: key.clone(),
                    transport: b.transport.clone(),
                    flow_id: b.flow_id.to_string(),
                    users,
                    packets: LiveCounters::get(&c.packets),
                    grains: LiveCounters::get(&c.grains),
                    incomplete: LiveCounters::get(&c.incomplete),
                    lost: LiveCounters::get(&c.lost),
                    dropped: LiveCounters::get(&c.dropped),
                    timing: match c.timing() {
                        None => String::new(),
                        Some(SenderType::Narrow) => "narrow".into(),
                        Some(SenderType::Wide) => "wide".into(),
                        Some(SenderType::NonCompliant) => "non-compliant".into(),
                    },
                    sdp: c.sdp(),
                    state: match c.ended() {
                        None => "running".into(),
                        Some(e) if e.is_empty() => "ended".into(),
                        Some(e) => format!("failed: {e}"),
                    },
                }
            })
            .collect()
    }
}
