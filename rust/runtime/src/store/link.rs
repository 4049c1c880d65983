//! The link to Redis: where the primary is (one address, or Sentinel's answer), the
//! connection the background runtime keeps, and reconnecting with backoff.

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::sentinel::{Sentinel, SentinelNodeConnectionInfo};
use redis::Script;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, RwLock};
use std::time::Duration;

pub(super) struct Link {
    pub(super) source: Source,
    pub(super) reserve: Arc<Script>,
    pub(super) release: Arc<Script>,
    /// How long one call waits for Redis.
    pub(super) budget: Duration,
    /// Bumped when the link is found dead, so every thread makes a new connection.
    pub(super) generation: AtomicU64,
    /// The client deciding threads connect with: `client` with its host name resolved
    /// by the background task, so no decision waits on DNS.
    pub(super) direct: RwLock<Option<redis::Client>>,
    /// The last round trip was slow or failed.
    pub(super) slow: AtomicBool,
    pub(super) connection: RwLock<Option<ConnectionManager>>,
    pub(super) reconnecting: AtomicBool,
    pub(super) timeouts: AtomicU32,
}

impl Link {
    /// Make a new connection in the background (unless one is being made), retrying with
    /// backoff from 50 ms to 2 s; decisions meanwhile find no connection. The primary is
    /// looked up again each time (Sentinel may have promoted another).
    pub(super) fn reconnect(link: &Arc<Link>, runtime: &tokio::runtime::Handle) {
        if link.reconnecting.swap(true, Relaxed) {
            return;
        }
        let link = Arc::clone(link);
        let budget = link.budget.max(Duration::from_millis(200));
        runtime.spawn(async move {
            let mut delay = Duration::from_millis(50);
            loop {
                if let Ok(Ok(client)) =
                    tokio::time::timeout(budget * 10, link.source.primary()).await
                {
                    if link.connect(&client, budget).await {
                        link.timeouts.store(0, Relaxed);
                        link.reconnecting.store(false, Relaxed);
                        return;
                    }
                }
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(2));
            }
        });
    }

    /// Connect to `client`, load the scripts and resolve its address: true when all done.
    async fn connect(&self, client: &redis::Client, budget: Duration) -> bool {
        let config = ConnectionManagerConfig::new()
            .set_number_of_retries(2)
            .set_factor(50)
            .set_max_delay(2000)
            .set_connection_timeout(budget * 5);
        let Ok(Ok(mut c)) = tokio::time::timeout(
            budget * 10,
            ConnectionManager::new_with_config(client.clone(), config),
        )
        .await
        else {
            return false;
        };
        // Load the scripts now, so a decision does not pay for it.
        let loaded = tokio::time::timeout(budget * 10, async {
            self.reserve.prepare_invoke().load_async(&mut c).await?;
            self.release.prepare_invoke().load_async(&mut c).await
        })
        .await;
        let direct = tokio::time::timeout(budget * 10, resolved(client)).await;
        let (Ok(Ok(_)), Ok(Some(direct))) = (loaded, direct) else {
            return false;
        };
        *self.direct.write().unwrap_or_else(|e| e.into_inner()) = Some(direct);
        *self.connection.write().unwrap_or_else(|e| e.into_inner()) = Some(c);
        true
    }

    /// Take the connection as dead: every thread's goes too, and a new one is made.
    pub(super) fn drop_connection(link: &Arc<Link>, runtime: &tokio::runtime::Handle) {
        *link.connection.write().unwrap_or_else(|e| e.into_inner()) = None;
        link.generation.fetch_add(1, Relaxed);
        Link::reconnect(link, runtime);
    }
}

/// Where the primary is: one address, or whichever server Sentinel names now.
pub(super) enum Source {
    Direct(redis::Client),
    Sentinel {
        sentinel: tokio::sync::Mutex<Sentinel>,
        service: String,
        node: SentinelNodeConnectionInfo,
    },
}

