//! Counters a running bridge updates as it goes, for a control plane to read at any time
//! (the proxy's `ListBridges`, `mcm bridges`). Relaxed atomics: each is a tally, read alone.

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Mutex;

use super::pacing::SenderType;

#[derive(Debug, Default)]
pub struct LiveCounters {
    /// RTP packets sent or received.
    pub packets: AtomicU64,
    /// Grains sent, or committed by a receiver (frames for video, packet times for audio).
    pub grains: AtomicU64,
    /// Video frames received with packets missing (never committed).
    pub incomplete: AtomicU64,
    /// Audio packets never received (their time committed as silence).
    pub lost: AtomicU64,
    /// Grains a sender skipped because it fell behind the flow's writer.
    pub dropped: AtomicU64,
    /// The ST 2110-21 verdict of the stream received: 0 none yet, then narrow, wide,
    /// non-compliant.
    timing: AtomicU8,
    /// The SDP of the stream a sender emits (empty before its first grain).
    sdp: Mutex<String>,
    /// The bridge's thread has returned; with why, if it failed.
    ended: Mutex<Option<String>>,
}

impl LiveCounters {
    pub fn set(counter: &AtomicU64, value: u64) {
        counter.store(value, Ordering::Relaxed);
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    pub fn set_timing(&self, verdict: Option<SenderType>) {
        let v = match verdict {
            None => 0,
            Some(SenderType::Narrow) => 1,
            Some(SenderType::Wide) => 2,
            Some(SenderType::NonCompliant) => 3,
        };
        self.timing.store(v, Ordering::Relaxed);
    }

    pub fn timing(&self) -> Option<SenderType> {
        match self.timing.load(Ordering::Relaxed) {
            1 => Some(SenderType::Narrow),
            2 => Some(SenderType::Wide),
            3 => Some(SenderType::NonCompliant),
            _ => None,
        }
    }

    pub fn set_sdp(&self, sdp: String) {
        *self.sdp.lock().unwrap_or_else(|p| p.into_inner()) = sdp;
    }

    pub fn sdp(&self) -> String {
        self.sdp.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Marks the bridge ended: `error` empty when it stopped as asked or its flow ended.
    pub fn set_ended(&self, error: String) {
        *self.ended.lock().unwrap_or_else(|p| p.into_inner()) = Some(error);
    }

    /// `None` while running; `Some("")` once ended cleanly, `Some(why)` once failed.
    pub fn ended(&self) -> Option<String> {
        self.ended.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts_and_sdp_read_back() {
        let c = LiveCounters::default();
        assert_eq!(c.timing(), None);
        for v in [
            SenderType::Narrow,
            SenderType::Wide,
            SenderType::NonCompliant,
        ] {
            c.set_timing(Some(v));
            assert_eq!(c.timing(), Some(v));
        }
        c.set_sdp("v=0\r\n".into());
        assert_eq!(c.sdp(), "v=0\r\n");
        LiveCounters::set(&c.packets, 7);
        assert_eq!(LiveCounters::get(&c.packets), 7);
    }
}
