//! MCM's client and connection JSON, parsed and validated as MCM's SDK does
//! (`sdk/src/mesh_client.cc`, `sdk/src/mesh_conn.cc`), and mapped onto mcm flows.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Map, Value};
use uuid::Uuid;

use super::error::{MeshErrorCode, SdkError, SdkResult};
use crate::format::{FlowDef, InterlaceMode, PcmFormat, VideoFormat};
use crate::st2110::rfc4175::UdpSize;
use crate::time::Rational;

/// Default SDK API TCP port of the media proxy.
pub const DEFAULT_SDK_PORT: u16 = 8002;
/// Default unix socket of the media proxy's SDK API.
pub const DEFAULT_UNIX_SOCKET: &str = "/run/mcm/proxy.sock";
/// Longest urn accepted.
pub const MAX_URN_LEN: usize = 255;
/// Longest connection JSON accepted (the proxy enforces the same bound).
pub const MAX_CONFIG_JSON: usize = 16 * 1024;

/// Where the SDK finds its media proxy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProxyEndpoint {
    Tcp { host: String, port: u16 },
    Unix(PathBuf),
}

/// MCM client JSON: `apiVersion`, `apiConnectionString`, `apiDefaultTimeoutMicroseconds`,
/// `maxMediaConnections`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientConfig {
    pub api_version: String,
    pub endpoint: ProxyEndpoint,
    /// Default timeout of blocking buffer calls. JSON gives microseconds; every SDK timeout
    /// is a `Duration` (the C API takes milliseconds, as `mesh_dp.h` says).
    pub default_timeout: Duration,
    pub max_media_connections: u32,
    /// Shared secret sent on TCP: `MCM_AUTH_TOKEN`, else the token file the local proxy
    /// writes beside its unix socket (`<socket>.token`, readable by its own uid only), if
    /// this process may read it.
    pub auth_token: Option<String>,
}

impl ClientConfig {
    /// Parses MCM client JSON (empty or `{}` for all defaults).
    ///
    /// The proxy address comes from `apiConnectionString` ("Server=...; Port=..."), else from
    /// `MCM_MEDIA_PROXY_IP` / `MCM_MEDIA_PROXY_PORT`, else the local unix socket
    /// (`MCM_PROXY_SOCKET`, default `/run/mcm/proxy.sock`).
    pub fn parse(json: &str) -> SdkResult<Self> {
        let inval = |m: String| SdkError::new(MeshErrorCode::ClientConfigInval, m);
        let v: Value = if json.trim().is_empty() {
            Value::Object(Map::new())
        } else {
            serde_json::from_str(json)
                .map_err(|e| inval(format!("client config is not JSON: {e}")))?
        };
        let obj = v
            .as_object()
            .ok_or_else(|| inval("client config is not a JSON object".into()))?;
        let api_version = match obj.get("apiVersion") {
            None => "v1".to_owned(),
            Some(Value::String(s)) if s == "v1" => s.clone(),
            Some(other) => return Err(inval(format!("apiVersion {other} unsupported (v1)"))),
        };
        let (mut server, mut port, mut socket) = (None, None, None::<PathBuf>);
        if let Some(cs) = obj.get("apiConnectionString") {
            let cs = cs
                .as_str()
                .ok_or_else(|| inval("apiConnectionString is not a string".into()))?;
            for part in cs.split(';').map(str::trim).filter(|p| !p.is_empty()) {
                let (k, val) = part.split_once('=').ok_or_else(|| {
                    inval(format!(
                        "apiConnectionString part `{part}` is not key=value"
                    ))
                })?;
                match k.trim() {
                    "Server" => server = Some(val.trim().to_owned()),
                    // mcm extension: the proxy's unix socket.
                    "Socket" => socket = Some(PathBuf::from(val.trim())),
                    "Port" => {
                        port = Some(
                            parse_port(val.trim())
                                .ok_or_else(|| inval(format!("Port `{val}` not in 1..=65535")))?,
                        )
                    }
                    other => {
                        return Err(inval(format!(
                            "apiConnectionString key `{other}` unknown (Server, Port, Socket)"
                        )))
                    }
                }
            }
        }
        let env = |k: &str| std::env::var(k).ok().filter(|s| !s.is_empty());
        if server.is_none() {
            server = env("MCM_MEDIA_PROXY_IP");
        }
        if port.is_none() {
            if let Some(p) = env("MCM_MEDIA_PROXY_PORT") {
                port = Some(parse_port(&p).ok_or_else(|| {
                    inval(format!("MCM_MEDIA_PROXY_PORT `{p}` not in 1..=65535"))
                })?);
            }
        }
        let socket = socket.unwrap_or_else(|| {
            env("MCM_PROXY_SOCKET")
                .map_or_else(|| PathBuf::from(DEFAULT_UNIX_SOCKET), PathBuf::from)
        });
        let endpoint = match (server, port) {
            (None, None) => ProxyEndpoint::Unix(socket.clone()),
            (host, port) => ProxyEndpoint::Tcp {
                host: host.unwrap_or_else(|| "127.0.0.1".into()),
                port: port.unwrap_or(DEFAULT_SDK_PORT),
            },
        };
        let timeout_us = match obj.get("apiDefaultTimeoutMicroseconds") {
            None => 1_000_000,
            Some(v) => v.as_u64().filter(|&t| t <= 3_600_000_000).ok_or_else(|| {
                inval(format!(
                    "apiDefaultTimeoutMicroseconds {v} not in 0..=3600000000"
                ))
            })?,
        };
        let max_conn = match obj.get("maxMediaConnections") {
            None => 32,
            Some(v) => v
                .as_u64()
                .filter(|n| (1..=1024).contains(n))
                .ok_or_else(|| inval(format!("maxMediaConnections {v} not in 1..=1024")))?
                as u32,
        };
        let auth_token = env("MCM_AUTH_TOKEN").or_else(|| {
            let file =
                env("MCM_AUTH_TOKEN_FILE").map_or_else(|| token_path(&socket), PathBuf::from);
            std::fs::read_to_string(file)
                .ok()
                .map(|t| t.trim().to_owned())
                .filter(|t| !t.is_empty())
        });
        Ok(Self {
            api_version,
            endpoint,
            default_timeout: Duration::from_micros(timeout_us),
            max_media_connections: max_conn,
            auth_token,
        })
    }
}

