//! ST 2110-20 senders as state between wake-ups, and the pacing loop that serves one or
//! several of them from one thread.
//!
//! Software pacing costs a timer wake-up per burst: about 430 a frame for 1080p59.94 under
//! the wide model, a few µs each. Streams of the same format share their burst times
//! (the schedule is aligned to TAI epochs), so one thread serving several streams sends a
//! burst of each on one wake-up, as MTL's per-core schedulers do.

use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::counters::LiveCounters;
use super::pacing::{BurstSchedule, SenderType, TimingChecker};
use super::udp::{udp_socket, PacketQueue, UdpSender};
use super::video_bridge::{
    grain_lines, grain_rows_to_wire, rtp_time, sends_in_place, BridgeError, Pacer, Pacing,
    SenderOptions, SenderStats, LATE_WAKE_UP, MAX_BEHIND, ROWS_AHEAD,
};
use crate::flow::{Domain, FollowError, Follower, HeldGrain};
use crate::time::index_to_timestamp;

/// How often a loop serving several streams looks for the next grain of a stream between
/// frames (a single stream waits on its flow instead).
const IDLE_POLL: Duration = Duration::from_millis(1);

/// A frame being sent: its grain, its schedule and how far it got. The next burst is
/// prepared (headers built, rows converted) as soon as the one before went out.
struct FrameTx {
    grain: HeldGrain,
    epoch: u64,
    timestamp: u32,
    second_field: bool,
    /// Sent from the grain itself (UYVY, UYVP).
    direct: bool,
    /// Wire bytes of the frame (or field).
    want: usize,
    /// Wire bytes packetized so far (through the prepared burst).
    pos: usize,
    /// Wire rows converted so far.
    converted: usize,
    /// Packets sent so far.
    sent: usize,
    bursts: usize,
    /// When the prepared burst is due (TAI ns).
    due: u64,
    /// The prepared burst went out; the next is not prepared yet.
    sent_prepared: bool,
}

/// One stream: its flow, socket, schedule and the frame in flight.
pub(super) struct StreamTx {
    follower: Follower,
    batch: UdpSender,
    options: SenderOptions,
    stats: SenderStats,
    pacer: Option<Pacer>,
    schedule: Option<BurstSchedule>,
    /// The sender's own timing as it went out (times relative to its first epoch).
    own: Option<(u64, TimingChecker)>,
    wire: Vec<u8>,
    last_packet: Vec<u8>,
    /// The prepared burst: its packets' headers back to back, and per packet (end of its
    /// headers, the frame bytes it carries).
    headers: Vec<u8>,
    packets: Vec<(usize, Range<usize>)>,
    started: bool,
    frame: Option<FrameTx>,
    closed: bool,
    /// What ended this stream early, when it shares its thread with others (which go on).
    failure: Option<BridgeError>,
    last_poll: Option<Instant>,
}

impl StreamTx {
    pub fn new(
        domain: Domain,
        flow_id: uuid::Uuid,
        options: SenderOptions,
    ) -> Result<Self, BridgeError> {
        let socket = udp_socket(options.bind)?;
        socket.connect(options.destination)?;
        Ok(Self {
            follower: Follower::new(domain, flow_id, false)?,
            batch: UdpSender::new(socket, options.offload),
            options,
            stats: SenderStats::default(),
            pacer: None,
            schedule: None,
            own: None,
            wire: Vec::new(),
            last_packet: Vec::new(),
            headers: Vec::new(),
            packets: Vec::new(),
            started: false,
            frame: None,
            closed: false,
            failure: None,
            last_poll: None,
        })
    }

    /// The flow ended, or the frame budget is spent (and no frame is in flight).
    pub fn finished(&self) -> bool {
        self.failure.is_some()
            || self.frame.is_none()
                && (self.closed
                    || (self.options.frames != 0 && self.stats.frames >= self.options.frames))
    }

    /// The stream's figures so far.
    pub fn stats(&self) -> SenderStats {
        let mut stats = self.stats;
        stats.dropped += self.follower.drops().load(Ordering::Relaxed);
        stats.unreachable = self.batch.unreachable;
        stats.unsent = self.batch.dropped;
        stats.syscalls = self.batch.syscalls;
        stats
    }

    /// What ended the stream early, if anything did (see [`pace`]).
    pub fn take_failure(&mut self) -> Option<BridgeError> {
        self.failure.take()
    }

