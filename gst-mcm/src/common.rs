//! What `mcmsrc` and `mcmsink` share: connection properties (named like MCM's connection
//! JSON), caps <-> flow description, and row-by-row copies between frames and grains.

use std::path::PathBuf;
use std::sync::LazyLock;

use gst::glib;
use gst::prelude::*;
use gst_video::prelude::*;
use mcm_core::format::{FlowDef, InterlaceMode, MediaFormat, PcmFormat, SampleFormat, VideoFormat};
use mcm_core::st2110::rfc4175::UdpSize;
use mcm_core::time::Rational;
use serde_json::json;
use uuid::Uuid;

pub static CAT: LazyLock<gst::DebugCategory> = LazyLock::new(|| {
    gst::DebugCategory::new("mcm", gst::DebugColorFlags::empty(), Some("mcm elements"))
});

pub use mcm_core::format::CAPS_KEY;
/// GStreamer's caps for SMPTE ST 2038 ancillary data packets.
pub const ST2038_CAPS: &str = "meta/x-st-2038";

/// A flow grain (RFC 8331 payload from its Length field) as ST 2038 bytes.
pub fn grain_to_st2038(grain: &[u8]) -> Result<Vec<u8>, String> {
    use mcm_core::st2110::{anc, st2038};
    let (_, packets) = anc::parse_payload(grain).map_err(|e| format!("ancillary grain: {e}"))?;
    let mut out = Vec::new();
    st2038::write(&packets, &mut out).map_err(|e| e.to_string())?;
    Ok(out)
}

/// ST 2038 bytes (one buffer: a frame's ANC packets) as a flow grain's RFC 8331 payload.
pub fn st2038_to_grain(data: &[u8]) -> Result<Vec<u8>, String> {
    use mcm_core::st2110::{anc, st2038};
    let packets = st2038::parse(data).map_err(|e| format!("ST 2038 buffer: {e}"))?;
    anc::payload(anc::AncField::Progressive, &packets).map_err(|e| e.to_string())
}
/// Bytes of per-grain metadata the elements use for buffer timing.
pub const TIMING_SIZE: u32 = 32;

/// Connection settings, named like MCM's connection JSON and MTL's elements.
#[derive(Debug, Clone)]
pub struct ConnSettings {
    pub conn_type: String,
    pub urn: Option<String>,
    pub ip_addr: Option<String>,
    pub port: u32,
    pub mcast_sip_addr: Option<String>,
    pub transport: String,
    pub payload_type: u32,
    pub transport_pixel_format: String,
    /// ST 2110-10 UDP size limit: 1460 (standard) or 8960 (extended, jumbo frames).
    pub max_udp: u32,
    /// Grains in the ring; through the proxy MCM's `bufferQueueCapacity` (16 unless set).
    pub buffer_queue_capacity: u32,
    /// `buffer-queue-capacity` was set: a direct-mode sender sizes a new flow's ring by it
    /// instead of by the domain's history (see [`ConnSettings::direct_ring`]).
    pub buffer_queue_capacity_set: bool,
    pub reliable: bool,
    pub proxy: Option<String>,
    pub domain: Option<String>,
    pub flow_id: Option<String>,
    pub rdma_provider: String,
    pub rdma_num_endpoints: u32,
    pub caps: Option<gst::Caps>,
    /// Largest opaque (compressed) buffer, in bytes.
    pub max_grain_size: u32,
}

impl Default for ConnSettings {
    fn default() -> Self {
        Self {
            conn_type: "multipoint-group".into(),
            urn: None,
            ip_addr: None,
            port: 9001,
            mcast_sip_addr: None,
            transport: "st2110-20".into(),
            payload_type: 112,
            transport_pixel_format: "yuv422p10rfc4175".into(),
            max_udp: 1460,
            buffer_queue_capacity: 16,
            buffer_queue_capacity_set: false,
            reliable: false,
            proxy: None,
            domain: None,
            flow_id: None,
            rdma_provider: "tcp".into(),
            rdma_num_endpoints: 1,
            caps: None,
            max_grain_size: 8 << 20,
        }
    }
}

/// Points `conn` at the stream an ST 2110 SDP file describes (its first media section):
/// conn-type st2110, ip-addr from `c=`, mcast-sip-addr from `a=source-filter`, port and
/// payload type from `m=`, the transport from the encoding, and the caps from the format
/// unless `conn` has caps already (which is how a stream whose SDP lacks `exactframerate`,
/// as GStreamer's and FFmpeg's do, is received).
pub fn apply_sdp(conn: &mut ConnSettings, path: &str) -> Result<(), String> {
    let fail = |e: String| format!("sdp-file {path}: {e}");
    let text = std::fs::read_to_string(path).map_err(|e| fail(e.to_string()))?;
    let media = mcm_core::st2110::sdp::parse(&text).map_err(|e| fail(e.to_string()))?;
    let m = media
        .first()
        .ok_or_else(|| fail("no media section (m=)".into()))?;
    let transport = sdp_transport(m).map_err(fail)?;
    let caps = match &conn.caps {
        Some(caps) => caps.clone(),
        None => sdp_caps(m).map_err(fail)?,
    };
    let address = m
        .address
        .clone()
        .ok_or_else(|| fail("no connection address (c=)".into()))?;
    conn.conn_type = "st2110".into();
    conn.ip_addr = Some(address);
    // A sender bound to any address writes loopback as its source; that names no sender
    // another host could filter on.
    let source = m.source.as_deref().filter(|s| {
        s.parse::<std::net::IpAddr>()
            .is_ok_and(|ip| !ip.is_loopback() && !ip.is_unspecified())
    });
    // As with caps, a value set on the element wins over the SDP's.
    if let (Some(source), None) = (source, &conn.mcast_sip_addr) {
        conn.mcast_sip_addr = Some(source.to_string());
    }
    conn.port = m.port.into();
    conn.payload_type = m.payload_type.into();
    conn.transport = transport.into();
    conn.caps = Some(caps);
    Ok(())
}

/// The ST 2110 transport of an SDP media section, by its encoding. PCM must come in 1 ms
/// packets (ST 2110-30 level A), which is what the receive bridge takes.
fn sdp_transport(m: &mcm_core::st2110::sdp::SdpMedia) -> Result<&'static str, String> {
    Ok(match m.encoding.to_ascii_lowercase().as_str() {
        "raw" => "st2110-20",
        "l16" | "l24" => {
            match m.ptime.as_deref().map(str::trim) {
                None => {}
                Some(p) if p.parse::<f64>().is_ok_and(|ms| (ms - 1.0).abs() < 1e-9) => {}
                Some(other) => {
                    return Err(format!(
                        "ptime {other} ms: only 1 ms packets are received (ST 2110-30 level A)"
                    ))
                }
            }
            "st2110-30"
        }
        "smpte291" => "st2110-40",
        "jxsv" | "x-mcm-compressed" => "st2110-22",
        other => {
            return Err(format!(
                "encoding `{other}`: raw, L16, L24, smpte291, jxsv or x-mcm-compressed"
            ))
        }
    })
}

