//! Media descriptions of flows: NMOS IS-04 flow JSON (`flow_def.json`) in, exact grain
//! geometry out.
//!
//! MXL's own types (`video/v210`, `video/v210a`, `audio/float32`, `audio/float64`,
//! `video/smpte291`) follow MXL's `FlowParser` and `MediaUtils`. The other types are mcm's:
//! tightly packed raw video in the GStreamer format names, big-endian PCM packets, and opaque
//! grains (compressed video, blobs) that carry their own media type. Every size rule cites
//! its source next to the code.

use serde_json::{json, Map, Value};
use uuid::Uuid;

use crate::time::Rational;

/// Tag MXL requires on every flow: `name:role[:device|node]` entries.
pub const GROUP_HINT_TAG: &str = "urn:x-nmos:tag:grouphint/v1.0";
/// mcm extension key: payload capacity in bytes of an opaque grain.
pub const MAX_GRAIN_SIZE_KEY: &str = "urn:x-mcm:max_grain_size";
/// mcm extension key: samples per channel in one PCM grain (the packet time).
pub const SAMPLES_PER_GRAIN_KEY: &str = "urn:x-mcm:samples_per_grain";

/// mcm extension key: the GStreamer caps string an element stores with a flow it writes,
/// so a reader element reproduces the exact caps (and a bridge can read the picture size).
pub const CAPS_KEY: &str = "urn:x-mcm:caps";
/// mcm extension key: bytes of per-grain metadata stored after the payload.
pub const MAX_METADATA_SIZE_KEY: &str = "urn:x-mcm:max_metadata_size";
/// Largest per-grain metadata area (1 MiB).
pub const MAX_METADATA_SIZE: u32 = 1 << 20;

/// Largest frame MXL accepts (`FlowParser`: width 2..=7680, height 1..=4320).
pub const MAX_WIDTH: u32 = 7680;
pub const MAX_HEIGHT: u32 = 4320;
/// Largest opaque grain mcm accepts (256 MiB).
pub const MAX_OPAQUE_GRAIN_SIZE: u32 = 256 << 20;
/// Size of an ancillary (`video/smpte291`) grain (MXL `MXL_DATA_FORMAT_GRAIN_SIZE`).
pub const DATA_GRAIN_SIZE: u32 = 4096;

/// Why a flow description was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FlowDefError {
    #[error("flow_def is not valid JSON: {0}")]
    Json(String),
    #[error("flow_def: missing field `{0}`")]
    Missing(&'static str),
    #[error("flow_def: field `{field}` is invalid: {reason}")]
    Invalid { field: &'static str, reason: String },
    #[error("flow_def: unsupported media_type `{0}`")]
    UnsupportedMediaType(String),
}

fn invalid(field: &'static str, reason: impl Into<String>) -> FlowDefError {
    FlowDefError::Invalid {
        field,
        reason: reason.into(),
    }
}

/// Raw video pixel formats a flow can hold (GStreamer names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum VideoFormat {
    /// 10-bit 4:2:2, 6 pixels in 16 bytes, lines padded to 48 pixels (MXL's native format).
    V210,
    /// v210 fill plane followed by a 10-bit key plane (MXL).
    V210a,
    /// 8-bit 4:2:2 packed Cb Y0 Cr Y1; also the RFC 4175 8-bit 4:2:2 pgroup.
    Uyvy,
    /// 8-bit 4:2:2 packed Y0 Cb Y1 Cr.
    Yuy2,
    /// 8-bit 4:2:0 planar Y, U, V.
    I420,
    /// 8-bit 4:2:0, Y plane then interleaved UV plane.
    Nv12,
    /// 10-bit 4:2:2 planar, 16-bit little-endian words.
    I422_10le,
    /// 10-bit 4:2:0, Y plane then interleaved UV plane, 16-bit LE words, MSB-aligned.
    P010_10le,
    /// 8-bit RGBA.
    Rgba,
    /// 8-bit BGRA.
    Bgra,
    /// 10-bit 4:2:2 RFC 4175 pgroups: 2 pixels in 5 bytes, Cb Y0 Cr Y1 big-endian bit order.
    Uyvp,
}

impl VideoFormat {
    pub const ALL: [Self; 11] = [
        Self::V210,
        Self::V210a,
        Self::Uyvy,
        Self::Yuy2,
        Self::I420,
        Self::Nv12,
        Self::I422_10le,
        Self::P010_10le,
        Self::Rgba,
        Self::Bgra,
        Self::Uyvp,
    ];

