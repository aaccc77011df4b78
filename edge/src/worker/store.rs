//! The stored documents: the state (read once per cycle or request, written
//! back only when its bytes changed), the history and the crash log, in
//! Workers KV or in the Durable Object's storage; the isolate's copy of
//! the history; and the state this isolate could not store.

use std::cell::{Cell, RefCell};

use serde::Serialize;
use worker::js_sys::{Object, Reflect};
use worker::wasm_bindgen::JsValue;
use worker::{Env, ListOptions, Storage};

use super::io::{now_ms, WorkerFetch};
use super::{lookup, Fallible};
use crate::client::{Exchange, Transport};
use crate::core::budget::{worth_storing, Budget, Op};
use crate::core::history::History;
use crate::core::history_rows::{HostsRowOwned, Kind};
use crate::core::json;
use crate::core::state::State;
use crate::core::store_health::StoreView;

const KV_BINDING: &str = "VIGIL_KV";
const STATE_KEY: &str = "state";
/// History and crash reports are documents of their own: they change at
/// other times than the state. In KV the history is one value; in the
/// Durable Object rows by time (`core::history_rows`), each holding every
/// target: `history/h/<slot>/<chunk>` (hours), `history/d/<slot>/<chunk>`
/// (ended days), `history/dh/<slot>/<chunk>` (their hours), `history/hosts`. Read in one `list` under `history`, which
/// also finds the keys of an older version's shapes (the single value
/// `history`, rows `history/t/<target>`): not read, deleted.
const HISTORY_KEY: &str = "history";
const HOUR_ROWS: &str = "history/h/";
const DAY_ROWS: &str = "history/d/";
const DAY_HOUR_ROWS: &str = "history/dh/";
const HOSTS_ROW: &str = "history/hosts";
/// Keys one Durable Object `put` or `delete` may take at once.
const KEYS_PER_CALL: usize = 128;
pub const CRASHES_KEY: &str = "crashes";
/// Test only: a URL asked before every write; while it answers other than
/// 2xx the write fails, as a store refusing writes would
/// (tests/tests/worker.rs sets it; never set in deploy/wrangler.toml).
const FAIL_VAR: &str = "VIGIL_TEST_FAIL_WRITES";

thread_local! {
    /// The history as this isolate last saw it, changes not yet stored
    /// included: it is stored every `history_flush_s` (and when an hour
    /// ends), not every cycle, to keep within KV's write budget. An isolate
    /// evicted meanwhile loses those samples; uptime and percentiles are
    /// over the samples kept, so they lose precision, not correctness.
    static HISTORY: RefCell<Option<History>> = const { RefCell::new(None) };
    /// The state as this isolate last had it when its save failed (its
    /// `store` says since when), and the stored state it was read from (as
    /// far as a write is worth it). Opened instead of the stored state while
    /// that is unchanged, as the native edge keeps its state in memory; the
    /// store's health and its alert outlive a change someone else stored.
    static UNSAVED: RefCell<Option<(Option<String>, State)>> = const { RefCell::new(None) };
    /// The state as this isolate last saved it, with several vantage
    /// points: when each region object was heard, and what it saw, are not
    /// stored (a write a minute), so they are carried into the state read
    /// next (`State::carry_heard`). An isolate evicted meanwhile measures
    /// silence afresh, as a restarted native edge does.
    static HEARD: RefCell<Option<State>> = const { RefCell::new(None) };
}

/// The store's health as this isolate saw it (`/healthz`).
pub fn health() -> StoreView {
    UNSAVED.with(|u| {
        let failing = u.borrow().as_ref().map(|(_, s)| s.store.clone());
        failing.unwrap_or_default().view()
    })
}

/// Where the documents live.
enum Backend<'a> {
    /// The KV namespace's binding, called as JavaScript (`super::call`).
    Kv(JsValue),
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
    /// Rows written (each key put or deleted; the platform bills and caps
    /// a SQLite-backed Durable Object by rows written).
    rows: Cell<u32>,
    /// `VIGIL_TEST_FAIL_WRITES`.
    fail_writes: Option<String>,
}

// A document's text read and written as a JavaScript string, not through
// worker's `KvStore` builders and `Storage::get`/`put`, which pass options
// and values through serde_wasm_bindgen (its deserializer, and a serializer
// for `serde_json::Value` metadata): 5.3 KB gzip (BENCHMARKS.md).

/// The text under `key` in the KV namespace `kv`.
async fn kv_get(kv: &JsValue, key: &str) -> Fallible<Option<String>> {
    let text = super::call(kv, "get", &[key.into(), "text".into()]).await;
    text.map(|t| t.as_string()).map_err(|e| e.to_string())
}

