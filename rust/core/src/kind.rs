//! What an MCP request names, and so which of a policy section's maps finds its rule: a
//! tool (`tools/call`), a resource (`resources/read`, `resources/subscribe`), a prompt
//! (`prompts/get`), or, for a method that names none of these, the method itself; and the
//! names MCP allows a tool.

/// Longest tool name MCP allows.
pub const MAX_TOOL_NAME: usize = 128;

/// Whether `name` is a tool name as the MCP specification (revision 2025-11-25, "Tool
/// names") asks for: "Tool names SHOULD be between 1 and 128 characters in length
/// (inclusive)" and "The following SHOULD be the only allowed characters: uppercase and
/// lowercase ASCII letters (A-Z, a-z), digits (0-9), underscore (_), dash (-), and dot (.)".
/// A call naming any other tool never opens an approval: a person would read its name.
pub fn is_mcp_tool_name(name: &str) -> bool {
    (1..=MAX_TOOL_NAME).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

/// What a decided request names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Kind {
    /// A tool, by name: `tools/call`.
    #[default]
    Tool,
    /// A resource, by URI (or URI template): `resources/read`, `resources/subscribe`, and
    /// `completion/complete` for a resource template.
    Resource,
    /// A prompt, by name: `prompts/get`, and `completion/complete` for a prompt.
    Prompt,
    /// A method that names no tool, resource or prompt, by its method name.
    Method,
}

impl Kind {
    pub const ALL: [Kind; 4] = [Kind::Tool, Kind::Resource, Kind::Prompt, Kind::Method];

    /// As one thing of the kind is called: `tool`, `resource`, `prompt`, `method`. The
    /// decision log's field for the name, and the word a reason uses.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Tool => "tool",
            Kind::Resource => "resource",
            Kind::Prompt => "prompt",
            Kind::Method => "method",
        }
    }

    /// The key of a policy section that maps names of the kind to rules.
    pub fn section_key(self) -> &'static str {
        match self {
            Kind::Tool => "tools",
            Kind::Resource => "resources",
            Kind::Prompt => "prompts",
            Kind::Method => "methods",
        }
    }

    /// Whether a list answer shows things of the kind (and `hide` can take them out).
    pub fn listed(self) -> bool {
        self != Kind::Method
    }

    pub fn parse(text: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == text)
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a list method's answer lists: the result's member holding the entries, the key
/// naming each entry, and what kind of thing an entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Listed {
    Tools,
    Resources,
    ResourceTemplates,
    Prompts,
    /// `tasks/list` (the task extension): each caller is shown the tasks it created
    /// ([`crate::owners::tasks`]), not what a rule says.
    Tasks,
}

impl Listed {
    pub const ALL: [Listed; 5] = [
        Listed::Tools,
        Listed::Resources,
        Listed::ResourceTemplates,
        Listed::Prompts,
        Listed::Tasks,
    ];

    /// The method whose answer this is.
    pub fn method(self) -> &'static str {
        match self {
            Listed::Tools => "tools/list",
            Listed::Resources => "resources/list",
            Listed::ResourceTemplates => "resources/templates/list",
            Listed::Prompts => "prompts/list",
            Listed::Tasks => "tasks/list",
        }
    }

    pub fn of_method(method: &str) -> Option<Listed> {
        Listed::ALL.into_iter().find(|l| l.method() == method)
    }

    /// The result's member that holds the entries.
    pub fn member(self) -> &'static str {
        match self {
            Listed::Tools => "tools",
            Listed::Resources => "resources",
            Listed::ResourceTemplates => "resourceTemplates",
            Listed::Prompts => "prompts",
            Listed::Tasks => "tasks",
        }
    }

    pub fn of_member(member: &str) -> Option<Listed> {
        Listed::ALL.into_iter().find(|l| l.member() == member)
    }

    /// The key of an entry that names it (what a policy matches).
    pub fn name_key(self) -> &'static str {
        match self {
            Listed::Tools | Listed::Prompts => "name",
            Listed::Resources => "uri",
            Listed::ResourceTemplates => "uriTemplate",
            Listed::Tasks => "taskId",
        }
    }

    /// What an entry is: a template names resources, and is matched as one.
    pub fn kind(self) -> Kind {
        match self {
            Listed::Tools => Kind::Tool,
            Listed::Resources | Listed::ResourceTemplates => Kind::Resource,
            Listed::Prompts => Kind::Prompt,
            // A task is reached by the method that reaches it, whose rule it answers to.
            Listed::Tasks => Kind::Method,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tool_names_are_those_mcp_allows() {
        for ok in [
            "getUser",
            "DATA_EXPORT_v2",
            "admin.tools.list",
            "a",
            &"x".repeat(128),
        ] {
            assert!(is_mcp_tool_name(ok), "{ok}");
        }
        for bad in [
            "",
            &"x".repeat(129),
            "list\n\u{1b}[2Kok",
            "a b",
            "a,b",
            "user/update",
            "naïve",
            "<!channel>",
            "a`b",
        ] {
            assert!(!is_mcp_tool_name(bad), "{bad:?}");
        }
    }
}
