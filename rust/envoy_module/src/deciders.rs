//! Threads of the module's own that decide requests whose decision may wait on the network
//! (counters in Redis), so that Envoy's worker threads never wait: the worker hands the
//! request over and holds it, a decider decides and wakes the stream's worker through Envoy's
//! scheduler, and the worker answers or lets the request go on. The queue is bounded: a
//! request that finds it full is refused as busy (503), fail closed.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// Work for a decider.
pub type Job = Box<dyn FnOnce() + Send>;

/// Requests waiting for a decider, at most: far above what the deciders get through while a
/// store answers within its time budget, and a bound on what a flood can hold.
pub const QUEUE: usize = 4096;

/// The deciders of one filter configuration; stopped (after the work queued) when dropped.
pub struct Deciders {
    queue: Option<SyncSender<Job>>,
    threads: Vec<JoinHandle<()>>,
}

impl Deciders {
    /// `threads` deciders behind a queue of [`QUEUE`].
    pub fn start(threads: usize) -> Result<Deciders, String> {
        let (queue, jobs) = sync_channel::<Job>(QUEUE);
        let jobs = Arc::new(Mutex::new(jobs));
        let threads = (0..threads.max(1))
            .map(|i| {
                let jobs = Arc::clone(&jobs);
                std::thread::Builder::new()
                    .name(format!("toolgate-decide-{i}"))
                    .spawn(move || work(&jobs))
                    .map_err(|e| format!("cannot start a decider thread: {e}"))
            })
            .collect::<Result<_, _>>()?;
        Ok(Deciders {
            queue: Some(queue),
            threads,
        })
    }

    /// Queue `job`; given back if the queue is full.
    pub fn run(&self, job: Job) -> Result<(), Job> {
        let Some(queue) = &self.queue else {
            return Err(job);
        };
        queue.try_send(job).map_err(|e| match e {
            TrySendError::Full(job) | TrySendError::Disconnected(job) => job,
        })
    }
}

fn work(jobs: &Mutex<Receiver<Job>>) {
    loop {
        let job = match jobs.lock() {
            Ok(jobs) => jobs.recv(),
            Err(_) => return,
        };
        let Ok(job) = job else {
            return;
        };
        // A job answers its stream even if it panics (it catches its own); this is the
        // thread's guard.
        let _ = catch_unwind(AssertUnwindSafe(job));
    }
}

impl Drop for Deciders {
    fn drop(&mut self) {
        drop(self.queue.take());
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}
