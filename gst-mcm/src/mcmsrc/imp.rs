// SPDX-License-Identifier: Apache-2.0

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use gst::glib;
use gst::prelude::*;
use gst::subclass::prelude::*;
use gst_base::prelude::*;
use gst_base::subclass::base_src::CreateSuccess;
use gst_base::subclass::prelude::*;
use mcm_core::flow::{Domain, FlowError, FollowError, Follower, HeldGrain};
use mcm_core::format::FlowDef;
use mcm_core::sdk::{Client, Connection, MeshErrorCode};
use mcm_core::time::{index_to_timestamp, now_tai_ns};

use super::lease::{near_writer, Counts, Leases};
use super::samples::SamplesInput;
use crate::common::{self, ConnSettings, Kind, Mode, Stats, Timing, CAT};

/// How long one wait for a grain lasts before checking for a flush.
const WAIT_SLICE: Duration = Duration::from_millis(100);

#[derive(Debug, Clone)]
struct Settings {
    conn: ConnSettings,
    is_live: bool,
    zero_copy: bool,
    /// Milliseconds without a grain after which the source fails; 0 waits for ever.
    sender_timeout_ms: u32,
    /// On a sender timeout, end the stream (EOS) instead of failing.
    sender_timeout_eos: bool,
    /// Microseconds of busy-polling either side of a grain's expected arrival; 0: never.
    busy_poll_us: u32,
    /// An ST 2110 SDP file describing the stream to receive.
    sdp_file: Option<String>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            conn: ConnSettings::default(),
            is_live: true,
            zero_copy: true,
            sender_timeout_ms: 0,
            sender_timeout_eos: false,
            busy_poll_us: 0,
            sdp_file: None,
        }
    }
}

// One per element: the size difference between variants costs nothing.
#[allow(clippy::large_enum_variant)]
enum Input {
    Direct(Follower),
    /// A continuous flow (MXL float audio).
    Samples(SamplesInput),
    Sdk {
        _client: Client,
        conn: Connection,
    },
}

struct Started {
    input: Input,
    /// Flow description behind the current caps.
    def: Option<FlowDef>,
    kind: Option<Kind>,
    pool: Option<gst::BufferPool>,
    first_index: Option<u64>,
    /// Timestamp of the last live buffer: live timestamps never go backwards.
    last_pts: Option<gst::ClockTime>,
    /// TAI minus pipeline clock, in nanoseconds, for live timestamps.
    tai_offset: Option<i128>,
    /// Interlaced: the frame whose first field has arrived, waiting for the second.
    pending_field: Option<(u64, gst::Buffer, Option<Timing>)>,
    /// Zero copy: the grains lent downstream, copied out before the writer reuses them.
    leases: Option<Leases>,
    /// Lease overwrites already warned about.
    overwritten_seen: u64,
    /// Buffers can wrap grain memory: the grain layout is the buffer layout.
    wrap: bool,
    /// The caps the stream was configured with (property, or the SDP file's).
    configured_caps: Option<gst::Caps>,
    /// Caps of the flow last taken on, until a buffer carries them: they go out with the
    /// next buffer, however many `create` calls (a flush, a timeout) come first.
    pending_caps: Option<gst::Caps>,
}

#[derive(Default)]
enum State {
    #[default]
    Stopped,
    Started(Box<Started>),
}

#[derive(Default)]
pub struct McmSrc {
    settings: Mutex<Settings>,
    state: Mutex<State>,
    stats: Mutex<Stats>,
    /// Zero copy: what the leases came to (added to `stats`).
    lease_counts: Arc<Counts>,
    flushing: AtomicBool,
}

#[glib::object_subclass]
impl ObjectSubclass for McmSrc {
    const NAME: &'static str = "GstMcmSrc";
    type Type = super::McmSrc;
    type ParentType = gst_base::PushSrc;
}