/// The caps of an SDP media section. RFC 4175 raw video becomes the flow format the
/// receive bridge writes for its sampling and depth (v210 for 10-bit 4:2:2, as MXL);
/// L16/L24 big-endian PCM; ST 2110-22 frames by media type.
fn sdp_caps(m: &mcm_core::st2110::sdp::SdpMedia) -> Result<gst::Caps, String> {
    use mcm_core::st2110::rfc4175::Sampling;
    let framerate = || {
        m.frame_rate()
            .and_then(|r| {
                Some(gst::Fraction::new(
                    r.numerator.try_into().ok()?,
                    r.denominator.try_into().ok()?,
                ))
            })
            .ok_or_else(|| {
                format!(
                    "{} stream without exactframerate: set caps on the element",
                    m.encoding
                )
            })
    };
    let encoding = m.encoding.to_ascii_lowercase();
    Ok(match encoding.as_str() {
        "raw" => {
            let g = m.video_geometry().map_err(|e| e.to_string())?;
            let format = match (g.sampling, g.depth) {
                (Sampling::YCbCr422, 10) => gst_video::VideoFormat::V210,
                (Sampling::YCbCr422, 8) => gst_video::VideoFormat::Uyvy,
                (Sampling::YCbCr420, 8) => gst_video::VideoFormat::I420,
                (Sampling::YCbCr420, 10) => gst_video::VideoFormat::P01010le,
                (Sampling::Rgb, 8) => gst_video::VideoFormat::Rgba,
                (s, d) => return Err(format!("{} {d}-bit video is not bridged", s.name())),
            };
            let caps = gst_video::VideoCapsBuilder::new()
                .format(format)
                .width(g.width as i32)
                .height(g.height as i32)
                .framerate(framerate()?);
            if g.interlaced {
                caps.field("interlace-mode", "interleaved").build()
            } else {
                caps.build()
            }
        }
        "l16" | "l24" => {
            let format = if encoding == "l16" {
                gst_audio::AudioFormat::S16be
            } else {
                gst_audio::AudioFormat::S24be
            };
            let channels = m.channels.unwrap_or(1);
            // More than two channels need a channel mask in the caps; the builder gives
            // the default positions for up to 8 and none beyond.
            gst_audio::AudioInfo::builder(format, m.clock_rate, channels)
                .build()
                .and_then(|info| info.to_caps())
                .map_err(|e| {
                    format!(
                        "{} {channels} channels at {} Hz: {e}",
                        m.encoding, m.clock_rate
                    )
                })?
        }
        "smpte291" => gst::Caps::builder(ST2038_CAPS)
            .field("alignment", "frame")
            .field("framerate", framerate()?)
            .build(),
        "jxsv" | "x-mcm-compressed" => {
            let name = match encoding.as_str() {
                "jxsv" => mcm_core::st2110::sdp::JPEG_XS_MEDIA_TYPE,
                _ => m
                    .param("mediatype")
                    .ok_or("x-mcm-compressed stream without mediatype")?,
            };
            let mut caps =
                gst::Caps::builder(media_type_name(name)?).field("framerate", framerate()?);
            for key in ["width", "height"] {
                if let Some(v) = m.param(key).and_then(|v| v.parse::<i32>().ok()) {
                    caps = caps.field(key, v);
                }
            }
            caps.build()
        }
        other => return Err(format!("encoding `{other}` has no caps")),
    })
}

/// `name` if GStreamer takes it as a structure name (a letter, then letters, digits and
/// `/-_.:+`, as `gst_structure_validate_name`), which it must be before it reaches
/// `gst::Caps::builder` (an invalid one is a critical error there, not a `Result`).
pub fn media_type_name(name: &str) -> Result<&str, String> {
    let mut chars = name.chars();
    let valid = chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || "/-_.:+".contains(c));
    if valid {
        Ok(name)
    } else {
        Err(format!("media type `{name}` is not a caps name"))
    }
}

/// How an element reaches its flow.
pub enum Mode {
    /// Read or write `${domain}/${flow_id}.mxl-flow` directly, no proxy.
    Direct { domain: PathBuf, flow_id: Uuid },
    /// Ask the media proxy: MCM client JSON and the connection JSON without its payload.
    Proxy {
        client_json: String,
        connection: serde_json::Value,
    },
}

fn string_prop(
    name: &'static str,
    nick: &'static str,
    blurb: &'static str,
    default: Option<&str>,
) -> glib::ParamSpec {
    glib::ParamSpecString::builder(name)
        .nick(nick)
        .blurb(blurb)
        .default_value(default)
        .mutable_ready()
        .build()
}

/// Ring of a reliable raw video flow that mcmsink creates in direct mode, unless
/// `buffer-queue-capacity` says otherwise. Back-pressure means readers need no history, so
/// the ring only has to let the writer fill grains while readers hold theirs: up to two
/// grains leased ahead to upstream (see mcmsink's `propose_allocation`), and two lent by
/// each reliable mcmsrc (the buffer in flight and a sink's last sample). A ring sized by
/// history instead grows with the grain rate (12 grains, 66 MB, for 1080p60 v210), past
/// what the CPU's cache holds. Small grains (PCM, 1 ms each; compressed frames) keep the
/// history ring: there it is the number of grains, not their bytes, that keeps a writer
/// from waiting on its readers at every grain.
pub const RELIABLE_RING_GRAINS: u32 = 4;

impl ConnSettings {
    /// Ring length for a flow a direct-mode sender creates for `kind`: `buffer-queue-capacity`
    /// if set, [`RELIABLE_RING_GRAINS`] for a reliable sender of raw video, else `None` (the
    /// domain's history).
    pub fn direct_ring(&self, kind: &Kind) -> Option<u32> {
        let video = matches!(kind, Kind::Raw { .. });
        match (self.buffer_queue_capacity_set, self.reliable && video) {
            (true, _) => Some(self.buffer_queue_capacity),
            (false, true) => Some(RELIABLE_RING_GRAINS),
            (false, false) => None,
        }
    }

