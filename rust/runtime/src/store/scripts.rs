//! The Lua scripts Redis runs atomically: the only code that changes counts on Redis, kept
//! in files of their own so a reviewer reads the atomic part in one place.

/// Reserve (or check) every limit of one call; see the module's documentation.
///
/// KEYS: epoch, lost, then one hash per limit (field: sub-bucket number, value: units), then
/// one per counter only read (a mark). ARGV: now in µs ('' for Redis's TIME), consume
/// ('1'/'0'), the epoch this replica knows (0: none), the reservation to add to ('0': a new
/// one), the key prefix, slack in ms, the number of counters only read, then per limit:
/// window µs, sub-bucket µs, max units, amount units; then per counter read: window µs,
/// sub-bucket µs.
///
/// Returns `{1, epoch, id, used, reset_us, ..., read...}` when reserved (or, without
/// consume or without limits, when every limit would fit; id 0), `{0, epoch, used,
/// reset_us, retry_us, ..., read...}` when some limit has no room (retry -1: never; 0: this
/// limit fits), each `read` 1 when that counter counts anything in its window, else 0;
/// `{2, epoch, index}` when a limit or read (its index after the limits') is within a
/// window of a loss of counts.
pub const RESERVE: &str = include_str!("scripts/reserve.lua");

/// Give reservation `KEYS[1]` back: each part's amount leaves its sub-bucket (if that still
/// holds it); the record is deleted, so a second release finds nothing. Returns {1} or {0}.
pub const RELEASE: &str = include_str!("scripts/release.lua");

/// Merge this replica's counts (`ARGV`: now µs, slack ms, then per key: window µs,
/// sub-bucket µs, the number of (sub-bucket, units) pairs, the pairs) into each key, and
/// return each key's newest sub-bucket and the 13 sub-buckets ending there.
pub const MERGE: &str = include_str!("scripts/merge.lua");
