//! SDP for ST 2110 streams (ST 2110-10 §8, RFC 4566, RFC 4175 §6): generated for what mcm
//! sends, parsed from what peers send, including the looser forms GStreamer and FFmpeg
//! write (string-typed widths, `; ` or `;` separators, no `exactframerate`).

use super::rfc4175::{PackingMode, Sampling, VideoGeometry};
use crate::time::Rational;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SdpError {
    #[error("SDP line {line}: {reason}")]
    Syntax { line: usize, reason: String },
    #[error("SDP media {0}: missing or invalid `{1}`")]
    Missing(String, &'static str),
    #[error(transparent)]
    Video(#[from] super::rfc4175::Rfc4175Error),
}

/// An ST 2110-20 video stream mcm sends.
#[derive(Debug, Clone)]
pub struct VideoSdp {
    pub session_name: String,
    /// Sender's address (`o=` and, with a multicast destination, the source filter).
    pub source: String,
    pub destination: String,
    pub port: u16,
    pub payload_type: u8,
    pub geometry: VideoGeometry,
    pub rate: Rational,
    pub packing: PackingMode,
    /// `BT709`, `BT2020`, ...
    pub colorimetry: String,
    /// `TP`: `2110TPN` (narrow), `2110TPNL` (narrow linear), `2110TPW` (wide), or empty
    /// for none (a sender beyond the models).
    pub sender_type: String,
    /// `MAXUDP`: the extended UDP size limit (8960) when the sender uses it (ST 2110-10).
    pub max_udp: Option<usize>,
}

fn is_multicast(addr: &str) -> bool {
    addr.parse::<std::net::Ipv4Addr>()
        .is_ok_and(|a| a.is_multicast())
}

impl VideoSdp {
    /// The SDP text (CRLF line ends).
    pub fn to_sdp(&self) -> String {
        let g = &self.geometry;
        let rate = exact_frame_rate(self.rate);
        let mut s = session_and_media(
            &self.session_name,
            &self.source,
            &self.destination,
            "video",
            self.port,
            self.payload_type,
        );
        let mut line = |l: String| {
            s.push_str(&l);
            s.push_str("\r\n");
        };
        line(format!("a=rtpmap:{} raw/90000", self.payload_type));
        line(format!(
            "a=fmtp:{} sampling={}; width={}; height={}; exactframerate={}; depth={}; TCS=SDR; colorimetry={}; PM={}; SSN=ST2110-20:2017{}{}{}",
            self.payload_type,
            g.sampling.name(),
            g.width,
            g.height,
            rate,
            g.depth,
            self.colorimetry,
            self.packing.sdp_name(),
            // No TP for a sender no ST 2110-21 type describes.
            if self.sender_type.is_empty() {
                String::new()
            } else {
                format!("; TP={}", self.sender_type)
            },
            if g.interlaced { "; interlace" } else { "" },
            self.max_udp
                .map_or(String::new(), |m| format!("; MAXUDP={m}")),
        ));
        s.push_str(CLOCKING);
        s
    }
}

/// Writes an SDP file whole: to a temporary name first, then renamed over `path`, so a
/// reader (FFmpeg, a watcher) never sees half of one.
pub fn write_file(path: &std::path::Path, sdp: &str) -> std::io::Result<()> {
    let tmp = path.with_extension("sdp.tmp");
    std::fs::write(&tmp, sdp)?;
    std::fs::rename(&tmp, path)
}

/// ST 2110-10 clocking of every stream mcm sends: RTP time from the media clock directly,
/// the reference clock named by a local MAC (no PTP grandmaster to name).
const CLOCKING: &str = "a=mediaclk:direct=0\r\na=ts-refclk:localmac=00-00-00-00-00-00\r\n";

/// `exactframerate` as ST 2110 writes it: `25`, `30000/1001`.
fn exact_frame_rate(rate: Rational) -> String {
    let r = rate.reduced();
    if r.denominator == 1 {
        r.numerator.to_string()
    } else {
        format!("{}/{}", r.numerator, r.denominator)
    }
}

/// An ST 2110-40 stream's SDP: RFC 8331 `smpte291/90000`, ST 2110-10 clocking.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AncSdp {
    pub session_name: String,
    pub source: String,
    pub destination: String,
    pub port: u16,
    pub payload_type: u8,
}

impl AncSdp {
    /// The SDP text (CRLF line ends).
    pub fn to_sdp(&self) -> String {
        let mut s = session_and_media(
            &self.session_name,
            &self.source,
            &self.destination,
            "video",
            self.port,
            self.payload_type,
        );
        s.push_str(&format!(
            "a=rtpmap:{} smpte291/90000\r\n{CLOCKING}",
            self.payload_type
        ));
        s
    }
}

/// An ST 2110-22 stream's SDP. JPEG XS is RFC 9134's `jxsv/90000`; other compressed frames
/// (JPEG, H.264 access units), which mcm carries in the same framing, are
/// `x-mcm-compressed/90000` with their media type in `mediatype`. Paced wide (`TP=2110TPW`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompressedSdp {
    pub session_name: String,
    pub source: String,
    pub destination: String,
    pub port: u16,
    pub payload_type: u8,
    /// The flow's media type, e.g. `image/x-jxsc`, `image/jpeg`, `video/x-h264`.
    pub media_type: String,
    pub rate: Rational,
    /// Picture size in pixels, where the flow gives it.
    pub size: Option<(u32, u32)>,
}

