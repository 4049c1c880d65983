//! Reserving every limit a call touches together, or none of them.
//!
//! Limits are reserved one after another; if one has no room, those already reserved are
//! given back before the call is denied. Between the two, another call may see the brief
//! extra count and be denied too: the error is always towards denying, never allowing.

use crate::counter::marks::{Read, ReadBits};
use crate::counter::reservation::{Part, MAX_PARTS};
use crate::counter::window::Refused;
use crate::counter::{CounterTable, Peer, WindowState};
use crate::decision::{LimitState, Limits};
use crate::observing::trace::{NoTrace, Trace};
pub use crate::policy::evaluation::Want;
use arrayvec::ArrayVec;

/// The parts one call reserved, kept on the stack (a call touches at most 8 limits).
pub type Parts = ArrayVec<Part, MAX_PARTS>;

pub enum Outcome {
    /// Reserved (or, without `consume`, would fit); the parts and states were appended.
    Reserved,
    /// Some limit had no room; nothing of this call is consumed.
    Denied {
        retry_after_ms: Option<u64>,
        limits: Limits,
        failing: usize,
    },
    /// A counter found no slot in the table; nothing of this call is consumed.
    TableFull { failing: usize },
    /// The marks read deny the call (a combination the caller's [`crate::counter::marks::Denying`]
    /// names): nothing was reserved, nor any limit judged.
    MarksDeny,
    /// The counter store could not be asked in time (see [`super::store`]); this call is
    /// denied, though it may have been counted (an unanswered script may have run).
    Unavailable {
        failing: usize,
        reason: &'static str,
    },
}

/// The state of `want`'s limit with `used` units in its window, empty in `reset_ns`: for
/// stores that count elsewhere and report what they found.
pub fn state_of(want: &Want<'_>, used: u64, reset_ns: u64) -> LimitState {
    state(want, used, reset_ns)
}

fn state(want: &Want<'_>, used: u64, reset_ns: u64) -> LimitState {
    LimitState {
        limit: want.limit.id,
        remaining_units: want.limit.max_units.saturating_sub(used),
        reset_in_ms: reset_ns.div_ceil(1_000_000),
    }
}

fn peeked(want: &Want<'_>, window: Option<WindowState>, now_ns: u64) -> LimitState {
    match window {
        Some(w) => state(want, w.used, w.reset_in_ns(want.key.granularity, now_ns)),
        None => state(want, 0, 0),
    }
}

fn peek(table: &CounterTable, want: &Want<'_>, now_ns: u64) -> Option<WindowState> {
    let slot = table.find(&want.key)?;
    table
        .slot(slot)
        .peek(want.key.hash, want.key.granularity, now_ns)
}

