//! Who is calling: a call's grant, session and agent, read from a proxy's request as the
//! sidecar is configured (`--grant-from`, `--session-from`, `--agent-from` and the header
//! names). A header is the client's to choose; a claim of a token the proxy verified is not.
//! MCP 2026-07-28 clients send no session header at all: their session, if any, is a claim
//! of their token (`--session-from jwt:sid`). Envoy's
//! `Check` and agentgateway's ExtMCP carry headers and verified claims each their own way;
//! both are read here, through [`CallerFacts`], so a caller is the same caller on either.

use crate::credential::{self, Refused};
use envoy_types::pb::google::protobuf::Struct;
use std::borrow::Cow;
use toolgate_core::counter::Peer;
use toolgate_core::Subject;

/// Where one part of the subject comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubjectSource {
    /// A request header (lower case). For `authorization`, the token of a `Bearer` value;
    /// for any other header, the whole value.
    Header(String),
    /// A claim of the JWT payload the proxy verified and passed on under
    /// [`AuthzConfig::jwt_payload_key`] (Envoy: `jwt_authn`'s `payload_in_metadata`;
    /// agentgateway: a `metadata` entry whose CEL is `jwt`).
    JwtClaim(String),
}

/// How callers are read, and Envoy's body limit.
#[derive(Debug, Clone)]
pub struct AuthzConfig {
    pub grant: SubjectSource,
    pub agent: SubjectSource,
    pub session: SubjectSource,
    /// The header naming the MCP server when the route sets no `server` extension.
    pub server_header: String,
    pub jwt_payload_key: String,
    /// Envoy's `max_request_bytes`: a body of this size without a `content-length` may have
    /// been cut there, and is refused.
    pub max_request_bytes: usize,
}

impl SubjectSource {
    /// `--grant-from`, `--session-from`, `--agent-from`: `header` (the header named
    /// `header`, which must be a non-empty lower-case name) or `jwt:CLAIM`. `part` names
    /// the part of the subject in an error.
    pub fn from_option(text: &str, header: &str, part: &str) -> Result<SubjectSource, String> {
        match text.split_once(':') {
            None if text == "header" => header_name(header, part).map(SubjectSource::Header),
            Some(("jwt", claim)) if !claim.is_empty() => Ok(SubjectSource::JwtClaim(claim.into())),
            _ => Err(format!(
                "--{part}-from is 'header' or 'jwt:CLAIM', got {text:?}"
            )),
        }
    }
}

/// A header name as the proxy sends it: lower case, and not empty.
pub fn header_name(name: &str, part: &str) -> Result<String, String> {
    if name.is_empty() || name != name.to_ascii_lowercase() {
        return Err(format!(
            "--{part}-header must be a non-empty lower-case name, got {name:?}"
        ));
    }
    Ok(name.to_owned())
}

/// MCP's session header (2025 revisions), lower case.
pub const MCP_SESSION_HEADER: &str = "mcp-session-id";

/// Envoy's default `max_request_bytes` in the configs this project ships.
pub const DEFAULT_MAX_REQUEST_BYTES: usize = 1 << 20;

impl Default for AuthzConfig {
    fn default() -> Self {
        AuthzConfig {
            grant: SubjectSource::Header("authorization".into()),
            agent: SubjectSource::Header("x-agent-id".into()),
            session: SubjectSource::Header(MCP_SESSION_HEADER.into()),
            server_header: "x-mcp-server".into(),
            jwt_payload_key: "jwt_payload".into(),
            max_request_bytes: DEFAULT_MAX_REQUEST_BYTES,
        }
    }
}

/// What a proxy tells of a caller.
pub trait CallerFacts<'a> {
    /// Every value of header `name` (lower case), in order.
    fn header_values(&self, name: &str) -> Vec<&'a str>;

    /// The payload of the token the proxy verified, passed on under `key`.
    fn verified_payload(&self, key: &str) -> Option<&'a Struct>;

    /// The network address the request came from, when the proxy says.
    fn peer(&self) -> Peer {
        Peer::UNKNOWN
    }

    /// Header `name`'s value when it is sent once and is not empty.
    fn header(&self, name: &str) -> Option<&'a str> {
        self.header_values(name)
            .into_iter()
            .next()
            .filter(|v| !v.is_empty())
    }
}

/// A caller as read: a part that could not be read is refused, with why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadSubject<'a> {
    pub grant: Result<Option<String>, Refused>,
    pub agent: Result<Option<String>, Refused>,
    /// A header's value as it came; a claim's, copied.
    pub session: Result<Option<Cow<'a, str>>, Refused>,
    pub grant_verified: bool,
    pub peer: Peer,
}

impl<'a> ReadSubject<'a> {
    /// Read the caller from `facts` as `config` says.
    pub fn read(facts: &impl CallerFacts<'a>, config: &AuthzConfig) -> ReadSubject<'a> {
        let mut grant = part(&config.grant, true, facts, config);
        if matches!(config.grant, SubjectSource::JwtClaim(_)) && matches!(grant, Ok(None)) {
            grant = Err(Refused(
                "the verified token has no claim to count the caller on".into(),
            ));
        }
        let session = match &config.session {
            SubjectSource::Header(name) => single_header(facts, name).map(|s| s.map(Cow::Borrowed)),
            claim => part(claim, false, facts, config).map(|s| s.map(Cow::Owned)),
        };
        ReadSubject {
            grant,
            agent: part(&config.agent, false, facts, config),
            session,
            grant_verified: matches!(config.grant, SubjectSource::JwtClaim(_)),
            peer: facts.peer(),
        }
    }

    /// The subject, as far as it was read: a refused part is left out.
    pub fn subject(&self) -> Subject<'_> {
        Subject {
            grant: self.grant.as_ref().ok().and_then(Option::as_deref),
            session: self.session.as_ref().ok().and_then(Option::as_deref),
            agent: self.agent.as_ref().ok().and_then(Option::as_deref),
            attributes: &[],
            grant_verified: self.grant_verified,
            peer: self.peer,
        }
    }

