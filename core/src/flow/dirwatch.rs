//! inotify on a directory of the domain: what a writer watches for readers' cursors coming
//! and going, and what a receiver waits on for its flow to be published (a rename into the
//! domain), so that neither re-reads a directory on a timer.

use std::os::fd::OwnedFd;
use std::path::Path;
use std::time::Duration;

use rustix::event::{poll, PollFd, PollFlags};
use rustix::fs::inotify;

/// A non-blocking watch for entries created, renamed in or out, or removed in one directory.
pub(crate) struct DirWatch {
    fd: OwnedFd,
}

/// What [`DirWatch::drain`] found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Drained {
    /// At least one event: the directory may have changed.
    pub changed: bool,
    /// The watch is gone (the directory was removed) or events were dropped (queue
    /// overflow): the caller should stop trusting it.
    pub lost: bool,
}

impl DirWatch {
    /// `None` when inotify cannot be had: no such directory, or the user's inotify limits
    /// (`fs.inotify.max_user_instances`/`max_user_watches`) reached. Callers then re-read.
    pub(crate) fn new(dir: &Path) -> Option<Self> {
        let fd =
            inotify::init(inotify::CreateFlags::NONBLOCK | inotify::CreateFlags::CLOEXEC).ok()?;
        let flags = inotify::WatchFlags::CREATE
            | inotify::WatchFlags::MOVED_TO
            | inotify::WatchFlags::DELETE
            | inotify::WatchFlags::MOVED_FROM
            | inotify::WatchFlags::ONLYDIR;
        inotify::add_watch(&fd, dir, flags).ok()?;
        Some(Self { fd })
    }

    /// Reads every pending event without blocking.
    pub(crate) fn drain(&self) -> Drained {
        let mut buf = [std::mem::MaybeUninit::uninit(); 1024];
        let mut events = inotify::Reader::new(&self.fd, &mut buf);
        let mut out = Drained::default();
        loop {
            match events.next() {
                Ok(e) => {
                    out.changed = true;
                    out.lost |= e.events().intersects(
                        inotify::ReadFlags::IGNORED | inotify::ReadFlags::QUEUE_OVERFLOW,
                    );
                }
                Err(rustix::io::Errno::AGAIN) => break,
                Err(_) => {
                    out = Drained {
                        changed: true,
                        lost: true,
                    };
                    break;
                }
            }
        }
        out
    }

    /// Sleeps until an event is pending or `timeout` passes (a signal ends it early too),
    /// then drains what is pending.
    pub(crate) fn wait(&self, timeout: Duration) -> Drained {
        let ts = rustix::time::Timespec {
            tv_sec: timeout.as_secs().min(i64::MAX as u64) as i64,
            tv_nsec: timeout.subsec_nanos().into(),
        };
        let mut fds = [PollFd::new(&self.fd, PollFlags::IN)];
        // The timeout and EINTR both mean "look again"; the drain says whether anything came.
        // Any other error would return at once every time: the watch is given up.
        match poll(&mut fds, Some(&ts)) {
            Ok(_) | Err(rustix::io::Errno::INTR) => self.drain(),
            Err(_) => Drained {
                changed: true,
                lost: true,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    /// A rename into the directory ends a long wait at once, as a writer publishing a flow
    /// does; a directory that is not there gives no watch.
    #[test]
    fn a_rename_into_the_directory_ends_the_wait() {
        let dir = tempfile::tempdir().unwrap();
        let watch = DirWatch::new(dir.path()).unwrap();
        assert_eq!(watch.drain(), Drained::default());
        let tmp = dir.path().join(".tmp");
        std::fs::create_dir(&tmp).unwrap();
        assert!(watch.drain().changed);
        let path = dir.path().to_owned();
        let renamer = std::thread::spawn(move || {
            std::fs::rename(&tmp, path.join("published")).unwrap();
        });
        let t = Instant::now();
        let mut seen = Drained::default();
        while !seen.changed && t.elapsed() < Duration::from_secs(60) {
            seen = watch.wait(Duration::from_secs(60));
        }
        renamer.join().unwrap();
        assert!(seen.changed && !seen.lost);
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "the event, not the timeout"
        );
        assert!(DirWatch::new(&dir.path().join("missing")).is_none());
    }
}
