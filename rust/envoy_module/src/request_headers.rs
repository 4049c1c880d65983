//! The request's headers as ext_authz's `Check` carries them, so that both are read alike:
//! one value per name, a header sent more than once joined with `,` (a second `Mcp-Name` is
//! then no match for the body, and a second identity header one that holds a comma), bytes
//! that are not UTF-8 each read as U+FFFD. And where the request came from, and the payload of
//! the token Envoy verified, where callers are read from one.
//!
//! Every request is decided on them, so they are copied once into one text, not a string per
//! name and value, and that text is checked as UTF-8 once.

use crate::abi::{Stream, REQUEST_HEADER};
use crate::verified;
use envoy_types::pb::google::protobuf::Struct;
use std::borrow::Cow;
use toolgate_core::counter::Peer;
use toolgate_core::mcp::revision::Revision;
use toolgate_server::subject::{AuthzConfig, CallerFacts, SubjectSource};

pub struct Headers {
    text: Text,
    peer: Peer,
    /// The payload of the token Envoy verified, where the caller is read from one.
    pub verified: Option<Struct>,
}

/// Whether `authz` reads a part of the caller from a verified token.
fn reads_tokens(authz: &AuthzConfig) -> bool {
    [&authz.grant, &authz.session, &authz.agent]
        .into_iter()
        .any(|source| matches!(source, SubjectSource::JwtClaim(_)))
}

impl Headers {
    pub fn read(stream: Stream, authz: &AuthzConfig) -> Headers {
        let verified = reads_tokens(authz)
            .then(|| verified::payload(stream.filter_state(verified::FILTER_STATE_KEY).as_deref()))
            .flatten();
        Headers {
            text: Text::read(|each| stream.each_header(REQUEST_HEADER, each)),
            peer: stream
                .source_address()
                .map_or(Peer::UNKNOWN, |a| peer_of(&a)),
            verified,
        }
    }

    /// Header `name`'s value (lower case; every value of it, joined), empty or not.
    pub fn value(&self, name: &str) -> Option<&str> {
        self.text.value(name)
    }

    /// Header `name`'s value where it is not empty.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.value(name).filter(|v| !v.is_empty())
    }

    /// Whether the request has header `name` (lower case), empty or not.
    pub fn has(&self, name: &str) -> bool {
        self.value(name).is_some()
    }

    /// Each header's name and value, in the order their names first came.
    pub fn pairs(&self) -> impl Iterator<Item = (&str, &str)> {
        self.text.pairs()
    }

    /// The protocol revision the request declared in its `MCP-Protocol-Version` header.
    pub fn revision(&self) -> Option<Revision> {
        Revision::parse(self.get("mcp-protocol-version")?)
    }
}

impl<'a> CallerFacts<'a> for &'a Headers {
    fn header_values(&self, name: &str) -> Vec<&'a str> {
        self.value(name).into_iter().collect()
    }

    fn verified_payload(&self, _key: &str) -> Option<&'a Struct> {
        self.verified.as_ref()
    }

    fn peer(&self) -> Peer {
        self.peer
    }

    fn header(&self, name: &str) -> Option<&'a str> {
        self.get(name)
    }
}

/// The headers' names and joined values, one after another in one string.
#[derive(Debug, Default, PartialEq, Eq)]
struct Text {
    text: String,
    /// For each name, where it ends in `text` (its value starts there) and where its value
    /// ends.
    ends: Vec<(usize, usize)>,
}

impl Text {
    /// The headers `each_header` hands over, name and value, in order.
    fn read(each_header: impl Fn(&mut dyn FnMut(&[u8], &[u8]))) -> Text {
        let mut raw = Raw::default();
        each_header(&mut |name, value| raw.add(name, value));
        // Valid as a whole, and with every name and value starting and ending on a character's
        // boundary, is each name and value valid (nearly every request): one check for all.
        if let Ok(text) = String::from_utf8(raw.bytes) {
            let boundaries = raw.ends.iter().flat_map(|&(name, value)| [name, value]);
            if boundaries.into_iter().all(|at| text.is_char_boundary(at)) {
                return Text {
                    text,
                    ends: raw.ends,
                };
            }
        }
        let mut lossy = Raw::default();
        each_header(&mut |name, value| {
            lossy.add(as_text(name).as_bytes(), as_text(value).as_bytes())
        });
        Text {
            text: String::from_utf8(lossy.bytes).expect("each part was made UTF-8"),
            ends: lossy.ends,
        }
    }

    fn value(&self, name: &str) -> Option<&str> {
        let at = find(self.text.as_bytes(), &self.ends, name.as_bytes())?;
        let start = self.ends[at].0;
        Some(&self.text[start..self.ends[at].1])
    }

    fn pairs(&self) -> impl Iterator<Item = (&str, &str)> {
        let mut start = 0;
        self.ends.iter().map(move |&(name, value)| {
            let pair = (&self.text[start..name], &self.text[name..value]);
            start = value;
            pair
        })
    }
}

/// Which of the names (each ending where `ends` says in `text`, its value after it) is `name`.
fn find(text: &[u8], ends: &[(usize, usize)], name: &[u8]) -> Option<usize> {
    let mut start = 0;
    ends.iter().position(|&(name_end, value_end)| {
        let found = &text[start..name_end] == name;
        start = value_end;
        found
    })
}

