//! The policy file's watch (`toolgate_runtime::policy_watch`) for the sidecar's reload loop
//! (`toolgate.sidecar.reload`), which logs and counts what it finds.

use pyo3::prelude::*;
use pyo3::types::PyBytes;
use std::path::PathBuf;
use std::sync::Mutex;
use toolgate_runtime::file_writes::FileWrites;
use toolgate_runtime::policy_file::PinsRead;
use toolgate_runtime::policy_watch::{self, FileVersion, Look, PolicyWatch};

/// One reading of the policy file through its symlinks; equal readings are of one file with
/// one content, size and mtime.
#[pyclass(name = "FileVersion", frozen, eq, module = "toolgate._core")]
#[derive(PartialEq)]
pub struct PyFileVersion {
    inner: FileVersion,
}

#[pymethods]
impl PyFileVersion {
    /// `(st_dev, st_ino)` of the file the path resolved to.
    #[getter]
    fn identity(&self) -> (u64, u64) {
        self.inner.identity
    }

    #[getter]
    fn digest(&self) -> &str {
        &self.inner.digest
    }

    #[getter]
    fn content<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, &self.inner.content)
    }
}

/// The policy file at `path` as it is now (a regular file only); None if it cannot be read.
#[pyfunction]
pub fn read_version(py: Python<'_>, path: PathBuf) -> Option<PyFileVersion> {
    let read = py.detach(|| policy_watch::read_version(&path));
    read.ok().map(|inner| PyFileVersion { inner })
}

/// What one look at the policy file found: `kind` is `unchanged`, `unreadable` (`why`),
/// `settling` or `load` (`content`; `pins`: only a pins file changed); `first`: the file
/// could be read at the look before (unreadable), or the edit was just seen (settling).
#[pyclass(name = "Look", frozen, get_all, module = "toolgate._core")]
pub struct PyLook {
    kind: &'static str,
    first: bool,
    pins: bool,
    why: Option<String>,
    content: Option<Py<PyBytes>>,
}

/// The watch on one policy file (`toolgate_runtime::policy_watch::PolicyWatch`).
#[pyclass(name = "PolicyWatch", frozen, module = "toolgate._core")]
pub struct PyPolicyWatch {
    inner: Mutex<PolicyWatch>,
}

#[pymethods]
impl PyPolicyWatch {
    /// `follow_writers=False`: ask nothing of the kernel; the settle period alone decides.
    #[new]
    #[pyo3(signature = (path, settle, loaded, pins, follow_writers = true))]
    fn new(
        path: PathBuf,
        settle: f64,
        loaded: Option<PyRef<'_, PyFileVersion>>,
        pins: PinsRead,
        follow_writers: bool,
    ) -> Self {
        let writes = match follow_writers {
            true => FileWrites::new(),
            false => FileWrites::unknown("not asked"),
        };
        let loaded = loaded.as_ref().map(|v| &v.inner);
        let watch = PolicyWatch::new(&path, settle, loaded, pins, writes);
        PyPolicyWatch {
            inner: Mutex::new(watch),
        }
    }

    /// Why the file's writers are not followed, if they are not.
    #[getter]
    fn unwatched(&self) -> Option<String> {
        self.watch().unwatched().map(str::to_owned)
    }

    fn next_wait(&self, interval: f64) -> f64 {
        self.watch().next_wait(interval)
    }

    /// One look at the file at `now` (seconds on a monotonic clock).
    fn look(&self, py: Python<'_>, forced: bool, now: f64) -> PyLook {
        let look = py.detach(|| self.watch().look(forced, now));
        let mut out = PyLook {
            kind: "unchanged",
            first: false,
            pins: false,
            why: None,
            content: None,
        };
        match look {
            Look::Unchanged => {}
            Look::Unreadable { first, why } => {
                (out.kind, out.first, out.why) = ("unreadable", first, Some(why));
            }
            Look::Settling { first } => (out.kind, out.first) = ("settling", first),
            Look::Load { version, pins } => {
                out.kind = "load";
                out.pins = pins;
                out.content = Some(PyBytes::new(py, &version.content).unbind());
            }
        }
        out
    }

    /// The pins files the policy last tried named, as it read them.
    fn tried(&self, pins: PinsRead) {
        self.watch().tried(pins);
    }
}

impl PyPolicyWatch {
    fn watch(&self) -> std::sync::MutexGuard<'_, PolicyWatch> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}
