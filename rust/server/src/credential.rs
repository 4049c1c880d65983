//! Who is calling, from what the proxy passes on: a bearer token, or a claim of a JWT that
//! the proxy verified.
//!
//! A grant is a counter key, so one credential must give one grant whatever its spelling,
//! and a value that is not a credential must not be counted at all: an `Authorization`
//! value is read by RFC 6750's grammar, exactly, and anything else is refused.

use envoy_types::pb::envoy::config::core::v3::Metadata;
use envoy_types::pb::google::protobuf::value::Kind;

/// Where Envoy's `jwt_authn` filter puts what it verified.
pub const JWT_AUTHN_NAMESPACE: &str = "envoy.filters.http.jwt_authn";

/// Why a credential was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused(pub String);

/// The token of an `Authorization: Bearer <token>` value (RFC 6750 §2.1:
/// `"Bearer" 1*SP b64token`, the scheme in any case). Anything else is refused: another
/// scheme, a tab or comma (two `Authorization` headers reach toolgate joined by a comma),
/// text after the token.
pub fn bearer_token(value: &str) -> Result<&str, Refused> {
    let refused = |why: &str| Refused(format!("the Authorization header {why}"));
    let Some((scheme, rest)) = value.split_once(' ') else {
        return Err(refused("is not \"Bearer <token>\""));
    };
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(refused("does not use the Bearer scheme"));
    }
    let token = rest.trim_start_matches(' ');
    if !is_b64token(token) {
        return Err(refused(
            "holds more than one token, or characters a bearer token cannot have",
        ));
    }
    Ok(token)
}

/// RFC 6750's `b64token`: `1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="`.
fn is_b64token(token: &str) -> bool {
    let body = token.trim_end_matches('=');
    !body.is_empty()
        && body
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~+/".contains(&b))
}

/// The string claim `claim` of the JWT payload that `jwt_authn` stored under `payload_key`
/// (its `payload_in_metadata`). `None` when there is no verified payload or it lacks the
/// claim; refused when the claim is not a non-empty string.
pub fn jwt_claim(
    metadata: Option<&Metadata>,
    payload_key: &str,
    claim: &str,
) -> Result<Option<String>, Refused> {
    let payload = metadata
        .and_then(|m| m.filter_metadata.get(JWT_AUTHN_NAMESPACE))
        .and_then(|s| s.fields.get(payload_key))
        .and_then(|v| match &v.kind {
            Some(Kind::StructValue(s)) => Some(s),
            _ => None,
        });
    let Some(value) = payload.and_then(|p| p.fields.get(claim)) else {
        return Ok(None);
    };
    match &value.kind {
        Some(Kind::StringValue(s)) if !s.is_empty() => Ok(Some(s.clone())),
        _ => Err(Refused(format!(
            "the verified token's claim {claim:?} is not a non-empty string"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::google::protobuf::{Struct, Value};
    use proptest::prelude::*;

    #[test]
    fn reads_bearer_tokens_by_the_rfc() {
        for (value, token) in [
            ("Bearer abc", "abc"),
            ("bearer abc", "abc"),
            ("BEARER a-b.c_d~e+f/g==", "a-b.c_d~e+f/g=="),
            ("Bearer   abc", "abc"),
        ] {
            assert_eq!(bearer_token(value), Ok(token), "{value:?}");
        }
        for value in [
            "Bearer\tabc",
            "Bearer abc,",
            "Bearer abc,Bearer def",
            "Bearer abc, Bearer def",
            "Bearer abc ",
            "Bearer abc def",
            "Bearer ",
            "Bearer",
            "Bearer =abc",
            "Basic YWxhZGRpbjpvcGVuc2VzYW1l",
            "abc",
            "",
            "Bearer ab\"c",
            "Bearer ab=c",
            "Bearer abç",
        ] {
            assert!(bearer_token(value).is_err(), "{value:?}");
        }
    }

    proptest! {
        /// Every spelling that the RFC allows gives the same grant; every value with a
        /// character outside the token alphabet after the scheme is refused.
        #[test]
        fn one_token_one_grant(token in "[A-Za-z0-9._~+/-]{1,20}={0,2}", scheme in "[bB][eE][aA][rR][eE][rR]", spaces in 1usize..4) {
            let value = format!("{scheme}{}{token}", " ".repeat(spaces));
            prop_assert_eq!(bearer_token(&value), Ok(token.as_str()));
        }

        #[test]
        fn anything_but_token_characters_is_refused(token in "[A-Za-z0-9]{1,8}", junk in "[^A-Za-z0-9._~+/=-]", tail in "[A-Za-z0-9]{0,8}") {
            let value = format!("Bearer {token}{junk}{tail}");
            prop_assert!(bearer_token(&value).is_err(), "{:?}", value);
        }
    }

    fn metadata(payload: Vec<(&str, Kind)>) -> Metadata {
        let payload = Struct {
            fields: payload
                .into_iter()
                .map(|(k, v)| (k.to_owned(), Value { kind: Some(v) }))
                .collect(),
        };
        let namespace = Struct {
            fields: [(
                "jwt_payload".to_owned(),
                Value {
                    kind: Some(Kind::StructValue(payload)),
                },
            )]
            .into(),
        };
        Metadata {
            filter_metadata: [(JWT_AUTHN_NAMESPACE.to_owned(), namespace)].into(),
            ..Default::default()
        }
    }

    #[test]
    fn reads_a_verified_claim() {
        let m = metadata(vec![
            ("sub", Kind::StringValue("alice".into())),
            ("n", Kind::NumberValue(1.0)),
            ("e", Kind::StringValue(String::new())),
        ]);
        assert_eq!(
            jwt_claim(Some(&m), "jwt_payload", "sub"),
            Ok(Some("alice".into()))
        );
        assert_eq!(jwt_claim(Some(&m), "jwt_payload", "absent"), Ok(None));
        assert_eq!(jwt_claim(Some(&m), "other_key", "sub"), Ok(None));
        assert_eq!(jwt_claim(None, "jwt_payload", "sub"), Ok(None));
        assert!(jwt_claim(Some(&m), "jwt_payload", "n").is_err());
        assert!(jwt_claim(Some(&m), "jwt_payload", "e").is_err());
    }
}
