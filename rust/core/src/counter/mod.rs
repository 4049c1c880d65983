//! Sliding-window counters in a fixed-capacity table of atomics.
//!
//! - [`region`]: the memory the table lives in (process memory or a shared mapping).
//! - [`window`]: one slot's sliding window: a head bucket plus a ring of sealed buckets.
//! - [`table`]: open addressing from counter keys to slots, reuse of expired slots.
//! - [`reservation`]: a log of what each allowed call reserved, so it can be released.
//!
//! Amounts are fixed-point *units*: one call counts [`UNITS_PER_CALL`], a cost of 12.5 counts
//! 12 500. That keeps spend limits exact to 1/1000 without floats in the atomics.

pub mod region;
pub mod reservation;
pub mod table;
pub mod window;

pub use region::Region;
pub use table::{CounterKey, CounterTable, SlotRef, TableFull};
pub use window::{Granularity, WindowState, BUCKETS};

/// Units counted for one call without `cost`.
pub const UNITS_PER_CALL: u64 = 1000;

/// Largest amount a bucket can hold (40 bits); `max` is validated to stay below it.
pub const MAX_UNITS: u64 = (1 << 40) - 1;

/// Convert a cost or max to units, rounding up so a fractional cost never counts less.
pub fn to_units(amount: f64) -> Option<u64> {
    if !amount.is_finite() || amount < 0.0 {
        return None;
    }
    let units = (amount * UNITS_PER_CALL as f64).ceil();
    (units <= MAX_UNITS as f64).then_some(units as u64)
}

/// Convert units back to the policy's unit (calls or cost).
pub fn from_units(units: u64) -> f64 {
    units as f64 / UNITS_PER_CALL as f64
}
