//! Decision counts kept in atomics, so the hot path never touches a metrics library; a
//! Prometheus collector reads them at scrape time.

use crate::decision::{Code, Decision};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

#[derive(Default)]
pub struct Stats {
    by_code: [AtomicU64; Code::ALL.len()],
    shadow: AtomicU64,
    table_full: AtomicU64,
}

impl Stats {
    #[inline]
    pub fn count(&self, d: &Decision) {
        self.by_code[d.code.index()].fetch_add(1, Relaxed);
        if d.shadow {
            self.shadow.fetch_add(1, Relaxed);
        }
    }

    pub fn count_table_full(&self) {
        self.table_full.fetch_add(1, Relaxed);
    }

    /// Decisions so far, per code.
    pub fn by_code(&self) -> [(Code, u64); Code::ALL.len()] {
        Code::ALL.map(|c| (c, self.by_code[c.index()].load(Relaxed)))
    }

    pub fn shadow(&self) -> u64 {
        self.shadow.load(Relaxed)
    }

    /// Denials because the counter table had no free slot.
    pub fn table_full(&self) -> u64 {
        self.table_full.load(Relaxed)
    }
}
