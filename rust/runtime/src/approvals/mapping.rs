//! A file mapped into memory shared between processes, read and written only as 64-bit
//! atomics: the approvals table lives in one.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use toolgate_core::counter::Region;

/// A shared mapping, unmapped when the last region inside it is dropped.
pub struct Mapping {
    base: *mut u64,
    bytes: usize,
}

// SAFETY: the mapping is only accessed through atomics.
unsafe impl Send for Mapping {}
unsafe impl Sync for Mapping {}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: base and bytes are exactly what mmap returned.
        unsafe { libc::munmap(self.base.cast(), self.bytes) };
    }
}

impl Mapping {
    pub fn map(file: &File, bytes: usize) -> Result<Mapping, String> {
        // SAFETY: a fresh shared mapping of the whole file; checked for failure.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(format!("mmap: {}", std::io::Error::last_os_error()));
        }
        Ok(Mapping {
            base: base.cast(),
            bytes,
        })
    }

    pub fn word(&self, index: usize) -> &AtomicU64 {
        assert!(index * 8 < self.bytes);
        // SAFETY: in bounds, 8-byte aligned (mmap is page-aligned), accessed atomically.
        unsafe { AtomicU64::from_ptr(self.base.add(index)) }
    }
}

/// `words` words of `mapping` from word `offset`, as a region that keeps the mapping alive.
pub fn region(mapping: &Arc<Mapping>, offset: usize, words: usize) -> Region {
    assert!((offset + words) * 8 <= mapping.bytes);
    let keep: Arc<dyn Send + Sync> = mapping.clone();
    // SAFETY: within the mapping, which `keep` holds; accessed only atomically.
    unsafe { Region::in_mapping(mapping.base.add(offset), words, keep) }
}