/// Where a proxy serving `socket` keeps its TCP token: `<socket>.token`.
pub fn token_path(socket: &std::path::Path) -> PathBuf {
    let mut p = socket.as_os_str().to_owned();
    p.push(".token");
    PathBuf::from(p)
}

fn parse_port(s: &str) -> Option<u16> {
    s.parse::<u16>().ok().filter(|&p| p != 0)
}

/// `connection.*`: how the connection reaches its peers.
#[derive(Debug, Clone, PartialEq)]
pub enum ConnectionType {
    MultipointGroup {
        urn: String,
    },
    St2110(St2110Config),
    Rdma {
        connection_mode: String,
        max_latency_ns: u64,
    },
}

/// `connection.st2110`.
#[derive(Debug, Clone, PartialEq)]
pub struct St2110Config {
    pub transport: String,
    pub ip_addr: IpAddr,
    pub port: u16,
    pub multicast_source_ip_addr: Option<IpAddr>,
    pub pacing: String,
    pub payload_type: u8,
    pub transport_pixel_format: String,
    /// `maxUdp` (an mcm extension): the UDP size limit of ST 2110-10 a sender keeps to,
    /// 1460 (standard, the default) or 8960 (extended: jumbo frames, `MAXUDP=8960`).
    pub udp_size: UdpSize,
}

/// `payload.*`: what the connection carries.
#[derive(Debug, Clone, PartialEq)]
pub enum Payload {
    Video {
        width: u32,
        height: u32,
        /// Frames per second (not fields).
        fps: f64,
        pixel_format: VideoFormat,
        /// `"interlace": "tff"` or `"bff"` (an mcm extension of MCM's JSON): one grain per
        /// field at twice `fps`; absent or `"progressive"`: frames.
        interlace: InterlaceMode,
    },
    Audio {
        channels: u32,
        sample_rate: u32,
        format: PcmFormat,
        packet_time: String,
        samples_per_packet: u32,
    },
    /// mcm extension: compressed frames (JPEG XS, H.264 access units, JPEG...), one per
    /// grain of at most `maxPayloadSize` bytes, `media_type` naming them (a MIME type or
    /// GStreamer caps name), for ST 2110-22 or a multipoint group.
    Compressed {
        media_type: String,
        fps: f64,
    },
    /// mcm extension: SMPTE ST 291 ancillary data (captions, timecode), one grain per frame
    /// in MXL's `video/smpte291` layout (the RFC 8331 payload), for ST 2110-40.
    Ancillary {
        fps: f64,
    },
    Blob,
}

/// MCM connection JSON, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct ConnectionConfig {
    pub connection: ConnectionType,
    pub payload: Payload,
    /// Grains in the ring (MCM: 2..=128, default 16).
    pub buffer_queue_capacity: u32,
    /// Payload bytes per buffer: computed from the payload, or given (required for blob).
    pub max_payload_size: u32,
    pub max_metadata_size: u32,
    pub conn_delay: Duration,
    /// `options.rdma.provider` (`tcp`, `verbs`) and `num_endpoints` (1..=8).
    pub rdma_provider: String,
    pub rdma_num_endpoints: u32,
    /// mcm extension: back-pressure, for file pipelines that must lose nothing.
    pub reliable: bool,
    /// The JSON as given, for the proxy.
    pub json: String,
}

