//! The native runner's store: JSON documents in `state_dir` (`state.json`,
//! `history.json`, `crashes.json`), each
//! written atomically (temp file, fsync, rename, fsync of the directory), and
//! a lock file so two runners never share a state dir.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::Serialize;

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
    /// The bytes last written per document, to skip writes that change
    /// nothing.
    last: HashMap<&'static str, Vec<u8>>,
}

/// The documents in a state dir.
pub const STATE_DOC: &str = "state";
pub const HISTORY_DOC: &str = "history";
pub const CRASHES_DOC: &str = "crashes";

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
        // std's advisory lock (flock on Linux): a second edge on the same
        // state_dir is refused instead of both writing it.
        lock.try_lock()
            .map_err(|_| StoreError::Locked(dir.to_owned()))?;
        Ok(FileStore {
            dir: dir.to_owned(),
            _lock: lock,
            last: HashMap::new(),
        })
    }

    fn path(&self, doc: &str) -> PathBuf {
        self.dir.join(format!("{doc}.json"))
    }

    /// The stored state, or a fresh one when there is none yet.
    pub fn load(&mut self) -> Result<State, StoreError> {
        self.load_doc(STATE_DOC)
    }

    /// Writes `state` if it differs from what is stored; true when written.
    pub fn save(&mut self, state: &State) -> Result<bool, StoreError> {
        self.save_doc(STATE_DOC, state)
    }

    /// A stored document, or a fresh one when there is none yet.
    pub fn load_doc<T: DeserializeOwned + Default>(
        &mut self,
        doc: &'static str,
    ) -> Result<T, StoreError> {
        let path = self.path(doc);
        match std::fs::read(&path) {
            Ok(bytes) => {
                let value = serde_json::from_slice(&bytes)
                    .map_err(|source| StoreError::Corrupt { path, source })?;
                self.last.insert(doc, bytes);
                Ok(value)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(T::default()),
            Err(source) => Err(StoreError::Io {
                dir: self.dir.clone(),
                source,
            }),
        }
    }

    /// Writes a document atomically if it changed; true when written.
    pub fn save_doc<T: Serialize>(
        &mut self,
        doc: &'static str,
        value: &T,
    ) -> Result<bool, StoreError> {
        let bytes = serde_json::to_vec(value).expect("documents always serialise");
        if self.last.get(doc) == Some(&bytes) {
            return Ok(false);
        }
        let io = |source| StoreError::Io {
            dir: self.dir.clone(),
            source,
        };
        let tmp = self.dir.join(format!("{doc}.json.tmp"));
        let written = File::create(&tmp)
            .and_then(|mut f| {
                f.write_all(&bytes)?;
                f.sync_all()
            })
            .and_then(|()| std::fs::rename(&tmp, self.path(doc)))
            .and_then(|()| File::open(&self.dir)?.sync_all());
        if let Err(e) = written {
            // A half-written temp file only takes the space a retry needs.
            let _ = std::fs::remove_file(&tmp);
            return Err(io(e));
        }
        self.last.insert(doc, bytes);
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
    fn a_failed_save_is_an_error_and_is_written_when_it_can_be() {
        let d = dir("fail");
        let mut store = FileStore::open(&d).unwrap();
        let mut state = store.load().unwrap();
        state.next_incident = 3;
        // The temp file's name taken by a directory: every write fails.
        std::fs::create_dir_all(d.join("state.json.tmp")).unwrap();
        assert!(matches!(store.save(&state), Err(StoreError::Io { .. })));
        assert!(
            matches!(store.save(&state), Err(StoreError::Io { .. })),
            "a failed write is not taken for stored"
        );
        std::fs::remove_dir(d.join("state.json.tmp")).unwrap();
        assert!(store.save(&state).unwrap());
        drop(store);
        assert_eq!(
            FileStore::open(&d).unwrap().load().unwrap().next_incident,
            3
        );
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