    /// Ends the stream on `error`: the frame in flight counts as torn.
    fn fail(&mut self, error: BridgeError) {
        tracing::warn!(%error, "st2110-20 sender: stream ended");
        self.abandon_frame();
        self.failure = Some(error);
    }

    /// Gives up the frame in flight (stop, or the stream's failure): it counts as torn,
    /// with the packets that went, and not as a frame sent.
    fn abandon_frame(&mut self) {
        if let Some(f) = self.frame.take() {
            self.stats.torn += 1;
            self.stats.packets += f.sent as u64;
        }
    }

    fn drops(&self) -> Arc<AtomicU64> {
        self.follower.drops()
    }

    /// When the prepared burst is due, if a frame is in flight with a burst prepared.
    pub fn next_due(&self) -> Option<u64> {
        self.frame
            .as_ref()
            .filter(|f| !f.sent_prepared)
            .map(|f| f.due)
    }

    /// Between frames: takes the next grain if one comes within `wait`, and starts its
    /// frame in its transmission epoch.
    pub fn poll_grain(&mut self, wait: Duration) -> Result<(), BridgeError> {
        if self.frame.is_some() || self.finished() {
            return Ok(());
        }
        self.last_poll = Some(Instant::now());
        let grain = match self.follower.next_held(wait) {
            Ok(g) => g,
            Err(FollowError::Timeout(_)) => return Ok(()),
            Err(FollowError::Closed) => {
                self.closed = true;
                return Ok(());
            }
            Err(FollowError::Failed(e)) => return Err(e.into()),
        };
        let reader = self
            .follower
            .reader()
            .ok_or_else(|| BridgeError::Unsupported("flow without a reader".into()))?;
        let head = reader.head_index();
        if head > grain.index() + MAX_BEHIND {
            // The sender fell behind (missed transmission epochs): catch up with the writer.
            // A stream of fields starts again with a frame's first, so that the field left
            // of a skipped pair does not go out alone.
            self.stats.dropped += 1;
            if self.pacer.as_ref().is_some_and(|p| p.picture.3) {
                self.started = false;
            }
            tracing::debug!(
                grain = grain.index(),
                head,
                "st2110-20 sender behind the writer: grain skipped"
            );
            return Ok(());
        }
        let def = reader
            .flow_def()
            .ok_or_else(|| BridgeError::Unsupported("flow without a description".into()))?;
        // Set up once per flow description (a recreated flow may bring another).
        if self.pacer.as_ref().is_none_or(|p| p.def.json != def.json) {
            let next = Pacer::new(def, &self.options)?;
            let burst_schedule = match self.options.pacing {
                Pacing::Wide => BurstSchedule::wide(&next.model),
                Pacing::Coarse => BurstSchedule::coarse(&next.model),
            };
            // The new format's schedule, with the network bucket the stream left.
            self.schedule = Some(match self.schedule {
                Some(old) => burst_schedule.carrying_bucket_of(&old),
                None => burst_schedule,
            });
            self.own = None;
            self.pacer = Some(next);
        }
        let p = self.pacer.as_mut().expect("set above");
        let s = self.schedule.as_mut().expect("set with the pacer");
        let (format, _, _, interlaced) = p.picture;
        let index = grain.index();
        if interlaced && !self.started && index % 2 == 1 {
            return Ok(()); // a stream of fields starts with a frame's first
        }
        self.started = true;
        let rate = p.def.index_rate();
        let epoch_index = s.transmission_epoch(
            rate,
            crate::time::now_tai_ns(),
            p.model.t_frame_ns,
            p.last_epoch,
        );
        p.last_epoch = Some(epoch_index);
        let epoch = index_to_timestamp(rate, epoch_index);
        tracing::trace!(
            grain = index,
            epoch = epoch_index,
            first_burst_in_ns = epoch.saturating_add_signed(s.first_offset_ns()) as i64
                - crate::time::now_tai_ns() as i64,
            "sending a frame"
        );
        self.own
            .get_or_insert_with(|| (epoch, TimingChecker::new(p.model)));
        let want = p.packetizer.geometry().frame_bytes();
        self.wire.resize(want, 0);
        let direct = sends_in_place(format) && grain.payload().len() >= want;
        self.frame = Some(FrameTx {
            grain,
            epoch,
            timestamp: rtp_time(rate, index),
            // Interlaced flows hold one field per grain, the first at even indices (MXL).
            second_field: interlaced && index % 2 == 1,
            direct,
            want,
            pos: 0,
            converted: 0,
            sent: 0,
            bursts: 0,
            due: 0,
            sent_prepared: false,
        });
        if !self.prepare_burst() {
            self.end_frame();
        }
        Ok(())
    }

