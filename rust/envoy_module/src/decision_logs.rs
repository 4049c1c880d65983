//! The decision logs open in Envoy's process, by file ([`crate::shared`]): each filter
//! configuration that names one file writes through one writer, so that the file's lines stay
//! one chain (`prev`, `seq`) and no two writers append to it at once. A file is known by its
//! directory's real path and its name, so two spellings of one file are one log.

use crate::shared::Shared;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use toolgate_core::asking::approval::CallDigests;
use toolgate_core::decision::Decision;
use toolgate_core::observing::decision_log::{DecisionSink, Record};
use toolgate_runtime::decision_log::{DecisionLog, Settings};

/// A log and the settings it was opened with (the key's digest in place of the key): what
/// the configurations' engines write to, which keeps it open while any does.
pub struct Open {
    log: DecisionLog,
    settings: String,
}

impl DecisionSink for Open {
    fn wants(&self, d: &Decision) -> bool {
        self.log.wants(d)
    }

    fn submit(&self, record: Record) -> bool {
        self.log.submit(record)
    }

    fn queued(&self) -> (u64, u64) {
        self.log.queued()
    }

    fn digests(&self) -> Option<&CallDigests> {
        self.log.digests()
    }
}

/// Each open log by its file (None: stdout).
static OPEN: Shared<Option<PathBuf>, Open> = Shared::new();

/// The log `settings` describe: the one already open on its file, or a new one. A file open
/// with other settings (filter, rotation, queue, key) is refused: one writer has one of each.
pub fn open(settings: Settings) -> Result<Arc<Open>, String> {
    use sha2::{Digest, Sha256};
    let described = format!(
        "{:?} {} {} {} {:x}",
        settings.filter,
        settings.rotate_bytes,
        settings.queue,
        settings.queue_bytes,
        Sha256::digest(&settings.grant_key)
    );
    let name = match &settings.path {
        Some(p) => p.display().to_string(),
        None => "-".to_owned(),
    };
    let file = settings.path.as_deref().map(real_path);
    let open = OPEN.get_or(file, || {
        let settings_text = described.clone();
        let log = DecisionLog::open(settings)
            .map_err(|e| format!("decision log {name}: cannot open it: {e}"))?;
        Ok::<_, String>(Open {
            log,
            settings: settings_text,
        })
    })?;
    if open.settings != described {
        return Err(format!(
            "decision log {name}: another filter configuration writes it with other settings"
        ));
    }
    Ok(open)
}

/// `path` with its directory's symlinks and `..` resolved (the file itself may not exist
/// yet); as given if the directory cannot be resolved.
fn real_path(path: &Path) -> PathBuf {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return path.to_path_buf();
    };
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    match std::fs::canonicalize(dir) {
        Ok(dir) => dir.join(name),
        Err(_) => path.to_path_buf(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use toolgate_core::observing::decision_log::Filter;

    fn settings(path: &Path, filter: Filter) -> Settings {
        Settings {
            path: Some(path.to_path_buf()),
            filter,
            rotate_bytes: 0,
            queue: 16,
            queue_bytes: 1 << 16,
            grant_key: vec![7; 32],
        }
    }

    #[test]
    fn configurations_naming_one_file_share_its_writer_while_it_is_open() {
        let dir = std::env::temp_dir().join(format!("toolgate-logs-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        let path = dir.join("decisions.jsonl");
        let first = open(settings(&path, Filter::All)).unwrap();
        // Another spelling of the same file.
        let second = open(settings(&dir.join("sub/../decisions.jsonl"), Filter::All)).unwrap();
        assert!(Arc::ptr_eq(&first, &second));
        let other = open(settings(&path, Filter::Denials)).err().unwrap();
        assert!(other.contains("with other settings"), "{other}");
        let elsewhere = open(settings(&dir.join("other.jsonl"), Filter::Denials)).unwrap();
        assert!(!Arc::ptr_eq(&first, &elsewhere));
        drop((first, second));
        // Closed with its last configuration: the next opens it anew, with its own settings.
        assert!(open(settings(&path, Filter::Denials)).is_ok());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
