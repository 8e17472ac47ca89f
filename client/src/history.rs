//! Durable direct-chat history: one append-only log per peer, shown again when the
//! next conversation with that peer starts.
//!
//! Each record is one line, written with a single `write` on a file opened for
//! appending, so a crash (even `kill -9`) loses at most the record being written.
//! Each line carries a CRC-32 of its content, so a torn last line, or garbage left by
//! a power cut, is recognised and skipped, never shown. The file stays readable:
//!
//! ```text
//! 3f2a9c01 2026-11-25T12:00:01Z > hello there
//! 0b4e77d2 2026-11-25T12:00:05Z < hi! (line breaks escaped as \n)
//! ```
//!
//! Growth is bounded: past [`MAX_FILE_BYTES`] the log is rotated to `FILE.1` (the
//! previous `FILE.1` is dropped), so a peer's history never takes more than twice that.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

/// Size past which a log is rotated.
pub const MAX_FILE_BYTES: u64 = 1024 * 1024;

/// Who said it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// We sent it.
    Sent,
    /// The peer sent it.
    Received,
}

/// One remembered line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// UTC time, `YYYY-MM-DDTHH:MM:SSZ`.
    pub at: String,
    /// Who said it.
    pub direction: Direction,
    /// What was said.
    pub text: String,
}

/// What loading found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Loaded {
    /// Intact records, oldest first.
    pub records: Vec<Record>,
    /// Lines that were torn or damaged and were skipped.
    pub skipped: usize,
}

/// An open history log.
#[derive(Debug)]
pub struct History {
    path: PathBuf,
    file: File,
    size: u64,
}

impl History {
    /// Opens (creating it and its folder if needed) the log at `path`.
    pub fn open(path: &Path) -> io::Result<History> {
        if let Some(dir) = path.parent()
            && !dir.as_os_str().is_empty()
        {
            std::fs::create_dir_all(dir)?;
        }
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        let size = file.metadata()?.len();
        Ok(History {
            path: path.to_owned(),
            file,
            size,
        })
    }

    /// Where the log of conversations with `peer` lives by default:
    /// `$XDG_DATA_HOME/p2pchat/history/PEER.log`, else `~/.local/share/...`.
    pub fn default_path(peer: &str) -> Option<PathBuf> {
        Some(History::path_in(&crate::data_dir()?, peer))
    }

    /// Where the log of conversations with `peer` lives in the data folder `dir`.
    pub fn path_in(dir: &Path, peer: &str) -> PathBuf {
        dir.join("history")
            .join(format!("{}.log", file_name_for(peer)))
    }

    /// The log's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one record (one `write`), rotating first if the log is full.
    pub fn append(&mut self, direction: Direction, text: &str) -> io::Result<()> {
        let line = encode(&utc_now(), direction, text);
        if self.size + line.len() as u64 > MAX_FILE_BYTES && self.size > 0 {
            self.rotate()?;
        }
        self.file.write_all(line.as_bytes())?;
        self.size += line.len() as u64;
        Ok(())
    }

    fn rotate(&mut self) -> io::Result<()> {
        std::fs::rename(&self.path, rotated(&self.path))?;
        self.file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        self.size = 0;
        Ok(())
    }

    /// The last `n` intact records of the log at `path` (and its rotated part).
    pub fn load_last(path: &Path, n: usize) -> io::Result<Loaded> {
        let mut loaded = Loaded::default();
        for p in [rotated(path), path.to_owned()] {
            let mut bytes = Vec::new();
            match File::open(&p) {
                Ok(mut f) => {
                    f.read_to_end(&mut bytes)?;
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            }
            let mut lines = bytes.split(|&b| b == b'\n').collect::<Vec<_>>();
            // The piece after the last newline is a torn record (or nothing).
            if let Some(last) = lines.pop()
                && !last.is_empty()
            {
                loaded.skipped += 1;
            }
            for line in lines {
                match decode(line) {
                    Some(r) => loaded.records.push(r),
                    None => loaded.skipped += 1,
                }
            }
        }
        let extra = loaded.records.len().saturating_sub(n);
        loaded.records.drain(..extra);
        Ok(loaded)
    }
}

fn rotated(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".1");
    PathBuf::from(name)
}

/// A file name from a peer's name or address: letters, digits, `.`, `-`, `_` only.
pub fn file_name_for(peer: &str) -> String {
    let name: String = peer
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') {
                c
            } else {
                '_'
            }
        })
        .collect();
    let name = name.trim_matches('.');
    if name.is_empty() {
        "peer".into()
    } else {
        name.chars().take(64).collect()
    }
}

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
    }
    out
}

