//! Every key of the policy language, by the object it belongs to, with what it means: the
//! loader accepts exactly these (any other key is an error), and docs/policy-keys.md is
//! written from them (`toolgate._core.policy_keys`), so the two cannot differ.

/// One key of an object, and what it means (Markdown, links relative to docs/).
#[derive(Debug, Clone, Copy)]
pub struct Key {
    pub name: &'static str,
    pub meaning: &'static str,
}

const fn key(name: &'static str, meaning: &'static str) -> Key {
    Key { name, meaning }
}

/// The keys' names, for messages.
pub fn names(keys: &[Key]) -> String {
    keys.iter().map(|k| k.name).collect::<Vec<_>>().join(", ")
}

/// Whether `name` is one of `keys`.
pub fn has(keys: &[Key], name: &str) -> bool {
    keys.iter().any(|k| k.name == name)
}

/// The top level, and each `servers` section.
pub const SECTION: &[Key] = &[
    key("version", "required, `\"1\"` (optional inside a `servers` section)"),
    key(
        "default",
        "`deny` (default) or `allow`: what happens to a tool (resource, prompt, method) no rule names",
    ),
    key(
        "hide",
        "list of tool names or globs: denied (`HIDDEN`) before anything else; or `{tools, resources, prompts}`, a list for each",
    ),
    key(
        "all_tools",
        "a rule applied to every tool call in addition to the tool's own rule",
    ),
    key(
        "tools",
        "map from tool name or glob to a rule; a name is one MCP allows (1 to 128 of `A-Z a-z 0-9 _ - .`), so `create ami` is refused as the typo it most likely is (a server naming its tools otherwise is matched with a glob)",
    ),
    key(
        "resources",
        "map from resource URI or glob to a rule ([policy.md](policy.md#resources-prompts-and-every-other-method))",
    ),
    key("prompts", "map from prompt name or glob to a rule"),
    key(
        "methods",
        "map from an MCP method's name (or glob) to a rule, for methods that name no tool, resource or prompt",
    ),
    key(
        "servers",
        "map from MCP server id to a section with the keys above; a request for a server without a section uses the top level",
    ),
    key(
        "mode",
        "`enforce` (default) or `shadow`: decide and report, but always allow",
    ),
    key(
        "pins",
        "`{file, mode, unpinned}`: hold the server's tools to their definitions as reviewed ([below](#pins))",
    ),
    key(
        "trust_annotations",
        "`true`: conditions read the tools' own annotations (`readOnlyHint`...); default `false`: every hint reads as MCP's default",
    ),
];

/// A rule: of a tool, a resource, a prompt, a method, or `all_tools`.
pub const RULE: &[Key] = &[
    key(
        "action",
        "`allow` (default), `deny`, `require_approval`, `require_confirmation`",
    ),
    key("reason", "text returned to the agent when this rule denies"),
    key("mode", "`enforce` or `shadow` for this rule only"),
    key(
        "limits",
        "list of limits ([below](#limits)); every one must have room or the call is denied",
    ),
    key(
        "require",
        "conditions ([below](#conditions)) that must all hold",
    ),
    key("deny_if", "conditions of which any one holding denies"),
    key(
        "approval",
        "with `require_approval` (or `require_confirmation` whose fallback is `approval`): `{timeout, approvers}` ([below](#approval))",
    ),
    key(
        "confirmation",
        "with `require_confirmation`: `{message, timeout, fallback}` ([below](#confirmation))",
    ),
    key(
        "log",
        "argument paths the decision log writes in clear, e.g. `[\"args.amount\", \"args.currency\"]`; other argument values are never logged ([decisions.md](decisions.md#the-decision-log))",
    ),
    key(
        "release_on_failure",
        "which calls that fail upstream give their limits back, where a proxy follows the answer ([envoy.md](envoy.md#failed-calls-give-their-limits-back)): `true` (default) those the server refused before running them (an HTTP 4xx, a JSON-RPC parse, request, method or params error); `\"tool_error\"` those and results with `isError: true` (for a tool that reports errors only when it did nothing); `false` none. Unset on a tool's rule, `all_tools`' setting applies",
    ),
    key(
        "marks",
        "list of marks ([below](#marks)) this call sets when it is allowed",
    ),
];

/// `hide` as an object.
pub const HIDE: &[Key] = &[
    key("tools", "tool names or globs"),
    key("resources", "resource URIs or globs"),
    key("prompts", "prompt names or globs"),
];

