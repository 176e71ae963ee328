//! TAI time and the grain index model of MXL (`IndexConversion.hpp`, `time.cpp`).
//!
//! Time is nanoseconds since the SMPTE ST 2059 epoch (1970-01-01 00:00:00 TAI), read from
//! `CLOCK_TAI`. A grain index is the number of grain periods since that epoch, rounded to
//! the nearest period; the ring slot of index `i` is `i mod grainCount`.

use std::fmt;
use std::sync::Once;

use serde::{Deserialize, Serialize};

/// Index returned for an undefined (zero or negative) rate (MXL `MXL_UNDEFINED_INDEX`).
pub const UNDEFINED_INDEX: u64 = u64::MAX;

const NS_PER_SEC: u128 = 1_000_000_000;

/// A grain rate or sample rate in grains (samples) per second, `numerator / denominator`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Rational {
    pub numerator: i64,
    pub denominator: i64,
}

impl Rational {
    pub const fn new(numerator: i64, denominator: i64) -> Self {
        Self {
            numerator,
            denominator,
        }
    }

    /// True when both terms are positive.
    pub fn is_valid(&self) -> bool {
        self.numerator > 0 && self.denominator > 0
    }

    /// The same rate with numerator and denominator divided by their gcd.
    pub fn reduced(&self) -> Self {
        let g = gcd(
            self.numerator.unsigned_abs(),
            self.denominator.unsigned_abs(),
        )
        .max(1) as i64;
        Self::new(self.numerator / g, self.denominator / g)
    }

    /// The rate in Hz as a float, for display.
    pub fn as_f64(&self) -> f64 {
        self.numerator as f64 / self.denominator as f64
    }
}

impl fmt::Display for Rational {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.numerator, self.denominator)
    }
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// Grain index at TAI time `ts_ns`, rounded to nearest:
/// `(ts * num + 5e8 * den) / (1e9 * den)` in 128-bit arithmetic (MXL `timestampToIndex`).
pub fn timestamp_to_index(rate: Rational, ts_ns: u64) -> u64 {
    if !rate.is_valid() {
        return UNDEFINED_INDEX;
    }
    let (num, den) = (rate.numerator as u128, rate.denominator as u128);
    // ts < 2^64 and num, den < 2^63: every product fits in 128 bits.
    let index = (ts_ns as u128 * num + 500_000_000 * den) / (NS_PER_SEC * den);
    u64::try_from(index).unwrap_or(UNDEFINED_INDEX)
}

/// TAI time of grain `index`, rounded to nearest:
/// `(index * den * 1e9 + num / 2) / num` in 128-bit arithmetic (MXL `indexToTimestamp`).
pub fn index_to_timestamp(rate: Rational, index: u64) -> u64 {
    if !rate.is_valid() || index == UNDEFINED_INDEX {
        return u64::MAX;
    }
    let (num, den) = (rate.numerator as u128, rate.denominator as u128);
    // index * den can reach 2^127: a corrupt header's rate must not overflow the product.
    let Some(scaled) = (index as u128)
        .checked_mul(den)
        .and_then(|v| v.checked_mul(NS_PER_SEC))
    else {
        return u64::MAX;
    };
    let ts = (scaled + num / 2) / num;
    u64::try_from(ts).unwrap_or(u64::MAX)
}

/// Current TAI time in ns since the SMPTE ST 2059 epoch (`CLOCK_TAI`).
///
/// When the kernel's TAI offset was never set (no PTP daemon or chrony), `CLOCK_TAI` equals
/// UTC and indices are 37 s off true TAI; this is logged once, as a warning.
pub fn now_tai_ns() -> u64 {
    static CHECK: Once = Once::new();
    let tai = rustix::time::clock_gettime_dynamic(rustix::time::DynamicClockId::Tai)
        .unwrap_or_else(|_| rustix::time::clock_gettime(rustix::time::ClockId::Realtime));
    CHECK.call_once(|| {
        let utc = rustix::time::clock_gettime(rustix::time::ClockId::Realtime);
        if (tai.tv_sec - utc.tv_sec).abs() < 1 {
            tracing::warn!(
                "the kernel TAI offset is unset (CLOCK_TAI == CLOCK_REALTIME): grain indices \
                 follow UTC, 37 s off TAI; run ptp4l/phc2sys or chrony to set it"
            );
        }
    });
    tai.tv_sec as u64 * 1_000_000_000 + tai.tv_nsec as u64
}

/// Grain index of now at `rate` (MXL `mxlGetCurrentIndex`).
pub fn current_index(rate: Rational) -> u64 {
    timestamp_to_index(rate, now_tai_ns())
}

/// Nanoseconds from now until grain `index` starts; 0 if it already has (MXL `mxlGetNsUntilIndex`).
pub fn ns_until_index(rate: Rational, index: u64) -> u64 {
    index_to_timestamp(rate, index).saturating_sub(now_tai_ns())
}

/// Sleeps until TAI time `ts_ns` (returns at once if it has passed): an absolute sleep on
/// `CLOCK_TAI`, so no time is lost between reading the clock and going to sleep.
pub fn sleep_until_tai(ts_ns: u64) {
    let at = rustix::time::Timespec {
        tv_sec: (ts_ns / 1_000_000_000) as i64,
        tv_nsec: (ts_ns % 1_000_000_000) as _,
    };
    loop {
        match rustix::thread::clock_nanosleep_absolute(rustix::thread::ClockId::Tai, &at) {
            Ok(()) => return,
            Err(rustix::io::Errno::INTR) => continue,
            // No CLOCK_TAI sleeps (now_tai_ns then reads the real-time clock too).
            Err(_) => break,
        }
    }
    let now = now_tai_ns();
    if ts_ns > now {
        std::thread::sleep(std::time::Duration::from_nanos(ts_ns - now));
    }
}

