//! Reliable-reader cursors (mcm extension to MXL): the back-pressure handshake.
//!
//! A reliable reader publishes, in its own file `${domain}/.mcm-cursors/<flow id>/<uuid>.cursor`,
//! the next grain index it needs. The flow itself stays read-only for the reader, and a
//! reader can register before its writer has created the flow (start order does not matter). A writer created with
//! back-pressure refuses to overwrite a grain a live cursor still needs, waiting on the
//! cursor's futex word. Readers hold a shared `flock` on their cursor file; a writer that can
//! lock it exclusively knows the reader died and removes the file.

use std::fs::{self, File, OpenOptions};
use std::mem::{offset_of, size_of};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rustix::fs::FlockOperation;

use super::dirwatch::{DirWatch, Drained};
use super::error::FlowError;
use super::files::FLOW_DIR_SUFFIX;
use super::shm::{futex_wait, futex_wake_all, Mapping};
use super::Result;

const CURSOR_MAGIC: u32 = 0x4d43_4d43; // "MCMC"
const CURSOR_VERSION: u32 = 1;
const CURSOR_SUFFIX: &str = ".cursor";
/// How often a writer re-reads its flow's cursor directory even when inotify reports
/// nothing, and tries again for a watch it could not have.
const RESCAN_PERIOD: Duration = Duration::from_secs(1);
/// How often a blocked writer re-checks that the readers it waits for are alive.
const LIVENESS_PERIOD: Duration = Duration::from_millis(50);

/// The 64-byte cursor file.
#[repr(C)]
pub struct CursorData {
    pub magic: u32,
    pub version: u32,
    /// Reader's process id, for display.
    pub pid: AtomicU32,
    pub padding: u32,
    /// First index the reader has not consumed yet.
    pub next_index: AtomicU64,
    /// Futex word bumped whenever `next_index` or `consumed_next` moves.
    pub counter: AtomicU32,
    pub padding2: u32,
    /// First index the reader has not read, whether or not it still holds grains before it
    /// (`next_index` stays at the oldest held one). Valid with [`CURSOR_FEATURE_CONSUMED`]:
    /// a writer's end-of-stream drain waits for this, so a grain a reader holds at the end
    /// (a sink's last sample) does not keep the writer from finishing.
    pub consumed_next: AtomicU64,
    /// `CURSOR_FEATURE_*` bits, set at registration (zero in cursors of older readers).
    pub features: AtomicU32,
    pub padding3: u32,
    pub reserved: [u8; 16],
}

/// [`CursorData::consumed_next`] is kept.
pub const CURSOR_FEATURE_CONSUMED: u32 = 1;

const _: () = {
    assert!(size_of::<CursorData>() == 64);
    assert!(offset_of!(CursorData, next_index) == 16);
    assert!(offset_of!(CursorData, counter) == 24);
    assert!(offset_of!(CursorData, consumed_next) == 32);
    assert!(offset_of!(CursorData, features) == 40);
};

/// Directory of all cursors of a domain; sticky and world-writable like /tmp.
pub(crate) const CURSOR_ROOT: &str = ".mcm-cursors";

/// `${domain}/.mcm-cursors/<flow id>` for the flow directory `${domain}/<flow id>.mxl-flow`.
pub(crate) fn cursor_dir(flow_dir: &Path) -> PathBuf {
    let name = flow_dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let id = name
        .strip_suffix(FLOW_DIR_SUFFIX)
        .unwrap_or(&name)
        .to_owned();
    flow_dir
        .parent()
        .unwrap_or(Path::new("."))
        .join(CURSOR_ROOT)
        .join(id)
}

