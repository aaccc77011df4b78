//! The append-only audit log: one JSON line per attempt to run an action,
//! written through `std::fs` and synced, its error seen, before the action
//! runs and before the answer leaves. It rotates at a configured size into
//! `<path>.1`, so the newest entries always survive; reads take the tail.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use vigil_wire::AuditEntry;

/// How much of the file is read at a time, from the end, for the tail.
const TAIL_CHUNK: u64 = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("audit log {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("audit log: the writer stopped: {0}")]
    Writer(String),
}

pub struct AuditLog {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    /// The previous file, kept whole at rotation.
    rotated: PathBuf,
    max_bytes: u64,
    file: Mutex<File>,
}

fn io_error(path: &Path) -> impl Fn(std::io::Error) -> AuditError + '_ {
    move |source| AuditError::Io {
        path: path.to_owned(),
        source,
    }
}

impl AuditLog {
    /// Opens (or creates) the log at `path`; it rotates once a line would
    /// take it over `max_bytes`.
    pub fn open(path: &Path, max_bytes: u64) -> Result<Self, AuditError> {
        let mut file = open_append(path).map_err(io_error(path))?;
        // A crash mid-write leaves a torn last line: end it, so the next
        // entry starts on a line of its own instead of being lost with it.
        if !ends_with_newline(&mut file).map_err(io_error(path))? {
            file.write_all(b"\n")
                .and_then(|()| file.sync_data())
                .map_err(io_error(path))?;
        }
        let mut rotated = path.as_os_str().to_owned();
        rotated.push(".1");
        Ok(Self {
            inner: Arc::new(Inner {
                path: path.to_owned(),
                rotated: rotated.into(),
                max_bytes,
                file: Mutex::new(file),
            }),
        })
    }

    /// Appends one entry and syncs it; `Ok` only once it is on disk.
    pub async fn append(&self, entry: &AuditEntry) -> Result<(), AuditError> {
        let mut line = serde_json::to_vec(entry).expect("audit entries always serialise");
        line.push(b'\n');
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || inner.append(&line))
            .await
            .map_err(|e| AuditError::Writer(e.to_string()))?
    }

    /// The newest `limit` entries, newest first, from the tail of the log
    /// (and of the rotated file when the log holds fewer). Lines that do not
    /// parse (a torn write from a crash) are skipped.
    pub async fn newest(&self, limit: usize) -> Result<Vec<AuditEntry>, AuditError> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || inner.newest(limit))
            .await
            .map_err(|e| AuditError::Writer(e.to_string()))?
    }
}

impl Inner {
    fn file(&self) -> MutexGuard<'_, File> {
        self.file.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn append(&self, line: &[u8]) -> Result<(), AuditError> {
        let io = io_error(&self.path);
        let mut file = self.file();
        let mut len = file.metadata().map_err(&io)?.len();
        if len > 0 && len + line.len() as u64 > self.max_bytes {
            *file = self.rotate().map_err(&io)?;
            len = 0;
        }
        if let Err(e) = file.write_all(line).and_then(|()| file.sync_data()) {
            // Take back a partly written line, so the next entry starts on
            // a line of its own.
            let _ = file.set_len(len);
            return Err(io(e));
        }
        Ok(())
    }

    /// Moves the log to `<path>.1` (replacing the one before) and starts an
    /// empty one.
    fn rotate(&self) -> std::io::Result<File> {
        std::fs::rename(&self.path, &self.rotated)?;
        let file = open_append(&self.path)?;
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            File::open(dir)?.sync_all()?;
        }
        Ok(file)
    }

    fn newest(&self, limit: usize) -> Result<Vec<AuditEntry>, AuditError> {
        // Held so that a rotation cannot move the files mid-read.
        let _writer = self.file();
        let mut entries = Vec::new();
        for path in [&self.path, &self.rotated] {
            if entries.len() >= limit {
                break;
            }
            let lines =
                tail_lines(path, limit - entries.len(), TAIL_CHUNK).map_err(io_error(path))?;
            entries.extend(
                lines
                    .iter()
                    .rev()
                    .filter_map(|l| serde_json::from_slice::<AuditEntry>(l).ok()),
            );
        }
        entries.truncate(limit);
        Ok(entries)
    }
}

fn open_append(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .read(true)
        .open(path)
}