/// Longest a [`PunctualSleeper`] spins: the wake-up latency it makes up for is capped
/// here, and so is one observed latency (a stray wake-up a millisecond late must not make
/// it spin for the next hundred).
const MAX_SPIN_NS: u64 = 50_000;

/// Sleeps to TAI deadlines and wakes on time: it learns how late this machine's timer
/// wake-ups come at least (a low quantile of the recent ones: 12-20 µs at `SCHED_FIFO` on
/// this project's virtual machine), sleeps that much less and spins the rest. A pacer that
/// slept to each deadline would lose that latency on every burst, hundreds of times a
/// frame: enough to fall behind its schedule. The estimate follows faster wake-ups
/// quickly and slower ones slowly, so a loaded machine's slow wake-ups do not turn into
/// long spins once it is quiet again.
#[derive(Debug, Default, Clone)]
pub struct PunctualSleeper {
    latency_ns: f64,
    spun_ns: u64,
}

impl PunctualSleeper {
    /// Returns at TAI time `ts_ns` (at once if it has passed).
    pub fn sleep_until_tai(&mut self, ts_ns: u64) {
        let now = now_tai_ns();
        if ts_ns <= now {
            return;
        }
        let lead = (self.latency_ns as u64).min(MAX_SPIN_NS);
        let target = ts_ns - lead;
        if target > now {
            sleep_until_tai(target);
            let observed = now_tai_ns().saturating_sub(target).min(MAX_SPIN_NS) as f64;
            let weight = if observed < self.latency_ns {
                0.25
            } else {
                1.0 / 64.0
            };
            self.latency_ns += (observed - self.latency_ns) * weight;
        }
        let spin_from = now_tai_ns();
        let mut at = spin_from;
        while at < ts_ns {
            std::hint::spin_loop();
            at = now_tai_ns();
        }
        self.spun_ns += at.saturating_sub(spin_from);
    }

    /// The wake-up latency it makes up for, ns.
    pub fn latency_ns(&self) -> u64 {
        self.latency_ns as u64
    }

    /// Time spent spinning so far, ns.
    pub fn spun_ns(&self) -> u64 {
        self.spun_ns
    }
}

/// Readies the calling thread for software pacing: see [`realtime_thread`].
pub fn pacing_thread() -> bool {
    realtime_thread("pacing thread", PACING_PRIORITY)
}

/// `SCHED_FIFO` priority of pacing threads.
pub const PACING_PRIORITY: u8 = 50;

/// Readies the calling thread for work that must happen on time: a timer slack of 1 ns
/// (not the default 50 µs), and real-time priority (`SCHED_FIFO`) where the process may
/// take it (root or `CAP_SYS_NICE`), so its wake-ups stay on time while other threads load
/// every core; otherwise a pacer's late wake-ups pile up in a frame of hundreds of bursts.
/// The thread must
/// sleep between bursts of work (a real-time thread that spun for long would starve the
/// host; a [`PunctualSleeper`] spins at most 50 µs before each deadline, and for formats
/// whose bursts come closer than its wake-up latency, 2160p, it hardly sleeps at all).
/// Returns whether the thread runs real-time (at `priority`, 1-99).
pub fn realtime_thread(role: &str, priority: u8) -> bool {
    use thread_priority::{
        set_thread_priority_and_policy, thread_native_id, RealtimeThreadSchedulePolicy,
        ThreadPriority, ThreadPriorityValue, ThreadSchedulePolicy,
    };
    let _ = rustix::thread::set_current_timer_slack(std::num::NonZeroU64::new(1));
    let Ok(value) = ThreadPriorityValue::try_from(priority) else {
        return false;
    };
    let realtime = set_thread_priority_and_policy(
        thread_native_id(),
        ThreadPriority::Crossplatform(value),
        ThreadSchedulePolicy::Realtime(RealtimeThreadSchedulePolicy::Fifo),
    )
    .is_ok();
    if !realtime {
        tracing::info!(
            "{role} runs at normal priority (no CAP_SYS_NICE): it may wake late when the \
             cores are busy"
        );
    }
    realtime
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounding_is_to_nearest() {
        let r = Rational::new(25, 1);
        // 40 ms period: 19.999 ms rounds down, 20 ms rounds up.
        assert_eq!(timestamp_to_index(r, 19_999_999), 0);
        assert_eq!(timestamp_to_index(r, 20_000_000), 1);
        assert_eq!(index_to_timestamp(r, 3), 120_000_000);
        let ntsc = Rational::new(30000, 1001);
        // 1001/30 ms = 33_366_666.67 ns rounds to 33_366_667.
        assert_eq!(index_to_timestamp(ntsc, 1), 33_366_667);
        assert_eq!(timestamp_to_index(Rational::new(0, 0), 5), UNDEFINED_INDEX);
    }

    /// Never returns before the deadline, whatever latency it learnt; learns a latency
    /// no larger than the cap.
    #[test]
    fn a_punctual_sleeper_is_never_early() {
        let mut s = PunctualSleeper::default();
        for k in 0..200u64 {
            let deadline = now_tai_ns() + 20_000 + (k % 7) * 5_000;
            s.sleep_until_tai(deadline);
            assert!(now_tai_ns() >= deadline, "woke early at {k}");
        }
        // A deadline in the past returns at once, however far back it is.
        let before = now_tai_ns();
        s.sleep_until_tai(before - 10_000_000_000);
        assert!(now_tai_ns() - before < 1_000_000_000);
    }

    #[test]
    fn reduce() {
        assert_eq!(
            Rational::new(60000, 2002).reduced(),
            Rational::new(30000, 1001)
        );
    }
}
