//! A tool object of a `tools/list` answer as the filter holds it: the JSON text it was listed
//! as, read into an object only when something needs its members (a pin, a policy that reads
//! titles or hints). A policy that needs only names never builds one.

use serde_json::{Map, Value};
use std::borrow::Cow;
use std::cell::OnceCell;

/// One listed tool: its text, its object, or both.
pub struct ListedTool<'a> {
    /// The tool's JSON text, already read strictly ([`crate::mcp::spans`]).
    text: Option<&'a [u8]>,
    object: OnceCell<Cow<'a, Map<String, Value>>>,
}

impl<'a> ListedTool<'a> {
    /// A tool listed as `text`: one JSON object that the strict reader has read.
    pub fn from_text(text: &'a [u8]) -> Self {
        ListedTool {
            text: Some(text),
            object: OnceCell::new(),
        }
    }

    /// The text the tool was listed as, when it was read from an answer's bytes.
    pub fn text(&self) -> Option<&'a [u8]> {
        self.text
    }

    /// The tool's members.
    pub fn object(&self) -> &Map<String, Value> {
        self.object.get_or_init(|| {
            let text = self.text.expect("a listed tool has its text or its object");
            Cow::Owned(serde_json::from_slice(text).expect("text read strictly reads again"))
        })
    }

    /// The same definition: the same text, or the same members (in whatever order).
    pub fn alike(&self, other: &ListedTool<'_>) -> bool {
        match (self.text, other.text) {
            (Some(a), Some(b)) if a == b => true,
            _ => self.object() == other.object(),
        }
    }
}

impl<'a> From<&'a Map<String, Value>> for ListedTool<'a> {
    fn from(object: &'a Map<String, Value>) -> Self {
        ListedTool {
            text: None,
            object: OnceCell::from(Cow::Borrowed(object)),
        }
    }
}