impl ObjectImpl for McmSrc {
    fn properties() -> &'static [glib::ParamSpec] {
        static PROPS: LazyLock<Vec<glib::ParamSpec>> = LazyLock::new(|| {
            let mut v = ConnSettings::properties();
            v.push(
                glib::ParamSpecBoolean::builder("is-live")
                    .nick("Live")
                    .blurb("Act as a live source, timestamping with the pipeline clock (ignored when reliable)")
                    .default_value(true)
                    .mutable_ready()
                    .build(),
            );
            v.push(
                glib::ParamSpecBoolean::builder("zero-copy")
                    .nick("Zero copy")
                    .blurb("Push buffers whose memory is the grain itself when the layouts match (no copy). A buffer kept downstream is copied out of its grain once a live writer comes within half the flow's ring of it (a reliable one, once the source has read all it wrote: it may be waiting for the buffer) or the source stops, so an unmapped buffer neither stalls a reliable writer nor sees a live one reuse its grain (counted in stats as copies; one still mapped when a live writer reuses the grain is counted as overwritten). false: copy every grain into a pooled buffer")
                    .default_value(true)
                    .mutable_ready()
                    .build(),
            );
            v.push(
                glib::ParamSpecUInt::builder("sender-timeout")
                    .nick("Sender timeout")
                    .blurb("Milliseconds without a grain (sender gone without ending its stream) after which the source posts an error; 0 waits for ever. A sender that ends its stream always gives EOS")
                    .default_value(0)
                    .mutable_ready()
                    .build(),
            );
            v.push(
                glib::ParamSpecBoolean::builder("sender-timeout-eos")
                    .nick("EOS on sender timeout")
                    .blurb("When sender-timeout expires, end the stream (EOS, with a warning) instead of posting an error")
                    .default_value(false)
                    .mutable_ready()
                    .build(),
            );
            v.push(
                glib::ParamSpecUInt::builder("busy-poll")
                    .nick("Busy poll")
                    .blurb("Microseconds of busy-polling either side of the moment the next grain is expected (learned from the stream's rhythm), for the lowest latency on a live stream; costs up to twice this much CPU per grain. 0 sleeps until woken")
                    .maximum(100_000)
                    .default_value(0)
                    .mutable_ready()
                    .build(),
            );
            v.push(
                glib::ParamSpecString::builder("sdp-file")
                    .nick("SDP file")
                    .blurb("ST 2110 SDP of the stream to receive through the proxy (e.g. from the sender, `mcm sdp` or an NMOS transport file): sets conn-type st2110, ip-addr (c=), mcast-sip-addr (a=source-filter), port, payload-type, transport (raw: st2110-20, L16/L24: -30, smpte291: -40, jxsv and x-mcm-compressed: -22) and, unless given, caps (raw: v210, UYVY, I420, P010_10LE or RGBA by sampling and depth)")
                    .mutable_ready()
                    .build(),
            );
            v.push(common::stats_property());
            v
        });
        PROPS.as_ref()
    }

    fn set_property(&self, _id: usize, value: &glib::Value, pspec: &glib::ParamSpec) {
        let live = {
            let mut s = self.settings.lock().unwrap_or_else(|p| p.into_inner());
            if pspec.name() == "is-live" {
                s.is_live = value.get().unwrap_or(true);
            } else if pspec.name() == "zero-copy" {
                s.zero_copy = value.get().unwrap_or(false);
            } else if pspec.name() == "sender-timeout" {
                s.sender_timeout_ms = value.get().unwrap_or(0);
            } else if pspec.name() == "sender-timeout-eos" {
                s.sender_timeout_eos = value.get().unwrap_or(false);
            } else if pspec.name() == "busy-poll" {
                s.busy_poll_us = value.get().unwrap_or(0);
            } else if pspec.name() == "sdp-file" {
                s.sdp_file = value
                    .get::<Option<String>>()
                    .ok()
                    .flatten()
                    .filter(|p| !p.is_empty());
            } else {
                s.conn.set(pspec.name(), value);
            }
            s.is_live && !s.conn.reliable
        };
        // Liveness decides the READY->PAUSED answer (no preroll), so it is set right away.
        self.obj().set_live(live);
    }

    fn property(&self, _id: usize, pspec: &glib::ParamSpec) -> glib::Value {
        match pspec.name() {
            "stats" => self.stats().structure().to_value(),
            "sender-timeout" => self
                .settings
                .lock()
                .map(|s| s.sender_timeout_ms)
                .unwrap_or(0)
                .to_value(),
            "sender-timeout-eos" => self
                .settings
                .lock()
                .map(|s| s.sender_timeout_eos)
                .unwrap_or(false)
                .to_value(),
            "busy-poll" => self
                .settings
                .lock()
                .map(|s| s.busy_poll_us)
                .unwrap_or(0)
                .to_value(),
            "sdp-file" => self
                .settings
                .lock()
                .map(|s| s.sdp_file.clone())
                .unwrap_or_default()
                .to_value(),
            "zero-copy" => self
                .settings
                .lock()
                .map(|s| s.zero_copy)
                .unwrap_or(false)
                .to_value(),
            "is-live" => self
                .settings
                .lock()
                .map(|s| s.is_live)
                .unwrap_or(true)
                .to_value(),
            name => {
                let s = self.settings.lock().unwrap_or_else(|p| p.into_inner());
                s.conn
                    .get(name)
                    .unwrap_or_else(|| pspec.default_value().clone())
            }
        }
    }

    fn constructed(&self) {
        self.parent_constructed();
        self.obj().set_format(gst::Format::Time);
        self.obj().set_live(true);
    }
}

impl GstObjectImpl for McmSrc {}

impl ElementImpl for McmSrc {
    fn metadata() -> Option<&'static gst::subclass::ElementMetadata> {
        static META: LazyLock<gst::subclass::ElementMetadata> = LazyLock::new(|| {
            gst::subclass::ElementMetadata::new(
                "mcm source",
                "Source/Video/Network",
                "Subscribes to a stream in the mcm mesh (shared-memory flows, MXL v1 layout)",
                "mcm developers",
            )
        });
        Some(&*META)
    }

    fn pad_templates() -> &'static [gst::PadTemplate] {
        static TEMPLATES: LazyLock<Vec<gst::PadTemplate>> = LazyLock::new(|| {
            vec![gst::PadTemplate::new(
                "src",
                gst::PadDirection::Src,
                gst::PadPresence::Always,
                &gst::Caps::new_any(),
            )
            .expect("valid src template")]
        });
        TEMPLATES.as_ref()
    }
}

/// One grain turned into a buffer, and the caps to set first if the flow changed.
struct Received {
    index: u64,
    timing: Option<Timing>,
    buffer: gst::Buffer,
    caps: Option<gst::Caps>,
    /// The buffer's memory is the grain (zero copy), not a copy of it.
    lent: bool,
}

