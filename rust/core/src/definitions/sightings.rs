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
//!
//! A list is mostly what the last one was: each definition is kept with what it was read
//! from (the tool's text as listed, or its object; up to [`MAX_SOURCE_WEIGHT`] a tool and
//! [`SOURCE_BUDGET`] in all), so a tool listed as last time is known by comparing bytes,
//! instead of being read into an object, written out as canonical JSON and digested again
//! (most of a pinned list's cost).

use super::definition::Definition;
use super::listed::ListedTool;
use ahash::AHashMap;
use serde_json::{Map, Number, Value};
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
/// Largest tool whose members are kept to know it when listed alike ([`weight`]): a larger
/// one is digested on every list.
pub const MAX_SOURCE_WEIGHT: usize = 16 * 1024;
/// Most weight of members kept over every tool: beyond it, tools are digested on every list.
pub const SOURCE_BUDGET: usize = 4 * 1024 * 1024;

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
pub struct Sightings {
    table: RwLock<Table>,
}

#[derive(Default)]
struct Table {
    /// Calls that name no server: apart from a server whose id is `""`.
    unnamed: Server,
    named: AHashMap<Box<str>, Server>,
    /// Definitions of tools without a pin kept, over every server.
    unpinned: usize,
    /// Weight of the members kept, over every server.
    sources: usize,
}

#[derive(Default)]
struct Server {
    /// Tool → its definition as last listed.
    tools: AHashMap<Box<str>, Sighting>,
    /// Of them, those recorded without a pin.
    unpinned: usize,
}

/// A definition as last listed, and the object it was read from (`None` when too heavy to
/// keep).
#[derive(Clone)]
struct Sighting {
    definition: Arc<Definition>,
    source: Option<Arc<Source>>,
}

/// What a tool was listed as, to know it when listed alike: the text it was listed as when
/// the filter read it from an answer's bytes (the usual case: a server lists what it listed
/// last time, byte for byte), else its object; and its [`weight`].
struct Source {
    kept: Kept,
    weight: usize,
}

enum Kept {
    Text(Box<[u8]>),
    Object(Map<String, Value>),
}

impl Source {
    fn of(tool: &ListedTool<'_>) -> Source {
        match tool.text() {
            Some(text) => Source {
                kept: Kept::Text(text.into()),
                weight: 16 + text.len(),
            },
            None => {
                let object = tool.object().clone();
                let weight = weight_of_members(&object);
                Source {
                    kept: Kept::Object(object),
                    weight,
                }
            }
        }
    }

    /// Whether `tool` is listed as kept: in the same text, or as the same object.
    fn matches(&self, tool: &ListedTool<'_>) -> bool {
        match (&self.kept, tool.text()) {
            (Kept::Text(kept), Some(text)) if **kept == *text => true,
            (Kept::Text(kept), _) => {
                let kept: Map<String, Value> =
                    serde_json::from_slice(kept).expect("kept text was read strictly");
                same_members(&kept, tool.object())
            }
            (Kept::Object(kept), _) => same_members(kept, tool.object()),
        }
    }
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
        self.last(server, tool).map(|s| s.definition)
    }

    fn last(&self, server: Option<&str>, tool: &str) -> Option<Sighting> {
        let table = self.table.read().unwrap_or_else(|e| e.into_inner());
        table.server(server)?.tools.get(tool).cloned()
    }

    /// The definition of `tool` of `server` if `listed` lists it exactly as last time.
    pub fn listed_alike(
        &self,
        server: Option<&str>,
        tool: &str,
        listed: &ListedTool<'_>,
    ) -> Option<Arc<Definition>> {
        let table = self.table.read().unwrap_or_else(|e| e.into_inner());
        let kept = table.server(server)?.tools.get(tool)?;
        kept.source
            .as_ref()
            .is_some_and(|s| s.matches(listed))
            .then(|| Arc::clone(&kept.definition))
    }

    /// Record `tool` of `server` as just listed, read from `listed`; `pinned` when the
    /// server's pins hold a pin for it.
    pub fn record(
        &self,
        server: Option<&str>,
        tool: &str,
        definition: &Arc<Definition>,
        listed: &ListedTool<'_>,
        pinned: bool,
    ) -> Seen {
        let known = |s: &Sighting| {
            s.definition == *definition && s.source.as_ref().is_some_and(|k| k.matches(listed))
        };
        if self.last(server, tool).is_some_and(|s| known(&s)) {
            return Seen::Same;
        }
        let source = Source::of(listed);
        let mut table = self.table.write().unwrap_or_else(|e| e.into_inner());
        // Looked at again under the lock: of two lists racing, one records the change.
        let kept = table.server(server).and_then(|s| s.tools.get(tool));
        let (new, same, freed) = match kept {
            Some(s) if known(s) => return Seen::Same,
            Some(s) => (
                false,
                s.definition == *definition,
                s.source.as_ref().map_or(0, |k| k.weight),
            ),
            None => (true, false, 0),
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
        table.sources -= freed;
        let fits =
            source.weight <= MAX_SOURCE_WEIGHT && table.sources + source.weight <= SOURCE_BUDGET;
        if fits {
            table.sources += source.weight;
        }
        let entry = match server {
            None => &mut table.unnamed,
            Some(id) => table.named.entry(id.into()).or_default(),
        };
        entry.unpinned += usize::from(counted);
        let sighting = Sighting {
            definition: Arc::clone(definition),
            source: fits.then(|| Arc::new(source)),
        };
        entry.tools.insert(tool.into(), sighting);
        // The same definition written otherwise (members in another order): kept as now
        // written, which the next list most likely repeats; no change to count.
        if same {
            Seen::Same
        } else {
            Seen::New
        }
    }
}

/// About what a value weighs kept in memory: its strings' bytes and a word or two a node.
fn weight(v: &Value) -> usize {
    16 + match v {
        Value::String(s) => s.len(),
        Value::Array(items) => items.iter().map(weight).sum(),
        Value::Object(members) => weight_of_members(members),
        _ => 0,
    }
}

fn weight_of_members(members: &Map<String, Value>) -> usize {
    members.iter().map(|(k, v)| 16 + k.len() + weight(v)).sum()
}

/// Equal as canonical JSON writes them: as `==`, but numbers by how JSON holds them.
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => same_number(x, y),
        (Value::String(x), Value::String(y)) => x == y,
        (Value::Bool(x), Value::Bool(y)) => x == y,
        (Value::Null, Value::Null) => true,
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same(a, b))
        }
        (Value::Object(x), Value::Object(y)) => same_members(x, y),
        _ => false,
    }
}

/// The same members, in any order, each [`same`].
fn same_members(x: &Map<String, Value>, y: &Map<String, Value>) -> bool {
    x.len() == y.len() && x.iter().all(|(k, a)| y.get(k).is_some_and(|b| same(a, b)))
}

/// An unsigned, a negative or a float alike (a float by its bits: `0.0 == -0.0`, but JSON
/// writes them apart).
fn same_number(x: &Number, y: &Number) -> bool {
    match (x.as_u64(), y.as_u64(), x.as_i64(), y.as_i64()) {
        (Some(a), Some(b), _, _) => a == b,
        (None, None, Some(a), Some(b)) => a == b,
        (None, None, None, None) => x.as_f64().map(f64::to_bits) == y.as_f64().map(f64::to_bits),
        _ => false,
    }
}