fn ends_with_newline(file: &mut File) -> std::io::Result<bool> {
    if file.metadata()?.len() == 0 {
        return Ok(true);
    }
    file.seek(SeekFrom::End(-1))?;
    let mut last = [0u8; 1];
    file.read_exact(&mut last)?;
    Ok(last[0] == b'\n')
}

/// The last `want` non-empty lines of the file at `path`, oldest first,
/// read backwards `chunk` bytes at a time; a missing file has none.
fn tail_lines(path: &Path, want: usize, chunk: u64) -> std::io::Result<Vec<Vec<u8>>> {
    let mut file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut start = file.metadata()?.len();
    let mut tail: Vec<u8> = Vec::new();
    // One newline more than lines wanted: the first line read may be cut.
    while start > 0 && tail.iter().filter(|b| **b == b'\n').count() <= want {
        let step = chunk.min(start);
        start -= step;
        let mut buf = vec![0; step as usize];
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(&mut buf)?;
        buf.extend_from_slice(&tail);
        tail = buf;
    }
    let mut lines: Vec<&[u8]> = tail.split(|b| *b == b'\n').collect();
    if start > 0 {
        lines.remove(0);
    }
    lines.retain(|l| !l.is_empty());
    let skip = lines.len().saturating_sub(want);
    Ok(lines[skip..].iter().map(|l| l.to_vec()).collect())
}

/// Refusals summarised rather than written one by one (rate-limited
/// requests): each client's first refusal in a window is written in full,
/// the rest are counted and written as one line when the window ends.
pub struct Tally {
    window_ms: u64,
    clients: Mutex<HashMap<IpAddr, Window>>,
}

struct Window {
    since_ms: u64,
    /// Refusals after the first, written as the summary.
    more: u64,
    last: AuditEntry,
}

impl Tally {
    pub fn new(window: Duration) -> Self {
        Self {
            window_ms: window.as_millis() as u64,
            clients: Mutex::new(HashMap::new()),
        }
    }

    /// Counts one refusal of `ip`; returns the lines to write now: the
    /// refusal itself when it opens a window, after the summary of the
    /// client's window that ended.
    pub fn count(&self, ip: IpAddr, refusal: AuditEntry) -> Vec<AuditEntry> {
        let now_ms = refusal.ts_ms;
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        match clients.get_mut(&ip) {
            Some(w) if now_ms < w.since_ms + self.window_ms => {
                w.more += 1;
                w.last = refusal;
                Vec::new()
            }
            _ => {
                let ended = clients.insert(
                    ip,
                    Window {
                        since_ms: now_ms,
                        more: 0,
                        last: refusal.clone(),
                    },
                );
                ended
                    .and_then(|w| self.summary(w))
                    .into_iter()
                    .chain([refusal])
                    .collect()
            }
        }
    }

    /// Summaries of the windows that have ended by `now_ms` (every window
    /// when `now_ms` is `u64::MAX`: at shutdown), forgotten once returned.
    pub fn ended(&self, now_ms: u64) -> Vec<AuditEntry> {
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        let done: Vec<IpAddr> = clients
            .iter()
            .filter(|(_, w)| now_ms >= w.since_ms.saturating_add(self.window_ms))
            .map(|(ip, _)| *ip)
            .collect();
        done.iter()
            .filter_map(|ip| clients.remove(ip))
            .filter_map(|w| self.summary(w))
            .collect()
    }