    pub fn properties() -> Vec<glib::ParamSpec> {
        let d = Self::default();
        vec![
            string_prop("conn-type", "Connection type", "multipoint-group (local group through the proxy), st2110 or rdma", Some("multipoint-group")),
            string_prop("urn", "URN", "Multipoint group shared by a sender and its receivers", None),
            string_prop("ip-addr", "IP address", "ST 2110 destination (sender) or group (receiver) address", None),
            glib::ParamSpecUInt::builder("port").nick("Port").blurb("ST 2110 UDP port").minimum(1).maximum(65535).default_value(d.port).mutable_ready().build(),
            string_prop("mcast-sip-addr", "Multicast source", "Source address for source-specific multicast", None),
            string_prop("transport", "Transport", "st2110-20, st2110-22, st2110-30 or st2110-40", Some("st2110-20")),
            glib::ParamSpecUInt::builder("payload-type").nick("Payload type").blurb("RTP payload type").maximum(127).default_value(d.payload_type).mutable_ready().build(),
            string_prop("transport-pixel-format", "Transport pixel format", "ST 2110-20 wire format, e.g. yuv422p10rfc4175", Some("yuv422p10rfc4175")),
            glib::ParamSpecUInt::builder("max-udp").nick("UDP size limit").blurb("ST 2110-10 UDP size limit a sender keeps to: 1460 (standard) or 8960 (extended: jumbo frames, a 9000-byte MTU on the way; MAXUDP=8960 in the SDP)").minimum(1460).maximum(8960).default_value(d.max_udp).mutable_ready().build(),
            glib::ParamSpecUInt::builder("buffer-queue-capacity").nick("Buffer queue capacity").blurb("Grains in the ring (2..=128). Through the proxy: MCM's bufferQueueCapacity, 16. Direct mode, for a flow mcmsink creates: unset, the domain's history (MXL: 200 ms of grains), or 4 grains for raw video with reliable=true, where back-pressure replaces history and a short ring stays in the CPU's cache. For PCM it counts grains of 1 ms (10 ms at 44.1 kHz): 16 holds 16 ms").minimum(2).maximum(128).default_value(d.buffer_queue_capacity).mutable_ready().build(),
            glib::ParamSpecBoolean::builder("reliable").nick("Reliable").blurb("Back-pressure: the sender waits for slow receivers instead of dropping (file pipelines); not live").default_value(false).mutable_ready().build(),
            string_prop("proxy", "Proxy", "Media proxy as HOST:PORT; default MCM_MEDIA_PROXY_IP/PORT, then the local unix socket", None),
            string_prop("domain", "Domain", "Flow domain directory for direct mode (no proxy), with flow-id", None),
            string_prop("flow-id", "Flow id", "Flow UUID for direct mode, with domain (e.g. a flow written by MXL tools)", None),
            string_prop("rdma-provider", "RDMA provider", "libfabric provider: tcp or verbs", Some("tcp")),
            glib::ParamSpecUInt::builder("max-grain-size").nick("Largest grain").blurb("Largest opaque (e.g. compressed) buffer in bytes; raw video grains are sized by their caps").minimum(1).maximum(mcm_core::format::MAX_OPAQUE_GRAIN_SIZE).default_value(d.max_grain_size).mutable_ready().build(),
            glib::ParamSpecBoxed::builder::<gst::Caps>("caps").nick("Caps").blurb("Stream caps in proxy mode (raw video: format, width, height, framerate); direct mode reads them from the flow").mutable_ready().build(),
            glib::ParamSpecUInt::builder("rdma-num-endpoints").nick("RDMA endpoints").blurb("Endpoints per RDMA connection (1..=8)").minimum(1).maximum(8).default_value(d.rdma_num_endpoints).mutable_ready().build(),
        ]
    }

    /// Sets a property this struct owns; false if `name` is not one of them.
    pub fn set(&mut self, name: &str, value: &glib::Value) -> bool {
        let s = || value.get::<Option<String>>().ok().flatten();
        let u = || value.get::<u32>().unwrap_or_default();
        match name {
            "conn-type" => self.conn_type = s().unwrap_or_else(|| "multipoint-group".into()),
            "urn" => self.urn = s(),
            "ip-addr" => self.ip_addr = s(),
            "port" => self.port = u(),
            "mcast-sip-addr" => self.mcast_sip_addr = s(),
            "transport" => self.transport = s().unwrap_or_else(|| "st2110-20".into()),
            "payload-type" => self.payload_type = u(),
            "max-udp" => self.max_udp = u(),
            "transport-pixel-format" => {
                self.transport_pixel_format = s().unwrap_or_else(|| "yuv422p10rfc4175".into())
            }
            "buffer-queue-capacity" => {
                self.buffer_queue_capacity = u();
                self.buffer_queue_capacity_set = true;
            }
            "reliable" => self.reliable = value.get().unwrap_or_default(),
            "proxy" => self.proxy = s(),
            "domain" => self.domain = s(),
            "flow-id" => self.flow_id = s(),
            "rdma-provider" => self.rdma_provider = s().unwrap_or_else(|| "tcp".into()),
            "rdma-num-endpoints" => self.rdma_num_endpoints = u(),
            "caps" => self.caps = value.get::<Option<gst::Caps>>().ok().flatten(),
            "max-grain-size" => self.max_grain_size = u(),
            _ => return false,
        }
        true
    }

    pub fn get(&self, name: &str) -> Option<glib::Value> {
        Some(match name {
            "conn-type" => self.conn_type.to_value(),
            "urn" => self.urn.to_value(),
            "ip-addr" => self.ip_addr.to_value(),
            "port" => self.port.to_value(),
            "mcast-sip-addr" => self.mcast_sip_addr.to_value(),
            "transport" => self.transport.to_value(),
            "payload-type" => self.payload_type.to_value(),
            "max-udp" => self.max_udp.to_value(),
            "transport-pixel-format" => self.transport_pixel_format.to_value(),
            "buffer-queue-capacity" => self.buffer_queue_capacity.to_value(),
            "reliable" => self.reliable.to_value(),
            "proxy" => self.proxy.to_value(),
            "domain" => self.domain.to_value(),
            "flow-id" => self.flow_id.to_value(),
            "rdma-provider" => self.rdma_provider.to_value(),
            "rdma-num-endpoints" => self.rdma_num_endpoints.to_value(),
            "caps" => self.caps.to_value(),
            "max-grain-size" => self.max_grain_size.to_value(),
            _ => return None,
        })
    }

