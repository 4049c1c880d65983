//! `require` and `deny_if`: condition items, groups, comparisons and their operands.

use super::*;

impl Loader {
    // --- conditions -------------------------------------------------------------------------

    /// `require` / `deny_if`: an array of conditions and `{conditions, on_deny}` groups.
    pub(super) fn condition_items(&mut self, node: &Node, pointer: &str) -> Vec<ConditionItem> {
        let Some(items) = self.array(node, pointer) else {
            return Vec::new();
        };
        items
            .iter()
            .enumerate()
            .filter_map(|(i, entry)| self.condition_item(entry, &item(pointer, i)))
            .collect()
    }

    fn condition_item(&mut self, node: &Node, pointer: &str) -> Option<ConditionItem> {
        if node.get("conditions").is_none() {
            return self.condition(node, pointer).map(ConditionItem::Condition);
        }
        self.clean(|this| {
            let members = this.strict_object(node, pointer, keys::GROUP)?;
            let mut conditions = Some(Vec::new());
            let mut on_deny = None;
            for m in members {
                let at = child(pointer, &m.key);
                match m.key.as_str() {
                    "conditions" => conditions = this.conditions(&m.value, &at),
                    "on_deny" => on_deny = this.string(&m.value, &at).map(str::to_owned),
                    _ => {}
                }
            }
            Some(ConditionItem::Group {
                pointer: pointer.to_owned(),
                conditions: conditions?,
                on_deny,
            })
        })
        .flatten()
    }

    /// An array of conditions; `None` when any of them is invalid (all are still checked).
    pub(super) fn conditions(&mut self, node: &Node, pointer: &str) -> Option<Vec<Condition>> {
        let items = self.array(node, pointer)?;
        let parsed: Vec<Option<Condition>> = items
            .iter()
            .enumerate()
            .map(|(i, c)| self.condition(c, &item(pointer, i)))
            .collect();
        parsed.into_iter().collect()
    }

    pub(super) fn condition(&mut self, node: &Node, pointer: &str) -> Option<Condition> {
        self.clean(|this| this.condition_inner(node, pointer))
            .flatten()
    }

    fn condition_inner(&mut self, node: &Node, pointer: &str) -> Option<Condition> {
        let members = self.object(node, pointer)?;
        let is = |known: &[keys::Key], m: &Member| keys::has(known, &m.key);
        let compare_keys = members.iter().filter(|m| is(keys::COMPARE, m)).count();
        let combinators: Vec<&Member> =
            members.iter().filter(|m| is(keys::COMBINATOR, m)).collect();
        for m in members
            .iter()
            .filter(|m| !is(keys::COMPARE, m) && !is(keys::COMBINATOR, m))
        {
            self.error(
                child(pointer, &m.key),
                m.key_line,
                format!(
                    "unknown key {:?}; a condition has path, op and value, or one of all, any, not",
                    m.key
                ),
            );
        }
        if !combinators.is_empty() && (compare_keys > 0 || combinators.len() > 1) {
            let keys: Vec<&str> = members.iter().map(|m| m.key.as_str()).collect();
            self.error(
                pointer,
                node.line,
                format!(
                    "a condition has either path/op/value or exactly one of all, any, not; \
                     found keys {}",
                    keys.join(", ")
                ),
            );
            return None;
        }
        let Some(combinator) = combinators.first() else {
            return self.compare(members, node, pointer);
        };
        let at = child(pointer, &combinator.key);
        let pointer = pointer.to_owned();
        match combinator.key.as_str() {
            "all" => Some(Condition::All {
                pointer,
                items: self.conditions(&combinator.value, &at)?,
            }),
            "any" => Some(Condition::Any {
                pointer,
                items: self.conditions(&combinator.value, &at)?,
            }),
            _ => Some(Condition::Not {
                pointer,
                item: Box::new(self.condition(&combinator.value, &at)?),
            }),
        }
    }

