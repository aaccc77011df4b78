//! The stored documents: the state (read once per cycle or request, written
//! back only when its bytes changed), the history and the crash log, in
//! Workers KV or in the Durable Object's storage; and the isolate's copy of
//! the history.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, VecDeque};

use serde::Serialize;
use worker::js_sys::{Object, Reflect};
use worker::wasm_bindgen::JsValue;
use worker::{Env, KvStore, ListOptions, Storage};

use super::Fallible;
use crate::core::budget::{worth_storing, Budget, Op};
use crate::core::history::{History, HostSample, TargetHistory};
use crate::core::json;
use crate::core::state::State;

const KV_BINDING: &str = "VIGIL_KV";
const STATE_KEY: &str = "state";
/// History and crash reports are documents of their own: they change at
/// other times than the state. In KV the history is one value; in the
/// Durable Object one row per target (`history/t/<target>`) and one for the
/// hosts (`history/hosts`), so no value grows with the number of targets.
const HISTORY_KEY: &str = "history";
const TARGET_ROW: &str = "history/t/";
const HOSTS_ROW: &str = "history/hosts";
/// Keys one Durable Object `put` may take at once.
const KEYS_PER_PUT: usize = 128;
pub const CRASHES_KEY: &str = "crashes";

/// The hosts' part of the history, one row in the Durable Object.
#[derive(Default, serde::Deserialize)]
struct HostsRow {
    #[serde(default)]
    hosts: BTreeMap<String, VecDeque<HostSample>>,
    #[serde(default)]
    hosts_polled_at: BTreeMap<String, u64>,
}

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

/// The state document and what it held when read (as far as a write is
/// worth it), so unchanged state is never written back; other documents through `load_doc`/`save_doc`.
/// Every operation is counted in the invocation's budget. Shared (`&self`)
/// so a round can save the state before it acts.
pub struct Store<'a> {
    backend: Backend<'a>,
    stored: RefCell<Option<String>>,
    budget: RefCell<Budget>,
    /// Writes of the state document, and of the other documents.
    writes: Cell<u32>,
    doc_writes: Cell<u32>,
    /// The largest value read or written, in bytes.
    largest: Cell<usize>,
    /// The Durable Object still holds the history as one value (an older
    /// version's): deleted once the rows are stored.
    legacy_history: Cell<bool>,
}

