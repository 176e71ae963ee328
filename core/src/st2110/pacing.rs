//! ST 2110-21 timing: the sender model (TRS, TROFFSET, CMAX, VRX_FULL for narrow and wide
//! senders) and a receiver-side checker that measures a stream against it (Cinst in the
//! network compatibility model, VRX in the virtual receive buffer) and says whether it is
//! narrow, wide or neither. Sans-IO: arrival times in, verdicts out.

use crate::time::Rational;

/// Sender type of ST 2110-21 §6.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum SenderType {
    /// `TP=2110TPN`.
    Narrow,
    /// `TP=2110TPW`.
    Wide,
    /// Bursts beyond the wide limits.
    NonCompliant,
}

/// The ST 2110-21 model for one video format and packet count.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PacingModel {
    /// Frame (or field) period, ns.
    pub t_frame_ns: f64,
    /// Packets per frame.
    pub packets: u32,
    /// Active share of the frame period (1080/1125 for progressive formats).
    pub r_active: f64,
    /// Time from the frame's epoch to its first packet's nominal arrival, ns.
    pub troffset_ns: f64,
}

impl PacingModel {
    /// A progressive format at `rate` frames per second with `packets` per frame;
    /// `lines` picks TROFFSET (43/1125 of a frame for 1080 lines, 28/750 for 720).
    pub fn progressive(rate: Rational, packets: u32, lines: u32) -> Self {
        let t_frame_ns = 1e9 * rate.denominator as f64 / rate.numerator.max(1) as f64;
        let troffset_ns = if lines == 720 {
            t_frame_ns * 28.0 / 750.0
        } else {
            t_frame_ns * 43.0 / 1125.0
        };
        Self {
            t_frame_ns,
            packets: packets.max(1),
            r_active: 1080.0 / 1125.0,
            troffset_ns,
        }
    }

    /// Time between packets of a narrow sender: `TRS = T_FRAME * R_ACTIVE / N`, ns.
    pub fn trs_ns(&self) -> f64 {
        self.t_frame_ns * self.r_active / f64::from(self.packets)
    }

    /// Drain time of the network compatibility model's bucket: `T_DRAIN = T_FRAME / N / β`
    /// with β = 1.1, ns (a little faster than TRS, so a narrow sender never fills it).
    pub fn tdrain_ns(&self) -> f64 {
        self.t_frame_ns / f64::from(self.packets) / 1.1
    }

    fn t_frame_s(&self) -> f64 {
        self.t_frame_ns / 1e9
    }

    /// Most packets in the network compatibility buffer.
    pub fn cmax(&self, t: SenderType) -> f64 {
        let n = f64::from(self.packets);
        match t {
            SenderType::Narrow => (n / (43_200.0 * self.r_active * self.t_frame_s())).max(4.0),
            _ => (n / (21_600.0 * self.t_frame_s())).max(16.0),
        }
    }

    /// Size of the virtual receive buffer, in packets.
    pub fn vrx_full(&self, t: SenderType) -> f64 {
        let n = f64::from(self.packets);
        match t {
            SenderType::Narrow => (n / (27_000.0 * self.t_frame_s())).max(8.0),
            _ => (n / (300.0 * self.t_frame_s())).max(720.0),
        }
    }
}

/// What the checker measured on one frame.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FrameTiming {
    /// Highest Cinst (packets in the network compatibility buffer).
    pub cmax: f64,
    /// Highest VRX occupancy (packets).
    pub vrx_max: f64,
    /// A packet came after the receiver should have drained it (VRX below zero).
    pub underrun: bool,
    pub verdict: SenderType,
}

/// Measures a stream's packets against a [`PacingModel`].
#[derive(Debug, Clone)]
pub struct TimingChecker {
    model: PacingModel,
    // Network compatibility model: a bucket drained at one packet per T_DRAIN.
    bucket: f64,
    last_arrival: Option<f64>,
    cmax: f64,
    // Virtual receive buffer of the frame under way.
    drain_start: f64,
    received: u64,
    vrx_max: f64,
    underrun: bool,
    frame_open: bool,
    /// Worst verdict seen so far.
    pub worst: Option<SenderType>,
    pub frames: u64,
    /// Frames measured narrow, wide and non-compliant.
    pub frames_by_verdict: [u64; 3],
}