/// `pins`.
pub const PINS: &[Key] = &[
    key(
        "file",
        "the pins file, relative to the policy's directory; it reloads with the policy (`toolgate serve` watches both)",
    ),
    key(
        "mode",
        "`enforce` (default): withhold changed tools; `shadow`: count and log drift, withhold nothing",
    ),
    key(
        "unpinned",
        "`hide` (default): a tool with no pin is withheld as well; `allow`: only changed tools are",
    ),
];

/// One of a rule's `marks`.
pub const MARK: &[Key] = &[
    key(
        "name",
        "the mark's name, read by conditions as `marks.NAME` ([policy.md](policy.md#marks-and-flow-rules))",
    ),
    key(
        "scope",
        "whose mark it is, as for limits: `grant`, `session` or `agent`",
    ),
    key(
        "ttl",
        "how long it lasts, a duration as a limit's window (`8h`); a mark has one scope and one ttl wherever it is set",
    ),
];

/// One of a rule's `limits`.
pub const LIMIT: &[Key] = &[
    key(
        "counter",
        "the counter's name; tools naming the same counter share it (the same name with another window, max, scope or cost-ness is an error)",
    ),
    key(
        "window",
        "`second`, `minute`, `hour`, `day`; a number of seconds (`60`, `0.5`); or one or more `<integer><unit>` parts, units `ms s m h d` (`90s`, `1h30m`)",
    ),
    key(
        "max",
        "calls allowed in any window (an integer ≥ 1), or with `cost` the budget (any positive number); at most 10⁹",
    ),
    key(
        "scope",
        "whose counter it is: `grant`, `session`, `agent`, `server`, `global` (default)",
    ),
    key(
        "cost",
        "an argument path (`args.amount`) whose value is counted instead of 1, for spend limits",
    ),
];

/// A rule's `approval`.
pub const APPROVAL: &[Key] = &[
    key(
        "timeout",
        "how long a pending approval waits for an approver, and then how long the approved call has to run (default `15m`)",
    ),
    key(
        "approvers",
        "who may decide it; without it, anyone holding an admin token may ([approvals.md](approvals.md))",
    ),
];

/// A rule's `confirmation`.
pub const CONFIRMATION: &[Key] = &[
    key(
        "message",
        "the question the user is asked in their MCP client; `{args.PATH}` shows an argument, inert",
    ),
    key(
        "timeout",
        "how long the user has to answer (default `5m`, at most `24h`)",
    ),
    key(
        "fallback",
        "what a client that cannot be asked gets: `deny` (default) or `approval` ([approvals.md](approvals.md#confirmation-in-the-users-client))",
    ),
];

/// A group of conditions, as PolicyLayer's format writes them.
pub const GROUP: &[Key] = &[
    key("conditions", "the conditions, all of which must hold"),
    key("on_deny", "the reason when the group fails"),
];

/// A comparison.
pub const COMPARE: &[Key] = &[
    key(
        "path",
        "what is compared: `args.a.b`, `subject.grant`, `tool.annotations.readOnlyHint`, `marks.NAME`... ([policy.md](policy.md#conditions))",
    ),
    key(
        "op",
        "the comparison (`eq`, `lt`, `in`, `regex`, `exists`...: [policy.md](policy.md#conditions))",
    ),
    key("value", "what the path is compared with (not for `exists`)"),
];

/// A combinator: exactly one of these, instead of a comparison.
pub const COMBINATOR: &[Key] = &[
    key("all", "a list of conditions that must all hold"),
    key("any", "a list of conditions of which one must hold"),
    key("not", "a condition that must not hold"),
];

/// Every object, by the heading its table has in docs/policy-keys.md.
pub const OBJECTS: &[(&str, &[Key])] = &[
    ("Top level (and each `servers` section)", SECTION),
    ("Rules", RULE),
    ("Limits", LIMIT),
    ("Conditions", COMPARE),
    ("Combinators", COMBINATOR),
    ("Condition groups", GROUP),
    ("Approval", APPROVAL),
    ("Confirmation", CONFIRMATION),
    ("Marks", MARK),
    ("Pins", PINS),
    ("Hide", HIDE),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_object_names_a_key_twice() {
        for (heading, keys) in OBJECTS {
            let mut seen: Vec<&str> = keys.iter().map(|k| k.name).collect();
            seen.sort_unstable();
            let before = seen.len();
            seen.dedup();
            assert_eq!(seen.len(), before, "{heading}");
            assert!(keys.iter().all(|k| !k.meaning.is_empty()), "{heading}");
        }
    }
}