fn obj<'a>(v: &'a Value, what: &str) -> SdkResult<&'a Map<String, Value>> {
    v.as_object()
        .ok_or_else(|| SdkError::conn_inval(format!("{what} is not a JSON object")))
}

fn uint(
    o: &Map<String, Value>,
    key: &str,
    default: u64,
    range: std::ops::RangeInclusive<u64>,
) -> SdkResult<u64> {
    match o.get(key) {
        None => Ok(default),
        Some(v) => v.as_u64().filter(|n| range.contains(n)).ok_or_else(|| {
            SdkError::conn_inval(format!(
                "{key} {v} not in {}..={}",
                range.start(),
                range.end()
            ))
        }),
    }
}

fn string<'a>(o: &'a Map<String, Value>, key: &str, default: &'a str) -> SdkResult<&'a str> {
    match o.get(key) {
        None => Ok(default),
        Some(Value::String(s)) => Ok(s),
        Some(v) => Err(SdkError::conn_inval(format!("{key} {v} is not a string"))),
    }
}

fn one_of(o: &Map<String, Value>, key: &str, default: &str, allowed: &[&str]) -> SdkResult<String> {
    let v = string(o, key, default)?;
    if allowed.contains(&v) {
        Ok(v.to_owned())
    } else {
        Err(SdkError::conn_inval(format!(
            "{key} `{v}` (one of {})",
            allowed.join(", ")
        )))
    }
}

/// Samples per packet for MCM's packet times (`mesh_conn.cc`): at 48 kHz 1ms=48, 125us=6,
/// 250us=12, 333us=16, 4ms=192, 80us=4; doubled at 96 kHz; 44.1 kHz has 1.09ms, 0.14ms, 0.09ms.
fn samples_per_packet(rate: u32, ptime: &str) -> Option<u32> {
    let at48 = match ptime {
        "1ms" => 48,
        "125us" => 6,
        "250us" => 12,
        "333us" => 16,
        "4ms" => 192,
        "80us" => 4,
        _ => 0,
    };
    match (rate, ptime) {
        (48000, _) if at48 > 0 => Some(at48),
        (96000, _) if at48 > 0 => Some(at48 * 2),
        (44100, "1.09ms") => Some(48),
        (44100, "0.14ms") => Some(6),
        (44100, "0.09ms") => Some(4),
        _ => None,
    }
}

fn video_format(name: &str) -> Option<VideoFormat> {
    Some(match name {
        "yuv422p10le" => VideoFormat::I422_10le,
        "v210" => VideoFormat::V210,
        "yuv422p10rfc4175" => VideoFormat::Uyvp,
        "uyvy422" => VideoFormat::Uyvy,
        "yuyv422" => VideoFormat::Yuy2,
        "yuv420p" => VideoFormat::I420,
        "nv12" => VideoFormat::Nv12,
        "p010le" => VideoFormat::P010_10le,
        "rgba" => VideoFormat::Rgba,
        "bgra" => VideoFormat::Bgra,
        other => return VideoFormat::from_name(other),
    })
}

