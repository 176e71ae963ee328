// SPDX-License-Identifier: Apache-2.0

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{LazyLock, Mutex};
use std::time::Duration;

use gst::glib;
use gst::prelude::*;
use gst::subclass::prelude::*;
use gst_base::prelude::*;
use gst_base::subclass::prelude::*;
use mcm_core::flow::{Domain, FlowError, SamplesWriter, WriterOptions};
use mcm_core::sdk::{Client, Connection, MeshErrorCode};
use mcm_core::time::{current_index, now_tai_ns, Rational};

use crate::common::{self, ConnSettings, Kind, Mode, Stats, Timing, CAT};
use crate::grainpool::{self, FlowOutput, GrainPool, SharedOutput};

/// How long one wait for room (back-pressure) lasts before checking for a flush.
const WAIT_SLICE: Duration = Duration::from_millis(100);

#[derive(Debug, Default, Clone)]
struct Settings {
    conn: ConnSettings,
}

// One per element: the size difference between variants costs nothing.
#[allow(clippy::large_enum_variant)]
enum Output {
    Direct(SharedOutput),
    /// Live float audio: an MXL continuous flow; `next` is the index of the next sample.
    Samples {
        writer: SamplesWriter,
        next: Option<u64>,
    },
    Sdk {
        conn: Connection,
    },
}

struct Started {
    mode: Mode,
    client: Option<Client>,
    output: Option<Output>,
    caps: Option<gst::Caps>,
    kind: Option<Kind>,
    /// PCM bytes (big-endian) waiting to fill a grain, and the time of their first sample.
    pending: Vec<u8>,
    pending_pts: Option<gst::ClockTime>,
}

#[derive(Default)]
enum State {
    #[default]
    Stopped,
    Started(Box<Started>),
}

#[derive(Default)]
pub struct McmSink {
    settings: Mutex<Settings>,
    state: Mutex<State>,
    stats: Mutex<Stats>,
    flushing: AtomicBool,
}

#[glib::object_subclass]
impl ObjectSubclass for McmSink {
    const NAME: &'static str = "GstMcmSink";
    type Type = super::McmSink;
    type ParentType = gst_base::BaseSink;
}

impl ObjectImpl for McmSink {
    fn properties() -> &'static [glib::ParamSpec] {
        static PROPS: LazyLock<Vec<glib::ParamSpec>> = LazyLock::new(|| {
            let mut v = ConnSettings::properties();
            v.push(common::stats_property());
            v
        });
        PROPS.as_ref()
    }

    fn set_property(&self, _id: usize, value: &glib::Value, pspec: &glib::ParamSpec) {
        let mut s = self.settings.lock().unwrap_or_else(|p| p.into_inner());
        if s.conn.set(pspec.name(), value) {
            gst::debug!(CAT, imp = self, "{} set", pspec.name());
        }
    }

    fn property(&self, _id: usize, pspec: &glib::ParamSpec) -> glib::Value {
        if pspec.name() == "stats" {
            return self
                .stats
                .lock()
                .map(|s| s.structure())
                .unwrap_or_else(|_| Stats::default().structure())
                .to_value();
        }
        let s = self.settings.lock().unwrap_or_else(|p| p.into_inner());
        s.conn
            .get(pspec.name())
            .unwrap_or_else(|| pspec.default_value().clone())
    }

    fn constructed(&self) {
        self.parent_constructed();
        // A reliable sink paces nothing; a live one renders on the clock as usual.
        self.obj().set_sync(false);
        // A last sample kept by basesink is a grain of the pool kept out of the ring: one
        // of the few the pool may lease (two for a reliable ring of 4), so upstream would
        // get ordinary buffers, and copies, whenever it holds more than one (a queue).
        self.obj().set_enable_last_sample(false);
    }
}

impl GstObjectImpl for McmSink {}