impl TimingChecker {
    pub fn new(model: PacingModel) -> Self {
        Self {
            model,
            bucket: 0.0,
            last_arrival: None,
            cmax: 0.0,
            drain_start: 0.0,
            received: 0,
            vrx_max: 0.0,
            underrun: false,
            frame_open: false,
            worst: None,
            frames: 0,
            frames_by_verdict: [0; 3],
        }
    }

    /// One packet arrived at `arrival_ns`, on a time line where frame epochs fall on
    /// multiples of the frame period (TAI ns, or TAI less a frame boundary); `last` marks
    /// the frame's last packet (marker). Returns the frame's timing when it ends.
    ///
    /// A frame's transmission epoch is the one its first packet is nearest to, less
    /// TROFFSET: ST 2110-21 times a frame's packets from the epoch of the period it is sent
    /// in, which a sender may pick a period or more after the media's own time (its RTP
    /// timestamp), as one that converts or gathers a frame before sending it must.
    pub fn packet(&mut self, arrival_ns: f64, last: bool) -> Option<FrameTiming> {
        let trs = self.model.trs_ns();
        if let Some(prev) = self.last_arrival {
            self.bucket = (self.bucket - (arrival_ns - prev) / self.model.tdrain_ns()).max(0.0);
        }
        self.bucket += 1.0;
        self.last_arrival = Some(arrival_ns);
        self.cmax = self.cmax.max(self.bucket);
        if !self.frame_open {
            self.frame_open = true;
            self.received = 0;
            self.vrx_max = 0.0;
            self.underrun = false;
            let t = self.model.t_frame_ns;
            let epoch_ns = ((arrival_ns - self.model.troffset_ns) / t).round() * t;
            self.drain_start = epoch_ns + self.model.troffset_ns;
        }
        self.received += 1;
        // Packets the receiver has drained by now: one per TRS from TPR0 = epoch + TROFFSET.
        let drained = if arrival_ns >= self.drain_start {
            ((arrival_ns - self.drain_start) / trs).floor() + 1.0
        } else {
            0.0
        };
        let occupancy = self.received as f64 - drained;
        if occupancy < 0.0 {
            self.underrun = true;
        }
        self.vrx_max = self.vrx_max.max(occupancy);
        if !last {
            return None;
        }
        self.frame_open = false;
        let within = |t: SenderType| {
            self.cmax <= self.model.cmax(t) && self.vrx_max <= self.model.vrx_full(t)
        };
        let verdict = if within(SenderType::Narrow) && !self.underrun {
            SenderType::Narrow
        } else if within(SenderType::Wide) && !self.underrun {
            SenderType::Wide
        } else {
            SenderType::NonCompliant
        };
        let timing = FrameTiming {
            cmax: self.cmax,
            vrx_max: self.vrx_max,
            underrun: self.underrun,
            verdict,
        };
        self.cmax = self.bucket;
        self.frames += 1;
        self.worst = Some(self.worst.map_or(verdict, |w| w.max(verdict)));
        self.frames_by_verdict[verdict as usize] += 1;
        Some(timing)
    }
}

/// How far ahead of TPR0 a [`BurstSchedule`] starts a frame, in packet times (TRS): about
/// 1.3 ms at 1080p59.94, so bursts sent late (timer wake-ups that overslept) do not run
/// the receiver's virtual buffer dry; the wide model's VRX_FULL (at least 720 packets)
/// holds the lead. Never more than a tenth of the frame period.
const WIDE_LEAD_TRS: f64 = 360.0;