    /// The flow_def `media_type`.
    pub fn media_type(self) -> &'static str {
        match self {
            Self::V210 => "video/v210",
            Self::V210a => "video/v210a",
            Self::Uyvy => "video/UYVY",
            Self::Yuy2 => "video/YUY2",
            Self::I420 => "video/I420",
            Self::Nv12 => "video/NV12",
            Self::I422_10le => "video/I422_10LE",
            Self::P010_10le => "video/P010_10LE",
            Self::Rgba => "video/RGBA",
            Self::Bgra => "video/BGRA",
            Self::Uyvp => "video/UYVP",
        }
    }

    /// The GStreamer / short name (`v210`, `UYVY`, ...).
    pub fn name(self) -> &'static str {
        &self.media_type()["video/".len()..]
    }

    /// Parses a short name or media type, case-insensitively.
    pub fn from_name(name: &str) -> Option<Self> {
        let name = name.strip_prefix("video/").unwrap_or(name);
        Self::ALL
            .into_iter()
            .find(|f| f.name().eq_ignore_ascii_case(name))
    }

    fn is_4_2_0(self) -> bool {
        matches!(self, Self::I420 | Self::Nv12 | Self::P010_10le)
    }

    fn needs_even_width(self) -> bool {
        !matches!(self, Self::V210 | Self::V210a | Self::Rgba | Self::Bgra)
    }

    /// Each plane's `(bytes per row, rows)` for `lines` lines of `width` pixels, in the
    /// order and tight packing of the grain (plane `p` follows plane `p-1` directly).
    pub fn planes(self, width: u32, lines: u32) -> Vec<(usize, usize)> {
        let (slices, total) = self.slices(width, lines);
        slices
            .iter()
            .enumerate()
            .filter(|(_, &s)| s > 0)
            .map(|(p, &s)| {
                // 4:2:0 slices hold two rows of luma and one of chroma.
                let luma_rows = if self.is_4_2_0() && p == 0 { 2 } else { 1 };
                ((s / luma_rows) as usize, (total * luma_rows) as usize)
            })
            .collect()
    }

    /// Slice sizes and slice count for `lines` lines of `width` pixels.
    ///
    /// A slice is one line of every plane; for 4:2:0 formats it is two luma lines and one
    /// chroma line, since chroma is subsampled vertically. Planes follow each other with no
    /// padding: plane `p` occupies `slice_sizes[p] * total_slices` bytes.
    fn slices(self, width: u32, lines: u32) -> ([u32; 4], u32) {
        let w = width;
        match self {
            // MXL MediaUtils: v210 stride = ((w + 47) / 48) * 128 bytes.
            Self::V210 => ([w.div_ceil(48) * 128, 0, 0, 0], lines),
            // MXL MediaUtils: key stride = ((w + 2) / 3) * 4 (three 10-bit values per word).
            Self::V210a => ([w.div_ceil(48) * 128, w.div_ceil(3) * 4, 0, 0], lines),
            // Packed 4:2:2 8-bit, 2 bytes per pixel (GStreamer video-format UYVY/YUY2, FFmpeg
            // uyvy422/yuyv422); tightly packed like FFmpeg's av_image_fill_arrays(align=1).
            Self::Uyvy | Self::Yuy2 => ([2 * w, 0, 0, 0], lines),
            // 4 bytes per pixel (GStreamer RGBA/BGRA, FFmpeg rgba/bgra).
            Self::Rgba | Self::Bgra => ([4 * w, 0, 0, 0], lines),
            // RFC 4175 §4.3 YCbCr-4:2:2 10-bit pgroup: 5 octets per 2 pixels.
            Self::Uyvp => ([w / 2 * 5, 0, 0, 0], lines),
            // I420 (FFmpeg yuv420p): Y w x h, U and V (w/2) x (h/2), 8 bits; a slice is 2 Y
            // lines (2w bytes) plus one U and one V line (w/2 bytes each).
            Self::I420 => ([2 * w, w / 2, w / 2, 0], lines / 2),
            // NV12: Y w x h, then interleaved CbCr (w/2 pairs = w bytes) x (h/2).
            Self::Nv12 => ([2 * w, w, 0, 0], lines / 2),
            // I422_10LE (FFmpeg yuv422p10le): 10 bits in 16-bit LE words, Y 2w bytes per line,
            // U and V w bytes per line, full height: 4 bytes per pixel (MCM's w*h*4).
            Self::I422_10le => ([2 * w, w, w, 0], lines),
            // P010_10LE (FFmpeg p010le): 16-bit LE words, Y 2w bytes per line, interleaved CbCr
            // 2w bytes per chroma line at half height; a slice is 2 Y lines and 1 CbCr line.
            Self::P010_10le => ([4 * w, 2 * w, 0, 0], lines / 2),
        }
    }
}

/// Scan mode of a video flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum InterlaceMode {
    #[default]
    Progressive,
    /// One field per grain, top field first, at twice the frame rate.
    InterlacedTff,
    /// One field per grain, bottom field first, at twice the frame rate.
    InterlacedBff,
}

impl InterlaceMode {
    fn as_str(self) -> &'static str {
        match self {
            Self::Progressive => "progressive",
            Self::InterlacedTff => "interlaced_tff",
            Self::InterlacedBff => "interlaced_bff",
        }
    }
    pub fn is_interlaced(self) -> bool {
        self != Self::Progressive
    }
}

/// Sample word of a continuous (de-interleaved) audio flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SampleFormat {
    Float32,
    Float64,
}

impl SampleFormat {
    /// Bytes per sample word (MXL: bit_depth / 8).
    pub fn word_size(self) -> u32 {
        match self {
            Self::Float32 => 4,
            Self::Float64 => 8,
        }
    }
}

/// Big-endian PCM carried in discrete grains, interleaved (ST 2110-30 / RFC 3190 L16, L24).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PcmFormat {
    S16Be,
    S24Be,
}