impl ElementImpl for McmSink {
    fn metadata() -> Option<&'static gst::subclass::ElementMetadata> {
        static META: LazyLock<gst::subclass::ElementMetadata> = LazyLock::new(|| {
            gst::subclass::ElementMetadata::new(
                "mcm sink",
                "Sink/Video/Network",
                "Publishes raw video into the mcm mesh (shared-memory flows, MXL v1 layout)",
                "mcm developers",
            )
        });
        Some(&*META)
    }

    fn pad_templates() -> &'static [gst::PadTemplate] {
        static TEMPLATES: LazyLock<Vec<gst::PadTemplate>> = LazyLock::new(|| {
            // Raw video in the flow formats is carried as such; any other caps as opaque grains.
            vec![gst::PadTemplate::new(
                "sink",
                gst::PadDirection::Sink,
                gst::PadPresence::Always,
                &gst::Caps::new_any(),
            )
            .expect("valid sink template")]
        });
        TEMPLATES.as_ref()
    }
}

impl McmSink {
    fn open_output(
        &self,
        started: &mut Started,
        caps: &gst::Caps,
    ) -> Result<(Output, Kind), gst::ErrorMessage> {
        let settings = self
            .settings
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let negotiation = |e: String| gst::error_msg!(gst::CoreError::Negotiation, ["{}", e]);
        match &started.mode {
            Mode::Direct { domain, flow_id } => {
                let domain = Domain::create(domain).map_err(|e| {
                    gst::error_msg!(gst::ResourceError::OpenWrite, ["domain: {}", e])
                })?;
                // Live float audio as MXL holds it; reliable (file) work keeps grains, which
                // have back-pressure.
                let float = match settings.conn.reliable {
                    false => common::float_flow_from_caps(caps, *flow_id, "mcmsink")
                        .map_err(negotiation)?,
                    true => None,
                };
                if let Some(def) = float {
                    let writer = domain
                        .create_samples_writer(&def, &WriterOptions::default())
                        .map_err(|e| {
                            gst::error_msg!(
                                gst::ResourceError::OpenWrite,
                                ["flow {}: {}", flow_id, e]
                            )
                        })?;
                    return Ok((Output::Samples { writer, next: None }, Kind::Opaque));
                }
                let (def, kind) = common::flow_def_from_caps(
                    caps,
                    *flow_id,
                    "mcmsink",
                    settings.conn.max_grain_size,
                )
                .map_err(negotiation)?;
                let options = WriterOptions {
                    back_pressure: settings.conn.reliable.then_some(WAIT_SLICE),
                    grain_count: settings.conn.direct_ring(&kind),
                    ..Default::default()
                };
                let writer = domain.create_grain_writer(&def, &options).map_err(|e| {
                    gst::error_msg!(gst::ResourceError::OpenWrite, ["flow {}: {}", flow_id, e])
                })?;
                Ok((
                    Output::Direct(FlowOutput::new(writer, settings.conn.reliable)),
                    kind,
                ))
            }
            Mode::Proxy { connection, .. } => {
                let (_, kind) = common::flow_def_from_caps(
                    caps,
                    uuid::Uuid::nil(),
                    "mcmsink",
                    settings.conn.max_grain_size,
                )
                .map_err(negotiation)?;
                let json =
                    common::sdk_connection(connection, &kind, caps, settings.conn.max_grain_size)
                        .map_err(|e| negotiation(format!("{caps}: {e}")))?;
                let client = started
                    .client
                    .as_ref()
                    .ok_or_else(|| gst::error_msg!(gst::CoreError::Failed, ["no client"]))?;
                let conn = client
                    .create_tx_connection(&json.to_string())
                    .map_err(|e| gst::error_msg!(gst::ResourceError::OpenWrite, ["{}", e]))?;
                Ok((Output::Sdk { conn }, kind))
            }
        }
    }

    fn end_stream(output: &mut Output) {
        match output {
            Output::Direct(output) => {
                let _ = grainpool::lock(output).writer.end_of_stream();
            }
            Output::Samples { writer, .. } => {
                let _ = writer.end_of_stream();
            }
            Output::Sdk { conn } => {
                let _ = conn.shutdown();
            }
        }
    }
}

