//! State shared by worker processes: one file (under /dev/shm) that every worker maps,
//! holding the counter table and one statistics block per worker. A limit counted there is
//! exact across workers, and survives any one of them crashing: everything is a 64-bit atomic
//! at a fixed offset, and nothing in it is a lock a dead process could leave held.
//!
//! Layout, in 64-bit words: a 16-word header, `workers` statistics blocks, the counter table.

use crate::counter::region::HEADER_WORDS;
use crate::counter::reservation::ReservationLog;
use crate::counter::table::check_slots;
use crate::counter::{CounterTable, Region};
use crate::mapping::Mapping;
use crate::stats::{Stats, STATS_BLOCK_WORDS};
use std::fs::OpenOptions;
use std::path::Path;
use std::sync::atomic::Ordering::SeqCst;
use std::sync::Arc;

/// "TGSH" + layout version 2 (version 2: statistics blocks grew by the counter store's
/// round trips, errors and fallbacks, and a code, STORE_UNAVAILABLE).
const MAGIC: u64 = 0x5447_5348_0000_0002;
const MAGIC_WORD: usize = 0;
const CAPACITY_WORD: usize = 1;
const RESERVATIONS_WORD: usize = 2;
const WORKERS_WORD: usize = 3;
const TOTAL_WORD: usize = 4;

/// The sizes a shared state file is made for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    /// Counter-table slots (rounded up to a power of two).
    pub capacity: usize,
    pub reservations: usize,
    /// Statistics blocks: one per worker.
    pub workers: usize,
}

impl Layout {
    fn normalized(self) -> Layout {
        Layout {
            capacity: self.capacity.max(1).next_power_of_two(),
            reservations: ReservationLog::lines_for_capacity(self.reservations),
            workers: self.workers,
        }
    }

    fn table_offset(&self) -> usize {
        HEADER_WORDS + self.workers * STATS_BLOCK_WORDS
    }

    fn total_words(&self) -> usize {
        self.table_offset() + CounterTable::required_words(self.capacity, self.reservations)
    }
}

/// The shared state file, mapped.
#[derive(Clone)]
pub struct SharedState {
    mapping: Arc<Mapping>,
    layout: Layout,
}

impl SharedState {
    /// Create a new state file at `path` (which must not exist), zeroed, for `layout`.
    pub fn create(path: &Path, layout: Layout) -> Result<SharedState, String> {
        let layout = layout.normalized();
        check_slots(layout.capacity)?;
        let fail = |what: &str, e: std::io::Error| format!("{}: {what}: {e}", path.display());
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(path)
            .map_err(|e| fail("cannot create", e))?;
        let bytes = layout.total_words() * 8;
        // A file extended by set_len reads as zeros: an empty table, empty statistics.
        file.set_len(bytes as u64)
            .map_err(|e| fail("cannot size", e))?;
        let mapping = Mapping::map(&file, bytes)?;
        mapping
            .word(CAPACITY_WORD)
            .store(layout.capacity as u64, SeqCst);
        mapping
            .word(RESERVATIONS_WORD)
            .store(layout.reservations as u64, SeqCst);
        mapping
            .word(WORKERS_WORD)
            .store(layout.workers as u64, SeqCst);
        mapping.word(TOTAL_WORD).store(bytes as u64 / 8, SeqCst);
        // Last: a reader that sees the magic sees the sizes too.
        mapping.word(MAGIC_WORD).store(MAGIC, SeqCst);
        let state = SharedState {
            mapping: Arc::new(mapping),
            layout,
        };
        state.table()?; // lays the table out
        Ok(state)
    }