impl PcmFormat {
    pub fn bytes_per_sample(self) -> u32 {
        match self {
            Self::S16Be => 2,
            Self::S24Be => 3,
        }
    }
    fn media_type(self) -> &'static str {
        match self {
            Self::S16Be => "audio/L16",
            Self::S24Be => "audio/L24",
        }
    }
}

/// What a flow carries.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum MediaFormat {
    /// Raw video, one frame (or field) per grain.
    Video {
        format: VideoFormat,
        width: u32,
        height: u32,
        interlace: InterlaceMode,
    },
    /// Continuous audio: one ring of float samples per channel (MXL).
    Audio { format: SampleFormat, channels: u32 },
    /// Interleaved big-endian PCM, `samples_per_grain` samples per channel in each grain.
    Pcm {
        format: PcmFormat,
        channels: u32,
        samples_per_grain: u32,
    },
    /// SMPTE ST 291 ancillary data as RFC 8331 bytes in 4096-byte grains (MXL).
    Ancillary,
    /// Any other payload (H.264 access units, JPEG XS codestreams, blobs): one unit per grain,
    /// up to `max_grain_size` bytes, the actual length in the grain header's `grainSize`.
    Opaque {
        media_type: String,
        max_grain_size: u32,
    },
}

/// Layout of one grain of a discrete flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GrainGeometry {
    /// Bytes per slice of each plane (`mxlDiscreteFlowInfo.sliceSizes`).
    pub slice_sizes: [u32; 4],
    /// Slices in a complete grain (`mxlGrainInfo.totalSlices`).
    pub total_slices: u16,
    /// Payload bytes (`mxlGrainInfo.grainSize`): `sum(slice_sizes) * total_slices`.
    pub grain_size: u32,
}

impl GrainGeometry {
    fn from_slices(slice_sizes: [u32; 4], total_slices: u32) -> Result<Self, FlowDefError> {
        let total = u16::try_from(total_slices)
            .map_err(|_| invalid("frame_height", "more than 65535 slices"))?;
        let per_slice: u64 = slice_sizes.iter().map(|&s| u64::from(s)).sum();
        let grain_size = u32::try_from(per_slice * u64::from(total_slices))
            .map_err(|_| invalid("frame_width", "grain larger than 4 GiB"))?;
        Ok(Self {
            slice_sizes,
            total_slices: total,
            grain_size,
        })
    }

    /// Byte offset of plane `p` in the grain payload.
    pub fn plane_offset(&self, plane: usize) -> usize {
        self.slice_sizes[..plane.min(4)]
            .iter()
            .map(|&s| s as usize * self.total_slices as usize)
            .sum()
    }

    /// Bytes of plane `p` covered by the first `slices` slices.
    pub fn plane_bytes(&self, plane: usize, slices: u16) -> usize {
        self.slice_sizes.get(plane).copied().unwrap_or(0) as usize * slices as usize
    }
}

/// A parsed flow description: what `flow_def.json` says, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct FlowDef {
    pub id: Uuid,
    pub label: String,
    pub media: MediaFormat,
    /// Frame rate for video (not doubled for interlaced), sample rate for audio, grain
    /// (packet) rate for PCM, grain rate for data and opaque flows.
    pub rate: Rational,
    /// The JSON written to `flow_def.json`, as given or as built.
    pub json: Value,
}

impl FlowDef {
    /// Parses and validates flow_def JSON text.
    pub fn parse(text: &str) -> Result<Self, FlowDefError> {
        let json: Value =
            serde_json::from_str(text).map_err(|e| FlowDefError::Json(e.to_string()))?;
        Self::from_json(json)
    }

    /// Validates an NMOS IS-04 flow object.
    pub fn from_json(json: Value) -> Result<Self, FlowDefError> {
        let obj = json
            .as_object()
            .ok_or_else(|| invalid("flow_def", "not a JSON object"))?;
        let id = str_field(obj, "id")?;
        let id = Uuid::parse_str(id).map_err(|e| invalid("id", e.to_string()))?;
        let label = str_field(obj, "label")?;
        if label.is_empty() {
            return Err(invalid("label", "empty"));
        }
        check_group_hint(obj)?;
        let format = str_field(obj, "format")?;
        let media_type = str_field(obj, "media_type")?;
        let (media, rate) = match format {
            "urn:x-nmos:format:video" => parse_video(obj, media_type)?,
            "urn:x-nmos:format:audio" => parse_audio(obj, media_type)?,
            "urn:x-nmos:format:data" => parse_data(obj, media_type)?,
            other => return Err(invalid("format", format!("unknown format `{other}`"))),
        };
        let def = Self {
            id,
            label: label.to_owned(),
            media,
            rate,
            json,
        };
        def.validate_geometry()?;
        Ok(def)
    }

    fn validate_geometry(&self) -> Result<(), FlowDefError> {
        if self.is_discrete() {
            self.grain_geometry()?;
        }
        if let Some(v) = self.json.get(MAX_METADATA_SIZE_KEY) {
            if v.as_u64().is_none_or(|n| n > u64::from(MAX_METADATA_SIZE)) {
                return Err(invalid(
                    MAX_METADATA_SIZE_KEY,
                    format!("{v} not in 0..={MAX_METADATA_SIZE}"),
                ));
            }
        }
        Ok(())
    }