/// A follower call that brought no grain, as `create` goes on.
enum Missed {
    /// A wait slice went by: look again.
    Again,
    /// The flow holds samples, not grains: read it as such from now on.
    Samples(Box<SamplesInput>),
    /// End `create` with this.
    End(gst::FlowError),
}

/// `adopt` on `started`'s fields, its caps left in `started.pending_caps` for the next
/// buffer; an error ends `create`. A macro, not a method: the call sites hold
/// `started.input` borrowed, and only field-by-field borrows leave it alone.
macro_rules! take_on {
    ($imp:expr, $started:expr, $def:expr, $configured:expr) => {
        $started.pending_caps = Some(
            adopt(
                &mut $started.def,
                &mut $started.kind,
                &mut $started.pool,
                &mut $started.wrap,
                $def,
                $configured,
            )
            .map_err(|e| $imp.flow_error(e))?,
        )
    };
}

/// Takes on a (new) flow description: its kind, caps and, for raw video, a buffer pool so
/// frames do not cost a fresh allocation (and its page faults) each.
fn adopt(
    def_slot: &mut Option<FlowDef>,
    kind_slot: &mut Option<Kind>,
    pool_slot: &mut Option<gst::BufferPool>,
    wrap_slot: &mut bool,
    def: Option<FlowDef>,
    configured: Option<gst::Caps>,
) -> Result<gst::Caps, String> {
    let caps = match &def {
        Some(d) => common::caps_from_def(d)
            .ok_or_else(|| format!("flow media {:?} has no caps", d.media))?,
        None => configured.ok_or("proxy mode needs the caps property")?,
    };
    let (_, kind) = common::flow_def_from_caps(
        &caps,
        uuid::Uuid::nil(),
        "mcmsrc",
        mcm_core::format::MAX_OPAQUE_GRAIN_SIZE,
    )?;
    if let Some(old) = pool_slot.take() {
        let _ = old.set_active(false);
    }
    if let Kind::Raw { info, .. } = &kind {
        let pool = gst_video::VideoBufferPool::new();
        let mut config = pool.config();
        config.set_params(Some(&caps), info.size() as u32, 2, 0);
        pool.set_config(config).map_err(|e| e.to_string())?;
        pool.set_active(true).map_err(|e| e.to_string())?;
        *pool_slot = Some(pool.upcast());
    }
    *wrap_slot = wrappable(&kind);
    *kind_slot = Some(kind);
    *def_slot = def;
    Ok(caps)
}

/// True when a grain can be handed downstream as it is: same layout as the buffer.
fn wrappable(kind: &Kind) -> bool {
    match kind {
        Kind::Raw {
            info,
            planes,
            fields: None,
        } => common::layout_matches(info, planes),
        // A field is half a frame: never the buffer itself.
        Kind::Raw { .. } => false,
        Kind::Pcm { little_endian, .. } => !little_endian,
        // Converted to ST 2038 on the way out.
        Kind::Anc => false,
        Kind::Opaque => true,
    }
}

/// A buffer whose memory is the grain itself (zero copy): a lease (see [`Leases`]), copied
/// out of the grain before the writer comes back to its slot.
fn wrap_buffer(kind: &Kind, held: HeldGrain, leases: &mut Leases) -> gst::Buffer {
    let len = held.payload().len();
    let duration = match kind {
        Kind::Raw { info, .. } => frame_duration(info),
        Kind::Pcm { rate, frame, .. } => {
            gst::ClockTime::SECOND.mul_div_floor((len / frame) as u64, u64::from(*rate))
        }
        Kind::Anc | Kind::Opaque => None,
    };
    let mut buffer = gst::Buffer::new();
    if let Some(b) = buffer.get_mut() {
        b.append_memory(crate::leasemem::memory(leases.lease(held)));
        b.set_duration(duration);
    }
    buffer
}

/// A video frame buffer for `kind` (from the pool when there is one), its duration set.
fn new_frame(kind: &Kind, pool: Option<&gst::BufferPool>) -> Result<gst::Buffer, String> {
    let Kind::Raw { info, .. } = kind else {
        return Err("not raw video".into());
    };
    let mut buffer = match pool {
        Some(p) => p
            .acquire_buffer(None)
            .map_err(|e| format!("buffer pool: {e:?}"))?,
        None => gst::Buffer::with_size(info.size()).map_err(|e| e.to_string())?,
    };
    if let Some(b) = buffer.get_mut() {
        b.set_duration(frame_duration(info));
    }
    Ok(buffer)
}

/// Copies a grain into a frame buffer: the whole frame, or one `field` of it.
fn fill_frame(
    kind: &Kind,
    buffer: &mut gst::Buffer,
    payload: &[u8],
    field: Option<common::Field>,
) -> Result<(), String> {
    let Kind::Raw { info, planes, .. } = kind else {
        return Err("not raw video".into());
    };
    let buf = buffer.get_mut().ok_or("frame buffer not writable")?;
    let mut frame =
        gst_video::VideoFrameRef::from_buffer_ref_writable(buf, info).map_err(|e| e.to_string())?;
    common::grain_to_frame(payload, planes, field, &mut frame)
}