    /// Checks the settings together; the message says what to change.
    pub fn mode(&self) -> Result<Mode, String> {
        match (&self.domain, &self.flow_id) {
            (Some(domain), Some(id)) => {
                let flow_id = Uuid::parse_str(id)
                    .map_err(|e| format!("flow-id `{id}` is not a UUID: {e}"))?;
                return Ok(Mode::Direct {
                    domain: PathBuf::from(domain),
                    flow_id,
                });
            }
            (Some(_), None) | (None, Some(_)) => {
                return Err("direct mode needs both domain and flow-id".into())
            }
            (None, None) => {}
        }
        let connection = match self.conn_type.as_str() {
            "multipoint-group" => {
                let urn = self
                    .urn
                    .clone()
                    .filter(|u| !u.is_empty())
                    .ok_or("conn-type multipoint-group needs urn (or domain and flow-id)")?;
                json!({ "multipointGroup": { "urn": urn } })
            }
            "st2110" => {
                let ip = self
                    .ip_addr
                    .clone()
                    .ok_or("conn-type st2110 needs ip-addr")?;
                let mut st = json!({
                    "transport": self.transport, "ipAddr": ip, "port": self.port,
                    "payloadType": self.payload_type, "transportPixelFormat": self.transport_pixel_format,
                });
                match UdpSize::from_max_udp(self.max_udp.into()) {
                    Some(UdpSize::Standard) => {}
                    Some(UdpSize::Extended) => st["maxUdp"] = self.max_udp.into(),
                    None => {
                        return Err(format!(
                            "max-udp {}: 1460 (standard) or 8960 (extended UDP size, ST 2110-10)",
                            self.max_udp
                        ))
                    }
                }
                if let Some(s) = &self.mcast_sip_addr {
                    st["multicastSourceIpAddr"] = s.clone().into();
                }
                json!({ "st2110": st })
            }
            "rdma" => json!({ "rdma": {} }),
            other => {
                return Err(format!(
                    "conn-type `{other}`: multipoint-group, st2110 or rdma"
                ))
            }
        };
        let mut client = json!({ "apiVersion": "v1" });
        if let Some(p) = &self.proxy {
            let (host, port) = p
                .rsplit_once(':')
                .ok_or_else(|| format!("proxy `{p}` is not HOST:PORT"))?;
            port.parse::<u16>()
                .map_err(|_| format!("proxy port `{port}` is not 1..=65535"))?;
            client["apiConnectionString"] = format!("Server={host}; Port={port}").into();
        }
        Ok(Mode::Proxy {
            client_json: client.to_string(),
            connection: json!({
                "connection": connection,
                "bufferQueueCapacity": self.buffer_queue_capacity,
                "maxMetadataSize": TIMING_SIZE,
                "reliable": self.reliable,
                "options": { "rdma": { "provider": self.rdma_provider, "num_endpoints": self.rdma_num_endpoints } },
            }),
        })
    }
}

/// The mcm pixel format of a GStreamer one.
pub fn mcm_format(f: gst_video::VideoFormat) -> Option<VideoFormat> {
    VideoFormat::from_name(f.to_str())
}

fn rate_of(info: &gst_video::VideoInfo) -> Result<Rational, String> {
    let fps = info.fps();
    if fps.numer() <= 0 || fps.denom() <= 0 {
        return Err(format!("framerate {fps} is not a fixed positive rate"));
    }
    Ok(Rational::new(fps.numer().into(), fps.denom().into()))
}

/// The flow description of raw video caps.
pub fn flow_def_from_video(
    info: &gst_video::VideoInfo,
    id: Uuid,
    label: &str,
) -> Result<FlowDef, String> {
    let format = mcm_format(info.format())
        .ok_or_else(|| format!("format {} not carried", info.format().to_str()))?;
    FlowDef::video(
        id,
        label,
        format,
        info.width(),
        info.height(),
        rate_of(info)?,
        interlace_of(info)?,
    )
    .map_err(|e| e.to_string())
}

/// Progressive, or interleaved fields (both in one buffer) in either order; MXL flows hold
/// one field per grain.
fn interlace_of(info: &gst_video::VideoInfo) -> Result<InterlaceMode, String> {
    use gst_video::VideoInterlaceMode as M;
    match info.interlace_mode() {
        M::Progressive => Ok(InterlaceMode::Progressive),
        M::Interleaved if info.field_order() == gst_video::VideoFieldOrder::BottomFieldFirst => {
            Ok(InterlaceMode::InterlacedBff)
        }
        M::Interleaved => Ok(InterlaceMode::InterlacedTff),
        other => Err(format!(
            "interlace-mode {other:?} is not carried: use interleaved (both fields in one buffer) or progressive"
        )),
    }
}

/// The MCM connection JSON `payload` of raw video caps.
pub fn sdk_video_payload(info: &gst_video::VideoInfo) -> Result<serde_json::Value, String> {
    let rate = rate_of(info)?;
    let interlace = match interlace_of(info)? {
        InterlaceMode::Progressive => "progressive",
        InterlaceMode::InterlacedTff => "tff",
        InterlaceMode::InterlacedBff => "bff",
    };
    Ok(json!({ "video": {
        "width": info.width(), "height": info.height(),
        "fps": rate.as_f64(), "pixelFormat": info.format().to_str().as_str(),
        "interlace": interlace,
    }}))
}

/// The SDK connection payload (MCM's JSON) of a PCM stream: 48 or 96 kHz, 1 ms packets.
pub fn sdk_audio_payload(kind: &Kind) -> Result<serde_json::Value, String> {
    let Kind::Pcm {
        rate, width, frame, ..
    } = kind
    else {
        return Err("not PCM audio".into());
    };
    if !matches!(rate, 48_000 | 96_000) {
        return Err(format!(
            "{rate} Hz: through the proxy PCM travels at 48000 or 96000 Hz (ST 2110-30)"
        ));
    }
    let format = if *width == 3 {
        "pcm_s24be"
    } else {
        "pcm_s16be"
    };
    Ok(json!({ "audio": {
        "channels": frame / width, "sampleRate": rate, "format": format, "packetTime": "1ms",
    }}))
}

/// The SDK connection payload of `kind`: raw video or PCM audio.
pub fn sdk_payload(kind: &Kind) -> Result<serde_json::Value, String> {
    match kind {
        Kind::Raw { info, .. } => sdk_video_payload(info),
        Kind::Pcm { .. } => sdk_audio_payload(kind),
        Kind::Anc | Kind::Opaque => {
            Err("this payload needs the caps' framerate (sdk_connection)".into())
        }
    }
}

/// The framerate of `caps`, required for payloads whose grains are frames.
fn caps_framerate(caps: &gst::CapsRef, what: &str) -> Result<gst::Fraction, String> {
    caps.structure(0)
        .ok_or("empty caps")?
        .get::<gst::Fraction>("framerate")
        .ok()
        .filter(|f| f.numer() > 0 && f.denom() > 0)
        .ok_or_else(|| format!("{what} need a framerate in their caps"))
}

