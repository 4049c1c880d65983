//! Review measurement: with the client-chosen half full of live keys, one new made-up key a
//! second makes the table sweep every slot under the insert lock (which every new key, trusted
//! or not, waits for). How long one sweep takes at `--capacity 1048576`.

use std::sync::Arc;
use std::time::Instant;
use toolgate_core::counter::{CounterKey, CounterTable, Granularity};

#[test]
#[ignore = "review measurement: cargo test --release --test review_counter_sweep -- --ignored --nocapture"]
fn one_sweep_of_a_full_client_share() {
    let cap = 1 << 20;
    let table = Arc::new(CounterTable::new(cap, 1024));
    let g = Granularity::for_window_ms(86_400_000); // a daily limit: the flood's keys stay live
    let t0 = 1_000_000_000_000u64;
    let made_up =
        |i: usize| CounterKey::new(7, format!("tok-{i}").as_bytes(), g).chosen_by_client(true);
    let started = Instant::now();
    let mut i = 0;
    while table.client_slots() < table.client_cap() {
        if let Ok(s) = table.find_or_insert(&made_up(i), t0) {
            table
                .slot(s)
                .reserve(made_up(i).hash, g, t0, 1, 10)
                .unwrap();
        }
        i += 1;
    }
    eprintln!(
        "filled {} client slots in {:?}",
        table.client_slots(),
        started.elapsed()
    );
    let mut worst = std::time::Duration::ZERO;
    for second in 1..=5u64 {
        let now = t0 + second * 1_000_000_000;
        let started = Instant::now();
        let r = table.find_or_insert(&made_up(10_000_000 + second as usize), now);
        let took = started.elapsed();
        worst = worst.max(took);
        eprintln!("sweep {second}: {:?} (insert {:?})", took, r.is_ok());
        // A trusted key arriving during the sweep waits for the insert lock.
        let trusted = CounterKey::new(8, format!("global-{second}").as_bytes(), g);
        let started = Instant::now();
        assert!(table.find_or_insert(&trusted, now).is_ok());
        eprintln!("  trusted insert after it: {:?}", started.elapsed());
    }
    eprintln!("worst sweep: {worst:?}");
}