/// Media type of a JPEG XS codestream flow (GStreamer's caps name).
pub const JPEG_XS_MEDIA_TYPE: &str = "image/x-jxsc";

impl CompressedSdp {
    /// The SDP text (CRLF line ends).
    pub fn to_sdp(&self) -> String {
        let pt = self.payload_type;
        let mut s = session_and_media(
            &self.session_name,
            &self.source,
            &self.destination,
            "video",
            self.port,
            pt,
        );
        let size = self
            .size
            .map(|(w, h)| format!("width={w}; height={h}; "))
            .unwrap_or_default();
        let rate = exact_frame_rate(self.rate);
        if self.media_type == JPEG_XS_MEDIA_TYPE {
            s.push_str(&format!(
                "a=rtpmap:{pt} jxsv/90000\r\na=fmtp:{pt} packetmode=0; transmode=1; {size}exactframerate={rate}; SSN=ST2110-22:2019; TP=2110TPW\r\n"
            ));
        } else {
            s.push_str(&format!(
                "a=rtpmap:{pt} x-mcm-compressed/90000\r\na=fmtp:{pt} mediatype={}; {size}exactframerate={rate}; TP=2110TPW\r\n",
                self.media_type
            ));
        }
        s.push_str(CLOCKING);
        s
    }
}

/// The session lines and the `m=`/`c=` lines of a one-stream ST 2110 SDP (CRLF ends), with
/// a source filter for a multicast destination (ST 2110-10).
fn session_and_media(
    session_name: &str,
    source: &str,
    destination: &str,
    media: &str,
    port: u16,
    payload_type: u8,
) -> String {
    let mut s = format!(
        "v=0\r\no=- 0 0 IN IP4 {source}\r\ns={session_name}\r\nt=0 0\r\nm={media} {port} RTP/AVP {payload_type}\r\n"
    );
    if is_multicast(destination) {
        s.push_str(&format!(
            "c=IN IP4 {destination}/64\r\na=source-filter: incl IN IP4 {destination} {source}\r\n"
        ));
    } else {
        s.push_str(&format!("c=IN IP4 {destination}\r\n"));
    }
    s
}

/// The `o=` and source-filter address of a stream sent from `bind`: loopback when bound to
/// any address (the SDP needs one).
pub(crate) fn source_of(bind: std::net::SocketAddr) -> String {
    match bind.ip() {
        ip if ip.is_unspecified() => std::net::IpAddr::from([127, 0, 0, 1]).to_string(),
        ip => ip.to_string(),
    }
}

/// An ST 2110-30 stream's SDP (RFC 3190 L16/L24, `ptime` in ms, ST 2110-10 clocking).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AudioSdp {
    pub session_name: String,
    pub source: String,
    pub destination: String,
    pub port: u16,
    pub payload_type: u8,
    pub format: super::audio::AudioFormat,
}

