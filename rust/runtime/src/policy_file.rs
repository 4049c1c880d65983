//! A policy file and the pins files it names, read here, at the edge: the core loads a policy
//! from the bytes it is handed and hashes them, so what was loaded is what a reload compares
//! the files with. The Python sidecar and the Envoy module read them the same way.

use std::io::{Error, ErrorKind, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use toolgate_core::{Policy, PolicyError, PolicyErrors};

/// What a file read whole may hold (a pins file here; a key, a policy or a pins file in
/// Python, `toolgate.files`): far above any real one.
pub const MAX_FILE_BYTES: u64 = 64 << 20;

/// A pins file a policy names: only a regular file of at most [`MAX_FILE_BYTES`]. A pipe
/// nobody writes would stall the reload, a device would never end.
pub fn read_pins(path: &Path) -> std::io::Result<Vec<u8>> {
    // Non-blocking: opening a FIFO does not wait for a writer; it is refused just after.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)?;
    if !file.metadata()?.is_file() {
        return Err(Error::new(ErrorKind::InvalidInput, "not a regular file"));
    }
    let mut bytes = Vec::new();
    file.take(MAX_FILE_BYTES + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        let message = format!("larger than {} MiB", MAX_FILE_BYTES >> 20);
        return Err(Error::new(ErrorKind::FileTooLarge, message));
    }
    Ok(bytes)
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
    Policy::from_text(&text, "auto", Some(path), &read_pins)
}
