//! Who is calling, from what the proxy passes on: a bearer token, or a claim of a JWT that
//! the proxy verified.
//!
//! A grant is a counter key, so one credential must give one grant whatever its spelling,
//! and a value that is not a credential must not be counted at all: an `Authorization`
//! value is read by RFC 6750's grammar, exactly, and anything else is refused; a token is
//! then written in the one spelling that every base64 decoder's readings of it share
//! ([`canonical_token`]). A verified identity is the token's issuer and claim together: the
//! same subject name from two issuers is two callers.

use envoy_types::pb::envoy::config::core::v3::Metadata;
use envoy_types::pb::google::protobuf::value::Kind;
use envoy_types::pb::google::protobuf::Struct;
use std::borrow::Cow;

/// Where Envoy's `jwt_authn` filter puts what it verified.
pub const JWT_AUTHN_NAMESPACE: &str = "envoy.filters.http.jwt_authn";

/// Why a credential was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused(pub String);

/// The token of an `Authorization: Bearer <token>` value (RFC 6750 §2.1:
/// `"Bearer" 1*SP b64token`, the scheme in any case), in its [`canonical_token`] spelling.
/// Anything else is refused: another scheme, a tab or comma (two `Authorization` headers
/// reach toolgate joined by a comma), text after the token.
pub fn bearer_token(value: &str) -> Result<Cow<'_, str>, Refused> {
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
    Ok(canonical_token(token))
}

const BASE64URL: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// RFC 6750's `b64token`: `1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="`.
fn is_b64token(token: &str) -> bool {
    let body = token.trim_end_matches('=');
    !body.is_empty()
        && body
            .bytes()
            .all(|b| sextet(b).is_some() || b == b'.' || b == b'~')
}

/// One spelling for the spellings of a JWT that base64 decoders read as the same bytes, so
/// that they are one grant: JWT libraries (PyJWT, and Go's and JavaScript's default base64
/// decoders) ignore `=` padding, read `+` and `/` as `-` and `_`, and drop the bits of a
/// segment's last character that make no whole byte (`…QQ` and `…QR` decode alike). Each
/// segment of a token shaped as a JWT (3 or 5 base64 segments, the first a JSON object) gets
/// no padding, the URL alphabet, and those bits zeroed. Any other token is an opaque string
/// that its verifier compares as it is: it is left as it is.
pub fn canonical_token(token: &str) -> Cow<'_, str> {
    let body = token.trim_end_matches('=').as_bytes();
    let header = (body.first(), body.get(1));
    let header = header
        .0
        .and_then(|&b| sextet(b))
        .zip(header.1.and_then(|&b| sextet(b)));
    if !header.is_some_and(|(a, b)| opens_an_object(a, b)) {
        return Cow::Borrowed(token);
    }
    // One pass: the token's shape, and whether it is written canonically already (as every
    // JWT library writes it: then there is nothing to copy).
    let mut canonical = body.len() == token.len();
    let (mut dots, mut start) = (0, 0);
    for (i, &b) in body.iter().enumerate() {
        match b {
            b'.' => {
                canonical &= spare_bits_clear(&body[start..i]);
                dots += 1;
                start = i + 1;
            }
            b'+' | b'/' => canonical = false,
            // Not base64: an opaque token after all.
            _ if sextet(b).is_none() => return Cow::Borrowed(token),
            _ => {}
        }
    }
    canonical &= spare_bits_clear(&body[start..]);
    if !matches!(dots, 2 | 4) || canonical {
        return Cow::Borrowed(token);
    }
    let mut out = String::with_capacity(body.len());
    for (i, segment) in body.split(|&b| b == b'.').enumerate() {
        if i > 0 {
            out.push('.');
        }
        let spare = spare_bits(segment.len());
        for (n, &b) in segment.iter().enumerate() {
            let mut v = sextet(b).expect("checked above");
            if n + 1 == segment.len() {
                v &= !spare;
            }
            out.push(char::from(BASE64URL[usize::from(v)]));
        }
    }
    Cow::Owned(out)
}

/// Whether a base64 segment's last character has no bits set past its last whole byte.
fn spare_bits_clear(segment: &[u8]) -> bool {
    segment
        .last()
        .and_then(|&b| sextet(b))
        .is_none_or(|v| v & spare_bits(segment.len()) == 0)
}

/// Bits of a segment's last character past its last whole byte: 4 after 2 characters (mod
/// 4), 2 after 3 (a length of 1 mod 4 is no base64 at all).
fn spare_bits(len: usize) -> u8 {
    match len % 4 {
        2 => 0b1111,
        3 => 0b11,
        _ => 0,
    }
}

/// A base64 character's value, in either alphabet.
#[inline]
fn sextet(b: u8) -> Option<u8> {
    let v = SEXTETS[usize::from(b)];
    (v < 64).then_some(v)
}

/// Each byte's base64 value, in either alphabet; 255 for a byte that is none.
const SEXTETS: [u8; 256] = {
    let mut table = [255u8; 256];
    let mut i = 0;
    while i < 64 {
        table[BASE64URL[i] as usize] = i as u8;
        i += 1;
    }
    table[b'+' as usize] = 62;
    table[b'/' as usize] = 63;
    table
};

