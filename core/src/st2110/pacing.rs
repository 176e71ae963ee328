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
    // Network compatibility model: a bucket drained at one packet per TRS.
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
        }
    }

    /// One packet arrived at `arrival_ns` (TAI); `epoch_ns` is its frame's epoch (the TAI
    /// time its RTP timestamp stands for). `last` marks the frame's last packet (marker).
    /// Returns the frame's timing when it ends.
    pub fn packet(&mut self, arrival_ns: f64, epoch_ns: f64, last: bool) -> Option<FrameTiming> {
        let trs = self.model.trs_ns();
        if let Some(prev) = self.last_arrival {
            self.bucket = (self.bucket - (arrival_ns - prev) / trs).max(0.0);
        }
        self.bucket += 1.0;
        self.last_arrival = Some(arrival_ns);
        self.cmax = self.cmax.max(self.bucket);
        if !self.frame_open {
            self.frame_open = true;
            self.received = 0;
            self.vrx_max = 0.0;
            self.underrun = false;
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
        Some(timing)
    }
}

/// Packets per burst of a [`WideSchedule`]: one under the wide model's CMAX of 16 (for
/// formats of up to about 5800 packets per frame at 60 fps). The schedule never sends a
/// burst sooner than a full spacing after the previous one started, so the network buffer
/// never holds more than one burst. Fewer, larger bursts keep the wake-ups (and the CPU
/// they cost) down: about 290 per 1080p frame.
pub const WIDE_BURST: usize = 15;

/// Bursts ahead of TPR0 a [`WideSchedule`] starts (about 1.3 ms at 1080p59.94), so bursts
/// sent late (timer wake-ups that overslept, up to that much in a frame) do not run the
/// receiver's virtual buffer dry; the wide model's VRX_FULL (720 packets) holds the lead.
const WIDE_LEAD_BURSTS: f64 = 24.0;

/// A sender schedule the ST 2110-21 wide model accepts (the model for a paced sender; the
/// bridges still send 32 bursts per frame): bursts of [`WIDE_BURST`] packets,
/// one every `WIDE_BURST` × TRS, from a few bursts before the frame's TPR0 (its epoch plus
/// TROFFSET). A burst is never sent sooner than a full spacing after the one before it,
/// even when late: catching up would overfill the network buffer (CMAX).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WideSchedule {
    /// Nominal time of the first burst, ns (on whatever clock the caller uses).
    pub first_ns: f64,
    pub spacing_ns: f64,
}

impl WideSchedule {
    /// The schedule of a frame whose transmission epoch is `epoch_ns`.
    pub fn new(model: &PacingModel, epoch_ns: f64) -> Self {
        let spacing_ns = WIDE_BURST as f64 * model.trs_ns();
        Self {
            first_ns: epoch_ns + model.troffset_ns - WIDE_LEAD_BURSTS * spacing_ns,
            spacing_ns,
        }
    }

    /// Where the first burst sits relative to the frame's epoch, ns (negative: before it).
    pub fn first_offset_ns(model: &PacingModel) -> f64 {
        model.troffset_ns - WIDE_LEAD_BURSTS * WIDE_BURST as f64 * model.trs_ns()
    }

    /// How late a frame may start and still keep its period: half the lead, so a frame
    /// that begins late (the one before ran over) does not push the stream a period back.
    pub fn start_slack_ns(model: &PacingModel) -> f64 {
        WIDE_LEAD_BURSTS / 2.0 * WIDE_BURST as f64 * model.trs_ns()
    }

    /// When burst `k` is due, given when the one before it went (if it did).
    pub fn due_ns(&self, k: usize, previous_sent_ns: Option<f64>) -> f64 {
        let nominal = self.first_ns + k as f64 * self.spacing_ns;
        previous_sent_ns.map_or(nominal, |p| nominal.max(p + self.spacing_ns))
    }
}

/// The TAI time (ns) a 90 kHz RTP timestamp stands for, taking the one nearest `near_ns`
/// (RTP timestamps wrap every 13.25 hours).
pub fn rtp_epoch_ns(rtp: u32, near_ns: u64) -> f64 {
    let near_ticks = near_ns as u128 * 9 / 100_000;
    let diff = rtp.wrapping_sub(near_ticks as u32) as i32;
    let ticks = near_ticks as i128 + i128::from(diff);
    ticks as f64 * 100_000.0 / 9.0
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
            .filter_map(|i| c.packet(epoch + at(i), epoch, i + 1 == n))
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

    #[test]
    fn rtp_epochs_unwrap_near_the_arrival() {
        let t: u64 = 1_763_000_000_123_456_789;
        let rtp = (t as u128 * 9 / 100_000) as u32;
        assert!((rtp_epoch_ns(rtp, t + 5_000_000) - t as f64).abs() < 20_000.0);
        assert!((rtp_epoch_ns(rtp.wrapping_sub(1), t) - (t as f64 - 11_111.0)).abs() < 20_000.0);
    }

    /// The sender's wide schedule, sent on time or with some bursts late (30 µs every 50th,
    /// or 200 µs every 200th: worse than this VM's timer p99.9 of about 185 µs), is what
    /// the checker calls wide, frame after frame; the old 32-burst schedule is not.
    #[test]
    fn the_wide_schedule_passes_the_wide_model() {
        let m = PacingModel::progressive(Rational::new(60000, 1001), 4320, 1080);
        let n = m.packets as usize;
        for (every, lateness) in [(1, 0.0), (50, 30_000.0), (200, 200_000.0)] {
            let mut c = TimingChecker::new(m);
            // The sender is one loop: spacing holds across frames too.
            let mut previous = None;
            for f in 0..5 {
                let epoch = f as f64 * m.t_frame_ns;
                let s = WideSchedule::new(&m, epoch);
                let mut last = None;
                for k in 0..n.div_ceil(WIDE_BURST) {
                    let late = if k % every == 7 % every {
                        lateness
                    } else {
                        0.0
                    };
                    let sent = s.due_ns(k, previous) + late;
                    previous = Some(sent);
                    for i in k * WIDE_BURST..((k + 1) * WIDE_BURST).min(n) {
                        last = c.packet(sent, epoch, i + 1 == n);
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
        }
        // 32 bursts of 135 packets: beyond CMAX.
        let mut c = TimingChecker::new(m);
        let t = frame(&mut c, 0.0, m.packets, |i| {
            m.troffset_ns + f64::from(i / 135) * m.t_frame_ns * 0.9 / 32.0
        });
        assert_eq!(t.verdict, SenderType::NonCompliant);
    }
}
