//! The request's headers as ext_authz's `Check` carries them, so that both are read alike:
//! one value per name (names matched as sent), a header sent more than once joined with `,`
//! (a second `Mcp-Name` is then no match for the body, and a second identity header one that
//! holds a comma), bytes that are not UTF-8 each read as U+FFFD. And where the request came
//! from, and the payload of the token Envoy verified, where callers are read from one.
//!
//! Every request is decided on them, so they are copied once into one text, not a string per
//! name and value, and that text is checked as UTF-8 once. Whatever a client repeats, each
//! byte is copied a bounded number of times.

use crate::abi::{Stream, REQUEST_HEADER};
use crate::verified;
use envoy_types::pb::google::protobuf::Struct;
use toolgate_core::counter::Peer;
use toolgate_core::mcp::revision::Revision;
use toolgate_server::subject::{AuthzConfig, CallerFacts, SubjectSource};

/// A request's headers, where it came from, and what Envoy verified of its token.
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
    /// The headers `each_header` hands over, name and value, in order. Names are matched as
    /// sent, byte for byte; then each name and each joined value is read as text on its own.
    fn read(each_header: impl FnOnce(&mut dyn FnMut(&[u8], &[u8]))) -> Text {
        let mut raw = Raw::default();
        each_header(&mut |name, value| raw.add(name, value));
        let raw = raw.joined();
        // Valid as a whole, and with every name and value starting and ending on a character's
        // boundary, is each name and value valid (nearly every request): one check for all.
        match String::from_utf8(raw.bytes) {
            Ok(text)
                if raw.ends.iter().all(|&(name, value)| {
                    text.is_char_boundary(name) && text.is_char_boundary(value)
                }) =>
            {
                Text {
                    text,
                    ends: raw.ends,
                }
            }
            Ok(text) => Text::lossy(text.as_bytes(), &raw.ends),
            Err(e) => Text::lossy(e.as_bytes(), &raw.ends),
        }
    }

    /// Each name and value of `bytes` (laid out as `ends` says) read as text on its own. A
    /// joined value reads as its parts would each: `,` ends any character cut short.
    fn lossy(bytes: &[u8], ends: &[(usize, usize)]) -> Text {
        let mut out = Text::default();
        let mut start = 0;
        for &(name, value) in ends {
            out.text
                .push_str(&String::from_utf8_lossy(&bytes[start..name]));
            let name_end = out.text.len();
            out.text
                .push_str(&String::from_utf8_lossy(&bytes[name..value]));
            out.ends.push((name_end, out.text.len()));
            start = value;
        }
        out
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

/// [`Text`] as it is gathered, in bytes as sent.
struct Raw {
    bytes: Vec<u8>,
    ends: Vec<(usize, usize)>,
    /// The values of names sent again (rare): which name's, and where in `again_bytes`;
    /// joined once all are in, so that each byte is copied once however many come.
    again: Vec<(usize, usize, usize)>,
    again_bytes: Vec<u8>,
}

impl Default for Raw {
    /// Room for a request's usual headers, so that gathering them takes one allocation each.
    fn default() -> Raw {
        Raw {
            bytes: Vec::with_capacity(1024),
            ends: Vec::with_capacity(16),
            again: Vec::new(),
            again_bytes: Vec::new(),
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
            Some(i) => {
                let start = self.again_bytes.len();
                self.again_bytes.extend_from_slice(value);
                self.again.push((i, start, self.again_bytes.len()));
            }
        }
    }

    /// Each name with every value it came with, joined with `,` in the order they came.
    fn joined(mut self) -> Raw {
        if self.again.is_empty() {
            return self;
        }
        // Stable: a name's values stay in the order they came.
        self.again.sort_by_key(|&(i, _, _)| i);
        let extra = self.again_bytes.len() + self.again.len();
        let mut out = Raw {
            bytes: Vec::with_capacity(self.bytes.len() + extra),
            ends: Vec::with_capacity(self.ends.len()),
            again: Vec::new(),
            again_bytes: Vec::new(),
        };
        let mut again = self.again.iter().peekable();
        let mut start = 0;
        for (i, &(name, value)) in self.ends.iter().enumerate() {
            let name_end = out.bytes.len() + (name - start);
            out.bytes.extend_from_slice(&self.bytes[start..value]);
            while let Some(&(_, from, to)) = again.next_if(|&&(of, _, _)| of == i) {
                out.bytes.push(b',');
                out.bytes.extend_from_slice(&self.again_bytes[from..to]);
            }
            out.ends.push((name_end, out.bytes.len()));
            start = value;
        }
        out
    }
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

    /// The headers as the rule reads them, one string per name and value: a name sent again
    /// (byte for byte) has its values joined to the first's with `,`, each name and value
    /// read as text on its own.
    fn one_by_one(headers: &[(Vec<u8>, Vec<u8>)]) -> Vec<(String, String)> {
        let mut joined: Vec<(&[u8], String)> = Vec::new();
        for (name, value) in headers {
            let value = String::from_utf8_lossy(value);
            match joined.iter_mut().find(|(k, _)| k == name) {
                Some((_, all)) => {
                    all.push(',');
                    all.push_str(&value);
                }
                None => joined.push((name, value.into())),
            }
        }
        (joined.into_iter())
            .map(|(k, v)| (String::from_utf8_lossy(k).into(), v))
            .collect()
    }

    /// The module's reading before the headers were one text: names matched against those
    /// kept, which were kept read as text.
    fn as_before(headers: &[(Vec<u8>, Vec<u8>)]) -> Vec<(String, String)> {
        let mut joined: Vec<(String, String)> = Vec::new();
        for (name, value) in headers {
            let value = String::from_utf8_lossy(value);
            match joined.iter_mut().find(|(k, _)| k.as_bytes() == name) {
                Some((_, all)) => {
                    all.push(',');
                    all.push_str(&value);
                }
                None => joined.push((String::from_utf8_lossy(name).into(), value.into())),
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

    /// Names as Envoy's codecs let them through: text.
    fn name() -> impl Strategy<Value = Vec<u8>> {
        let names = [
            &b"a"[..],
            b"mcp-name",
            b":method",
            b"",
            "\u{20ac}".as_bytes(),
        ];
        prop::sample::select(names.to_vec()).prop_map(<[u8]>::to_vec)
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

        /// Where names are text (all a client gets past Envoy's codecs), as the module read
        /// them before, whatever the values.
        #[test]
        fn reads_as_before_where_names_are_text(
            headers in prop::collection::vec((name(), part()), 0..10),
        ) {
            prop_assert_eq!(read(&headers), as_before(&headers));
        }
    }

    #[test]
    fn a_name_sent_again_is_joined_where_it_first_came() {
        let headers = [
            (b"mcp-name".to_vec(), b"a".to_vec()),
            (b"x".to_vec(), b"\xe2\x82".to_vec()),
            (b"mcp-name".to_vec(), b"b".to_vec()),
            (b"y".to_vec(), b"\xac".to_vec()),
            (b"mcp-name".to_vec(), b"".to_vec()),
        ];
        assert_eq!(
            read(&headers),
            [
                ("mcp-name".to_owned(), "a,b,".to_owned()),
                ("x".to_owned(), "\u{fffd}".to_owned()),
                ("y".to_owned(), "\u{fffd}".to_owned()),
            ]
        );
    }

    /// Matched as sent: a name that is not text, sent twice, is one header (before, its
    /// bytes were matched against the name kept as text, and it was two); two such names
    /// that read alike as text stay two.
    #[test]
    fn names_that_are_not_text_are_matched_as_sent() {
        let twice = [
            (b"x-\xff".to_vec(), b"a".to_vec()),
            (b"x-\xff".to_vec(), b"b".to_vec()),
        ];
        assert_eq!(read(&twice), [("x-\u{fffd}".to_owned(), "a,b".to_owned())]);
        let alike = [
            (b"x-\xff".to_vec(), b"a".to_vec()),
            (b"x-\xfe".to_vec(), b"b".to_vec()),
        ];
        assert_eq!(read(&alike).len(), 2);
    }

    #[test]
    fn empty_headers_are_there_but_not_values() {
        let text = Text::read(|each| {
            each(b":method", b"POST");
            each(b"x-empty", b"");
            each(b"mcp-name", b"");
            each(b"mcp-name", b"t");
            each(b"", b"v");
        });
        let headers = Headers {
            text,
            peer: Peer::UNKNOWN,
            verified: None,
        };
        assert!(headers.has("x-empty") && !headers.has("x-none"));
        assert_eq!(headers.value("x-empty"), Some(""));
        assert_eq!(
            (headers.get("x-empty"), (&headers).header("x-empty")),
            (None, None)
        );
        assert_eq!(headers.get("mcp-name"), Some(",t"));
        assert_eq!((&headers).header_values("mcp-name"), [",t"]);
        assert!((&headers).header_values("x-none").is_empty());
        assert_eq!(headers.get(":method"), Some("POST"));
        assert_eq!(headers.value(""), Some("v"));
    }

    /// As many headers as Envoy lets in, long, every other name sent again, each value ending
    /// in the start of a character whose rest begins the next name; and one long value
    /// followed by a name sent again and again, each of whose values is joined once.
    #[test]
    fn many_long_headers_read_as_each_alone() {
        let mut headers = Vec::new();
        for i in 0..100 {
            let mut value = vec![b'v'; 600];
            value.extend_from_slice(b"\xe2\x82");
            headers.push((
                [b"\xac".as_slice(), format!("n{}", i % 50).as_bytes()].concat(),
                value,
            ));
        }
        assert_eq!(read(&headers), one_by_one(&headers));
        let mut headers = vec![
            (b"a".to_vec(), b"x".to_vec()),
            (b"b".to_vec(), vec![0xff; 60_000]),
        ];
        headers.extend((0..98).map(|_| (b"a".to_vec(), Vec::new())));
        let read = read(&headers);
        assert_eq!(read[0], ("a".to_owned(), format!("x{}", ",".repeat(98))));
        assert_eq!(read[1].1, "\u{fffd}".repeat(60_000));
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
