//! What a decision says: verdict, code, reason, rule, limits, reservation.

use crate::policy::compile::{CompiledPolicy, LimitId, LimitInfo, TextId};
use std::sync::Arc;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verdict {
    Allow,
    Deny,
    RequireApproval,
}

impl Verdict {
    pub const ALL: [Verdict; 3] = [Verdict::Allow, Verdict::Deny, Verdict::RequireApproval];

    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Allow => "ALLOW",
            Verdict::Deny => "DENY",
            Verdict::RequireApproval => "REQUIRE_APPROVAL",
        }
    }
}

/// Stable, machine-readable reason codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Code {
    Allowed,
    Hidden,
    DefaultDeny,
    RuleDeny,
    ConditionFailed,
    RateLimited,
    ApprovalRequired,
    InvalidRequest,
    /// An approver refused this call's approval.
    ApprovalDenied,
    /// The shared counter store (Redis) did not answer within its budget: the call's limits
    /// could not be counted, so it is denied (`--store-unavailable deny`).
    StoreUnavailable,
    /// The tool's server listed it differently from its pin: withheld until pinned again.
    ToolChanged,
    /// The tool has no pin, and the policy's `pins` withholds unpinned tools.
    ToolUnpinned,
    /// The user is asked to confirm the call in their MCP client (an input-required result
    /// behind Envoy); the call runs when they confirm it.
    ConfirmationRequired,
    /// The user declined the call in their client.
    ConfirmationDeclined,
    /// The user's confirmation came back after its time to answer.
    ConfirmationExpired,
    /// The confirmation is not this call's (changed arguments, another caller, another
    /// policy), was altered, or was already used.
    ConfirmationInvalid,
    /// The call needs the user's confirmation and its client cannot be asked; the rule's
    /// fallback is to deny.
    ConfirmationUnavailable,
}

impl From<crate::definitions::definition::DriftKind> for Code {
    /// What a call of a tool its pins withhold is denied with.
    fn from(kind: crate::definitions::definition::DriftKind) -> Code {
        match kind {
            crate::definitions::definition::DriftKind::Changed => Code::ToolChanged,
            crate::definitions::definition::DriftKind::Unpinned => Code::ToolUnpinned,
        }
    }
}

impl Code {
    pub const ALL: [Code; 17] = [
        Code::Allowed,
        Code::Hidden,
        Code::DefaultDeny,
        Code::RuleDeny,
        Code::ConditionFailed,
        Code::RateLimited,
        Code::ApprovalRequired,
        Code::InvalidRequest,
        Code::ApprovalDenied,
        Code::StoreUnavailable,
        Code::ToolChanged,
        Code::ToolUnpinned,
        Code::ConfirmationRequired,
        Code::ConfirmationDeclined,
        Code::ConfirmationExpired,
        Code::ConfirmationInvalid,
        Code::ConfirmationUnavailable,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Code::Allowed => "ALLOWED",
            Code::Hidden => "HIDDEN",
            Code::DefaultDeny => "DEFAULT_DENY",
            Code::RuleDeny => "RULE_DENY",
            Code::ConditionFailed => "CONDITION_FAILED",
            Code::RateLimited => "RATE_LIMITED",
            Code::ApprovalRequired => "APPROVAL_REQUIRED",
            Code::InvalidRequest => "INVALID_REQUEST",
            Code::ApprovalDenied => "APPROVAL_DENIED",
            Code::StoreUnavailable => "STORE_UNAVAILABLE",
            Code::ToolChanged => "TOOL_CHANGED",
            Code::ToolUnpinned => "TOOL_UNPINNED",
            Code::ConfirmationRequired => "CONFIRMATION_REQUIRED",
            Code::ConfirmationDeclined => "CONFIRMATION_DECLINED",
            Code::ConfirmationExpired => "CONFIRMATION_EXPIRED",
            Code::ConfirmationInvalid => "CONFIRMATION_INVALID",
            Code::ConfirmationUnavailable => "CONFIRMATION_UNAVAILABLE",
        }
    }

    pub fn verdict(self) -> Verdict {
        match self {
            Code::Allowed => Verdict::Allow,
            Code::ApprovalRequired => Verdict::RequireApproval,
            _ => Verdict::Deny,
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

/// A string a decision returns: one of the policy's, or one made for this decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Text {
    Policy(TextId),
    Owned(Box<str>),
}

impl From<TextId> for Text {
    fn from(id: TextId) -> Text {
        Text::Policy(id)
    }
}

impl From<String> for Text {
    fn from(s: String) -> Text {
        Text::Owned(s.into())
    }
}

impl From<&str> for Text {
    fn from(s: &str) -> Text {
        Text::Owned(s.into())
    }
}

/// The limits one decision touched; most calls touch one or two, kept inline.
pub type Limits = smallvec::SmallVec<[LimitState; 2]>;

/// The state of one limit a decision touched; what the limit is comes from
/// [`Decision::limit_of`].
#[derive(Debug, Clone, PartialEq)]
pub struct LimitState {
    pub(crate) limit: LimitId,
    /// Room left after this decision, in thousandths of a call or of the policy's cost
    /// unit; [`LimitState::remaining`] converts (only when asked: not every caller reads it).
    pub(crate) remaining_units: u64,
    /// Milliseconds until everything now counted has left the window.
    pub reset_in_ms: u64,
}

impl LimitState {
    /// Room left after this decision (calls, or cost units of the policy).
    pub fn remaining(&self) -> f64 {
        crate::counter::from_units(self.remaining_units)
    }
}

/// The answer for one call. Strings are read through the policy that decided, which the
/// decision keeps alive.
#[derive(Clone)]
pub struct Decision {
    /// What the proxy must do. In shadow mode always ALLOW; `code` says what enforcing would.
    pub verdict: Verdict,
    pub code: Code,
    pub(crate) reason: Text,
    pub(crate) rule: Text,
    /// For RATE_LIMITED: milliseconds until the call could be allowed; `None` if never.
    pub retry_after_ms: Option<u64>,
    pub limits: Limits,
    pub shadow: bool,
    /// Reservation id to give counters back with; `None` if nothing was reserved.
    pub reservation: Option<u64>,
    /// The human approval this decision is about: waiting for (REQUIRE_APPROVAL), used
    /// (an approved call, ALLOW) or refused (APPROVAL_DENIED).
    pub approval: Option<crate::asking::approval::ApprovalId>,
    /// The marks the decision read and set; `None` when its rules use none.
    pub marks: Option<Box<crate::counter::marks::MarksSeen>>,
    /// The user's confirmation in their client: asked for, or given (an allowed call).
    pub confirmation: Option<Box<Confirmation>>,
    pub(crate) policy: Arc<CompiledPolicy>,
}

/// Where a call's confirmation by its user stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Confirmation {
    /// The user is asked `question`; their answer comes back under `token`.
    Asked { token: String, question: String },
    /// The user confirmed the call: it runs.
    Confirmed,
}

