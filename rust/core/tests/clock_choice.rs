//! `TOOLGATE_CLOCK=monotonic` turns the TSC off. The choice is made once per process, so
//! this file is its own test binary with this one test.

use toolgate_core::{Clock, MonotonicClock, TscClock};

#[test]
fn toolgate_clock_monotonic_reads_clock_gettime() {
    std::env::set_var("TOOLGATE_CLOCK", "monotonic");
    let clock = TscClock::new();
    assert!(!clock.uses_tsc());
    let before = MonotonicClock.now_ns();
    let t = clock.now_ns();
    assert!(t >= before && t <= MonotonicClock.now_ns());
}
