//! Where counters are kept: one interface, so the engine's limiter and its all-or-nothing
//! reservation serve every store alike (as Limitador's `CounterStorage` does).
//!
//! - [`CounterTable`]: this host's table of atomics (process memory, or a file shared by
//!   worker processes). The default, and the fallback of the others.
//! - A remote store (the sidecar's Redis store, `toolgate_server::store`): one count shared
//!   by every replica. It implements this trait outside the core, which has no I/O.
//!
//! A store reserves all of a call's limits or none, with the sliding-window guarantee of
//! docs/counters.md, and gives a reservation back at most once.

use super::limiter::{self, Outcome, Parts, Want};
use crate::counter::marks::{Denying, Read, ReadBits};
use crate::counter::reservation::Part;
use crate::counter::{CounterTable, Peer};
use crate::decision::Limits;
use crate::observing::stats::Stats;

/// Reservation ids of a remote store carry this bit; the table's never do (they are a log
/// sequence number plus one), so `release` knows whose an id is.
pub const REMOTE_RESERVATION: u64 = 1 << 62;

/// The slot a remote store writes in a [`Part`] standing for its reservation (`key` is the
/// reservation id): no table has that many slots.
pub const REMOTE_SLOT: u32 = u32::MAX;

pub trait CounterStore: Send + Sync {
    /// Reserve every one of `wants` (with `consume == false`, only check that each would fit),
    /// appending what was consumed to `parts` and each limit's state to `limits`; on a denial
    /// nothing of this call stays consumed and both are left as they were. In the same step, read
    /// each counter of `reads` (at most [`MAX_READS`](crate::counter::marks::MAX_READS)): whether
    /// it counts anything in its window (a mark is set), whether the wants fit or not. A store that
    /// reads before it reserves may answer [`Outcome::MarksDeny`] for reads found as a combination
    /// `denying` names, having reserved nothing; others ignore it. `stats` counts the store's round
    /// trips, errors and fallbacks. A table counts a new key a client chose as `peer`'s
    /// ([`crate::counter::peers`]).
    #[allow(clippy::too_many_arguments)]
    fn reserve(
        &self,
        stats: &Stats,
        wants: &[Want<'_>],
        peer: Peer,
        reads: &[Read],
        denying: Denying,
        now_ns: u64,
        consume: bool,
        parts: &mut Parts,
        limits: &mut Limits,
    ) -> (Outcome, ReadBits);

    /// The reservation id of a decision's `parts` (`None`: nothing to give back).
    fn record(&self, parts: &[Part]) -> Option<u64>;

    /// Give reservation `id` back: true if it was held and now is not.
    fn release(&self, stats: &Stats, id: u64) -> bool;

    /// Whether a decision may wait on the network (a caller then lets other threads run
    /// meanwhile, e.g. releases Python's GIL). Such a store's give-back is a round trip of its
    /// own, so the engine tells it which marks deny a call ([`Denying`]).
    fn blocks(&self) -> bool {
        true
    }

    /// Whether its waits are long now (the store answers slowly or not at all), so a server
    /// should hand the deciding thread's other work to another thread before deciding. A
    /// hand-off costs more than a fast round trip, so it is made only when it pays.
    fn slow(&self) -> bool {
        false
    }
}

impl CounterStore for CounterTable {
    fn reserve(
        &self,
        _stats: &Stats,
        wants: &[Want<'_>],
        peer: Peer,
        reads: &[Read],
        _denying: Denying,
        now_ns: u64,
        consume: bool,
        parts: &mut Parts,
        limits: &mut Limits,
    ) -> (Outcome, ReadBits) {
        let outcome = limiter::reserve(self, wants, peer, now_ns, consume, parts, limits);
        (outcome, limiter::read(self, reads, parts, now_ns))
    }

    fn record(&self, parts: &[Part]) -> Option<u64> {
        limiter::record(self, parts)
    }

    fn release(&self, _stats: &Stats, id: u64) -> bool {
        id & REMOTE_RESERVATION == 0 && limiter::release(self, id)
    }

    fn blocks(&self) -> bool {
        false
    }
}
