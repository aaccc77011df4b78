//! The append-only audit log: one JSON line per attempt to run an action,
//! written and synced before the answer leaves.

use std::path::{Path, PathBuf};

use tokio::fs::{File, OpenOptions};
use tokio::io::AsyncWriteExt;
use tokio::sync::Mutex;
use vigil_wire::AuditEntry;

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("audit log {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

pub struct AuditLog {
    path: PathBuf,
    file: Mutex<File>,
}

impl AuditLog {
    pub async fn open(path: &Path) -> Result<Self, AuditError> {
        let io = |source| AuditError::Io {
            path: path.to_owned(),
            source,
        };
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .read(true)
            .open(path)
            .await
            .map_err(io)?;
        // A crash mid-write leaves a torn last line: end it, so the next
        // entry starts on a line of its own instead of being lost with it.
        if !ends_with_newline(&mut file).await.map_err(io)? {
            file.write_all(b"\n").await.map_err(io)?;
        }
        Ok(Self {
            path: path.to_owned(),
            file: Mutex::new(file),
        })
    }

    pub async fn append(&self, entry: &AuditEntry) -> Result<(), AuditError> {
        let mut line = serde_json::to_vec(entry).expect("audit entries always serialise");
        line.push(b'\n');
        let mut file = self.file.lock().await;
        let io = |source| AuditError::Io {
            path: self.path.clone(),
            source,
        };
        file.write_all(&line).await.map_err(io)?;
        file.sync_data().await.map_err(io)
    }

    /// The newest `limit` entries, newest first. Lines that do not parse (a
    /// torn write from a crash) are skipped.
    pub async fn newest(&self, limit: usize) -> Result<Vec<AuditEntry>, AuditError> {
        let _writer = self.file.lock().await;
        let text = tokio::fs::read_to_string(&self.path)
            .await
            .map_err(|source| AuditError::Io {
                path: self.path.clone(),
                source,
            })?;
        Ok(text
            .lines()
            .rev()
            .filter_map(|l| serde_json::from_str(l).ok())
            .take(limit)
            .collect())
    }
}

async fn ends_with_newline(file: &mut File) -> std::io::Result<bool> {
    use tokio::io::{AsyncReadExt, AsyncSeekExt, SeekFrom};
    if file.metadata().await?.len() == 0 {
        return Ok(true);
    }
    file.seek(SeekFrom::End(-1)).await?;
    let mut last = [0u8; 1];
    file.read_exact(&mut last).await?;
    Ok(last[0] == b'\n')
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[tokio::test]
    async fn entries_survive_reopening_and_come_newest_first() {
        let dir = std::env::temp_dir().join(format!("vigil-audit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("audit.jsonl");
        let _ = std::fs::remove_file(&path);
        {
            let log = AuditLog::open(&path).await.unwrap();
            log.append(&entry(1)).await.unwrap();
            log.append(&entry(2)).await.unwrap();
        }
        // A torn last line, as after a crash mid-write.
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .and_then(|mut f| std::io::Write::write_all(&mut f, b"{\"ts_ms\":"))
            .unwrap();
        let log = AuditLog::open(&path).await.unwrap();
        log.append(&entry(3)).await.unwrap();
        let got: Vec<u64> = log
            .newest(10)
            .await
            .unwrap()
            .iter()
            .map(|e| e.ts_ms)
            .collect();
        assert_eq!(got, [3, 2, 1]);
        assert_eq!(log.newest(1).await.unwrap()[0].ts_ms, 3);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
