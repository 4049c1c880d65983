//! Evaluating `require` / `deny_if` conditions against a call.
//!
//! Fail closed: a condition whose path is missing or whose value has the wrong type is
//! *unevaluable*, and an unevaluable condition denies the call wherever it sits. Only
//! `exists` never fails, except where a key is missing but a case variant of it is present
//! (an upstream decoder that folds case would see a value there), or the path runs into a
//! value that is not JSON (a serializer may write a value there). Combinators short-circuit
//! left to right.

pub use crate::counter::marks::{MarkState, Marks};
use crate::counter::Peer;
use crate::definitions::definition::{Definition, Hints};
use crate::json::args::{json_equal, ArgValue, Kind, Num};
use crate::json::strict::reads_two_ways;
use crate::observing::trace::{NoTrace, Trace};
pub use crate::policy::evaluation::{Outcome, Problem};
use crate::policy::{Compare, Condition, Op, PathRoot, Segment};
use serde_json::Value;
use std::cmp::Ordering;

/// Who is calling.
#[derive(Debug, Clone, Copy, Default)]
pub struct Subject<'a> {
    pub grant: Option<&'a str>,
    pub session: Option<&'a str>,
    pub agent: Option<&'a str>,
    pub attributes: &'a [(&'a str, &'a str)],
    /// The grant is an identity a proxy verified (a JWT claim), not a secret credential: it
    /// may be shown to approvers and written to logs as it is. Otherwise only a keyed hash
    /// of it ever leaves the process.
    pub grant_verified: bool,
    /// The network address the request came from, as the proxy gives it: new counters a
    /// client chooses are shared out by it ([`crate::counter::peers`]).
    pub peer: Peer,
}

/// Everything a condition path can reach.
pub struct Facts<'a, A> {
    pub tool: &'a str,
    pub server: Option<&'a str>,
    pub subject: Subject<'a>,
    pub args: Option<A>,
    /// There are no arguments yet (a tool list is filtered before any call is made): an
    /// argument path is [`Problem::NotYetKnown`], not missing.
    pub args_unknown: bool,
    /// The tool's definition as its server last listed it (or as it was pinned), for
    /// `tool.title` and `tool.annotations.*`; `trusted` when the policy trusts the server's
    /// annotations (else every hint reads as MCP's default, and the title as missing).
    pub definition: Option<&'a Definition>,
    pub trusted: bool,
    /// The marks the call can see: `None` until they are read (a mark path is then
    /// [`Problem::NotYetKnown`]).
    pub marks: Option<&'a Marks>,
}

/// A resolved path: an argument value, one of the request's strings, a tool's hint, or the
/// names of the marks set.
enum Resolved<'a, A> {
    Arg(A),
    Text(&'a str),
    Bool(bool),
    Names(Vec<&'a str>),
}

impl<A: ArgValue> Resolved<'_, A> {
    fn kind(&self) -> Kind {
        match self {
            Resolved::Arg(a) => a.kind(),
            Resolved::Text(_) => Kind::String,
            Resolved::Bool(_) => Kind::Bool,
            Resolved::Names(_) => Kind::Array,
        }
    }
    fn as_str(&self) -> Option<&str> {
        match self {
            Resolved::Arg(a) => a.as_str(),
            Resolved::Text(s) => Some(s),
            _ => None,
        }
    }
    fn as_num(&self) -> Option<Num> {
        match self {
            Resolved::Arg(a) => a.as_num(),
            _ => None,
        }
    }
    fn as_bool(&self) -> Option<bool> {
        match self {
            Resolved::Arg(a) => a.as_bool(),
            Resolved::Bool(b) => Some(*b),
            _ => None,
        }
    }
    fn to_json(&self) -> Option<Value> {
        match self {
            Resolved::Arg(a) => a.to_json(),
            Resolved::Text(s) => Some(Value::String((*s).to_owned())),
            Resolved::Bool(b) => Some(Value::Bool(*b)),
            Resolved::Names(names) => Some(names.iter().map(|n| Value::from(*n)).collect()),
        }
    }
    /// The number, if every decoder reads it as this one.
    fn exact_num(&self) -> Result<Num, Problem> {
        let n = self.as_num().ok_or(Problem::WrongType(self.kind()))?;
        if n.is_exact_everywhere() {
            Ok(n)
        } else {
            Err(Problem::Ambiguous)
        }
    }
}