/// The text under `key` in the Durable Object's storage (`getMultiple`
/// answers a `Map` as it is).
async fn durable_get(storage: &Storage, key: &str) -> Fallible<Option<String>> {
    let found = storage
        .get_multiple(vec![key])
        .await
        .map_err(|e| e.to_string())?;
    Ok(found.get(&key.into()).as_string())
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
                let stored = durable_get(storage, STATE_KEY).await?;
                (Backend::Durable(storage), stored)
            }
            None => {
                let kv = Reflect::get(env, &KV_BINDING.into())
                    .ok()
                    .filter(|kv| kv.is_object())
                    .ok_or_else(|| format!("no KV namespace bound as {KV_BINDING}"))?;
                let stored = kv_get(&kv, STATE_KEY).await?;
                (Backend::Kv(kv), stored)
            }
        };
        let mut state = match &stored {
            // JSON is read from bytes everywhere: one serde_json reader type
            // in the bundle, not two.
            Some(text) => json::read(text.as_bytes())
                .map_err(|e| format!("stored state is unreadable: {e}"))?,
            None => State::default(),
        };
        let worth = serde_json::to_string(&worth_storing(&state)).map_err(|e| e.to_string())?;
        let stored_len = stored.as_ref().map_or(0, String::len);
        let stored = stored.map(|_| worth);
        if let Some((base, unsaved)) = UNSAVED.with(|u| u.borrow().clone()) {
            if base == stored {
                state = unsaved;
            } else {
                state.store = unsaved.store;
            }
        }
        HEARD.with(|h| {
            if let Some(previous) = &*h.borrow() {
                state.carry_heard(previous);
            }
        });
        let store = Store {
            backend,
            stored: RefCell::new(stored),
            budget: RefCell::new(budget),
            writes: Cell::new(0),
            doc_writes: Cell::new(0),
            largest: Cell::new(0),
            rows: Cell::new(0),
            fail_writes: lookup(env, FAIL_VAR),
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
    /// documents, the largest value read or written, and the rows written.
    pub fn spent(&self) -> (Budget, u32, u32, usize, u32) {
        (
            self.budget.borrow().clone(),
            self.writes.get(),
            self.doc_writes.get(),
            self.largest.get(),
            self.rows.get(),
        )
    }

    async fn get_text(&self, key: &str) -> Fallible<Option<String>> {
        let text: Fallible<Option<String>> = match &self.backend {
            Backend::Kv(kv) => kv_get(kv, key).await,
            Backend::Durable(storage) => durable_get(storage, key).await,
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

    /// Refuses a write while `VIGIL_TEST_FAIL_WRITES` says so.
    async fn writable(&self) -> Fallible<()> {
        let Some(url) = &self.fail_writes else {
            return Ok(());
        };
        match WorkerFetch.exchange("GET", url, &[], None, 5_000).await {
            Exchange::Answered { status, .. } if (200..300).contains(&status) => Ok(()),
            _ => Err(format!("writes refused ({FAIL_VAR})")),
        }
    }

    /// Counts one write of `rows` rows, the largest `bytes` long.
    fn count_write(&self, rows: usize, bytes: usize) {
        self.count(Op::Write, bytes);
        self.rows.set(self.rows.get() + rows as u32);
    }

    async fn put_text(&self, key: &str, text: &str) -> Fallible<()> {
        self.writable().await?;
        self.count_write(1, text.len());
        match &self.backend {
            Backend::Kv(kv) => super::call(kv, "put", &[key.into(), text.into()])
                .await
                .map(drop)
                .map_err(|e| e.to_string()),
            Backend::Durable(storage) => {
                storage.put_raw(key, text).await.map_err(|e| e.to_string())
            }
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

    /// The stored history: one KV value, or the Durable Object's rows.
    async fn load_history(&self) -> Fallible<History> {
        let Backend::Durable(storage) = &self.backend else {
            return self
                .load_with(HISTORY_KEY, |b| serde_json::from_slice(b))
                .await;
        };
        let rows = storage
            .list_with_options(ListOptions::new().prefix(HISTORY_KEY))
            .await
            .map_err(|e| e.to_string())?;
        let mut texts = Vec::new();
        rows.for_each(&mut |value, key| {
            if let (Some(key), Some(text)) = (key.as_string(), value.as_string()) {
                texts.push((key, text));
            }
        });
        let largest = texts.iter().map(|(_, t)| t.len()).max().unwrap_or(0);
        self.count(Op::Read, largest);
        let (mut rows, mut hosts, mut old_keys) = (Vec::new(), None, Vec::new());
        for (key, text) in texts {
            let unreadable = |e: serde_json::Error| format!("stored {key} is unreadable: {e}");
            let bytes = text.as_bytes();
            let kind = [
                (HOUR_ROWS, Kind::Hour),
                (DAY_ROWS, Kind::Day),
                (DAY_HOUR_ROWS, Kind::DayHours),
            ]
            .into_iter()
            .find(|(prefix, _)| key.starts_with(prefix));
            if let Some((_, kind)) = kind {
                rows.push((kind, serde_json::from_slice(bytes).map_err(unreadable)?));
            } else if key == HOSTS_ROW {
                hosts = Some(serde_json::from_slice::<HostsRowOwned>(bytes).map_err(unreadable)?);
            } else {
                old_keys.push(key);
            }
        }
        for chunk in old_keys.chunks(KEYS_PER_CALL) {
            self.count_write(chunk.len(), 0);
            storage
                .delete_multiple(chunk.to_vec())
                .await
                .map_err(|e| e.to_string())?;
        }
        Ok(History::from_rows(rows, hosts))
    }

    /// Stores the history: one KV value, or in the Durable Object the rows
    /// that changed at `now_ms` (`History::rows_due`), in one `put`; marks
    /// it stored.
    pub async fn save_history(&self, history: &mut History, now_ms: u64) -> Fallible<()> {
        let Backend::Durable(storage) = &self.backend else {
            self.save_doc(HISTORY_KEY, &*history).await?;
            history.mark_stored(now_ms);
            return Ok(());
        };
        self.writable().await?;
        let rows = history.rows_due(now_ms).map_err(|e| e.to_string())?;
        for chunk in rows.chunks(KEYS_PER_CALL) {
            let object = Object::new();
            for row in chunk {
                let prefix = match row.kind {
                    Kind::Hour => HOUR_ROWS,
                    Kind::Day => DAY_ROWS,
                    Kind::DayHours => DAY_HOUR_ROWS,
                    Kind::Hosts => HOSTS_ROW,
                };
                let key = match row.kind {
                    Kind::Hosts => prefix.to_string(),
                    _ => format!("{prefix}{}/{}", row.slot, row.chunk),
                };
                Reflect::set(
                    &object,
                    &JsValue::from_str(&key),
                    &JsValue::from_str(&row.json),
                )
                .map_err(|e| format!("{e:?}"))?;
            }
            let largest = chunk.iter().map(|r| r.json.len()).max().unwrap_or(0);
            self.count_write(chunk.len(), largest);
            storage
                .put_multiple_raw(object)
                .await
                .map_err(|e| e.to_string())?;
            self.doc_writes.set(self.doc_writes.get() + 1);
        }
        history.stored_rows(now_ms, &rows);
        Ok(())
    }

    /// Hands the history back to the isolate, for the next cycle and the
    /// read routes.
    pub fn keep_history(history: History) {
        HISTORY.with(|h| *h.borrow_mut() = Some(history));
    }

    /// Writes the state when it changed in a way worth a write
    /// (`budget::worth_storing`); true when it wrote. When it cannot, the
    /// state stays in this isolate with the failure noted (the store
    /// failing alert, once an episode, in its outbox) and is written with
    /// the next save that works, which ends the episode
    /// (`core::store_health`).
    pub async fn save(&self, state: &mut State) -> Fallible<bool> {
        let wrote = self.write(state).await;
        self.settle(state, wrote).await
    }

    /// Saves a change a caller will be told about: when it cannot be
    /// stored, `state` goes back to `before` (with the failure noted), so
    /// nothing is claimed that was not stored.
    pub async fn save_change(&self, state: &mut State, before: State) -> Fallible<bool> {
        let wrote = self.write(state).await;
        if wrote.is_err() {
            *state = before;
        }
        self.settle(state, wrote).await
    }

    async fn settle(&self, state: &mut State, wrote: Fallible<bool>) -> Fallible<bool> {
        if !state.probers.is_empty() {
            HEARD.with(|h| *h.borrow_mut() = Some(state.clone()));
        }
        match &wrote {
            Ok(_) => {
                UNSAVED.with(|u| u.borrow_mut().take());
                if state.store_saved(now_ms()) {
                    // The recovery alert, stored for the outbox (best effort).
                    let _ = self.write(state).await;
                }
            }
            Err(e) => self.failed(state, e),
        }
        wrote
    }

    /// Notes a failed write on `state` and keeps it in this isolate.
    pub fn failed(&self, state: &mut State, error: &str) {
        state.store_failed(error, now_ms());
        let base = self.stored.borrow().clone();
        UNSAVED.with(|u| *u.borrow_mut() = Some((base, state.clone())));
    }

    async fn write(&self, state: &State) -> Fallible<bool> {
        let worth = serde_json::to_string(&worth_storing(state)).map_err(|e| e.to_string())?;
        // While the store fails every save tries: one that works ends it.
        let failing = state.store.failing_since_ms.is_some();
        if !failing && self.stored.borrow().as_deref() == Some(worth.as_str()) {
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
