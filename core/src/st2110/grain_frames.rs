//! The ST 2110-20 receive bridge's [`FrameStore`]: each frame in flight is a grain of the
//! flow, leased from the writer when its first packet arrives and written in place.
//!
//! UYVY and UYVP grains are the wire pgroups: packet data goes straight into the grain.
//! v210 grains are converted packet by packet (whole 6-pixel groups; a group split between
//! two packets is gathered and converted when the frame completes). Other formats gather
//! the wire frame and convert it at the end. A complete frame is committed; an incomplete
//! one is never published: its lease is dropped, which marks its index invalid (no media),
//! so readers skip it rather than take a frame with holes.

use std::sync::atomic::{AtomicBool, Ordering};

use super::convert::{uyvp_group_to_v210, uyvp_groups_to_v210, v210_stride};
use super::rfc4175::{FrameInfo, FrameStore};
use super::video_bridge::{wire_to_grain, BridgeError};
use crate::flow::{FlowError, GrainLease, GrainWriter};
use crate::format::VideoFormat;
use crate::time::Rational;

/// Bytes of a v210 group (6 pixels) on the wire (three 10-bit 4:2:2 pgroups) and in v210.
const PG_GROUP: usize = 15;
const V210_GROUP: usize = 16;

/// How packet data reaches a grain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Placement {
    /// The grain is the wire pgroups (UYVY, UYVP).
    Copy,
    /// v210: whole groups converted as they arrive.
    V210,
    /// Gathered into a wire frame, converted when the frame completes.
    Gather,
}

/// A frame in flight: its grain, and for v210 the groups split between packets.
struct InFlight {
    lease: GrainLease,
    index: u64,
    /// (line, group) of v210 groups whose bytes came in two packets: converted from the
    /// gathered wire bytes at the end.
    split: Vec<(usize, usize)>,
}

/// What the receive bridge's grains look like, and how indices are chosen.
pub(super) struct FrameLayout {
    pub format: VideoFormat,
    pub width: usize,
    /// Lines per grain (a frame, or one field).
    pub lines: usize,
    /// Bytes of a wire pgroup row.
    pub line_bytes: usize,
    /// Bytes of a wire frame (or field).
    pub frame_bytes: usize,
    pub interlaced: bool,
    /// Indices follow one another (file pipelines), not the clock.
    pub reliable: bool,
    pub rate: Rational,
    /// Commit at most this many grains (0: no limit).
    pub budget: u64,
}

/// See the module documentation.
pub(super) struct GrainFrames<'a> {
    writer: &'a mut GrainWriter,
    layout: FrameLayout,
    placement: Placement,
    stop: &'a AtomicBool,
    frames: [Option<InFlight>; 2],
    /// Per frame slot: wire bytes gathered (Gather), or v210's split groups (V210); sized
    /// on first use.
    wire: [Vec<u8>; 2],
    /// Index of the newest grain leased.
    newest: Option<u64>,
    pub committed: u64,
    pub failure: Option<BridgeError>,
}

impl<'a> GrainFrames<'a> {
    pub fn new(writer: &'a mut GrainWriter, layout: FrameLayout, stop: &'a AtomicBool) -> Self {
        let placement = match layout.format {
            VideoFormat::Uyvy | VideoFormat::Uyvp => Placement::Copy,
            VideoFormat::V210 => Placement::V210,
            _ => Placement::Gather,
        };
        Self {
            writer,
            layout,
            placement,
            stop,
            frames: [None, None],
            wire: [Vec::new(), Vec::new()],
            newest: None,
            committed: 0,
            failure: None,
        }
    }

    /// The index a frame starting now gets: the next after the newest, and in live mode
    /// no earlier than the next grain period (the frame is committed once its packets are
    /// in, within about a period); a field goes to an index of its parity.
    fn next_index(&self, second_field: bool) -> u64 {
        let mut index = match self.newest {
            Some(n) if self.layout.reliable => n + 1,
            n => n
                .map_or(0, |n| n + 1)
                .max(crate::time::current_index(self.layout.rate) + 1),
        };
        if self.layout.interlaced && (index % 2 == 1) != second_field {
            index += 1;
        }
        index
    }

    fn lease(&mut self, index: u64) -> Result<GrainLease, FlowError> {
        loop {
            match self.writer.lease_grain(index) {
                Err(FlowError::BackPressureTimeout { .. })
                    if !self.stop.load(Ordering::Acquire) =>
                {
                    continue
                }
                other => return other,
            }
        }
    }