impl<'a, A: ArgValue + Clone> Facts<'a, A> {
    /// These facts, with the marks read.
    pub fn with_marks<'m>(&self, marks: &'m Marks) -> Facts<'m, A>
    where
        'a: 'm,
    {
        Facts {
            tool: self.tool,
            server: self.server,
            subject: self.subject,
            args: self.args.clone(),
            args_unknown: self.args_unknown,
            definition: self.definition,
            trusted: self.trusted,
            marks: Some(marks),
        }
    }

    fn resolve(&self, c: &Compare) -> Result<Resolved<'a, A>, Problem> {
        let segs = &c.path.segments;
        let text = match c.path.root {
            PathRoot::Tool => return self.tool_path(segs),
            PathRoot::Marks => return self.mark_path(segs),
            PathRoot::Server => self.server,
            PathRoot::Subject => {
                let s = &self.subject;
                match (segs.first(), segs.get(1)) {
                    (Some(Segment::Key(k)), None) if k == "grant" => s.grant,
                    (Some(Segment::Key(k)), None) if k == "session" => s.session,
                    (Some(Segment::Key(k)), None) if k == "agent" => s.agent,
                    (Some(Segment::Key(k)), Some(Segment::Key(name))) if k == "attributes" => s
                        .attributes
                        .iter()
                        .find(|(key, _)| key == name)
                        .map(|(_, v)| *v),
                    _ => None,
                }
            }
            PathRoot::Args => return self.arg(segs).map(Resolved::Arg),
        };
        text.map(Resolved::Text).ok_or(Problem::Missing)
    }

    /// `tool` (its name), `tool.title`, `tool.annotations.HINT`.
    fn tool_path(&self, segs: &[Segment]) -> Result<Resolved<'a, A>, Problem> {
        let definition = self.definition.filter(|_| self.trusted);
        match segs {
            [] => Ok(Resolved::Text(self.tool)),
            [Segment::Key(k)] if k == "title" => definition
                .and_then(|d| d.title.as_deref())
                .map(Resolved::Text)
                .ok_or(Problem::Missing),
            [Segment::Key(_), Segment::Key(hint)] => {
                let hints = definition.map_or(Hints::default(), |d| d.hints);
                hints.get(hint).map(Resolved::Bool).ok_or(Problem::Missing)
            }
            _ => Err(Problem::Missing),
        }
    }

    /// `marks` (the names of the marks set) or `marks.NAME` (present when it is set).
    fn mark_path(&self, segs: &[Segment]) -> Result<Resolved<'a, A>, Problem> {
        let marks = self.marks.ok_or(Problem::NotYetKnown)?;
        let problem = |state| match state {
            MarkState::NoScope => Some(Problem::NoScope),
            MarkState::Unread => Some(Problem::Unread),
            MarkState::Set | MarkState::Unset => None,
        };
        match segs {
            [] => {
                if let Some(p) = marks.0.iter().find_map(|(_, s)| problem(*s)) {
                    return Err(p);
                }
                let set = marks.0.iter().filter(|(_, s)| *s == MarkState::Set);
                Ok(Resolved::Names(set.map(|(n, _)| &**n).collect()))
            }
            [Segment::Key(name)] => match marks.get(name) {
                Some(MarkState::Set) => Ok(Resolved::Bool(true)),
                Some(MarkState::Unset) | None => Err(Problem::Missing),
                Some(state) => Err(problem(state).unwrap_or(Problem::Missing)),
            },
            _ => Err(Problem::Missing),
        }
    }

    /// Walk an argument path; also used for a limit's `cost`. Fails with
    /// [`Problem::CaseVariant`] where a key is not the only one that folds like it
    /// ([`ArgValue::get_key`] misses then).
    pub fn arg(&self, segments: &[Segment]) -> Result<A, Problem> {
        let mut v = match self.args.clone() {
            Some(v) => v,
            None if self.args_unknown => return Err(Problem::NotYetKnown),
            None => return Err(Problem::Missing),
        };
        for seg in segments {
            v = match seg {
                Segment::Key(k) => match v.get_key(k) {
                    Some(next) => next,
                    None if v.has_case_variant(k) => return Err(Problem::CaseVariant),
                    None if v.is_opaque() => return Err(Problem::Ambiguous),
                    None => return Err(Problem::Missing),
                },
                Segment::Index(i) => match v.get_index(*i) {
                    Some(next) => next,
                    None if v.is_opaque() => return Err(Problem::Ambiguous),
                    None => return Err(Problem::Missing),
                },
            };
        }
        Ok(v)
    }

    /// All of `items` hold, evaluated left to right up to the first that does not.
    pub fn eval_all<'p>(&self, items: &'p [Condition]) -> Outcome<'p> {
        self.eval_all_traced(items, &mut NoTrace)
    }

    pub fn eval<'p>(&self, cond: &'p Condition) -> Outcome<'p> {
        self.eval_traced(cond, &mut NoTrace)
    }

    /// [`Facts::eval_all`], reporting each condition to `trace`.
    pub fn eval_all_traced<'p, T: Trace>(
        &self,
        items: &'p [Condition],
        trace: &mut T,
    ) -> Outcome<'p> {
        for item in items {
            match self.eval_traced(item, trace) {
                Outcome::Holds => {}
                other => return other,
            }
        }
        Outcome::Holds
    }

    /// [`Facts::eval`], reporting each condition to `trace`.
    pub fn eval_traced<'p, T: Trace>(&self, cond: &'p Condition, trace: &mut T) -> Outcome<'p> {
        match cond {
            Condition::Compare(c) => self.compare(c, trace),
            _ => {
                trace.enter(cond);
                let outcome = self.combine(cond, trace);
                trace.leave(outcome);
                outcome
            }
        }
    }

    /// A combinator's outcome, its items evaluated left to right up to the first that decides.
    fn combine<'p, T: Trace>(&self, cond: &'p Condition, trace: &mut T) -> Outcome<'p> {
        match cond {
            Condition::Compare(c) => self.compare(c, trace),
            Condition::All { items, .. } => self.eval_all_traced(items, trace),
            Condition::Any { items, .. } => {
                for item in items {
                    match self.eval_traced(item, trace) {
                        Outcome::Fails => {}
                        other => return other,
                    }
                }
                Outcome::Fails
            }
            Condition::Not { item, .. } => match self.eval_traced(item, trace) {
                Outcome::Holds => Outcome::Fails,
                Outcome::Fails => Outcome::Holds,
                u => u,
            },
        }
    }

    fn compare<'p, T: Trace>(&self, c: &'p Compare, trace: &mut T) -> Outcome<'p> {
        let resolved = self.resolve(c);
        let outcome = if c.op == Op::Exists {
            let want = c.value.as_bool().unwrap_or(true);
            match resolved {
                Err(
                    p @ (Problem::CaseVariant
                    | Problem::Ambiguous
                    | Problem::NotYetKnown
                    | Problem::NoScope
                    | Problem::Unread),
                ) => Outcome::Unevaluable(c, p),
                ref r if r.is_ok() == want => Outcome::Holds,
                _ => Outcome::Fails,
            }
        } else {
            match &resolved {
                Ok(v) => match apply(v, c) {
                    Ok(true) => Outcome::Holds,
                    Ok(false) => Outcome::Fails,
                    Err(p) => Outcome::Unevaluable(c, p),
                },
                Err(problem) => Outcome::Unevaluable(c, *problem),
            }
        };
        // Only a trace that records calls this: the value is not converted otherwise.
        trace.compare(
            c,
            || resolved.as_ref().ok().and_then(Resolved::to_json),
            outcome,
        );
        outcome
    }
}