    /// Builds the next burst of the frame in flight and converts the rows it needs; false
    /// when the grain was overwritten meanwhile (the rest of the frame is not sent).
    fn prepare_burst(&mut self) -> bool {
        let (Some(f), Some(p), Some(s)) = (
            self.frame.as_mut(),
            self.pacer.as_mut(),
            self.schedule.as_ref(),
        ) else {
            return false;
        };
        let (format, width, height, interlaced) = p.picture;
        let g = *p.packetizer.geometry();
        let (row_bytes, rows) = (g.line_bytes(), g.lines() as usize);
        self.headers.clear();
        self.packets.clear();
        let size = s.burst_at(f.epoch, f.sent, crate::time::now_tai_ns());
        while self.packets.len() < size && f.pos < f.want {
            let data =
                p.packetizer
                    .next_packet(f.pos, f.timestamp, f.second_field, &mut self.headers);
            f.pos = data.end;
            self.packets.push((self.headers.len(), data));
        }
        if f.direct {
            if !f.grain.is_intact() {
                return false; // overwritten: what is left of the frame is not sent
            }
        } else {
            let needed = f.pos.div_ceil(row_bytes);
            if needed > f.converted {
                let upto = (needed + ROWS_AHEAD).min(rows);
                grain_rows_to_wire(
                    format,
                    width as usize,
                    grain_lines(height, interlaced),
                    f.converted..upto,
                    f.grain.payload(),
                    &mut self.wire,
                );
                f.converted = upto;
                if !f.grain.is_intact() {
                    return false;
                }
            }
        }
        // Never a sleep of more than two frames: a clock stepped back mid-frame would
        // otherwise hold the sender (and `stop`) for as long as the step.
        let longest_sleep = 2 * p.model.t_frame_ns as u64;
        f.due = s
            .due_ns(f.epoch, f.sent, self.packets.len())
            .min(crate::time::now_tai_ns() + longest_sleep);
        true
    }

    /// Sends the prepared burst (its time has come) and prepares the next, or ends the
    /// frame after its last.
    pub fn send_burst(&mut self) -> Result<(), BridgeError> {
        let Some(mut f) = self.frame.take() else {
            return Ok(());
        };
        self.stats.bursts += 1;
        // Loopback and veth receivers stamp a burst's packets as the send call hands them
        // over, and a NIC queues them then: the burst counts from the call's start, so the
        // call's own duration (about 10 µs, varying) does not shift the next one.
        let started = crate::time::now_tai_ns();
        let late = started.saturating_sub(f.due);
        if late > LATE_WAKE_UP.as_nanos() as u64 {
            self.stats.late_bursts += 1;
        }
        let mut queue = PacketQueue::default();
        let mut header_start = 0;
        let source: &[u8] = if f.direct {
            f.grain.payload()
        } else {
            &self.wire
        };
        // Sent in place, the frame's last packet goes out from a copy checked against the
        // writer after every other packet left: a grain overwritten mid-send then lacks
        // its last packet, so the receiver sees it incomplete, never torn.
        let held_back = (f.direct && f.pos >= f.want).then(|| self.packets.len() - 1);
        for (i, (header_end, data)) in self.packets.iter().enumerate() {
            if Some(i) == held_back {
                break;
            }
            queue.push(
                &self.headers[header_start..*header_end],
                &source[data.clone()],
            );
            header_start = *header_end;
        }
        if !queue.is_empty() {
            if let Err(e) = self.batch.send(&mut queue) {
                drop(queue);
                self.frame = Some(f); // the caller gives it up, counted
                return Err(e.into());
            }
        }
        if let Some(last) = held_back {
            let (header_end, data) = &self.packets[last];
            self.last_packet.clear();
            self.last_packet.extend_from_slice(&source[data.clone()]);
            if !f.grain.is_intact() {
                f.sent += last;
                self.frame = Some(f);
                self.end_frame();
                return Ok(());
            }
            queue.push(&self.headers[header_start..*header_end], &self.last_packet);
            if let Err(e) = self.batch.send(&mut queue) {
                drop(queue);
                f.sent += last;
                self.frame = Some(f);
                return Err(e.into());
            }
        }
        let at = started;
        let n = self.packets.len();
        if let Some(s) = self.schedule.as_mut() {
            s.sent(at, n);
        }
        f.sent += n;
        if let Some((base, checker)) = self.own.as_mut() {
            let t = (at as i64 - *base as i64) as f64;
            for i in 0..n {
                let last = f.pos >= f.want && i + 1 == n;
                if let Some(t) = checker.packet(t, last) {
                    if t.verdict == SenderType::NonCompliant {
                        tracing::debug!(?t, "ST 2110-21: a frame sent beyond the wide model");
                    }
                }
            }
        }
        f.bursts += 1;
        f.sent_prepared = true;
        self.frame = Some(f);
        Ok(())
    }