/// Time a [`BurstSchedule`] keeps of the wide model's CMAX for jitter between the sender's
/// times and the receiver's, as whole packets (at least one): a loopback or veth receiver
/// stamps a burst 2-15 µs into its send call. At 1080p59.94 with standard packets (TRS
/// 3.7 µs) that is 4 packets: with 2, the receiver's check called 22-33% of frames wide;
/// with 4, 44-50% (the sender's own check 96-99% either way); with 6 (and no catch-up
/// room) the sender fell behind. With jumbo packets (TRS 14.8 µs) it is one.
const JITTER_NS: f64 = 15_000.0;

/// Packets of room a [`BurstSchedule`]'s bursts leave under its CMAX: the bucket drains
/// that much further between bursts sent on time, and a burst after a late wake-up (the
/// bucket drained meanwhile) goes at once.
const CATCH_UP_PACKETS: usize = 2;

/// How much slower than the model's T_DRAIN a [`BurstSchedule`] drains its own bucket:
/// 2% of margin for clock differences. T_DRAIN is about 5.3% shorter than TRS (β = 1.1 and
/// R_ACTIVE = 1080/1125), so a late sender still gains back about 3.5% of the time it
/// sends, within CMAX.
const DRAIN_MARGIN: f64 = 1.02;

/// A sender schedule the ST 2110-21 wide model accepts: bursts of [`BurstSchedule::burst`]
/// packets, one every `burst` × TRS, from a little before the frame's TPR0 (its
/// transmission epoch plus TROFFSET).
///
/// The sender keeps the model's network compatibility bucket (drained one packet per
/// T_DRAIN × [`DRAIN_MARGIN`]) as it sends: a burst waits until the bucket has room for it
/// under the wide CMAX, so a burst is never sent on top of a late one, yet a late sender
/// catches up: its bursts then follow the bucket, which drains faster than one packet per
/// TRS. A sender too late for that to end the frame in its period sends what is due in
/// one burst ([`burst_at`](Self::burst_at)). Sans-IO: times in, due times out.
///
/// [`coarse`](Self::coarse) is the cheap alternative for links with headroom: 32 bursts
/// per frame, as large as the kernel takes in one call, with no CMAX limit; about 40% less
/// CPU, and not ST 2110-21 compliant.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BurstSchedule {
    trs_ns: f64,
    /// How long the sender's bucket takes to drain a packet.
    drain_ns: f64,
    /// Packets per frame.
    packets: usize,
    /// Time between the frame's nominal last burst and the next frame's first:
    /// T_FRAME × (1 − R_ACTIVE).
    end_slack_ns: f64,
    /// The CMAX the sender keeps to (the model's, less [`JITTER_NS`] in whole packets).
    cmax: f64,
    /// Packets per burst.
    pub burst: usize,
    spacing_ns: f64,
    lead_ns: f64,
    troffset_ns: f64,
    // The bucket after the last burst sent, and when that was (TAI ns).
    bucket: f64,
    last_sent_ns: Option<u64>,
}

/// Most packets in a catch-up burst ([`BurstSchedule::burst_at`]): four send calls of a
/// GSO train (64 datagrams, at most 65,000 bytes) or a `sendmmsg` batch. A timer that
/// wakes the sender milliseconds late (a busy virtualisation host: 10% of wake-ups over
/// 1.2 ms late were measured) leaves hundreds of packets due; fewer per catch-up would let
/// the frame run over its period and the stream fall behind its writer.
pub const MAX_CATCH_UP_BURST: usize = 256;

/// Bursts per frame of a [`BurstSchedule::coarse`] schedule.
const COARSE_BURSTS: usize = 32;

