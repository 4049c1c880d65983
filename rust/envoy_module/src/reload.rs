//! The policy file reloaded while Envoy runs, as `toolgate serve` reloads it: a thread of the
//! module's own looks at the file every `reload_interval` seconds through the runtime's
//! `PolicyWatch` (in-place edits once their writer has closed the file and it has settled,
//! a rename or a ConfigMap's swap at once, a changed pins file), and swaps a new policy into
//! the engine that Envoy's worker threads decide with: counters are kept, and a stream being
//! decided finishes on the policy it started with. A policy that does not load keeps the old
//! one, and says why in Envoy's log.

use crate::abi::{log, LOG_ERROR, LOG_INFO, LOG_WARN};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::mpsc::{channel, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use toolgate_core::{Engine, Policy, PolicyError, PolicyErrors};
use toolgate_runtime::file_writes::FileWrites;
use toolgate_runtime::policy_file::{load_text, pins_loaded, PinsRead};
use toolgate_runtime::policy_watch::{FileVersion, Look, PolicyWatch};

/// Reloads by result, as `toolgate serve` counts them (`toolgate_policy_reloads_total`).
#[derive(Default)]
pub struct ReloadCounts {
    pub success: AtomicU64,
    pub failure: AtomicU64,
}

/// The thread watching one filter configuration's policy file; stopped when dropped.
pub struct Reloader {
    stop: Option<Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Reloader {
    /// Watch `path`, whose policy `engine` holds, read from `loaded`.
    pub fn start(
        path: PathBuf,
        engine: Arc<Engine>,
        loaded: &FileVersion,
        interval: f64,
        settle: f64,
        counts: Arc<ReloadCounts>,
    ) -> Result<Reloader, String> {
        let pins = pins_loaded(&engine.policy().source);
        let mut watch = PolicyWatch::new(&path, settle, Some(loaded), pins, FileWrites::new());
        if let Some(why) = watch.unwatched() {
            let message = format!("toolgate: cannot watch the policy file's writers ({why})");
            log(LOG_WARN, &format!("{message}; settle period only"));
        }
        let (stop, stopped) = channel::<()>();
        let started = Instant::now();
        let thread = std::thread::Builder::new()
            .name("toolgate-reload".into())
            .spawn(move || loop {
                let wait = Duration::from_secs_f64(watch.next_wait(interval));
                match stopped.recv_timeout(wait) {
                    Err(RecvTimeoutError::Timeout) => {}
                    // The configuration is gone.
                    _ => return,
                }
                let now = started.elapsed().as_secs_f64();
                look(&path, &engine, &mut watch, now, &counts);
            })
            .map_err(|e| format!("cannot start the policy's reload thread: {e}"))?;
        Ok(Reloader {
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl Drop for Reloader {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// One look at the file, and the load it calls for.
fn look(path: &Path, engine: &Engine, watch: &mut PolicyWatch, now: f64, counts: &ReloadCounts) {
    let file = path.display();
    let version = match watch.look(false, now) {
        Look::Unchanged | Look::Settling { first: false } => return,
        Look::Unreadable { first, why } => {
            if first {
                let revision = engine.policy().revision.clone();
                let message = format!(
                    "toolgate: policy {file} cannot be read ({why}: deleted, or being \
                     replaced); serving revision {revision} until it can"
                );
                log(LOG_WARN, &message);
            }
            return;
        }
        Look::Settling { first: true } => {
            let message = format!(
                "toolgate: policy {file} changed in place; loading it once its writer has \
                 closed it and it has settled"
            );
            log(LOG_INFO, &message);
            return;
        }
        Look::Load { version, .. } => version,
    };
    let before = engine.policy().revision.clone();
    let (loaded, read) = policy_of(&version, path);
    let refused = match loaded {
        Ok(policy) => {
            let revision = policy.revision.clone();
            let pins = pins_loaded(&policy);
            match engine.reload(policy) {
                Ok(()) => {
                    counts.success.fetch_add(1, Relaxed);
                    watch.tried(pins);
                    let message =
                        format!("toolgate: policy reloaded: revision {before} -> {revision}");
                    log(LOG_INFO, &message);
                    return;
                }
                Err(why) => why,
            }
        }
        Err(why) => why,
    };
    counts.failure.fetch_add(1, Relaxed);
    // A pins file the refused policy names is watched until the policy loads.
    watch.tried(read);
    log(
        LOG_ERROR,
        &format!("toolgate: policy {file} is invalid ({refused}); keeping revision {before}"),
    );
}

/// The policy a reading of its file makes (`path`: where its pins files are read), or why it
/// makes none; and the pins files it named, as read.
pub fn policy_of(version: &FileVersion, path: &Path) -> (Result<Policy, String>, PinsRead) {
    let Ok(text) = std::str::from_utf8(&version.content) else {
        return (Err("it is not UTF-8 text".into()), Vec::new());
    };
    let (loaded, read) = load_text(text, path);
    let described = |errors: PolicyErrors| {
        let error = |e: &PolicyError| {
            let pointer = if e.pointer.is_empty() {
                "/"
            } else {
                &e.pointer
            };
            let line = e.line.map(|l| format!(" (line {l})")).unwrap_or_default();
            format!("{pointer}: {}{line}", e.message)
        };
        errors.0.iter().map(error).collect::<Vec<_>>().join("; ")
    };
    (loaded.map_err(described), read)
}