    /// After [`Self::send_burst`]: prepares the frame's next burst, or ends the frame
    /// after its last. Kept apart so that a loop serving several streams sends every due
    /// burst before converting rows for the next ones.
    pub fn prepare_next(&mut self) {
        let Some(f) = self.frame.as_mut() else {
            return;
        };
        if !f.sent_prepared {
            return;
        }
        f.sent_prepared = false;
        let more = f.pos < f.want;
        if !more || !self.prepare_burst() {
            self.end_frame();
        }
    }

    /// The frame in flight is done (sent, or cut short by the writer).
    fn end_frame(&mut self) {
        let Some(f) = self.frame.take() else {
            return;
        };
        if f.pos < f.want || !f.grain.is_intact() {
            self.stats.torn += 1;
        }
        tracing::trace!(
            bursts = f.bursts,
            ended_ns_after_epoch = crate::time::now_tai_ns() as i64 - f.epoch as i64,
            "frame sent"
        );
        self.stats.packets += f.sent as u64;
        self.stats.frames += 1;
        if let Some((_, checker)) = &self.own {
            self.stats.timing = checker.frames_by_verdict;
        }
        if let Some(c) = &self.options.counters {
            LiveCounters::set(&c.packets, self.stats.packets);
            LiveCounters::set(&c.grains, self.stats.frames);
            LiveCounters::set(
                &c.dropped,
                self.stats.dropped + self.drops().load(Ordering::Relaxed),
            );
            if let Some((_, checker)) = &self.own {
                c.set_timing(checker.worst);
            }
        }
    }
}

/// Sends `streams` from the calling thread until each is finished or `stop` is set. A
/// single stream waits on its flow between frames, and its error is returned; several are
/// polled every [`IDLE_POLL`] while idle, and one's error ends that stream alone (see
/// [`StreamTx::take_failure`]). Every wake-up sends each stream's burst that is due by
/// then. A frame still in flight when `stop` comes counts as torn.
pub(super) fn pace(streams: &mut [StreamTx], stop: &AtomicBool) -> Result<(), BridgeError> {
    crate::time::pacing_thread();
    let mut pacing = PaceLoop::new(streams.len() == 1);
    while !stop.load(Ordering::Acquire) && streams.iter().any(|s| !s.finished()) {
        pacing.step(streams)?;
    }
    for s in streams.iter_mut() {
        s.abandon_frame();
    }
    pacing.report();
    Ok(())
}

/// The pacing loop's state between wake-ups.
struct PaceLoop {
    single: bool,
    turn: usize,
    sleeper: crate::time::PunctualSleeper,
}

impl PaceLoop {
    fn new(single: bool) -> Self {
        Self {
            single,
            turn: 0,
            sleeper: crate::time::PunctualSleeper::default(),
        }
    }

    /// Settles a stream's step: several streams go on without one that failed.
    fn settle(&self, s: &mut StreamTx, result: Result<(), BridgeError>) -> Result<(), BridgeError> {
        match result {
            Err(e) if !self.single => {
                s.fail(e);
                Ok(())
            }
            other => other,
        }
    }