/// Reserve all `wants` (or, with `consume == false`, only check that they would fit),
/// appending what was consumed to `parts` and each limit's state to `limits`. On a denial,
/// what this call had reserved is given back and `parts`/`limits` are left as they were.
/// A new key a client chose is counted as `peer`'s, the request's address.
#[allow(clippy::too_many_arguments)]
pub fn reserve(
    table: &CounterTable,
    wants: &[Want<'_>],
    peer: Peer,
    now_ns: u64,
    consume: bool,
    parts: &mut Parts,
    limits: &mut Limits,
) -> Outcome {
    reserve_traced(
        table,
        wants,
        peer,
        now_ns,
        consume,
        parts,
        limits,
        &mut NoTrace,
    )
}

/// [`reserve`], reporting to `trace` what each limit had counted and whether the call fit.
#[allow(clippy::too_many_arguments)]
pub fn reserve_traced<T: Trace>(
    table: &CounterTable,
    wants: &[Want<'_>],
    peer: Peer,
    now_ns: u64,
    consume: bool,
    parts: &mut Parts,
    limits: &mut Limits,
    trace: &mut T,
) -> Outcome {
    let (first_part, first_limit) = (parts.len(), limits.len());
    let undo = |parts: &mut Parts, limits: &mut Limits| {
        give_back(table, &parts[first_part..]);
        parts.truncate(first_part);
        limits.truncate(first_limit);
    };
    for (i, want) in wants.iter().enumerate() {
        let (g, hash) = (want.key.granularity, want.key.hash);
        if !consume {
            let window = peek(table, want, now_ns);
            if window.map_or(0, |w| w.used) + want.amount > want.limit.max_units {
                undo(parts, limits);
                return denied(table, wants, now_ns, trace);
            }
            trace.limit(i, want, window.map_or(0, |w| w.used), true);
            let mut s = peeked(want, window, now_ns);
            s.remaining_units = s.remaining_units.saturating_sub(want.amount);
            limits.push(s);
            continue;
        }
        let reserved = loop {
            let Ok(slot) = table.find_or_insert(&want.key, now_ns, peer) else {
                undo(parts, limits);
                return Outcome::TableFull { failing: i };
            };
            match table
                .slot(slot)
                .reserve(hash, g, now_ns, want.amount, want.limit.max_units)
            {
                Ok(r) => break (slot, r),
                Err(Refused::Moved) => continue,
                Err(Refused::Full) => {
                    undo(parts, limits);
                    return denied(table, wants, now_ns, trace);
                }
            }
        };
        let (slot, r) = reserved;
        trace.limit(i, want, r.used.saturating_sub(want.amount), true);
        parts.push(Part {
            slot: slot.0,
            key: hash,
            bucket: r.bucket,
            amount: want.amount,
        });
        // The amount just went into the newest bucket, so the window empties when it leaves.
        let reset_ns = g.leaves_at_ns(r.bucket).saturating_sub(now_ns);
        limits.push(state(want, r.used, reset_ns));
    }
    Outcome::Reserved
}

/// Which of `reads` count anything in their windows now besides `own`, the parts the call
/// reading them has just reserved (a counter no slot holds counts nothing). Read after the
/// reservation, so that of two calls that each set a mark and read the other's, at least
/// one sees the other; but a call does not see its own mark: it is judged as the Redis
/// script judges it, before anything of it is counted.
pub fn read(table: &CounterTable, reads: &[Read], own: &[Part], now_ns: u64) -> ReadBits {
    let set = reads.iter().enumerate().fold(0, |bits, (i, read)| {
        let key = &read.key;
        let Some(slot) = table.find(key) else {
            return bits;
        };
        let used = table
            .slot(slot)
            .peek(key.hash, key.granularity, now_ns)
            .map_or(0, |w| w.used);
        let mine: u64 = own
            .iter()
            .filter(|p| p.slot == slot.0 && p.key == key.hash)
            .map(|p| p.amount)
            .sum();
        bits | (u64::from(used > mine) << i)
    });
    ReadBits { set, unknown: 0 }
}

/// Record reserved parts in the reservation log; `None` when there is nothing to give back
/// (or, rarely, the log could not take them: see [`ReservationLog::record`]).
///
/// [`ReservationLog::record`]: crate::counter::reservation::ReservationLog::record
#[inline]
pub fn record(table: &CounterTable, parts: &[Part]) -> Option<u64> {
    if parts.is_empty() {
        return None;
    }
    table.reservation_log().record(table.region(), parts)
}

/// The denial: every limit's state, and the longest wait among those without room.
fn denied<T: Trace>(
    table: &CounterTable,
    wants: &[Want<'_>],
    now_ns: u64,
    trace: &mut T,
) -> Outcome {
    let mut retry: Option<u64> = Some(0);
    let mut failing = 0;
    let mut limits = Limits::with_capacity(wants.len());
    for (i, want) in wants.iter().enumerate() {
        let window = peek(table, want, now_ns);
        let used = window.map_or(0, |w| w.used);
        trace.limit(i, want, used, used + want.amount <= want.limit.max_units);
        if used + want.amount > want.limit.max_units {
            if retry == Some(0) {
                failing = i;
            }
            let wait = if want.amount > want.limit.max_units {
                None
            } else {
                window.and_then(|w| {
                    w.retry_after_ns(
                        used + want.amount - want.limit.max_units,
                        want.key.granularity,
                        now_ns,
                    )
                })
            };
            retry = match (retry, wait) {
                (Some(a), Some(b)) => Some(a.max(b)),
                _ => None,
            };
        }
        limits.push(peeked(want, window, now_ns));
    }
    Outcome::Denied {
        retry_after_ms: retry.map(|ns| ns.div_ceil(1_000_000).max(1)),
        limits,
        failing,
    }
}

/// Give back the parts of a reservation.
pub fn give_back(table: &CounterTable, parts: &[Part]) {
    for p in parts {
        table
            .slot(crate::counter::SlotRef(p.slot))
            .release(p.key, p.bucket, p.amount);
    }
}

/// Release reservation `id`: true if it was held and is now given back.
pub fn release(table: &CounterTable, id: u64) -> bool {
    match table.reservation_log().take(table.region(), id) {
        Some(parts) => {
            give_back(table, &parts);
            true
        }
        None => false,
    }
}
