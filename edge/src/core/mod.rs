//! The sans-IO core: pure state machines that take observations and `now`
//! (epoch milliseconds) and return state changes and events. Nothing here
//! reads a clock or does I/O.

pub mod acklink;
pub mod alert;
pub mod budget;
pub mod cert;
pub mod channel;
pub mod control;
pub mod crash;
pub mod deadman;
pub mod depend;
pub mod escalate;
pub mod flap;
pub mod history;
pub mod history_rows;
pub mod incident;
pub mod jobs;
pub mod json;
pub mod planner;
pub mod probe;
pub mod remind;
pub mod route;
pub mod runbook;
pub mod schedule;
pub mod signal;
pub mod slo;
pub mod state;
pub mod store_health;
pub mod tzdb;
pub mod vantage;

/// Sorts `items` by `key`, keeping the order of equal keys: an insertion
/// sort, for short lists (the pages' timeline and incidents, the history's
/// rows). std's sort
/// adds about 4.5 KB of code per element type to the Worker (BENCHMARKS.md).
pub fn sort_small_by_key<T, K: Ord>(items: &mut [T], key: impl Fn(&T) -> K) {
    for k in 1..items.len() {
        let mut j = k;
        while j > 0 && key(&items[j - 1]) > key(&items[j]) {
            items.swap(j - 1, j);
            j -= 1;
        }
    }
}

/// Keeps the entries of `map` that `keep` accepts, by moving them into a
/// new map. `BTreeMap::retain` and `remove` bring the B-tree's node merging
/// and stealing, about 3.6 KB of code per key and value type in the Worker
/// (BENCHMARKS.md); inserts are there already. The maps are small (targets,
/// jobs, channels, a job's runs).
pub fn retain_map<K: Ord, V>(
    map: &mut std::collections::BTreeMap<K, V>,
    mut keep: impl FnMut(&K, &mut V) -> bool,
) {
    for (k, mut v) in std::mem::take(map) {
        if keep(&k, &mut v) {
            map.insert(k, v);
        }
    }
}
