//! Room per network peer in the table's client-chosen share.
//!
//! A made-up credential costs a client nothing, so the client-chosen share alone cannot keep
//! a flood of them from filling it (sessions are held for a day). A network address costs
//! more: a TCP connection from it. So once the share is three quarters taken, a new
//! client-chosen key is let in only while the address the request came from holds less than
//! a [`PEER_SHARE`]th of the share; the last quarter then serves the new callers of at least
//! 16 addresses, however many credentials one address makes up.
//!
//! An address is the proxy's word for the request's source (Envoy's `source.address`); IPv6
//! addresses count per /48, one site's network (a subscriber is given a /48 or a /56, so a
//! /64 is nearly free), except those that carry an IPv4 address (NAT64's `64:ff9b::/96`,
//! IPv4-mapped), which count as it. An address the proxy gives that is no IP address (a
//! pipe, an internal listener) counts as one more address. Requests with no address at all
//! (a proxy that sends none) are bounded by the share alone, as before. Addresses are counted
//! in [`PEER_BUCKETS`] buckets by a hash keyed with a secret of the process, so a client
//! cannot aim its addresses at another's bucket.

use std::net::IpAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicU16, AtomicU32};

/// Buckets addresses are counted in (bucket 0: no address).
pub const PEER_BUCKETS: usize = 4096;
/// Once the share is pressed, one address holds at most this part of it.
pub const PEER_SHARE: u64 = 64;
/// The share is pressed once this part of it is left: 1/4.
const PRESSED_WHEN_LEFT: u64 = 4;

/// The network address a request came from, as room is shared out by it: an IPv4 address
/// (below 2^32), an IPv6 /48 (its low 80 bits zero, bit 32 set to tell it from IPv4), or
/// [`Peer::OPAQUE`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Peer(Option<u128>);

/// NAT64's well-known prefix, `64:ff9b::/96`: the low 32 bits are the IPv4 client's.
const NAT64: u128 = 0x0064_ff9b << 96;

impl Peer {
    /// No address given.
    pub const UNKNOWN: Peer = Peer(None);
    /// An address given that is no IP address: one address for all such.
    pub const OPAQUE: Peer = Peer(Some(u128::MAX));

    /// `addr`'s peer: an IPv4 address (also when written IPv4-mapped, or NAT64's), or an
    /// IPv6 /48.
    pub fn of(addr: IpAddr) -> Peer {
        let bits = match addr {
            IpAddr::V4(v4) => u128::from(u32::from(v4)),
            IpAddr::V6(v6) => match (v6.to_ipv4_mapped(), u128::from(v6)) {
                (Some(v4), _) => u128::from(u32::from(v4)),
                (None, bits) if bits >> 32 == NAT64 >> 32 => bits & u128::from(u32::MAX),
                (None, bits) => (bits >> 80 << 80) | (1 << 32),
            },
        };
        Peer(Some(bits))
    }

    /// The peer of an IP address written as text, in the one spelling Rust's parser takes
    /// (no leading zeros, no zone); `None` otherwise.
    pub fn parse(text: &str) -> Option<Peer> {
        text.parse().ok().map(Peer::of)
    }

    /// The peer as one word, to pass it on (Envoy's dynamic metadata); [`Peer::from_word`]
    /// reads it back.
    pub fn word(self) -> Option<u128> {
        self.0
    }

    pub fn from_word(word: u128) -> Peer {
        Peer(Some(word))
    }
}

/// Which bucket holds each client-chosen slot, and how many each bucket holds. Changed only
/// under the table's insert lock.
pub(crate) struct PeerRoom {
    hasher: ahash::RandomState,
    held: Box<[AtomicU32]>,
    of_slot: Box<[AtomicU16]>,
}

