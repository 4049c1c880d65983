//! Where a restarted writer goes on: the last line of the log that is a chain point (a JSON
//! object with an integer `seq`), found by reading the file backwards so that a line of any
//! length is read whole; and what follows that line without being one (a line a crash cut
//! short, bytes another program wrote). Those bytes are kept and accounted for by a break
//! line ([`Skipped`]), never a reason to start the chain over at `seq` 1.

use super::{hex, rotated_files};
use serde::de::{self, Deserializer as _, IgnoredAny, MapAccess, Visitor};
use sha2::{Digest, Sha256};
use std::fmt;
use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::path::Path;
use toolgate_core::observing::decision_log::GENESIS;

/// How much of a file is read at a time, backwards or forwards.
const BLOCK: usize = 1 << 16;

/// Where the chain goes on.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Tail {
    /// The last chain point's `seq` and SHA-256 (0 and [`GENESIS`] without one).
    pub seq: u64,
    pub prev: String,
    /// The log's file does not end with a newline: one goes before the next line.
    pub unterminated: bool,
    /// What follows the chain point without being a line of the chain.
    pub skipped: Option<Skipped>,
}

/// Bytes after the last chain point that are not decision-log lines, as `toolgate log
/// verify` reads them: `lines` pieces (newline-terminated, or the last of a file), `bytes`
/// long with their newlines (including the one the writer adds to an unterminated file),
/// hashing to `sha256`. The writer's break line carries these three, so a verifier can tell
/// exactly these bytes were skipped and nothing else.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Skipped {
    pub lines: u64,
    pub bytes: u64,
    pub sha256: String,
    /// Where they start, for people: `FILE at byte N`.
    pub from: String,
}

/// Where the chain of the log at `path` goes on: its last chain point, else its newest
/// rotated file's (a rotation, then a restart before any new line), else the start. An
/// error if a file searched holds lines but no chain point: not a decision log, so nothing
/// is appended to it (except a file of one unterminated line: a new log's first line, cut
/// by a crash).
pub(super) fn find(path: &Path) -> io::Result<Tail> {
    let mut current = Content::open(path)?;
    let mut gap = Gap::default();
    let mut point = match &mut current {
        Some(c) => c.last_point(true)?,
        None => None,
    };
    if point.is_none() {
        if let Some((_, newest)) = rotated_files(path).pop() {
            if let Some(mut rotated) = Content::open(&newest)? {
                // A rotated file is never written to again: its lines must be whole.
                point = rotated.last_point(false)?;
                match &point {
                    Some(p) => gap.add(&mut rotated, &newest, p.next, false)?,
                    None if rotated.len > 0 => return Err(not_a_log(&newest)),
                    None => {}
                }
            }
        }
    }
    let mut unterminated = false;
    if let Some(c) = &mut current {
        let from = match (c.point_next, &point) {
            (Some(next), _) => next,
            // The chain point is in the rotated file: all of this one is skipped.
            (None, Some(_)) => 0,
            (None, None) if c.len == 0 || c.is_one_cut_line()? => 0,
            (None, None) => return Err(not_a_log(path)),
        };
        gap.add(c, path, from, true)?;
        unterminated = c.len > 0 && !c.ends_with_newline;
    }
    let (seq, prev) = point.map_or((0, GENESIS.to_owned()), |p| (p.seq, hex(&p.sha256)));
    Ok(Tail {
        seq,
        prev,
        unterminated,
        skipped: gap.finish(),
    })
}

fn not_a_log(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!(
            "{}: no line of it is a decision-log line (line 1 is not): not appending to a \
             file that is not a decision log (move it away, or name another file)",
            path.display()
        ),
    )
}

/// A chain point: the line's `seq`, its SHA-256, and where the line after it starts.
struct Point {
    seq: u64,
    sha256: [u8; 32],
    next: u64,
}

/// One file of the log, read without being loaded.
struct Content {
    file: File,
    len: u64,
    ends_with_newline: bool,
    /// Where the line after the last chain point starts, once it is found.
    point_next: Option<u64>,
}

impl Content {
    /// The file at `path` if it is a regular file (a pipe or a device has no last line),
    /// else None.
    fn open(path: &Path) -> io::Result<Option<Content>> {
        match std::fs::metadata(path) {
            Ok(m) if m.is_file() => {}
            Ok(_) => return Ok(None),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        }
        let mut file = File::open(path)?;
        let len = file.metadata()?.len();
        let mut last = [0u8];
        if len > 0 {
            file.seek(SeekFrom::Start(len - 1))?;
            file.read_exact(&mut last)?;
        }
        Ok(Some(Content {
            file,
            len,
            ends_with_newline: last[0] == b'\n',
            point_next: None,
        }))
    }

