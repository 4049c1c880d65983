//! What the sidecar holds for its callers, against one budget ([`HeldBytes`]): every call's
//! share of the gRPC layer's buffers ([`HoldCalls`]) and, for ext_proc streams, the answers
//! not yet whole ([`crate::ext_proc`]).
//!
//! tonic keeps, for each call while it is open, a buffer as large as the largest message it
//! has been sent (it reserves a message's declared length as soon as its 5-byte header
//! arrives) and one as large as the largest it has answered; neither shrinks. A client that
//! opens many calls, or sends large or half-sent messages and keeps them open, would so take
//! the sidecar's memory without limit; so would calls whose answers the client never takes.
//! Each call is charged a fixed share while its request is open and another while its answer
//! is (until it has gone out), plus its largest message each way; a request that would take
//! what is held past the budget is ended with `RESOURCE_EXHAUSTED`, which frees what it held.
//! Past the budget the sidecar refuses calls (failing closed) rather than growing.
//!
//! Within it, each MCP server's ext_proc streams share a [`Room`] for all they hold, charged
//! as the budget charges it, so that one server whose answers mean harm cannot fill the
//! budget for all.

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use tonic::body::Body;
use tonic::Status;

/// The bytes held for callers, against limits for the server: what large holders (more than
/// [`HeldBytes::SMALL`] each) hold together stays within the limit, and what all hold within
/// the limit and [`HeldBytes::HEADROOM`]. So callers holding large messages, who can fill
/// their limit, do not keep out the small calls (every Check, decision and list request, every
/// open stream), and the many small holders do not keep out the large. Within it, each MCP
/// server's exchanges share a [`Room`] with half the large holders' limit.
pub struct HeldBytes {
    all: Ledger,
    /// Each MCP server's room, while one of its exchanges is open.
    rooms: Mutex<HashMap<Box<str>, Weak<Room>>>,
}

impl HeldBytes {
    /// For large holders. Large messages cost the process more than their bytes (the
    /// allocator keeps what it freed for the next: an outside review measured 300 MiB of RSS
    /// after waves of streams holding 128 MiB of 1 MiB messages), so they get the least room.
    pub const LIMIT: usize = 48 << 20;
    /// What all holders may hold beyond [`HeldBytes::LIMIT`], together: room the large cannot
    /// take from the small (open calls and streams, whose charge is what they take: up to
    /// 20,000 `GET` streams through the shipped Envoy configs, 117 MiB at [`STREAM_SHARE`]
    /// each). With the limit and the idle process (about 37 MiB), within the sidecar's 256
    /// MiB.
    pub const HEADROOM: usize = 96 << 20;
    /// The most a small holder holds.
    pub const SMALL: usize = 64 << 10;
    /// Server names longer than this share one room: a name is the route's (the operator's),
    /// and a longer one, which only a caller could have sent, is not kept once per name.
    pub const NAME: usize = 128;

    pub fn new(limit: usize) -> Arc<HeldBytes> {
        Arc::new(HeldBytes {
            all: Ledger::new(limit, Self::HEADROOM),
            rooms: Mutex::new(HashMap::new()),
        })
    }

    /// The room of the MCP server named `server`, shared by its open exchanges, each of which
    /// gives it back with [`HeldBytes::leave`]: half the large holders' limit and the
    /// headroom, so that one server whose answers mean harm (large parts, events that never
    /// end, many streams) cannot take all of either limit from the others.
    pub fn room(&self, server: &str) -> Arc<Room> {
        let key = if server.len() > Self::NAME {
            "\0long"
        } else {
            server
        };
        let mut rooms = self.rooms.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(room) = rooms.get(key).and_then(Weak::upgrade) {
            return room;
        }
        // Half the large holders' limit; all of the headroom, which holds the streams the
        // proxy lets open (20,000 through the shipped configs, of every server together), so
        // that no number of plain streams it lets one server open fills that server's room.
        let room = Arc::new(Room {
            ledger: Ledger::new(self.all.limit / 2, self.all.headroom),
            key: key.into(),
        });
        rooms.insert(key.into(), Arc::downgrade(&room));
        room
    }