impl ConnectionConfig {
    /// Parses and validates MCM connection JSON.
    pub fn parse(json: &str) -> SdkResult<Self> {
        if json.len() > MAX_CONFIG_JSON {
            return Err(SdkError::conn_inval(format!(
                "connection config of {} bytes (at most {MAX_CONFIG_JSON})",
                json.len()
            )));
        }
        let root: Value = serde_json::from_str(json)
            .map_err(|e| SdkError::conn_inval(format!("connection config is not JSON: {e}")))?;
        let root_obj = obj(&root, "connection config")?;
        for key in root_obj.keys() {
            if !matches!(
                key.as_str(),
                "connection"
                    | "payload"
                    | "options"
                    | "bufferQueueCapacity"
                    | "maxPayloadSize"
                    | "maxMetadataSize"
                    | "connCreationDelayMilliseconds"
                    | "reliable"
                    | "name"
            ) {
                return Err(SdkError::conn_inval(format!("unknown key `{key}`")));
            }
        }
        let conn = obj(
            root_obj
                .get("connection")
                .ok_or_else(|| SdkError::conn_inval("missing `connection`"))?,
            "connection",
        )?;
        if conn.len() != 1 {
            return Err(SdkError::conn_inval(
                "`connection` must hold exactly one of multipointGroup, st2110, rdma",
            ));
        }
        let (kind, body) = conn
            .iter()
            .next()
            .ok_or_else(|| SdkError::conn_inval("empty `connection`"))?;
        let body = obj(body, kind)?;
        let connection = match kind.as_str() {
            "multipointGroup" => {
                let urn = string(body, "urn", "")?;
                if urn.is_empty() || urn.len() > MAX_URN_LEN || urn.chars().any(char::is_control) {
                    return Err(SdkError::conn_inval(format!(
                        "urn must be 1..={MAX_URN_LEN} printable characters"
                    )));
                }
                ConnectionType::MultipointGroup {
                    urn: urn.to_owned(),
                }
            }
            "st2110" => {
                let transport = string(body, "transport", "st2110-20")?;
                if !matches!(
                    transport,
                    "st2110-20" | "st2110-22" | "st2110-30" | "st2110-40"
                ) {
                    return Err(SdkError::conn_inval(format!(
                        "transport `{transport}` (st2110-20, -22, -30, -40)"
                    )));
                }
                let ip = |k: &str| -> SdkResult<Option<IpAddr>> {
                    match string(body, k, "")? {
                        "" => Ok(None),
                        s => s.parse().map(Some).map_err(|_| {
                            SdkError::conn_inval(format!("{k} `{s}` is not an IP address"))
                        }),
                    }
                };
                St2110Config {
                    transport: transport.to_owned(),
                    ip_addr: ip("ipAddr")?
                        .ok_or_else(|| SdkError::conn_inval("st2110 needs ipAddr"))?,
                    port: uint(body, "port", 0, 1..=65535).and_then(|p| {
                        if p == 0 {
                            Err(SdkError::conn_inval("st2110 needs port"))
                        } else {
                            Ok(p as u16)
                        }
                    })?,
                    multicast_source_ip_addr: ip("multicastSourceIpAddr")?,
                    // ST 2110-21 sender types.
                    pacing: one_of(body, "pacing", "narrow", &["narrow", "wide", "linear"])?,
                    payload_type: uint(body, "payloadType", 112, 0..=127)? as u8,
                    transport_pixel_format: one_of(
                        body,
                        "transportPixelFormat",
                        "yuv422p10rfc4175",
                        &["yuv422p10rfc4175", "yuv422p8rfc4175", "yuv422p12rfc4175"],
                    )?,
                    udp_size: {
                        let m = uint(body, "maxUdp", 1460, 0..=u64::from(u32::MAX))?;
                        UdpSize::from_max_udp(m).ok_or_else(|| {
                            SdkError::conn_inval(format!(
                                "maxUdp {m}: 1460 (standard) or 8960 (extended UDP size, ST 2110-10)"
                            ))
                        })?
                    },
                }
                .into()
            }
            "rdma" => ConnectionType::Rdma {
                connection_mode: one_of(body, "connectionMode", "RC", &["RC", "RD", "UD"])?,
                max_latency_ns: uint(body, "maxLatencyNanoseconds", 0, 0..=u64::from(u32::MAX))?,
            },
            other => {
                return Err(SdkError::conn_inval(format!(
                    "unknown connection type `{other}`"
                )))
            }
        };

        let (provider, endpoints) = match root_obj.get("options") {
            None => ("tcp".to_owned(), 1),
            Some(o) => match obj(o, "options")?.get("rdma") {
                None => ("tcp".to_owned(), 1),
                Some(r) => {
                    let r = obj(r, "options.rdma")?;
                    let provider = string(r, "provider", "tcp")?;
                    if !matches!(provider, "tcp" | "verbs") {
                        return Err(SdkError::conn_inval(format!(
                            "rdma provider `{provider}` (tcp, verbs)"
                        )));
                    }
                    let key = if r.contains_key("num_endpoints") {
                        "num_endpoints"
                    } else {
                        "numEndpoints"
                    };
                    (provider.to_owned(), uint(r, key, 1, 1..=8)? as u32)
                }
            },
        };

        let payload = match root_obj.get("payload") {
            None => Payload::Blob,
            Some(p) => {
                let p = obj(p, "payload")?;
                if p.len() != 1 {
                    return Err(SdkError::conn_inval(
                        "`payload` must hold exactly one of video, audio, compressed, ancillary, blob",
                    ));
                }
                let (kind, body) = p
                    .iter()
                    .next()
                    .ok_or_else(|| SdkError::conn_inval("empty `payload`"))?;
                let body = obj(body, kind)?;
                match kind.as_str() {
                    "video" => {
                        let width =
                            uint(body, "width", 640, 1..=u64::from(crate::format::MAX_WIDTH))?
                                as u32;
                        let height = uint(
                            body,
                            "height",
                            640,
                            1..=u64::from(crate::format::MAX_HEIGHT),
                        )? as u32;
                        let fps = match body.get("fps") {
                            None => 60.0,
                            Some(v) => v.as_f64().filter(|f| *f > 0.0 && *f <= 1000.0).ok_or_else(
                                || SdkError::conn_inval(format!("fps {v} not in (0, 1000]")),
                            )?,
                        };
                        let name = string(body, "pixelFormat", "yuv422p10le")?;
                        let pixel_format = video_format(name).ok_or_else(|| {
                            SdkError::conn_inval(format!("pixelFormat `{name}` unsupported"))
                        })?;
                        let interlace = match string(body, "interlace", "progressive")? {
                            "progressive" => InterlaceMode::Progressive,
                            "tff" => InterlaceMode::InterlacedTff,
                            "bff" => InterlaceMode::InterlacedBff,
                            other => {
                                return Err(SdkError::conn_inval(format!(
                                    "interlace `{other}`: progressive, tff or bff"
                                )))
                            }
                        };
                        Payload::Video {
                            width,
                            height,
                            fps,
                            pixel_format,
                            interlace,
                        }
                    }
                    "audio" => {
                        let channels = uint(body, "channels", 2, 1..=64)? as u32;
                        let sample_rate = uint(body, "sampleRate", 48000, 1..=384_000)? as u32;
                        if !matches!(sample_rate, 48000 | 96000 | 44100) {
                            return Err(SdkError::conn_inval(format!(
                                "sampleRate {sample_rate} (48000, 96000, 44100)"
                            )));
                        }
                        let format = match string(body, "format", "pcm_s24be")? {
                            "pcm_s24be" => PcmFormat::S24Be,
                            "pcm_s16be" => PcmFormat::S16Be,
                            "pcm_s8" => {
                                return Err(SdkError::new(
                                    MeshErrorCode::NotImplemented,
                                    "audio format pcm_s8 is not supported",
                                ))
                            }
                            other => {
                                return Err(SdkError::conn_inval(format!(
                                    "audio format `{other}` (pcm_s24be, pcm_s16be)"
                                )))
                            }
                        };
                        let packet_time = string(body, "packetTime", "1ms")?.to_owned();
                        let samples_per_packet = samples_per_packet(sample_rate, &packet_time).ok_or_else(|| {
                            SdkError::new(MeshErrorCode::ConnConfigIncompat, format!("packetTime {packet_time} does not fit sampleRate {sample_rate}"))
                        })?;
                        Payload::Audio {
                            channels,
                            sample_rate,
                            format,
                            packet_time,
                            samples_per_packet,
                        }
                    }
                    "compressed" => Payload::Compressed {
                        media_type: string(body, "mediaType", "")?.to_owned(),
                        fps: match body.get("fps") {
                            None => {
                                return Err(SdkError::conn_inval("compressed payloads need fps"))
                            }
                            Some(v) => v.as_f64().filter(|f| *f > 0.0 && *f <= 1000.0).ok_or_else(
                                || SdkError::conn_inval(format!("fps {v} not in (0, 1000]")),
                            )?,
                        },
                    },
                    "ancillary" => Payload::Ancillary {
                        fps: match body.get("fps") {
                            None => 60.0,
                            Some(v) => v.as_f64().filter(|f| *f > 0.0 && *f <= 1000.0).ok_or_else(
                                || SdkError::conn_inval(format!("fps {v} not in (0, 1000]")),
                            )?,
                        },
                    },
                    "blob" => Payload::Blob,
                    other => {
                        return Err(SdkError::conn_inval(format!(
                            "unknown payload type `{other}`"
                        )))
                    }
                }
            }
        };
        if payload == Payload::Blob && !matches!(connection, ConnectionType::MultipointGroup { .. })
        {
            return Err(SdkError::new(
                MeshErrorCode::ConnConfigIncompat,
                "blob payloads need a multipointGroup connection",
            ));
        }
        let buffer_queue_capacity = uint(root_obj, "bufferQueueCapacity", 16, 2..=128)? as u32;
        let max_payload = uint(
            root_obj,
            "maxPayloadSize",
            0,
            0..=u64::from(crate::format::MAX_OPAQUE_GRAIN_SIZE),
        )? as u32;
        let max_metadata_size = uint(
            root_obj,
            "maxMetadataSize",
            0,
            0..=u64::from(crate::format::MAX_METADATA_SIZE),
        )? as u32;
        let conn_delay = Duration::from_millis(uint(
            root_obj,
            "connCreationDelayMilliseconds",
            0,
            0..=10_000,
        )?);
        let reliable = match root_obj.get("reliable") {
            None => false,
            Some(v) => v
                .as_bool()
                .ok_or_else(|| SdkError::conn_inval(format!("reliable {v} is not a boolean")))?,
        };
        let mut config = Self {
            connection,
            payload,
            buffer_queue_capacity,
            max_payload_size: max_payload,
            max_metadata_size,
            conn_delay,
            rdma_provider: provider,
            rdma_num_endpoints: endpoints,
            reliable,
            json: json.to_owned(),
        };
        let computed = match &config.payload {
            Payload::Blob | Payload::Compressed { .. } if max_payload == 0 => {
                return Err(SdkError::conn_inval(
                    "blob and compressed payloads need maxPayloadSize",
                ));
            }
            Payload::Blob | Payload::Compressed { .. } => max_payload,
            _ => {
                config
                    .flow_def(Uuid::nil())
                    .map_err(|e| SdkError::conn_inval(e.to_string()))?
                    .grain_geometry()
                    .map_err(|e| SdkError::conn_inval(e.to_string()))?
                    .grain_size
            }
        };
        if max_payload != 0 && max_payload < computed {
            return Err(SdkError::new(MeshErrorCode::ConnConfigIncompat, format!("maxPayloadSize {max_payload} is smaller than one buffer of the payload ({computed})")));
        }
        config.max_payload_size = computed;
        Ok(config)
    }

