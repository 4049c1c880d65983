//! What an MCP request names, and so which of a policy section's maps finds its rule: a
//! tool (`tools/call`), a resource (`resources/read`, `resources/subscribe`), a prompt
//! (`prompts/get`), or, for a method that names none of these, the method itself.

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
    /// ([`crate::tasks`]), not what a rule says.
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
