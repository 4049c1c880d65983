//! Condition paths (`args.to.account`, `subject.grant`, `marks.NAME`): parsed and checked.

use super::*;

const ROOT_ERROR: &str = "path must start with args., subject., server, tool or marks";
const SUBJECT_FIELDS: &str =
    "subject.grant, subject.session, subject.agent or subject.attributes.<key>";

impl Path {
    /// Parse a condition path: `args.a.b`, `args.items[0]`, `args["key.with.dots"]`,
    /// `subject.grant|session|agent`, `subject.attributes.<key>`, `server`, `tool`.
    pub fn parse(text: &str) -> Result<Path, String> {
        let root_end = text.find(['.', '[']).unwrap_or(text.len());
        let (root_name, rest) = text.split_at(root_end);
        let root = match root_name {
            "args" => PathRoot::Args,
            "subject" => PathRoot::Subject,
            "server" => PathRoot::Server,
            "tool" => PathRoot::Tool,
            "marks" => PathRoot::Marks,
            _ => return Err(format!("{ROOT_ERROR}, found {text:?}")),
        };
        let segments = parse_segments(rest).map_err(|e| format!("invalid path {text:?}: {e}"))?;
        match root {
            PathRoot::Args if segments.is_empty() => {
                return Err("args needs at least one segment, e.g. args.amount".into());
            }
            PathRoot::Args => {}
            PathRoot::Subject => check_subject(&segments)?,
            PathRoot::Server if !segments.is_empty() => {
                return Err(format!(
                    "{root_name} takes no further segments, found {text:?}"
                ));
            }
            PathRoot::Server => {}
            PathRoot::Tool => check_tool(&segments)?,
            PathRoot::Marks => match &segments[..] {
                [] | [Segment::Key(_)] => {}
                _ => {
                    return Err(format!(
                        "marks takes at most one key, a mark's name, found {text:?}"
                    ))
                }
            },
        }
        Ok(Path {
            root,
            segments,
            text: text.to_owned(),
        })
    }
}

/// `tool` (its name), `tool.title`, `tool.annotations.HINT`.
fn check_tool(segments: &[Segment]) -> Result<(), String> {
    match segments {
        [] => Ok(()),
        [Segment::Key(k)] if k == "title" => Ok(()),
        [Segment::Key(k), Segment::Key(hint)] if k == "annotations" => {
            if Hints::NAMES.contains(&hint.as_str()) {
                Ok(())
            } else {
                Err(format!(
                    "unknown annotation {hint:?}; expected one of: {}",
                    Hints::NAMES.join(", ")
                ))
            }
        }
        _ => Err(format!(
            "tool takes no segment, title, or annotations.<hint> ({})",
            Hints::NAMES.join(", ")
        )),
    }
}

fn check_subject(segments: &[Segment]) -> Result<(), String> {
    match segments {
        [] => Err(format!("subject needs a field: {SUBJECT_FIELDS}")),
        [Segment::Key(field), rest @ ..]
            if matches!(field.as_str(), "grant" | "session" | "agent") =>
        {
            if rest.is_empty() {
                Ok(())
            } else {
                Err(format!("subject.{field} takes no further segments"))
            }
        }
        [Segment::Key(field), rest @ ..] if field == "attributes" => match rest {
            [Segment::Key(_)] => Ok(()),
            _ => {
                Err("subject.attributes takes exactly one key, e.g. subject.attributes.team".into())
            }
        },
        [Segment::Key(field), ..] => Err(format!(
            "unknown subject field {field:?}; expected {SUBJECT_FIELDS}"
        )),
        [Segment::Index(_), ..] => {
            Err(format!("subject has no indexes; expected {SUBJECT_FIELDS}"))
        }
    }
}

/// Segments after the root: `.key`, `[index]`, `["quoted key"]` (or single quotes).
fn parse_segments(mut rest: &str) -> Result<Vec<Segment>, String> {
    let mut segments = Vec::new();
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix('.') {
            let end = after.find(['.', '[', ']']).unwrap_or(after.len());
            if end == 0 {
                return Err("empty segment".into());
            }
            segments.push(Segment::Key(after[..end].to_owned()));
            rest = &after[end..];
            if rest.starts_with(']') {
                return Err("unexpected ']'".into());
            }
        } else if let Some(after) = rest.strip_prefix('[') {
            let (segment, remaining) = bracket_segment(after)?;
            segments.push(segment);
            rest = remaining;
        } else {
            return Err(format!("expected '.' or '[' before {rest:?}"));
        }
    }
    Ok(segments)
}

/// The inside of `[...]` (after the `[`), and the text after the `]`.
fn bracket_segment(after: &str) -> Result<(Segment, &str), String> {
    let Some(quote) = after.chars().next().filter(|c| *c == '"' || *c == '\'') else {
        let end = after.find(']').ok_or("unclosed '['")?;
        let digits = &after[..end];
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!(
                "bad index [{digits}]: expected a non-negative integer or a quoted key"
            ));
        }
        let index = digits
            .parse()
            .map_err(|_| format!("index [{digits}] is too large"))?;
        return Ok((Segment::Index(index), &after[end + 1..]));
    };
    // A quoted key: a backslash takes the next character literally.
    let mut key = String::new();
    let mut chars = after.char_indices().skip(1);
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' => key.push(chars.next().ok_or("unterminated quoted key")?.1),
            c if c == quote => {
                let remaining = &after[i + 1..];
                let remaining = remaining
                    .strip_prefix(']')
                    .ok_or("expected ']' after a quoted key")?;
                return Ok((Segment::Key(key), remaining));
            }
            c => key.push(c),
        }
    }
    Err("unterminated quoted key".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(path: &str) -> Vec<Segment> {
        Path::parse(path)
            .unwrap_or_else(|e| panic!("{path}: {e}"))
            .segments
    }

    #[test]
    fn paths() {
        use Segment::{Index, Key};
        assert_eq!(keys("args.a.b"), [Key("a".into()), Key("b".into())]);
        assert_eq!(
            keys("args.items[0].name"),
            [Key("items".into()), Index(0), Key("name".into())]
        );
        assert_eq!(
            keys(r#"args["key.with.dots"]"#),
            [Key("key.with.dots".into())]
        );
        assert_eq!(keys(r#"args['it\'s'][2]"#), [Key("it's".into()), Index(2)]);
        assert_eq!(
            keys("subject.attributes.team"),
            [Key("attributes".into()), Key("team".into())]
        );
        assert_eq!(keys("subject.agent"), [Key("agent".into())]);
        assert!(keys("server").is_empty() && keys("tool").is_empty());
        assert_eq!(Path::parse("tool").unwrap().root, PathRoot::Tool);
        for bad in [
            "env.x",
            "",
            "args",
            "args.",
            "args..a",
            "args.a[",
            "args.a[-1]",
            "args.a[x]",
            "args.a[]",
            "args.a]",
            "args[\"a\"",
            "argsx.a",
            "subject",
            "subject.foo",
            "subject.attributes",
            "subject.attributes.a.b",
            "subject.agent.x",
            "server.x",
            "tool[0]",
        ] {
            assert!(Path::parse(bad).is_err(), "{bad:?} should be rejected");
        }
        assert_eq!(
            Path::parse("env.x").unwrap_err(),
            "path must start with args., subject., server, tool or marks, found \"env.x\""
        );
    }
}