/// Creates a directory (and parents) readable and writable by every reader uid, sticky.
pub(crate) fn ensure_shared_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    for d in [dir.parent(), Some(dir)].into_iter().flatten() {
        match fs::create_dir(d) {
            Ok(()) => {
                // Only the creator may chmod; later readers find it ready.
                fs::set_permissions(d, fs::Permissions::from_mode(0o1777))?;
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// A reliable reader's own cursor: dropping it unregisters the reader.
pub struct ReaderCursor {
    path: PathBuf,
    _file: File,
    map: Mapping,
}

impl ReaderCursor {
    /// Registers a cursor at `next_index` for the flow at `flow_dir` (which need not exist).
    pub(crate) fn register(flow_dir: &Path, next_index: u64) -> Result<Self> {
        let dir = cursor_dir(flow_dir);
        ensure_shared_dir(&dir).map_err(|e| FlowError::io(&dir, e))?;
        let name = uuid::Uuid::new_v4().simple().to_string();
        let tmp = dir.join(format!(".tmp-{name}"));
        let path = dir.join(format!("{name}{CURSOR_SUFFIX}"));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(&tmp)
            .map_err(|e| FlowError::io(&tmp, e))?;
        file.set_len(64).map_err(|e| FlowError::io(&tmp, e))?;
        rustix::fs::flock(&file, FlockOperation::NonBlockingLockShared)
            .map_err(|e| FlowError::io(&tmp, e))?;
        let mut map = Mapping::map(&file, true).map_err(|e| FlowError::io(&tmp, e))?;
        let mut image = [0u8; 64];
        image[0..4].copy_from_slice(&CURSOR_MAGIC.to_ne_bytes());
        image[4..8].copy_from_slice(&CURSOR_VERSION.to_ne_bytes());
        image[8..12].copy_from_slice(&std::process::id().to_ne_bytes());
        image[16..24].copy_from_slice(&next_index.to_ne_bytes());
        image[32..40].copy_from_slice(&next_index.to_ne_bytes());
        image[40..44].copy_from_slice(&CURSOR_FEATURE_CONSUMED.to_ne_bytes());
        map.bytes_mut(0, 64).copy_from_slice(&image);
        // Publish complete: writers only look at `*.cursor` names.
        fs::rename(&tmp, &path).map_err(|e| FlowError::io(&path, e))?;
        Ok(Self {
            path,
            _file: file,
            map,
        })
    }

    fn data(&self) -> &CursorData {
        self.map
            .header::<CursorData>(0)
            .expect("cursor file is 64 bytes, page-aligned")
    }

    /// First index this reader has not consumed.
    pub fn next_index(&self) -> u64 {
        self.data().next_index.load(Ordering::Acquire)
    }

    /// Lets the writer reuse every grain before `next` and says every index before
    /// `consumed` was read (`consumed >= next`; the grains between are held), and wakes a
    /// waiting writer: always, or, given the flow's count of `waiters` (writers that keep
    /// it), only while one waits, which saves the reader a system call on every move.
    pub fn advance(&self, next: u64, consumed: u64, waiters: Option<&AtomicU32>) {
        let d = self.data();
        let moved = d.next_index.fetch_max(next, Ordering::AcqRel) < next;
        let read = d.consumed_next.fetch_max(consumed, Ordering::AcqRel) < consumed;
        if moved || read {
            // SeqCst with the writer's count-then-read in `wait_for_room`: either it sees
            // this move or this sees it counted, so no wake-up is lost.
            d.counter.fetch_add(1, Ordering::SeqCst);
            if waiters.is_none_or(|w| w.load(Ordering::SeqCst) > 0) {
                futex_wake_all(&d.counter);
            }
        }
    }
}

impl Drop for ReaderCursor {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
        // A writer waiting on this cursor stops waiting for it now, whatever it counted.
        let d = self.data();
        d.counter.fetch_add(1, Ordering::SeqCst);
        futex_wake_all(&d.counter);
    }
}

/// A cursor as a writer sees it.
///
/// The file belongs to the reader, which may shrink it: a load from a mapping of it could
/// then raise SIGBUS in the writer. So the writer never loads from its mapping; it reads the
/// cursor with `pread` and hands the mapping's futex word only to the kernel, which answers a
/// vanished page with `EFAULT`. `known`, the last image read, spares the `pread` while it
/// already lets the writer on (the positions in it only grow).
struct PeerCursor {
    path: PathBuf,
    file: File,
    map: Mapping,
    known: CursorImage,
}

/// One `pread` of a cursor file's 64 bytes.
#[derive(Debug, Clone, Copy)]
struct CursorImage {
    pid: u32,
    next_index: u64,
    /// First index not read: `consumed_next`, or `next_index` for a reader that does not
    /// keep it.
    consumed: u64,
    counter: u32,
}

impl CursorImage {
    /// `None` if the file is shorter than a cursor or is not one.
    fn read(file: &File) -> Option<Self> {
        let mut b = [0u8; size_of::<CursorData>()];
        if rustix::io::pread(file, &mut b, 0).ok()? != b.len() {
            return None;
        }
        let word = |o: usize| u32::from_ne_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
        let long = |o: usize| {
            let mut v = [0u8; 8];
            v.copy_from_slice(&b[o..o + 8]);
            u64::from_ne_bytes(v)
        };
        let next_index = long(offset_of!(CursorData, next_index));
        let consumed = match word(offset_of!(CursorData, features)) & CURSOR_FEATURE_CONSUMED {
            0 => next_index,
            _ => long(offset_of!(CursorData, consumed_next)).max(next_index),
        };
        (word(0) == CURSOR_MAGIC && word(4) == CURSOR_VERSION).then(|| Self {
            pid: word(offset_of!(CursorData, pid)),
            next_index,
            consumed,
            counter: word(offset_of!(CursorData, counter)),
        })
    }

    /// The cursor as it is now: two reads whose positions agree, the futex word from the
    /// first. `pread` copies the file in no particular order and not atomically: the word
    /// taken before the positions it goes with is what a writer must sleep on (a move
    /// after it changes it, so no wake-up is lost), and two reads that agree rule out a
    /// position torn by a concurrent move (which could overstate it).
    fn read_stable(file: &File) -> Option<Self> {
        let first = Self::read(file)?;
        let mut earlier = first;
        // A reader that moves between every read is moving on: a few tries suffice.
        for _ in 0..4 {
            // The word of the earlier read before the positions of the later one, on any CPU.
            std::sync::atomic::fence(Ordering::SeqCst);
            let later = Self::read(file)?;
            if (later.next_index, later.consumed) == (earlier.next_index, earlier.consumed) {
                return Some(Self {
                    counter: earlier.counter,
                    ..later
                });
            }
            earlier = later;
        }
        // Still moving: the first read's word and the lowest positions seen (a torn read may
        // overstate one, and an overstated position would be cached as room that is not
        // there; understating costs a re-read). The word may then be a move late: the wait
        // lasts one liveness slice at most.
        Some(Self {
            next_index: first.next_index.min(earlier.next_index),
            consumed: first.consumed.min(earlier.consumed),
            ..first
        })
    }
}

impl PeerCursor {
    /// The cursor as it is now (see [`CursorImage::read_stable`]), remembering it; `None`
    /// if the reader broke it.
    fn read(&mut self) -> Option<CursorImage> {
        let image = CursorImage::read_stable(&self.file)?;
        self.known = image;
        Some(image)
    }

    /// The futex word, for the kernel only (see the type's comment).
    fn counter_word(&self) -> &AtomicU32 {
        &self
            .map
            .header::<CursorData>(0)
            .expect("a cursor mapping is a page")
            .counter
    }

    fn is_alive(&self) -> bool {
        // The reader holds LOCK_SH for its lifetime: an exclusive lock means it is gone.
        match rustix::fs::flock(&self.file, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {
                let _ = rustix::fs::flock(&self.file, FlockOperation::Unlock);
                false
            }
            Err(_) => true,
        }
    }
}

/// Summary of one registered reader, for `mcm info`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReaderStatus {
    pub pid: u32,
    pub next_index: u64,
    pub alive: bool,
}

/// The cursors of a flow, as tracked by a back-pressure writer.
pub(crate) struct CursorSet {
    dir: PathBuf,
    cursors: Vec<PeerCursor>,
    /// inotify on the cursor directory: the set is re-read only after readers come or go
    /// (re-reading it for every grain cost the writer five system calls a grain). `None`
    /// when it cannot be had (no directory, the user's inotify limits): re-read every time.
    watch: Option<DirWatch>,
    /// Last attempt at a watch, and last re-read: a watch is tried again, and the set
    /// re-read anyway (a domain on a file system whose inotify misses other clients), at
    /// most every [`RESCAN_PERIOD`].
    watch_tried: Option<Instant>,
    rescanned: Option<Instant>,
    /// [`LIVENESS_PERIOD`]; longer in tests, so that only a wake-up ends a wait.
    liveness: Duration,
}

impl CursorSet {
    pub fn new(flow_dir: &Path) -> Self {
        Self {
            dir: cursor_dir(flow_dir),
            cursors: Vec::new(),
            watch: None,
            watch_tried: None,
            rescanned: None,
            liveness: LIVENESS_PERIOD,
        }
    }

    /// A writer's set: the directory is made now (a reader makes it otherwise), so it can
    /// be watched before the first reader comes.
    pub fn for_writer(flow_dir: &Path) -> Self {
        let set = Self::new(flow_dir);
        if let Err(e) = ensure_shared_dir(&set.dir) {
            tracing::debug!(dir = %set.dir.display(), "cursor directory not made yet: {e}");
        }
        set
    }

    /// Whether readers may have come or gone since the last look. Directory timestamps on
    /// tmpfs are too coarse to tell (a tick), so inotify says, or, without it, always yes.
    fn changed(&mut self) -> bool {
        let now = Instant::now();
        let due = |at: Option<Instant>| at.is_none_or(|t| now.duration_since(t) >= RESCAN_PERIOD);
        if due(self.rescanned) {
            self.rescanned = Some(now);
            if self.watch.is_none() && due(self.watch_tried) {
                // Watching from before the re-read that follows: nothing falls between.
                self.watch_tried = Some(now);
                self.watch = DirWatch::new(&self.dir);
            }
            return true;
        }
        let Some(watch) = &self.watch else {
            return true;
        };
        let Drained { changed, lost } = watch.drain();
        if lost {
            self.watch = None;
        }
        changed
    }

    /// Re-reads the directory.
    fn refresh(&mut self) {
        let mut found = Vec::new();
        if let Ok(entries) = fs::read_dir(&self.dir) {
            for e in entries.flatten() {
                let path = e.path();
                if !path.to_string_lossy().ends_with(CURSOR_SUFFIX) {
                    continue;
                }
                if let Some(pos) = self.cursors.iter().position(|c| c.path == path) {
                    found.push(self.cursors.swap_remove(pos));
                } else if let Some(c) = open_peer(&path) {
                    found.push(c);
                }
            }
        }
        self.cursors = found;
    }

    /// Blocks until no live cursor needs the grain that writing `index` overwrites.
    ///
    /// A reader at `next` can still read `next` after the writer commits `index` when
    /// `index <= next + grain_count - 2` (the oldest readable grain is `head - grainCount + 2`).
    /// `floor` is the oldest grain that exists: a cursor below it waits for nothing older
    /// (indices are TAI times, so a stream does not start at 0). A cursor past the flow's
    /// `head` (read as it goes: another writer may move it) needs no grain that exists, so
    /// a writer jumping ahead does not wait for a reader that has read everything (it
    /// would wait for ever: that reader moves only when a grain comes).
    pub fn wait_for_room(
        &mut self,
        index: u64,
        grain_count: u64,
        floor: u64,
        head: &AtomicU64,
        timeout: Duration,
        waiters: &AtomicU32,
    ) -> Result<()> {
        // Cursor files are written by other users' processes: saturate, never overflow.
        let blocks = |c: &CursorImage| {
            c.next_index <= head.load(Ordering::Acquire)
                && index.saturating_add(2) > c.next_index.max(floor).saturating_add(grain_count)
        };
        self.wait_while(blocks, index, |c| c.next_index, timeout, waiters)
    }

    /// Blocks until every live cursor has read every grain before `end` (it may still hold
    /// some: they stay in their slots until the writer needs them again). `floor` as in
    /// [`Self::wait_for_room`].
    pub fn wait_for_consumed(
        &mut self,
        end: u64,
        floor: u64,
        timeout: Duration,
        waiters: &AtomicU32,
    ) -> Result<()> {
        let blocks = |c: &CursorImage| end > c.consumed.max(floor);
        self.wait_while(blocks, end, |c| c.consumed, timeout, waiters)
    }

    /// Blocks while a live cursor `blocks`; `index` and `position` say what in a timeout.
    fn wait_while(
        &mut self,
        blocks: impl Fn(&CursorImage) -> bool,
        index: u64,
        position: impl Fn(&CursorImage) -> u64,
        timeout: Duration,
        waiters: &AtomicU32,
    ) -> Result<()> {
        let start = Instant::now();
        let deadline = start
            .checked_add(timeout)
            .unwrap_or_else(|| start + Duration::from_secs(365 * 24 * 3600));
        let mut last_liveness = start;
        loop {
            if self.changed() {
                self.refresh();
            }
            // Only a cursor whose last known position holds the writer back is read again.
            let Some(i) = self.cursors.iter().position(|c| blocks(&c.known)) else {
                return Ok(());
            };
            // Counted before reading the cursor: a reader moving it from now on wakes us
            // (see `ReaderCursor::advance`). The fence orders the count before the kernel's
            // read of the file in `pread`.
            let _waiting = Waiting::count(waiters);
            std::sync::atomic::fence(Ordering::SeqCst);
            let c = &mut self.cursors[i];
            let Some(image) = c.read() else {
                tracing::warn!(cursor = %c.path.display(), "reliable reader's cursor file is broken (shrunk or overwritten); no longer waiting for it");
                self.cursors.swap_remove(i);
                continue;
            };
            if !blocks(&image) {
                continue;
            }
            let now = Instant::now();
            if now.duration_since(last_liveness) >= self.liveness || now >= deadline {
                last_liveness = now;
                if !c.is_alive() {
                    tracing::info!(cursor = %c.path.display(), "reliable reader died; no longer waiting for it");
                    let _ = fs::remove_file(&c.path);
                    self.cursors.swap_remove(i);
                    continue;
                }
            }
            if now >= deadline {
                return Err(FlowError::BackPressureTimeout {
                    index,
                    reader: format!("pid {}", image.pid),
                    reader_next: position(&image),
                });
            }
            // A shrunk file makes this return at once (EFAULT); the next `read` finds it.
            futex_wait(
                c.counter_word(),
                image.counter,
                (deadline - now).min(self.liveness),
            );
        }
    }
}

/// A writer counted in its flow's `mcm_cursor_waiters` while this lives.
struct Waiting<'a>(&'a AtomicU32);

