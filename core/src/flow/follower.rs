//! Following a flow as a receiver: waiting for its writer, late joins, overruns, indices the
//! writer skipped, and writers that restart. Shared by the SDK and the GStreamer source.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use uuid::Uuid;

use super::cursor::ReaderCursor;
use super::dirwatch::DirWatch;
use super::domain::Domain;
use super::error::FlowError;
use super::reader::{Grain, GrainReader, HeldGrain, ReaderOptions};
use super::VALID_SLICES_ALL;

/// Poll period while a flow's directory is there but cannot be opened yet (a writer not
/// done creating it in place, as MXL's may be; or being removed), or when the domain
/// cannot be watched.
const FLOW_APPEAR_POLL: Duration = Duration::from_millis(5);

/// Longest sleep on the domain's inotify watch while the flow is not there: publishing a
/// flow (a rename into the domain) ends it at once; this only bounds the cost of an event
/// inotify missed (a domain on a network file system).
const FLOW_APPEAR_BACKSTOP: Duration = Duration::from_millis(250);

/// Longest interval between commits that busy-polling learns as the stream's rhythm.
const MAX_GRAIN_INTERVAL_NS: u64 = 10_000_000_000;

/// Why [`Follower::next_grain`] returned no grain.
#[derive(Debug, thiserror::Error)]
pub enum FollowError {
    /// Nothing arrived in time (no writer yet, or it went quiet); call again.
    #[error("{0}")]
    Timeout(String),
    /// The writer ended the stream.
    #[error("the writer ended the stream")]
    Closed,
    #[error(transparent)]
    Failed(FlowError),
}

/// A receiver's position in a flow that may not exist yet and may be recreated.
pub struct Follower {
    domain: Domain,
    flow_id: Uuid,
    reliable: bool,
    reader: Option<Arc<GrainReader>>,
    next: Option<u64>,
    /// A reliable receiver's cursor registered before the flow exists, so a back-pressure
    /// writer waits for it from its first grain; dropped once the reader has its own.
    early_cursor: Option<ReaderCursor>,
    received: u64,
    drops: Arc<AtomicU64>,
    /// Busy-poll this long either side of the next grain's predicted arrival (0: never).
    spin: Duration,
    /// When the writer last committed (TAI ns), and the typical interval between commits.
    commits: Option<(u64, Option<u64>)>,
    /// The writer's schedule, once its commits follow the flow's grain rate: when the last
    /// commit was due (TAI ns) and the grain period. A writer is late by its own wake-up
    /// and processing jitter, never early, so the earliest phase its commits fit is when
    /// they are due.
    schedule: Option<(u64, u64)>,
    /// Watch on the domain while the flow is not there, so a receiver that waits for its
    /// sender sleeps until the flow is published instead of looking 200 times a second.
    appear: Appear,
    /// [`FLOW_APPEAR_BACKSTOP`]; longer in tests, so that only an event ends a wait.
    appear_backstop: Duration,
    /// Attempts at opening the flow so far.
    #[cfg(test)]
    opens_tried: u64,
    /// Told as the follower starts to wait on the domain watch.
    #[cfg(test)]
    waiting: Option<std::sync::mpsc::Sender<()>>,
}

/// The domain watch of a [`Follower`] waiting for its flow.
enum Appear {
    /// Not tried yet (the flow has been there so far).
    Untried,
    Watching(DirWatch),
    /// inotify could not be had: polled.
    Unavailable,
}

impl Follower {
    /// Follows flow `flow_id` of `domain`. A live follower starts at the newest grain; a
    /// reliable one at the oldest grain still in the ring, holding back the writer.
    pub fn new(domain: Domain, flow_id: Uuid, reliable: bool) -> Result<Self, FlowError> {
        let early_cursor = match reliable {
            true => Some(domain.register_cursor(flow_id, 0)?),
            false => None,
        };
        Ok(Self {
            domain,
            flow_id,
            reliable,
            reader: None,
            next: None,
            early_cursor,
            received: 0,
            drops: Arc::default(),
            spin: Duration::ZERO,
            commits: None,
            schedule: None,
            appear: Appear::Untried,
            appear_backstop: FLOW_APPEAR_BACKSTOP,
            #[cfg(test)]
            opens_tried: 0,
            #[cfg(test)]
            waiting: None,
        })
    }