impl<'a> Store<'a> {
    /// `durable`: the Durable Object's storage, when this runs inside it.
    pub async fn open(
        env: &Env,
        durable: Option<&'a Storage>,
        budget: Budget,
    ) -> Fallible<(Self, State)> {
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
            Some(text) => json::read(text.as_bytes())
                .map_err(|e| format!("stored state is unreadable: {e}"))?,
            None => State::default(),
        };
        let worth = serde_json::to_string(&worth_storing(&state)).map_err(|e| e.to_string())?;
        let stored_len = stored.as_ref().map_or(0, String::len);
        let store = Store {
            backend,
            stored: RefCell::new(stored.map(|_| worth)),
            budget: RefCell::new(budget),
            writes: Cell::new(0),
            doc_writes: Cell::new(0),
            largest: Cell::new(0),
            legacy_history: Cell::new(false),
        };
        store.count(Op::Read, stored_len);
        Ok((store, state))
    }

    fn count(&self, op: Op, bytes: usize) {
        self.largest.set(self.largest.get().max(bytes));
        let kv = matches!(self.backend, Backend::Kv(_));
        self.budget.borrow_mut().storage(op, kv);
    }

    /// The invocation's budget: subrequests may be taken from it.
    pub fn budget(&self) -> std::cell::RefMut<'_, Budget> {
        self.budget.borrow_mut()
    }

    /// What the invocation spent, the writes of the state and of the other
    /// documents, and the largest value read or written.
    pub fn spent(&self) -> (Budget, u32, u32, usize) {
        (
            self.budget.borrow().clone(),
            self.writes.get(),
            self.doc_writes.get(),
            self.largest.get(),
        )
    }

    async fn get_text(&self, key: &str) -> Fallible<Option<String>> {
        let text: Fallible<Option<String>> = match &self.backend {
            Backend::Kv(kv) => kv.get(key).text().await.map_err(|e| e.to_string()),
            Backend::Durable(storage) => storage.get(key).await.map_err(|e| e.to_string()),
        };
        // Counted whether or not it succeeded: the platform counts it.
        let len = text
            .as_ref()
            .ok()
            .and_then(Option::as_ref)
            .map_or(0, String::len);
        self.count(Op::Read, len);
        text
    }

    async fn put_text(&self, key: &str, text: &str) -> Fallible<()> {
        self.count(Op::Write, text.len());
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
        &self,
        key: &str,
    ) -> Fallible<T> {
        self.load_with(key, json::read).await
    }

    /// A stored document read by `read` (the history straight from its
    /// bytes, the others through `json::read`).
    async fn load_with<T: Default>(
        &self,
        key: &str,
        read: fn(&[u8]) -> serde_json::Result<T>,
    ) -> Fallible<T> {
        match self.get_text(key).await? {
            Some(text) => {
                read(text.as_bytes()).map_err(|e| format!("stored {key} is unreadable: {e}"))
            }
            None => Ok(T::default()),
        }
    }

    pub async fn save_doc<T: Serialize>(&self, key: &str, value: &T) -> Fallible<()> {
        let text = serde_json::to_string(value).map_err(|e| e.to_string())?;
        self.put_text(key, &text).await?;
        self.doc_writes.set(self.doc_writes.get() + 1);
        Ok(())
    }

    /// The history: this isolate's copy, else the stored one.
    pub async fn history(&self) -> Fallible<History> {
        match HISTORY.with(|h| h.borrow_mut().take()) {
            Some(h) => Ok(h),
            None => self.load_history().await,
        }
    }

    /// The stored history: one KV value, or the Durable Object's rows (else
    /// the single value an older version stored there).
    async fn load_history(&self) -> Fallible<History> {
        let Backend::Durable(storage) = &self.backend else {
            return self
                .load_with(HISTORY_KEY, |b| serde_json::from_slice(b))
                .await;
        };
        // One read: the rows, and the single value an older version stored
        // (its key is the rows' prefix without the slash), under the rows.
        let rows = storage
            .list_with_options(ListOptions::new().prefix(HISTORY_KEY))
            .await
            .map_err(|e| e.to_string())?;
        let mut legacy = None;
        let mut parts = Vec::new();
        let mut bytes = 0;
        rows.for_each(&mut |value, key| {
            if let (Some(key), Some(text)) = (key.as_string(), value.as_string()) {
                bytes = bytes.max(text.len());
                if key == HISTORY_KEY {
                    legacy = Some(text);
                } else {
                    parts.push((key, text));
                }
            }
        });
        self.count(Op::Read, bytes);
        let unreadable =
            |key: &str, e: serde_json::Error| format!("stored {key} is unreadable: {e}");
        let mut history: History = match legacy {
            Some(text) => {
                serde_json::from_slice(text.as_bytes()).map_err(|e| unreadable(HISTORY_KEY, e))?
            }
            None => History::default(),
        };
        for (key, text) in parts {
            if let Some(target) = key.strip_prefix(TARGET_ROW) {
                let t: TargetHistory =
                    serde_json::from_slice(text.as_bytes()).map_err(|e| unreadable(&key, e))?;
                history.targets.insert(target.to_string(), t);
            } else if key == HOSTS_ROW {
                let h: HostsRow =
                    serde_json::from_slice(text.as_bytes()).map_err(|e| unreadable(&key, e))?;
                history.hosts = h.hosts;
                history.hosts_polled_at = h.hosts_polled_at;
            }
        }
        Ok(history)
    }

    /// Stores the history: one KV value, or in the Durable Object a row per
    /// target and one for the hosts, `KEYS_PER_PUT` to a write.
    pub async fn save_history(&self, history: &History) -> Fallible<()> {
        let Backend::Durable(storage) = &self.backend else {
            return self.save_doc(HISTORY_KEY, history).await;
        };
        let hosts = serde_json::json!({
            "hosts": &history.hosts,
            "hosts_polled_at": &history.hosts_polled_at,
        });
        let mut rows = vec![(HOSTS_ROW.to_string(), hosts.to_string())];
        for (id, t) in &history.targets {
            let text = serde_json::to_string(t).map_err(|e| e.to_string())?;
            rows.push((format!("{TARGET_ROW}{id}"), text));
        }
        for chunk in rows.chunks(KEYS_PER_PUT) {
            let object = Object::new();
            for (key, text) in chunk {
                Reflect::set(&object, &JsValue::from_str(key), &JsValue::from_str(text))
                    .map_err(|e| format!("{e:?}"))?;
            }
            let largest = chunk.iter().map(|(_, t)| t.len()).max().unwrap_or(0);
            self.count(Op::Write, largest);
            storage
                .put_multiple_raw(object)
                .await
                .map_err(|e| e.to_string())?;
            self.doc_writes.set(self.doc_writes.get() + 1);
        }
        if self.legacy_history.replace(false) {
            self.count(Op::Write, 0);
            storage
                .delete(HISTORY_KEY)
                .await
                .map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    /// Hands the history back to the isolate, for the next cycle and the
    /// read routes.
    pub fn keep_history(history: History) {
        HISTORY.with(|h| *h.borrow_mut() = Some(history));
    }

    /// Writes the state when it changed in a way worth a write
    /// (`budget::worth_storing`); true when it wrote.
    pub async fn save(&self, state: &State) -> Fallible<bool> {
        let worth = serde_json::to_string(&worth_storing(state)).map_err(|e| e.to_string())?;
        if self.stored.borrow().as_deref() == Some(worth.as_str()) {
            return Ok(false);
        }
        let text = serde_json::to_string(state).map_err(|e| e.to_string())?;
        self.put_text(STATE_KEY, &text).await?;
        *self.stored.borrow_mut() = Some(worth);
        self.writes.set(self.writes.get() + 1);
        Ok(true)
    }

    /// Runs a read route's `f` on the history: this isolate's copy
    /// (unstored samples included), borrowed rather than copied, else the
    /// stored one, else none yet. Only the cycle replaces the isolate's copy.
    pub async fn with_history<R>(&self, f: impl FnOnce(&History) -> R) -> R {
        if HISTORY.with(|h| h.borrow().is_none()) {
            return f(&self.load_history().await.unwrap_or_default());
        }
        // Nothing awaits between the check and here: the copy is still there.
        HISTORY.with(|h| f(h.borrow().as_ref().unwrap_or(&History::default())))
    }
}