    /// Per-grain metadata capacity in bytes (`urn:x-mcm:max_metadata_size`, default 0).
    pub fn metadata_capacity(&self) -> u32 {
        self.json
            .get(MAX_METADATA_SIZE_KEY)
            .and_then(Value::as_u64)
            .map_or(0, |n| n.min(u64::from(MAX_METADATA_SIZE)) as u32)
    }

    /// Returns the description with a per-grain metadata area of `bytes`.
    pub fn with_metadata_capacity(mut self, bytes: u32) -> Result<Self, FlowDefError> {
        if let Some(obj) = self.json.as_object_mut() {
            obj.insert(MAX_METADATA_SIZE_KEY.into(), bytes.into());
        }
        Self::from_json(self.json)
    }

    /// Builds a video flow description (NMOS IS-04 flow JSON) with MXL's required fields.
    pub fn video(
        id: Uuid,
        label: &str,
        format: VideoFormat,
        width: u32,
        height: u32,
        rate: Rational,
        interlace: InterlaceMode,
    ) -> Result<Self, FlowDefError> {
        let mut obj = base_json(id, label, "urn:x-nmos:format:video", format.media_type());
        obj.insert("grain_rate".into(), rational_json(rate));
        obj.insert("frame_width".into(), width.into());
        obj.insert("frame_height".into(), height.into());
        obj.insert("interlace_mode".into(), interlace.as_str().into());
        obj.insert("colorspace".into(), "BT709".into());
        obj.insert("transfer_characteristic".into(), "SDR".into());
        Self::from_json(Value::Object(obj))
    }

    /// Builds a continuous float audio flow description (MXL `audio/float32|64`).
    pub fn audio(
        id: Uuid,
        label: &str,
        format: SampleFormat,
        sample_rate: u32,
        channels: u32,
    ) -> Result<Self, FlowDefError> {
        let media_type = match format {
            SampleFormat::Float32 => "audio/float32",
            SampleFormat::Float64 => "audio/float64",
        };
        let mut obj = base_json(id, label, "urn:x-nmos:format:audio", media_type);
        obj.insert(
            "sample_rate".into(),
            json!({ "numerator": sample_rate, "denominator": 1 }),
        );
        obj.insert("bit_depth".into(), (format.word_size() * 8).into());
        obj.insert("channel_count".into(), channels.into());
        Self::from_json(Value::Object(obj))
    }

    /// Builds a big-endian PCM flow description: `samples_per_grain` samples per channel
    /// per grain (48 for 1 ms at 48 kHz, as ST 2110-30 packet time).
    pub fn pcm(
        id: Uuid,
        label: &str,
        format: PcmFormat,
        sample_rate: u32,
        channels: u32,
        samples_per_grain: u32,
    ) -> Result<Self, FlowDefError> {
        let mut obj = base_json(id, label, "urn:x-nmos:format:audio", format.media_type());
        obj.insert(
            "sample_rate".into(),
            json!({ "numerator": sample_rate, "denominator": 1 }),
        );
        obj.insert("bit_depth".into(), (format.bytes_per_sample() * 8).into());
        obj.insert("channel_count".into(), channels.into());
        obj.insert(SAMPLES_PER_GRAIN_KEY.into(), samples_per_grain.into());
        Self::from_json(Value::Object(obj))
    }

    /// Builds an ancillary data flow description (MXL `video/smpte291`).
    pub fn ancillary(id: Uuid, label: &str, rate: Rational) -> Result<Self, FlowDefError> {
        let mut obj = base_json(id, label, "urn:x-nmos:format:data", "video/smpte291");
        obj.insert("grain_rate".into(), rational_json(rate));
        Self::from_json(Value::Object(obj))
    }

    /// Builds an opaque flow description: each grain holds one unit of `media_type` of at
    /// most `max_grain_size` bytes.
    pub fn opaque(
        id: Uuid,
        label: &str,
        media_type: &str,
        rate: Rational,
        max_grain_size: u32,
    ) -> Result<Self, FlowDefError> {
        let format = if media_type.starts_with("video/") || media_type.starts_with("image/") {
            "urn:x-nmos:format:video"
        } else {
            "urn:x-nmos:format:data"
        };
        let mut obj = base_json(id, label, format, media_type);
        obj.insert("grain_rate".into(), rational_json(rate));
        obj.insert(MAX_GRAIN_SIZE_KEY.into(), max_grain_size.into());
        Self::from_json(Value::Object(obj))
    }

    /// The JSON text for `flow_def.json`.
    pub fn to_json_string(&self) -> String {
        serde_json::to_string_pretty(&self.json).unwrap_or_else(|_| self.json.to_string())
    }

    /// True for grain (discrete) flows, false for sample-ring (continuous) flows.
    pub fn is_discrete(&self) -> bool {
        !matches!(self.media, MediaFormat::Audio { .. })
    }

    /// `mxlCommonFlowInfo.format`.
    pub fn data_format(&self) -> u32 {
        use crate::flow::layout::*;
        match &self.media {
            MediaFormat::Video { .. } => DATA_FORMAT_VIDEO,
            MediaFormat::Audio { .. } => DATA_FORMAT_AUDIO,
            // MXL treats every AUDIO flow as a continuous sample ring; PCM grains are
            // discrete, so the header calls them DATA and MXL tools read them as grains.
            MediaFormat::Pcm { .. } => DATA_FORMAT_DATA,
            MediaFormat::Ancillary => DATA_FORMAT_DATA,
            MediaFormat::Opaque { .. } => {
                if self.json.get("format").and_then(Value::as_str)
                    == Some("urn:x-nmos:format:video")
                {
                    DATA_FORMAT_VIDEO
                } else {
                    DATA_FORMAT_DATA
                }
            }
        }
    }