/// Whether base64 that opens with values `a`, `b` decodes to text that opens with `{` (a
/// JWT's header).
fn opens_an_object(a: u8, b: u8) -> bool {
    ((a << 2) | (b >> 4)) == b'{'
}

/// The payload of the JWT that `jwt_authn` verified and stored under `payload_key` (its
/// `payload_in_metadata`), if there is one.
pub fn jwt_payload<'m>(metadata: Option<&'m Metadata>, payload_key: &str) -> Option<&'m Struct> {
    metadata
        .and_then(|m| m.filter_metadata.get(JWT_AUTHN_NAMESPACE))
        .and_then(|s| s.fields.get(payload_key))
        .and_then(|v| match &v.kind {
            Some(Kind::StructValue(s)) => Some(s),
            _ => None,
        })
}

/// The string claim `claim` of a verified token: `None` when the token lacks it; refused
/// when it is not a non-empty string.
pub fn verified_claim<'p>(payload: &'p Struct, claim: &str) -> Result<Option<&'p str>, Refused> {
    match payload.fields.get(claim).map(|v| &v.kind) {
        None => Ok(None),
        Some(Some(Kind::StringValue(s))) if !s.is_empty() => Ok(Some(s.as_str())),
        Some(_) => Err(Refused(format!(
            "the verified token's claim {claim:?} is not a non-empty string"
        ))),
    }
}

