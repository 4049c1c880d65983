//! CLOCK_MONOTONIC's time, read from the CPU's time-stamp counter between anchorings.
//!
//! Every decision that counts reads the clock once. Through the vDSO, `clock_gettime`
//! costs about 30 ns on the benchmark machine (a serialising `rdtscp`, the kernel's
//! sequence lock, a scale), an eighth of a decision; a bare `rdtsc` and a multiply cost
//! under half of that. So each thread anchors to CLOCK_MONOTONIC, learns the counter's rate
//! from its own anchors, and extrapolates for at most [`ANCHOR_EVERY_NS`] before anchoring
//! again. Its readings stay within a few hundred nanoseconds of CLOCK_MONOTONIC, so every
//! process and thread still agrees on time far better than the shortest counter bucket
//! (83 µs, for a 1 ms window), and the counters already take the newest of their own time
//! and a caller's.
//!
//! The counter is used only when the kernel itself keeps time with it (the clocksource is
//! `tsc`), which means it is invariant and synchronised across CPUs; otherwise, and off
//! x86-64, every reading is `clock_gettime`. Readings never go backwards on one thread.

use crate::clock::{Clock, MonotonicClock};
use std::cell::Cell;
use std::sync::OnceLock;

/// Longest a thread extrapolates before anchoring again.
pub const ANCHOR_EVERY_NS: u64 = 1_000_000;
/// Shortest span of anchors the rate is learned from; until then every reading anchors.
/// With anchors read to within ~100 ns, 10 ms gives the rate to 1e-5, so extrapolating
/// for [`ANCHOR_EVERY_NS`] errs by at most ~10 ns.
pub const LEARN_RATE_OVER_NS: u64 = 10_000_000;

/// One thread's anchors and learned rate. Pure arithmetic, so tests drive it with made-up
/// counters.
#[derive(Debug, Clone, Copy)]
pub struct Calibration {
    /// The first anchor: the rate is learned over the span since it.
    base: Option<(u64, u64)>,
    /// The latest anchor, `(ticks, ns)`.
    anchor: (u64, u64),
    /// Nanoseconds per tick, in 32.32 fixed point; 0 until learned.
    ns_per_tick: u64,
    /// Ticks after the anchor that extrapolation is trusted for.
    anchor_span_ticks: u64,
    /// The latest reading, so none goes back.
    last_ns: u64,
}

impl Default for Calibration {
    fn default() -> Calibration {
        Calibration::new()
    }
}

impl Calibration {
    pub const fn new() -> Calibration {
        Calibration {
            base: None,
            anchor: (0, 0),
            ns_per_tick: 0,
            anchor_span_ticks: 0,
            last_ns: 0,
        }
    }

    /// The time at counter value `ticks`; `monotonic` is called (with no other work
    /// between it and reading `ticks`) when the reading anchors.
    #[inline]
    pub fn now_ns(&mut self, ticks: u64, monotonic: impl FnOnce() -> u64) -> u64 {
        let since = ticks.wrapping_sub(self.anchor.0);
        // A counter that went back shows as a huge `since` and anchors.
        let ns = if since < self.anchor_span_ticks {
            self.anchor.1 + ((u128::from(since) * u128::from(self.ns_per_tick)) >> 32) as u64
        } else {
            self.anchor(ticks, monotonic())
        };
        self.last_ns = self.last_ns.max(ns);
        self.last_ns
    }

    #[cold]
    fn anchor(&mut self, ticks: u64, ns: u64) -> u64 {
        let (base_ticks, base_ns) = *self.base.get_or_insert((ticks, ns));
        match (ticks.checked_sub(base_ticks), ns.checked_sub(base_ns)) {
            (Some(span_ticks), Some(span_ns))
                if span_ticks > 0 && span_ns >= LEARN_RATE_OVER_NS =>
            {
                let rate = (u128::from(span_ns) << 32) / u128::from(span_ticks);
                self.ns_per_tick = u64::try_from(rate).unwrap_or(0);
            }
            // Still learning, or this is the first anchor.
            (Some(span_ticks), Some(_)) if span_ticks > 0 => {}
            _ if (ticks, ns) == (base_ticks, base_ns) => {}
            // The counter went back (or stood still) against the kernel's clock: start over.
            _ => {
                self.base = Some((ticks, ns));
                self.ns_per_tick = 0;
            }
        }
        self.anchor = (ticks, ns);
        self.anchor_span_ticks = match self.ns_per_tick {
            0 => 0,
            rate => ((u128::from(ANCHOR_EVERY_NS) << 32) / u128::from(rate))
                .try_into()
                .unwrap_or(0),
        };
        ns
    }
}

thread_local! {
    static CALIBRATION: Cell<Calibration> = const { Cell::new(Calibration::new()) };
}

/// The clock engines use unless given another.
#[derive(Debug, Clone, Copy)]
pub struct TscClock {
    tsc: bool,
}

impl Default for TscClock {
    fn default() -> TscClock {
        TscClock::new()
    }
}

impl TscClock {
    pub fn new() -> TscClock {
        TscClock {
            tsc: kernel_times_with_tsc(),
        }
    }

    /// Whether readings come from the time-stamp counter (else from `clock_gettime`).
    pub fn uses_tsc(&self) -> bool {
        self.tsc
    }
}

impl Clock for TscClock {
    #[inline]
    fn now_ns(&self) -> u64 {
        if self.tsc {
            if let Ok(ns) = CALIBRATION.try_with(|c| {
                let mut cal = c.get();
                let ns = cal.now_ns(read_tsc(), || MonotonicClock.now_ns());
                c.set(cal);
                ns
            }) {
                return ns;
            }
        }
        MonotonicClock.now_ns()
    }
}