impl AudioSdp {
    /// The SDP text (CRLF line ends).
    pub fn to_sdp(&self) -> String {
        let f = &self.format;
        let ptime_us = u64::from(f.samples_per_packet) * 1_000_000 / u64::from(f.sample_rate);
        let ptime = if ptime_us % 1000 == 0 {
            (ptime_us / 1000).to_string()
        } else {
            format!("{:.3}", ptime_us as f64 / 1000.0)
        };
        let mut s = session_and_media(
            &self.session_name,
            &self.source,
            &self.destination,
            "audio",
            self.port,
            self.payload_type,
        );
        let mut line = |l: String| {
            s.push_str(&l);
            s.push_str("\r\n");
        };
        line(format!(
            "a=rtpmap:{} {}/{}/{}",
            self.payload_type,
            f.encoding.name(),
            f.sample_rate,
            f.channels
        ));
        line(format!("a=ptime:{ptime}"));
        s.push_str(CLOCKING);
        s
    }
}

/// One `m=` section of a parsed SDP.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SdpMedia {
    /// `video`, `audio`, ...
    pub media: String,
    pub port: u16,
    pub payload_type: u8,
    /// From `a=rtpmap`: `raw`, `L24`, `smpte291`, `jxsv`...
    pub encoding: String,
    pub clock_rate: u32,
    pub channels: Option<u32>,
    /// `c=` address (without TTL), at media or session level.
    pub address: Option<String>,
    /// `a=fmtp` parameters in order; keys as written.
    pub fmtp: Vec<(String, String)>,
    /// `a=ptime` in ms.
    pub ptime: Option<String>,
    /// The sender of a source-specific multicast stream: the first source of an
    /// `a=source-filter: incl` line (RFC 4570), at media or session level.
    pub source: Option<String>,
}

impl SdpMedia {
    /// An fmtp parameter, keys compared without case.
    pub fn param(&self, key: &str) -> Option<&str> {
        self.fmtp
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v.as_str())
    }

    /// The largest UDP payload the sender may send (ST 2110-10 `MAXUDP`): 1460 unless
    /// it signals the extended limit; a value that is not a number counts as unsignalled.
    pub fn max_udp(&self) -> usize {
        self.param("MAXUDP")
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(crate::st2110::rfc4175::STANDARD_UDP_SIZE)
    }

    /// The picture of a `raw/90000` stream (RFC 4175 needs sampling, width, height, depth).
    pub fn video_geometry(&self) -> Result<VideoGeometry, SdpError> {
        let what = || format!("{} {}", self.media, self.payload_type);
        let sampling = self
            .param("sampling")
            .and_then(Sampling::parse)
            .ok_or_else(|| SdpError::Missing(what(), "sampling"))?;
        let num = |k: &'static str| -> Result<u32, SdpError> {
            self.param(k)
                .and_then(|v| v.trim().trim_matches('"').parse().ok())
                .ok_or_else(|| SdpError::Missing(what(), k))
        };
        let depth = u8::try_from(num("depth")?).map_err(|_| SdpError::Missing(what(), "depth"))?;
        let interlaced = self.param("interlace").is_some();
        Ok(VideoGeometry::new(
            num("width")?,
            num("height")?,
            sampling,
            depth,
            interlaced,
        )?)
    }

    /// `exactframerate` (`25`, `30000/1001`), if given.
    pub fn frame_rate(&self) -> Option<Rational> {
        let v = self.param("exactframerate")?;
        let (n, d) = v.split_once('/').unwrap_or((v, "1"));
        let r = Rational::new(n.trim().parse().ok()?, d.trim().parse().ok()?);
        (r.numerator > 0 && r.denominator > 0).then_some(r)
    }
}