/// Who a verified token names by its claim `claim`, as a credential: the token's issuer and
/// the claim's value, written `ISSUER VALUE` (an issuer holds no space: that is refused).
/// `None` when the token lacks the claim; refused when a claim is not a non-empty string or
/// the token has no issuer.
pub fn verified_identity(payload: &Struct, claim: &str) -> Result<Option<String>, Refused> {
    let Some(value) = verified_claim(payload, claim)? else {
        return Ok(None);
    };
    match verified_claim(payload, "iss")? {
        Some(issuer) if !issuer.contains(char::is_whitespace) => {
            Ok(Some(format!("{issuer} {value}")))
        }
        Some(_) => Err(Refused(
            "the verified token's issuer holds white space".into(),
        )),
        None => Err(Refused(
            "the verified token names no issuer (iss): a subject is only known within its \
             issuer"
                .into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::google::protobuf::Value;
    use proptest::prelude::*;

    #[test]
    fn reads_bearer_tokens_by_the_rfc() {
        for (value, token) in [
            ("Bearer abc", "abc"),
            ("bearer abc", "abc"),
            ("BEARER a-b.c_d~e+f/g==", "a-b.c_d~e+f/g=="),
            (
                "bearer eyJh.eyJz.c2lnbmF0dXJlIQ==",
                "eyJh.eyJz.c2lnbmF0dXJlIQ",
            ),
            ("Bearer   abcd", "abcd"),
        ] {
            assert_eq!(bearer_token(value).as_deref(), Ok(token), "{value:?}");
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

    #[test]
    fn sextets_are_the_alphabets_positions() {
        for (i, &c) in BASE64URL.iter().enumerate() {
            assert_eq!(sextet(c), Some(i as u8));
        }
        assert_eq!((sextet(b'+'), sextet(b'/')), (Some(62), Some(63)));
        assert_eq!(
            (sextet(b'='), sextet(b'.'), sextet(b'~')),
            (None, None, None)
        );
    }

    #[test]
    fn spellings_a_decoder_reads_alike_are_one_token() {
        // Padding, the standard alphabet, and the spare bits of the last character.
        let jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhIn0.c2lnbmF0dXJlIQ";
        for same in [
            "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhIn0.c2lnbmF0dXJlIR",
            "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhIn0.c2lnbmF0dXJlIQ==",
            "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhIn0.c2lnbmF0dXJlIQ=",
        ] {
            assert_eq!(canonical_token(same), canonical_token(jwt), "{same}");
        }
        assert_eq!(canonical_token("eyJh.a+b/.cQ=="), "eyJh.a-b_.cQ");
        assert_ne!(
            canonical_token(jwt),
            canonical_token("eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJiIn0.c2lnbmF0dXJlIQ")
        );
        // An opaque token is compared as it is by its verifier: every spelling is its own.
        for opaque in ["made-up-12", "made-up-13", "abc=", "a+b/", "abcd.efgh.ijkl"] {
            assert!(matches!(canonical_token(opaque), Cow::Borrowed(t) if t == opaque));
        }
    }

    fn base64(bytes: &[u8], standard: bool) -> String {
        let alphabet: &[u8; 64] = if standard {
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
        } else {
            BASE64URL
        };
        let mut out = String::new();
        for chunk in bytes.chunks(3) {
            let n = chunk
                .iter()
                .enumerate()
                .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
            for i in 0..=chunk.len() {
                out.push(alphabet[(n >> (18 - 6 * i) & 63) as usize] as char);
            }
        }
        out
    }

    proptest! {
        /// Every spelling that the RFC allows gives the same grant; every value with a
        /// character outside the token alphabet after the scheme is refused.
        #[test]
        fn one_token_one_grant(token in "[A-Za-z0-9._~-]{1,20}", scheme in "[bB][eE][aA][rR][eE][rR]", spaces in 1usize..4) {
            let value = format!("{scheme}{}{token}", " ".repeat(spaces));
            prop_assert_eq!(bearer_token(&value).unwrap(), canonical_token(&token));
        }

        /// A JWT written in base64 however a client likes (either alphabet, padded or not,
        /// any spare bits in each segment's last character) gives one grant, and different
        /// bytes give different grants.
        #[test]
        fn one_encoding_of_a_jwt_one_grant(
            segments in prop::collection::vec(prop::collection::vec(any::<u8>(), 1..24), 2..3),
            standard in any::<bool>(), pad in 0usize..3, noise in prop::collection::vec(0u8..16, 3),
            other in prop::collection::vec(any::<u8>(), 1..24),
        ) {
            let mut segments = segments;
            segments.insert(0, br#"{"alg":"HS256"}"#.to_vec());
            let plain: Vec<String> = segments.iter().map(|s| base64(s, false)).collect();
            let alphabet = if standard { b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/" } else { BASE64URL };
            let spelled: Vec<String> = segments.iter().zip(&noise).map(|(s, n)| {
                let mut text = base64(s, standard);
                let spare = match text.len() % 4 { 2 => 15, 3 => 3, _ => 0 };
                let end = text.pop().unwrap() as u8;
                let v = alphabet.iter().position(|&c| c == end).unwrap() as u8;
                text.push(alphabet[usize::from(v | (n & spare))] as char);
                text
            }).collect();
            let token = format!("{}{}", spelled.join("."), "=".repeat(pad));
            let value = format!("Bearer {token}");
            let plain = plain.join(".");
            prop_assert_eq!(bearer_token(&value).unwrap(), canonical_token(&plain));
            prop_assert_eq!(canonical_token(&plain), plain.as_str());
            if other != *segments.last().unwrap() {
                let mut changed: Vec<String> = segments.iter().map(|s| base64(s, false)).collect();
                *changed.last_mut().unwrap() = base64(&other, false);
                let changed = changed.join(".");
                prop_assert_ne!(canonical_token(&changed), canonical_token(&plain));
            }
        }

        #[test]
        fn anything_but_token_characters_is_refused(token in "[A-Za-z0-9]{1,8}", junk in "[^A-Za-z0-9._~+/=-]", tail in "[A-Za-z0-9]{0,8}") {
            let value = format!("Bearer {token}{junk}{tail}");
            prop_assert!(bearer_token(&value).is_err(), "{:?}", value);
        }
    }

    fn payload(fields: Vec<(&str, Kind)>) -> Struct {
        Struct {
            fields: fields
                .into_iter()
                .map(|(k, v)| (k.to_owned(), Value { kind: Some(v) }))
                .collect(),
        }
    }

    #[test]
    fn a_verified_identity_is_its_issuer_and_claim() {
        let p = payload(vec![
            ("iss", Kind::StringValue("https://idp.example".into())),
            ("sub", Kind::StringValue("alice".into())),
            ("n", Kind::NumberValue(1.0)),
            ("e", Kind::StringValue(String::new())),
        ]);
        assert_eq!(
            verified_identity(&p, "sub"),
            Ok(Some("https://idp.example alice".into()))
        );
        assert_eq!(verified_identity(&p, "absent"), Ok(None));
        assert!(verified_identity(&p, "n").is_err());
        assert!(verified_identity(&p, "e").is_err());
        // The same subject from another issuer is someone else; without an issuer, no one.
        let other = payload(vec![
            ("iss", Kind::StringValue("https://other.example".into())),
            ("sub", Kind::StringValue("alice".into())),
        ]);
        assert_ne!(
            verified_identity(&other, "sub"),
            verified_identity(&p, "sub")
        );
        let no_issuer = payload(vec![("sub", Kind::StringValue("alice".into()))]);
        assert!(verified_identity(&no_issuer, "sub").is_err());
        let spaced = payload(vec![
            ("iss", Kind::StringValue("a b".into())),
            ("sub", Kind::StringValue("c".into())),
        ]);
        assert!(verified_identity(&spaced, "sub").is_err());
    }

    #[test]
    fn the_payload_is_found_under_its_key_only() {
        let namespace = Struct {
            fields: [(
                "jwt_payload".to_owned(),
                Value {
                    kind: Some(Kind::StructValue(payload(vec![]))),
                },
            )]
            .into(),
        };
        let m = Metadata {
            filter_metadata: [(JWT_AUTHN_NAMESPACE.to_owned(), namespace)].into(),
            ..Default::default()
        };
        assert!(jwt_payload(Some(&m), "jwt_payload").is_some());
        assert!(jwt_payload(Some(&m), "other").is_none());
        assert!(jwt_payload(None, "jwt_payload").is_none());
    }
}