    fn compare(&mut self, members: &[Member], node: &Node, pointer: &str) -> Option<Condition> {
        let path_member = self.required(members, node, pointer, "path");
        let op_member = self.required(members, node, pointer, "op");
        let value_member = members.iter().find(|m| m.key == "value");

        let path = path_member.and_then(|m| {
            let at = child(pointer, "path");
            let text = self.string(&m.value, &at)?;
            let path = Path::parse(text)
                .map_err(|e| self.error(&at, m.value.line, e))
                .ok()?;
            if let (PathRoot::Marks, [Segment::Key(name)]) = (path.root, &path.segments[..]) {
                self.mark_reads.push((name.clone(), at, m.value.line));
            }
            Some(path)
        });
        let op = op_member.and_then(|m| {
            let at = child(pointer, "op");
            let text = self.string(&m.value, &at)?;
            let op = Op::parse(text);
            if op.is_none() {
                let names: Vec<&str> = Op::ALL.iter().map(|(name, _)| *name).collect();
                self.error(
                    at,
                    m.value.line,
                    format!("unknown op {text:?}; expected one of: {}", names.join(", ")),
                );
            }
            op
        })?;
        let (value, pattern) = self.operand(op, value_member, node, pointer)?;
        Some(Condition::Compare(Compare {
            pointer: pointer.to_owned(),
            path: path?,
            op,
            value,
            pattern,
        }))
    }

    /// Check `value` against what `op` needs; returns it with its compiled pattern, if any.
    fn operand(
        &mut self,
        op: Op,
        member: Option<&Member>,
        condition: &Node,
        pointer: &str,
    ) -> Option<(Value, Option<regex::Regex>)> {
        let Some(member) = member else {
            if op == Op::Exists {
                return Some((Value::Bool(true), None));
            }
            self.error(
                pointer,
                condition.line,
                format!(
                    "missing required key \"value\" (op {:?} needs one)",
                    op.name()
                ),
            );
            return None;
        };
        let node = &member.value;
        let at = child(pointer, "value");
        let mut pattern = None;
        let expected = match (op, &node.value) {
            (Op::Eq | Op::Neq, _) => None,
            // An empty list has no type to compare with, so it could only ever fail closed.
            (Op::In | Op::NotIn, NodeValue::Array(items)) if !items.is_empty() => None,
            (Op::In | Op::NotIn, _) => Some("a non-empty array"),
            (Op::Lt | Op::Lte | Op::Gt | Op::Gte, NodeValue::Number(_)) => None,
            (Op::Lt | Op::Lte | Op::Gt | Op::Gte, _) => Some("a number"),
            (Op::Regex | Op::NotRegex, NodeValue::String(s)) => {
                match Regex::new(s) {
                    Ok(re) => pattern = Some(re),
                    Err(e) => {
                        self.error(
                            at,
                            node.line,
                            format!("invalid regex {s:?}: {}", regex_error(&e)),
                        );
                        return None;
                    }
                }
                None
            }
            (Op::Glob, NodeValue::String(s)) => {
                match crate::policy::glob::compile(s) {
                    Ok(re) => pattern = Some(re),
                    Err(e) => {
                        self.error(at, node.line, e);
                        return None;
                    }
                }
                None
            }
            (Op::StartsWith | Op::EndsWith, NodeValue::String(_)) => None,
            (Op::Regex | Op::NotRegex | Op::Glob | Op::StartsWith | Op::EndsWith, _) => {
                Some("a string")
            }
            (Op::Contains | Op::NotContains, NodeValue::Array(_) | NodeValue::Object(_)) => {
                Some("a string, number, boolean or null")
            }
            (Op::Contains | Op::NotContains, _) => None,
            (Op::Exists, NodeValue::Bool(_)) => None,
            (Op::Exists, _) => Some("a boolean"),
        };
        if let Some(what) = expected {
            self.error(
                at,
                node.line,
                format!("op {:?} expects {what}, found {}", op.name(), node.kind()),
            );
            return None;
        }
        Some((node.to_json_value(), pattern))
    }
}

/// The regex crate's syntax errors span several lines (pattern, caret, message); policy
/// errors are one line each, so keep only the message.
fn regex_error(e: &regex::Error) -> String {
    let text = e.to_string();
    let last = text.lines().last().unwrap_or_default();
    last.strip_prefix("error: ").unwrap_or(last).to_owned()
}