    /// The rate of the flow's index: grains per second (field rate for interlaced video),
    /// or samples per second for continuous audio. This is `mxlCommonFlowInfo.grainRate`.
    pub fn index_rate(&self) -> Rational {
        match &self.media {
            MediaFormat::Video { interlace, .. } if interlace.is_interlaced() => {
                // Parsing allows only 25/1 and 30000/1001 here, so doubling cannot overflow.
                let r = self.rate.reduced();
                Rational::new(r.numerator.saturating_mul(2), r.denominator).reduced()
            }
            _ => self.rate.reduced(),
        }
    }

    /// Grain layout for discrete flows.
    pub fn grain_geometry(&self) -> Result<GrainGeometry, FlowDefError> {
        match &self.media {
            MediaFormat::Video {
                format,
                width,
                height,
                interlace,
            } => {
                let lines = if interlace.is_interlaced() {
                    height / 2
                } else {
                    *height
                };
                let (slices, total) = format.slices(*width, lines);
                GrainGeometry::from_slices(slices, total)
            }
            MediaFormat::Pcm {
                format,
                channels,
                samples_per_grain,
            } => {
                // One slice is one sample period of all channels, interleaved.
                GrainGeometry::from_slices(
                    [format.bytes_per_sample() * channels, 0, 0, 0],
                    *samples_per_grain,
                )
            }
            // MXL: 4096-byte grains of 1-byte slices.
            MediaFormat::Ancillary => GrainGeometry::from_slices([1, 0, 0, 0], DATA_GRAIN_SIZE),
            // One slice: the unit is complete or absent.
            MediaFormat::Opaque { max_grain_size, .. } => {
                GrainGeometry::from_slices([*max_grain_size, 0, 0, 0], 1)
            }
            MediaFormat::Audio { .. } => Err(invalid(
                "media_type",
                "continuous audio flows have no grain geometry",
            )),
        }
    }

    /// Channel count and bytes per sample of a continuous audio flow.
    pub fn sample_geometry(&self) -> Option<(u32, u32)> {
        match &self.media {
            MediaFormat::Audio { format, channels } => Some((*channels, format.word_size())),
            _ => None,
        }
    }
}

fn base_json(id: Uuid, label: &str, format: &str, media_type: &str) -> Map<String, Value> {
    let mut obj = Map::new();
    obj.insert("$copyright".into(), "mcm".into());
    obj.insert("id".into(), id.to_string().into());
    obj.insert("description".into(), label.into());
    obj.insert("label".into(), label.into());
    obj.insert(
        "tags".into(),
        // The hint is `name:role`: a colon in the label would split it.
        json!({ GROUP_HINT_TAG: [format!("{}:{}", label.replace(':', "_"), role_of(format))] }),
    );
    obj.insert("format".into(), format.into());
    obj.insert("media_type".into(), media_type.into());
    obj.insert("parents".into(), json!([]));
    obj
}

fn role_of(format: &str) -> &'static str {
    match format {
        "urn:x-nmos:format:audio" => "Audio",
        "urn:x-nmos:format:data" => "Data",
        _ => "Video",
    }
}

fn rational_json(r: Rational) -> Value {
    json!({ "numerator": r.numerator, "denominator": r.denominator })
}

fn str_field<'a>(obj: &'a Map<String, Value>, key: &'static str) -> Result<&'a str, FlowDefError> {
    match obj.get(key) {
        None | Some(Value::Null) => Err(FlowDefError::Missing(key)),
        Some(v) => v.as_str().ok_or_else(|| invalid(key, "not a string")),
    }
}

fn u32_field(obj: &Map<String, Value>, key: &'static str) -> Result<Option<u32>, FlowDefError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .map(Some)
            .ok_or_else(|| invalid(key, format!("`{v}` is not an unsigned 32-bit integer"))),
    }
}

fn rational_field(
    obj: &Map<String, Value>,
    key: &'static str,
) -> Result<Option<Rational>, FlowDefError> {
    let Some(v) = obj.get(key) else {
        return Ok(None);
    };
    let num = v
        .get("numerator")
        .and_then(Value::as_i64)
        .ok_or_else(|| invalid(key, "missing integer `numerator`"))?;
    let den = match v.get("denominator") {
        None => 1,
        Some(d) => d
            .as_i64()
            .ok_or_else(|| invalid(key, "`denominator` is not an integer"))?,
    };
    let rate = Rational::new(num, den);
    if !rate.is_valid() {
        return Err(invalid(key, format!("{num}/{den} is not a positive rate")));
    }
    if rate.as_f64() > 1_000_000.0 {
        return Err(invalid(key, format!("{num}/{den} is absurdly high")));
    }
    Ok(Some(rate))
}