    /// The last line that is a chain point, read backwards line by line. A last line
    /// without its newline counts if `unterminated` allows (it is whole: the crash came
    /// just before the newline, which the writer adds).
    fn last_point(&mut self, unterminated: bool) -> io::Result<Option<Point>> {
        let mut end = match (self.ends_with_newline, unterminated) {
            (true, _) => self.len - 1,
            (false, true) => self.len,
            (false, false) => match self.newline_before(self.len)? {
                Some(n) => n,
                None => return Ok(None),
            },
        };
        loop {
            let start = self.newline_before(end)?.map_or(0, |n| n + 1);
            if let Some(seq) = self.seq_of(start, end)? {
                let next = (end + 1).min(self.len);
                self.point_next = Some(next);
                let sha256 = self.sha256(start, end)?;
                return Ok(Some(Point { seq, sha256, next }));
            }
            if start == 0 {
                return Ok(None);
            }
            end = start - 1;
        }
    }

    /// Whether the file is one line without a newline: what a crash during a new log's
    /// first write leaves.
    fn is_one_cut_line(&mut self) -> io::Result<bool> {
        Ok(self.len > 0 && !self.ends_with_newline && self.newline_before(self.len)?.is_none())
    }

    /// The offset of the last newline before `end`.
    fn newline_before(&mut self, mut end: u64) -> io::Result<Option<u64>> {
        let mut block = vec![0u8; BLOCK];
        while end > 0 {
            let start = end.saturating_sub(BLOCK as u64);
            let piece = &mut block[..(end - start) as usize];
            self.file.seek(SeekFrom::Start(start))?;
            self.file.read_exact(piece)?;
            if let Some(i) = piece.iter().rposition(|&b| b == b'\n') {
                return Ok(Some(start + i as u64));
            }
            end = start;
        }
        Ok(None)
    }

    /// The bytes `start..end`, streamed.
    fn span(&mut self, start: u64, end: u64) -> io::Result<io::Take<&mut File>> {
        self.file.seek(SeekFrom::Start(start))?;
        Ok((&mut self.file).take(end - start))
    }

    /// The `seq` of the line at `start..end` if it is a JSON object with one integer
    /// `seq`, read as a stream: a long line is never held whole.
    fn seq_of(&mut self, start: u64, end: u64) -> io::Result<Option<u64>> {
        let reader = BufReader::with_capacity(BLOCK, self.span(start, end)?);
        let mut de = serde_json::Deserializer::from_reader(reader);
        let seq = de
            .deserialize_map(SeqOf)
            .and_then(|seq| de.end().map(|()| seq));
        Ok(seq.ok().flatten())
    }

    fn sha256(&mut self, start: u64, end: u64) -> io::Result<[u8; 32]> {
        let mut hasher = Sha256::new();
        io::copy(&mut self.span(start, end)?, &mut hasher)?;
        Ok(hasher.finalize().into())
    }
}

/// The bytes skipped so far, across files.
#[derive(Default)]
struct Gap {
    hasher: Sha256,
    lines: u64,
    bytes: u64,
    from: Option<String>,
}

impl Gap {
    /// Add the bytes of `content` from `start` on; `terminate`: a last line without a
    /// newline gets the one the writer adds (only the file being written is written to).
    fn add(
        &mut self,
        content: &mut Content,
        path: &Path,
        start: u64,
        terminate: bool,
    ) -> io::Result<()> {
        if start >= content.len {
            return Ok(());
        }
        let mut rest = content.span(start, content.len)?;
        let mut block = vec![0u8; BLOCK];
        loop {
            let n = rest.read(&mut block)?;
            if n == 0 {
                break;
            }
            self.hasher.update(&block[..n]);
            self.lines += block[..n].iter().filter(|&&b| b == b'\n').count() as u64;
        }
        self.bytes += content.len - start;
        if !content.ends_with_newline {
            self.lines += 1;
            if terminate {
                self.hasher.update(b"\n");
                self.bytes += 1;
            }
        }
        self.from
            .get_or_insert_with(|| format!("{} at byte {start}", path.display()));
        Ok(())
    }

    fn finish(self) -> Option<Skipped> {
        (self.bytes > 0).then(|| Skipped {
            lines: self.lines,
            bytes: self.bytes,
            sha256: hex(&self.hasher.finalize()),
            from: self.from.unwrap_or_default(),
        })
    }
}

/// Reads a JSON object's integer `seq`, skipping every other member.
struct SeqOf;