impl BurstSchedule {
    /// The wide-model schedule of `model`'s format.
    pub fn wide(model: &PacingModel) -> Self {
        let trs_ns = model.trs_ns();
        // Packets of the wide CMAX kept back for jitter between the sender's clock and
        // the wire (a burst's send call takes a few µs, a TRS is 3.7 µs at 1080p59.94).
        let jitter = (JITTER_NS / trs_ns).round().max(1.0);
        let cmax = (model.cmax(SenderType::Wide) - jitter).floor().max(1.0);
        let burst = (cmax as usize).saturating_sub(CATCH_UP_PACKETS).max(1);
        Self {
            trs_ns,
            drain_ns: (model.tdrain_ns() * DRAIN_MARGIN).min(trs_ns),
            packets: model.packets as usize,
            end_slack_ns: model.t_frame_ns - f64::from(model.packets) * trs_ns,
            cmax,
            burst,
            spacing_ns: burst as f64 * trs_ns,
            lead_ns: (WIDE_LEAD_TRS * trs_ns).min(model.t_frame_ns / 10.0),
            troffset_ns: model.troffset_ns,
            bucket: 0.0,
            last_sent_ns: None,
        }
    }

    /// [`COARSE_BURSTS`] bursts across the active part of the frame period, each sent as
    /// soon as due (no bucket limit).
    pub fn coarse(model: &PacingModel) -> Self {
        let wide = Self::wide(model);
        let burst = (model.packets as usize).div_ceil(COARSE_BURSTS);
        Self {
            cmax: f64::INFINITY,
            burst,
            spacing_ns: burst as f64 * model.trs_ns(),
            ..wide
        }
    }

    /// This schedule, continuing the network bucket of `previous` (the same stream, its
    /// format changed): the first burst still waits for the last ones to drain.
    pub fn carrying_bucket_of(self, previous: &Self) -> Self {
        Self {
            bucket: previous.bucket,
            last_sent_ns: previous.last_sent_ns,
            ..self
        }
    }

    /// Where the first burst sits relative to the frame's epoch, ns (negative: before it).
    pub fn first_offset_ns(&self) -> i64 {
        (self.troffset_ns - self.lead_ns).round() as i64
    }

    /// How late a frame may start and still be sent in its epoch: half the lead, so the
    /// receiver's buffer never runs dry.
    pub fn start_slack_ns(&self) -> u64 {
        (self.lead_ns / 2.0) as u64
    }

    /// The transmission epoch (a grain index at `rate`, whose period is `t_frame_ns`) of a
    /// frame ready at `now_ns`: the first whose schedule it can still make (its first burst
    /// at most the start slack ago), after `last`, the epoch of the frame before. A `last`
    /// well ahead of now (the clock stepped back) is forgotten: the schedule starts over.
    pub fn transmission_epoch(
        &self,
        rate: Rational,
        now_ns: u64,
        t_frame_ns: f64,
        last: Option<u64>,
    ) -> u64 {
        let earliest = now_ns.saturating_sub(self.start_slack_ns());
        // Rounding to nearest from half a period on: the first boundary at or after.
        let epoch = crate::time::timestamp_to_index(
            rate,
            earliest
                .saturating_add_signed(-self.first_offset_ns())
                .saturating_add(t_frame_ns as u64 / 2),
        );
        match last {
            Some(l) if l <= epoch + 2 => epoch.max(l + 1),
            _ => epoch,
        }
    }

    /// How far behind its nominal times a sender may be after the first `sent` packets of
    /// a frame and still end the frame before the next one's first burst, ns: the gap
    /// between frames, and what the bucket wins back over the rest of the frame.
    pub fn recoverable_ns(&self, sent: usize) -> f64 {
        let rest = self.packets.saturating_sub(sent) as f64;
        self.end_slack_ns + rest * (self.trs_ns - self.drain_ns)
    }