impl Source {
    pub(super) fn parse(url: &str) -> Result<Source, String> {
        let Some(rest) = url.strip_prefix("redis+sentinel://") else {
            return redis::Client::open(url)
                .map(Source::Direct)
                .map_err(|e| format!("--store {}: {e}", redact(url)));
        };
        let bad = |why: &str| {
            format!(
                "--store {}: {why}; expected \
                 redis+sentinel://[[USER]:PASSWORD@]HOST:PORT[,HOST:PORT...]/SERVICE[/DB]",
                redact(url)
            )
        };
        let (auth, rest) = match rest.rsplit_once('@') {
            Some((auth, rest)) => (Some(auth), rest),
            None => (None, rest),
        };
        let (hosts, path) = rest.split_once('/').ok_or_else(|| bad("no service name"))?;
        let mut path = path.split('/');
        let service = path
            .next()
            .filter(|s| !s.is_empty())
            .ok_or_else(|| bad("no service name"))?;
        let db = match path.next() {
            None | Some("") => 0,
            Some(db) => db
                .parse::<i64>()
                .map_err(|_| bad("the database is not a number"))?,
        };
        if path.next().is_some() {
            return Err(bad("too many path parts"));
        }
        let mut sentinels = Vec::new();
        for host in hosts.split(',') {
            match host.rsplit_once(':') {
                Some((h, p)) if !h.is_empty() && p.parse::<u16>().is_ok() => {
                    sentinels.push(format!("redis://{host}"))
                }
                _ => return Err(bad(&format!("{host:?} is not HOST:PORT"))),
            }
        }
        let (username, password) = match auth.map(|a| a.split_once(':')) {
            None => (None, None),
            Some(None) => return Err(bad("credentials are [USER]:PASSWORD")),
            Some(Some((user, password))) => (
                Some(user.to_owned()).filter(|u| !u.is_empty()),
                Some(password.to_owned()),
            ),
        };
        let sentinel = Sentinel::build(sentinels).map_err(|e| bad(&e.to_string()))?;
        Ok(Source::Sentinel {
            sentinel: tokio::sync::Mutex::new(sentinel),
            service: service.to_owned(),
            node: SentinelNodeConnectionInfo {
                tls_mode: None,
                redis_connection_info: Some(redis::RedisConnectionInfo {
                    db,
                    username,
                    password,
                    ..Default::default()
                }),
            },
        })
    }

    /// A client for the primary as of now.
    pub(super) async fn primary(&self) -> redis::RedisResult<redis::Client> {
        match self {
            Source::Direct(client) => Ok(client.clone()),
            Source::Sentinel {
                sentinel,
                service,
                node,
            } => {
                let mut sentinel = sentinel.lock().await;
                sentinel.async_master_for(service, Some(node)).await
            }
        }
    }
}

/// `client` with its host name looked up now (None: it does not resolve), for connections
/// made where a DNS wait must not happen.
async fn resolved(client: &redis::Client) -> Option<redis::Client> {
    let info = client.get_connection_info();
    let redis::ConnectionAddr::Tcp(host, port) = &info.addr else {
        return Some(client.clone());
    };
    let ip = tokio::net::lookup_host((host.as_str(), *port))
        .await
        .ok()?
        .next()?
        .ip();
    let info = redis::ConnectionInfo {
        addr: redis::ConnectionAddr::Tcp(ip.to_string(), *port),
        redis: info.redis.clone(),
    };
    redis::Client::open(info).ok()
}

pub(super) fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}***{}", &url[..scheme + 3], &url[at..])
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::Source;

    fn sentinel(url: &str) -> Result<(String, i64, Option<String>, Option<String>), String> {
        match Source::parse(url)? {
            Source::Sentinel { service, node, .. } => {
                let info = node.redis_connection_info.unwrap_or_default();
                Ok((service, info.db, info.username, info.password))
            }
            Source::Direct(_) => Err("not a sentinel source".into()),
        }
    }

    #[test]
    fn sentinel_urls_name_hosts_service_database_and_credentials() {
        let none = (None, None);
        let plain = sentinel("redis+sentinel://h1:26379,h2:26380/main/3").unwrap();
        assert_eq!(plain, ("main".into(), 3, none.0, none.1));
        let auth = sentinel("redis+sentinel://:s3cret@h1:26379/main").unwrap();
        assert_eq!(auth, ("main".into(), 0, None, Some("s3cret".into())));
        let user = sentinel("redis+sentinel://ops:pw@h1:26379/main/").unwrap();
        assert_eq!(
            user,
            ("main".into(), 0, Some("ops".into()), Some("pw".into()))
        );
    }

    #[test]
    fn malformed_sentinel_urls_are_refused_with_the_expected_form() {
        for url in [
            "redis+sentinel://h1:26379",
            "redis+sentinel://h1:26379/",
            "redis+sentinel://h1/main",
            "redis+sentinel://h1:port/main",
            "redis+sentinel://h1:26379,/main",
            "redis+sentinel://h1:26379/main/x",
            "redis+sentinel://h1:26379/main/0/extra",
            "redis+sentinel://user@h1:26379/main",
        ] {
            let err = sentinel(url).unwrap_err();
            assert!(err.contains("expected redis+sentinel://"), "{url}: {err}");
        }
        // A password never shows in the error.
        let err = sentinel("redis+sentinel://:s3cret@h1/main").unwrap_err();
        assert!(!err.contains("s3cret"), "{err}");
    }
}
