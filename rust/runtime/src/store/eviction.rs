//! Whether Redis may evict the counter store's keys: the `maxmemory-policy` of the primary
//! `--store` names (docs/redis.md, "Memory").
//!
//! Only `noeviction` keeps every key. Counter keys and reservations carry expiries, so the
//! `volatile-*` policies evict them as readily as the `allkeys-*` ones, and a counter that is
//! evicted starts again from zero: a spent limit allows its calls again, unnoticed (the epoch
//! key has no expiry, so `volatile-*` never takes it, and the loss is not detected). The
//! sidecar reads the policy at start and then periodically (not per decision), on the server
//! the store would count on: the URL's, or the primary Sentinel names now, over TLS for
//! `rediss://`.

use super::link::Source;
use std::time::Duration;

/// The one policy under which Redis never evicts a key.
pub const NO_EVICTION: &str = "noeviction";

/// What one look at Redis found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reading {
    /// The policy, as Redis names it (`noeviction`, `volatile-ttl`, ...).
    Policy(String),
    /// Redis answered but would not say (`CONFIG` renamed or refused, `INFO` too): why.
    Unreadable(String),
    /// No answer (no connection, no primary, or none within the wait): why.
    Unreachable(String),
}

/// Read the `maxmemory-policy` of the primary `url` names, waiting at most `wait`. `CONFIG
/// GET` first; managed services often rename or refuse `CONFIG`, so then `INFO memory`'s
/// `maxmemory_policy`. An error only for a URL that is not a store's.
pub fn read_maxmemory_policy(url: &str, wait: Duration) -> Result<Reading, String> {
    let source = Source::parse(url)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start a runtime to read Redis's policy: {e}"))?;
    Ok(runtime.block_on(async {
        tokio::time::timeout(wait, read(&source))
            .await
            .unwrap_or_else(|_| Reading::Unreachable(format!("no answer within {wait:?}")))
    }))
}

async fn read(source: &Source) -> Reading {
    let unreachable = |e: redis::RedisError| Reading::Unreachable(e.to_string());
    let client = match source.primary().await {
        Ok(client) => client,
        Err(e) => return unreachable(e),
    };
    let mut connection = match client.get_multiplexed_async_connection().await {
        Ok(c) => c,
        Err(e) => return unreachable(e),
    };
    let config = redis::cmd("CONFIG")
        .arg("GET")
        .arg("maxmemory-policy")
        .query_async::<Vec<String>>(&mut connection)
        .await;
    let refused = match config {
        Ok(pair) => match <[String; 2]>::try_from(pair) {
            Ok([_, policy]) => return Reading::Policy(policy),
            Err(pair) => format!("CONFIG GET maxmemory-policy answered {pair:?}"),
        },
        Err(e) if is_lost(&e) => return unreachable(e),
        Err(e) => format!("CONFIG GET maxmemory-policy: {e}"),
    };
    match redis::cmd("INFO")
        .arg("memory")
        .query_async::<String>(&mut connection)
        .await
    {
        Ok(info) => match info
            .lines()
            .find_map(|line| line.strip_prefix("maxmemory_policy:"))
        {
            Some(policy) => Reading::Policy(policy.trim().to_owned()),
            None => Reading::Unreadable(format!("{refused}; INFO memory has no maxmemory_policy")),
        },
        Err(e) if is_lost(&e) => unreachable(e),
        Err(e) => Reading::Unreadable(format!("{refused}; INFO memory: {e}")),
    }
}

/// The connection failed, as opposed to Redis refusing the command.
fn is_lost(e: &redis::RedisError) -> bool {
    e.is_io_error() || e.is_timeout() || e.is_connection_dropped() || e.is_connection_refusal()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_that_is_not_a_store_is_an_error_and_a_closed_port_unreachable() {
        let err = read_maxmemory_policy("redis+sentinel://h1:26379", Duration::from_secs(1));
        assert!(err.unwrap_err().contains("expected redis+sentinel://"));
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let url = format!("redis://127.0.0.1:{port}/0");
        let reading = read_maxmemory_policy(&url, Duration::from_secs(5)).unwrap();
        assert!(matches!(reading, Reading::Unreachable(_)), "{reading:?}");
    }
}