    /// Map an existing state file, checking its header against its size.
    pub fn open(path: &Path) -> Result<SharedState, String> {
        let fail = |what: &str| format!("{}: {what}", path.display());
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|e| fail(&format!("cannot open: {e}")))?;
        let bytes = file
            .metadata()
            .map_err(|e| fail(&format!("cannot stat: {e}")))?
            .len() as usize;
        if bytes < HEADER_WORDS * 8 {
            return Err(fail("not a toolgate state file (too short)"));
        }
        let mapping = Mapping::map(&file, bytes)?;
        if mapping.word(MAGIC_WORD).load(SeqCst) != MAGIC {
            return Err(fail("not a toolgate state file (bad magic)"));
        }
        let read = |i: usize| mapping.word(i).load(SeqCst) as usize;
        let layout = Layout {
            capacity: read(CAPACITY_WORD),
            reservations: read(RESERVATIONS_WORD),
            workers: read(WORKERS_WORD),
        };
        if layout.normalized() != layout
            || layout.total_words() != read(TOTAL_WORD)
            || layout.total_words() * 8 != bytes
        {
            return Err(fail("header does not match the file's size"));
        }
        Ok(SharedState {
            mapping: Arc::new(mapping),
            layout,
        })
    }

    pub fn layout(&self) -> Layout {
        self.layout
    }

    fn region(&self, offset: usize, words: usize) -> Region {
        crate::mapping::region(&self.mapping, offset, words)
    }

    /// The counter table every worker shares.
    pub fn table(&self) -> Result<CounterTable, String> {
        let l = self.layout;
        let words = CounterTable::required_words(l.capacity, l.reservations);
        CounterTable::in_region(
            self.region(l.table_offset(), words),
            l.capacity,
            l.reservations,
        )
    }

    /// Statistics counted into worker `index`'s block.
    pub fn worker_stats(&self, index: usize) -> Result<Stats, String> {
        if index >= self.layout.workers {
            return Err(format!(
                "worker {index} out of range: the state file has {} worker blocks",
                self.layout.workers
            ));
        }
        let block = self.region(HEADER_WORDS + index * STATS_BLOCK_WORDS, STATS_BLOCK_WORDS);
        Ok(Stats::counting_into(block))
    }

    /// Statistics that read the sum of every worker's block.
    pub fn total_stats(&self) -> Stats {
        let blocks = (0..self.layout.workers)
            .map(|i| self.region(HEADER_WORDS + i * STATS_BLOCK_WORDS, STATS_BLOCK_WORDS))
            .collect();
        Stats::summing(blocks)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::counter::{CounterKey, Granularity};

    fn temp_path(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir();
        dir.join(format!("toolgate-test-{}-{name}", std::process::id()))
    }

    #[test]
    fn two_mappings_of_one_file_share_counters_and_statistics() {
        let path = temp_path("share");
        let _ = std::fs::remove_file(&path);
        let layout = Layout {
            capacity: 10,
            reservations: 8,
            workers: 2,
        };
        let a = SharedState::create(&path, layout).unwrap();
        assert_eq!(a.layout().capacity, 16);
        let b = SharedState::open(&path).unwrap();
        assert_eq!(b.layout(), a.layout());

        let key = CounterKey::new(1, b"alice", Granularity::for_window_ms(60_000));
        let slot_a = a.table().unwrap().find_or_insert(&key, 1).unwrap();
        let slot_b = b
            .table()
            .unwrap()
            .find(&key)
            .expect("seen through the other mapping");
        assert_eq!(slot_a, slot_b);

        a.worker_stats(0).unwrap().count_table_full();
        b.worker_stats(1).unwrap().count_table_full();
        b.worker_stats(1).unwrap().count_table_full();
        assert_eq!(a.total_stats().table_full(), 3);
        assert!(a.worker_stats(2).is_err());
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn refuses_an_existing_file_on_create_and_a_foreign_one_on_open() {
        let path = temp_path("foreign");
        std::fs::write(&path, vec![7u8; 4096]).unwrap();
        let layout = Layout {
            capacity: 4,
            reservations: 4,
            workers: 1,
        };
        assert!(SharedState::create(&path, layout)
            .err()
            .unwrap()
            .contains("cannot create"));
        assert!(SharedState::open(&path)
            .err()
            .unwrap()
            .contains("bad magic"));
        std::fs::remove_file(&path).unwrap();
        assert!(SharedState::open(&path)
            .err()
            .unwrap()
            .contains("cannot open"));
    }
}