    /// Converts a frame's split v210 groups and zeroes each line's padding.
    fn finish_v210(&self, slot: usize, f: &mut InFlight) {
        let l = &self.layout;
        let stride = v210_stride(l.width);
        let wire = &self.wire[slot];
        let grain = f.lease.payload_mut();
        for &(line, group) in &f.split {
            let start = line * l.line_bytes + group * PG_GROUP;
            let end = (start + PG_GROUP).min((line + 1) * l.line_bytes);
            let at = line * stride + group * V210_GROUP;
            uyvp_group_to_v210(&wire[start..end], &mut grain[at..at + V210_GROUP]);
        }
        let used = l.width.div_ceil(6) * V210_GROUP;
        if used < stride {
            for line in 0..l.lines {
                grain[line * stride + used..(line + 1) * stride].fill(0);
            }
        }
    }
}

impl FrameStore for GrainFrames<'_> {
    fn open(&mut self, slot: usize, _timestamp: u32, second_field: bool) {
        // A frame still held in this slot was given up by the assembler first (finish).
        self.frames[slot] = None;
        let l = &self.layout;
        if self.failure.is_some() || (l.budget != 0 && self.committed >= l.budget) {
            return;
        }
        let index = self.next_index(second_field);
        // A frame left open across a long gap (a stream that stopped mid-frame) would hold
        // the ring slot this one needs: it can no longer complete, so it is given up.
        let ring = self.writer.grain_count().max(1);
        if self.frames[1 - slot]
            .as_ref()
            .is_some_and(|other| other.index % ring == index % ring)
        {
            self.frames[1 - slot] = None;
        }
        let lease = match self.lease(index) {
            Ok(lease) => lease,
            Err(e) => {
                self.failure = Some(e.into());
                return;
            }
        };
        let needed = match self.placement {
            Placement::V210 => self.layout.lines * v210_stride(self.layout.width),
            _ => self.layout.frame_bytes,
        };
        if lease.payload().len() < needed {
            self.failure = Some(BridgeError::Unsupported(format!(
                "grains of {} bytes cannot hold a {needed}-byte picture",
                lease.payload().len()
            )));
            return;
        }
        if self.placement != Placement::Copy {
            self.wire[slot].resize(self.layout.frame_bytes, 0);
        }
        self.newest = Some(index);
        self.frames[slot] = Some(InFlight {
            lease,
            index,
            split: Vec::new(),
        });
    }

    fn write(&mut self, slot: usize, row: usize, offset: usize, data: &[u8]) {
        let Some(f) = self.frames[slot].as_mut() else {
            return;
        };
        let line_bytes = self.layout.line_bytes;
        let at = row * line_bytes + offset;
        match self.placement {
            Placement::Copy => f.lease.payload_mut()[at..at + data.len()].copy_from_slice(data),
            Placement::Gather => self.wire[slot][at..at + data.len()].copy_from_slice(data),
            Placement::V210 => {
                let end = offset + data.len();
                // Groups wholly inside this packet's stretch go straight into the grain.
                let (first, last) = (offset.div_ceil(PG_GROUP), end / PG_GROUP);
                if first < last {
                    let stride = v210_stride(self.layout.width);
                    let src = &data[first * PG_GROUP - offset..last * PG_GROUP - offset];
                    let dst = row * stride + first * V210_GROUP;
                    let grain = f.lease.payload_mut();
                    uyvp_groups_to_v210(src, &mut grain[dst..dst + (last - first) * V210_GROUP]);
                }
                // A group cut by the packet's start or end (or by the end of a line whose
                // width is not a multiple of 6) is gathered and converted at the end.
                let wire = &mut self.wire[slot];
                // (The packet that brings the first part of a group lists it; a group with
                // a part missing belongs to an incomplete frame, which is never converted.)
                if !offset.is_multiple_of(PG_GROUP) {
                    let upto = end.min((offset / PG_GROUP + 1) * PG_GROUP);
                    wire[at..at + upto - offset].copy_from_slice(&data[..upto - offset]);
                }
                if !end.is_multiple_of(PG_GROUP) && end / PG_GROUP >= first {
                    let from = end / PG_GROUP * PG_GROUP;
                    let w = row * line_bytes + from;
                    wire[w..w + end - from].copy_from_slice(&data[from - offset..]);
                    f.split.push((row, end / PG_GROUP));
                    // Packets repeating a stretch (a broken or hostile sender) add the same
                    // groups again: kept to distinct groups, the list stays within a frame's.
                    if f.split.len() > 2 * self.layout.frame_bytes / PG_GROUP + 64 {
                        f.split.sort_unstable();
                        f.split.dedup();
                    }
                }
            }
        }
    }

    fn finish(&mut self, slot: usize, info: &FrameInfo) {
        let Some(mut f) = self.frames[slot].take() else {
            return;
        };
        let l = &self.layout;
        if !info.complete || self.failure.is_some() || (l.budget != 0 && self.committed >= l.budget)
        {
            return; // the lease goes, its index marked invalid
        }
        match self.placement {
            Placement::Copy => {}
            Placement::V210 => self.finish_v210(slot, &mut f),
            Placement::Gather => wire_to_grain(
                l.format,
                l.width,
                l.lines,
                &self.wire[slot],
                f.lease.payload_mut(),
            ),
        }
        let len = f.lease.payload().len();
        match self.writer.commit_lease(f.index, len, &[]) {
            Ok(()) => self.committed += 1,
            Err(e) => self.failure = Some(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::{Domain, ReaderOptions, WriterOptions};
    use crate::format::{FlowDef, InterlaceMode};
    use crate::st2110::rfc4175::{Assembler, AssemblerConfig, Packetizer, PackingMode, Sampling};
    use crate::st2110::video_bridge::wire_of;
    use std::time::Duration;

    /// Frames of every placement, packed so that packets cut lines and v210 groups anywhere
    /// (GPM, small packets; widths not a multiple of 6), arrive in grains exactly as a
    /// whole-frame conversion makes them; a frame with a packet lost is never published.
    #[test]
    fn grains_written_in_place_match_whole_frame_conversion() {
        for (format, width, packet_size) in [
            (VideoFormat::V210, 1280usize, 1200),
            (VideoFormat::V210, 52, 107),
            (VideoFormat::V210, 48, 100),
            (VideoFormat::Uyvp, 52, 107),
            (VideoFormat::Uyvy, 64, 300),
            (VideoFormat::I420, 64, 200),
        ] {
            let dir = tempfile::tempdir().unwrap();
            let domain = Domain::open(dir.path()).unwrap();
            let height = 8u32;
            let rate = Rational::new(25, 1);
            let def = FlowDef::video(
                uuid::Uuid::new_v4(),
                "in place",
                format,
                width as u32,
                height,
                rate,
                InterlaceMode::Progressive,
            )
            .unwrap();
            let mut writer = domain
                .create_grain_writer(&def, &WriterOptions::default())
                .unwrap();
            // Every ring slot holds an older grain of noise first: nothing of it may show.
            let now = crate::time::current_index(rate);
            for index in now + 1 - writer.grain_count()..=now {
                let mut grain = writer.open_grain(index).unwrap();
                grain.payload().fill(0xA5);
                grain.commit().unwrap();
            }
            let (sampling, depth) = wire_of(format).unwrap();
            let g = crate::st2110::rfc4175::VideoGeometry::new(
                width as u32,
                height,
                sampling,
                depth,
                false,
            )
            .unwrap();
            let mut packetizer =
                Packetizer::new(g, PackingMode::General, 96, 7, packet_size).unwrap();
            let mut assembler = Assembler::new(AssemblerConfig {
                geometry: g,
                payload_type: Some(96),
                ssrc: None,
            });
            let stop = AtomicBool::new(false);
            let layout = FrameLayout {
                format,
                width,
                lines: height as usize,
                line_bytes: g.line_bytes(),
                frame_bytes: g.frame_bytes(),
                interlaced: false,
                reliable: true,
                rate,
                budget: 0,
            };
            let frames_in: Vec<Vec<u8>> = (0..3u8)
                .map(|n| {
                    (0..g.frame_bytes())
                        .map(|i| (i * 31 + usize::from(n) * 7) as u8)
                        .collect()
                })
                .collect();
            let mut frames = GrainFrames::new(&mut writer, layout, &stop);
            for (n, frame) in frames_in.iter().enumerate() {
                let mut packets = Vec::new();
                packetizer
                    .packetize(frame, n as u32 * 3600, false, &mut |p| {
                        packets.push(p.to_vec())
                    })
                    .unwrap();
                assert!(packets.len() > 2, "{format:?}: {} packets", packets.len());
                if n == 1 {
                    packets.remove(packets.len() / 2); // lost
                }
                for p in &packets {
                    assembler.push_into(p, &mut frames);
                }
            }
            assembler.flush_into(&mut frames);
            assert!(frames.failure.is_none(), "{format:?}");
            assert_eq!(frames.committed, 2, "{format:?}");
            drop(frames);
            let reader = domain
                .open_grain_reader(def.id, &ReaderOptions::default())
                .unwrap();
            let size = def.grain_geometry().unwrap().grain_size as usize;
            // Live or not, the first frame goes to the grain period after now.
            let last = reader.head_index();
            for (index, n) in [(last - 2, 0usize), (last, 2)] {
                let grain = reader.get_grain(index, Duration::ZERO).unwrap();
                let mut want = vec![0u8; size];
                wire_to_grain(format, width, height as usize, &frames_in[n], &mut want);
                let used = match format {
                    VideoFormat::V210 => height as usize * v210_stride(width),
                    _ => g.frame_bytes().min(size),
                };
                assert!(
                    grain.payload()[..used] == want[..used],
                    "{format:?} width {width}: frame {n} differs"
                );
            }
            // The frame that lost a packet holds the index between, marked as no media.
            let lost = reader.get_grain(last - 1, Duration::ZERO).unwrap();
            assert!(lost.is_invalid(), "{format:?}");
        }
    }

    /// A live stream that stops mid-frame and resumes a ring's length of grain periods
    /// later: the frame left open would hold the ring slot the next one needs. It is given
    /// up and the stream goes on.
    #[test]
    fn a_frame_left_open_across_a_gap_does_not_block_the_ring() {
        let dir = tempfile::tempdir().unwrap();
        let domain = Domain::open(dir.path()).unwrap();
        let (w, h) = (48u32, 4u32);
        let rate = Rational::new(20, 1);
        let def = FlowDef::video(
            uuid::Uuid::new_v4(),
            "gap",
            VideoFormat::Uyvp,
            w,
            h,
            rate,
            InterlaceMode::Progressive,
        )
        .unwrap();
        let ring = 3u64;
        let mut writer = domain
            .create_grain_writer(
                &def,
                &WriterOptions {
                    grain_count: Some(ring as u32),
                    ..Default::default()
                },
            )
            .unwrap();
        let g = crate::st2110::rfc4175::VideoGeometry::new(w, h, Sampling::YCbCr422, 10, false)
            .unwrap();
        let mut p = Packetizer::new(g, PackingMode::General, 96, 7, 200).unwrap();
        let mut a = Assembler::new(AssemblerConfig {
            geometry: g,
            payload_type: Some(96),
            ssrc: None,
        });
        let stop = AtomicBool::new(false);
        let layout = FrameLayout {
            format: VideoFormat::Uyvp,
            width: w as usize,
            lines: h as usize,
            line_bytes: g.line_bytes(),
            frame_bytes: g.frame_bytes(),
            interlaced: false,
            reliable: false,
            rate,
            budget: 0,
        };
        let mut frames = GrainFrames::new(&mut writer, layout, &stop);
        let frame = vec![0x5Au8; g.frame_bytes()];
        let mut packets = Vec::new();
        p.packetize(&frame, 0, false, &mut |b| packets.push(b.to_vec()))
            .unwrap();
        for b in &packets[..packets.len() / 2] {
            a.push_into(b, &mut frames);
        }
        let open = frames
            .frames
            .iter()
            .flatten()
            .map(|f| f.index)
            .next()
            .unwrap();
        // Wait (on the clock; bounded) for a grain period whose successor shares the open
        // frame's ring slot, with 10 ms of it left for the next frame's packets.
        let period_ns = 50_000_000;
        for _ in 0..2_000_000 {
            let now = crate::time::current_index(rate);
            let left = crate::time::ns_until_index(rate, now + 1);
            if now + 1 > open + ring && (now + 1) % ring == open % ring && left > period_ns / 5 {
                break;
            }
            std::hint::spin_loop();
        }
        packets.clear();
        p.packetize(&frame, 90_000, false, &mut |b| packets.push(b.to_vec()))
            .unwrap();
        for b in &packets {
            a.push_into(b, &mut frames);
        }
        assert!(frames.failure.is_none(), "{:?}", frames.failure);
        assert_eq!(frames.committed, 1);
    }
}
