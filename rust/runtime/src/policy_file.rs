//! A policy file and the pins files it names, read here, at the edge: the core loads a policy
//! from the bytes it is handed and hashes them, so what was loaded is what a reload compares
//! the files with. The Python sidecar and the Envoy module read them the same way.

use sha2::{Digest, Sha256};
use std::cell::RefCell;
use std::fs::File;
use std::io::{Error, ErrorKind, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use toolgate_core::{Policy, PolicyError, PolicyErrors};

/// What a file read whole may hold (a pins file here; a key, a policy or a pins file in
/// Python, `toolgate.files`): far above any real one.
pub const MAX_FILE_BYTES: u64 = 64 << 20;

/// A file read whole (a pins file a policy names, a key): only a regular file of at most
/// [`MAX_FILE_BYTES`]. A pipe nobody writes would stall the reload, a device would never end.
pub fn read_regular(path: &Path) -> std::io::Result<Vec<u8>> {
    read_whole(path).map(|(_, bytes)| bytes)
}

/// A regular file of at most [`MAX_FILE_BYTES`] read whole, and the file it was (open, for
/// its metadata).
pub fn read_whole(path: &Path) -> std::io::Result<(File, Vec<u8>)> {
    // Non-blocking: opening a FIFO does not wait for a writer; it is refused just after.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(Error::new(ErrorKind::InvalidInput, "not a regular file"));
    }
    // By its size first: a huge file is not read to be refused.
    if meta.len() > MAX_FILE_BYTES {
        return Err(too_large());
    }
    let mut bytes = Vec::new();
    (&file).take(MAX_FILE_BYTES + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(too_large());
    }
    Ok((file, bytes))
}

/// A file over [`MAX_FILE_BYTES`], refused (by its size before it is read, or as it grew).
fn too_large() -> Error {
    let message = format!("larger than {} MiB", MAX_FILE_BYTES >> 20);
    Error::new(ErrorKind::FileTooLarge, message)
}

/// A policy file and its pins files: JSON or YAML by extension, otherwise by content.
pub fn load_file(path: &Path) -> Result<Policy, PolicyErrors> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        PolicyErrors(vec![PolicyError {
            pointer: String::new(),
            line: None,
            message: format!("cannot read {}: {e}", path.display()),
        }])
    })?;
    Policy::from_text(&text, "auto", Some(path), &read_regular)
}

/// Each pins file a policy named, with the SHA-256 (hex) of what was read: None when it could
/// not be read.
pub type PinsRead = Vec<(PathBuf, Option<String>)>;

/// A policy file's text, as a reload read it, made a policy (`path` picks the format and is
/// where its pins files are read); with each pins file it named as read, so that a watcher
/// can wait for a missing or changed one, whether or not the policy loaded.
pub fn load_text(text: &str, path: &Path) -> (Result<Policy, PolicyErrors>, PinsRead) {
    let read = RefCell::new(Vec::new());
    let reading = |file: &Path| {
        let bytes = read_regular(file);
        let digest = bytes.as_ref().ok().map(|b| hex(&Sha256::digest(b)));
        read.borrow_mut().push((file.to_path_buf(), digest));
        bytes
    };
    let loaded = Policy::from_text(text, "auto", Some(path), &reading);
    (loaded, read.into_inner())
}

/// The pins files a loaded policy read, with their digests.
pub fn pins_loaded(policy: &Policy) -> PinsRead {
    let files = policy.pins.iter();
    files
        .map(|f| (f.path.clone(), Some(hex(&f.digest))))
        .collect()
}

/// A digest in lower-case hex, as Python's `hashlib` writes it.
pub fn hex(digest: &[u8]) -> String {
    let mut out = String::with_capacity(digest.len() * 2);
    for b in digest {
        out.push(char::from_digit(u32::from(b >> 4), 16).unwrap_or('0'));
        out.push(char::from_digit(u32::from(b & 15), 16).unwrap_or('0'));
    }
    out
}
