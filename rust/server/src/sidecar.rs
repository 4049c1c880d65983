//! The sidecar, assembled once from one [`Options`] value: the engine and where it counts,
//! its decision log and approvals, and the server that answers on them. `toolgate serve`
//! (Python) hands it the options and keeps the control plane (policy reloads, metrics,
//! signals, the approvals' durable store); any Rust program can assemble the same sidecar.
//!
//! Assembly and serving are two steps, so that the owner can put its house in order (the
//! approvals' reconcile with their durable store) before the first call is decided.

use crate::authzen_listener::{AuthZenListener, AuthZenOptions};
use crate::native::{Config, Server};
use crate::spans::{Spans, TraceOptions};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use toolgate_core::asking::approval::ApprovalSettings;
use toolgate_core::counter::CounterTable;
use toolgate_core::mcp::known_answers::KnownAnswers;
use toolgate_core::observing::metrics::{
    Family,
    MetricKind::{Counter, Gauge},
};
use toolgate_core::{Clock, Engine, Policy};
use toolgate_runtime::approvals::table::ApprovalTable;
use toolgate_runtime::approvals::{ApprovalEvents, Approvals};
use toolgate_runtime::decision_log::{self, DecisionLog};
use toolgate_runtime::store::{RedisConfig, RedisStore};

/// Where limits are counted.
pub enum Store {
    /// This process's table of atomics.
    Local,
    /// Redis, shared by every replica; waits up to `connect_wait` for the first connection.
    Redis {
        config: RedisConfig,
        connect_wait: Duration,
    },
}

/// Human approvals: the table's file (made with `capacity` slots if missing) and how they run.
pub struct ApprovalOptions {
    pub table: PathBuf,
    pub capacity: usize,
    pub settings: ApprovalSettings,
}

/// Everything a sidecar is made of.
pub struct Options {
    /// Counter-table slots and reservation-log entries.
    pub capacity: usize,
    pub reservations: usize,
    /// Count decisions per tool as well (`--metrics-per-tool`).
    pub per_tool_metrics: bool,
    pub store: Store,
    pub decision_log: Option<decision_log::Settings>,
    pub approvals: Option<ApprovalOptions>,
    /// What confirmation tokens are signed with (`--confirmation-secret`): replicas given the
    /// same accept each other's. `None`: a key of this sidecar's own.
    pub confirmation_secret: Option<Vec<u8>>,
    /// Let servers' answers vouch for grants (`--grant-vouched-by-server`).
    pub trust_server_answers: bool,
    /// How to serve; `None`: an engine with its parts, answering no one over the network.
    pub serve: Option<Config>,
    /// Where decisions' spans are exported (`--otlp-endpoint`); `None`: not traced.
    pub traces: Option<TraceOptions>,
    /// The AuthZEN listener (`--authzen-listen`); `None`: none.
    pub authzen: Option<AuthZenOptions>,
}

/// Why a sidecar could not be assembled or served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// The options are wrong.
    Invalid(String),
    /// A file or socket could not be opened.
    Io(String),
}

/// An assembled sidecar.
pub struct Sidecar {
    pub engine: Arc<Engine>,
    pub decision_log: Option<Arc<DecisionLog>>,
    pub approvals: Option<Arc<Approvals>>,
    /// News of approvals, for the control plane (taken once).
    approval_events: Mutex<Option<ApprovalEvents>>,
    /// A table file of another layout version that opening the approvals table set aside.
    pub approvals_set_aside: Option<PathBuf>,
    /// Whether the store's first connection was made (Redis; always true for the table).
    pub store_connected: bool,
    /// The Redis store, for the control plane to tell it what it learns of Redis.
    pub redis: Option<Arc<RedisStore>>,
    serve: Option<Config>,
    server: Mutex<Option<Server>>,
    authzen_options: Option<AuthZenOptions>,
    authzen: Mutex<Option<AuthZenListener>>,
    /// The `tools/list` answers the ext_proc service read last, so the same answer is not
    /// read again (kept across a stop and a new start).
    known_answers: Arc<KnownAnswers>,
    /// Decisions' spans, exported while the sidecar lives.
    spans: Option<Arc<Spans>>,
}

impl Sidecar {
    /// Where decisions' spans are exported, if they are (`--otlp-endpoint`).
    pub fn spans(&self) -> Option<Arc<Spans>> {
        self.spans.clone()
    }