impl<'de> Visitor<'de> for SeqOf {
    type Value = Option<u64>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Option<u64>, M::Error> {
        let mut seq = None;
        while let Some(key) = map.next_key::<std::borrow::Cow<'_, str>>()? {
            if key == "seq" {
                if seq.is_some() {
                    return Err(de::Error::duplicate_field("seq"));
                }
                seq = Some(map.next_value::<u64>()?);
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(seq)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn scratch_dir() -> PathBuf {
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("toolgate-tail-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// A chain line of about `size` bytes (its own `prev` is not checked here).
    fn line(seq: u64, size: usize) -> String {
        let pad = "x".repeat(size.saturating_sub(60));
        format!("{{\"seq\":{seq},\"pad\":\"{pad}\",\"prev\":\"{GENESIS}\"}}")
    }

    fn sha(text: &str) -> String {
        hex(&Sha256::digest(text.as_bytes()))
    }

    fn log(content: &str) -> (PathBuf, Tail) {
        let path = scratch_dir().join("decisions.jsonl");
        std::fs::write(&path, content).unwrap();
        let tail = find(&path).unwrap();
        (path, tail)
    }

    #[test]
    fn a_last_line_of_any_length_is_where_the_chain_goes_on() {
        for size in [10, BLOCK - 1, BLOCK, BLOCK + 1, 3 * BLOCK + 7, 1 << 20] {
            let last = line(2, size);
            let (_, tail) = log(&format!("{}\n{last}\n", line(1, 100)));
            assert_eq!((tail.seq, &tail.prev), (2, &sha(&last)), "{size}");
            assert_eq!((tail.unterminated, tail.skipped), (false, None));
        }
    }

    #[test]
    fn a_line_cut_short_is_skipped_and_accounted_for() {
        let whole = line(7, 300);
        let (first, cut) = (line(6, 100), &line(8, 300)[..123]);
        let (path, tail) = log(&format!("{first}\n{whole}\n{cut}"));
        assert_eq!((tail.seq, &tail.prev), (7, &sha(&whole)));
        assert!(tail.unterminated, "the writer ends the cut line first");
        let skipped = tail.skipped.unwrap();
        assert_eq!((skipped.lines, skipped.bytes), (1, 124));
        assert_eq!(skipped.sha256, sha(&format!("{cut}\n")));
        let at = format!(
            "{} at byte {}",
            path.display(),
            first.len() + whole.len() + 2
        );
        assert_eq!(skipped.from, at);
    }

    #[test]
    fn lines_that_are_not_the_chain_are_skipped_whatever_their_length() {
        let whole = line(3, 200);
        let garbage = format!(
            "not json\n[1,2]\n{{\"seq\":\"4\"}}\n\n{}\n",
            "g".repeat(1 << 20)
        );
        let (_, tail) = log(&format!("{whole}\n{garbage}"));
        assert_eq!(
            (tail.seq, &tail.prev, tail.unterminated),
            (3, &sha(&whole), false)
        );
        let skipped = tail.skipped.unwrap();
        assert_eq!((skipped.lines, skipped.bytes), (5, garbage.len() as u64));
        assert_eq!(skipped.sha256, sha(&garbage));
    }

    #[test]
    fn a_whole_last_line_without_its_newline_goes_on_the_chain() {
        let last = line(5, 200);
        let (_, tail) = log(&format!("{}\n{last}", line(4, 100)));
        assert_eq!((tail.seq, &tail.prev), (5, &sha(&last)));
        assert_eq!((tail.unterminated, tail.skipped), (true, None));
    }

    #[test]
    fn a_file_that_is_not_a_decision_log_is_refused() {
        let path = scratch_dir().join("notes.txt");
        std::fs::write(&path, "some\nnotes\n").unwrap();
        let error = find(&path).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::InvalidData);
        assert!(error.to_string().contains("notes.txt"), "{error}");
        // A first line cut by a crash is a log's start, not another file.
        let (_, tail) = log("{\"seq\":1,\"id\":\"ab");
        assert_eq!(
            (tail.seq, tail.prev.as_str(), tail.unterminated),
            (0, GENESIS, true)
        );
        assert_eq!(tail.skipped.unwrap().lines, 1);
    }

    #[test]
    fn an_empty_file_goes_on_from_the_newest_rotated_one() {
        let dir = scratch_dir();
        let path = dir.join("decisions.jsonl");
        let last = line(9, 100);
        std::fs::write(dir.join("decisions.jsonl.1"), format!("{}\n", line(1, 50))).unwrap();
        std::fs::write(dir.join("decisions.jsonl.2"), format!("{last}\ncut")).unwrap();
        std::fs::write(&path, "").unwrap();
        let tail = find(&path).unwrap();
        assert_eq!(
            (tail.seq, &tail.prev, tail.unterminated),
            (9, &sha(&last), false)
        );
        // The rotated file's cut line is skipped as it is: it is not written to again.
        let skipped = tail.skipped.unwrap();
        assert_eq!((skipped.lines, skipped.bytes), (1, 3));
        assert_eq!(skipped.sha256, sha("cut"));
        assert!(find(&dir.join("absent.jsonl")).unwrap().skipped.is_none());
    }

    #[test]
    fn a_device_has_no_tail() {
        let tail = find(Path::new("/dev/null")).unwrap();
        assert_eq!(
            (tail.seq, tail.prev.as_str(), tail.skipped),
            (0, GENESIS, None)
        );
    }
}
