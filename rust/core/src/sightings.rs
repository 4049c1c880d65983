//! The tool definitions servers last listed, per server: what a call is checked against
//! where a policy holds the server to pins, and where a policy reads a tool's title and
//! annotations. Written when a `tools/list` answer passes the sidecar, read by decisions.
//!
//! Kept per process: another replica knows only the lists that passed it (docs/policy.md,
//! "Pinned tool definitions"). Bounded: a server that lists ever new tools fills
//! [`MAX_SIGHTINGS`] and no more; a tool not recorded is judged by its pin alone.

use crate::definition::Definition;
use ahash::AHashMap;
use std::sync::{Arc, RwLock};

/// Most definitions kept, over every server.
pub const MAX_SIGHTINGS: usize = 65_536;

/// What listing one tool changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// Listed as it was last time.
    Same,
    /// Listed for the first time, or differently from last time.
    New,
    /// Not recorded: the table is full.
    Unrecorded,
}

#[derive(Default)]
pub struct Sightings(RwLock<Table>);

#[derive(Default)]
struct Table {
    /// Server (`""` for calls that name none) → tool → its definition as last listed.
    servers: AHashMap<Box<str>, AHashMap<Box<str>, Arc<Definition>>>,
    /// Definitions kept, over every server.
    count: usize,
}

impl Sightings {
    /// `tool` of `server` as last listed.
    pub fn get(&self, server: Option<&str>, tool: &str) -> Option<Arc<Definition>> {
        let table = self.0.read().unwrap_or_else(|e| e.into_inner());
        table.servers.get(server.unwrap_or(""))?.get(tool).cloned()
    }

    /// Record `tool` of `server` as just listed.
    pub fn record(&self, server: Option<&str>, tool: &str, definition: &Definition) -> Seen {
        if self.get(server, tool).is_some_and(|d| *d == *definition) {
            return Seen::Same;
        }
        let mut table = self.0.write().unwrap_or_else(|e| e.into_inner());
        let Table { servers, count } = &mut *table;
        // Looked at again under the lock: of two lists racing, one records the change.
        match servers.get(server.unwrap_or("")).and_then(|t| t.get(tool)) {
            Some(d) if **d == *definition => return Seen::Same,
            Some(_) => {}
            None if *count >= MAX_SIGHTINGS => return Seen::Unrecorded,
            None => *count += 1,
        }
        servers
            .entry(server.unwrap_or("").into())
            .or_default()
            .insert(tool.into(), Arc::new(definition.clone()));
        Seen::New
    }
}
