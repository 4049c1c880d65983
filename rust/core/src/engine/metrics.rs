//! What the engine reports to the metrics exporter: every family whose numbers it keeps
//! (decisions, the counter table, the decision log, the store, list filtering, drift).

use super::Engine;
use crate::observing::metrics::{Buckets, Family, MetricKind};

use MetricKind::{Counter, Gauge};

impl Engine {
    /// The engine's metric families, read now.
    pub fn metrics(&self) -> Vec<Family> {
        let mut families = self.decided();
        families.extend(self.counted());
        families.extend(self.logged());
        families.extend(self.listed());
        families
    }

    /// Decisions: by API, verdict and code, per tool when asked for, their time, the policy.
    fn decided(&self) -> Vec<Family> {
        let stats = self.stats();
        let decisions = (stats.decisions().into_iter())
            .map(|(api, v, c, n)| {
                let labels = [api.as_str(), v.as_str(), c.as_str()];
                (labels.map(String::from).to_vec(), n as f64)
            })
            .collect();
        let errors = (stats.errors().into_iter())
            .map(|(api, status, n)| (vec![api.as_str().into(), status.into()], n as f64))
            .collect();
        let mut families = vec![
            Family::labelled(
                Counter,
                "toolgate_decisions",
                "Decisions made, by the API that asked (decider, ext_authz, ratelimit, extmcp; \
                 envoy_module: toolgate inside Envoy; engine: in-process), verdict and code.",
                &["api", "verdict", "code"],
                decisions,
            ),
            Family::labelled(
                Counter,
                "toolgate_grpc_errors",
                "Calls answered with a gRPC error, by API (decider, ext_authz, ratelimit, \
                 ext_proc, extmcp) and status (INVALID_ARGUMENT, DEADLINE_EXCEEDED, \
                 RESOURCE_EXHAUSTED...).",
                &["api", "status"],
                errors,
            ),
            Family::histogram(
                "toolgate_decision_duration_seconds",
                "Time to serve one decision request in the core: decode, decide, encode.",
                Buckets::from(stats.durations()),
            ),
            Family::labelled(
                Gauge,
                "toolgate_policy_info",
                "The loaded policy's revision.",
                &["revision"],
                vec![(vec![self.policy().revision.to_string()], 1.0)],
            ),
            Family::one(
                Counter,
                "toolgate_confirmed_calls",
                "Calls that ran on their user's confirmation in their MCP client \
                 (require_confirmation); the questions and refusals are \
                 toolgate_decisions_total's CONFIRMATION_* codes.",
                stats.confirmed() as f64,
            ),
        ];
        if stats.per_tool_enabled() {
            let per_tool = (stats.per_tool().into_iter())
                .map(|(tool, v, n)| (vec![tool, v.as_str().into()], n as f64))
                .collect();
            families.push(Family::labelled(
                Counter,
                "toolgate_tool_decisions",
                "Decisions per tool and verdict (opt-in: --metrics-per-tool).",
                &["tool", "verdict"],
                per_tool,
            ));
        }
        families
    }