impl McmSink {
    /// Writes one PCM grain; returns the timestamp of the sample after it.
    fn write_pcm(
        &self,
        output: &mut Output,
        kind: &Kind,
        chunk: &[u8],
        pts: Option<gst::ClockTime>,
    ) -> Result<Option<gst::ClockTime>, gst::FlowError> {
        let Kind::Pcm { rate, frame, .. } = *kind else {
            return Err(gst::FlowError::Error);
        };
        let samples = (chunk.len() / frame) as u64;
        let duration = gst::ClockTime::SECOND.mul_div_floor(samples, u64::from(rate));
        let timing = Timing {
            pts,
            dts: None,
            duration,
            flags: 0,
        };
        self.write_grain(
            output,
            &|payload: &mut [u8]| copy_unit(chunk, payload).map_err(|_| gst::FlowError::Error),
            timing,
            false,
        )?;
        Ok(pts.zip(duration).map(|(p, d)| p + d))
    }

    /// Opens the next grain (waiting for room in reliable mode, a slice at a time so a
    /// flush is noticed), fills it, stores the buffer timing in its metadata and commits.
    fn write_grain(
        &self,
        output: &mut Output,
        fill: &dyn Fn(&mut [u8]) -> Result<usize, gst::FlowError>,
        timing: Timing,
        first_field: bool,
    ) -> Result<(), gst::FlowError> {
        let fail = |msg: String| {
            gst::element_imp_error!(self, gst::ResourceError::Write, ["{}", msg]);
            gst::FlowError::Error
        };
        let timing = timing.encode();
        let (index, len, rate) = match output {
            Output::Direct(output) => {
                let mut out = grainpool::lock(output);
                let mut index = out.next_index();
                if first_field && index % 2 == 1 {
                    // A frame's first field sits at an even field index (MXL interlaced flows).
                    index += 1;
                }
                let rate = out.writer.grain_rate();
                let writer = &mut out.writer;
                let mut grain = loop {
                    match writer.open_grain(index) {
                        Ok(g) => break g,
                        Err(FlowError::BackPressureTimeout { .. })
                            if !self.flushing.load(Ordering::Acquire) =>
                        {
                            continue
                        }
                        Err(FlowError::BackPressureTimeout { .. }) => {
                            return Err(gst::FlowError::Flushing)
                        }
                        Err(e) => return Err(fail(e.to_string())),
                    }
                };
                let len = fill(grain.payload())?;
                if let Some(meta) = grain.metadata().get_mut(..timing.len()) {
                    meta.copy_from_slice(&timing);
                    let _ = grain.set_metadata_len(timing.len());
                }
                grain.commit_len(len).map_err(|e| fail(e.to_string()))?;
                out.committed(index);
                (index, len, rate)
            }
            Output::Samples { .. } => return Err(fail("a sample flow has no grains".into())),
            Output::Sdk { conn } => {
                let rate = conn.config().grain_rate();
                let mut buf = loop {
                    match conn.get_buffer(Some(WAIT_SLICE)) {
                        Ok(b) => break b,
                        Err(e)
                            if e.code == MeshErrorCode::Timeout
                                && !self.flushing.load(Ordering::Acquire) =>
                        {
                            continue
                        }
                        Err(e) if e.code == MeshErrorCode::Timeout => {
                            return Err(gst::FlowError::Flushing)
                        }
                        Err(e) => return Err(fail(e.to_string())),
                    }
                };
                let len = fill(buf.payload_mut().map_err(|_| gst::FlowError::Error)?)?;
                buf.set_payload_len(len).map_err(|e| fail(e.to_string()))?;
                if let Ok(Some(meta)) = buf.metadata_mut().map(|m| m.get_mut(..timing.len())) {
                    meta.copy_from_slice(&timing);
                    let _ = buf.set_metadata_len(timing.len());
                }
                let index = buf.seq();
                buf.put().map_err(|e| fail(e.to_string()))?;
                (index, len, rate)
            }
        };
        self.count(index, len, rate, true);
        Ok(())
    }

    fn count(&self, index: u64, len: usize, rate: Rational, copied: bool) {
        let mut stats = self.stats.lock().unwrap_or_else(|p| p.into_inner());
        stats.grains += 1;
        stats.bytes += len as u64;
        stats.copies += u64::from(copied);
        stats.latency_ns =
            now_tai_ns().saturating_sub(mcm_core::time::index_to_timestamp(rate, index));
        gst::trace!(
            CAT,
            imp = self,
            "grain {index} committed, {len} bytes, copied: {copied}"
        );
    }