/// Copies a grain's payload into a buffer laid out as its caps say (one copy).
fn make_buffer(
    kind: &Kind,
    pool: Option<&gst::BufferPool>,
    payload: &[u8],
) -> Result<gst::Buffer, String> {
    match kind {
        Kind::Raw { fields, .. } => {
            let mut buffer = new_frame(kind, pool)?;
            fill_frame(kind, &mut buffer, payload, fields.map(|f| f[0]))?;
            Ok(buffer)
        }
        Kind::Pcm {
            rate,
            width,
            frame,
            little_endian,
            ..
        } => {
            let mut data = payload.to_vec();
            if *little_endian {
                common::swap_samples(&mut data, *width);
            }
            let samples = (data.len() / frame) as u64;
            let mut buffer = gst::Buffer::from_mut_slice(data);
            if let Some(b) = buffer.get_mut() {
                b.set_duration(gst::ClockTime::SECOND.mul_div_floor(samples, u64::from(*rate)));
            }
            Ok(buffer)
        }
        Kind::Anc => Ok(gst::Buffer::from_mut_slice(common::grain_to_st2038(
            payload,
        )?)),
        Kind::Opaque => Ok(gst::Buffer::from_mut_slice(payload.to_vec())),
    }
}

impl McmSrc {
    /// The `stats` property: the streaming thread's counters and the leases'.
    fn stats(&self) -> Stats {
        let mut stats = self.stats.lock().map(|s| *s).unwrap_or_default();
        stats.copies += self.lease_counts.copies.load(Ordering::Relaxed);
        stats.overwritten = self.lease_counts.overwritten.load(Ordering::Relaxed);
        stats
    }

    /// What to do about a follower call that brought no grain.
    fn missed(&self, follower: &Follower, e: FollowError) -> Missed {
        match e {
            FollowError::Timeout(_) => Missed::Again,
            FollowError::Closed => Missed::End(gst::FlowError::Eos),
            FollowError::Failed(FlowError::WrongKind {
                continuous: true, ..
            }) => Missed::Samples(Box::new(SamplesInput::new(
                follower.domain().clone(),
                follower.flow_id(),
            ))),
            FollowError::Failed(e) => Missed::End(self.flow_error(e.to_string())),
        }
    }

    fn flow_error(&self, msg: String) -> gst::FlowError {
        gst::element_imp_error!(self, gst::ResourceError::Read, ["{}", msg]);
        gst::FlowError::Error
    }

    /// [`Self::receive_grain`], with the caps of the flow its grain comes from if they are
    /// new: kept in the state from the moment the flow is taken on (maybe in an earlier
    /// call that returned early: a flush, a timeout) until a buffer carries them.
    fn receive(&self, started: &mut Started) -> Result<Received, gst::FlowError> {
        let mut got = self.receive_grain(started)?;
        got.caps = started.pending_caps.take();
        Ok(got)
    }