/// [`Text`] as it is gathered, in bytes.
struct Raw {
    bytes: Vec<u8>,
    ends: Vec<(usize, usize)>,
}

impl Default for Raw {
    /// Room for a request's usual headers, so that gathering them takes one allocation each.
    fn default() -> Raw {
        Raw {
            bytes: Vec::with_capacity(1024),
            ends: Vec::with_capacity(16),
        }
    }
}

impl Raw {
    fn add(&mut self, name: &[u8], value: &[u8]) {
        match find(&self.bytes, &self.ends, name) {
            None => {
                self.bytes.extend_from_slice(name);
                let name_end = self.bytes.len();
                self.bytes.extend_from_slice(value);
                self.ends.push((name_end, self.bytes.len()));
            }
            // Sent again (rare): joined to its value, and what follows moved along.
            Some(i) => {
                let at = self.ends[i].1;
                let joined = std::iter::once(b',').chain(value.iter().copied());
                self.bytes.splice(at..at, joined);
                let moved = 1 + value.len();
                self.ends[i].1 += moved;
                for (name_end, value_end) in &mut self.ends[i + 1..] {
                    *name_end += moved;
                    *value_end += moved;
                }
            }
        }
    }
}

/// `bytes` as text, each byte that is not UTF-8 read as U+FFFD.
fn as_text(bytes: &[u8]) -> Cow<'_, str> {
    String::from_utf8_lossy(bytes)
}

/// The request's source as Envoy gives it (`source.address`, `IP:PORT` or `[IPv6]:PORT`): the
/// downstream connection's peer, read as ext_authz's `Check` source is. An IPv6 address's
/// zone is left out; an address that is no IP address (a pipe, an internal listener) is one
/// opaque address, bounded like any other.
fn peer_of(address: &str) -> Peer {
    let ip = match address.strip_prefix('[') {
        Some(v6) => v6.split_once(']').map_or(v6, |(ip, _)| ip),
        None => address.rsplit_once(':').map_or(address, |(ip, _)| ip),
    };
    let ip = ip.split_once('%').map_or(ip, |(ip, _)| ip);
    Peer::parse(ip).unwrap_or(Peer::OPAQUE)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The headers read one string per name and value, as the `Check`'s map holds them.
    fn one_by_one(headers: &[(Vec<u8>, Vec<u8>)]) -> Vec<(String, String)> {
        let mut joined: Vec<(String, String)> = Vec::new();
        for (name, value) in headers {
            let (name, value) = (as_text(name), as_text(value));
            match joined.iter_mut().find(|(k, _)| *k == name) {
                Some((_, all)) => {
                    all.push(',');
                    all.push_str(&value);
                }
                None => joined.push((name.into(), value.into())),
            }
        }
        joined
    }

    fn read(headers: &[(Vec<u8>, Vec<u8>)]) -> Vec<(String, String)> {
        let text = Text::read(|each| {
            for (name, value) in headers {
                each(name, value)
            }
        });
        (text.pairs())
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect()
    }

    /// Bytes of the kinds headers hold, with what UTF-8 makes hard: a character's bytes cut
    /// across a name and its value, or a value and the next name, and stray bytes.
    fn part() -> impl Strategy<Value = Vec<u8>> {
        let piece = prop_oneof![
            Just(b"a".to_vec()),
            Just(b"mcp-name".to_vec()),
            Just(b",".to_vec()),
            Just("\u{20ac}".as_bytes().to_vec()),
            Just(b"\xe2\x82".to_vec()),
            Just(b"\xac".to_vec()),
            Just(b"\xff".to_vec()),
            Just(b"\xc3".to_vec()),
            Just(Vec::new()),
        ];
        prop::collection::vec(piece, 0..4).prop_map(|parts| parts.concat())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2_000))]

        /// Whatever the bytes and however often a name comes, each name and value reads as it
        /// does on its own: a character is never made of one's end and the next one's start.
        #[test]
        fn reads_each_name_and_value_as_on_its_own(
            headers in prop::collection::vec((part(), part()), 0..8),
        ) {
            prop_assert_eq!(read(&headers), one_by_one(&headers));
        }
    }

    #[test]
    fn a_name_sent_again_is_joined_where_it_first_came() {
        let headers = [
            (b"mcp-name".to_vec(), b"a".to_vec()),
            (b"x".to_vec(), b"\xe2\x82".to_vec()),
            (b"mcp-name".to_vec(), b"b".to_vec()),
            (b"y".to_vec(), b"\xac".to_vec()),
        ];
        assert_eq!(
            read(&headers),
            [
                ("mcp-name".to_owned(), "a,b".to_owned()),
                ("x".to_owned(), "\u{fffd}".to_owned()),
                ("y".to_owned(), "\u{fffd}".to_owned()),
            ]
        );
    }

    #[test]
    fn a_source_is_read_as_the_checks_is() {
        assert_eq!(peer_of("10.0.0.1:5000"), Peer::parse("10.0.0.1").unwrap());
        assert_eq!(
            peer_of("[fe80::1%eth0]:5000"),
            Peer::parse("fe80::1").unwrap()
        );
        assert_eq!(peer_of("/run/envoy.sock"), Peer::OPAQUE);
    }
}
