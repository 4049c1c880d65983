//! Sliding-window counters in a fixed-capacity table of atomics.
//!
//! - [`region`]: the memory the table lives in (process memory or a shared mapping).
//! - [`window`]: one slot's sliding window: a head bucket plus a ring of sealed buckets.
//! - [`table`]: open addressing from counter keys to slots, reuse of expired slots.
//! - [`peers`]: room per network address in the share of keys a client chooses.
//! - [`reservation`]: a log of what each allowed call reserved, so it can be released.
//! - [`marks`]: session marks, kept as counters: what a call reads and sets.
//! - [`clock`]: the time the windows slide on.
//!
//! Amounts are fixed-point *units*: one call counts [`UNITS_PER_CALL`], a cost of 12.5 counts
//! 12 500. That keeps spend limits exact to 1/1000 without floats in the atomics.

pub mod clock;
pub mod marks;
pub mod peers;
pub mod region;
pub mod reservation;
pub mod table;
pub mod window;

pub use peers::Peer;
pub use region::Region;
pub use table::{CounterKey, CounterTable, SlotRef, TableFull};
pub use window::{Granularity, WindowState, BUCKETS};

/// Units counted for one call without `cost`.
pub const UNITS_PER_CALL: u64 = 1000;

/// Largest amount a bucket can hold (40 bits); `max` is validated to stay below it.
pub const MAX_UNITS: u64 = (1 << 40) - 1;

/// Convert a cost or max to units: exact for amounts written with up to three decimals
/// (2.007 is 2007 units, although `2.007 * 1000.0` is 2007.0000000000002), rounded up
/// otherwise so a finer cost never counts less than it is.
pub fn to_units(amount: f64) -> Option<u64> {
    if !amount.is_finite() || amount < 0.0 {
        return None;
    }
    let scaled = amount * UNITS_PER_CALL as f64;
    let nearest = scaled.round();
    // f64 keeps ~16 significant digits; a gap below 1e-9 relative is representation noise.
    let units = if (scaled - nearest).abs() <= nearest.max(1.0) * 1e-9 {
        nearest
    } else {
        scaled.ceil()
    };
    (units <= MAX_UNITS as f64).then_some(units as u64)
}

/// Convert units back to the policy's unit (calls or cost).
pub fn from_units(units: u64) -> f64 {
    units as f64 / UNITS_PER_CALL as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_are_exact_to_a_thousandth_and_round_finer_amounts_up() {
        assert_eq!(to_units(2.007), Some(2007));
        assert_eq!(to_units(497.993), Some(497_993));
        assert_eq!(to_units(0.0001), Some(1));
        assert_eq!(to_units(1e9), Some(1_000_000_000_000));
        assert_eq!(to_units(-1.0), None);
        assert_eq!(to_units(f64::NAN), None);
        for milli in 0..1_000_000u64 {
            assert_eq!(to_units(milli as f64 / 1000.0), Some(milli));
        }
    }
}
