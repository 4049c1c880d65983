//! What the filter configurations in Envoy's process share while any of them holds it. Envoy
//! makes a filter configuration for each listener that names the module, and a new one beside
//! the old when a listener is updated: the counter table, the answers' budget, the known lists,
//! a decision log's writer and the grants' key are the process's, as they are `toolgate
//! serve`'s, so that a limit is not counted once per listener nor starts again on an update.

use std::sync::{Arc, Mutex, OnceLock, Weak};
use toolgate_core::counter::CounterTable;
use toolgate_core::mcp::known_answers::KnownAnswers;
use toolgate_server::held::HeldBytes;

/// Values by key, each kept while a configuration holds it.
pub struct Shared<K, V> {
    open: Mutex<Vec<(K, Weak<V>)>>,
}

impl<K: PartialEq, V> Shared<K, V> {
    pub const fn new() -> Self {
        Shared {
            open: Mutex::new(Vec::new()),
        }
    }

    /// The value under `key` while one is held, else the one `make` makes.
    pub fn get_or<E>(&self, key: K, make: impl FnOnce() -> Result<V, E>) -> Result<Arc<V>, E> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        open.retain(|(_, v)| v.strong_count() > 0);
        if let Some(held) = open
            .iter()
            .find(|(k, _)| *k == key)
            .and_then(|(_, v)| v.upgrade())
        {
            return Ok(held);
        }
        let made = Arc::new(make()?);
        open.push((key, Arc::downgrade(&made)));
        Ok(made)
    }
}

/// The counter tables, by their size (capacity, reservations): configurations that ask for
/// the same share one.
static TABLES: Shared<(usize, usize), CounterTable> = Shared::new();

/// The process's counter table of `capacity` counters and `reservations` reservations.
pub fn counter_table(capacity: usize, reservations: usize) -> Result<Arc<CounterTable>, String> {
    TABLES.get_or((capacity, reservations), || {
        CounterTable::try_new(capacity, reservations)
    })
}

/// What the process's followers of answers may hold at once.
pub fn budget() -> Arc<HeldBytes> {
    static BUDGET: OnceLock<Arc<HeldBytes>> = OnceLock::new();
    BUDGET
        .get_or_init(|| HeldBytes::new(HeldBytes::LIMIT))
        .clone()
}

/// The `tools/list` answers the process read last.
pub fn known_answers() -> Arc<KnownAnswers> {
    static KNOWN: OnceLock<Arc<KnownAnswers>> = OnceLock::new();
    KNOWN.get_or_init(Arc::default).clone()
}

/// The process's own key, for configurations given no key file: grants are labelled alike
/// across listeners (a restart labels them anew).
pub fn own_key() -> Result<Vec<u8>, String> {
    static KEY: OnceLock<Result<Vec<u8>, String>> = OnceLock::new();
    KEY.get_or_init(|| {
        let mut key = vec![0; 32];
        getrandom::fill(&mut key).map_err(|e| format!("no random key: {e}"))?;
        Ok(key)
    })
    .clone()
}