/// `connection` (the element's connection JSON) completed with the payload of `caps`
/// (`kind`): raw video, PCM, or, for any other caps, mcm's compressed payload (one frame
/// per grain of at most `max_grain` bytes, named by the caps' media type, at the caps'
/// framerate; ST 2110-22 on the network).
pub fn sdk_connection(
    connection: &serde_json::Value,
    kind: &Kind,
    caps: &gst::CapsRef,
    max_grain: u32,
) -> Result<serde_json::Value, String> {
    let mut json = connection.clone();
    json["payload"] = match kind {
        Kind::Anc => {
            let fps = caps_framerate(caps, "ancillary data (ST 2038) through the proxy")?;
            json!({ "ancillary": { "fps": f64::from(fps.numer()) / f64::from(fps.denom()) } })
        }
        Kind::Opaque => {
            let s = caps.structure(0).ok_or("empty caps")?;
            let fps = caps_framerate(caps, "compressed frames through the proxy")?;
            json["maxPayloadSize"] = max_grain.into();
            json!({ "compressed": {
                "mediaType": s.name().as_str(),
                "fps": f64::from(fps.numer()) / f64::from(fps.denom()),
            }})
        }
        _ => sdk_payload(kind)?,
    };
    Ok(json)
}

/// What a stream's caps make of it.
#[derive(Debug, Clone)]
pub enum Kind {
    /// Raw video in one of the flow formats, copied row by row.
    Raw {
        info: gst_video::VideoInfo,
        /// Row bytes and rows of each plane of one grain: a frame, or a field.
        planes: Vec<(usize, usize)>,
        /// Interlaced (GStreamer `interleaved` frames): the fields in time order, one grain
        /// each. `None`: progressive, one frame per grain.
        fields: Option<[Field; 2]>,
    },
    /// Interleaved PCM, big-endian in the flow as on the ST 2110-30 wire: `width` bytes per
    /// sample, `frame` bytes per sample period, `samples_per_grain` periods per grain;
    /// little-endian caps are swapped on the way in and out.
    Pcm {
        rate: u32,
        width: usize,
        frame: usize,
        samples_per_grain: usize,
        little_endian: bool,
    },
    /// SMPTE ST 2038 ancillary data (`meta/x-st-2038`), one buffer per frame: an MXL
    /// `video/smpte291` flow whose grains hold the RFC 8331 payload (ST 2110-40 on the
    /// network), converted on the way in and out.
    Anc,
    /// Anything else, one buffer per grain, caps in the flow description.
    Opaque,
}

impl Kind {
    /// Bytes of one full grain for PCM; `None` for one-buffer-per-grain kinds.
    pub fn pcm_grain_bytes(&self) -> Option<usize> {
        match self {
            Kind::Pcm {
                frame,
                samples_per_grain,
                ..
            } => Some(frame * samples_per_grain),
            _ => None,
        }
    }
}

/// One field of an interlaced frame: the even (top) or odd (bottom) rows of every plane.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    Top,
    Bottom,
}

impl Field {
    fn first_row(self) -> usize {
        match self {
            Field::Top => 0,
            Field::Bottom => 1,
        }
    }
}

/// Reverses the byte order of each `width`-byte sample in place (LE <-> BE PCM).
pub fn swap_samples(data: &mut [u8], width: usize) {
    for s in data.chunks_exact_mut(width) {
        s.reverse();
    }
}

/// PCM caps -> its kind and flow: 1 ms grains where the rate allows, else 10 ms.
fn pcm_from_caps(
    caps: &gst::CapsRef,
    id: Uuid,
    label: &str,
) -> Result<Option<(FlowDef, Kind)>, String> {
    let Ok(info) = gst_audio::AudioInfo::from_caps(caps) else {
        return Ok(None);
    };
    use gst_audio::AudioFormat as F;
    let (format, width, little_endian) = match info.format() {
        F::S16be => (PcmFormat::S16Be, 2, false),
        F::S24be => (PcmFormat::S24Be, 3, false),
        F::S16le => (PcmFormat::S16Be, 2, true),
        F::S24le => (PcmFormat::S24Be, 3, true),
        _ => return Ok(None),
    };
    if info.layout() != gst_audio::AudioLayout::Interleaved {
        return Err("non-interleaved PCM is not carried".into());
    }
    let rate = info.rate();
    let samples_per_grain = match (rate % 1000, rate % 100) {
        (0, _) => rate / 1000,
        (_, 0) => rate / 100,
        _ => return Err(format!("sample rate {rate} is not a multiple of 100 Hz")),
    };
    let def = FlowDef::pcm(id, label, format, rate, info.channels(), samples_per_grain)
        .map_err(|e| e.to_string())?;
    let kind = Kind::Pcm {
        rate,
        width,
        frame: width * info.channels() as usize,
        samples_per_grain: samples_per_grain as usize,
        little_endian,
    };
    Ok(Some((def, kind)))
}

/// The flow description of any caps: raw video as such, the rest as opaque grains of at
/// most `max_grain` bytes carrying their caps string. Every grain has room for its timing.
pub fn flow_def_from_caps(
    caps: &gst::CapsRef,
    id: Uuid,
    label: &str,
    max_grain: u32,
) -> Result<(FlowDef, Kind), String> {
    let s = caps.structure(0).ok_or("empty caps")?;
    let raw = (s.name() == "video/x-raw")
        .then(|| gst_video::VideoInfo::from_caps(caps).ok())
        .flatten();
    let (def, kind) = match raw.filter(|i| mcm_format(i.format()).is_some()) {
        Some(info) => {
            let def = flow_def_from_video(&info, id, label)?;
            let format = mcm_format(info.format()).ok_or("unsupported format")?;
            let (planes, fields) = match interlace_of(&info)? {
                InterlaceMode::Progressive => (format.planes(info.width(), info.height()), None),
                order => {
                    let first = match order {
                        InterlaceMode::InterlacedBff => [Field::Bottom, Field::Top],
                        _ => [Field::Top, Field::Bottom],
                    };
                    if info.height() % 2 != 0 {
                        return Err(format!("interlaced height {} is odd", info.height()));
                    }
                    (format.planes(info.width(), info.height() / 2), Some(first))
                }
            };
            (
                def,
                Kind::Raw {
                    info,
                    planes,
                    fields,
                },
            )
        }
        None if s.name() == ST2038_CAPS => {
            let fps = caps_framerate(caps, "ST 2038 ancillary data (one buffer per frame)")?;
            let rate = Rational::new(fps.numer().into(), fps.denom().into());
            let def = FlowDef::ancillary(id, label, rate).map_err(|e| e.to_string())?;
            let mut json = def.json;
            json[CAPS_KEY] = caps.to_string().into();
            (
                FlowDef::from_json(json).map_err(|e| e.to_string())?,
                Kind::Anc,
            )
        }
        None if s.name() == "audio/x-raw" && pcm_from_caps(caps, id, label)?.is_some() => {
            let (def, kind) = pcm_from_caps(caps, id, label)?.ok_or("PCM caps")?;
            let mut json = def.json;
            json[CAPS_KEY] = caps.to_string().into();
            (FlowDef::from_json(json).map_err(|e| e.to_string())?, kind)
        }
        None => {
            let rate = s
                .get::<gst::Fraction>("framerate")
                .ok()
                .filter(|f| f.numer() > 0 && f.denom() > 0)
                .map_or(Rational::new(1000, 1), |f| {
                    Rational::new(f.numer().into(), f.denom().into())
                });
            let def =
                FlowDef::opaque(id, label, s.name(), rate, max_grain).map_err(|e| e.to_string())?;
            let mut json = def.json;
            json[CAPS_KEY] = caps.to_string().into();
            (
                FlowDef::from_json(json).map_err(|e| e.to_string())?,
                Kind::Opaque,
            )
        }
    };
    Ok((
        def.with_metadata_capacity(TIMING_SIZE)
            .map_err(|e| e.to_string())?,
        kind,
    ))
}