    /// An exchange's part in its room ends: the room is forgotten once no exchange holds it,
    /// so the table is as large as the servers with exchanges open.
    pub fn leave(&self, room: Arc<Room>) {
        // Under the lock, where rooms are also found: the count cannot grow meanwhile.
        let mut rooms = self.rooms.lock().unwrap_or_else(|e| e.into_inner());
        if Arc::strong_count(&room) == 1 {
            rooms.remove(&room.key);
        }
        drop(room);
    }

    pub fn total(&self) -> usize {
        self.all.total()
    }

    /// One holder, which held `held` bytes, now holds `now` ([`Ledger::hold`]).
    pub fn hold(&self, held: &mut usize, now: usize) -> bool {
        self.all.hold(held, now)
    }
}

/// Bytes held against two limits: one for what large holders (more than [`HeldBytes::SMALL`]
/// each) hold together, one for what all hold (the limit and a headroom).
pub struct Ledger {
    total: AtomicUsize,
    /// What the large holders hold, of `total`.
    large: AtomicUsize,
    limit: usize,
    headroom: usize,
}

impl Ledger {
    fn new(limit: usize, headroom: usize) -> Ledger {
        Ledger {
            total: AtomicUsize::new(0),
            large: AtomicUsize::new(0),
            limit,
            headroom,
        }
    }

    pub fn total(&self) -> usize {
        self.total.load(Ordering::Relaxed)
    }

    /// One holder, which held `held` bytes, now holds `now`: false if that takes what is
    /// held over a limit (the large holders' limit for a large holder, the headroom's end for
    /// all); counted all the same (but for a holding past the limit on its own, not counted):
    /// the holder gives up and holds less then.
    pub fn hold(&self, held: &mut usize, now: usize) -> bool {
        let all = self.limit + self.headroom;
        // Past the limit on its own (a length of 4 GiB declared): refused without being
        // counted, so the totals never show other holders more than there is.
        if now > self.limit && now > HeldBytes::SMALL || now > all {
            return false;
        }
        // Most changes are none (an answer read whole): the shared counts are only read.
        if now == *held {
            return self.total() <= all && (now <= HeldBytes::SMALL || self.large() <= self.limit);
        }
        let (was, is) = (large(*held), large(now));
        let large_after = match (was > 0, is > 0) {
            (false, false) => 0,
            _ if is >= was => {
                let more = is - was;
                self.large.fetch_add(more, Ordering::Relaxed) + more
            }
            _ => {
                self.large.fetch_sub(was - is, Ordering::Relaxed);
                0
            }
        };
        let within = if now > *held {
            let more = now - *held;
            let total = self.total.fetch_add(more, Ordering::Relaxed) + more;
            total <= all && (is == 0 || large_after <= self.limit)
        } else {
            self.total.fetch_sub(*held - now, Ordering::Relaxed);
            true
        };
        *held = now;
        within
    }

    fn large(&self) -> usize {
        self.large.load(Ordering::Relaxed)
    }
}

/// What one MCP server's ext_proc exchanges hold (their streams' buffers, their answers'
/// unfinished messages, the notes they keep), within half the large holders' limit and the
/// headroom ([`HeldBytes::room`]).
pub struct Room {
    ledger: Ledger,
    key: Box<str>,
}

impl Room {
    /// One exchange, which held `held` bytes of the room, now holds `now` ([`Ledger::hold`]).
    pub fn hold(&self, held: &mut usize, now: usize) -> bool {
        self.ledger.hold(held, now)
    }

    pub fn held(&self) -> usize {
        self.ledger.total()
    }
}

/// What of a holding counts as large: all of it past [`HeldBytes::SMALL`], none below.
fn large(holding: usize) -> usize {
    if holding > HeldBytes::SMALL {
        holding
    } else {
        0
    }
}

/// What the gRPC layer keeps for a stream whose largest message was `largest` bytes, beyond
/// the share it is charged anyway.
pub fn stream_buffer(largest: usize) -> usize {
    largest.saturating_sub(IN_SHARE)
}

/// What an open unary call holds besides its message, measured (an outside review: 9.3 KiB a
/// call whose message had not come; tonic's 8 KiB buffer to start with, hyper's and h2's
/// state for the stream, the handler).
pub const CALL_SHARE: usize = 10 << 10;
/// What a unary call's answer holds until it has gone out (measured: 50,000 answers a client
/// never took, 5.8 KiB each).
pub const ANSWER_SHARE: usize = 6 << 10;
/// What an open ext_proc stream holds besides its messages, measured: 5.2 KiB for a stream
/// sent one small message (tonic's buffers at 1 KiB to start with, the stream's state).
pub const STREAM_SHARE: usize = 6 << 10;