#[cfg(target_arch = "x86_64")]
#[inline]
fn read_tsc() -> u64 {
    // SAFETY: rdtsc has no preconditions; it is only used when the kernel keeps time with it.
    unsafe { core::arch::x86_64::_rdtsc() }
}

#[cfg(not(target_arch = "x86_64"))]
fn read_tsc() -> u64 {
    unreachable!("the TSC is only used on x86-64")
}

/// True when the kernel's clocksource is the TSC (read once per process).
fn kernel_times_with_tsc() -> bool {
    static TSC: OnceLock<bool> = OnceLock::new();
    *TSC.get_or_init(|| {
        cfg!(target_arch = "x86_64")
            && std::env::var_os("TOOLGATE_CLOCK").is_none_or(|v| v != "monotonic")
            && std::fs::read_to_string(
                "/sys/devices/system/clocksource/clocksource0/current_clocksource",
            )
            .is_ok_and(|s| s.trim() == "tsc")
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A made-up machine: the counter runs at `ticks_per_ns` from `offset`, and the
    /// kernel's clock is read `late_ns` after the counter.
    struct Machine {
        ticks_per_ns: f64,
        offset: u64,
    }

    impl Machine {
        fn ticks(&self, ns: u64) -> u64 {
            self.offset + (ns as f64 * self.ticks_per_ns) as u64
        }
    }

    #[test]
    fn reads_the_kernel_clock_until_the_rate_is_learned_then_extrapolates() {
        let m = Machine {
            ticks_per_ns: 2.5,
            offset: 1 << 40,
        };
        let mut cal = Calibration::default();
        let calls = Cell::new(0);
        let mut read = |ns: u64| {
            cal.now_ns(m.ticks(ns), || {
                calls.set(calls.get() + 1);
                ns
            })
        };
        assert_eq!(read(5_000), 5_000);
        assert_eq!(read(6_000), 6_000);
        assert_eq!(
            calls.get(),
            2,
            "every reading anchors until the rate is known"
        );
        // Past the learning span: anchors once, then extrapolates for a millisecond.
        let t = 5_000 + LEARN_RATE_OVER_NS;
        assert_eq!(read(t), t);
        let before = calls.get();
        for step in 1..100 {
            let ns = t + step * 9_000;
            let got = read(ns);
            assert!(got.abs_diff(ns) <= 2, "{got} vs {ns}");
        }
        assert_eq!(
            calls.get(),
            before,
            "no kernel reads inside the anchor span"
        );
        assert_eq!(read(t + ANCHOR_EVERY_NS + 1), t + ANCHOR_EVERY_NS + 1);
        assert_eq!(calls.get(), before + 1, "and one just past it");
    }

    #[test]
    fn a_counter_that_goes_back_anchors_again_and_time_does_not() {
        let mut cal = Calibration::default();
        cal.now_ns(1_000, || 1_000);
        cal.now_ns(1_000 + 3 * LEARN_RATE_OVER_NS, || {
            1_000 + LEARN_RATE_OVER_NS
        });
        // The counter restarted (a resumed VM); the kernel's clock went on.
        let after = cal.now_ns(10, || 2 * LEARN_RATE_OVER_NS);
        assert_eq!(after, 2 * LEARN_RATE_OVER_NS);
        // The rate is learned afresh, so the next reading asks the kernel again.
        let mut asked = false;
        cal.now_ns(20, || {
            asked = true;
            2 * LEARN_RATE_OVER_NS + 5
        });
        assert!(asked);
    }

    #[test]
    fn the_real_clock_stays_with_clock_monotonic() {
        let clock = TscClock::new();
        // Generous against rate error; a late thread only widens the bracket.
        const SLACK_NS: u64 = 20_000;
        let mut last = 0;
        for i in 0..200_000u64 {
            let before = MonotonicClock.now_ns();
            let t = clock.now_ns();
            let after = MonotonicClock.now_ns();
            assert!(
                t + SLACK_NS >= before && t <= after + SLACK_NS,
                "{before} {t} {after}"
            );
            assert!(t >= last);
            last = t;
            if i % 50_000 == 0 {
                std::thread::sleep(std::time::Duration::from_millis(3));
            }
        }
    }

    proptest! {
        /// For any rate, start and spacing of readings, with the kernel's clock read up to
        /// 200 ns after the counter: readings never go back and stay within 300 ns of the
        /// kernel's clock.
        #[test]
        fn stays_close_and_never_goes_back(
            ticks_per_ns in 0.3f64..5.0,
            offset in 0u64..(1 << 50),
            start in 0u64..(1 << 40),
            gaps in prop::collection::vec(
                prop_oneof![0u64..2_000, 0u64..2_000_000, 0u64..50_000_000],
                1..400,
            ),
            lateness in prop::collection::vec(0u64..200, 400),
        ) {
            let m = Machine { ticks_per_ns, offset };
            let mut cal = Calibration::default();
            let (mut ns, mut last) = (start, 0);
            for (i, gap) in gaps.iter().enumerate() {
                ns += gap;
                let late = lateness[i];
                let got = cal.now_ns(m.ticks(ns), || ns + late);
                prop_assert!(got >= last);
                last = got;
                prop_assert!(got.abs_diff(ns) <= 300, "{} vs {}", got, ns);
            }
        }
    }
}
