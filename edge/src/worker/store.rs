//! The stored documents: the state (read once per cycle or request, written
//! back only when its bytes changed), the history and the crash log, in
//! Workers KV or in the Durable Object's storage; and the isolate's copy of
//! the history.

use std::cell::RefCell;

use serde::Serialize;
use worker::{Env, KvStore, Storage};

use super::Fallible;
use crate::core::history::History;
use crate::core::state::State;

const KV_BINDING: &str = "VIGIL_KV";
const STATE_KEY: &str = "state";
/// History and crash reports are documents of their own: they change at
/// other times than the state.
pub const HISTORY_KEY: &str = "history";
pub const CRASHES_KEY: &str = "crashes";

thread_local! {
    /// The history as this isolate last saw it, changes not yet stored
    /// included: it is stored every `history_flush_s` (and when an hour
    /// ends), not every cycle, to keep within KV's write budget. An isolate
    /// evicted meanwhile loses those samples; uptime and percentiles are
    /// over the samples kept, so they lose precision, not correctness.
    static HISTORY: RefCell<Option<History>> = const { RefCell::new(None) };
}

/// Where the documents live.
enum Backend<'a> {
    Kv(KvStore),
    Durable(&'a Storage),
}

/// The state document and what it held when read, so unchanged state is
/// never written back; other documents through `load_doc`/`save_doc`.
pub struct Store<'a> {
    backend: Backend<'a>,
    stored: Option<String>,
    pub reads: u32,
    pub writes: u32,
    pub doc_writes: u32,
}

impl<'a> Store<'a> {
    /// `durable`: the Durable Object's storage, when this runs inside it.
    pub async fn open(env: &Env, durable: Option<&'a Storage>) -> Fallible<(Self, State)> {
        let (backend, stored) = match durable {
            Some(storage) => {
                let stored: Option<String> =
                    storage.get(STATE_KEY).await.map_err(|e| e.to_string())?;
                (Backend::Durable(storage), stored)
            }
            None => {
                let kv = env.kv(KV_BINDING).map_err(|e| e.to_string())?;
                let stored = kv.get(STATE_KEY).text().await.map_err(|e| e.to_string())?;
                (Backend::Kv(kv), stored)
            }
        };
        let state = match &stored {
            // JSON is read from bytes everywhere: one serde_json reader type
            // in the bundle, not two.
            Some(text) => serde_json::from_slice(text.as_bytes())
                .map_err(|e| format!("stored state is unreadable: {e}"))?,
            None => State::default(),
        };
        Ok((
            Store {
                backend,
                stored,
                reads: 1,
                writes: 0,
                doc_writes: 0,
            },
            state,
        ))
    }

    async fn get_text(&mut self, key: &str) -> Fallible<Option<String>> {
        self.reads += 1;
        match &self.backend {
            Backend::Kv(kv) => kv.get(key).text().await.map_err(|e| e.to_string()),
            Backend::Durable(storage) => storage.get(key).await.map_err(|e| e.to_string()),
        }
    }

    async fn put_text(&self, key: &str, text: &str) -> Fallible<()> {
        match &self.backend {
            Backend::Kv(kv) => kv
                .put(key, text)
                .map_err(|e| e.to_string())?
                .execute()
                .await
                .map_err(|e| e.to_string()),
            Backend::Durable(storage) => storage.put(key, text).await.map_err(|e| e.to_string()),
        }
    }

    pub async fn load_doc<T: serde::de::DeserializeOwned + Default>(
        &mut self,
        key: &str,
    ) -> Fallible<T> {
        match self.get_text(key).await? {
            Some(text) => serde_json::from_slice(text.as_bytes())
                .map_err(|e| format!("stored {key} is unreadable: {e}")),
            None => Ok(T::default()),
        }
    }

    pub async fn save_doc<T: Serialize>(&mut self, key: &str, value: &T) -> Fallible<()> {
        let text = serde_json::to_string(value).map_err(|e| e.to_string())?;
        self.put_text(key, &text).await?;
        self.doc_writes += 1;
        Ok(())
    }

    /// The history: this isolate's copy, else the stored one.
    pub async fn history(&mut self) -> Fallible<History> {
        match HISTORY.with(|h| h.borrow_mut().take()) {
            Some(h) => Ok(h),
            None => self.load_doc(HISTORY_KEY).await,
        }
    }

    /// Hands the history back to the isolate, for the next cycle and the
    /// read routes.
    pub fn keep_history(history: History) {
        HISTORY.with(|h| *h.borrow_mut() = Some(history));
    }

    pub async fn save(&mut self, state: &State) -> Fallible<bool> {
        let text = serde_json::to_string(state).map_err(|e| e.to_string())?;
        if self.stored.as_deref() == Some(text.as_str()) {
            return Ok(false);
        }
        self.put_text(STATE_KEY, &text).await?;
        self.stored = Some(text);
        self.writes += 1;
        Ok(true)
    }

    /// Runs a read route's `f` on the history: this isolate's copy
    /// (unstored samples included), borrowed rather than copied, else the
    /// stored one, else none yet. Only the cycle replaces the isolate's copy.
    pub async fn with_history<R>(&mut self, f: impl FnOnce(&History) -> R) -> R {
        if HISTORY.with(|h| h.borrow().is_none()) {
            return f(&self.load_doc(HISTORY_KEY).await.unwrap_or_default());
        }
        // Nothing awaits between the check and here: the copy is still there.
        HISTORY.with(|h| f(h.borrow().as_ref().unwrap_or(&History::default())))
    }
}