    /// Waits for the next grain in slices, so a flush (unlock) is noticed, and turns it into a
    /// buffer straight from shared memory.
    fn receive_grain(&self, started: &mut Started) -> Result<Received, gst::FlowError> {
        let configured = started.configured_caps.clone();
        let (sender_timeout, timeout_eos) = self
            .settings
            .lock()
            .map(|s| (s.sender_timeout_ms, s.sender_timeout_eos))
            .unwrap_or_default();
        let waiting_since = std::time::Instant::now();
        loop {
            if sender_timeout > 0
                && waiting_since.elapsed() >= Duration::from_millis(sender_timeout.into())
            {
                let msg = format!(
                    "no grain from the sender for {sender_timeout} ms (sender-timeout): it stopped without ending its stream"
                );
                if timeout_eos {
                    gst::element_imp_warning!(self, gst::ResourceError::Read, ["{}", msg]);
                    return Err(gst::FlowError::Eos);
                }
                return Err(self.flow_error(msg));
            }
            if self.flushing.load(Ordering::Acquire) {
                return Err(gst::FlowError::Flushing);
            }
            match &mut started.input {
                Input::Direct(follower) => {
                    // The flow's description taken on before its first grain is read, so
                    // that grain can be lent like the others, not copied.
                    if started.leases.is_some() && started.def.is_none() {
                        let def = match follower.open(WAIT_SLICE) {
                            Ok(reader) => reader.flow_def().cloned(),
                            Err(e) => match self.missed(follower, e) {
                                Missed::Again => continue,
                                Missed::Samples(samples) => {
                                    started.input = Input::Samples(*samples);
                                    continue;
                                }
                                Missed::End(e) => return Err(e),
                            },
                        };
                        if def.is_some() {
                            take_on!(self, started, def, None);
                        }
                    }
                    // About to wait for the writer: a reliable one may be waiting for a
                    // grain lent downstream.
                    if let (Some(leases), true) = (&started.leases, follower.caught_up()) {
                        leases.look_waiting();
                    }
                    // Same layout: lend the grain itself if there is room left in the ring.
                    if started.leases.is_some() && started.wrap {
                        let held = match follower.next_held(WAIT_SLICE) {
                            Ok(h) => h,
                            Err(e) => match self.missed(follower, e) {
                                Missed::Again => {
                                    // A wait slice without a grain: a reliable writer may be
                                    // waiting for grains lent downstream.
                                    if let Some(leases) = &started.leases {
                                        leases.release_stalled();
                                    }
                                    continue;
                                }
                                Missed::Samples(samples) => {
                                    started.input = Input::Samples(*samples);
                                    continue;
                                }
                                Missed::End(e) => return Err(e),
                            },
                        };
                        let def = follower.reader().and_then(|r| r.flow_def());
                        let timing = Timing::decode(held.metadata());
                        let index = held.index();
                        if def.map(|d| &d.json) == started.def.as_ref().map(|d| &d.json) {
                            let kind =
                                started.kind.as_ref().ok_or(gst::FlowError::NotNegotiated)?;
                            // Room, counted once the grain is here (downstream may let the
                            // last buffer go meanwhile): with this one, at most three grains
                            // short of the ring for a live writer (which comes back to them
                            // by itself), two for a reliable one (which waits for them, and
                            // whose ring may be short: mcmsink's is 4 grains).
                            let margin = if held.reader().writer_waits() { 1 } else { 2 };
                            let room = (held.reader().held_count() as u64).saturating_add(margin)
                                < held.reader().grain_count();
                            let lent = room && !near_writer(&held);
                            let buffer = if lent {
                                let leases =
                                    started.leases.as_mut().ok_or(gst::FlowError::Error)?;
                                wrap_buffer(kind, held, leases)
                            } else {
                                // A reader lagging by most of the ring (lending the grain
                                // would only copy it out at once) or a ring full of lent
                                // grains: copy it now, and drop it if the writer got there
                                // during the copy.
                                let buffer =
                                    make_buffer(kind, started.pool.as_ref(), held.payload())
                                        .map_err(|e| self.flow_error(e))?;
                                if !held.is_intact() {
                                    self.stats.lock().unwrap_or_else(|p| p.into_inner()).drops += 1;
                                    continue;
                                }
                                buffer
                            };
                            return Ok(Received {
                                index,
                                timing,
                                buffer,
                                caps: None,
                                lent,
                            });
                        }
                        // The flow changed under us: take the new caps and copy this one.
                        take_on!(self, started, def.cloned(), None);
                        let kind = started.kind.as_ref().ok_or(gst::FlowError::NotNegotiated)?;
                        let buffer = make_buffer(kind, started.pool.as_ref(), held.payload())
                            .map_err(|e| self.flow_error(e))?;
                        return Ok(Received {
                            index,
                            timing,
                            buffer,
                            caps: None,
                            lent: false,
                        });
                    }
                    let outcome = follower.next_grain(WAIT_SLICE);
                    if let Err(FollowError::Failed(FlowError::WrongKind {
                        continuous: true, ..
                    })) = &outcome
                    {
                        drop(outcome);
                        let samples =
                            SamplesInput::new(follower.domain().clone(), follower.flow_id());
                        started.input = Input::Samples(samples);
                        continue;
                    }
                    let grain = match outcome {
                        Ok(g) => g,
                        Err(FollowError::Timeout(_)) => {
                            // A wait slice without a grain: a reliable writer may be waiting for
                            // grains lent downstream.
                            if let Some(leases) = &started.leases {
                                leases.release_stalled();
                            }
                            continue;
                        }
                        Err(FollowError::Closed) => return Err(gst::FlowError::Eos),
                        Err(FollowError::Failed(e)) => return Err(self.flow_error(e.to_string())),
                    };
                    let def = grain.reader().flow_def();
                    if def.map(|d| &d.json) != started.def.as_ref().map(|d| &d.json)
                        || started.kind.is_none()
                    {
                        take_on!(self, started, def.cloned(), None);
                    }
                    let kind = started.kind.as_ref().ok_or(gst::FlowError::NotNegotiated)?;
                    if matches!(
                        kind,
                        Kind::Raw {
                            fields: Some(_),
                            ..
                        }
                    ) {
                        let field = FieldIn {
                            index: grain.index(),
                            payload: grain.payload(),
                            timing: Timing::decode(grain.metadata()),
                        };
                        let frame = self.pair_field(
                            kind,
                            started.pool.as_ref(),
                            &mut started.pending_field,
                            field,
                        )?;
                        // Either field torn while copying: the frame is never delivered.
                        match frame {
                            Some((index, timing, buffer)) if grain.is_intact() => {
                                return Ok(Received {
                                    index,
                                    timing,
                                    buffer,
                                    caps: None,
                                    lent: false,
                                })
                            }
                            Some(_) => {
                                self.stats.lock().unwrap_or_else(|p| p.into_inner()).drops += 1
                            }
                            None if !grain.is_intact() => started.pending_field = None,
                            None => {}
                        }
                        continue;
                    }
                    let buffer = make_buffer(kind, started.pool.as_ref(), grain.payload())
                        .map_err(|e| self.flow_error(e))?;
                    if !grain.is_intact() {
                        // The sender lapped us while copying: drop, never deliver torn.
                        self.stats.lock().unwrap_or_else(|p| p.into_inner()).drops += 1;
                        continue;
                    }
                    let timing = Timing::decode(grain.metadata());
                    return Ok(Received {
                        index: grain.index(),
                        timing,
                        buffer,
                        caps: None,
                        lent: false,
                    });
                }
                Input::Samples(input) => match input.next_chunk(WAIT_SLICE) {
                    Ok(chunk) => {
                        // Caps once per flow description, not per chunk.
                        let def = input.flow_def().ok_or(gst::FlowError::NotNegotiated)?;
                        if started.def.as_ref().map(|d| &d.json) != Some(&def.json) {
                            started.pending_caps =
                                Some(common::caps_from_def(def).ok_or_else(|| {
                                    self.flow_error(format!(
                                        "flow media {:?} has no caps",
                                        def.media
                                    ))
                                })?);
                            started.def = Some(def.clone());
                            started.kind = Some(Kind::Opaque);
                            started.wrap = false;
                        }
                        let rate = u64::from(input.sample_rate().unwrap_or(48_000).max(1));
                        let first = *started.first_index.get_or_insert(chunk.index);
                        let timing = Timing {
                            pts: gst::ClockTime::SECOND
                                .mul_div_floor(chunk.index.saturating_sub(first), rate),
                            dts: None,
                            duration: gst::ClockTime::SECOND.mul_div_floor(chunk.count, rate),
                            flags: 0,
                        };
                        self.stats.lock().unwrap_or_else(|p| p.into_inner()).drops = input.drops;
                        return Ok(Received {
                            index: chunk.index,
                            timing: Some(timing),
                            buffer: gst::Buffer::from_mut_slice(chunk.data),
                            caps: None,
                            lent: false,
                        });
                    }
                    Err(FollowError::Timeout(_)) => continue,
                    Err(FollowError::Closed) => return Err(gst::FlowError::Eos),
                    Err(FollowError::Failed(e)) => return Err(self.flow_error(e.to_string())),
                },
                Input::Sdk { conn, .. } => match conn.get_buffer(Some(WAIT_SLICE)) {
                    Ok(mut buf) => {
                        if started.kind.is_none() {
                            take_on!(self, started, None, configured.clone());
                        }
                        let kind = started.kind.as_ref().ok_or(gst::FlowError::NotNegotiated)?;
                        if matches!(
                            kind,
                            Kind::Raw {
                                fields: Some(_),
                                ..
                            }
                        ) {
                            let (index, timing) = (buf.seq(), Timing::decode(buf.metadata()));
                            let field = FieldIn {
                                index,
                                payload: buf.payload(),
                                timing,
                            };
                            let frame = self.pair_field(
                                kind,
                                started.pool.as_ref(),
                                &mut started.pending_field,
                                field,
                            );
                            let _ = buf.put();
                            if let Some((index, timing, buffer)) = frame? {
                                return Ok(Received {
                                    index,
                                    timing,
                                    buffer,
                                    caps: None,
                                    lent: false,
                                });
                            }
                            continue;
                        }
                        let buffer = make_buffer(kind, started.pool.as_ref(), buf.payload())
                            .map_err(|e| self.flow_error(e))?;
                        let timing = Timing::decode(buf.metadata());
                        let index = buf.seq();
                        let _ = buf.put();
                        return Ok(Received {
                            index,
                            timing,
                            buffer,
                            caps: None,
                            lent: false,
                        });
                    }
                    Err(e) if e.code == MeshErrorCode::Timeout => continue,
                    Err(e) if e.code == MeshErrorCode::ConnClosed => {
                        return Err(gst::FlowError::Eos)
                    }
                    Err(e) => return Err(self.flow_error(e.to_string())),
                },
            }
        }
    }
}