    /// Packets for the burst after the first `sent` packets of the frame whose transmission
    /// epoch is `epoch_ns`, at `now_ns`: [`burst`](Self::burst), or, when late wake-ups
    /// left the sender further behind its nominal times than it can win back within CMAX
    /// by the frame's end ([`recoverable_ns`](Self::recoverable_ns)), every packet
    /// nominally due by now (at most [`MAX_CATCH_UP_BURST`]). A virtual machine's timer
    /// wake-ups can come milliseconds late, and a frame that ran over its period would
    /// push the next one late, and in the end into the following epoch: the stream would
    /// fall a frame behind for good. Such a catch-up burst exceeds CMAX (the sender's own
    /// check counts the frame as non-compliant) and keeps the frame in its period.
    pub fn burst_at(&self, epoch_ns: u64, sent: usize, now_ns: u64) -> usize {
        let start = epoch_ns as f64 + self.first_offset_ns() as f64;
        let behind_ns = now_ns as f64 - (start + sent as f64 * self.trs_ns);
        if behind_ns <= self.recoverable_ns(sent) {
            return self.burst;
        }
        // Packets whose nominal time has come (the burst they start included).
        let due = ((now_ns as f64 - start) / self.spacing_ns).floor() as usize + 1;
        (due * self.burst)
            .saturating_sub(sent)
            .clamp(self.burst, MAX_CATCH_UP_BURST.max(self.burst))
    }

    /// When the burst of `packets` packets after the first `sent` of the frame whose
    /// transmission epoch is `epoch_ns` is due: its nominal time, or later if the bursts
    /// already sent leave the network compatibility bucket too full for it. A catch-up
    /// burst (more than [`burst`](Self::burst) packets, from [`burst_at`](Self::burst_at))
    /// is due at once: its nominal time has passed.
    pub fn due_ns(&self, epoch_ns: u64, sent: usize, packets: usize) -> u64 {
        let offset = self.first_offset_ns() as f64
            + (sent / self.burst) as f64 * self.spacing_ns
            + (sent % self.burst) as f64 * self.trs_ns;
        let nominal = (epoch_ns as i128 + offset.round() as i128).max(0) as u64;
        let Some(last) = self.last_sent_ns else {
            return nominal;
        };
        if packets > self.burst {
            return nominal;
        }
        let excess = self.bucket + packets as f64 - self.cmax;
        if excess <= 0.0 {
            return nominal;
        }
        nominal.max(last + (excess * self.drain_ns).ceil() as u64)
    }