/// Messages up to this size stay within a call's buffers as they start out (1 KiB for a
/// stream, 8 KiB for a unary call): the shares have them.
const IN_SHARE: usize = 1 << 10;

/// A tower layer over every call: its request and response bodies charged to [`HeldBytes`].
/// The budget is borrowed for the process's life, not counted: tonic clones the layer for
/// every call, and a count shared by the serving threads would be two more atomic writes a
/// call (see [`HoldCalls::layer`]).
#[derive(Clone)]
pub struct HoldCalls<S> {
    inner: S,
    held: &'static HeldBytes,
}

impl<S> HoldCalls<S> {
    /// Keeps one reference to `held` for the rest of the process (a few bytes per server).
    pub fn layer(held: &Arc<HeldBytes>) -> impl Fn(S) -> HoldCalls<S> + Clone {
        let held: &'static HeldBytes = Box::leak(Box::new(Arc::clone(held)));
        move |inner| HoldCalls { inner, held }
    }
}

impl<S> tower::Service<http::Request<Body>> for HoldCalls<S>
where
    S: tower::Service<http::Request<Body>, Response = http::Response<Body>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Held<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let held = self.held;
        // A stream's answers may grow its buffer; a unary answer is one small message, and
        // holds its share until it has gone out (a client that never takes it).
        let (asked, answered) = if request.uri().path().starts_with(STREAMING) {
            (STREAM_SHARE, 0)
        } else {
            (CALL_SHARE, ANSWER_SHARE)
        };
        let request = request.map(|body| Body::new(Charged::new(body, held, asked)));
        Held {
            held,
            answered,
            inner: self.inner.call(request),
        }
    }
}

/// The service whose calls are streams that stay open (ext_proc's `Process`).
const STREAMING: &str = "/envoy.service.ext_proc.v3.ExternalProcessor/";

pin_project_lite::pin_project! {
    /// The answer of [`HoldCalls`]'s inner service: its body charged too.
    pub struct Held<F> {
        held: &'static HeldBytes,
        answered: usize,
        #[pin]
        inner: F,
    }
}

impl<F, E> std::future::Future for Held<F>
where
    F: std::future::Future<Output = Result<http::Response<Body>, E>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let answer = std::task::ready!(this.inner.poll(cx));
        let (held, fixed) = (*this.held, *this.answered);
        Poll::Ready(
            answer
                .map(|response| response.map(|body| Body::new(Charged::answer(body, held, fixed)))),
        )
    }
}

/// One body of a call, charged its fixed share and its largest message.
struct Charged {
    inner: Body,
    held: &'static HeldBytes,
    /// What this body holds of the budget.
    holding: usize,
    fixed: usize,
    /// A request is refused past the budget; an answer only counted.
    refuses: bool,
    frames: Framing,
    standing: Standing,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Standing {
    Within,
    /// Over the limit, the error not given yet.
    Refused,
    /// The error given: nothing more is read.
    Ended,
}

impl Charged {
    /// A request's body: refused at once if its share does not fit.
    fn new(inner: Body, held: &'static HeldBytes, fixed: usize) -> Charged {
        let mut holding = 0;
        let standing = if fixed > 0 && !held.hold(&mut holding, fixed) {
            held.hold(&mut holding, 0);
            Standing::Refused
        } else {
            Standing::Within
        };
        Charged::with(inner, held, holding, fixed, standing, true)
    }

    /// An answer's body: counted, never refused (the call has been decided and what the
    /// answer holds is already taken; while the total is over, new calls are refused).
    fn answer(inner: Body, held: &'static HeldBytes, fixed: usize) -> Charged {
        let mut holding = 0;
        held.hold(&mut holding, fixed);
        Charged::with(inner, held, holding, fixed, Standing::Within, false)
    }