/// Parses every media section (ST 2110 SDPs have one, or two for -7 redundancy).
pub fn parse(text: &str) -> Result<Vec<SdpMedia>, SdpError> {
    let mut session_addr: Option<String> = None;
    let mut session_source: Option<String> = None;
    // The current media section has a source-filter line of its own.
    let mut own_source = false;
    let mut media: Vec<SdpMedia> = Vec::new();
    for (n, raw) in text.lines().enumerate() {
        let l = raw.trim_end_matches('\r').trim();
        if l.is_empty() {
            continue;
        }
        let syntax = |reason: &str| SdpError::Syntax {
            line: n + 1,
            reason: reason.into(),
        };
        let (kind, value) = l
            .split_once('=')
            .filter(|(k, _)| k.len() == 1)
            .ok_or_else(|| syntax("not `<type>=<value>`"))?;
        match kind {
            "m" => {
                let mut f = value.split_whitespace();
                let name = f.next().ok_or_else(|| syntax("m= without media"))?;
                let port = f
                    .next()
                    .and_then(|p| p.split('/').next()?.parse().ok())
                    .ok_or_else(|| syntax("m= port"))?;
                let _proto = f.next();
                let pt = f
                    .next()
                    .and_then(|p| p.parse().ok())
                    .filter(|&p: &u8| p < 128)
                    .ok_or_else(|| syntax("m= payload type"))?;
                own_source = false;
                media.push(SdpMedia {
                    media: name.into(),
                    port,
                    payload_type: pt,
                    address: session_addr.clone(),
                    source: session_source.clone(),
                    ..Default::default()
                });
            }
            "c" => {
                let addr = value
                    .split_whitespace()
                    .nth(2)
                    .and_then(|a| a.split('/').next())
                    .ok_or_else(|| syntax("c= address"))?
                    .to_string();
                match media.last_mut() {
                    Some(m) => m.address = Some(addr),
                    None => session_addr = Some(addr),
                }
            }
            "a" => {
                let (attr, rest) = value.split_once(':').unwrap_or((value, ""));
                if attr == "source-filter" {
                    // `incl IN IP4 <destination> <source>...`; `excl` lists are not a sender.
                    let f: Vec<&str> = rest.split_whitespace().collect();
                    if let ["incl", _, _, _, source, ..] = f.as_slice() {
                        // The first `incl` line of a section names its sender; a media
                        // section's own line wins over the session's (RFC 4570).
                        match media.last_mut() {
                            Some(m) if !own_source => {
                                m.source = Some(source.to_string());
                                own_source = true;
                            }
                            Some(_) => {}
                            None => {
                                session_source.get_or_insert_with(|| source.to_string());
                            }
                        }
                    }
                    continue;
                }
                let Some(m) = media.last_mut() else { continue };
                match attr {
                    "rtpmap" => {
                        let (pt, enc) = rest
                            .split_once(' ')
                            .ok_or_else(|| syntax("rtpmap without encoding"))?;
                        if pt.trim().parse::<u8>().ok() != Some(m.payload_type) {
                            continue;
                        }
                        let mut parts = enc.trim().split('/');
                        m.encoding = parts.next().unwrap_or_default().to_string();
                        m.clock_rate = parts
                            .next()
                            .and_then(|c| c.parse().ok())
                            .ok_or_else(|| syntax("rtpmap clock rate"))?;
                        m.channels = parts.next().and_then(|c| c.parse().ok());
                    }
                    "fmtp" => {
                        let (pt, params) = rest.split_once(' ').unwrap_or((rest, ""));
                        if pt.trim().parse::<u8>().ok() != Some(m.payload_type) {
                            continue;
                        }
                        m.fmtp = params
                            .split(';')
                            .map(str::trim)
                            .filter(|p| !p.is_empty())
                            .map(|p| match p.split_once('=') {
                                Some((k, v)) => (k.trim().to_string(), v.trim().to_string()),
                                None => (p.to_string(), String::new()),
                            })
                            .collect();
                    }
                    "ptime" => m.ptime = Some(rest.trim().to_string()),
                    _ => {}
                }
            }
            _ => {}
        }
    }
    Ok(media)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audio_sdp_says_l24_48k_stereo_1ms() {
        let format = crate::st2110::audio::AudioFormat::new(
            crate::st2110::audio::PcmEncoding::L24,
            2,
            48_000,
            1000,
        )
        .unwrap();
        let sdp = AudioSdp {
            session_name: "mcm mic".into(),
            source: "192.168.1.10".into(),
            destination: "239.100.9.11".into(),
            port: 20002,
            payload_type: 97,
            format,
        }
        .to_sdp();
        assert!(sdp.contains("m=audio 20002 RTP/AVP 97\r\n"), "{sdp}");
        assert!(sdp.contains("c=IN IP4 239.100.9.11/64\r\n"), "{sdp}");
        assert!(sdp.contains("a=rtpmap:97 L24/48000/2\r\n"), "{sdp}");
        assert!(sdp.contains("a=ptime:1\r\n"), "{sdp}");
        let media = parse(&sdp).unwrap();
        assert_eq!(media.len(), 1);
        assert_eq!((media[0].port, media[0].payload_type), (20002, 97));
        assert_eq!(media[0].source.as_deref(), Some("192.168.1.10"));
    }

    #[test]
    fn generated_sdp_parses_back() {
        let g = VideoGeometry::new(1920, 1080, Sampling::YCbCr422, 10, false).unwrap();
        let sdp = VideoSdp {
            session_name: "mcm cam1".into(),
            source: "192.168.1.10".into(),
            destination: "239.100.9.10".into(),
            port: 20000,
            payload_type: 96,
            geometry: g,
            rate: Rational::new(60000, 1001),
            packing: PackingMode::General,
            colorimetry: "BT709".into(),
            sender_type: "2110TPW".into(),
            max_udp: None,
        };
        let jumbo = VideoSdp {
            max_udp: Some(8960),
            ..sdp.clone()
        }
        .to_sdp();
        let sdp = sdp.to_sdp();
        assert!(sdp.contains("a=fmtp:96 sampling=YCbCr-4:2:2; width=1920; height=1080; exactframerate=60000/1001; depth=10; TCS=SDR; colorimetry=BT709; PM=2110GPM; SSN=ST2110-20:2017; TP=2110TPW\r\n"));
        assert!(jumbo.contains("; TP=2110TPW; MAXUDP=8960\r\n"), "{jumbo}");
        assert_eq!(parse(&jumbo).unwrap()[0].max_udp(), 8960);
        assert_eq!(parse(&sdp).unwrap()[0].max_udp(), 1460);
        assert!(sdp.contains("c=IN IP4 239.100.9.10/64\r\n"));
        let m = &parse(&sdp).unwrap()[0];
        assert_eq!(
            (m.port, m.payload_type, m.encoding.as_str(), m.clock_rate),
            (20000, 96, "raw", 90000)
        );
        assert_eq!(m.address.as_deref(), Some("239.100.9.10"));
        assert_eq!(m.video_geometry().unwrap(), g);
        assert_eq!(m.frame_rate(), Some(Rational::new(60000, 1001)));
    }

    #[test]
    fn compressed_and_ancillary_sdps_parse_back() {
        let jxs = CompressedSdp {
            session_name: "mcm jxs".into(),
            source: "192.168.1.10".into(),
            destination: "239.1.1.1".into(),
            port: 20000,
            payload_type: 112,
            media_type: JPEG_XS_MEDIA_TYPE.into(),
            rate: Rational::new(60000, 1001),
            size: Some((1920, 1080)),
        };
        let text = jxs.to_sdp();
        assert!(text.contains("a=fmtp:112 packetmode=0; transmode=1; width=1920; height=1080; exactframerate=60000/1001; SSN=ST2110-22:2019; TP=2110TPW\r\n"), "{text}");
        let m = &parse(&text).unwrap()[0];
        assert_eq!(
            (m.port, m.payload_type, m.encoding.as_str(), m.clock_rate),
            (20000, 112, "jxsv", 90000)
        );
        assert_eq!(m.frame_rate(), Some(Rational::new(60000, 1001)));
        assert_eq!(m.param("width"), Some("1920"));

        let jpeg = CompressedSdp {
            media_type: "image/jpeg".into(),
            rate: Rational::new(25, 1),
            size: None,
            destination: "10.0.0.2".into(),
            ..jxs
        };
        let m = &parse(&jpeg.to_sdp()).unwrap()[0];
        assert_eq!(m.encoding, "x-mcm-compressed");
        assert_eq!(m.param("mediatype"), Some("image/jpeg"));
        assert_eq!(m.param("TP"), Some("2110TPW"));
        assert_eq!(m.frame_rate(), Some(Rational::new(25, 1)));

        let anc = AncSdp {
            session_name: "mcm cc".into(),
            source: "10.0.0.1".into(),
            destination: "10.0.0.2".into(),
            port: 20100,
            payload_type: 100,
        };
        let m = &parse(&anc.to_sdp()).unwrap()[0];
        assert_eq!(
            (m.port, m.payload_type, m.encoding.as_str(), m.clock_rate),
            (20100, 100, "smpte291", 90000)
        );
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 256, failure_persistence: None, ..Default::default() })]
        /// Any text gives media sections or a typed error, never a panic; so does asking
        /// the sections for a geometry.
        #[test]
        fn any_text_parses_or_fails_cleanly(lines in proptest::collection::vec("[a-z=:/;0-9 .-]{0,40}", 0..20)) {
            if let Ok(media) = parse(&lines.join("\n")) {
                for m in media {
                    let _ = m.video_geometry();
                    let _ = m.frame_rate();
                }
            }
        }
    }

    #[test]
    fn ffmpeg_and_audio_forms_and_clear_errors() {
        // What FFmpeg's RTP muxer writes for rawvideo uyvy422 (session-level c=, no rate).
        let ff = "v=0\no=- 0 0 IN IP4 127.0.0.1\ns=No Name\nc=IN IP4 127.0.0.1\nt=0 0\na=tool:libavformat\nm=video 5004 RTP/AVP 96\na=rtpmap:96 raw/90000\na=fmtp:96 sampling=YCbCr-4:2:2;width=320;height=240;depth=8\n";
        let m = &parse(ff).unwrap()[0];
        let g = m.video_geometry().unwrap();
        assert_eq!(
            (g.width, g.height, g.depth, g.line_bytes()),
            (320, 240, 8, 640)
        );
        assert_eq!(m.address.as_deref(), Some("127.0.0.1"));
        assert_eq!(m.frame_rate(), None);
        assert_eq!(m.source, None);
        // A session-level source filter applies to every media section.
        let ssm = "v=0\nc=IN IP4 232.1.1.1/32\na=source-filter: incl IN IP4 232.1.1.1 10.0.0.7\nm=video 5004 RTP/AVP 96\nm=audio 5006 RTP/AVP 97\n";
        let both = parse(ssm).unwrap();
        assert!(both.iter().all(|m| m.source.as_deref() == Some("10.0.0.7")));
        let excl =
            "v=0\nm=video 5004 RTP/AVP 96\na=source-filter: excl IN IP4 232.1.1.1 10.0.0.7\n";
        assert_eq!(parse(excl).unwrap()[0].source, None);
        let two = "v=0\nm=video 5004 RTP/AVP 96\na=source-filter: incl IN IP4 232.1.1.1 10.0.0.7\na=source-filter: incl IN IP4 232.1.1.1 10.0.0.8\n";
        assert_eq!(parse(two).unwrap()[0].source.as_deref(), Some("10.0.0.7"));
        // A media section's own line wins over the session's.
        let own = "v=0\na=source-filter: incl IN IP4 232.1.1.1 10.0.0.7\nm=video 5004 RTP/AVP 96\na=source-filter: incl IN IP4 232.1.1.1 10.0.0.9\nm=audio 5006 RTP/AVP 97\n";
        let own = parse(own).unwrap();
        assert_eq!(own[0].source.as_deref(), Some("10.0.0.9"));
        assert_eq!(own[1].source.as_deref(), Some("10.0.0.7"));
        let audio = "v=0\ns=a\nm=audio 5006 RTP/AVP 97\nc=IN IP4 239.0.0.1/32\na=rtpmap:97 L24/48000/2\na=ptime:1\n";
        let a = &parse(audio).unwrap()[0];
        assert_eq!(
            (
                a.encoding.as_str(),
                a.clock_rate,
                a.channels,
                a.ptime.as_deref()
            ),
            ("L24", 48000, Some(2), Some("1"))
        );
        assert!(matches!(
            parse("v=0\nnonsense\n"),
            Err(SdpError::Syntax { line: 2, .. })
        ));
        let no_depth = "m=video 1 RTP/AVP 96\na=rtpmap:96 raw/90000\na=fmtp:96 sampling=YCbCr-4:2:2; width=8; height=8\n";
        assert_eq!(
            parse(no_depth).unwrap()[0].video_geometry(),
            Err(SdpError::Missing("video 96".into(), "depth"))
        );
    }
}