/// Caps of a flow, when mcm knows how to express them.
pub fn caps_from_def(def: &FlowDef) -> Option<gst::Caps> {
    if let Some(caps) = def.json.get(CAPS_KEY).and_then(|v| v.as_str()) {
        return caps.parse().ok();
    }
    match &def.media {
        MediaFormat::Video {
            format,
            width,
            height,
            interlace,
        } => {
            let f = gst_video::VideoFormat::from_string(format.name());
            let fps = gst::Fraction::new(def.rate.numerator as i32, def.rate.denominator as i32);
            let builder = gst_video::VideoCapsBuilder::new()
                .format(f)
                .width(*width as i32)
                .height(*height as i32)
                .framerate(fps);
            Some(match interlace {
                InterlaceMode::Progressive => builder.build(),
                InterlaceMode::InterlacedTff => builder
                    .field("interlace-mode", "interleaved")
                    .field("field-order", "top-field-first")
                    .build(),
                InterlaceMode::InterlacedBff => builder
                    .field("interlace-mode", "interleaved")
                    .field("field-order", "bottom-field-first")
                    .build(),
            })
        }
        MediaFormat::Audio { format, channels } => {
            let f = match format {
                SampleFormat::Float32 => gst_audio::AudioFormat::F32le,
                SampleFormat::Float64 => gst_audio::AudioFormat::F64le,
            };
            let rate = u32::try_from(def.rate.numerator / def.rate.denominator.max(1)).ok()?;
            gst_audio::AudioInfo::builder(f, rate, *channels)
                .build()
                .ok()?
                .to_caps()
                .ok()
        }
        // Big-endian PCM written by another program (an ST 2110-30 receiver, an SDK
        // client): its rate is the grain rate, so samples per second are that times the
        // samples per grain.
        MediaFormat::Pcm {
            format,
            channels,
            samples_per_grain,
        } => {
            let f = match format {
                PcmFormat::S16Be => gst_audio::AudioFormat::S16be,
                PcmFormat::S24Be => gst_audio::AudioFormat::S24be,
            };
            let grains = def.rate.numerator / def.rate.denominator.max(1);
            let rate = u32::try_from(grains * i64::from(*samples_per_grain)).ok()?;
            gst_audio::AudioInfo::builder(f, rate, *channels)
                .build()
                .ok()?
                .to_caps()
                .ok()
        }
        // Ancillary data written by another program (an ST 2110-40 receiver, an SDK
        // client, MXL): ST 2038 packets, a frame's worth per buffer, at the grain rate.
        MediaFormat::Ancillary => {
            let fps = gst::Fraction::new(
                i32::try_from(def.rate.numerator).ok()?,
                i32::try_from(def.rate.denominator).ok()?,
            );
            Some(
                gst::Caps::builder(ST2038_CAPS)
                    .field("alignment", "frame")
                    .field("framerate", fps)
                    .build(),
            )
        }
        // Compressed frames written by another program (an ST 2110-22 receiver, an SDK
        // client): their media type, at the grain rate.
        MediaFormat::Opaque { media_type, .. }
            if media_type.contains('/') && media_type_name(media_type).is_ok() =>
        {
            let fps = gst::Fraction::new(
                i32::try_from(def.rate.numerator).ok()?,
                i32::try_from(def.rate.denominator).ok()?,
            );
            Some(
                gst::Caps::builder(media_type.as_str())
                    .field("framerate", fps)
                    .build(),
            )
        }
        _ => None,
    }
}

/// Live float audio as an MXL continuous flow (one ring of samples per channel, native
/// little-endian words): F32LE as `audio/float32`, F64LE as `audio/float64`, with the caps
/// string kept for `mcmsrc`. `None` for any other caps.
pub fn float_flow_from_caps(
    caps: &gst::CapsRef,
    id: Uuid,
    label: &str,
) -> Result<Option<FlowDef>, String> {
    if caps.structure(0).map(|s| s.name().as_str()) != Some("audio/x-raw") {
        return Ok(None);
    }
    let Ok(info) = gst_audio::AudioInfo::from_caps(caps) else {
        return Ok(None);
    };
    let format = match info.format() {
        gst_audio::AudioFormat::F32le => SampleFormat::Float32,
        gst_audio::AudioFormat::F64le => SampleFormat::Float64,
        _ => return Ok(None),
    };
    if info.layout() != gst_audio::AudioLayout::Interleaved {
        return Err("non-interleaved float audio is not carried".into());
    }
    let def = FlowDef::audio(id, label, format, info.rate(), info.channels())
        .map_err(|e| e.to_string())?;
    let mut json = def.json;
    json[CAPS_KEY] = caps.to_string().into();
    FlowDef::from_json(json)
        .map(Some)
        .map_err(|e| e.to_string())
}

/// Copies one channel of interleaved samples (`frame` bytes per sample period, `width`
/// bytes per word) into the two fragments of its ring.
pub fn deinterleave(src: &[u8], frame: usize, c: usize, width: usize, dst: (&mut [u8], &mut [u8])) {
    let words = dst
        .0
        .chunks_exact_mut(width)
        .chain(dst.1.chunks_exact_mut(width));
    for (d, f) in words.zip(src.chunks_exact(frame)) {
        d.copy_from_slice(&f[c * width..(c + 1) * width]);
    }
}