    /// One wake-up: takes new grains, sleeps to the next burst due, sends every burst due
    /// by then and prepares the next ones.
    fn step(&mut self, streams: &mut [StreamTx]) -> Result<(), BridgeError> {
        if streams.is_empty() {
            return Ok(());
        }
        let now = Instant::now();
        for s in streams.iter_mut() {
            let polled = if self.single {
                s.poll_grain(Duration::from_millis(100))
            } else if s
                .last_poll
                .is_none_or(|t| now.duration_since(t) >= IDLE_POLL)
            {
                s.poll_grain(Duration::ZERO)
            } else {
                Ok(())
            };
            self.settle(s, polled)?;
        }
        let due = streams.iter().filter_map(StreamTx::next_due).min();
        let until = match (due, self.single) {
            (Some(due), true) => due,
            (due, false) => {
                let idle_poll = crate::time::now_tai_ns() + IDLE_POLL.as_nanos() as u64;
                due.map_or(idle_poll, |d| {
                    if streams.iter().any(|s| s.frame.is_none() && !s.finished()) {
                        d.min(idle_poll)
                    } else {
                        d
                    }
                })
            }
            (None, true) => return Ok(()),
        };
        self.sleeper.sleep_until_tai(until);
        // Every burst due goes out first; rows for the next bursts are converted after.
        // The stream that goes first takes turns, so no stream's bursts are always the
        // ones that wait for the others'.
        self.turn = (self.turn + 1) % streams.len();
        let (later, first) = streams.split_at_mut(self.turn);
        for s in first.iter_mut().chain(later.iter_mut()) {
            if s.next_due().is_some_and(|d| d <= crate::time::now_tai_ns()) {
                let sent = s.send_burst();
                self.settle(s, sent)?;
            }
        }
        for s in streams.iter_mut() {
            s.prepare_next();
        }
        Ok(())
    }

    fn report(&self) {
        tracing::debug!(
            wake_up_latency_ns = self.sleeper.latency_ns(),
            spun_ms = self.sleeper.spun_ns() / 1_000_000,
            "pacing thread done"
        );
    }
}

/// A stream handed to a [`SharedPacer`]: told its end through `done`.
struct Member {
    stop: Arc<AtomicBool>,
    done: Box<dyn FnOnce(Result<SenderStats, BridgeError>) + Send>,
}

/// A pacing thread that video streams join and leave while it runs (the proxy's transmit
/// bridges): one wake-up serves every stream with a burst due, as in
/// [`send_videos`](super::video_bridge::send_videos), rather than a real-time thread and
/// its wake-ups per stream. The thread ends when the `SharedPacer` is dropped and its
/// streams have left.
pub struct SharedPacer {
    joining: std::sync::mpsc::Sender<(StreamTx, Member)>,
}

impl SharedPacer {
    /// Starts the pacing thread.
    pub fn start() -> Self {
        let (joining, arrivals) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("st2110-pacer".into())
            .spawn(move || serve(arrivals))
            .expect("spawning a thread");
        Self { joining }
    }

    /// Sends `flow_id` of `domain` as `options` say until `stop` is set or the flow ends;
    /// `done` gets the stream's figures, or the error that ended it. Set-up errors (the
    /// flow, the socket) come back here.
    pub fn add(
        &self,
        domain: Domain,
        flow_id: uuid::Uuid,
        options: SenderOptions,
        stop: Arc<AtomicBool>,
        done: impl FnOnce(Result<SenderStats, BridgeError>) + Send + 'static,
    ) -> Result<(), BridgeError> {
        let stream = StreamTx::new(domain, flow_id, options)?;
        let member = Member {
            stop,
            done: Box::new(done),
        };
        self.joining
            .send((stream, member))
            .map_err(|_| BridgeError::Unsupported("the pacing thread has ended".into()))
    }
}

/// The [`SharedPacer`]'s thread: paces its members, takes new ones between wake-ups
/// (waiting for one when it has none) and tells each its end.
fn serve(arrivals: std::sync::mpsc::Receiver<(StreamTx, Member)>) {
    crate::time::pacing_thread();
    let mut pacing = PaceLoop::new(false);
    let (mut streams, mut members): (Vec<StreamTx>, Vec<Member>) = (Vec::new(), Vec::new());
    loop {
        if streams.is_empty() {
            match arrivals.recv() {
                Ok((s, m)) => {
                    streams.push(s);
                    members.push(m);
                }
                Err(_) => break,
            }
        }
        while let Ok((s, m)) = arrivals.try_recv() {
            streams.push(s);
            members.push(m);
        }
        // Several streams: errors end their stream, never the loop.
        let _ = pacing.step(&mut streams);
        let mut k = 0;
        while k < streams.len() {
            if members[k].stop.load(Ordering::Acquire) || streams[k].finished() {
                let mut s = streams.swap_remove(k);
                let m = members.swap_remove(k);
                s.abandon_frame();
                let result = match s.take_failure() {
                    Some(e) => Err(e),
                    None => Ok(s.stats()),
                };
                (m.done)(result);
            } else {
                k += 1;
            }
        }
    }
    pacing.report();
}
