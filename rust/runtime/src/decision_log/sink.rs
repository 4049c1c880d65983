//! Where lines go: a file appended to (its chain continued from the last line found), or
//! stdout; files rotate by size, and the chain and `seq` go on across them.

use super::tail::{self, Skipped};
use super::{hex, now_ms};
use sha2::{Digest, Sha256};
use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use toolgate_core::observing::decision_log::{push_hex, GENESIS};

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
    /// Open the log at `path` (None: stdout), continuing its chain ([`tail::find`]). What
    /// follows the last chain point without being a line of the chain is kept, and a break
    /// line, written first, accounts for it; the returned text says so, for people.
    pub(super) fn open(
        path: Option<PathBuf>,
        rotate_bytes: u64,
    ) -> io::Result<(Sink, Option<String>)> {
        let mut random = [0u8; 6];
        getrandom::fill(&mut random).map_err(|e| io::Error::other(e.to_string()))?;
        let run = hex(&random);
        let Some(path) = path else {
            let sink = Sink {
                path: None,
                out: BufWriter::new(Box::new(io::stdout())),
                bytes: 0,
                rotate_bytes: 0,
                seq: 0,
                prev: GENESIS.to_owned(),
                run,
            };
            return Ok((sink, None));
        };
        let tail = tail::find(&path)?;
        let mut file = open_log(&path)?;
        if tail.unterminated {
            file.write_all(b"\n")?;
        }
        let bytes = file.metadata()?.len();
        let mut sink = Sink {
            path: Some(path),
            out: BufWriter::with_capacity(1 << 16, Box::new(file)),
            bytes,
            rotate_bytes,
            seq: tail.seq,
            prev: tail.prev,
            run,
        };
        let Some(skipped) = tail.skipped else {
            return Ok((sink, None));
        };
        sink.note_break(&skipped)?;
        let note = format!(
            "{}: {} line(s), {} bytes, after seq {} are not decision-log lines (a line cut \
             short by a crash, or bytes written by another program): kept, and accounted \
             for by the break line seq {}",
            skipped.from,
            skipped.lines,
            skipped.bytes,
            sink.seq - 1,
            sink.seq
        );
        Ok((sink, Some(note)))
    }

    /// The line that says which bytes before it are not lines of the chain.
    fn note_break(&mut self, skipped: &Skipped) -> io::Result<()> {
        let body = format!(
            "\"time_ms\":{},\"break\":{{\"lines\":{},\"bytes\":{},\"sha256\":\"{}\"}},",
            now_ms(),
            skipped.lines,
            skipped.bytes,
            skipped.sha256
        );
        self.append(body.as_bytes(), &mut Vec::new())?;
        self.flush()
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
        let file = open_log(&path)?;
        self.out = BufWriter::with_capacity(1 << 16, Box::new(file));
        self.bytes = 0;
        Ok(())
    }

    pub(super) fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

/// The log at `path` (a file, made if missing; or a pipe a log shipper reads), for
/// appending. Opened without waiting, so that a pipe nobody reads is refused at once rather
/// than waited on forever; then made blocking again for writing.
fn open_log(path: &Path) -> io::Result<File> {
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ENXIO) => io::Error::new(e.kind(), "a pipe nobody reads"),
            _ => e,
        })?;
    // SAFETY: a valid descriptor this function owns; F_SETFL with flags it read.
    let done = unsafe {
        let flags = libc::fcntl(file.as_raw_fd(), libc::F_GETFL);
        libc::fcntl(file.as_raw_fd(), libc::F_SETFL, flags & !libc::O_NONBLOCK)
    };
    if done < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(file)
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