    fn summary(&self, w: Window) -> Option<AuditEntry> {
        (w.more > 0).then(|| AuditEntry {
            reason: Some(format!(
                "{} more refused within {} s of the first (summary)",
                w.more,
                self.window_ms / 1000
            )),
            ..w.last
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vigil_testkit::TempDir;

    fn entry(n: u64) -> AuditEntry {
        AuditEntry {
            ts_ms: n,
            request_id: format!("r{n}"),
            client_ip: "127.0.0.1".into(),
            action: "restart_api_core".into(),
            outcome: "ok".into(),
            reason: None,
            duration_ms: 1,
        }
    }

    fn stamps(entries: &[AuditEntry]) -> Vec<u64> {
        entries.iter().map(|e| e.ts_ms).collect()
    }

    #[tokio::test]
    async fn entries_survive_reopening_and_come_newest_first() {
        let dir = TempDir::new("audit");
        let path = dir.path().join("audit.jsonl");
        {
            let log = AuditLog::open(&path, u64::MAX).unwrap();
            log.append(&entry(1)).await.unwrap();
            log.append(&entry(2)).await.unwrap();
        }
        // A torn last line, as after a crash mid-write.
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .and_then(|mut f| f.write_all(b"{\"ts_ms\":"))
            .unwrap();
        let log = AuditLog::open(&path, u64::MAX).unwrap();
        log.append(&entry(3)).await.unwrap();
        assert_eq!(stamps(&log.newest(10).await.unwrap()), [3, 2, 1]);
        assert_eq!(log.newest(1).await.unwrap()[0].ts_ms, 3);
    }

    #[tokio::test]
    async fn the_log_rotates_at_its_size_and_keeps_the_newest_entries() {
        let dir = TempDir::new("audit-rotate");
        let path = dir.path().join("audit.jsonl");
        let line = serde_json::to_vec(&entry(100)).unwrap().len() as u64 + 1;
        let log = AuditLog::open(&path, 4 * line).unwrap();
        for n in 100..111 {
            log.append(&entry(n)).await.unwrap();
        }
        let size = |p: &Path| std::fs::metadata(p).unwrap().len();
        assert!(size(&path) <= 4 * line, "{}", size(&path));
        assert!(size(&dir.path().join("audit.jsonl.1")) <= 4 * line);
        // 11 entries: 108..110 in the log, 104..107 in .1, older ones gone.
        assert_eq!(
            stamps(&log.newest(100).await.unwrap()),
            [110, 109, 108, 107, 106, 105, 104]
        );
        assert_eq!(
            stamps(&log.newest(5).await.unwrap()),
            [110, 109, 108, 107, 106]
        );
    }

    #[tokio::test]
    async fn newest_reads_the_tail_only() {
        let dir = TempDir::new("audit-tail");
        let path = dir.path().join("audit.jsonl");
        // A large old part that is not even text: reading the whole file
        // as a string would fail, and would take its whole size in memory.
        let mut file = File::create(&path).unwrap();
        file.write_all(b"\xff\xfe not utf-8\n").unwrap();
        file.set_len(64 << 20).unwrap();
        file.seek(SeekFrom::End(0)).unwrap();
        file.write_all(b"\n").unwrap();
        drop(file);
        let log = AuditLog::open(&path, u64::MAX).unwrap();
        for n in 1..=3 {
            log.append(&entry(n)).await.unwrap();
        }
        assert_eq!(stamps(&log.newest(2).await.unwrap()), [3, 2]);
    }

    #[test]
    fn tail_lines_cross_chunk_boundaries() {
        let dir = TempDir::new("audit-chunks");
        let path = dir.path().join("lines");
        let text: String = (0..50).map(|n| format!("line {n}\n")).collect();
        std::fs::write(&path, &text).unwrap();
        for chunk in [1, 3, 7, 64, 10_000] {
            let got = tail_lines(&path, 3, chunk).unwrap();
            assert_eq!(
                got,
                [
                    b"line 47".to_vec(),
                    b"line 48".to_vec(),
                    b"line 49".to_vec()
                ]
            );
            assert_eq!(tail_lines(&path, 500, chunk).unwrap().len(), 50);
        }
        assert!(tail_lines(&dir.path().join("absent"), 3, 7)
            .unwrap()
            .is_empty());
    }

    #[test]
    fn refusals_are_summarised_per_client_per_window() {
        let tally = Tally::new(Duration::from_secs(60));
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        assert_eq!(stamps(&tally.count(a, entry(1_000))), [1_000]);
        for t in 1_001..4_000 {
            assert!(tally.count(a, entry(t)).is_empty());
        }
        assert_eq!(stamps(&tally.count(b, entry(5_000))), [5_000]);
        assert!(tally.ended(60_999).is_empty(), "a's window is still open");
        let ended = tally.ended(61_000);
        assert_eq!(ended.len(), 1);
        assert_eq!(ended[0].ts_ms, 3_999, "the summary is the last refusal's");
        assert!(ended[0].reason.as_deref().unwrap().starts_with("2999 more"));
        // A new window after the summary: the first is written again; b had
        // no more refusals, so it ends without a summary.
        assert_eq!(stamps(&tally.count(a, entry(70_000))), [70_000]);
        assert!(tally.count(a, entry(70_001)).is_empty());
        // A refusal after the window ended writes the summary first.
        let next = tally.count(a, entry(200_000));
        assert_eq!(stamps(&next), [70_001, 200_000]);
        assert!(tally.ended(u64::MAX).is_empty());
    }
}
