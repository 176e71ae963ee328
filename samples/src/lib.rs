//! Shared by the `mcm-sender` and `mcm-receiver` samples: command-line options that become
//! MCM client and connection JSON, and the payload pattern both sides agree on.

use clap::Args;
use serde_json::json;

/// Where the proxy is and what the connection carries.
#[derive(Args, Debug, Clone)]
pub struct Common {
    /// Media proxy as HOST:PORT (TCP); default: MCM_MEDIA_PROXY_IP/PORT, else the unix socket.
    #[arg(long)]
    pub proxy: Option<String>,
    /// Multipoint group urn shared by the sender and its receivers.
    #[arg(long)]
    pub urn: String,
    /// Raw video WIDTHxHEIGHT (omit for blob mode).
    #[arg(long, value_parser = parse_size)]
    pub video: Option<(u32, u32)>,
    /// Video frame rate.
    #[arg(long, default_value_t = 25.0)]
    pub fps: f64,
    /// Video pixel format (MCM names: yuv422p10le, v210, yuv422p10rfc4175; also uyvy422, yuv420p, ...).
    #[arg(long, default_value = "v210")]
    pub pixel_format: String,
    /// Blob mode: largest message in bytes.
    #[arg(long, default_value_t = 65536)]
    pub blob_size: u32,
    /// Grains in the ring (bufferQueueCapacity).
    #[arg(long, default_value_t = 16)]
    pub queue: u32,
    /// Back-pressure: the sender waits for slow receivers instead of dropping.
    #[arg(long)]
    pub reliable: bool,
    /// Default timeout of blocking calls, in milliseconds.
    #[arg(long, default_value_t = 1000)]
    pub timeout_ms: u64,
}

/// Bytes of metadata each grain carries: `seq=<n>`.
pub const METADATA_SIZE: u32 = 32;

fn parse_size(s: &str) -> Result<(u32, u32), String> {
    let (w, h) = s.split_once('x').ok_or("expected WIDTHxHEIGHT")?;
    Ok((
        w.parse().map_err(|_| "bad width")?,
        h.parse().map_err(|_| "bad height")?,
    ))
}

impl Common {
    /// MCM client JSON.
    pub fn client_json(&self) -> String {
        let mut v =
            json!({ "apiVersion": "v1", "apiDefaultTimeoutMicroseconds": self.timeout_ms * 1000 });
        if let Some(p) = &self.proxy {
            let (host, port) = p.rsplit_once(':').unwrap_or((p, "8002"));
            v["apiConnectionString"] = format!("Server={host}; Port={port}").into();
        }
        v.to_string()
    }

    /// MCM connection JSON.
    pub fn connection_json(&self) -> String {
        let mut v = json!({
            "connection": { "multipointGroup": { "urn": self.urn } },
            "bufferQueueCapacity": self.queue,
            "maxMetadataSize": METADATA_SIZE,
            "reliable": self.reliable,
        });
        match self.video {
            Some((w, h)) => {
                v["payload"] = json!({ "video": { "width": w, "height": h, "fps": self.fps, "pixelFormat": self.pixel_format } });
            }
            None => {
                v["payload"] = json!({ "blob": {} });
                v["maxPayloadSize"] = self.blob_size.into();
            }
        }
        v.to_string()
    }
}

/// Payload length of message `seq` in blob mode: varies, 1..=max.
pub fn blob_len(seq: u64, max: usize) -> usize {
    1 + (seq.wrapping_mul(7919) % max as u64) as usize
}

/// Fills a payload with the pattern of `seq` (v210 colour bars for v210 video).
pub fn fill(seq: u64, video: Option<(u32, u32)>, pixel_format: &str, out: &mut [u8]) {
    match video {
        Some((w, h)) if pixel_format == "v210" => mcm_core::testpattern::fill_v210(w, h, seq, out),
        _ => mcm_core::testpattern::fill_bytes(seq, out),
    }
}

/// Checks a payload against the pattern of `seq`.
pub fn verify(
    seq: u64,
    video: Option<(u32, u32)>,
    pixel_format: &str,
    payload: &[u8],
) -> Result<(), String> {
    match video {
        Some((w, h)) if pixel_format == "v210" => {
            mcm_core::testpattern::verify_v210(w, h, seq, payload)
        }
        _ => {
            let mut expect = vec![0u8; payload.len()];
            mcm_core::testpattern::fill_bytes(seq, &mut expect);
            if expect == payload {
                Ok(())
            } else {
                let at = expect
                    .iter()
                    .zip(payload)
                    .position(|(a, b)| a != b)
                    .unwrap_or(0);
                Err(format!("grain {seq}: byte {at} differs"))
            }
        }
    }
}

/// Logs to stderr at `MCM_LOG` (default warn).
pub fn init_logging() {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(
            std::env::var("MCM_LOG").unwrap_or_else(|_| "warn".into()),
        ))
        .with_writer(std::io::stderr)
        .init();
}