    /// The multipoint group this connection joins (`ip:port` for ST 2110, as MCM names it).
    pub fn group(&self) -> String {
        match &self.connection {
            ConnectionType::MultipointGroup { urn } => urn.clone(),
            ConnectionType::St2110(s) => format!("{}:{}", s.ip_addr, s.port),
            ConnectionType::Rdma { .. } => "rdma".into(),
        }
    }

    /// The flow id of a group on every host: a UUID v5 of the group name, so a restarted
    /// sender and its receivers meet on the same flow without asking anyone.
    pub fn flow_id(&self) -> Uuid {
        group_flow_id(&self.group())
    }

    /// The grain rate: frames per second as a rational (29.97 -> 30000/1001; ancillary
    /// data too), packets per second for audio, and a nominal 1000/s for blobs (the index
    /// is then a sequence number).
    pub fn grain_rate(&self) -> Rational {
        match &self.payload {
            Payload::Video { fps, .. }
            | Payload::Compressed { fps, .. }
            | Payload::Ancillary { fps } => fps_to_rational(*fps),
            Payload::Audio {
                sample_rate,
                samples_per_packet,
                ..
            } => Rational::new(i64::from(*sample_rate), i64::from(*samples_per_packet)).reduced(),
            Payload::Blob => Rational::new(1000, 1),
        }
    }