    /// Why the caller is refused, if a part of it was.
    pub fn refused(&self) -> Option<&str> {
        let refused = (self.grant.as_ref().err())
            .or(self.agent.as_ref().err())
            .or(self.session.as_ref().err());
        refused.map(|Refused(why)| why.as_str())
    }
}

/// One part of the subject, from where the configuration says. A `credential` (the grant)
/// taken from a verified token is its issuer and claim together
/// ([`credential::verified_identity`]).
fn part<'a>(
    source: &SubjectSource,
    credential: bool,
    facts: &impl CallerFacts<'a>,
    config: &AuthzConfig,
) -> Result<Option<String>, Refused> {
    match source {
        // Without a verified token there is no one to count on: every caller would share
        // one absent identity (its limits, its approvals).
        SubjectSource::JwtClaim(claim) => match facts.verified_payload(&config.jwt_payload_key) {
            Some(payload) if credential => credential::verified_identity(payload, claim),
            Some(payload) => {
                credential::verified_claim(payload, claim).map(|c| c.map(str::to_owned))
            }
            None => Err(Refused(format!(
                "the request carries no verified token (the proxy's verified JWT payload \
                 {:?}) to take the caller's {claim:?} from",
                config.jwt_payload_key
            ))),
        },
        SubjectSource::Header(name) if name == "authorization" => {
            match facts.header_values(name)[..] {
                [] => Ok(None),
                [value] => credential::bearer_token(value).map(|t| Some(t.into())),
                _ => Err(Refused(
                    "the Authorization header is sent more than once".into(),
                )),
            }
        }
        SubjectSource::Header(name) => single_header(facts, name).map(|v| v.map(str::to_owned)),
    }
}

/// Header `name`'s value when it is sent once (`None`: not sent, or empty). A header sent
/// more than once is refused, and so is one value with a comma, which Envoy makes of a
/// header sent twice: a server reads one of the values, so the caller (its session, agent
/// or server) would be read two ways; and one with spaces or tabs around it, which servers
/// trim.
pub fn single_header<'a>(
    facts: &impl CallerFacts<'a>,
    name: &str,
) -> Result<Option<&'a str>, Refused> {
    match facts.header_values(name)[..] {
        [] => Ok(None),
        [value] if value.contains(',') => Err(Refused(format!(
            "the {name} header holds a comma: it may be two headers joined, read two ways"
        ))),
        // Envoy passes an HTTP/2 value as sent, and servers trim it: " s" would be a
        // session of its own here and the server's "s" there.
        [value] if value.starts_with([' ', '\t']) || value.ends_with([' ', '\t']) => {
            Err(Refused(format!(
                "the {name} header has spaces or tabs around its value, which servers read \
                 without them"
            )))
        }
        [value] => Ok(Some(value).filter(|v| !v.is_empty())),
        _ => Err(Refused(format!("the {name} header is sent more than once"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Headers as a proxy hands them over: every value of a name, in order.
    struct Sent(Vec<(String, String)>);

    impl<'a> CallerFacts<'a> for &'a Sent {
        fn header_values(&self, name: &str) -> Vec<&'a str> {
            let Sent(headers) = *self;
            headers
                .iter()
                .filter(|(n, _)| n == name)
                .map(|(_, v)| v.as_str())
                .collect()
        }

        fn verified_payload(&self, _: &str) -> Option<&'a Struct> {
            None
        }
    }

    proptest! {
        /// The session and the agent are each read from one header instance, or refused:
        /// never the first of several, nor a value Envoy may have joined from two, nor one
        /// padded with spaces or tabs (which servers trim).
        #[test]
        fn an_identity_header_is_one_instance_or_refused(
            sessions in proptest::collection::vec("[ \t]?[a-f0-9,-]{0,6}[ \t]?", 0..3),
            agents in proptest::collection::vec("[ \t]?[a-z,]{1,4}[ \t]?", 0..3),
        ) {
            let mut headers: Vec<(String, String)> =
                vec![("authorization".into(), "Bearer t".into())];
            headers.extend(sessions.iter().map(|v| ("mcp-session-id".into(), v.clone())));
            headers.extend(agents.iter().map(|v| ("x-agent-id".into(), v.clone())));
            let sent = Sent(headers);
            let read = ReadSubject::read(&&sent, &AuthzConfig::default());
            let expect = |values: &[String]| match values {
                [] => Ok(None),
                [one] if one.contains(',') => Err(()),
                // Servers trim what Envoy may pass padded (HTTP/2).
                [one] if one.trim_matches([' ', '\t']) != one => Err(()),
                [one] => Ok(Some(one.clone()).filter(|v| !v.is_empty())),
                _ => Err(()),
            };
            let session = read.session.as_ref().map(|s| s.as_ref().map(|v| v.to_string()));
            prop_assert_eq!(session.map_err(|_| ()), expect(&sessions));
            prop_assert_eq!(read.agent.clone().map_err(|_| ()), expect(&agents));
            let refused = expect(&sessions).is_err() || expect(&agents).is_err();
            prop_assert_eq!(read.refused().is_some(), refused);
        }
    }
}