fn apply<A: ArgValue>(v: &Resolved<'_, A>, c: &Compare) -> Result<bool, Problem> {
    let wrong = || Problem::WrongType(v.kind());
    let text = || v.as_str().ok_or_else(wrong);
    let operand = || c.value.as_str().unwrap_or_default();
    match c.op {
        Op::Eq => equals(v, &c.value),
        Op::Neq => equals(v, &c.value).map(|b| !b),
        Op::In => member(v, &c.value),
        Op::NotIn => member(v, &c.value).map(|b| !b),
        Op::Lt | Op::Lte | Op::Gt | Op::Gte => {
            let a = v.exact_num()?;
            let b = c.value.as_number().map(Num::from_json).ok_or_else(wrong)?;
            let ord = a.compare(b).ok_or_else(wrong)?;
            Ok(match c.op {
                Op::Lt => ord == Ordering::Less,
                Op::Lte => ord != Ordering::Greater,
                Op::Gt => ord == Ordering::Greater,
                _ => ord != Ordering::Less,
            })
        }
        Op::Regex | Op::Glob => text().map(|s| c.pattern.as_ref().is_some_and(|re| re.is_match(s))),
        Op::NotRegex => text().map(|s| !c.pattern.as_ref().is_some_and(|re| re.is_match(s))),
        Op::StartsWith => text().map(|s| s.starts_with(operand())),
        Op::EndsWith => text().map(|s| s.ends_with(operand())),
        Op::Contains => contains(v, &c.value),
        Op::NotContains => contains(v, &c.value).map(|b| !b),
        Op::Exists => unreachable!("handled before resolution"),
    }
}