    /// A burst of `packets` went at `sent_ns`. A catch-up burst leaves the bucket at
    /// CMAX, not above: it broke the model, and waiting for the excess to drain would
    /// only put the sender behind again (and into the next catch-up). The receiver's
    /// bucket still holds that excess, draining about half a packet per burst, so the
    /// frames that follow may count as beyond the wide model too.
    pub fn sent(&mut self, sent_ns: u64, packets: usize) {
        let drained = self.last_sent_ns.map_or(f64::INFINITY, |l| {
            sent_ns.saturating_sub(l) as f64 / self.drain_ns
        });
        self.bucket = ((self.bucket - drained).max(0.0) + packets as f64).min(self.cmax);
        self.last_sent_ns = Some(sent_ns);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model() -> PacingModel {
        // 1080p59.94, BPM: 4115 packets per frame.
        PacingModel::progressive(Rational::new(60000, 1001), 4115, 1080)
    }

    #[test]
    fn the_model_matches_st2110_21_figures() {
        let m = model();
        assert!((m.trs_ns() - 3890.0).abs() < 5.0, "TRS {}", m.trs_ns());
        assert!(
            (m.troffset_ns - 637_700.0).abs() < 100.0,
            "TROFFSET {}",
            m.troffset_ns
        );
        assert!((m.cmax(SenderType::Narrow) - 5.9).abs() < 0.05);
        assert!((m.vrx_full(SenderType::Narrow) - 9.1).abs() < 0.1);
        assert!((m.vrx_full(SenderType::Wide) - 823.0).abs() < 1.0);
        assert_eq!(m.cmax(SenderType::Wide), 16.0);
    }

    /// A frame's arrivals: packet `i` at `at(i)` after the epoch.
    fn frame(c: &mut TimingChecker, epoch: f64, n: u32, at: impl Fn(u32) -> f64) -> FrameTiming {
        (0..n)
            .filter_map(|i| c.packet(epoch + at(i), i + 1 == n))
            .last()
            .expect("the last packet ends the frame")
    }

    #[test]
    fn evenly_spaced_is_narrow_bursts_are_wide_a_blast_is_neither() {
        let m = model();
        let (n, trs, tro) = (m.packets, m.trs_ns(), m.troffset_ns);
        let mut c = TimingChecker::new(m);
        let even = frame(&mut c, 0.0, n, |i| tro + f64::from(i) * trs);
        assert_eq!(even.verdict, SenderType::Narrow, "{even:?}");
        // Bursts of 8 packets, 8 TRS apart, starting a little early.
        let t = m.t_frame_ns;
        let bursty = frame(&mut c, t, n, |i| {
            tro - 20.0 * trs + f64::from(i / 8) * 8.0 * trs
        });
        assert_eq!(bursty.verdict, SenderType::Wide, "{bursty:?}");
        // The whole frame at once: far beyond CMAX.
        let blast = frame(&mut c, 2.0 * t, n, |i| tro + f64::from(i));
        assert_eq!(blast.verdict, SenderType::NonCompliant, "{blast:?}");
        assert_eq!(c.worst, Some(SenderType::NonCompliant));
        // Late packets: the receiver ran dry.
        let mut c = TimingChecker::new(m);
        let late = frame(&mut c, 0.0, n, |i| tro + f64::from(i) * trs * 1.2);
        assert!(late.underrun && late.verdict == SenderType::NonCompliant);
    }

    /// The jitter margin is time: 4 packets of 3.7 µs with standard packets at 1080p59.94
    /// (bursts of 10), one of 14.8 µs with jumbo packets, a line each (bursts of 13).
    #[test]
    fn wide_bursts_keep_a_jitter_margin_in_time() {
        let rate = Rational::new(60000, 1001);
        let standard = BurstSchedule::wide(&PacingModel::progressive(rate, 4320, 1080));
        assert_eq!((standard.cmax, standard.burst), (12.0, 10));
        let jumbo = BurstSchedule::wide(&PacingModel::progressive(rate, 1080, 1080));
        assert_eq!((jumbo.cmax, jumbo.burst), (15.0, 13));
    }

    /// On time, or late by what the bucket wins back by the frame's end, a burst is the
    /// schedule's; woken later than that, the sender gets every packet due by then in one
    /// burst (at most a send call's worth), due at once, and ends the frame in its period.
    #[test]
    fn a_sender_woken_late_catches_up_in_one_burst() {
        let m = model();
        let mut s = BurstSchedule::wide(&m);
        let epoch = 1_000_000_000_000u64;
        let start = epoch.saturating_add_signed(s.first_offset_ns());
        let trs = m.trs_ns();
        assert_eq!(s.burst_at(epoch, 0, start), s.burst);
        assert_eq!(s.burst_at(epoch, 40, start + (40.0 * trs) as u64), s.burst);
        // The gap between frames, and about 3.5% of the rest of the frame.
        let recoverable = s.recoverable_ns(40);
        let gap = m.t_frame_ns * (1.0 - m.r_active);
        let rest = (m.packets - 40) as f64 * trs;
        assert!(recoverable > gap + 0.03 * rest && recoverable < gap + 0.04 * rest);
        assert!(s.recoverable_ns(m.packets as usize) - gap < 1.0);
        let slightly = start + (40.0 * trs + recoverable) as u64 - 1_000;
        assert_eq!(s.burst_at(epoch, 40, slightly), s.burst);
        // 30 packet times later than that: at least those 30 and the burst due.
        let late = start + (70.0 * trs + recoverable) as u64;
        let n = s.burst_at(epoch, 40, late);
        assert!(n > 30 + s.burst && n <= MAX_CATCH_UP_BURST, "{n}");
        // Far behind: at most MAX_CATCH_UP_BURST at a time.
        assert_eq!(s.burst_at(epoch, 0, start + 5_000_000), MAX_CATCH_UP_BURST);
        // Due at once, whatever the bucket holds.
        s.sent(late, s.burst);
        assert!(s.due_ns(epoch, 40, n) <= late);
        assert!(s.due_ns(epoch, 40, s.burst) >= late);
        // Coarse bursts are never smaller for it.
        let c = BurstSchedule::coarse(&m);
        assert!(c.burst_at(epoch, 0, start + 50_000_000) >= c.burst);
    }

    /// The sender's loop over one frame, woken `late(k)` after burst `k`'s due time:
    /// returns the bursts' sizes, the checker's verdict and when the last burst went,
    /// relative to the next frame's first burst (negative: before it).
    fn send_frame(
        m: &PacingModel,
        s: &mut BurstSchedule,
        late: impl Fn(usize) -> u64,
    ) -> (Vec<usize>, FrameTiming, i64) {
        let n = m.packets as usize;
        let epoch = 1_000_000_000_000u64;
        let mut c = TimingChecker::new(*m);
        let (mut sent, mut now, mut sizes, mut timing) = (
            0,
            epoch.saturating_add_signed(s.first_offset_ns()),
            vec![],
            None,
        );
        while sent < n {
            let size = s.burst_at(epoch, sent, now).min(n - sent);
            now = now.max(s.due_ns(epoch, sent, size)) + late(sizes.len());
            s.sent(now, size);
            for i in sent..sent + size {
                timing = c.packet(now as f64 - epoch as f64, i + 1 == n).or(timing);
            }
            sent += size;
            sizes.push(size);
        }
        let next_first = (epoch + m.t_frame_ns as u64).saturating_add_signed(s.first_offset_ns());
        (
            sizes,
            timing.expect("frame ended"),
            now as i64 - next_first as i64,
        )
    }

    /// One wake-up late by a few hundred µs: the bucket wins the time back at the model's
    /// drain rate, with no burst over the schedule's and the frame wide and in its period
    /// (a catch-up burst, whose bucket the next bursts waited out, once put the sender
    /// further behind after each: a frame took its whole period in bursts of 256). Woken
    /// 3 ms late: catch-up bursts at once, then the schedule's bursts again, in the period.
    #[test]
    fn a_late_wake_up_is_won_back_and_does_not_cascade() {
        let m = PacingModel::progressive(Rational::new(60000, 1001), 4320, 1080);
        for late in [0, 400_000] {
            let mut s = BurstSchedule::wide(&m);
            let (sizes, timing, end) = send_frame(&m, &mut s, |k| if k == 7 { late } else { 0 });
            assert!(sizes.iter().all(|&b| b <= s.burst), "{late}: {sizes:?}");
            assert_eq!(timing.verdict, SenderType::Wide, "{late}: {timing:?}");
            assert!(
                end < 0,
                "{late} ns late once, the frame ends {end} ns into the next"
            );
        }

        let mut s = BurstSchedule::wide(&m);
        let (sizes, _, end) = send_frame(&m, &mut s, |k| if k == 7 { 3_000_000 } else { 0 });
        // Catch-up bursts (MAX_CATCH_UP_BURST at most each) right after the late one, then
        // the schedule's again.
        let big: Vec<_> = (0..sizes.len()).filter(|&k| sizes[k] > s.burst).collect();
        assert!(!big.is_empty() && big.len() <= 3, "{sizes:?}");
        assert_eq!(big, (8..8 + big.len()).collect::<Vec<_>>(), "{sizes:?}");
        assert!(
            end < 0,
            "3 ms late once, the frame ends {end} ns into the next"
        );
    }

    /// A frame ready just before its epoch's first burst (or up to the start slack after)
    /// goes in that epoch; later, in the next; never in or before the last one's; and a
    /// last epoch far ahead (the clock stepped back) is forgotten.
    #[test]
    fn transmission_epochs() {
        let rate = Rational::new(60000, 1001);
        let m = PacingModel::progressive(rate, 4320, 1080);
        let s = BurstSchedule::wide(&m);
        let e = 107_612_550_800u64;
        let first =
            crate::time::index_to_timestamp(rate, e).saturating_add_signed(s.first_offset_ns());
        let epoch = |now, last| s.transmission_epoch(rate, now, m.t_frame_ns, last);
        assert_eq!(epoch(first - 1_000, None), e);
        assert_eq!(epoch(first + s.start_slack_ns() - 1_000, None), e);
        assert_eq!(epoch(first + s.start_slack_ns() + 1_000, None), e + 1);
        assert_eq!(epoch(first - 1_000, Some(e)), e + 1);
        assert_eq!(epoch(first - 1_000, Some(e + 1)), e + 2);
        assert_eq!(epoch(first - 1_000, Some(e + 100)), e);
    }

    /// A frame is timed from the epoch it is sent in, whatever its media time: a frame
    /// sent a period or three late is narrow if its packets are; one whose packets start
    /// 2 ms after TPR0 runs the receiver dry.
    #[test]
    fn frames_are_timed_from_the_epoch_they_are_sent_in() {
        let m = model();
        let (n, trs, tro, t) = (m.packets, m.trs_ns(), m.troffset_ns, m.t_frame_ns);
        let mut c = TimingChecker::new(m);
        for period in [0.0, 1.0, 4.0] {
            let f = frame(&mut c, period * t, n, |i| tro + f64::from(i) * trs);
            assert_eq!(f.verdict, SenderType::Narrow, "{period}: {f:?}");
        }
        let late = frame(&mut c, 5.0 * t, n, |i| tro + 2e6 + f64::from(i) * trs);
        assert!(late.underrun && late.verdict == SenderType::NonCompliant);
        assert_eq!(c.frames_by_verdict, [3, 0, 1]);
    }

    /// The sender's wide schedule, sent on time or with some bursts late (30 µs every 50th,
    /// or 200 µs every 200th: worse than this VM's timer p99.9 of about 185 µs), or a frame
    /// started late by the start slack, is what the checker calls wide, frame after frame;
    /// the old 32-burst schedule is not.
    #[test]
    fn the_wide_schedule_passes_the_wide_model() {
        let m = PacingModel::progressive(Rational::new(60000, 1001), 4320, 1080);
        let n = m.packets as usize;
        let base: u64 = 1_000_000_000_000;
        for (every, lateness, start_late) in [
            (1, 0, false),
            (50, 30_000, false),
            (200, 200_000, false),
            (1, 0, true),
        ] {
            let mut c = TimingChecker::new(m);
            // The sender is one loop: the bucket carries across frames.
            let mut s = BurstSchedule::wide(&m);
            assert_eq!(s.burst, 10);
            for f in 0..5u64 {
                let epoch = base + (f as f64 * m.t_frame_ns) as u64;
                let mut last = None;
                for k in 0..n.div_ceil(s.burst) {
                    let packets = s.burst.min(n - k * s.burst);
                    let mut sent = s.due_ns(epoch, k * s.burst, packets);
                    if k % every == 7 % every {
                        sent += lateness;
                    }
                    if start_late {
                        sent = sent.max(
                            epoch.saturating_add_signed(s.first_offset_ns()) + s.start_slack_ns(),
                        );
                    }
                    s.sent(sent, packets);
                    for i in k * s.burst..k * s.burst + packets {
                        last = c.packet((sent as i64 - base as i64) as f64, i + 1 == n);
                    }
                }
                let timing = last.expect("frame ended");
                assert_ne!(
                    timing.verdict,
                    SenderType::NonCompliant,
                    "late {lateness}: {timing:?}"
                );
            }
            assert_eq!(c.worst, Some(SenderType::Wide), "late {lateness}");
            assert_eq!(c.frames_by_verdict, [0, 5, 0]);
        }
        // 32 bursts of 135 packets: beyond CMAX.
        let mut c = TimingChecker::new(m);
        let t = frame(&mut c, 0.0, m.packets, |i| {
            m.troffset_ns + f64::from(i / 135) * m.t_frame_ns * 0.9 / 32.0
        });
        assert_eq!(t.verdict, SenderType::NonCompliant);
    }
}