/// The inverse of [`deinterleave`]: one channel's ring fragments into interleaved samples.
pub fn interleave(src: (&[u8], &[u8]), frame: usize, c: usize, width: usize, dst: &mut [u8]) {
    let words = src.0.chunks_exact(width).chain(src.1.chunks_exact(width));
    for (w, f) in words.zip(dst.chunks_exact_mut(frame)) {
        f[c * width..(c + 1) * width].copy_from_slice(w);
    }
}

/// True when GStreamer's default layout of `info` is exactly the tightly packed grain
/// layout (same plane offsets and strides), so a frame can be written into a grain in place.
pub fn layout_matches(info: &gst_video::VideoInfo, planes: &[(usize, usize)]) -> bool {
    if planes.len() != info.n_planes() as usize {
        return false;
    }
    let mut off = 0;
    for (p, &(row, rows)) in planes.iter().enumerate() {
        if info.offset()[p] != off || info.stride()[p] as usize != row {
            return false;
        }
        off += row * rows;
    }
    off == info.size()
}

/// Copies a mapped frame (or one `field` of it: every other row of each plane) into a
/// tightly packed grain, row by row (GStreamer rows may be padded).
pub fn frame_to_grain(
    frame: &gst_video::VideoFrameRef<&gst::BufferRef>,
    planes: &[(usize, usize)],
    field: Option<Field>,
    grain: &mut [u8],
) -> Result<(), String> {
    let (first, step) = field.map_or((0, 1), |f| (f.first_row(), 2));
    let mut off = 0;
    for (p, &(row, rows)) in planes.iter().enumerate() {
        let stride = frame.plane_stride()[p] as usize;
        let data = frame.plane_data(p as u32).map_err(|e| e.to_string())?;
        for r in 0..rows {
            let at = (first + r * step) * stride;
            let src = data
                .get(at..at + row)
                .ok_or("frame smaller than its caps")?;
            grain
                .get_mut(off..off + row)
                .ok_or("grain smaller than the frame")?
                .copy_from_slice(src);
            off += row;
        }
    }
    Ok(())
}

/// Copies a tightly packed grain into a mapped frame (or into one `field` of it).
pub fn grain_to_frame(
    grain: &[u8],
    planes: &[(usize, usize)],
    field: Option<Field>,
    frame: &mut gst_video::VideoFrameRef<&mut gst::BufferRef>,
) -> Result<(), String> {
    let (first, step) = field.map_or((0, 1), |f| (f.first_row(), 2));
    let mut off = 0;
    for (p, &(row, rows)) in planes.iter().enumerate() {
        let stride = frame.plane_stride()[p] as usize;
        let data = frame.plane_data_mut(p as u32).map_err(|e| e.to_string())?;
        for r in 0..rows {
            let src = grain
                .get(off..off + row)
                .ok_or("grain shorter than its flow says")?;
            let at = (first + r * step) * stride;
            data.get_mut(at..at + row)
                .ok_or("frame smaller than the grain")?
                .copy_from_slice(src);
            off += row;
        }
    }
    Ok(())
}

/// A buffer's timing, carried in the grain's metadata so file-to-file work keeps it exactly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Timing {
    pub pts: Option<gst::ClockTime>,
    pub dts: Option<gst::ClockTime>,
    pub duration: Option<gst::ClockTime>,
    pub flags: u32,
}

const NONE: u64 = u64::MAX;

impl Timing {
    pub fn of(buffer: &gst::BufferRef) -> Self {
        Self {
            pts: buffer.pts(),
            dts: buffer.dts(),
            duration: buffer.duration(),
            flags: buffer.flags().bits(),
        }
    }

    pub fn encode(&self) -> [u8; 28] {
        let mut b = [0u8; 28];
        let t = |c: Option<gst::ClockTime>| c.map_or(NONE, |c| c.nseconds());
        b[0..8].copy_from_slice(&t(self.pts).to_le_bytes());
        b[8..16].copy_from_slice(&t(self.dts).to_le_bytes());
        b[16..24].copy_from_slice(&t(self.duration).to_le_bytes());
        b[24..28].copy_from_slice(&self.flags.to_le_bytes());
        b
    }

    /// Decodes metadata written by `encode`; `None` for anything else (e.g. MXL grains).
    pub fn decode(meta: &[u8]) -> Option<Self> {
        let m = meta.get(..28)?;
        let u = |i: usize| u64::from_le_bytes(m[i..i + 8].try_into().unwrap_or([0; 8]));
        let t = |v: u64| (v != NONE).then(|| gst::ClockTime::from_nseconds(v));
        Some(Self {
            pts: t(u(0)),
            dts: t(u(8)),
            duration: t(u(16)),
            flags: u32::from_le_bytes(m[24..28].try_into().unwrap_or([0; 4])),
        })
    }
}

/// Counters exposed as the `stats` property.
#[derive(Debug, Default, Clone, Copy)]
pub struct Stats {
    pub grains: u64,
    pub bytes: u64,
    pub drops: u64,
    pub copies: u64,
    /// Live zero copy: grains the writer reused while a buffer downstream still had them
    /// mapped (that buffer's bytes may have changed).
    pub overwritten: u64,
    /// Last grain's age at delivery (receiver) or commit (sender), in ns.
    pub latency_ns: u64,
}

impl Stats {
    pub fn structure(&self) -> gst::Structure {
        gst::Structure::builder("application/x-mcm-stats")
            .field("grains", self.grains)
            .field("bytes", self.bytes)
            .field("drops", self.drops)
            .field("copies", self.copies)
            .field("overwritten", self.overwritten)
            .field("latency-ns", self.latency_ns)
            .build()
    }
}