    /// Writes interleaved float samples into the channel rings of a continuous flow, in
    /// windows of at most half the ring (MXL), contiguous with the previous buffer.
    fn write_samples(
        &self,
        writer: &mut SamplesWriter,
        next: &mut Option<u64>,
        data: &[u8],
    ) -> Result<(), String> {
        let channels = writer.channels() as usize;
        let width = match writer.flow_def().media {
            mcm_core::format::MediaFormat::Audio { format, .. } => format.word_size() as usize,
            _ => return Err("not an audio flow".into()),
        };
        let frame = channels * width;
        if frame == 0 || !data.len().is_multiple_of(frame) {
            return Err(format!(
                "buffer of {} bytes is not whole samples of {frame} bytes",
                data.len()
            ));
        }
        let total = (data.len() / frame) as u64;
        let start = *next.get_or_insert_with(|| current_index(writer.sample_rate()));
        let max = writer.max_write_length().max(1);
        let mut done = 0u64;
        while done < total {
            let n = (total - done).min(max);
            let end = start + done + n;
            let chunk = &data[done as usize * frame..(done + n) as usize * frame];
            let mut window = writer.open_samples(end, n).map_err(|e| e.to_string())?;
            for c in 0..channels {
                common::deinterleave(chunk, frame, c, width, window.channel(c as u32));
            }
            window.commit();
            done += n;
        }
        *next = Some(start + total);
        self.count(start + total, data.len(), writer.sample_rate(), true);
        Ok(())
    }

    /// Commits a buffer from our pool in place: upstream wrote the frame into the grain.
    /// `false` if the buffer is not one of our grains (or no longer committable): copy it.
    fn commit_in_place(&self, output: &Output, buffer: &gst::BufferRef, len: usize) -> bool {
        let Output::Direct(output) = output else {
            return false;
        };
        if buffer.n_memory() != 1 {
            return false;
        }
        let Ok(map) = buffer.map_readable() else {
            return false;
        };
        let (addr, size) = (map.as_ptr() as usize, map.len());
        drop(map);
        let mut out = grainpool::lock(output);
        let Some(index) = out.take_lease(addr) else {
            return false;
        };
        if size != len {
            return false;
        }
        let timing = Timing::of(buffer).encode();
        match out.writer.commit_lease(index, len, &timing) {
            Ok(()) => {
                out.committed(index);
                let rate = out.writer.grain_rate();
                drop(out);
                self.count(index, len, rate, false);
                true
            }
            Err(e) => {
                gst::debug!(CAT, imp = self, "grain {index} not committed in place: {e}");
                false
            }
        }
    }
}

/// Copies one unit into a grain payload; an error if it does not fit.
fn copy_unit(unit: &[u8], payload: &mut [u8]) -> Result<usize, String> {
    let capacity = payload.len();
    payload
        .get_mut(..unit.len())
        .ok_or_else(|| {
            format!(
                "buffer of {} bytes exceeds max-grain-size {capacity}",
                unit.len()
            )
        })?
        .copy_from_slice(unit);
    Ok(unit.len())
}

impl BaseSinkImpl for McmSink {
    fn start(&self) -> Result<(), gst::ErrorMessage> {
        let settings = self
            .settings
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let mode = settings
            .conn
            .mode()
            .map_err(|e| gst::error_msg!(gst::ResourceError::Settings, ["{}", e]))?;
        let client = match &mode {
            Mode::Proxy { client_json, .. } => Some(Client::new(client_json).map_err(|e| {
                gst::error_msg!(gst::ResourceError::OpenWrite, ["media proxy: {}", e])
            })?),
            Mode::Direct { .. } => None,
        };
        *self.stats.lock().unwrap_or_else(|p| p.into_inner()) = Stats::default();
        *self.state.lock().unwrap_or_else(|p| p.into_inner()) = State::Started(Box::new(Started {
            mode,
            client,
            output: None,
            caps: None,
            kind: None,
            pending: Vec::new(),
            pending_pts: None,
        }));
        gst::info!(CAT, imp = self, "started");
        Ok(())
    }

