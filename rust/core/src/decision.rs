//! What a decision says (DESIGN.md §4).

use std::sync::Arc;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verdict {
    Allow,
    Deny,
    RequireApproval,
}

impl Verdict {
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
}

impl Code {
    pub const ALL: [Code; 8] = [
        Code::Allowed,
        Code::Hidden,
        Code::DefaultDeny,
        Code::RuleDeny,
        Code::ConditionFailed,
        Code::RateLimited,
        Code::ApprovalRequired,
        Code::InvalidRequest,
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

/// The state of one limit a decision touched.
#[derive(Debug, Clone, PartialEq)]
pub struct LimitState {
    pub counter: Arc<str>,
    /// JSON pointer of the limit in the policy.
    pub rule: Arc<str>,
    pub scope: &'static str,
    pub max: f64,
    /// Room left after this decision (calls, or cost units of the policy).
    pub remaining: f64,
    /// Milliseconds until everything now counted has left the window.
    pub reset_in_ms: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// What the proxy must do. In shadow mode always ALLOW; `code` says what enforcing would.
    pub verdict: Verdict,
    pub code: Code,
    pub reason: Arc<str>,
    /// JSON pointer of the policy entry that decided.
    pub rule: Arc<str>,
    /// For RATE_LIMITED: milliseconds until the call could be allowed; `None` if never.
    pub retry_after_ms: Option<u64>,
    pub limits: Vec<LimitState>,
    pub revision: Arc<str>,
    pub shadow: bool,
    /// Reservation id to give counters back with; `None` if nothing was reserved.
    pub reservation: Option<u64>,
}
