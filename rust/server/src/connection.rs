//! Connections and where they are served. One acceptor thread takes each connection from
//! the listener and deals it, in turn, to one of the serving threads; each serving thread
//! runs a current-thread runtime that serves its connections to the end. A connection never
//! moves between threads, so a call is decided without cross-thread wakeups or work
//! stealing (measured: 1.37x the saturated throughput of one multi-thread runtime at 0.62x
//! the CPU per call, bench/RESULTS.md).

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::os::unix::net::{UnixListener as StdUnixListener, UnixStream as StdUnixStream};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpStream, UnixStream};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::UnboundedReceiverStream;
use tokio_stream::StreamExt;
use tonic::transport::server::Connected;

/// A listening socket, bound before any thread starts so that errors reach the caller.
pub enum Bound {
    Tcp(std::net::TcpListener),
    Unix(StdUnixListener, PathBuf),
}

impl Bound {
    /// Bind `addr`; a second sidecar on the same port fails (no SO_REUSEPORT).
    pub fn tcp(addr: SocketAddr) -> Result<Bound, String> {
        let fail = |e: io::Error| format!("cannot listen on {addr}: {e}");
        let socket = socket2::Socket::new(
            socket2::Domain::for_address(addr),
            socket2::Type::STREAM,
            Some(socket2::Protocol::TCP),
        )
        .map_err(fail)?;
        socket.set_reuse_address(true).map_err(fail)?;
        socket.set_nonblocking(true).map_err(fail)?;
        socket.bind(&addr.into()).map_err(fail)?;
        socket.listen(1024).map_err(fail)?;
        Ok(Bound::Tcp(socket.into()))
    }

    pub fn unix(path: &Path) -> Result<Bound, String> {
        use std::os::unix::fs::FileTypeExt;
        // A socket file left by a sidecar that is gone would make bind fail; anything else at
        // that path is not ours to remove.
        if let Ok(meta) = std::fs::symlink_metadata(path) {
            if meta.file_type().is_socket() && StdUnixStream::connect(path).is_err() {
                let _ = std::fs::remove_file(path);
            }
        }
        let fail = |e: io::Error| format!("cannot listen on unix:{}: {e}", path.display());
        let listener = StdUnixListener::bind(path).map_err(fail)?;
        listener.set_nonblocking(true).map_err(fail)?;
        Ok(Bound::Unix(listener, path.to_owned()))
    }

    /// The address as `--listen` spells it, with the port the system chose for port 0.
    pub fn address(&self) -> Result<String, String> {
        match self {
            Bound::Tcp(listener) => listener
                .local_addr()
                .map(|a| a.to_string())
                .map_err(|e| e.to_string()),
            Bound::Unix(_, path) => Ok(format!("unix:{}", path.display())),
        }
    }
}

/// The connections a serving thread is dealt, registered with its runtime.
pub type Incoming =
    tokio_stream::adapters::Map<UnboundedReceiverStream<Accepted>, fn(Accepted) -> io::Result<Io>>;

/// Serving threads and their acceptor.
pub struct Serving {
    /// `Some(grace)`: stop accepting, and stop serving after `grace`.
    stop: watch::Sender<Option<Duration>>,
    threads: Vec<std::thread::JoinHandle<Result<(), String>>>,
}

impl Serving {
    /// Serve what is accepted on `bound` on `threads` threads: `serve` is called once on each,
    /// with the connections dealt to it and a signal that resolves when it is to stop.
    pub fn start<F, S, E>(bound: Bound, threads: usize, serve: F) -> Result<Serving, String>
    where
        F: Fn(Incoming, Signal) -> S + Clone + Send + 'static,
        S: Future<Output = Result<(), E>>,
        E: std::fmt::Display,
    {
        let (stop, stopping) = watch::channel(None::<Duration>);
        let mut handles = Vec::with_capacity(threads + 1);
        let mut senders = Vec::with_capacity(threads);
        for i in 0..threads {
            let (sender, connections) = mpsc::unbounded_channel::<Accepted>();
            senders.push(sender);
            let serve = serve.clone();
            let stopping = stopping.clone();
            let thread = std::thread::Builder::new()
                .name(format!("toolgate-grpc-{i}"))
                .spawn(move || serve_thread(connections, stopping, serve))
                .map_err(|e| format!("cannot start a serving thread: {e}"))?;
            handles.push(thread);
        }
        let accepting = std::thread::Builder::new()
            .name("toolgate-accept".into())
            .spawn(move || accept(bound, senders, stopping))
            .map_err(|e| format!("cannot start the acceptor: {e}"))?;
        handles.push(accepting);
        Ok(Serving {
            stop,
            threads: handles,
        })
    }

    /// Stop accepting, let the calls in flight finish for up to `grace`, then return.
    pub fn stop(self, grace: Duration) -> Result<(), String> {
        let _ = self.stop.send(Some(grace));
        let mut outcome = Ok(());
        for thread in self.threads {
            match thread.join() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => outcome = Err(e),
                Err(_) => outcome = Err("a serving thread panicked".into()),
            }
        }
        outcome
    }
}

