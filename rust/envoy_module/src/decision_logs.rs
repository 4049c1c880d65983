//! The decision logs open in Envoy's process, by file. Envoy makes a filter configuration
//! for each listener that names the module, and a new one beside the old when a listener is
//! updated; each that names one file writes through one writer, so that the file's lines stay
//! one chain (`prev`, `seq`) and no two writers append to it at once.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, Weak};
use toolgate_runtime::decision_log::{DecisionLog, Settings};

/// An open log: its file (None: stdout), what it was opened with, and the log while open.
type Open = (Option<PathBuf>, String, Weak<DecisionLog>);

/// Each open log.
static OPEN: Mutex<Vec<Open>> = Mutex::new(Vec::new());

/// The log `settings` describe: the one already open on its file, or a new one. A file open
/// with other settings (filter, rotation, queue, key) is refused: one writer has one of each.
pub fn open(settings: Settings) -> Result<Arc<DecisionLog>, String> {
    let what = format!(
        "{:?} {} {} {} {:?}",
        settings.filter,
        settings.rotate_bytes,
        settings.queue,
        settings.queue_bytes,
        settings.grant_key
    );
    let name = match &settings.path {
        Some(p) => p.display().to_string(),
        None => "-".to_owned(),
    };
    let mut open = OPEN.lock().unwrap_or_else(|e| e.into_inner());
    open.retain(|(_, _, log)| log.strong_count() > 0);
    if let Some((_, given, log)) = open.iter().find(|(p, _, _)| *p == settings.path) {
        if let Some(log) = log.upgrade() {
            if *given != what {
                return Err(format!(
                    "decision log {name}: another filter configuration writes it with other settings"
                ));
            }
            return Ok(log);
        }
    }
    let path = settings.path.clone();
    let log = DecisionLog::open(settings)
        .map_err(|e| format!("decision log {name}: cannot open it: {e}"))?;
    let log = Arc::new(log);
    open.push((path, what, Arc::downgrade(&log)));
    Ok(log)
}

#[cfg(test)]
mod tests {
    use super::*;
    use toolgate_core::observing::decision_log::Filter;

    fn settings(path: &std::path::Path, filter: Filter) -> Settings {
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
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("decisions.jsonl");
        let first = open(settings(&path, Filter::All)).unwrap();
        let second = open(settings(&path, Filter::All)).unwrap();
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