    /// Busy-polls for up to `window` either side of the moment the next grain is expected
    /// (the last arrival plus the usual interval), and sleeps on the futex otherwise. A
    /// regular (live) stream is then picked up within a microsecond or so of its commit
    /// instead of after a wake-up from idle, at a CPU cost of at most `2 * window` per
    /// grain. Zero (the default) never spins.
    pub fn set_busy_poll(&mut self, window: Duration) {
        self.spin = window;
    }

    pub fn domain(&self) -> &Domain {
        &self.domain
    }

    pub fn flow_id(&self) -> Uuid {
        self.flow_id
    }

    /// True when every grain the writer has committed has been read: the next call waits
    /// for the writer (a reliable writer may be waiting for this reader meanwhile).
    pub fn caught_up(&self) -> bool {
        match (&self.reader, self.next) {
            (Some(r), Some(next)) => next > r.head_index(),
            _ => false,
        }
    }

    /// The reader, once the flow has been opened.
    pub fn reader(&self) -> Option<&GrainReader> {
        self.reader.as_deref()
    }

    /// Grains the writer overwrote before this follower read them; the counter can be read
    /// while a grain borrows the follower.
    pub fn drops(&self) -> Arc<AtomicU64> {
        self.drops.clone()
    }

    /// The next grain, waiting up to `timeout`.
    pub fn next_grain(&mut self, timeout: Duration) -> Result<Grain<'_>, FollowError> {
        let index = self.wait_next(timeout)?;
        let r = self.reader.as_ref().expect("read above");
        r.get_grain_slices(index, VALID_SLICES_ALL, Duration::ZERO)
            .map_err(|e| {
                FollowError::Timeout(format!(
                    "grain {index} overwritten while being received: {e}"
                ))
            })
    }

    /// The next grain, kept past this call (see [`GrainReader::hold`]): zero-copy hand-off
    /// of the payload, with a reliable cursor holding the writer back until it is dropped.
    pub fn next_held(&mut self, timeout: Duration) -> Result<HeldGrain, FollowError> {
        let index = self.wait_next(timeout)?;
        let r = self.reader.clone().expect("read above");
        let grain = r
            .get_grain_slices(index, VALID_SLICES_ALL, Duration::ZERO)
            .map_err(|e| {
                FollowError::Timeout(format!(
                    "grain {index} overwritten while being received: {e}"
                ))
            })?;
        Ok(GrainReader::hold(&r, grain))
    }

    /// Opens the flow, waiting up to `timeout` for its writer to create it, and reads
    /// nothing: its description can be taken on before its first grain is read.
    pub fn open(&mut self, timeout: Duration) -> Result<&GrainReader, FollowError> {
        let now = Instant::now();
        let deadline = now
            .checked_add(timeout)
            .unwrap_or(now + Duration::from_secs(365 * 24 * 3600));
        self.open_until(deadline)?;
        Ok(self.reader.as_deref().expect("opened above"))
    }

    /// Opens the flow if it is not yet (waiting for it until `deadline`).
    fn open_until(&mut self, deadline: Instant) -> Result<(), FollowError> {
        while self.reader.is_none() {
            // A reliable cursor at 0 waits for nothing that does not exist (the writer
            // floors it at its oldest grain) and holds back all the reader has not read.
            let options = ReaderOptions {
                reliable: self.reliable,
                start_index: Some(self.next.unwrap_or(0)),
            };
            #[cfg(test)]
            {
                self.opens_tried += 1;
            }
            match self.domain.open_grain_reader(self.flow_id, &options) {
                Ok(r) => {
                    self.reader = Some(Arc::new(r));
                    self.early_cursor = None;
                    self.appear = Appear::Untried;
                }
                Err(
                    e @ (FlowError::NotFound { .. }
                    | FlowError::Io { .. }
                    | FlowError::Corrupt { .. }),
                ) => {
                    // The writer has not created (or is re-creating) the flow.
                    let now = Instant::now();
                    if now >= deadline {
                        return Err(FollowError::Timeout("no writer on this flow yet".into()));
                    }
                    let left = deadline - now;
                    // No flow directory at all: its publication (a rename, or the mkdir of
                    // a writer that builds it in place) is an event of the domain. A
                    // directory being filled in is not, and is polled.
                    let absent = matches!(e, FlowError::NotFound { .. })
                        && !self.domain.flow_dir(self.flow_id).exists();
                    match &self.appear {
                        Appear::Untried if absent => {
                            // Watching from before the next look: a flow published in
                            // between is seen by that look or wakes the wait after it.
                            self.appear = match DirWatch::new(self.domain.path()) {
                                Some(w) => Appear::Watching(w),
                                None => Appear::Unavailable,
                            };
                        }
                        Appear::Watching(w) if absent => {
                            #[cfg(test)]
                            if let Some(waiting) = &self.waiting {
                                let _ = waiting.send(());
                            }
                            if w.wait(self.appear_backstop.min(left)).lost {
                                // The domain directory went, or events were dropped: a new
                                // watch (or polling, while the directory is not there).
                                self.appear = Appear::Untried;
                            }
                        }
                        _ => std::thread::sleep(FLOW_APPEAR_POLL.min(left)),
                    }
                }
                Err(e) => return Err(FollowError::Failed(e)),
            }
        }
        Ok(())
    }

    /// Waits until the next grain can be read; returns its index.
    fn wait_next(&mut self, timeout: Duration) -> Result<u64, FollowError> {
        let start = Instant::now();
        let deadline = start
            .checked_add(timeout)
            .unwrap_or(start + Duration::from_secs(365 * 24 * 3600));
        let index = loop {
            self.open_until(deadline)?;
            let r = self.reader.as_ref().expect("opened above");
            let reliable = self.reliable;
            let index = *self.next.get_or_insert_with(|| {
                let head = r.head_index();
                if reliable {
                    head.saturating_add(2).saturating_sub(r.grain_count())
                } else {
                    head
                }
            });
            match Self::wait_grain(r, index, deadline, self.spin, self.predicted()) {
                Ok(false) => break index,
                // An index the writer skipped (it writes by time): nothing to deliver.
                Ok(true) => {
                    r.release_before(index.saturating_add(1));
                    self.next = Some(index.saturating_add(1));
                }
                Err(FlowError::TooLate { oldest, .. }) => {
                    // Overrun (or a fresh flow whose head jumped to "now"): resume at the
                    // newest grain; indices before the first grain were never written.
                    let resume = if reliable {
                        oldest
                    } else {
                        r.head_index().max(oldest)
                    };
                    if self.received > 0 {
                        self.drops
                            .fetch_add(resume.saturating_sub(index), Ordering::Relaxed);
                    }
                    self.next = Some(resume);
                }
                Err(FlowError::TooEarly { .. }) => {
                    return Err(FollowError::Timeout(format!("no grain within {timeout:?}")))
                }
                Err(FlowError::EndOfStream { .. }) => return Err(FollowError::Closed),
                Err(FlowError::FlowInvalid { .. }) => {
                    // The writer restarted: follow it to the new flow, from its head.
                    self.reader = None;
                    self.next = None;
                }
                Err(e) => return Err(FollowError::Failed(e)),
            }
        };
        // Reliable: the cursor still holds `index`, so it cannot be gone. Live: a writer that
        // lapped us before the caller reads it is reported then, like a timeout.
        self.next = Some(index.saturating_add(1));
        self.received += 1;
        if let Some(r) = &self.reader {
            // The grain period (u64::MAX for a rate that is not one, which is not learned).
            let period = crate::time::index_to_timestamp(r.grain_rate(), 1);
            self.note_commit(r.last_write_time(), Some(period));
        }
        Ok(index)
    }

    /// When the writer's next commit is due: its schedule plus the usual interval (the
    /// writer's own times, not this receiver's wake-ups, which are late by however long
    /// the scheduler took); `None` when there is no rhythm to go by.
    fn predicted(&self) -> Option<Instant> {
        let (last, Some(interval)) = self.commits? else {
            return None;
        };
        let due = match self.schedule {
            Some((on_time, period)) => on_time.saturating_add(period),
            None => last.saturating_add(interval),
        };
        let now_tai = crate::time::now_tai_ns();
        let now = Instant::now();
        match due.checked_sub(now_tai) {
            Some(ahead) => now.checked_add(Duration::from_nanos(ahead)),
            // Overdue by less than a grain: any moment now. By more: the writer paused.
            None if now_tai - due < interval => Some(now),
            None => None,
        }
    }

    /// Learns the writer's rhythm from a commit time read from shared memory: the usual
    /// interval and, when that is the flow's grain `period` (ns, within 5%), the schedule,
    /// which a commit late by the writer's own jitter moves by a sixteenth of its lateness
    /// only (the grain clock and the commit clock may differ by some ppm), so the next
    /// spin still starts in time for an on-time commit.
    fn note_commit(&mut self, at: u64, period: Option<u64>) {
        if self.commits.is_some_and(|(last, _)| at <= last) {
            return; // seen already (several grains read after one wake-up)
        }
        self.learn_interval(at, period);
        let interval = self.commits.and_then(|(_, interval)| interval);
        let period = period.filter(|&p| {
            interval.is_some_and(|i| i.abs_diff(p) <= p / 20) && p <= MAX_GRAIN_INTERVAL_NS
        });
        self.schedule = period.map(|period| {
            let on_time = match self.schedule {
                Some((on_time, p)) if p == period => {
                    let due = on_time.saturating_add(period);
                    match at.checked_sub(due) {
                        // Earlier than the schedule: the schedule was late.
                        None => at,
                        Some(late) if late < period / 2 => due + late / 16,
                        // A gap (a skipped grain, a pause): start again from this commit.
                        Some(_) => at,
                    }
                }
                _ => at,
            };
            (on_time, period)
        });
    }

    /// Tracks the usual interval between commits (a moving average that ignores bursts and
    /// gaps, so a pause does not throw the prediction off for long). Anything but a
    /// plausible grain rhythm is not learned.
    fn learn_interval(&mut self, at: u64, period: Option<u64>) {
        // Longer than a period and a half: a skipped grain, not a slower rhythm.
        let gap = |seen: u64| period.is_some_and(|p| seen > p.saturating_mul(3) / 2);
        self.commits = Some(match self.commits {
            None => (at, None),
            Some((last, _)) if at <= last => return,
            Some((last, _)) if at - last > MAX_GRAIN_INTERVAL_NS => (at, None),
            Some((last, None)) => (at, Some(at - last)),
            Some((last, Some(avg))) => {
                let seen = at - last;
                let avg = if seen > avg / 4 && seen < avg.saturating_mul(4) && !gap(seen) {
                    (avg * 7 + seen) / 8
                } else {
                    avg
                };
                (at, Some(avg))
            }
        });
    }

    /// Waits for grain `index` until `deadline`: on the futex, but busy-polling within
    /// `spin` of the `predicted` arrival.
    fn wait_grain(
        r: &GrainReader,
        index: u64,
        deadline: Instant,
        spin: Duration,
        predicted: Option<Instant>,
    ) -> Result<bool, FlowError> {
        if let (false, Some(predicted)) = (spin.is_zero(), predicted) {
            let spin_from = predicted.checked_sub(spin).unwrap_or(predicted);
            let spin_until = (predicted + spin).min(deadline);
            let now = Instant::now();
            if now < spin_from {
                let nap = spin_from.min(deadline) - now;
                match r.wait_grain(index, VALID_SLICES_ALL, nap) {
                    Err(FlowError::TooEarly { .. }) => {}
                    other => return other,
                }
            }
            // Bounded by `spin_until`: at most 2 * spin of polling per grain.
            while Instant::now() < spin_until {
                match r.poll_grain(index, VALID_SLICES_ALL) {
                    Err(FlowError::TooEarly { .. }) => std::hint::spin_loop(),
                    other => return other,
                }
            }
        }
        let remaining = deadline.saturating_duration_since(Instant::now());
        r.wait_grain(index, VALID_SLICES_ALL, remaining)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn follower() -> (tempfile::TempDir, Follower) {
        let dir = tempfile::tempdir().unwrap();
        let domain = Domain::open(dir.path()).unwrap();
        let f = Follower::new(domain, Uuid::new_v4(), false).unwrap();
        (dir, f)
    }

    /// A receiver waiting for its sender sleeps on the domain until the flow is published:
    /// it looks a handful of times in 600 ms (polling every 5 ms looked about 120 times),
    /// and a flow published while it waits (with no backstop short of 60 s) ends the wait
    /// at once.
    #[test]
    fn waiting_for_a_flow_sleeps_until_it_is_published() {
        let (dir, mut f) = follower();
        f.appear_backstop = Duration::from_secs(60);
        assert!(matches!(
            f.open(Duration::from_millis(600)),
            Err(FollowError::Timeout(_))
        ));
        assert!(
            (2..=6).contains(&f.opens_tried),
            "{} looks in 600 ms",
            f.opens_tried
        );
        let domain = Domain::open(dir.path()).unwrap();
        let def = crate::format::FlowDef::video(
            f.flow_id(),
            "x",
            crate::format::VideoFormat::V210,
            96,
            8,
            crate::time::Rational::new(50, 1),
            crate::format::InterlaceMode::Progressive,
        )
        .unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        f.waiting = Some(tx);
        let waiter = std::thread::spawn(move || {
            let t = Instant::now();
            let opened = f.open(Duration::from_secs(60)).is_ok();
            (opened, t.elapsed(), f.opens_tried)
        });
        rx.recv().unwrap();
        let _writer = domain
            .create_grain_writer(&def, &super::super::WriterOptions::default())
            .unwrap();
        let (opened, took, looks) = waiter.join().unwrap();
        assert!(opened);
        assert!(
            took < Duration::from_secs(30),
            "woken by the publish: {took:?}"
        );
        assert!(looks < 60, "{looks} looks");
    }

    #[test]
    fn the_next_commit_is_predicted_from_the_writers_own_times() {
        let (_dir, mut f) = follower();
        let now = crate::time::now_tai_ns();
        // Commits every 20 ms, the last 5 ms ago: the next is due in about 15 ms,
        // however late this receiver woke for the earlier ones.
        for k in (0..6u64).rev() {
            f.note_commit(now - 5_000_000 - k * 20_000_000, None);
        }
        let ahead = f.predicted().unwrap() - Instant::now();
        assert!(
            ahead > Duration::from_millis(13) && ahead < Duration::from_millis(16),
            "{ahead:?}"
        );
        // A commit seen twice (a backlog read later) changes nothing.
        f.note_commit(now - 5_000_000, None);
        assert_eq!(f.commits, Some((now - 5_000_000, Some(20_000_000))));
        // A burst, then a pause, are not learned as the rhythm.
        f.note_commit(now - 4_000_000, None);
        f.note_commit(now + 100_000_000, None);
        assert_eq!(f.commits, Some((now + 100_000_000, Some(20_000_000))));
    }

    #[test]
    fn commits_late_by_jitter_do_not_make_the_prediction_late() {
        let (_dir, mut f) = follower();
        let period = 20_000_000u64;
        let now = crate::time::now_tai_ns();
        let first = now - 15 * period - 5_000_000;
        // On-time commits, then the last one late by 150 us (the writer woke late).
        for k in 0..15u64 {
            f.note_commit(first + k * period, Some(period));
        }
        f.note_commit(first + 15 * period + 150_000, Some(period));
        let due = first + 16 * period;
        let (on_time, p) = f.schedule.unwrap();
        assert_eq!(p, period);
        // The schedule moved by a sixteenth of the lateness, not by all of it.
        assert_eq!(on_time + period, due + 150_000 / 16);
        // Without the flow's period, the last commit is the base, late by all of it.
        let (_dir, mut g) = follower();
        for k in 0..15u64 {
            g.note_commit(first + k * period, None);
        }
        g.note_commit(first + 15 * period + 150_000, None);
        assert!(g.schedule.is_none());
        let late = g.predicted().unwrap() - f.predicted().unwrap();
        // (The last commit, plus an average interval the late commit lengthened by 19 us.)
        assert!(
            late > Duration::from_micros(150) && late < Duration::from_micros(175),
            "{late:?}"
        );
        // An early commit moves the schedule to it; a gap of a grain starts again from it.
        f.note_commit(due - 10_000, Some(period));
        assert_eq!(f.schedule, Some((due - 10_000, period)));
        f.note_commit(due - 10_000 + 2 * period, Some(period));
        assert_eq!(f.schedule, Some((due - 10_000 + 2 * period, period)));
        // A period the commits do not follow (a writer at half the rate) is not used.
        let (_dir, mut h) = follower();
        for k in 0..8u64 {
            h.note_commit(first + k * 2 * period, Some(period));
        }
        assert!(h.schedule.is_none());
        assert_eq!(h.commits, Some((first + 14 * period, Some(2 * period))));
    }

    #[test]
    fn garbage_commit_times_from_shared_memory_never_panic() {
        let (_dir, mut f) = follower();
        for at in [0, 1, u64::MAX / 2, u64::MAX - 2, u64::MAX - 1, u64::MAX, 7] {
            f.note_commit(at, None);
            // Due in some far future, or unknown: never a spin now.
            assert!(f
                .predicted()
                .is_none_or(|p| p > Instant::now() + Duration::from_secs(3600)));
        }
        // Far-apart times are a pause, not a rhythm.
        f.note_commit(u64::MAX, None);
        let (_dir, mut g) = follower();
        g.note_commit(1_000, None);
        g.note_commit(1_000 + 2 * MAX_GRAIN_INTERVAL_NS, None);
        assert_eq!(g.commits, Some((1_000 + 2 * MAX_GRAIN_INTERVAL_NS, None)));
    }
}