    fn with(
        inner: Body,
        held: &'static HeldBytes,
        holding: usize,
        fixed: usize,
        standing: Standing,
        refuses: bool,
    ) -> Charged {
        Charged {
            inner,
            held,
            holding,
            fixed,
            refuses,
            frames: Framing::default(),
            standing,
        }
    }
}

impl Drop for Charged {
    fn drop(&mut self) {
        self.held.hold(&mut self.holding, 0);
    }
}

fn exhausted() -> Status {
    Status::resource_exhausted(
        "the sidecar holds as much for its callers as it may: try again later",
    )
}

impl http_body::Body for Charged {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let this = &mut *self;
        match this.standing {
            Standing::Within => {}
            Standing::Refused => {
                this.standing = Standing::Ended;
                return Poll::Ready(Some(Err(exhausted())));
            }
            Standing::Ended => return Poll::Ready(None),
        }
        let frame = std::task::ready!(Pin::new(&mut this.inner).poll_frame(cx));
        if let Some(data) = frame.as_ref().and_then(|f| f.as_ref().ok()?.data_ref()) {
            this.frames.read(data);
            let now = this.fixed + this.frames.largest.saturating_sub(IN_SHARE);
            if now > this.holding && !this.held.hold(&mut this.holding, now) && this.refuses {
                // Ending the call frees what tonic holds for it.
                this.held.hold(&mut this.holding, 0);
                this.standing = Standing::Ended;
                return Poll::Ready(Some(Err(exhausted())));
            }
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.standing == Standing::Ended || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Where a reader is in gRPC's framing (each message a flag byte, a 4-byte big-endian
/// length, then that many bytes), and the largest length declared so far.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Framing {
    header: [u8; 5],
    /// Bytes of the current header read (0 to 5).
    in_header: usize,
    /// Bytes of the current message still to come.
    remaining: usize,
    largest: usize,
}

impl Framing {
    /// Read the next bytes of the stream: headers are read, messages skipped.
    fn read(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            if self.remaining > 0 {
                let skip = self.remaining.min(data.len());
                self.remaining -= skip;
                data = &data[skip..];
                continue;
            }
            let take = (5 - self.in_header).min(data.len());
            self.header[self.in_header..self.in_header + take].copy_from_slice(&data[..take]);
            self.in_header += take;
            data = &data[take..];
            if self.in_header == 5 {
                let len = u32::from_be_bytes([
                    self.header[1],
                    self.header[2],
                    self.header[3],
                    self.header[4],
                ]) as usize;
                self.largest = self.largest.max(len);
                self.remaining = len;
                self.in_header = 0;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body::Body as _;
    use proptest::prelude::*;

    fn framed(messages: &[Vec<u8>]) -> Vec<u8> {
        let mut out = Vec::new();
        for m in messages {
            out.push(0);
            out.extend_from_slice(&(m.len() as u32).to_be_bytes());
            out.extend_from_slice(m);
        }
        out
    }

    proptest! {
        #[test]
        fn the_largest_message_is_found_however_the_bytes_are_split(
            sizes in proptest::collection::vec(0usize..3000, 1..12),
            cuts in proptest::collection::vec(0usize..40_000, 0..30),
        ) {
            let messages: Vec<Vec<u8>> = sizes.iter().map(|n| vec![7u8; *n]).collect();
            let bytes = framed(&messages);
            let mut at: Vec<usize> = cuts.into_iter().map(|c| c % (bytes.len() + 1)).collect();
            at.extend([0, bytes.len()]);
            at.sort_unstable();
            let mut framing = Framing::default();
            for pair in at.windows(2) {
                framing.read(&bytes[pair[0]..pair[1]]);
            }
            prop_assert_eq!(framing.largest, *sizes.iter().max().unwrap());
            // Between messages: nothing pending.
            prop_assert_eq!((framing.in_header, framing.remaining), (0, 0));
        }
    }

    /// A request body of the given frames.
    struct Frames(std::collections::VecDeque<Bytes>);

    impl http_body::Body for Frames {
        type Data = Bytes;
        type Error = Status;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
            Poll::Ready(self.0.pop_front().map(|b| Ok(Frame::data(b))))
        }
    }

    fn charged(frames: Vec<Vec<u8>>, budget: &'static HeldBytes) -> Charged {
        let frames = Frames(frames.into_iter().map(Bytes::from).collect());
        Charged::new(Body::new(frames), budget, CALL_SHARE)
    }

    fn leaked(budget: Arc<HeldBytes>) -> &'static HeldBytes {
        Box::leak(Box::new(budget))
    }

    fn next(body: &mut Charged) -> Option<Result<Frame<Bytes>, Status>> {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        match Pin::new(body).poll_frame(&mut cx) {
            Poll::Ready(frame) => frame,
            Poll::Pending => unreachable!("the test body is always ready"),
        }
    }

