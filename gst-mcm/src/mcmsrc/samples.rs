// SPDX-License-Identifier: Apache-2.0

//! Following a continuous (audio) flow: MXL's float32/float64 sample rings, read in
//! windows of whatever arrived and handed out interleaved.

use std::time::{Duration, Instant};

use mcm_core::flow::{Domain, FlowError, FollowError, SamplesReader};
use mcm_core::format::{FlowDef, MediaFormat};
use uuid::Uuid;

/// Poll period while the flow does not exist yet (there is no notification for that).
const APPEAR_POLL: Duration = Duration::from_millis(5);

/// One window of samples, interleaved (native-endian words).
pub struct Chunk {
    /// Index of the first sample.
    pub index: u64,
    pub count: u64,
    pub data: Vec<u8>,
}

pub struct SamplesInput {
    domain: Domain,
    flow_id: Uuid,
    reader: Option<SamplesReader>,
    next: Option<u64>,
    /// Samples the writer overwrote before they were read.
    pub drops: u64,
}

impl SamplesInput {
    pub fn new(domain: Domain, flow_id: Uuid) -> Self {
        Self {
            domain,
            flow_id,
            reader: None,
            next: None,
            drops: 0,
        }
    }

    pub fn flow_def(&self) -> Option<&FlowDef> {
        self.reader.as_ref().and_then(|r| r.flow_def())
    }

    pub fn sample_rate(&self) -> Option<u32> {
        let r = self.reader.as_ref()?.sample_rate();
        u32::try_from(r.numerator / r.denominator.max(1)).ok()
    }

    /// Every sample that arrived since the last call (at most half the ring), waiting up
    /// to `timeout` for the first. Starts at the newest sample (live join).
    pub fn next_chunk(&mut self, timeout: Duration) -> Result<Chunk, FollowError> {
        let deadline = Instant::now() + timeout;
        loop {
            let reader = match &self.reader {
                Some(r) => r,
                None => match self.domain.open_samples_reader(self.flow_id) {
                    Ok(r) => {
                        if !matches!(
                            r.flow_def().map(|d| &d.media),
                            Some(MediaFormat::Audio { .. })
                        ) {
                            return Err(FollowError::Failed(FlowError::InvalidArgument(
                                "continuous flow without a float audio description".into(),
                            )));
                        }
                        self.reader.insert(r)
                    }
                    Err(FlowError::NotFound { .. } | FlowError::Io { .. }) => {
                        let now = Instant::now();
                        if now >= deadline {
                            return Err(FollowError::Timeout("no writer on this flow yet".into()));
                        }
                        std::thread::sleep(APPEAR_POLL.min(deadline - now));
                        continue;
                    }
                    Err(e) => return Err(FollowError::Failed(e)),
                },
            };
            let next = *self.next.get_or_insert_with(|| reader.head_index());
            let remaining = deadline.saturating_duration_since(Instant::now());
            match reader.get_samples(next + 1, 1, remaining) {
                Ok(_) => {}
                Err(FlowError::TooEarly { .. }) => {
                    return Err(FollowError::Timeout(format!(
                        "no samples within {timeout:?}"
                    )))
                }
                Err(FlowError::EndOfStream { .. }) => return Err(FollowError::Closed),
                Err(FlowError::TooLate { .. }) => {
                    let head = reader.head_index();
                    self.drops += head.saturating_sub(next);
                    self.next = Some(head);
                    continue;
                }
                Err(FlowError::FlowInvalid { .. }) => {
                    // The writer restarted: follow the new flow from its head.
                    self.reader = None;
                    self.next = None;
                    continue;
                }
                Err(e) => return Err(FollowError::Failed(e)),
            }
            let head = reader.head_index();
            let count = head.saturating_sub(next).min(reader.max_read_length());
            let (channels, width) = (reader.channels() as usize, reader.word_size());
            let frame = channels * width;
            let mut data = vec![0u8; count as usize * frame];
            let window = match reader.try_get_samples(next + count, count) {
                Ok(w) => w,
                Err(FlowError::TooLate { .. }) => continue,
                Err(e) => return Err(FollowError::Failed(e)),
            };
            for c in 0..channels {
                crate::common::interleave(window.channel(c as u32), frame, c, width, &mut data);
            }
            // Lapped while copying (the writer is more than half a ring ahead): drop it.
            if reader.head_index().saturating_sub(next) > reader.buffer_length() / 2 {
                self.drops += count;
                self.next = Some(reader.head_index());
                continue;
            }
            self.next = Some(next + count);
            return Ok(Chunk {
                index: next,
                count,
                data,
            });
        }
    }
}