    /// The flow description this connection's grains use.
    pub fn flow_def(&self, id: Uuid) -> Result<FlowDef, crate::format::FlowDefError> {
        let label = format!("mcm {}", self.group());
        let def = match &self.payload {
            Payload::Video {
                width,
                height,
                pixel_format,
                interlace,
                ..
            } => FlowDef::video(
                id,
                &label,
                *pixel_format,
                *width,
                *height,
                self.grain_rate(),
                *interlace,
            )?,
            Payload::Audio {
                channels,
                sample_rate,
                format,
                samples_per_packet,
                ..
            } => FlowDef::pcm(
                id,
                &label,
                *format,
                *sample_rate,
                *channels,
                *samples_per_packet,
            )?,
            Payload::Ancillary { .. } => FlowDef::ancillary(id, &label, self.grain_rate())?,
            Payload::Compressed { media_type, .. } => FlowDef::opaque(
                id,
                &label,
                media_type,
                self.grain_rate(),
                self.max_payload_size.max(1),
            )?,
            Payload::Blob => FlowDef::opaque(
                id,
                &label,
                "application/octet-stream",
                self.grain_rate(),
                self.max_payload_size.max(1),
            )?,
        };
        if self.max_metadata_size > 0 {
            def.with_metadata_capacity(self.max_metadata_size)
        } else {
            Ok(def)
        }
    }
}

impl From<St2110Config> for ConnectionType {
    fn from(c: St2110Config) -> Self {
        Self::St2110(c)
    }
}

/// Frames per second as a rational: the NTSC family maps to n*1000/1001.
pub fn fps_to_rational(fps: f64) -> Rational {
    for base in [24, 30, 48, 60, 120] {
        if (fps - f64::from(base) * 1000.0 / 1001.0).abs() < 0.005 {
            return Rational::new(i64::from(base) * 1000, 1001);
        }
    }
    if (fps - fps.round()).abs() < 1e-9 {
        return Rational::new(fps.round() as i64, 1);
    }
    Rational::new((fps * 1000.0).round() as i64, 1000).reduced()
}