impl PeerRoom {
    pub(crate) fn new(slots: usize, secret: (u64, u64)) -> PeerRoom {
        PeerRoom {
            hasher: ahash::RandomState::with_seeds(secret.0, secret.1, 0x243f_6a88, 0x85a3_08d3),
            held: (0..PEER_BUCKETS).map(|_| AtomicU32::new(0)).collect(),
            of_slot: (0..slots).map(|_| AtomicU16::new(0)).collect(),
        }
    }

    pub(crate) fn bucket(&self, peer: Peer) -> usize {
        peer.0.map_or(0, |bits| {
            1 + (self.hasher.hash_one(bits) % (PEER_BUCKETS as u64 - 1)) as usize
        })
    }

    /// Whether `peer` may take one more client-chosen slot, with `taken` of the share's
    /// `cap` slots taken.
    pub(crate) fn room(&self, peer: Peer, taken: u64, cap: u64) -> bool {
        // The address is hashed only once the share is pressed.
        if taken < cap - cap / PRESSED_WHEN_LEFT {
            return true;
        }
        match self.bucket(peer) {
            0 => true,
            b => u64::from(self.held[b].load(Relaxed)) < (cap / PEER_SHARE).max(1),
        }
    }

    /// Slot `slot` now holds a client-chosen key of `peer`'s.
    pub(crate) fn hold(&self, slot: usize, peer: Peer) {
        let b = self.bucket(peer);
        self.of_slot[slot].store(b as u16, Relaxed);
        if b != 0 {
            self.held[b].fetch_add(1, Relaxed);
        }
    }

    /// Slot `slot`'s client-chosen key is gone.
    pub(crate) fn free(&self, slot: usize) {
        let b = usize::from(self.of_slot[slot].swap(0, Relaxed));
        if b != 0 {
            self.held[b].fetch_sub(1, Relaxed);
        }
    }

    #[cfg(test)]
    pub(crate) fn bucket_of_slot(&self, slot: usize) -> usize {
        usize::from(self.of_slot[slot].load(Relaxed))
    }

    /// Client-chosen slots `peer`'s bucket holds.
    pub(crate) fn held(&self, peer: Peer) -> u64 {
        match self.bucket(peer) {
            0 => 0,
            b => u64::from(self.held[b].load(Relaxed)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_peer_per_ipv4_address_and_ipv6_site() {
        let p = |s: &str| Peer::parse(s).unwrap_or(Peer::UNKNOWN);
        assert_eq!(p("10.0.0.1"), p("::ffff:10.0.0.1"));
        assert_eq!(p("10.0.0.1"), p("64:ff9b::10.0.0.1"));
        assert_ne!(p("10.0.0.1"), p("64:ff9b::10.0.0.2"));
        assert_ne!(p("10.0.0.1"), p("10.0.0.2"));
        // A site's /48, whatever its subnets and hosts (6to4: one IPv4 address's /48).
        assert_eq!(p("2001:db8:1:2::1"), p("2001:db8:1:ff02:ffff::9"));
        assert_eq!(p("2002:a00:1::1"), p("2002:a00:1:ffff::1"));
        assert_ne!(p("2001:db8:1::1"), p("2001:db8:2::1"));
        // An IPv6 network whose low bits read as an IPv4 address is not that address.
        assert_ne!(p("::a00:1"), p("10.0.0.1"));
        assert_ne!(Peer::OPAQUE, p("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"));
        for text in [
            "/var/run/envoy.sock",
            "",
            "010.0.0.1",
            "10.0.0.1 ",
            "fe80::1%eth0",
        ] {
            assert_eq!(Peer::parse(text), None, "{text:?}");
        }
        for text in [
            "10.0.0.1",
            "::ffff:10.0.0.1",
            "2001:db8:1:2::1",
            "::a00:1",
            "::",
        ] {
            let peer = p(text);
            assert_eq!(Peer::from_word(peer.word().unwrap()), peer, "{text}");
        }
        assert_eq!(Peer::UNKNOWN.word(), None);
    }
}