pub fn stats_property() -> glib::ParamSpec {
    glib::ParamSpecBoxed::builder::<gst::Structure>("stats")
        .nick("Statistics")
        .blurb("grains, bytes, drops, copies (frames copied between grain and buffer memory), overwritten (mcmsrc, live zero copy: grains the writer reused while a buffer downstream had them mapped), latency-ns")
        .read_only()
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    fn applied(sdp: &str) -> Result<ConnSettings, String> {
        gst::init().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sdp");
        std::fs::write(&path, sdp).unwrap();
        let mut conn = ConnSettings::default();
        apply_sdp(&mut conn, path.to_str().unwrap()).map(|()| conn)
    }

    const SESSION: &str = "v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=cam\r\nt=0 0\r\n";

    #[test]
    fn sdp_files_configure_the_receiver() {
        let video = format!("{SESSION}m=video 20000 RTP/AVP 98\r\nc=IN IP4 239.1.2.3/64\r\na=rtpmap:98 raw/90000\r\na=fmtp:98 sampling=YCbCr-4:2:0; width=1920; height=1080; exactframerate=30000/1001; depth=10; interlace; TCS=SDR; colorimetry=BT709; PM=2110GPM; SSN=ST2110-20:2017; TP=2110TPW\r\n");
        let c = applied(&video).unwrap();
        assert_eq!(
            (
                c.conn_type.as_str(),
                c.ip_addr.as_deref(),
                c.port,
                c.payload_type,
                c.transport.as_str()
            ),
            ("st2110", Some("239.1.2.3"), 20000, 98, "st2110-20")
        );
        assert_eq!(
            c.caps.unwrap(),
            gst::Caps::from_str("video/x-raw,format=P010_10LE,width=1920,height=1080,framerate=30000/1001,interlace-mode=interleaved").unwrap()
        );
        let audio = format!("{SESSION}c=IN IP4 10.0.0.2\r\nm=audio 30000 RTP/AVP 97\r\na=rtpmap:97 L24/48000/6\r\na=ptime:1\r\n");
        let c = applied(&audio).unwrap();
        assert_eq!(
            (c.ip_addr.as_deref(), c.transport.as_str()),
            (Some("10.0.0.2"), "st2110-30")
        );
        // Six channels need a channel mask, or the caps are not PCM to `mcmsrc`.
        let caps = c.caps.unwrap();
        let info = gst_audio::AudioInfo::from_caps(&caps).unwrap();
        assert_eq!(
            (info.format(), info.rate(), info.channels()),
            (gst_audio::AudioFormat::S24be, 48000, 6)
        );
        let (def, _) = flow_def_from_caps(&caps, Uuid::new_v4(), "sdp", 1 << 20).unwrap();
        assert!(
            matches!(def.media, MediaFormat::Pcm { channels: 6, .. }),
            "{:?}",
            def.media
        );
        let jxs = format!("{SESSION}m=video 40000 RTP/AVP 112\r\nc=IN IP4 239.0.0.9\r\na=rtpmap:112 jxsv/90000\r\na=fmtp:112 packetmode=0; width=3840; height=2160; exactframerate=50\r\n");
        let c = applied(&jxs).unwrap();
        assert_eq!(c.transport, "st2110-22");
        assert_eq!(
            c.caps.unwrap(),
            gst::Caps::from_str("image/x-jxsc,framerate=50/1,width=3840,height=2160").unwrap()
        );
        // Caps already set are kept.
        gst::init().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v.sdp");
        std::fs::write(&path, &video).unwrap();
        let mut conn = ConnSettings {
            caps: Some(gst::Caps::new_any()),
            ..Default::default()
        };
        apply_sdp(&mut conn, path.to_str().unwrap()).unwrap();
        assert_eq!(conn.caps, Some(gst::Caps::new_any()));
        // Caps set by hand receive a stream whose SDP has no frame rate (GStreamer's,
        // FFmpeg's), and a source filter names the multicast sender.
        let ffmpeg = format!("{SESSION}m=video 5004 RTP/AVP 96\r\nc=IN IP4 232.0.0.5\r\na=source-filter: incl IN IP4 232.0.0.5 10.1.1.1\r\na=rtpmap:96 raw/90000\r\na=fmtp:96 sampling=YCbCr-4:2:2;width=320;height=240;depth=8\r\n");
        std::fs::write(&path, &ffmpeg).unwrap();
        let uyvy =
            gst::Caps::from_str("video/x-raw,format=UYVY,width=320,height=240,framerate=25/1")
                .unwrap();
        let mut conn = ConnSettings {
            caps: Some(uyvy.clone()),
            ..Default::default()
        };
        apply_sdp(&mut conn, path.to_str().unwrap()).unwrap();
        assert_eq!(
            (
                conn.transport.as_str(),
                conn.port,
                conn.caps,
                conn.mcast_sip_addr.as_deref()
            ),
            ("st2110-20", 5004, Some(uyvy), Some("10.1.1.1"))
        );
    }

    #[test]
    fn sdp_files_that_cannot_configure_a_receiver_say_why() {
        let raw = |fmtp: &str| {
            format!("{SESSION}m=video 20000 RTP/AVP 96\r\nc=IN IP4 239.1.2.3\r\na=rtpmap:96 raw/90000\r\na=fmtp:96 {fmtp}\r\n")
        };
        for (sdp, why) in [
            // GStreamer's and FFmpeg's RFC 4175 SDPs carry no frame rate.
            (
                raw("sampling=YCbCr-4:2:2; width=1920; height=1080; depth=10"),
                "exactframerate",
            ),
            (
                raw("sampling=YCbCr-4:4:4; width=64; height=64; depth=12; exactframerate=25"),
                "not bridged",
            ),
            (
                raw("width=64; height=64; depth=8; exactframerate=25"),
                "sampling",
            ),
            (
                format!("{SESSION}m=video 20000 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n"),
                "encoding `h264`",
            ),
            (
                format!("{SESSION}m=audio 20000 RTP/AVP 96\r\na=rtpmap:96 L24/48000/2\r\n"),
                "c=",
            ),
            (SESSION.to_string(), "m="),
            (
                format!("{SESSION}m=audio 20000 RTP/AVP 96\r\nc=IN IP4 10.0.0.1\r\na=rtpmap:96 L24/48000/2\r\na=ptime:0.125\r\n"),
                "ptime 0.125",
            ),
            (
                format!("{SESSION}m=video 20000 RTP/AVP 96\r\nc=IN IP4 10.0.0.1\r\na=rtpmap:96 x-mcm-compressed/90000\r\na=fmtp:96 mediatype=video/x-h264,stream-format=avc; exactframerate=25\r\n"),
                "not a caps name",
            ),
            (
                format!("{SESSION}m=video 20000 RTP/AVP 96\r\nc=IN IP4 10.0.0.1\r\na=rtpmap:96 x-mcm-compressed/90000\r\na=fmtp:96 mediatype=1bad; exactframerate=25\r\n"),
                "not a caps name",
            ),
            ("not an sdp".to_string(), "sdp-file"),
        ] {
            let e = applied(&sdp).map(|_| ()).unwrap_err();
            assert!(e.contains(why), "{e} lacks {why}");
        }
        let e = apply_sdp(&mut ConnSettings::default(), "/nonexistent/x.sdp").unwrap_err();
        assert!(e.contains("/nonexistent/x.sdp"), "{e}");
    }
}
