//! A member of a small object, found by comparing keys instead of hashing them.
//!
//! serde_json keeps an object's members in order in a map that hashes every key it looks up
//! with SipHash: about 450 instructions a lookup, a request's handful of them a fifth of
//! reading and deciding a small `tools/call` (bench/RESULTS.md). The objects a request's
//! envelope is made of hold a few short keys, which compare in tens of instructions.

use serde_json::{Map, Value};

/// Objects with at most this many members are searched in order; larger ones through their
/// hash.
const SEARCHED_IN_ORDER: usize = 8;

/// Members of an object, looked up by key.
pub trait Fields {
    /// The member `key`, if the object has it.
    fn field(&self, key: &str) -> Option<&Value>;

    /// Whether the object has a member `key`.
    fn has(&self, key: &str) -> bool {
        self.field(key).is_some()
    }
}

impl Fields for Map<String, Value> {
    #[inline]
    fn field(&self, key: &str) -> Option<&Value> {
        if self.len() <= SEARCHED_IN_ORDER {
            self.iter().find_map(|(k, v)| (k == key).then_some(v))
        } else {
            self.get(key)
        }
    }
}

/// The member `key` of `object`, taken out of it; the others are dropped.
pub fn take(object: Map<String, Value>, key: &str) -> Option<Value> {
    object
        .into_iter()
        .find_map(|(k, v)| (k == key).then_some(v))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Whatever the object's size, a member is found as the map's own lookup finds it.
        #[test]
        fn finds_what_the_map_finds(
            keys in proptest::collection::vec("[a-cA-C_]{0,3}", 0..20),
            key in "[a-cA-C_]{0,3}",
        ) {
            let object: Map<String, Value> =
                keys.iter().enumerate().map(|(i, k)| (k.clone(), Value::from(i))).collect();
            prop_assert_eq!(object.field(&key), object.get(&key));
            prop_assert_eq!(object.has(&key), object.contains_key(&key));
            prop_assert_eq!(take(object.clone(), &key), object.get(&key).cloned());
        }
    }
}
