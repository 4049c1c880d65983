//! A section's pins (and reading its pins file) and the marks its rules set and read.

use super::limits::duration_ms;
use super::*;

impl Loader {
    // --- pins and marks ---------------------------------------------------------------------

    pub(super) fn pins(&mut self, node: &Node, pointer: &str) -> Option<PinsRule> {
        let members = self.strict_object(node, pointer, keys::PINS)?;
        let file = self
            .required(members, node, pointer, "file")
            .and_then(|m| self.non_empty_string(&m.value, &child(pointer, "file")))?;
        let mut rule = PinsRule {
            pointer: pointer.to_owned(),
            file: file.to_owned(),
            mode: Mode::Enforce,
            unpinned: Unpinned::Hide,
        };
        for m in members {
            let at = child(pointer, &m.key);
            match m.key.as_str() {
                "mode" => rule.mode = self.choice(&m.value, &at, "mode", MODES)?,
                "unpinned" => rule.unpinned = self.choice(&m.value, &at, "unpinned", UNPINNED)?,
                _ => {}
            }
        }
        Some(rule)
    }

    /// Read each pins file the sections name, once, relative to `base`, with `read`. Two
    /// spellings of one path (`pins.json`, `./pins.json`) are one file, read once: the
    /// sections that name it hold the same pins, and a reload watches one digest of it.
    pub(super) fn read_pins(
        &mut self,
        root: &Section,
        servers: &[(String, Section)],
        base: &std::path::Path,
        read: ReadFile,
    ) -> Vec<PinsFile> {
        let mut files: Vec<PinsFile> = Vec::new();
        let sections = std::iter::once(root).chain(servers.iter().map(|(_, s)| s));
        for rule in sections.filter_map(|s| s.pins.as_ref()) {
            let path = base.join(&rule.file);
            // (`components` drops a `.` and repeated separators: a spelling, not a place.)
            let same =
                |f: &&PinsFile| f.file == rule.file || f.path.components().eq(path.components());
            if let Some(read) = files.iter().find(same) {
                if read.file != rule.file {
                    let file = rule.file.clone();
                    files.push(PinsFile {
                        file,
                        ..read.clone()
                    });
                }
                continue;
            }
            let at = child(&rule.pointer, "file");
            let text = match read(&path) {
                Ok(bytes) => bytes,
                Err(e) => {
                    let message = format!("cannot read the pins file {}: {e}", path.display());
                    self.error(at, None, message);
                    continue;
                }
            };
            let parsed = std::str::from_utf8(&text)
                .map_err(|_| "the pins file is not UTF-8 text".to_owned())
                .and_then(|t| Pins::from_json_str(t).map_err(|e| e.to_string()));
            match parsed {
                Ok(pins) => files.push(PinsFile {
                    file: rule.file.clone(),
                    digest: Sha256::digest(&text).into(),
                    path,
                    pins: std::sync::Arc::new(pins),
                }),
                Err(e) => {
                    let message = format!("the pins file {} is not valid: {e}", path.display());
                    self.error(at, None, message);
                }
            }
        }
        files
    }

    pub(super) fn marks(&mut self, node: &Node, pointer: &str) -> Vec<MarkRule> {
        let Some(items) = self.array(node, pointer) else {
            return Vec::new();
        };
        let mut marks = Vec::new();
        for (i, entry) in items.iter().enumerate() {
            let at = item(pointer, i);
            if let Some(mark) = self.clean(|l| l.mark(entry, &at)).flatten() {
                marks.push(mark);
            }
        }
        marks
    }

    pub(super) fn mark(&mut self, node: &Node, pointer: &str) -> Option<MarkRule> {
        let members = self.strict_object(node, pointer, keys::MARK)?;
        let name = self
            .required(members, node, pointer, "name")
            .and_then(|m| self.non_empty_string(&m.value, &child(pointer, "name")));
        let scope = self
            .required(members, node, pointer, "scope")
            .and_then(|m| {
                self.choice(
                    &m.value,
                    &child(pointer, "scope"),
                    "mark scope",
                    MARK_SCOPES,
                )
            });
        let ttl_ms = self.required(members, node, pointer, "ttl").and_then(|m| {
            duration_ms(&m.value)
                .map_err(|e| self.error(child(pointer, "ttl"), m.value.line, e))
                .ok()
        });
        let mark = MarkRule {
            pointer: pointer.to_owned(),
            name: name?.to_owned(),
            scope: scope?,
            ttl_ms: ttl_ms?,
        };
        match self.marks.get(&mark.name) {
            None => {
                self.marks.insert(mark.name.clone(), mark.clone());
            }
            Some(first) if (first.scope, first.ttl_ms) != (mark.scope, mark.ttl_ms) => {
                let message = format!(
                    "mark {:?} conflicts with its first definition at {}: a mark has one scope \
                     and one ttl",
                    mark.name, first.pointer
                );
                self.error(pointer, node.line, message);
                return None;
            }
            Some(_) => {}
        }
        Some(mark)
    }

    /// Every mark a condition reads is one some rule sets.
    pub(super) fn check_mark_reads(&mut self) {
        if self.marks.len() > MAX_MARKS {
            let message = format!(
                "a policy may name at most {MAX_MARKS} marks (a call reads them in one step), \
                 found {}",
                self.marks.len()
            );
            self.error("", None, message);
        }
        let reads = std::mem::take(&mut self.mark_reads);
        for (name, pointer, line) in reads {
            if !self.marks.contains_key(&name) {
                let message = format!("no rule sets the mark {name:?} (marks: [{{name: ...}}])");
                self.error(pointer, line, message);
            }
        }
    }
}
