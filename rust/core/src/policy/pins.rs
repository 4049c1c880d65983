//! A pins file: the definitions of tools as they were reviewed, per server, that a policy's
//! `pins` holds servers to (`toolgate pin` writes it, from a live server or a saved list).
//!
//! ```json
//! {"version": "1",
//!  "tools": {"echo": {"digest": "sha256:…", "definition": {…}}},
//!  "servers": {"crm": {"tools": {"read_contact": {"digest": "sha256:…", "definition": {…}}}}}}
//! ```
//!
//! `tools` pins the tools of calls that name no server; `servers.ID.tools` those of server
//! `ID` (the name a call's server is known by: Envoy's route extension, agentgateway's target
//! name). `definition`, the tool as it was listed, is kept so a change can be shown
//! readably, and for the title and annotations a policy reads; its digest must be `digest`.

use super::error::{PolicyError, PolicyErrors};
use super::pointer_token;
use super::source::{parse_json, Member, Node, NodeValue};
use crate::definitions::definition::{Definition, Digest};
use ahash::AHashMap;
use serde_json::Value;

/// A tool's pin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pin {
    pub digest: Digest,
    /// The pinned definition's title and hints, when the file keeps the definition.
    pub definition: Option<Definition>,
}

/// Every pin of one file.
#[derive(Debug, Clone, Default)]
pub struct Pins {
    /// Calls that name no server.
    pub tools: AHashMap<Box<str>, Pin>,
    pub servers: AHashMap<Box<str>, AHashMap<Box<str>, Pin>>,
}

impl Pins {
    /// The pin of `tool` of `server`.
    pub fn get(&self, server: Option<&str>, tool: &str) -> Option<&Pin> {
        match server {
            None => self.tools.get(tool),
            Some(s) => self.servers.get(s)?.get(tool),
        }
    }

    /// Read a pins file's text; every problem, with its JSON pointer and line.
    pub fn from_json_str(text: &str) -> Result<Pins, PolicyErrors> {
        let node = parse_json(text)?;
        let mut errors = Vec::new();
        let mut pins = Pins::default();
        let mut error = |pointer: &str, line, message: String| {
            errors.push(PolicyError {
                pointer: pointer.to_owned(),
                line,
                message,
            })
        };
        let Some(members) = object(&node, "", &["version", "tools", "servers"], &mut error) else {
            return Err(PolicyErrors(errors));
        };
        for m in members {
            let at = format!("/{}", m.key);
            match m.key.as_str() {
                "version" if !matches!(&m.value.value, NodeValue::String(v) if v == "1") => {
                    error(&at, m.value.line, "expected the string \"1\"".into());
                }
                "tools" => pins.tools = tools(&m.value, &at, &mut error),
                "servers" => {
                    let Some(servers) = object(&m.value, &at, &[], &mut error) else {
                        continue;
                    };
                    for s in servers {
                        let at = format!("{at}/{}", pointer_token(&s.key));
                        let Some(inner) = object(&s.value, &at, &["tools"], &mut error) else {
                            continue;
                        };
                        let tools = inner
                            .iter()
                            .find(|t| t.key == "tools")
                            .map(|t| tools(&t.value, &format!("{at}/tools"), &mut error))
                            .unwrap_or_default();
                        pins.servers.insert(s.key.as_str().into(), tools);
                    }
                }
                _ => {}
            }
        }
        if errors.is_empty() {
            Ok(pins)
        } else {
            Err(PolicyErrors(errors))
        }
    }
}

type Report<'e> = dyn FnMut(&str, Option<u32>, String) + 'e;

/// An object's members; with `known` non-empty, every other key is an error.
fn object<'n>(
    node: &'n Node,
    pointer: &str,
    known: &[&str],
    error: &mut Report<'_>,
) -> Option<&'n [Member]> {
    let NodeValue::Object(members) = &node.value else {
        error(
            pointer,
            node.line,
            format!("expected an object, found {}", node.kind()),
        );
        return None;
    };
    if !known.is_empty() {
        for m in members.iter().filter(|m| !known.contains(&m.key.as_str())) {
            let message = format!(
                "unknown key {:?}; expected one of: {}",
                m.key,
                known.join(", ")
            );
            error(
                &format!("{pointer}/{}", pointer_token(&m.key)),
                m.key_line,
                message,
            );
        }
    }
    Some(members)
}

