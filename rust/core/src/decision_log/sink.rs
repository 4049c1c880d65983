//! Where lines go: a file appended to (its chain continued from the last line found), or
//! stdout; files rotate by size, and the chain and `seq` go on across them.

use super::{hex, push_hex, GENESIS};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// The file (or stdout) being written, where the chain stands, and rotation.
pub(super) struct Sink {
    path: Option<PathBuf>,
    out: BufWriter<Box<dyn Write + Send>>,
    bytes: u64,
    rotate_bytes: u64,
    pub(super) seq: u64,
    pub(super) prev: String,
    /// This writer's random prefix of decision ids: unique across restarts.
    run: String,
}

impl Sink {
    pub(super) fn open(path: Option<PathBuf>, rotate_bytes: u64) -> io::Result<Sink> {
        let mut random = [0u8; 6];
        getrandom::fill(&mut random).map_err(|e| io::Error::other(e.to_string()))?;
        let run = hex(&random);
        let Some(path) = path else {
            return Ok(Sink {
                path: None,
                out: BufWriter::new(Box::new(io::stdout())),
                bytes: 0,
                rotate_bytes: 0,
                seq: 0,
                prev: GENESIS.to_owned(),
                run,
            });
        };
        // The chain goes on from the last line written: this file's, else the newest
        // rotated file's (rotation happened, then a restart before any new line).
        let (seq, prev) = match last_line(&path)? {
            Some(line) => chain_point(&line),
            None => match newest_rotated(&path) {
                Some(rotated) => {
                    last_line(&rotated)?.map_or((0, GENESIS.to_owned()), |l| chain_point(&l))
                }
                None => (0, GENESIS.to_owned()),
            },
        };
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        let bytes = file.metadata()?.len();
        Ok(Sink {
            path: Some(path),
            out: BufWriter::with_capacity(1 << 16, Box::new(file)),
            bytes,
            rotate_bytes,
            seq,
            prev,
            run,
        })
    }

    /// Append one line: `body` is the line's fields as JSON (`"key":value,` pairs, each
    /// ending in a comma), to which `seq` and `id` are put before and `prev` after.
    pub(super) fn append(&mut self, body: &[u8], line: &mut Vec<u8>) -> io::Result<()> {
        if self.rotate_bytes > 0 && self.bytes >= self.rotate_bytes {
            self.rotate()?;
        }
        self.seq += 1;
        line.clear();
        let _ = write!(
            line,
            "{{\"seq\":{},\"id\":\"{}-{}\",",
            self.seq, self.run, self.seq
        );
        line.extend_from_slice(body);
        line.extend_from_slice(b"\"prev\":\"");
        line.extend_from_slice(self.prev.as_bytes());
        line.extend_from_slice(b"\"}");
        self.prev.clear();
        push_hex(&mut self.prev, &Sha256::digest(&line[..]));
        line.push(b'\n');
        self.out.write_all(line)?;
        self.bytes += line.len() as u64;
        Ok(())
    }

    /// The current file becomes `PATH.N` (N one more than the newest); a new PATH starts.
    fn rotate(&mut self) -> io::Result<()> {
        let Some(path) = self.path.clone() else {
            return Ok(());
        };
        self.out.flush()?;
        let n = rotated_files(&path).last().map_or(1, |(n, _)| n + 1);
        std::fs::rename(&path, numbered(&path, n))?;
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        self.out = BufWriter::with_capacity(1 << 16, Box::new(file));
        self.bytes = 0;
        Ok(())
    }

    pub(super) fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

fn numbered(path: &Path, n: u64) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{n}"));
    PathBuf::from(name)
}

/// `PATH.1`, `PATH.2`, … that exist, oldest first.
pub fn rotated_files(path: &Path) -> Vec<(u64, PathBuf)> {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return Vec::new();
    };
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    let prefix = format!("{}.", name.to_string_lossy());
    let mut found: Vec<(u64, PathBuf)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let file = e.file_name().to_string_lossy().into_owned();
            let n = file.strip_prefix(&prefix)?.parse::<u64>().ok()?;
            Some((n, e.path()))
        })
        .collect();
    found.sort();
    found
}

fn newest_rotated(path: &Path) -> Option<PathBuf> {
    rotated_files(path).pop().map(|(_, p)| p)
}

/// The last complete line of a file (None if it has none). A line cut by a crash is not
/// complete: the chain goes on from the line before it, which a verifier reports.
fn last_line(path: &Path) -> io::Result<Option<String>> {
    let mut file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let len = file.metadata()?.len();
    // Lines are short: the last 64 KiB hold the last whole one.
    let start = len.saturating_sub(1 << 16);
    file.seek(SeekFrom::Start(start))?;
    let mut last = None;
    for line in BufReader::new(file).split(b'\n') {
        let line = line?;
        if !line.is_empty() {
            last = Some(line);
        }
    }
    let Some(last) = last else { return Ok(None) };
    Ok(Some(String::from_utf8_lossy(&last).into_owned()))
}

/// `(seq, hash)` of a written line: where the chain goes on from.
fn chain_point(line: &str) -> (u64, String) {
    let seq = serde_json::from_str::<Value>(line)
        .ok()
        .and_then(|v| v.get("seq").and_then(Value::as_u64))
        .unwrap_or(0);
    (seq, hex(&Sha256::digest(line.as_bytes())))
}