/// Resolves when the server is to stop accepting and finish its calls.
pub type Signal = std::pin::Pin<Box<dyn Future<Output = ()> + Send>>;

/// Threads a serving thread may hand decisions to while Redis is slow, each waiting at most
/// the store's time budget. Bounded, so a slow spell cannot grow the process without end by
/// a thread, a malloc arena and a Redis connection per call in flight; sized above the ~32
/// per serving thread that an hour at half of saturation used (fewer queue the calls: 4
/// doubled the soak's p99).
const DECIDING_THREADS: usize = 48;
/// Kept for as long as the process runs in practice. A thread that exits closes its Redis
/// connection; the pool then grows again in the next slow spell, all at once, each new
/// thread connecting inside a call's budget (in an hour on Redis, every call that ran past
/// the 5 ms budget fell in a 10 s sample where the set had emptied).
const DECIDING_KEEP_ALIVE: Duration = Duration::from_secs(24 * 3600);

fn serve_thread<F, S, E>(
    connections: mpsc::UnboundedReceiver<Accepted>,
    stopping: watch::Receiver<Option<Duration>>,
    serve: F,
) -> Result<(), String>
where
    F: Fn(Incoming, Signal) -> S,
    S: Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .max_blocking_threads(DECIDING_THREADS)
        .thread_keep_alive(DECIDING_KEEP_ALIVE)
        .thread_name("toolgate-decide")
        .build()
        .map_err(|e| format!("cannot start the gRPC runtime: {e}"))?;
    let adopt: fn(Accepted) -> io::Result<Io> = Accepted::adopt;
    let incoming = UnboundedReceiverStream::new(connections).map(adopt);
    let mut until = stopping.clone();
    let mut past_grace = stopping;
    let signal: Signal = Box::pin(async move {
        let _ = until.wait_for(Option::is_some).await;
    });
    let deadline = async move {
        if let Ok(grace) = past_grace.wait_for(Option::is_some).await {
            tokio::time::sleep(grace.unwrap_or_default()).await;
        }
    };
    runtime.block_on(async move {
        tokio::select! {
            served = serve(incoming, signal) =>
                served.map_err(|e| format!("the server failed: {e}")),
            // Calls still running past the grace period are dropped.
            () = deadline => Ok(()),
        }
    })
}

/// An accepted connection on its way to a serving thread (registered with no runtime yet).
pub enum Accepted {
    Tcp(std::net::TcpStream),
    Unix(StdUnixStream),
}

impl Accepted {
    /// Register with the runtime of the thread that serves it.
    pub fn adopt(self) -> io::Result<Io> {
        match self {
            Accepted::Tcp(stream) => TcpStream::from_std(stream).map(Io::Tcp),
            Accepted::Unix(stream) => UnixStream::from_std(stream).map(Io::Unix),
        }
    }
}

/// Accept until `stop` says so, dealing connections to `threads` in turn. Runs on a thread
/// of its own; the listener closes when it returns, so new connections are refused.
fn accept(
    bound: Bound,
    threads: Vec<mpsc::UnboundedSender<Accepted>>,
    mut stop: watch::Receiver<Option<Duration>>,
) -> Result<(), String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the acceptor: {e}"))?;
    runtime.block_on(async move {
        let listener = Listener::new(bound).map_err(|e| e.to_string())?;
        let mut next = 0;
        loop {
            tokio::select! {
                _ = stop.wait_for(Option::is_some) => return Ok(()),
                accepted = listener.accept() => match accepted {
                    Ok(connection) => {
                        let _ = threads[next % threads.len()].send(connection);
                        next += 1;
                    }
                    // Out of descriptors or a connection reset before it was taken: wait a
                    // moment rather than spin, and go on.
                    Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
                },
            }
        }
    })
}

enum Listener {
    Tcp(tokio::net::TcpListener),
    Unix(tokio::net::UnixListener),
}

impl Listener {
    fn new(bound: Bound) -> io::Result<Listener> {
        Ok(match bound {
            Bound::Tcp(l) => Listener::Tcp(tokio::net::TcpListener::from_std(l)?),
            Bound::Unix(l, _) => Listener::Unix(tokio::net::UnixListener::from_std(l)?),
        })
    }

    async fn accept(&self) -> io::Result<Accepted> {
        match self {
            Listener::Tcp(l) => {
                let (stream, _) = l.accept().await?;
                stream.set_nodelay(true)?;
                stream.into_std().map(Accepted::Tcp)
            }
            Listener::Unix(l) => {
                let (stream, _) = l.accept().await?;
                stream.into_std().map(Accepted::Unix)
            }
        }
    }
}

/// A connection as a serving thread reads and writes it.
pub enum Io {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Connected for Io {
    // Nothing reads the peer's address: identity comes from the call, never the socket.
    type ConnectInfo = ();

    fn connect_info(&self) {}
}

impl AsyncRead for Io {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Io::Unix(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Io {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Io::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            Io::Unix(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Io::Tcp(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Io::Unix(s) => Pin::new(s).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Io::Tcp(s) => s.is_write_vectored(),
            Io::Unix(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Tcp(s) => Pin::new(s).poll_flush(cx),
            Io::Unix(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Io::Unix(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}