/// One field of an interlaced flow, as read (from the flow or through the proxy).
struct FieldIn<'a> {
    index: u64,
    payload: &'a [u8],
    timing: Option<Timing>,
}

impl McmSrc {
    /// Interlaced flows hold a field per grain: the first field (even index) starts a
    /// frame, the second (the next index) completes it and gives (first index, timing,
    /// frame). A field without its partner is dropped and counted.
    fn pair_field(
        &self,
        kind: &Kind,
        pool: Option<&gst::BufferPool>,
        pending: &mut Option<(u64, gst::Buffer, Option<Timing>)>,
        field: FieldIn<'_>,
    ) -> Result<Option<(u64, Option<Timing>, gst::Buffer)>, gst::FlowError> {
        let Kind::Raw {
            fields: Some([first, second]),
            ..
        } = kind
        else {
            return Err(gst::FlowError::NotNegotiated);
        };
        if field.index.is_multiple_of(2) {
            let mut buffer = new_frame(kind, pool).map_err(|e| self.flow_error(e))?;
            fill_frame(kind, &mut buffer, field.payload, Some(*first))
                .map_err(|e| self.flow_error(e))?;
            if pending.is_some() {
                self.stats.lock().unwrap_or_else(|p| p.into_inner()).drops += 1;
            }
            *pending = Some((field.index, buffer, field.timing));
            return Ok(None);
        }
        match pending.take() {
            Some((first_index, mut buffer, timing)) if first_index + 1 == field.index => {
                fill_frame(kind, &mut buffer, field.payload, Some(*second))
                    .map_err(|e| self.flow_error(e))?;
                Ok(Some((first_index, timing, buffer)))
            }
            _ => {
                self.stats.lock().unwrap_or_else(|p| p.into_inner()).drops += 1;
                Ok(None)
            }
        }
    }
}

