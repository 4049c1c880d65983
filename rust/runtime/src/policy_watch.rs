//! When a watched policy file is to be loaded again: the part of hot reload that `toolgate
//! serve` and the Envoy module share (each runs its own loop, logs and counts).
//!
//! The watch compares the file's content (read through any symlinks) with what was last
//! tried, so it sees in-place edits, atomic renames, and Kubernetes ConfigMap updates (the
//! mounted file is a symlink into a directory that the kubelet swaps).
//!
//! Only complete files are loaded. A YAML file cut at a line boundary is often a valid policy,
//! and a looser one (the cut drops a `deny_if` or a limit), so validation cannot tell a
//! half-written file from a finished one. A new file (another inode: a rename over the path, a
//! ConfigMap's `..data` swap) was written in full before it appeared, and is loaded at once.
//! A file changed or created in place may still be being written: it is loaded only once its
//! writer has closed it (on Linux, where the kernel reports that: [`crate::file_writes`]) and
//! it has stayed unchanged for the settle period, so a writer's pause, however long, never
//! loads half a file. A forced look (SIGHUP) loads at once: the operator says it is done.
//!
//! The pins files a policy names (`pins.file`) are part of it: a change to one loads the
//! policy as it stands. `toolgate pin` replaces a pins file whole (a rename), and a pins file
//! cut short is not valid JSON, so a change there is loaded at once.

use crate::file_writes::FileWrites;
use crate::policy_file::{hex, read_regular, read_whole, PinsRead};
use sha2::{Digest, Sha256};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// How often a watched policy file is looked at, in seconds, unless told otherwise.
pub const RELOAD_INTERVAL: f64 = 1.0;
/// How long an in-place edit must read unchanged before it is loaded, in seconds, unless
/// told otherwise.
pub const RELOAD_SETTLE: f64 = 0.5;

/// One reading of the policy file through its symlinks: which file it was, its content, and
/// what the file system said about it. Two readings are equal when all of that is.
#[derive(Debug, Clone)]
pub struct FileVersion {
    /// `(st_dev, st_ino)` of the file the path resolves to: new after a rename over it.
    pub identity: (u64, u64),
    pub size: u64,
    pub mtime_ns: i128,
    /// SHA-256 of the content, hex.
    pub digest: String,
    pub content: Vec<u8>,
}

impl PartialEq for FileVersion {
    fn eq(&self, other: &Self) -> bool {
        (self.identity, self.size, self.mtime_ns, &self.digest)
            == (other.identity, other.size, other.mtime_ns, &other.digest)
    }
}

/// The policy file as it is now ([`read_whole`]: a regular file, within the size limit, so
/// that a pipe put there does not stall the watch).
pub fn read_version(path: &Path) -> std::io::Result<FileVersion> {
    let (file, content) = read_whole(path)?;
    // Of the open file, after reading it, so identity and content belong to the same file
    // even if the path is swapped meanwhile.
    let meta = file.metadata()?;
    Ok(FileVersion {
        identity: (meta.dev(), meta.ino()),
        size: meta.size(),
        mtime_ns: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
        digest: hex(&Sha256::digest(&content)),
        content,
    })
}

/// Each pins file's content digest now (None: it cannot be read, or is no regular file).
fn pins_now(pins: &PinsRead) -> PinsRead {
    let digest = |p: &Path| read_regular(p).ok().map(|b| hex(&Sha256::digest(b)));
    pins.iter().map(|(p, _)| (p.clone(), digest(p))).collect()
}

/// What one look at the file found.
#[derive(Debug, PartialEq)]
pub enum Look {
    /// Nothing new to load.
    Unchanged,
    /// The file cannot be read (deleted, mid-swap): the loaded policy stays. `first`: it could
    /// be read at the look before.
    Unreadable { first: bool, why: String },
    /// Changed in place, and not yet settled. `first`: this edit was just seen.
    Settling { first: bool },
    /// Load this (it is then what was last tried). `pins`: only a pins file changed.
    Load { version: FileVersion, pins: bool },
}