fn check_group_hint(obj: &Map<String, Value>) -> Result<(), FlowDefError> {
    let hints = obj
        .get("tags")
        .and_then(|t| t.get(GROUP_HINT_TAG))
        .ok_or(FlowDefError::Missing("tags.urn:x-nmos:tag:grouphint/v1.0"))?;
    let hints = hints
        .as_array()
        .filter(|a| !a.is_empty())
        .ok_or_else(|| invalid("tags", "grouphint must be a non-empty array"))?;
    for h in hints {
        let parts: Vec<&str> = h.as_str().unwrap_or("").split(':').collect();
        let scope_ok = parts.get(2).is_none_or(|s| matches!(*s, "device" | "node"));
        if !(2..=3).contains(&parts.len()) || parts[..2].iter().any(|p| p.is_empty()) || !scope_ok {
            return Err(invalid(
                "tags",
                format!("grouphint `{h}` is not name:role[:device|node]"),
            ));
        }
    }
    Ok(())
}

fn parse_video(
    obj: &Map<String, Value>,
    media_type: &str,
) -> Result<(MediaFormat, Rational), FlowDefError> {
    let rate = rational_field(obj, "grain_rate")?.ok_or(FlowDefError::Missing("grain_rate"))?;
    let Some(format) = VideoFormat::from_name(media_type)
        .filter(|_| media_type.starts_with("video/"))
        .or_else(|| raw_components_format(obj, media_type))
    else {
        return parse_opaque(obj, media_type, rate);
    };
    let width = u32_field(obj, "frame_width")?.ok_or(FlowDefError::Missing("frame_width"))?;
    let height = u32_field(obj, "frame_height")?.ok_or(FlowDefError::Missing("frame_height"))?;
    if !(2..=MAX_WIDTH).contains(&width) {
        return Err(invalid(
            "frame_width",
            format!("{width} not in 2..={MAX_WIDTH}"),
        ));
    }
    if !(1..=MAX_HEIGHT).contains(&height) {
        return Err(invalid(
            "frame_height",
            format!("{height} not in 1..={MAX_HEIGHT}"),
        ));
    }
    if format.needs_even_width() && width % 2 != 0 {
        return Err(invalid(
            "frame_width",
            format!("{width} is odd; {} needs even", format.name()),
        ));
    }
    let interlace = match obj.get("interlace_mode").and_then(Value::as_str) {
        None | Some("progressive") => InterlaceMode::Progressive,
        Some("interlaced_tff") => InterlaceMode::InterlacedTff,
        Some("interlaced_bff") => InterlaceMode::InterlacedBff,
        Some("interlaced_psf") => InterlaceMode::Progressive,
        Some(other) => return Err(invalid("interlace_mode", format!("unknown `{other}`"))),
    };
    let lines = if interlace.is_interlaced() {
        // MXL (issue #108): one field per grain needs an even frame height; MXL accepts
        // interlaced flows only at 25/1 and 30000/1001 frames per second.
        if height % 2 != 0 {
            return Err(invalid(
                "frame_height",
                "interlaced video needs an even height",
            ));
        }
        let r = rate.reduced();
        if r != Rational::new(25, 1) && r != Rational::new(30000, 1001) {
            return Err(invalid(
                "grain_rate",
                format!("interlaced video at {r} (only 25/1 and 30000/1001)"),
            ));
        }
        height / 2
    } else {
        height
    };
    if format.is_4_2_0() && lines % 2 != 0 {
        return Err(invalid(
            "frame_height",
            format!("{} needs an even number of lines per grain", format.name()),
        ));
    }
    Ok((
        MediaFormat::Video {
            format,
            width,
            height,
            interlace,
        },
        rate,
    ))
}

/// NMOS `video/raw` with `components`: 4:2:2 at 8 or 10 bits maps to the RFC 4175 pgroups.
fn raw_components_format(obj: &Map<String, Value>, media_type: &str) -> Option<VideoFormat> {
    if media_type != "video/raw" {
        return None;
    }
    let comps = obj.get("components")?.as_array()?;
    let depth = comps.first()?.get("bit_depth")?.as_u64()?;
    let luma_w = comps.first()?.get("width")?.as_u64()?;
    let chroma_w = comps.get(1)?.get("width")?.as_u64()?;
    let chroma_h = comps.get(1)?.get("height")?.as_u64()?;
    let luma_h = comps.first()?.get("height")?.as_u64()?;
    let is_422 = chroma_w * 2 == luma_w && chroma_h == luma_h;
    match (is_422, depth) {
        (true, 8) => Some(VideoFormat::Uyvy),
        (true, 10) => Some(VideoFormat::Uyvp),
        _ => None,
    }
}