impl<'a> Waiting<'a> {
    fn count(waiters: &'a AtomicU32) -> Self {
        waiters.fetch_add(1, Ordering::SeqCst);
        Self(waiters)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

fn open_peer(path: &Path) -> Option<PeerCursor> {
    let file = File::open(path).ok()?;
    let image = CursorImage::read_stable(&file)?;
    let map = Mapping::map(&file, false).ok()?;
    map.header::<CursorData>(0)?;
    Some(PeerCursor {
        path: path.to_owned(),
        file,
        map,
        known: image,
    })
}

/// Removes cursor files of dead readers, and cursor directories left empty of flows that no
/// longer exist. Returns how many files and directories went.
pub(crate) fn collect_garbage(domain: &Path) -> usize {
    let mut removed = 0;
    let Ok(dirs) = fs::read_dir(domain.join(CURSOR_ROOT)) else {
        return 0;
    };
    for d in dirs.flatten() {
        let dir = d.path();
        if let Ok(files) = fs::read_dir(&dir) {
            for f in files.flatten() {
                let path = f.path();
                let dead = match open_peer(&path) {
                    Some(c) => !c.is_alive(),
                    // A `.tmp-*` half-registered file of a reader that died while registering.
                    None => File::open(&path).is_ok_and(|f| {
                        rustix::fs::flock(&f, FlockOperation::NonBlockingLockExclusive).is_ok()
                    }),
                };
                if dead && fs::remove_file(&path).is_ok() {
                    removed += 1;
                }
            }
        }
        let flow = domain.join(format!(
            "{}{FLOW_DIR_SUFFIX}",
            d.file_name().to_string_lossy()
        ));
        if !flow.exists() && fs::remove_dir(&dir).is_ok() {
            removed += 1;
        }
    }
    removed
}

/// Lists the cursors of a flow (for `mcm info`).
pub(crate) fn list(flow_dir: &Path) -> Vec<ReaderStatus> {
    let mut set = CursorSet::new(flow_dir);
    set.refresh();
    set.cursors
        .iter_mut()
        .filter_map(|c| {
            // A retired cursor (its reader's flow was recreated) waits for nothing.
            let image = c.read().filter(|i| i.next_index != u64::MAX)?;
            Some(ReaderStatus {
                pid: image.pid,
                next_index: image.next_index,
                alive: c.is_alive(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The counted handshake of `wait_for_room` and `advance`: a writer counted while it
    /// sleeps on a cursor (liveness slices of 60 s, so nothing else ends the wait) is woken
    /// by the reader's move (the bound is generous so a loaded machine cannot make this
    /// flaky); a move while nobody is counted makes no wake-up, and nothing is lost by it.
    #[test]
    fn a_counted_writer_is_woken_by_the_cursor_moving() {
        let dir = tempfile::tempdir().unwrap();
        let flow_dir = dir
            .path()
            .join(format!("{}{FLOW_DIR_SUFFIX}", uuid::Uuid::new_v4()));
        let cursor = ReaderCursor::register(&flow_dir, 0).unwrap();
        let waiters = AtomicU32::new(0);
        // Nobody waits: the move is published, no wake-up is made.
        cursor.advance(1, 1, Some(&waiters));
        let mut peer = open_peer(&cursor.path).unwrap();
        assert_eq!(peer.read().unwrap().next_index, 1);
        let mut set = CursorSet::new(&flow_dir);
        set.liveness = Duration::from_secs(60);
        let tid = AtomicU32::new(0);
        // A ring of 5 with grains up to 4: writing 5 needs the reader at 2 (it is at 1).
        let head = AtomicU64::new(4);
        std::thread::scope(|s| {
            let writer = s.spawn(|| {
                tid.store(
                    rustix::thread::gettid().as_raw_nonzero().get() as u32,
                    Ordering::SeqCst,
                );
                let started = Instant::now();
                set.wait_for_room(5, 5, 0, &head, Duration::from_secs(120), &waiters)
                    .unwrap();
                started.elapsed()
            });
            // Until the writer is counted and asleep (in its futex wait: it blocks nowhere
            // else), so the move below must wake it.
            let deadline = Instant::now() + Duration::from_secs(10);
            let asleep = || {
                let stat = format!("/proc/self/task/{}/stat", tid.load(Ordering::SeqCst));
                fs::read_to_string(stat)
                    .ok()
                    .and_then(|t| {
                        t.rsplit(')')
                            .next()
                            .map(|r| r.trim_start().starts_with('S'))
                    })
                    .unwrap_or(false)
            };
            while waiters.load(Ordering::SeqCst) == 0 || !asleep() {
                assert!(Instant::now() < deadline, "the writer never waited");
                std::thread::yield_now();
            }
            cursor.advance(2, 2, Some(&waiters));
            assert!(writer.join().unwrap() < Duration::from_secs(20));
        });
        assert_eq!(waiters.load(Ordering::SeqCst), 0);
    }
}