    pub fn assemble(
        policy: Policy,
        options: Options,
        clock: Arc<dyn Clock>,
    ) -> Result<Sidecar, Error> {
        let table = CounterTable::try_new(options.capacity, options.reservations)
            .map_err(Error::Invalid)?;
        let table = Arc::new(table);
        let mut engine = Engine::builder(policy, Arc::clone(&table), clock);
        let (store_connected, redis) = match options.store {
            Store::Local => (true, None),
            Store::Redis {
                config,
                connect_wait,
            } => {
                // The table is where the store falls back to.
                let store =
                    RedisStore::connect(config, table, connect_wait).map_err(Error::Invalid)?;
                let (connected, store) = (store.connected(), Arc::new(store));
                engine = engine.store(store.clone());
                (connected, Some(store))
            }
        };
        let (mut approvals, mut approval_events, mut approvals_set_aside) = (None, None, None);
        if let Some(a) = options.approvals {
            let table = ApprovalTable::open_file(&a.table, a.capacity).map_err(Error::Io)?;
            approvals_set_aside = table.set_aside().map(|p| p.to_path_buf());
            let (desk, events) = Approvals::with_settings(Arc::new(table), a.settings);
            let desk = Arc::new(desk);
            engine = engine.approvals(desk.clone());
            approvals = Some(desk);
            approval_events = Some(events);
        }
        let decision_log = match options.decision_log {
            None => None,
            Some(settings) => {
                let path = settings.path.as_ref().map(|p| p.display().to_string());
                let log = DecisionLog::open(settings).map_err(|e| {
                    let path = path.unwrap_or_else(|| "-".to_owned());
                    Error::Io(format!("--decision-log {path}: cannot open it: {e}"))
                })?;
                let log = Arc::new(log);
                engine = engine.decision_log(log.clone());
                Some(log)
            }
        };
        if let Some(secret) = options.confirmation_secret.as_deref() {
            engine = engine.confirmation_secret(secret);
        }
        if options.trust_server_answers {
            engine = engine.trust_server_answers();
        }
        let spans = match &options.traces {
            None => None,
            Some(t) => Some(Arc::new(Spans::start(t).map_err(Error::Invalid)?)),
        };
        let engine = Arc::new(engine.build().map_err(Error::Invalid)?);
        engine.stats().set_per_tool(options.per_tool_metrics);
        Ok(Sidecar {
            engine,
            decision_log,
            approvals,
            approval_events: Mutex::new(approval_events),
            approvals_set_aside,
            store_connected,
            redis,
            serve: options.serve,
            server: Mutex::new(None),
            authzen_options: options.authzen,
            authzen: Mutex::new(None),
            known_answers: Arc::default(),
            spans,
        })
    }

    /// The approvals' news (once: the control plane's recorder drains it).
    pub fn take_approval_events(&self) -> Option<ApprovalEvents> {
        lock(&self.approval_events).take()
    }

    /// Bind and start answering calls (health says NOT_SERVING until [`Sidecar::set_serving`]);
    /// the address it listens on.
    pub fn serve(&self) -> Result<String, Error> {
        let config = self
            .serve
            .clone()
            .ok_or_else(|| Error::Invalid("no address to serve on".into()))?;
        let mut server = lock(&self.server);
        if server.is_some() {
            return Err(Error::Invalid("already serving".into()));
        }
        let known = Arc::clone(&self.known_answers);
        let spans = self.spans.clone();
        let threads = config.threads;
        let started =
            Server::start(self.engine.clone(), config, known, spans).map_err(Error::Io)?;
        if let Some(options) = &self.authzen_options {
            let listener = AuthZenListener::start(
                self.engine.clone(),
                options.clone(),
                self.spans.clone(),
                threads,
            )
            .map_err(Error::Io)?;
            *lock(&self.authzen) = Some(listener);
        }
        let address = started.address().to_owned();
        *server = Some(started);
        Ok(address)
    }

    /// The address the AuthZEN listener listens on, while it serves.
    pub fn authzen_address(&self) -> Option<String> {
        lock(&self.authzen).as_ref().map(|l| l.address().to_owned())
    }

    /// The sidecar's metric families: the engine's, and its ext_proc service's known answers.
    pub fn metrics(&self) -> Vec<Family> {
        let mut families = self.engine.metrics();
        let (kept, bytes) = self.known_answers.held();
        let held = lock(&self.server).as_ref().map_or(0, Server::held_bytes);
        families.extend([
            Family::one(
                Counter,
                "toolgate_tool_lists_recalled",
                "tools/list answers found among those read before (the same bytes but for the \
                 request's id) and so not read again.",
                self.known_answers.recalled() as f64,
            ),
            Family::one(
                Counter,
                "toolgate_tool_lists_judged_before",
                "List answers (of tools, resources, prompts) found among those read before \
                 whose entries were shown as when last judged under the same loaded policy for \
                 the same server, every caller's judgement of them being the same: not judged \
                 again.",
                self.known_answers.judged_before() as f64,
            ),
            Family::one(
                Gauge,
                "toolgate_held_bytes",
                "What the gRPC calls now open hold, charged to the budget for what callers \
                 hold (at most 144 MiB; docs/sidecar.md): the calls' shares, their messages, \
                 the answers ext_proc streams hold not yet whole.",
                held as f64,
            ),
            Family::one(
                Gauge,
                "toolgate_known_answers",
                "tools/list answers kept to be found again (at most 64).",
                kept as f64,
            ),
            Family::one(
                Gauge,
                "toolgate_known_answer_bytes",
                "Memory the kept tools/list answers hold: their bytes and what was read in \
                 them (at most 8 MiB).",
                bytes as f64,
            ),
        ]);
        families
    }

    /// Report SERVING or NOT_SERVING on grpc.health.v1 (calls are answered either way).
    pub fn set_serving(&self, serving: bool) {
        if let Some(server) = lock(&self.server).as_ref() {
            server.set_serving(serving);
        }
    }

    /// Stop accepting calls and wait up to `grace` for those in flight. Idempotent.
    pub fn stop(&self, grace: Duration) -> Result<(), String> {
        let server = lock(&self.server).take();
        let authzen = lock(&self.authzen).take();
        let stopped = server.map_or(Ok(()), |s| s.stop(grace));
        let stopped = stopped.and(authzen.map_or(Ok(()), |l| l.stop(grace)));
        // The last decisions' spans go out before the sidecar does.
        if let Some(spans) = &self.spans {
            spans.flush();
        }
        stopped
    }
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        let _ = self.stop(Duration::ZERO);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding the lock cannot leave what it guards half-changed: recover it.
    m.lock().unwrap_or_else(|p| p.into_inner())
}