/// The watch on one policy file: what was last tried, and an in-place edit settling.
pub struct PolicyWatch {
    path: PathBuf,
    settle: f64,
    /// The content last tried and the file it came from, read together (a rename after that
    /// is then seen as a new file, and loaded at once).
    tried: Option<(String, (u64, u64))>,
    /// The file could not be read at some look since: a file that then appears under a new
    /// identity was created in place (removed, then written), not renamed in whole.
    went_missing: bool,
    /// The pins files the policy last tried named, as it read them.
    pins: PinsRead,
    /// An in-place edit waiting to settle: the file as last read, and since when it reads so.
    edit: Option<(FileVersion, f64)>,
    writes: FileWrites,
}

impl PolicyWatch {
    /// A watch on `path`, whose policy was read from `loaded` (the file as read just before
    /// the policy was made of it, so a change made in between is seen as new; None: it could
    /// not be read) with the pins files `pins`. An in-place edit is loaded once the file has
    /// read the same for `settle` seconds, and its writer has closed it; 0 loads it at once.
    /// `writes`: what the kernel says of the file's writers ([`FileWrites::new`]), or nothing
    /// ([`FileWrites::unknown`]: the settle period alone decides).
    pub fn new(
        path: &Path,
        settle: f64,
        loaded: Option<&FileVersion>,
        pins: PinsRead,
        mut writes: FileWrites,
    ) -> Self {
        writes.look(path);
        PolicyWatch {
            path: path.to_path_buf(),
            settle,
            tried: loaded.map(|v| (v.digest.clone(), v.identity)),
            went_missing: loaded.is_none(),
            pins,
            edit: None,
            writes,
        }
    }

    /// Why the file's writers are not followed (the settle period alone decides), if not.
    pub fn unwatched(&self) -> Option<&str> {
        self.writes.unwatched()
    }

    /// Seconds until the next look: while an in-place edit settles, often enough that the
    /// settle period, not the `interval`, sets the delay.
    pub fn next_wait(&self, interval: f64) -> f64 {
        match self.edit {
            Some(_) if self.settle > 0.0 => interval.min(self.settle / 4.0),
            _ => interval,
        }
    }

    /// One look at the file at `now` (seconds, on any monotonic clock): whether to load it
    /// (new and complete, or `forced`).
    pub fn look(&mut self, forced: bool, now: f64) -> Look {
        let current = read_version(&self.path);
        // After the reading: a write that lands in between is seen here, not missed.
        let writes = self.writes.look(&self.path);
        let current = match current {
            Ok(c) => c,
            Err(e) => {
                let first = !self.went_missing;
                self.went_missing = true;
                self.edit = None;
                return Look::Unreadable {
                    first,
                    why: e.to_string(),
                };
            }
        };
        if forced {
            return self.load(current, false);
        }
        let same = self.tried.as_ref().map(|(d, _)| d) == Some(&current.digest);
        if same && pins_now(&self.pins) != self.pins {
            return self.load(current, true);
        }
        if same {
            // Nothing new (or an edit put back what is loaded); follow a rename of the same
            // content so that later in-place edits of the new file are recognised as such.
            self.tried = Some((current.digest, current.identity));
            self.went_missing = false;
            self.edit = None;
            return Look::Unchanged;
        }
        let replaced = self.tried.as_ref().map(|(_, i)| *i) != Some(current.identity)
            && !self.went_missing
            && !writes.created;
        if replaced || (self.settle <= 0.0 && writes.open != Some(true)) {
            return self.load(current, false);
        }
        let first = self.edit.is_none();
        match &self.edit {
            Some((seen, since)) if *seen == current => {
                if now - since >= self.settle && writes.open != Some(true) {
                    return self.load(current, false);
                }
            }
            _ => self.edit = Some((current, now)),
        }
        Look::Settling { first }
    }

    /// What a load of the version [`Look::Load`] gave read: the pins files the policy named
    /// (a pins file a refused policy names is watched until the policy loads).
    pub fn tried(&mut self, pins: PinsRead) {
        self.pins = pins;
    }

    fn load(&mut self, version: FileVersion, pins: bool) -> Look {
        // Recorded before loading, so an invalid file is tried once, not at every look.
        self.tried = Some((version.digest.clone(), version.identity));
        self.went_missing = false;
        self.edit = None;
        self.writes.loaded();
        Look::Load { version, pins }
    }
}