impl Confirmation {
    /// As the decision log writes it.
    pub fn as_str(&self) -> &'static str {
        match self {
            Confirmation::Asked { .. } => "asked",
            Confirmation::Confirmed => "confirmed",
        }
    }
}

impl Decision {
    fn text<'a>(&'a self, t: &'a Text) -> &'a str {
        match t {
            Text::Policy(id) => self.policy.text(*id),
            Text::Owned(s) => s,
        }
    }

    /// Text for the agent.
    pub fn reason(&self) -> &str {
        self.text(&self.reason)
    }

    /// JSON pointer of the policy entry that decided.
    pub fn rule(&self) -> &str {
        self.text(&self.rule)
    }

    /// The deciding policy's revision.
    pub fn revision(&self) -> &str {
        &self.policy.revision
    }

    /// The policy that decided.
    pub fn policy(&self) -> &CompiledPolicy {
        &self.policy
    }

    /// The limit a limit state is of: its scope, max and window.
    /// The limit to report: the one that denied the call, or else the one with the least
    /// room left.
    pub fn reported_limit(&self) -> Option<&LimitState> {
        if self.code == Code::RateLimited {
            if let Some(l) = self.limits.iter().find(|l| self.rule_of(l) == self.rule()) {
                return Some(l);
            }
        }
        self.limits.iter().min_by_key(|l| l.remaining_units)
    }

    pub fn limit_of(&self, state: &LimitState) -> &LimitInfo {
        self.policy.limit(state.limit)
    }

    /// The counter a limit state belongs to.
    pub fn counter_of(&self, state: &LimitState) -> &str {
        self.policy.text(self.limit_of(state).counter)
    }

    /// JSON pointer of a limit state's limit.
    pub fn rule_of(&self, state: &LimitState) -> &str {
        self.policy.text(self.limit_of(state).rule)
    }
}

impl std::fmt::Debug for Decision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Decision")
            .field("verdict", &self.verdict)
            .field("code", &self.code)
            .field("reason", &self.reason())
            .field("rule", &self.rule())
            .field("retry_after_ms", &self.retry_after_ms)
            .field("limits", &self.limits)
            .field("revision", &self.revision())
            .field("shadow", &self.shadow)
            .field("reservation", &self.reservation)
            .field("approval", &self.approval)
            .finish()
    }
}
