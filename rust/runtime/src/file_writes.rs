//! What writers did to the policy file, as Linux's inotify reports it.
//!
//! Polling sees what a file holds, not whether its writer is done: a writer that pauses in the
//! middle of an in-place write (a slow copy, a shell's `cat >`, a stopped process) leaves a
//! file that reads the same for as long as it pauses. The kernel knows better: it reports each
//! write to a file (`IN_MODIFY`, truncation included) and each close of a file opened for
//! writing (`IN_CLOSE_WRITE`), and whether a name appeared by creation (`IN_CREATE`) or by a
//! rename (`IN_MOVED_TO`). The watch is on the directory the policy path resolves into, so a
//! file removed and written again in place is seen from its creation.
//!
//! Elsewhere (not Linux, or no watch to be had) nothing is known, and the watcher relies on
//! the settle period alone.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// The policy file's writers as last reported.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Writes {
    /// True while a writer has written to the file and not yet closed it; false once every
    /// write has been closed; None when nothing is known (no inotify, events lost, or writes
    /// that began before the watch).
    pub open: Option<bool>,
    /// The file was created in place (opened with `O_CREAT`) since it was last loaded, rather
    /// than renamed over the path whole.
    pub created: bool,
}

/// Follows the writes to the file a path resolves to.
pub struct FileWrites {
    #[cfg(target_os = "linux")]
    inotify: Option<inotify::Inotify>,
    #[cfg(target_os = "linux")]
    watch: Option<inotify::WatchDescriptor>,
    /// The directory watched and the file's name in it (both resolved through symlinks).
    at: Option<(PathBuf, OsString)>,
    writes: Writes,
    /// Why writers are not followed, if they are not.
    unwatched: Option<String>,
}

impl FileWrites {
    pub fn new() -> FileWrites {
        #[cfg(target_os = "linux")]
        let (inotify, unwatched) = match inotify::Inotify::init() {
            Ok(i) => (Some(i), None),
            // The instance limit, seccomp.
            Err(e) => (None, Some(e.to_string())),
        };
        #[cfg(not(target_os = "linux"))]
        return FileWrites::unknown("no inotify here");
        #[cfg(target_os = "linux")]
        FileWrites {
            inotify,
            watch: None,
            at: None,
            writes: Writes::default(),
            unwatched,
        }
    }

    /// Nothing known of the writers: the settle period alone decides.
    pub fn unknown(why: &str) -> FileWrites {
        FileWrites {
            #[cfg(target_os = "linux")]
            inotify: None,
            #[cfg(target_os = "linux")]
            watch: None,
            at: None,
            writes: Writes::default(),
            unwatched: Some(why.to_owned()),
        }
    }

    /// Why the writers are not followed (the settle period alone decides), if they are not.
    pub fn unwatched(&self) -> Option<&str> {
        self.unwatched.as_deref()
    }

    /// What the kernel reported since the last look.
    pub fn look(&mut self, path: &Path) -> Writes {
        #[cfg(target_os = "linux")]
        if self.inotify.is_some() {
            self.follow(path);
            self.drain();
            return self.writes;
        }
        let _ = path;
        Writes::default()
    }

    /// The file was loaded: its creation is no longer news.
    pub fn loaded(&mut self) {
        self.writes.created = false;
    }

    #[cfg(target_os = "linux")]
    fn follow(&mut self, path: &Path) {
        use inotify::WatchMask;
        let resolved = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
        let (Some(dir), Some(name)) = (resolved.parent(), resolved.file_name()) else {
            return;
        };
        let at = (dir.to_path_buf(), name.to_os_string());
        if self.at.as_ref() == Some(&at) && self.watch.is_some() {
            return;
        }
        let Some(inotify) = self.inotify.as_mut() else {
            return;
        };
        if let Some(old) = self.watch.take() {
            // The directory may have gone away, and its watch with it.
            let _ = inotify.watches().remove(old);
        }
        let mask = WatchMask::MODIFY
            | WatchMask::CLOSE_WRITE
            | WatchMask::CREATE
            | WatchMask::MOVED_TO
            | WatchMask::MOVED_FROM
            | WatchMask::DELETE;
        // A missing directory (mid-swap): look again next time.
        self.watch = inotify.watches().add(&at.0, mask).ok();
        self.at = Some(at);
        // Writes that began before the watch are not known.
        self.writes = Writes::default();
    }

    #[cfg(target_os = "linux")]
    fn drain(&mut self) {
        use inotify::EventMask;
        let Some(inotify) = self.inotify.as_mut() else {
            return;
        };
        let mut buffer = [0u8; 4096];
        // Non-blocking: an error (nothing more to read) ends the round.
        while let Ok(events) = inotify.read_events(&mut buffer) {
            let mut any = false;
            for event in events {
                any = true;
                let mask = event.mask;
                if mask.contains(EventMask::Q_OVERFLOW) {
                    self.writes.open = None;
                    continue;
                }
                let ours = self.watch.as_ref() == Some(&event.wd);
                if mask.contains(EventMask::IGNORED) && ours {
                    // The directory was removed.
                    self.watch = None;
                    self.writes = Writes::default();
                    continue;
                }
                let name = self.at.as_ref().map(|(_, n)| n.as_os_str());
                if !ours || event.name != name {
                    continue;
                }
                let created = self.writes.created;
                self.writes = if mask.contains(EventMask::CREATE) {
                    Writes {
                        open: Some(true),
                        created: true,
                    }
                } else if mask.contains(EventMask::MODIFY) {
                    Writes {
                        open: Some(true),
                        created,
                    }
                } else if mask.contains(EventMask::CLOSE_WRITE) {
                    Writes {
                        open: Some(false),
                        created,
                    }
                } else if mask.contains(EventMask::MOVED_TO) {
                    Writes {
                        open: Some(false),
                        created: false,
                    }
                } else if mask.intersects(EventMask::MOVED_FROM | EventMask::DELETE) {
                    Writes::default()
                } else {
                    self.writes
                };
            }
            if !any {
                break;
            }
        }
    }
}

impl Default for FileWrites {
    fn default() -> Self {
        FileWrites::new()
    }
}