/// The flow id of multipoint group `group` on every host: UUID v5 (URL namespace) of
/// `urn:x-mcm:group:<group>`.
pub fn group_flow_id(group: &str) -> Uuid {
    Uuid::new_v5(
        &Uuid::NAMESPACE_URL,
        format!("urn:x-mcm:group:{group}").as_bytes(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_config_parses_mcm_json() {
        let c = ClientConfig::parse(r#"{"apiVersion":"v1","apiConnectionString":"Server=10.0.0.5; Port=8003","apiDefaultTimeoutMicroseconds":250000,"maxMediaConnections":4}"#).unwrap();
        assert_eq!(
            c.endpoint,
            ProxyEndpoint::Tcp {
                host: "10.0.0.5".into(),
                port: 8003
            }
        );
        assert_eq!(c.default_timeout, Duration::from_millis(250));
        assert_eq!(c.max_media_connections, 4);
        for bad in [
            r#"{"apiVersion":"v9"}"#,
            r#"{"apiConnectionString":"Server"}"#,
            r#"{"apiConnectionString":"Port=0"}"#,
            r#"{"maxMediaConnections":0}"#,
            "[",
            r#"{"apiDefaultTimeoutMicroseconds":-1}"#,
        ] {
            assert_eq!(
                ClientConfig::parse(bad).unwrap_err().code,
                MeshErrorCode::ClientConfigInval,
                "{bad}"
            );
        }
    }

    #[test]
    fn connection_config_video_audio_blob() {
        let v = ConnectionConfig::parse(r#"{"connection":{"multipointGroup":{"urn":"ipv4:224.0.0.1:9003"}},"payload":{"video":{"width":1920,"height":1080,"fps":59.94,"pixelFormat":"yuv422p10le"}}}"#).unwrap();
        assert_eq!(v.max_payload_size, 1920 * 1080 * 4);
        assert_eq!(v.grain_rate(), Rational::new(60000, 1001));
        assert_eq!(v.buffer_queue_capacity, 16);
        let a = ConnectionConfig::parse(r#"{"connection":{"multipointGroup":{"urn":"a"}},"payload":{"audio":{"channels":2,"sampleRate":96000,"format":"pcm_s16be","packetTime":"125us"}}}"#).unwrap();
        assert_eq!(a.max_payload_size, 12 * 2 * 2);
        assert_eq!(a.grain_rate(), Rational::new(8000, 1));
        let anc = ConnectionConfig::parse(r#"{"connection":{"st2110":{"transport":"st2110-40","ipAddr":"239.1.1.1","port":9004}},"payload":{"ancillary":{"fps":29.97}}}"#).unwrap();
        assert_eq!(anc.grain_rate(), Rational::new(30000, 1001));
        let jumbo = |json: &str| match ConnectionConfig::parse(json).unwrap().connection {
            ConnectionType::St2110(st) => st.udp_size,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            jumbo(
                r#"{"connection":{"st2110":{"ipAddr":"239.1.1.1","port":9000}},"payload":{"video":{}}}"#
            ),
            UdpSize::Standard
        );
        assert_eq!(
            jumbo(
                r#"{"connection":{"st2110":{"ipAddr":"239.1.1.1","port":9000,"maxUdp":8960}},"payload":{"video":{}}}"#
            ),
            UdpSize::Extended
        );
        assert_eq!(anc.max_payload_size, crate::format::DATA_GRAIN_SIZE);
        assert_eq!(
            anc.flow_def(Uuid::nil()).unwrap().media,
            crate::format::MediaFormat::Ancillary
        );
        let jpeg = ConnectionConfig::parse(r#"{"connection":{"st2110":{"transport":"st2110-22","ipAddr":"10.0.0.2","port":9006}},"payload":{"compressed":{"mediaType":"image/jpeg","fps":25}},"maxPayloadSize":1048576}"#).unwrap();
        assert_eq!(jpeg.grain_rate(), Rational::new(25, 1));
        assert_eq!(jpeg.max_payload_size, 1 << 20);
        assert!(matches!(
            jpeg.flow_def(Uuid::nil()).unwrap().media,
            crate::format::MediaFormat::Opaque {
                max_grain_size: 1048576,
                ..
            }
        ));
        assert!(ConnectionConfig::parse(r#"{"connection":{"multipointGroup":{"urn":"j"}},"payload":{"compressed":{"mediaType":"image/jpeg","fps":25}}}"#).is_err());
        let b = ConnectionConfig::parse(r#"{"connection":{"multipointGroup":{"urn":"b"}},"payload":{"blob":{}},"maxPayloadSize":2097152,"maxMetadataSize":8192,"options":{"rdma":{"provider":"verbs","numEndpoints":4}}}"#).unwrap();
        assert_eq!(
            (
                b.max_payload_size,
                b.max_metadata_size,
                b.rdma_num_endpoints
            ),
            (2097152, 8192, 4)
        );
        assert_eq!(b.flow_def(Uuid::nil()).unwrap().metadata_capacity(), 8192);
        assert_eq!(
            b.flow_id(),
            ConnectionConfig::parse(&b.json).unwrap().flow_id()
        );
    }

    #[test]
    fn every_wrong_field_is_rejected_with_mcm_meaning() {
        use MeshErrorCode::*;
        let base = r#"{"connection":{"multipointGroup":{"urn":"x"}},"payload":{"video":{"width":1920,"height":1080,"fps":25,"pixelFormat":"v210"}}}"#;
        let cases: &[(&str, MeshErrorCode)] = &[
            ("not json", ConnConfigInval),
            (r#"{"payload":{"blob":{}}}"#, ConnConfigInval),
            (
                r#"{"connection":{},"payload":{"blob":{}}}"#,
                ConnConfigInval,
            ),
            (
                r#"{"connection":{"multipointGroup":{"urn":""}}}"#,
                ConnConfigInval,
            ),
            (
                &format!(
                    r#"{{"connection":{{"multipointGroup":{{"urn":"{}"}}}},"payload":{{"blob":{{}}}},"maxPayloadSize":8}}"#,
                    "u".repeat(300)
                ),
                ConnConfigInval,
            ),
            (
                r#"{"connection":{"multipointGroup":{"urn":"x"},"rdma":{}}}"#,
                ConnConfigInval,
            ),
            (
                r#"{"connection":{"multipointGroup":{"urn":"x"}},"payload":{"blob":{}}}"#,
                ConnConfigInval,
            ),
            (
                r#"{"connection":{"st2110":{"ipAddr":"239.1.1.1","port":9000}},"payload":{"blob":{}},"maxPayloadSize":8}"#,
                ConnConfigIncompat,
            ),
            (
                r#"{"connection":{"st2110":{"ipAddr":"nope","port":9000}},"payload":{"video":{}}}"#,
                ConnConfigInval,
            ),
            (
                r#"{"connection":{"st2110":{"ipAddr":"239.1.1.1","port":-1}},"payload":{"video":{}}}"#,
                ConnConfigInval,
            ),
            (
                r#"{"connection":{"st2110":{"ipAddr":"239.1.1.1","port":9000,"payloadType":300}},"payload":{"video":{}}}"#,
                ConnConfigInval,
            ),
            (
                r#"{"connection":{"st2110":{"ipAddr":"239.1.1.1","port":9000,"maxUdp":9000}},"payload":{"video":{}}}"#,
                ConnConfigInval,
            ),
            (
                r#"{"connection":{"st2110":{"ipAddr":"239.1.1.1","port":9000,"transport":"st2110-99"}},"payload":{"video":{}}}"#,
                ConnConfigInval,
            ),
            (
                r#"{"connection":{"multipointGroup":{"urn":"x"}},"payload":{"video":{"width":0,"height":1080}}}"#,
                ConnConfigInval,
            ),
            (
                r#"{"connection":{"multipointGroup":{"urn":"x"}},"payload":{"video":{"width":100000,"height":100000}}}"#,
                ConnConfigInval,
            ),
            (
                r#"{"connection":{"multipointGroup":{"urn":"x"}},"payload":{"video":{"fps":0}}}"#,
                ConnConfigInval,
            ),
            (
                r#"{"connection":{"multipointGroup":{"urn":"x"}},"payload":{"video":{"pixelFormat":"rgb48"}}}"#,
                ConnConfigInval,
            ),
            (
                r#"{"connection":{"multipointGroup":{"urn":"x"}},"payload":{"audio":{"sampleRate":44100,"packetTime":"1ms"}}}"#,
                ConnConfigIncompat,
            ),
            (
                r#"{"connection":{"multipointGroup":{"urn":"x"}},"payload":{"audio":{"format":"pcm_s8"}}}"#,
                NotImplemented,
            ),
            (
                r#"{"connection":{"multipointGroup":{"urn":"x"}},"payload":{"audio":{"channels":0}}}"#,
                ConnConfigInval,
            ),
            (
                r#"{"connection":{"multipointGroup":{"urn":"x"}},"payload":{"video":{},"audio":{}}}"#,
                ConnConfigInval,
            ),
            (
                r#"{"connection":{"multipointGroup":{"urn":"x"}},"payload":{"video":{}},"bufferQueueCapacity":1}"#,
                ConnConfigInval,
            ),
            (
                r#"{"connection":{"multipointGroup":{"urn":"x"}},"payload":{"video":{}},"maxPayloadSize":16}"#,
                ConnConfigIncompat,
            ),
            (
                r#"{"connection":{"multipointGroup":{"urn":"x"}},"payload":{"video":{}},"options":{"rdma":{"num_endpoints":9}}}"#,
                ConnConfigInval,
            ),
            (
                r#"{"connection":{"multipointGroup":{"urn":"x"}},"payload":{"video":{}},"options":{"rdma":{"provider":"udp"}}}"#,
                ConnConfigInval,
            ),
            (
                r#"{"connection":{"multipointGroup":{"urn":"x"}},"payload":{"video":{}},"bogus":1}"#,
                ConnConfigInval,
            ),
            (
                r#"{"connection":{"multipointGroup":{"urn":"x"}},"payload":{"video":{}},"reliable":"yes"}"#,
                ConnConfigInval,
            ),
        ];
        ConnectionConfig::parse(base).unwrap();
        for (json, code) in cases {
            let e = ConnectionConfig::parse(json).unwrap_err();
            assert_eq!(e.code, *code, "{json}: {e}");
        }
    }

    #[test]
    fn fps_rationals() {
        assert_eq!(fps_to_rational(29.97), Rational::new(30000, 1001));
        assert_eq!(fps_to_rational(25.0), Rational::new(25, 1));
        assert_eq!(fps_to_rational(12.5), Rational::new(25, 2));
    }
}
