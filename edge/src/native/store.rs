//! The native runner's store: one JSON document in `state_dir/state.json`,
//! written atomically (temp file, fsync, rename, fsync of the directory), and
//! a lock file so two runners never share a state dir.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use fs2::FileExt;

use crate::core::state::State;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("state dir {dir}: {source}")]
    Io {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error("state dir {0} is in use by another vigil-edge (lock held)")]
    Locked(PathBuf),
    #[error("{path}: not a Vigil state document: {source}")]
    Corrupt {
        path: PathBuf,
        source: serde_json::Error,
    },
}

pub struct FileStore {
    dir: PathBuf,
    _lock: File,
    /// The bytes last written, to skip writes that change nothing.
    last: Vec<u8>,
}

impl FileStore {
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        let io = |source| StoreError::Io {
            dir: dir.to_owned(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(io)?;
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join("lock"))
            .map_err(io)?;
        lock.try_lock_exclusive()
            .map_err(|_| StoreError::Locked(dir.to_owned()))?;
        Ok(FileStore {
            dir: dir.to_owned(),
            _lock: lock,
            last: Vec::new(),
        })
    }

    fn path(&self) -> PathBuf {
        self.dir.join("state.json")
    }

    /// The stored state, or a fresh one when there is none yet.
    pub fn load(&mut self) -> Result<State, StoreError> {
        let path = self.path();
        match std::fs::read(&path) {
            Ok(bytes) => {
                let state = serde_json::from_slice(&bytes)
                    .map_err(|source| StoreError::Corrupt { path, source })?;
                self.last = bytes;
                Ok(state)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(State::default()),
            Err(source) => Err(StoreError::Io {
                dir: self.dir.clone(),
                source,
            }),
        }
    }

    /// Writes `state` if it differs from what is stored; true when written.
    pub fn save(&mut self, state: &State) -> Result<bool, StoreError> {
        let bytes = serde_json::to_vec(state).expect("the state always serialises");
        if bytes == self.last {
            return Ok(false);
        }
        let io = |source| StoreError::Io {
            dir: self.dir.clone(),
            source,
        };
        let tmp = self.dir.join("state.json.tmp");
        let mut f = File::create(&tmp).map_err(io)?;
        f.write_all(&bytes).map_err(io)?;
        f.sync_all().map_err(io)?;
        std::fs::rename(&tmp, self.path()).map_err(io)?;
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(io)?;
        self.last = bytes;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("vigil-store-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn saves_only_changes_and_reads_them_back() {
        let d = dir("rt");
        let mut store = FileStore::open(&d).unwrap();
        let mut state = store.load().unwrap();
        assert_eq!(state, State::default());
        state.next_incident = 7;
        assert!(store.save(&state).unwrap());
        assert!(!store.save(&state).unwrap(), "unchanged: no write");
        drop(store);
        let mut again = FileStore::open(&d).unwrap();
        assert_eq!(again.load().unwrap().next_incident, 7);
        assert!(!d.join("state.json.tmp").exists());
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_second_runner_on_the_same_dir_is_refused() {
        let d = dir("lock");
        let _first = FileStore::open(&d).unwrap();
        assert!(matches!(FileStore::open(&d), Err(StoreError::Locked(_))));
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_corrupt_document_is_an_error_not_a_fresh_start() {
        let d = dir("corrupt");
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("state.json"), b"{\"targets\": 3").unwrap();
        let mut store = FileStore::open(&d).unwrap();
        assert!(matches!(store.load(), Err(StoreError::Corrupt { .. })));
        std::fs::remove_dir_all(&d).unwrap();
    }
}