fn unescape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            Some(other) => out.push(other),
            None => {}
        }
    }
    out
}

fn encode(at: &str, direction: Direction, text: &str) -> String {
    let arrow = match direction {
        Direction::Sent => '>',
        Direction::Received => '<',
    };
    let body = format!("{at} {arrow} {}", escape(text));
    format!("{:08x} {body}\n", crc32fast::hash(body.as_bytes()))
}

fn decode(line: &[u8]) -> Option<Record> {
    let line = std::str::from_utf8(line).ok()?;
    let (crc, body) = line.split_once(' ')?;
    if u32::from_str_radix(crc, 16).ok()? != crc32fast::hash(body.as_bytes()) || crc.len() != 8 {
        return None;
    }
    let mut parts = body.splitn(3, ' ');
    let at = parts.next()?.to_owned();
    let direction = match parts.next()? {
        ">" => Direction::Sent,
        "<" => Direction::Received,
        _ => return None,
    };
    let text = unescape(parts.next().unwrap_or(""));
    Some(Record {
        at,
        direction,
        text,
    })
}

/// The current UTC time as `YYYY-MM-DDTHH:MM:SSZ`.
pub fn utc_now() -> String {
    utc(jiff::Timestamp::now().as_second())
}

/// `secs` since the Unix epoch as `YYYY-MM-DDTHH:MM:SSZ`, whole seconds (jiff prints
/// a timestamp in RFC 3339, UTC).
fn utc(secs: i64) -> String {
    jiff::Timestamp::from_second(secs)
        .unwrap_or(jiff::Timestamp::UNIX_EPOCH)
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("p2pchat-history-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir.join("peer.log")
    }

    #[test]
    fn utc_formatting_matches_known_dates() {
        assert_eq!(utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(utc(1_795_609_845), "2026-11-25T12:30:45Z");
    }

    #[test]
    fn records_round_trip_with_escapes() {
        let path = temp("roundtrip");
        let mut h = History::open(&path).unwrap();
        h.append(Direction::Sent, "hello\nworld \\ ok").unwrap();
        h.append(Direction::Received, "hi").unwrap();
        let loaded = History::load_last(&path, 10).unwrap();
        assert_eq!(loaded.skipped, 0);
        let texts: Vec<_> = loaded
            .records
            .iter()
            .map(|r| (r.direction, r.text.as_str()))
            .collect();
        assert_eq!(
            texts,
            [
                (Direction::Sent, "hello\nworld \\ ok"),
                (Direction::Received, "hi")
            ]
        );
    }

    #[test]
    fn a_torn_last_record_and_garbage_are_skipped() {
        let path = temp("torn");
        let mut h = History::open(&path).unwrap();
        for i in 0..3 {
            h.append(Direction::Sent, &format!("message {i}")).unwrap();
        }
        drop(h);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes.truncate(bytes.len() - 5); // cut the last record mid-way
        std::fs::write(&path, &bytes).unwrap();
        let loaded = History::load_last(&path, 10).unwrap();
        assert_eq!(loaded.records.len(), 2);
        assert_eq!(loaded.skipped, 1);
        // Garbage in the middle (a power cut's zeroed block) is skipped too.
        let mut bytes = std::fs::read(&path).unwrap();
        bytes.splice(0..0, b"\0\0\0\0 garbage\n".iter().copied());
        std::fs::write(&path, &bytes).unwrap();
        let loaded = History::load_last(&path, 10).unwrap();
        assert_eq!((loaded.records.len(), loaded.skipped), (2, 2));
    }

    #[test]
    fn the_log_rotates_and_loading_spans_both_parts() {
        let path = temp("rotate");
        let mut h = History::open(&path).unwrap();
        let big = "x".repeat(1000);
        for _ in 0..1200 {
            h.append(Direction::Received, &big).unwrap();
        }
        assert!(std::fs::metadata(&path).unwrap().len() <= MAX_FILE_BYTES);
        assert!(rotated(&path).exists());
        let loaded = History::load_last(&path, 2000).unwrap();
        assert_eq!(loaded.skipped, 0);
        assert!(loaded.records.len() > 1000 && loaded.records.len() <= 1200);
    }

    #[test]
    fn peer_names_become_safe_file_names() {
        assert_eq!(file_name_for("../../etc/passwd"), "_.._etc_passwd");
        assert_eq!(file_name_for("ann"), "ann");
        assert_eq!(file_name_for(""), "peer");
    }
}
