//! A lock in one 64-bit word of shared memory that a crashed process cannot leave held: the
//! word records its holder as `pid << 32 | thread tag`, and a waiter takes the lock over
//! when that process no longer exists. For short, rare critical sections (inserting a
//! counter key, changing an approval); the hot paths take no lock.

use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::SeqCst;

/// The lock, held for its guard's scope.
pub struct PidLock<'a> {
    word: &'a AtomicU64,
    owner: u64,
}

impl<'a> PidLock<'a> {
    /// Spin until `word` is free (0) or held by a process that is gone, then hold it.
    pub fn acquire(word: &'a AtomicU64) -> PidLock<'a> {
        let pid = std::process::id() as u64;
        let owner = (pid << 32) | thread_tag();
        let mut spins: u32 = 0;
        loop {
            let current = word.load(SeqCst);
            if current == 0 {
                if word.compare_exchange(0, owner, SeqCst, SeqCst).is_ok() {
                    return PidLock { word, owner };
                }
                continue;
            }
            spins = spins.wrapping_add(1);
            if spins.is_multiple_of(1024) {
                let holder = current >> 32;
                if holder != pid
                    && !process_alive(holder)
                    && word
                        .compare_exchange(current, owner, SeqCst, SeqCst)
                        .is_ok()
                {
                    return PidLock { word, owner };
                }
                std::thread::yield_now();
            } else {
                std::hint::spin_loop();
            }
        }
    }
}

impl Drop for PidLock<'_> {
    fn drop(&mut self) {
        let _ = self.word.compare_exchange(self.owner, 0, SeqCst, SeqCst);
    }
}

fn thread_tag() -> u64 {
    use std::sync::atomic::AtomicU32;
    static NEXT: AtomicU32 = AtomicU32::new(1);
    thread_local!(static TAG: u32 = NEXT.fetch_add(1, SeqCst).max(1));
    TAG.with(|t| *t as u64)
}

fn process_alive(pid: u64) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dead_holder_is_taken_over_and_a_live_one_waited_for() {
        // A pid far above pid_max stands for a process that died holding the lock.
        let word = AtomicU64::new((4_000_000_000u64 << 32) | 1);
        drop(PidLock::acquire(&word));
        assert_eq!(word.load(SeqCst), 0);

        let word = std::sync::Arc::new(AtomicU64::new(0));
        let held = PidLock::acquire(&word);
        let other = {
            let word = word.clone();
            std::thread::spawn(move || {
                let _g = PidLock::acquire(&word);
            })
        };
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert!(
            !other.is_finished(),
            "acquired a lock held by a live thread"
        );
        drop(held);
        other.join().unwrap();
    }
}