impl BaseSrcImpl for McmSrc {
    fn start(&self) -> Result<(), gst::ErrorMessage> {
        let mut settings = self
            .settings
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if let Some(path) = &settings.sdp_file {
            common::apply_sdp(&mut settings.conn, path)
                .map_err(|e| gst::error_msg!(gst::ResourceError::Settings, ["{}", e]))?;
        }
        let mode = settings
            .conn
            .mode()
            .map_err(|e| gst::error_msg!(gst::ResourceError::Settings, ["{}", e]))?;
        let reliable = settings.conn.reliable;
        let busy_poll = Duration::from_micros(settings.busy_poll_us.into());
        let input = match mode {
            Mode::Direct { domain, flow_id } => {
                let domain = Domain::open(&domain).map_err(|e| {
                    gst::error_msg!(gst::ResourceError::OpenRead, ["domain: {}", e])
                })?;
                if domain.open_samples_reader(flow_id).is_ok() {
                    Input::Samples(SamplesInput::new(domain, flow_id))
                } else {
                    let mut follower = Follower::new(domain, flow_id, reliable)
                        .map_err(|e| gst::error_msg!(gst::ResourceError::OpenRead, ["{}", e]))?;
                    follower.set_busy_poll(busy_poll);
                    Input::Direct(follower)
                }
            }
            // Without caps, a multipoint group's flow is followed directly: found in the
            // proxy's domain under its group flow id, it gives its own caps and EOS.
            Mode::Proxy { client_json, .. }
                if settings.conn.caps.is_none()
                    && settings.conn.conn_type == "multipoint-group" =>
            {
                let urn = settings.conn.urn.clone().unwrap_or_default();
                let client = Client::new(&client_json).map_err(|e| {
                    gst::error_msg!(gst::ResourceError::OpenRead, ["media proxy: {}", e])
                })?;
                let domain = Domain::open(client.domain()).map_err(|e| {
                    gst::error_msg!(gst::ResourceError::OpenRead, ["proxy domain: {}", e])
                })?;
                let mut follower =
                    Follower::new(domain, mcm_core::sdk::group_flow_id(&urn), reliable)
                        .map_err(|e| gst::error_msg!(gst::ResourceError::OpenRead, ["{}", e]))?;
                follower.set_busy_poll(busy_poll);
                Input::Direct(follower)
            }
            Mode::Proxy {
                client_json,
                mut connection,
            } => {
                let caps = settings.conn.caps.clone().ok_or_else(|| {
                    gst::error_msg!(gst::ResourceError::Settings, ["proxy mode needs the stream's caps (caps property) to describe the connection"])
                })?;
                let (_, kind) = common::flow_def_from_caps(
                    &caps,
                    uuid::Uuid::nil(),
                    "mcmsrc",
                    mcm_core::format::MAX_OPAQUE_GRAIN_SIZE,
                )
                .map_err(|e| {
                    gst::error_msg!(gst::ResourceError::Settings, ["caps {}: {}", caps, e])
                })?;
                connection =
                    common::sdk_connection(&connection, &kind, &caps, settings.conn.max_grain_size)
                        .map_err(|e| {
                            gst::error_msg!(gst::ResourceError::Settings, ["caps {}: {}", caps, e])
                        })?;
                let client = Client::new(&client_json).map_err(|e| {
                    gst::error_msg!(gst::ResourceError::OpenRead, ["media proxy: {}", e])
                })?;
                let conn = client
                    .create_rx_connection(&connection.to_string())
                    .map_err(|e| gst::error_msg!(gst::ResourceError::OpenRead, ["{}", e]))?;
                Input::Sdk {
                    _client: client,
                    conn,
                }
            }
        };
        *self.stats.lock().unwrap_or_else(|p| p.into_inner()) = Stats::default();
        self.lease_counts.copies.store(0, Ordering::Relaxed);
        self.lease_counts.overwritten.store(0, Ordering::Relaxed);
        *self.state.lock().unwrap_or_else(|p| p.into_inner()) = State::Started(Box::new(Started {
            input,
            def: None,
            kind: None,
            pool: None,
            first_index: None,
            last_pts: None,
            tai_offset: None,
            pending_field: None,
            leases: settings
                .zero_copy
                .then(|| Leases::new(self.lease_counts.clone())),
            overwritten_seen: 0,
            wrap: false,
            configured_caps: settings.conn.caps.clone(),
            pending_caps: None,
        }));
        Ok(())
    }

    fn stop(&self) -> Result<(), gst::ErrorMessage> {
        *self.state.lock().unwrap_or_else(|p| p.into_inner()) = State::Stopped;
        gst::info!(CAT, imp = self, "stopped; {:?}", self.stats());
        Ok(())
    }

    fn caps(&self, filter: Option<&gst::Caps>) -> Option<gst::Caps> {
        let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let caps = match &*state {
            State::Started(s) => s
                .def
                .as_ref()
                .and_then(common::caps_from_def)
                .or_else(|| s.configured_caps.clone()),
            State::Stopped => self.settings.lock().ok().and_then(|s| s.conn.caps.clone()),
        }
        .unwrap_or_else(gst::Caps::new_any);
        Some(match filter {
            Some(f) => f.intersect_with_mode(&caps, gst::CapsIntersectMode::First),
            None => caps,
        })
    }

    fn negotiate(&self) -> Result<(), gst::LoggableError> {
        // Caps come from the flow, taken on as it is opened: set in create() with the
        // first buffer.
        Ok(())
    }

    fn is_seekable(&self) -> bool {
        false
    }