fn parse_audio(
    obj: &Map<String, Value>,
    media_type: &str,
) -> Result<(MediaFormat, Rational), FlowDefError> {
    let rate = rational_field(obj, "sample_rate")?.ok_or(FlowDefError::Missing("sample_rate"))?;
    if rate.denominator != 1 || !(8_000..=384_000).contains(&rate.numerator) {
        return Err(invalid(
            "sample_rate",
            format!("{rate} not an integer rate in 8000..=384000 Hz"),
        ));
    }
    let bit_depth = u32_field(obj, "bit_depth")?.ok_or(FlowDefError::Missing("bit_depth"))?;
    // MXL extension: channel_count defaults to 1.
    let channels = u32_field(obj, "channel_count")?.unwrap_or(1);
    if !(1..=64).contains(&channels) {
        return Err(invalid(
            "channel_count",
            format!("{channels} not in 1..=64"),
        ));
    }
    let media = match (media_type, bit_depth) {
        ("audio/float32", 32) => MediaFormat::Audio {
            format: SampleFormat::Float32,
            channels,
        },
        ("audio/float64", 64) => MediaFormat::Audio {
            format: SampleFormat::Float64,
            channels,
        },
        ("audio/float32" | "audio/float64", d) => {
            return Err(invalid(
                "bit_depth",
                format!("{d} does not match {media_type}"),
            ))
        }
        ("audio/L16" | "audio/L24", _) => {
            let format = if media_type == "audio/L16" {
                PcmFormat::S16Be
            } else {
                PcmFormat::S24Be
            };
            if bit_depth != format.bytes_per_sample() * 8 {
                return Err(invalid(
                    "bit_depth",
                    format!("{bit_depth} does not match {media_type}"),
                ));
            }
            let spg = u32_field(obj, SAMPLES_PER_GRAIN_KEY)?
                .ok_or(FlowDefError::Missing(SAMPLES_PER_GRAIN_KEY))?;
            if !(1..=rate.numerator as u32).contains(&spg) {
                return Err(invalid(
                    SAMPLES_PER_GRAIN_KEY,
                    format!("{spg} not in 1..=sample rate"),
                ));
            }
            if !(rate.numerator as u32).is_multiple_of(spg) {
                return Err(invalid(
                    SAMPLES_PER_GRAIN_KEY,
                    format!("{spg} does not divide the sample rate {rate}"),
                ));
            }
            let grain_rate = Rational::new(rate.numerator / i64::from(spg), 1);
            return Ok((
                MediaFormat::Pcm {
                    format,
                    channels,
                    samples_per_grain: spg,
                },
                grain_rate,
            ));
        }
        (other, _) => return Err(FlowDefError::UnsupportedMediaType(other.to_owned())),
    };
    Ok((media, rate))
}

fn parse_data(
    obj: &Map<String, Value>,
    media_type: &str,
) -> Result<(MediaFormat, Rational), FlowDefError> {
    let rate = rational_field(obj, "grain_rate")?.ok_or(FlowDefError::Missing("grain_rate"))?;
    if media_type == "video/smpte291" {
        return Ok((MediaFormat::Ancillary, rate));
    }
    parse_opaque(obj, media_type, rate)
}