    fn stop(&self) -> Result<(), gst::ErrorMessage> {
        *self.state.lock().unwrap_or_else(|p| p.into_inner()) = State::Stopped;
        gst::info!(
            CAT,
            imp = self,
            "stopped; {:?}",
            self.stats.lock().map(|s| *s).unwrap_or_default()
        );
        Ok(())
    }

    fn set_caps(&self, caps: &gst::Caps) -> Result<(), gst::LoggableError> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let State::Started(started) = &mut *state else {
            return Err(gst::loggable_error!(CAT, "caps before start"));
        };
        if started.caps.as_ref() == Some(caps) {
            return Ok(());
        }
        // New caps: a flow with the new description replaces the old one, which reliable
        // receivers read to its end first. Receivers of a direct flow follow the new one
        // (no end of stream); through the proxy the old connection ends.
        match started.output.take() {
            Some(Output::Direct(old)) => {
                let _ = grainpool::lock(&old).writer.drain();
            }
            Some(Output::Samples { .. }) | None => {}
            Some(mut old) => Self::end_stream(&mut old),
        }
        match self.open_output(started, caps) {
            Ok((output, kind)) => {
                started.output = Some(output);
                started.kind = Some(kind);
                started.caps = Some(caps.clone());
                Ok(())
            }
            Err(e) => {
                self.post_error_message(e);
                Err(gst::loggable_error!(CAT, "cannot open a flow for {caps}"))
            }
        }
    }

    fn render(&self, buffer: &gst::Buffer) -> Result<gst::FlowSuccess, gst::FlowError> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let State::Started(started) = &mut *state else {
            return Err(gst::FlowError::Flushing);
        };
        let Some(kind) = started.kind.clone() else {
            return Err(gst::FlowError::NotNegotiated);
        };
        let Some(output) = started.output.as_mut() else {
            return Err(gst::FlowError::NotNegotiated);
        };
        if let Output::Samples { writer, next } = output {
            let map = buffer.map_readable().map_err(|_| gst::FlowError::Error)?;
            return match self.write_samples(writer, next, &map) {
                Ok(()) => Ok(gst::FlowSuccess::Ok),
                Err(e) => {
                    gst::element_imp_error!(self, gst::StreamError::Failed, ["{}", e]);
                    Err(gst::FlowError::Error)
                }
            };
        }
        if let Kind::Pcm {
            width,
            little_endian,
            ..
        } = kind
        {
            // PCM is cut into fixed grains (1 ms where the rate allows); what does not fill a
            // grain waits for the next buffer, and the end of stream flushes it short.
            let map = buffer.map_readable().map_err(|_| gst::FlowError::Error)?;
            let start = started.pending.len();
            started.pending.extend_from_slice(&map);
            if little_endian {
                common::swap_samples(&mut started.pending[start..], width);
            }
            if start == 0 {
                started.pending_pts = buffer.pts();
            }
            let grain = kind.pcm_grain_bytes().unwrap_or(1);
            while started.pending.len() >= grain {
                let chunk: Vec<u8> = started.pending.drain(..grain).collect();
                started.pending_pts = self.write_pcm(output, &kind, &chunk, started.pending_pts)?;
            }
            return Ok(gst::FlowSuccess::Ok);
        }
        let fail = |msg: String| {
            gst::element_imp_error!(self, gst::StreamError::Failed, ["{}", msg]);
            gst::FlowError::Error
        };
        if let Kind::Raw {
            planes,
            fields: None,
            ..
        } = &kind
        {
            let len = planes.iter().map(|(r, n)| r * n).sum();
            if self.commit_in_place(output, buffer.as_ref(), len) {
                return Ok(gst::FlowSuccess::Ok);
            }
        }
        let (kind_ref, fail) = (&kind, &fail);
        let fill = |field: Option<common::Field>| {
            move |payload: &mut [u8]| -> Result<usize, gst::FlowError> {
                match kind_ref {
                    Kind::Raw { info, planes, .. } => {
                        let frame = gst_video::VideoFrameRef::from_buffer_ref_readable(
                            buffer.as_ref(),
                            info,
                        )
                        .map_err(|_| fail("buffer does not match its caps".into()))?;
                        common::frame_to_grain(&frame, planes, field, payload).map_err(fail)?;
                        Ok(planes.iter().map(|(r, n)| r * n).sum())
                    }
                    Kind::Anc => {
                        let map = buffer.map_readable().map_err(|_| gst::FlowError::Error)?;
                        let grain = common::st2038_to_grain(&map).map_err(fail)?;
                        copy_unit(&grain, payload).map_err(fail)
                    }
                    _ => {
                        let map = buffer.map_readable().map_err(|_| gst::FlowError::Error)?;
                        copy_unit(&map, payload).map_err(fail)
                    }
                }
            }
        };
        match &kind {
            // Interlaced: each field is a grain, the first at an even index.
            Kind::Raw {
                fields: Some([first, second]),
                ..
            } => {
                let timing = Timing::of(buffer);
                self.write_grain(output, &fill(Some(*first)), timing, true)?;
                self.write_grain(output, &fill(Some(*second)), timing, false)?;
            }
            _ => self.write_grain(output, &fill(None), Timing::of(buffer), false)?,
        }
        Ok(gst::FlowSuccess::Ok)
    }

    fn event(&self, event: gst::Event) -> bool {
        if let gst::EventView::Eos(_) = event.view() {
            let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
            if let State::Started(started) = &mut *state {
                if let (Some(output), Some(kind)) = (started.output.as_mut(), started.kind.clone())
                {
                    // The last PCM grain holds what is left: shorter, never padded.
                    if !started.pending.is_empty() {
                        let rest = std::mem::take(&mut started.pending);
                        let _ = self.write_pcm(output, &kind, &rest, started.pending_pts);
                    }
                    Self::end_stream(output);
                }
            }
            gst::debug!(
                CAT,
                imp = self,
                "end of stream; {:?}",
                self.stats.lock().map(|s| *s).unwrap_or_default()
            );
        }
        self.parent_event(event)
    }

    /// Raw video into a flow written directly: offer grains of the flow as buffers, when
    /// their layout is GStreamer's default one for the caps (then upstream writes in place).
    fn propose_allocation(
        &self,
        query: &mut gst::query::Allocation,
    ) -> Result<(), gst::LoggableError> {
        query.add_allocation_meta::<gst_video::VideoMeta>(None);
        let (caps, need_pool) = query.get_owned();
        let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let State::Started(started) = &*state else {
            return Ok(());
        };
        let (Some(caps), true) = (caps, need_pool) else {
            return Ok(());
        };
        if started.caps.as_ref() != Some(&caps) {
            return Ok(());
        }
        let (
            Some(Output::Direct(output)),
            Some(Kind::Raw {
                info,
                planes,
                fields: None,
            }),
        ) = (started.output.as_ref(), started.kind.as_ref())
        else {
            return Ok(());
        };
        if !common::layout_matches(info, planes) {
            gst::debug!(
                CAT,
                imp = self,
                "{caps}: grain layout differs from GStreamer's; copying"
            );
            return Ok(());
        }
        // Leases shorten the history readers see, and a grain leased ahead is rewritten
        // before the head shows it: at most half the ring ahead, which is the margin an
        // mcmsrc lending grains keeps (see mcmsrc/lease.rs), and two grains for readers.
        let grains = grainpool::lock(output).writer.grain_count() as usize;
        let max = grains.saturating_sub(2).min(grains / 2).max(1);
        let pool = GrainPool::new(output, max);
        let mut config = pool.config();
        config.set_params(Some(&caps), info.size() as u32, 0, max as u32);
        pool.set_config(config)
            .map_err(|_| gst::loggable_error!(CAT, "grain pool refused its configuration"))?;
        query.add_allocation_pool(Some(&pool), info.size() as u32, 0, max as u32);
        gst::debug!(
            CAT,
            imp = self,
            "proposing a pool of up to {max} grains for {caps}"
        );
        Ok(())
    }

    fn unlock(&self) -> Result<(), gst::ErrorMessage> {
        self.flushing.store(true, Ordering::Release);
        Ok(())
    }

    fn unlock_stop(&self) -> Result<(), gst::ErrorMessage> {
        self.flushing.store(false, Ordering::Release);
        Ok(())
    }
}
