//! The tool definitions servers last listed, per server: what a call is checked against
//! where a policy holds the server to pins, and where a policy reads a tool's title and
//! annotations. Written when a `tools/list` answer passes the sidecar, read by decisions.
//!
//! Kept per process: another replica knows only the lists that passed it (docs/policy.md,
//! "Pinned tool definitions"). Bounded, without evicting anything: a tool with a pin is
//! always kept (the pins file bounds how many there are), so no flood of other names can
//! leave a changed pinned tool judged by its pin alone. Other tools are kept up to
//! [`MAX_UNPINNED_PER_SERVER`] per server and [`MAX_SIGHTINGS`] in all, each with a server
//! id and name of at most [`MAX_KEY_BYTES`]; one not kept is judged as if never listed
//! (unpinned, with MCP's default hints).

use crate::definition::Definition;
use ahash::AHashMap;
use std::sync::{Arc, RwLock};

/// Most definitions of tools without a pin kept, over every server.
pub const MAX_SIGHTINGS: usize = 65_536;
/// Most definitions of tools without a pin kept for one server: a server that lists ever
/// new names leaves room for the others'.
pub const MAX_UNPINNED_PER_SERVER: usize = 4_096;
/// Longest server id and tool name, together, kept for a tool without a pin (MCP's tool
/// names are at most 128 characters): what a server chooses is kept for the life of the
/// process, so it is kept small.
pub const MAX_KEY_BYTES: usize = 512;

/// What listing one tool changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// Listed as it was last time.
    Same,
    /// Listed for the first time, or differently from last time.
    New,
    /// Not recorded: no room for another tool without a pin.
    Unrecorded,
}

#[derive(Default)]
pub struct Sightings(RwLock<Table>);

#[derive(Default)]
struct Table {
    /// Calls that name no server: apart from a server whose id is `""`.
    unnamed: Server,
    named: AHashMap<Box<str>, Server>,
    /// Definitions of tools without a pin kept, over every server.
    unpinned: usize,
}

#[derive(Default)]
struct Server {
    /// Tool → its definition as last listed.
    tools: AHashMap<Box<str>, Arc<Definition>>,
    /// Of them, those recorded without a pin.
    unpinned: usize,
}

impl Table {
    fn server(&self, server: Option<&str>) -> Option<&Server> {
        match server {
            None => Some(&self.unnamed),
            Some(id) => self.named.get(id),
        }
    }
}

impl Sightings {
    /// `tool` of `server` as last listed.
    pub fn get(&self, server: Option<&str>, tool: &str) -> Option<Arc<Definition>> {
        let table = self.0.read().unwrap_or_else(|e| e.into_inner());
        table.server(server)?.tools.get(tool).cloned()
    }

    /// Record `tool` of `server` as just listed; `pinned` when the server's pins hold a pin
    /// for it.
    pub fn record(
        &self,
        server: Option<&str>,
        tool: &str,
        definition: &Definition,
        pinned: bool,
    ) -> Seen {
        if self.get(server, tool).is_some_and(|d| *d == *definition) {
            return Seen::Same;
        }
        let mut table = self.0.write().unwrap_or_else(|e| e.into_inner());
        // Looked at again under the lock: of two lists racing, one records the change.
        let known = table.server(server).and_then(|s| s.tools.get(tool));
        let new = match known {
            Some(d) if **d == *definition => return Seen::Same,
            Some(_) => false,
            None => true,
        };
        let counted = new && !pinned;
        if counted {
            let key_bytes = server.map_or(0, str::len) + tool.len();
            let server_full = table
                .server(server)
                .is_some_and(|s| s.unpinned >= MAX_UNPINNED_PER_SERVER);
            if key_bytes > MAX_KEY_BYTES || server_full || table.unpinned >= MAX_SIGHTINGS {
                return Seen::Unrecorded;
            }
            table.unpinned += 1;
        }
        let entry = match server {
            None => &mut table.unnamed,
            Some(id) => table.named.entry(id.into()).or_default(),
        };
        entry.unpinned += usize::from(counted);
        entry
            .tools
            .insert(tool.into(), Arc::new(definition.clone()));
        Seen::New
    }
}