    fn query(&self, query: &mut gst::QueryRef) -> bool {
        if let gst::QueryViewMut::Latency(q) = query.view_mut() {
            let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
            let frame = match &*state {
                State::Started(s) => match &s.kind {
                    Some(Kind::Raw { info, .. }) => frame_duration(info),
                    _ => None,
                },
                State::Stopped => None,
            };
            q.set(
                self.obj().is_live(),
                frame.unwrap_or(gst::ClockTime::ZERO),
                None,
            );
            return true;
        }
        BaseSrcImplExt::parent_query(self, query)
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

fn frame_duration(info: &gst_video::VideoInfo) -> Option<gst::ClockTime> {
    let fps = info.fps();
    (fps.numer() > 0)
        .then(|| gst::ClockTime::SECOND.mul_div_floor(fps.denom() as u64, fps.numer() as u64))
        .flatten()
}

impl PushSrcImpl for McmSrc {
    fn create(
        &self,
        _buffer: Option<&mut gst::BufferRef>,
    ) -> Result<CreateSuccess, gst::FlowError> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let State::Started(started) = &mut *state else {
            return Err(gst::FlowError::Flushing);
        };
        let got = self.receive(started)?;
        gst::trace!(CAT, imp = self, "grain {}", got.index);
        let first = *started.first_index.get_or_insert(got.index);
        let rate = started.def.as_ref().map(|d| d.index_rate());
        let mut buffer = got.buffer;
        {
            let buf = buffer.get_mut().ok_or(gst::FlowError::Error)?;
            buf.set_offset(got.index);
            let timing = got.timing.unwrap_or_default();
            if timing.duration.is_some() {
                buf.set_duration(timing.duration);
            }
            buf.set_flags(
                gst::BufferFlags::from_bits_truncate(timing.flags)
                    & (gst::BufferFlags::DELTA_UNIT | gst::BufferFlags::HEADER),
            );
            if self.obj().is_live() {
                // Live: the grain's own time (its TAI timestamp, MXL) on the pipeline
                // clock, in running time, so capture jitter and wake-up delays do not reach
                // the timestamps. The TAI-to-clock offset is measured once and kept (again
                // only if it moves by over a millisecond: a clock step). Grains not stamped
                // with the clock (a reliable sender counts them) take their arrival time.
                let pts = self
                    .obj()
                    .clock()
                    .zip(self.obj().base_time())
                    .map(|(c, base)| {
                        // TAI read between two clock reads: a measurement is clean when
                        // the reads are close (no preemption between them), and only a
                        // clean one may move an offset already taken.
                        let before = c.time();
                        let now_tai = now_tai_ns();
                        let now = c.time();
                        let spread = now.nseconds().saturating_sub(before.nseconds());
                        let mid = i128::from(before.nseconds()) + i128::from(spread / 2);
                        let measured = i128::from(now_tai) - mid;
                        let offset = match started.tai_offset {
                            Some(o) if (o - measured).abs() <= 1_000_000 || spread > 100_000 => o,
                            _ => measured,
                        };
                        started.tai_offset = Some(offset);
                        let arrival = now.saturating_sub(base);
                        let grain = rate
                            .map(|r| index_to_timestamp(r, got.index))
                            .filter(|&due| due <= now_tai && now_tai - due < 1_000_000_000)
                            .and_then(|due| u64::try_from(i128::from(due) - offset).ok())
                            .map(|at| gst::ClockTime::from_nseconds(at).saturating_sub(base));
                        let pts = grain.unwrap_or(arrival);
                        started.last_pts.map_or(pts, |last| pts.max(last))
                    });
                started.last_pts = pts;
                buf.set_pts(pts);
            } else if got.timing.is_some() {
                // File work: the sender's own timestamps, exactly.
                buf.set_pts(timing.pts);
                buf.set_dts(timing.dts);
            } else if let Some(d) = buf.duration() {
                // A flow with no timing metadata (e.g. MXL's): its position in the stream.
                // Interlaced flows count fields: two per frame.
                let per_frame = match &started.kind {
                    Some(Kind::Raw {
                        fields: Some(_), ..
                    }) => 2,
                    _ => 1,
                };
                buf.set_pts(d * (got.index.saturating_sub(first) / per_frame));
            }
        }
        if let Some(leases) = &started.leases {
            leases.look();
            let overwritten = self.lease_counts.overwritten.load(Ordering::Relaxed);
            if overwritten > started.overwritten_seen {
                started.overwritten_seen = overwritten;
                gst::warning!(
                    CAT,
                    imp = self,
                    "{overwritten} grains reused by the writer while mapped downstream: keep buffers mapped for less than half the flow's ring of grains, or set reliable=true"
                );
            }
        }
        let mut stats = self.stats.lock().unwrap_or_else(|p| p.into_inner());
        stats.grains += 1;
        stats.bytes += buffer.size() as u64;
        if !got.lent {
            stats.copies += 1;
        }
        if let Some(rate) = rate {
            stats.latency_ns = now_tai_ns().saturating_sub(index_to_timestamp(rate, got.index));
        }
        drop(stats);
        drop(state);
        if let Some(caps) = got.caps {
            self.obj()
                .set_caps(&caps)
                .map_err(|_| gst::FlowError::NotNegotiated)?;
        }
        Ok(CreateSuccess::NewBuffer(buffer))
    }
}