    /// Where calls are counted: the counter table, and the store when there is one.
    fn counted(&self) -> Vec<Family> {
        let (stats, table) = (self.stats(), self.table());
        let store_errors = (stats.store_errors().iter())
            .map(|(kind, n)| (vec![kind.as_str().into()], *n as f64))
            .collect();
        vec![
            Family::one(
                Gauge,
                "toolgate_counter_table_slots_used",
                "Counter-table slots holding a key (live, or expired and not yet reused).",
                table.occupied() as f64,
            ),
            Family::one(
                Gauge,
                "toolgate_counter_table_client_slots",
                "Counter-table slots holding a key a client chose (an unverified credential, a \
                 session or agent id); at most half the table.",
                table.client_slots() as f64,
            ),
            Family::one(
                Gauge,
                "toolgate_vouched_grants",
                "Grants an MCP server accepted (answered their initialize or a list), with \
                 --grant-vouched-by-server: trusted with the table's and approvals' room.",
                self.vouched_grants() as f64,
            ),
            Family::one(
                Gauge,
                "toolgate_counter_table_slots_capacity",
                "Counter-table slots in all.",
                table.capacity() as f64,
            ),
            Family::one(
                Counter,
                "toolgate_counter_table_full",
                "Calls denied because the counter table had no free slot.",
                stats.table_full() as f64,
            ),
            Family::one(
                Counter,
                "toolgate_counter_table_peer_refusals",
                "New keys a client chose refused because the share for them was three quarters \
                 taken and the request's network address held its part of it.",
                table.peer_full_events() as f64,
            ),
            Family::histogram(
                "toolgate_store_round_trip_seconds",
                "Round trips to the counter store (--store redis://...) that answered in time.",
                Buckets::from(stats.store_round_trips()),
            ),
            Family::labelled(
                Counter,
                "toolgate_store_errors",
                "Counter-store calls that failed, by kind: timeout (no answer within \
                 --store-timeout-ms), connection, reply.",
                &["kind"],
                store_errors,
            ),
            Family::one(
                Counter,
                "toolgate_store_fallbacks",
                "Decisions counted in this pod's own table because the counter store was \
                 unavailable (--store-unavailable local).",
                stats.store_fallbacks() as f64,
            ),
        ]
    }

    /// The decision log: lines written, dropped, and waiting for the writer.
    fn logged(&self) -> Vec<Family> {
        let stats = self.stats();
        let (queued, queued_bytes) = self.decision_log().map_or((0, 0), |l| l.queued());
        vec![
            Family::one(
                Counter,
                "toolgate_decision_log_lines",
                "Decisions handed to the decision log (--decision-log).",
                stats.logged() as f64,
            ),
            Family::one(
                Counter,
                "toolgate_decision_log_dropped",
                "Decisions the decision log dropped because the disk could not keep up.",
                stats.log_dropped() as f64,
            ),
            Family::one(
                Gauge,
                "toolgate_decision_log_queued",
                "Decision-log lines waiting for the writer.",
                queued as f64,
            ),
            Family::one(
                Gauge,
                "toolgate_decision_log_queued_bytes",
                "Bytes of the decision-log lines waiting for the writer.",
                queued_bytes as f64,
            ),
        ]
    }

    /// Answers followed on their way back: lists filtered, tools that drift from their pins,
    /// reservations given back for calls that failed.
    fn listed(&self) -> Vec<Family> {
        let stats = self.stats();
        let (filtered, refused, unlisted) = stats.lists();
        let drift = (stats.drift().into_iter())
            .map(|(server, tool, kind, n)| (vec![server, tool, kind.as_str().into()], n as f64))
            .collect();
        let released = (stats.released_on_failure().iter())
            .map(|(failure, n)| (vec![(*failure).into()], *n as f64))
            .collect();
        vec![
            Family::labelled(
                Counter,
                "toolgate_tool_lists",
                "tools/list answers filtered on their way to the agent (Envoy's ext_proc, \
                 agentgateway's ExtMCP): filtered for their caller, or refused (unreadable; \
                 the agent got a JSON-RPC error).",
                &["result"],
                vec![
                    (vec!["filtered".into()], filtered as f64),
                    (vec!["refused".into()], refused as f64),
                ],
            ),
            Family::one(
                Counter,
                "toolgate_tools_unlisted",
                "Tools taken out of tools/list answers: ones the caller can never call.",
                unlisted as f64,
            ),
            Family::labelled(
                Counter,
                "toolgate_tool_drift",
                "Listed tools that depart from their pins (the policy's pins): changed since \
                 pinned, or unpinned where unpinned tools are withheld; counted once per change \
                 of what the server lists. server is the policy's server id (empty: none \
                 named); a tool name MCP does not allow, or past 1000 rows, counts as _other \
                 (and a new server then too).",
                &["server", "tool", "kind"],
                drift,
            ),
            Family::labelled(
                Counter,
                "toolgate_reservations_released_on_failure",
                "Reservations given back because the call failed upstream, by how it failed: \
                 http_status (>= 400), jsonrpc_error, tool_error (isError).",
                &["failure"],
                released,
            ),
        ]
    }
}