    #[test]
    fn a_call_holds_its_largest_message_while_open_and_is_refused_past_the_limit() {
        let budget = leaked(HeldBytes::new(1 << 20));
        let bytes = framed(&[vec![1; 1000], vec![2; 300_000], vec![3; 10]]);
        let (first, rest) = bytes.split_at(700);
        let mut body = charged(vec![first.to_vec(), rest.to_vec()], budget);
        assert_eq!(budget.total(), CALL_SHARE, "an open call holds its share");
        while let Some(frame) = next(&mut body) {
            assert!(frame.is_ok());
        }
        assert_eq!(budget.total(), CALL_SHARE + 300_000 - IN_SHARE);
        drop(body);
        assert_eq!(budget.total(), 0, "given back when the call ends");

        // Declared past the limit: refused as the header arrives, holding nothing after.
        let mut big = charged(vec![vec![0, 0, 0x20, 0, 0, 9]], budget);
        let refused = next(&mut big).unwrap().unwrap_err();
        assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
        assert_eq!(budget.total(), 0);
        assert!(next(&mut big).is_none());

        // A call opened while the budget is full is refused before anything is read.
        let full = leaked(HeldBytes::new(1 << 20));
        let mut holders = vec![0; 1 + HeldBytes::HEADROOM / HeldBytes::SMALL];
        assert!(full.hold(&mut holders[0], 1 << 20));
        for held in &mut holders[1..] {
            assert!(full.hold(held, HeldBytes::SMALL));
        }
        let mut late = charged(vec![framed(&[vec![1]])], full);
        assert_eq!(
            next(&mut late).unwrap().unwrap_err().code(),
            tonic::Code::ResourceExhausted
        );
        assert!(next(&mut late).is_none());
        drop(late);
        for held in &mut holders {
            full.hold(held, 0);
        }
        assert_eq!(full.total(), 0);
    }

    proptest! {
        #[test]
        fn the_total_stays_within_the_limit_however_calls_come_and_go(
            steps in proptest::collection::vec((0usize..64, 0usize..(300 << 10)), 1..400),
        ) {
            // Holders growing and giving back in any order, past the limit: a charge let in
            // leaves the total within its limit (the headroom's end for a small holder), a
            // refused one is given back at once, and all comes back to nothing.
            let budget = HeldBytes::new(1 << 20);
            let mut holders = vec![0usize; 64];
            for (holder, size) in steps {
                let wanted = if size % 3 == 0 { 0 } else { size };
                let grew = wanted > holders[holder];
                let within = budget.hold(&mut holders[holder], wanted);
                let all = (1 << 20) + HeldBytes::HEADROOM;
                if within && grew {
                    prop_assert!(budget.total() <= all);
                    prop_assert!(wanted <= HeldBytes::SMALL || budget.all.large() <= 1 << 20);
                }
                prop_assert!(budget.total() <= all + wanted, "{} > {}", budget.total(), all);
                prop_assert!(budget.all.large() <= (1 << 20) + wanted);
                if !within {
                    budget.hold(&mut holders[holder], 0);
                }
            }
            for held in &mut holders {
                budget.hold(held, 0);
            }
            prop_assert_eq!((budget.total(), budget.all.large()), (0, 0));
        }
    }

    #[test]
    fn a_declared_length_counts_before_its_bytes_come() {
        // tonic reserves a message's length when its header arrives.
        let mut framing = Framing::default();
        framing.read(&[0, 0, 0x40, 0, 0]);
        assert_eq!(framing.largest, 4 << 20);
        framing.read(&[1, 2, 3]);
        assert_eq!(framing.remaining, (4 << 20) - 3);
    }