fn tools(node: &Node, pointer: &str, error: &mut Report<'_>) -> AHashMap<Box<str>, Pin> {
    let mut out = AHashMap::new();
    let Some(members) = object(node, pointer, &[], error) else {
        return out;
    };
    for m in members {
        let at = format!("{pointer}/{}", pointer_token(&m.key));
        let Some(fields) = object(&m.value, &at, &["digest", "definition"], error) else {
            continue;
        };
        let digest = match fields.iter().find(|f| f.key == "digest") {
            Some(f) => match &f.value.value {
                NodeValue::String(s) => Digest::parse(s).or_else(|| {
                    error(
                        &format!("{at}/digest"),
                        f.value.line,
                        format!("expected sha256: and 64 lower-case hex digits, found {s:?}"),
                    );
                    None
                }),
                _ => {
                    error(
                        &format!("{at}/digest"),
                        f.value.line,
                        "expected a string".into(),
                    );
                    None
                }
            },
            None => {
                error(&at, m.value.line, "missing required key \"digest\"".into());
                None
            }
        };
        let definition = fields.iter().find(|f| f.key == "definition").and_then(|f| {
            let at = format!("{at}/definition");
            let Value::Object(tool) = f.value.to_json_value() else {
                error(
                    &at,
                    f.value.line,
                    format!("expected an object, found {}", f.value.kind()),
                );
                return None;
            };
            let read = Definition::read(&tool)?;
            if digest.is_some_and(|d| d != read.digest) {
                error(
                    &at,
                    f.value.line,
                    format!(
                        "this definition's digest is {}, not the pin's: pin the tool again \
                     (toolgate pin) rather than edit the file",
                        read.digest
                    ),
                );
            }
            if tool.get("name").and_then(Value::as_str) != Some(m.key.as_str()) {
                error(
                    &at,
                    f.value.line,
                    format!("the definition's name is not {:?}", m.key),
                );
            }
            Some(read)
        });
        if let Some(digest) = digest {
            out.insert(m.key.as_str().into(), Pin { digest, definition });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest_of(v: Value) -> String {
        let Value::Object(m) = v else { unreachable!() };
        crate::definitions::definition::digest(&m)
            .unwrap()
            .to_string()
    }

    #[test]
    fn a_pins_file_reads_per_server_and_checks_its_definitions() {
        let def = serde_json::json!({"name": "echo", "description": "Echoes."});
        let d = digest_of(def.clone());
        let text = serde_json::json!({"version": "1",
            "tools": {"echo": {"digest": d}},
            "servers": {"crm": {"tools": {"echo": {"digest": d, "definition": def}}}}})
        .to_string();
        let pins = Pins::from_json_str(&text).unwrap();
        assert_eq!(pins.get(None, "echo").unwrap().digest.to_string(), d);
        assert!(pins.get(None, "echo").unwrap().definition.is_none());
        assert!(pins.get(Some("crm"), "echo").unwrap().definition.is_some());
        assert!(pins.get(Some("other"), "echo").is_none());
        assert!(pins.get(Some("crm"), "send").is_none());
    }

    #[test]
    fn every_problem_is_reported_where_it_is() {
        let def = serde_json::json!({"name": "echo", "description": "Echoes."});
        let wrong = serde_json::json!({"version": "2", "extra": 1,
            "tools": {"echo": {"digest": "sha256:00", "definition": def},
                      "send": {"definition": {"name": "other"}},
                      "edited": {"digest": digest_of(serde_json::json!({"name": "edited"})),
                                 "definition": {"name": "edited", "description": "new"}}},
            "servers": {"crm": []}});
        let errors = Pins::from_json_str(&wrong.to_string()).unwrap_err().0;
        let at: Vec<&str> = errors.iter().map(|e| e.pointer.as_str()).collect();
        for want in [
            "/version",
            "/extra",
            "/tools/echo/digest",
            "/tools/send",
            "/tools/send/definition",
            "/tools/edited/definition",
            "/servers/crm",
        ] {
            assert!(at.contains(&want), "{want} not in {at:?}");
        }
        // A key twice is refused, as in a policy.
        assert!(Pins::from_json_str(r#"{"version": "1", "tools": {}, "tools": {}}"#).is_err());
    }
}