fn parse_opaque(
    obj: &Map<String, Value>,
    media_type: &str,
    rate: Rational,
) -> Result<(MediaFormat, Rational), FlowDefError> {
    if media_type.len() > 255 || !media_type.contains('/') {
        return Err(FlowDefError::UnsupportedMediaType(media_type.to_owned()));
    }
    let max = u32_field(obj, MAX_GRAIN_SIZE_KEY)?.ok_or_else(|| {
        FlowDefError::UnsupportedMediaType(format!(
            "{media_type} (opaque flows need `{MAX_GRAIN_SIZE_KEY}`)"
        ))
    })?;
    if !(1..=MAX_OPAQUE_GRAIN_SIZE).contains(&max) {
        return Err(invalid(
            MAX_GRAIN_SIZE_KEY,
            format!("{max} not in 1..={MAX_OPAQUE_GRAIN_SIZE}"),
        ));
    }
    Ok((
        MediaFormat::Opaque {
            media_type: media_type.to_owned(),
            max_grain_size: max,
        },
        rate,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn video(format: VideoFormat, w: u32, h: u32) -> GrainGeometry {
        FlowDef::video(
            Uuid::nil(),
            "t",
            format,
            w,
            h,
            Rational::new(25, 1),
            InterlaceMode::Progressive,
        )
        .unwrap()
        .grain_geometry()
        .unwrap()
    }

    #[test]
    fn v210_sizes_follow_mxl() {
        // MXL MediaUtils: 1920 -> 5120 B/line, 1280 -> 3456, 3840 -> 10240.
        assert_eq!(video(VideoFormat::V210, 1920, 1080).grain_size, 5_529_600);
        assert_eq!(video(VideoFormat::V210, 1920, 1080).slice_sizes[0], 5120);
        assert_eq!(video(VideoFormat::V210, 1280, 720).slice_sizes[0], 3456);
        assert_eq!(video(VideoFormat::V210, 3840, 2160).slice_sizes[0], 10240);
        let a = video(VideoFormat::V210a, 1920, 1080);
        assert_eq!(a.slice_sizes[..2], [5120, 2560]);
        assert_eq!(a.grain_size, (5120 + 2560) * 1080);
    }

    #[test]
    fn other_video_sizes() {
        assert_eq!(
            video(VideoFormat::Uyvy, 1280, 720).grain_size,
            1280 * 720 * 2
        );
        assert_eq!(
            video(VideoFormat::Yuy2, 1280, 720).grain_size,
            1280 * 720 * 2
        );
        assert_eq!(
            video(VideoFormat::I420, 1280, 720).grain_size,
            1280 * 720 * 3 / 2
        );
        assert_eq!(video(VideoFormat::I420, 1280, 720).total_slices, 360);
        assert_eq!(
            video(VideoFormat::Nv12, 1920, 1080).grain_size,
            1920 * 1080 * 3 / 2
        );
        assert_eq!(
            video(VideoFormat::I422_10le, 1920, 1080).grain_size,
            1920 * 1080 * 4
        );
        assert_eq!(
            video(VideoFormat::P010_10le, 1920, 1080).grain_size,
            1920 * 1080 * 3
        );
        assert_eq!(video(VideoFormat::Rgba, 640, 480).grain_size, 640 * 480 * 4);
        assert_eq!(video(VideoFormat::Bgra, 640, 480).grain_size, 640 * 480 * 4);
        // RFC 4175: 1920 pixels = 960 pgroups of 5 bytes = 4800 B per line.
        assert_eq!(video(VideoFormat::Uyvp, 1920, 1080).slice_sizes[0], 4800);
        let g = video(VideoFormat::I420, 4, 2);
        assert_eq!(g.plane_offset(1), 8);
        assert_eq!(g.plane_offset(2), 10);
        assert_eq!(VideoFormat::I420.planes(4, 2), vec![(4, 2), (2, 1), (2, 1)]);
        assert_eq!(VideoFormat::Nv12.planes(4, 2), vec![(4, 2), (4, 1)]);
        assert_eq!(VideoFormat::V210.planes(48, 3), vec![(128, 3)]);
        for f in VideoFormat::ALL {
            let total: usize = f.planes(64, 8).iter().map(|(r, n)| r * n).sum();
            assert_eq!(total, video(f, 64, 8).grain_size as usize, "{f:?}");
        }
    }

    #[test]
    fn interlaced_is_one_field_per_grain_at_double_rate() {
        let d = FlowDef::video(
            Uuid::nil(),
            "i",
            VideoFormat::V210,
            1920,
            1080,
            Rational::new(30000, 1001),
            InterlaceMode::InterlacedTff,
        )
        .unwrap();
        assert_eq!(d.index_rate(), Rational::new(60000, 1001));
        assert_eq!(d.grain_geometry().unwrap().total_slices, 540);
        assert_eq!(d.grain_geometry().unwrap().grain_size, 5120 * 540);
    }

    #[test]
    fn pcm_and_data() {
        let d = FlowDef::pcm(Uuid::nil(), "a", PcmFormat::S24Be, 48000, 2, 48).unwrap();
        assert_eq!(d.grain_geometry().unwrap().grain_size, 48 * 2 * 3);
        assert_eq!(d.index_rate(), Rational::new(1000, 1));
        let d = FlowDef::ancillary(Uuid::nil(), "d", Rational::new(50, 1)).unwrap();
        assert_eq!(d.grain_geometry().unwrap().grain_size, 4096);
        assert_eq!(d.grain_geometry().unwrap().total_slices, 4096);
        let d = FlowDef::opaque(
            Uuid::nil(),
            "h",
            "video/H264",
            Rational::new(25, 1),
            1 << 20,
        )
        .unwrap();
        assert_eq!(d.data_format(), crate::flow::layout::DATA_FORMAT_VIDEO);
        let back = FlowDef::parse(&d.to_json_string()).unwrap();
        assert_eq!(back.media, d.media);
    }

    #[test]
    fn bad_definitions_are_typed_errors() {
        let good = FlowDef::video(
            Uuid::nil(),
            "t",
            VideoFormat::V210,
            1920,
            1080,
            Rational::new(25, 1),
            InterlaceMode::Progressive,
        )
        .unwrap()
        .json;
        let with = |k: &str, v: Value| {
            let mut j = good.clone();
            j[k] = v;
            FlowDef::from_json(j)
        };
        assert!(matches!(
            with("frame_width", 0.into()),
            Err(FlowDefError::Invalid {
                field: "frame_width",
                ..
            })
        ));
        assert!(matches!(
            with("frame_width", 100_000.into()),
            Err(FlowDefError::Invalid { .. })
        ));
        assert!(matches!(
            with("frame_height", 100_000.into()),
            Err(FlowDefError::Invalid { .. })
        ));
        assert!(matches!(
            with("frame_height", (-5).into()),
            Err(FlowDefError::Invalid { .. })
        ));
        assert!(matches!(
            with("grain_rate", json!({"numerator": 0, "denominator": 0})),
            Err(FlowDefError::Invalid {
                field: "grain_rate",
                ..
            })
        ));
        assert!(matches!(
            with("id", "not-a-uuid".into()),
            Err(FlowDefError::Invalid { field: "id", .. })
        ));
        assert!(matches!(
            with("media_type", "video/unknown-thing".into()),
            Err(FlowDefError::UnsupportedMediaType(_))
        ));
        let mut j = good.clone();
        j.as_object_mut().unwrap().remove("frame_height");
        assert_eq!(
            FlowDef::from_json(j),
            Err(FlowDefError::Missing("frame_height"))
        );
        assert!(matches!(
            FlowDef::parse("{\"id\": "),
            Err(FlowDefError::Json(_))
        ));
        assert!(matches!(
            FlowDef::parse("[1,2]"),
            Err(FlowDefError::Invalid { .. })
        ));
        assert!(matches!(
            FlowDef::video(
                Uuid::nil(),
                "t",
                VideoFormat::Uyvy,
                1281,
                720,
                Rational::new(25, 1),
                InterlaceMode::Progressive
            ),
            Err(FlowDefError::Invalid { .. })
        ));
    }
}