    #[test]
    fn large_holders_stop_at_the_limit_and_small_ones_at_the_headroom() {
        const MIB: usize = 1 << 20;
        let budget = HeldBytes::new(4 * MIB);
        let (mut a, mut b) = (0, 0);
        assert!(budget.hold(&mut a, 3 * MIB));
        assert!(!budget.hold(&mut b, 2 * MIB), "5 MiB > 4 MiB");
        assert!(budget.hold(&mut b, 0));
        assert!(budget.hold(&mut b, MIB));
        // The limit is full; small holders go on into the headroom, to its end.
        let mut small = vec![0; HeldBytes::HEADROOM / HeldBytes::SMALL];
        for held in &mut small {
            assert!(budget.hold(held, HeldBytes::SMALL));
        }
        // Small holders past the limit do not keep a large one out of its own.
        let mut c = 0;
        assert!(budget.hold(&mut b, 0));
        assert!(
            budget.hold(&mut c, MIB),
            "large: 4 MiB with a, within the limit"
        );
        assert!(budget.hold(&mut c, 0) && budget.hold(&mut b, MIB));
        let mut one_more = 0;
        assert!(!budget.hold(&mut one_more, 1));
        assert!(budget.hold(&mut one_more, 0));
        // A holding past the limit on its own (a length of 4 GiB declared) is not counted.
        let before = budget.total();
        assert!(!budget.hold(&mut one_more, u32::MAX as usize));
        assert_eq!((budget.total(), one_more), (before, 0));
        for held in small.iter_mut().chain([&mut a, &mut b]) {
            assert!(budget.hold(held, 0));
        }
        assert_eq!(budget.total(), 0);
    }

    #[test]
    fn a_servers_exchanges_share_one_room_of_half_the_large_holders_limit() {
        let budget = HeldBytes::new(8 << 20);
        let (a, again, b) = (budget.room("a"), budget.room("a"), budget.room("b"));
        assert!(Arc::ptr_eq(&a, &again) && !Arc::ptr_eq(&a, &b));
        let (mut one, mut two, mut other) = (0, 0, 0);
        assert!(a.hold(&mut one, 3 << 20));
        // The second exchange of "a" goes past its 4 MiB (counted, for the caller to give up)...
        assert!(!again.hold(&mut two, 2 << 20));
        assert_eq!(a.held(), 5 << 20);
        assert!(again.hold(&mut two, 0));
        // ...while "b" has its own room; a holding past a room on its own is not counted.
        assert!(b.hold(&mut other, 4 << 20));
        assert!(!b.hold(&mut other, (4 << 20) + 1));
        assert_eq!((b.held(), other), (4 << 20, 4 << 20));
        for (room, held) in [(&a, &mut one), (&b, &mut other)] {
            assert!(room.hold(held, 0));
        }
        assert_eq!(a.held() + b.held(), 0);
        // Small holdings fill the headroom and the room's limit (100 MiB), no more.
        let mut small = vec![0; (100 << 20) / HeldBytes::SMALL + 1];
        let mut fits = 0;
        for held in small.iter_mut() {
            if !a.hold(held, HeldBytes::SMALL) {
                break;
            }
            fits += 1;
        }
        assert_eq!(fits, (100 << 20) / HeldBytes::SMALL);
    }

    #[test]
    fn rooms_are_forgotten_when_their_last_exchange_leaves() {
        let budget = HeldBytes::new(8 << 20);
        let kept = budget.room("kept");
        let mut held = 0;
        assert!(kept.hold(&mut held, 1 << 20));
        // Servers named one after another, each room left at once.
        for i in 0..10_000 {
            budget.leave(budget.room(&format!("server-{i}")));
        }
        // Two exchanges of one server: the room stays until the second leaves.
        let (first, second) = (budget.room("two"), budget.room("two"));
        budget.leave(first);
        assert!(Arc::ptr_eq(&second, &budget.room("two")));
        budget.leave(second);
        let names: Vec<String> = budget
            .rooms
            .lock()
            .unwrap()
            .keys()
            .map(|k| k.to_string())
            .collect();
        assert_eq!(names, ["kept"]);
        // A room still held is the same room, with what it holds.
        assert!(Arc::ptr_eq(&kept, &budget.room("kept")));
        assert_eq!(budget.room("kept").held(), 1 << 20);
    }

    #[test]
    fn long_server_names_share_one_room_and_are_not_kept() {
        let budget = HeldBytes::new(8 << 20);
        let (long, longer) = ("x".repeat(HeldBytes::NAME + 1), "y".repeat(4 << 20));
        let (one, two) = (budget.room(&long), budget.room(&longer));
        assert!(Arc::ptr_eq(&one, &two));
        let kept: usize = budget.rooms.lock().unwrap().keys().map(|k| k.len()).sum();
        assert!(kept < 16, "{kept} bytes of names kept");
        assert!(!Arc::ptr_eq(
            &budget.room(&"x".repeat(HeldBytes::NAME)),
            &one
        ));
    }
}
