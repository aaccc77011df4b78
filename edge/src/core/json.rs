//! JSON documents and bodies read through one generic value.
//!
//! `serde_json::from_slice::<T>` compiles a streaming deserializer for every
//! type `T` read; through a `serde_json::Value` each type costs only the
//! value's (smaller) deserializer, and the parser exists once. In the Worker
//! bundle this is tens of kilobytes (BENCHMARKS.md, "The edge Worker").
//! Errors name the field and the reason, without a line and column. The
//! history, the one large document, is read straight from its bytes.

use serde::de::DeserializeOwned;

/// `bytes` as a `T`.
pub fn read<T: DeserializeOwned>(bytes: &[u8]) -> serde_json::Result<T> {
    T::deserialize(serde_json::from_slice::<serde_json::Value>(bytes)?)
}