/// Equality without coercion: a value of another type than the operand is unevaluable.
fn equals<A: ArgValue>(v: &Resolved<'_, A>, operand: &Value) -> Result<bool, Problem> {
    let wrong = Problem::WrongType(v.kind());
    match operand {
        Value::Null => (v.kind() == Kind::Null).then_some(true).ok_or(wrong),
        Value::Bool(b) => v.as_bool().map(|x| x == *b).ok_or(wrong),
        Value::Number(n) => {
            let a = v.exact_num()?;
            Ok(a.compare(Num::from_json(n)) == Some(Ordering::Equal))
        }
        Value::String(s) => v.as_str().map(|x| x == s).ok_or(wrong),
        Value::Array(_) | Value::Object(_) => {
            if v.kind() != Kind::of(operand) {
                return Err(wrong);
            }
            let json = v.to_json().ok_or(Problem::Ambiguous)?;
            if reads_two_ways(&json) {
                return Err(Problem::Ambiguous);
            }
            Ok(json_equal(&json, operand))
        }
    }
}

/// `in`: equal to some element of the same type; unevaluable if no element has its type.
fn member<A: ArgValue>(v: &Resolved<'_, A>, list: &Value) -> Result<bool, Problem> {
    let mut comparable = false;
    for item in list.as_array().map(Vec::as_slice).unwrap_or_default() {
        match equals(v, item) {
            Ok(true) => return Ok(true),
            Ok(false) => comparable = true,
            Err(Problem::Ambiguous) => return Err(Problem::Ambiguous),
            Err(_) => {}
        }
    }
    if comparable {
        Ok(false)
    } else {
        Err(Problem::WrongType(v.kind()))
    }
}

/// `contains`: a substring of a string, or an element of an array.
fn contains<A: ArgValue>(v: &Resolved<'_, A>, operand: &Value) -> Result<bool, Problem> {
    match (v, operand) {
        (_, Value::String(needle)) if v.kind() == Kind::String => {
            Ok(v.as_str().unwrap_or_default().contains(needle.as_str()))
        }
        (Resolved::Names(names), Value::String(name)) => Ok(names.contains(&name.as_str())),
        (Resolved::Arg(a), _) if a.kind() == Kind::Array => {
            // Every element is looked at: one that reads two ways makes the answer unknown
            // wherever it sits.
            let mut found = false;
            for item in (0..a.len()).filter_map(|i| a.get_index(i)) {
                match equals(&Resolved::<A>::Arg(item), operand) {
                    Ok(eq) => found |= eq,
                    Err(Problem::Ambiguous) => return Err(Problem::Ambiguous),
                    Err(_) => {}
                }
            }
            Ok(found)
        }
        _ => Err(Problem::WrongType(v.kind())),
    }
}
