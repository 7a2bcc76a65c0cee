//! The in-memory cache of loaded adapters: least recently used out, bounded in bytes.
//!
//! The cache only does bookkeeping. It never touches the disk: when an insertion pushes dirty
//! entries out, it hands them back and the store writes them.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use super::record::AdapterRecord;

/// Counters that describe the cache, for tests and diagnostics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// How many adapters are cached.
    pub entries: usize,
    /// Their estimated size in bytes.
    pub bytes: usize,
    /// How many of them have changes not yet on disk.
    pub dirty: usize,
    /// Lookups served from memory.
    pub hits: u64,
    /// Lookups that had to go to disk.
    pub misses: u64,
    /// Entries pushed out to respect the byte limit.
    pub evictions: u64,
}

/// One cached adapter.
struct Slot {
    record: Arc<AdapterRecord>,
    dirty: bool,
    bytes: usize,
    tick: u64,
}

/// A byte-bounded LRU map from user id to adapter.
pub(crate) struct Cache {
    limit: usize,
    bytes: usize,
    tick: u64,
    slots: HashMap<String, Slot>,
    /// Recency order: the smallest tick is the least recently used.
    order: BTreeMap<u64, String>,
    stats: CacheStats,
}

impl Cache {
    /// Creates an empty cache that holds at most `limit` bytes.
    pub(crate) fn new(limit: usize) -> Self {
        Cache {
            limit,
            bytes: 0,
            tick: 0,
            slots: HashMap::new(),
            order: BTreeMap::new(),
            stats: CacheStats::default(),
        }
    }

    /// Returns the cached adapter and marks it as most recently used. A miss is not counted
    /// here: the store calls [`Cache::count_miss`] once it actually goes to disk.
    pub(crate) fn get(&mut self, user: &str) -> Option<Arc<AdapterRecord>> {
        self.tick += 1;
        let tick = self.tick;
        let slot = self.slots.get_mut(user)?;
        self.order.remove(&slot.tick);
        slot.tick = tick;
        self.order.insert(tick, user.to_owned());
        self.stats.hits += 1;
        Some(slot.record.clone())
    }

    /// Counts a lookup that had to read from disk.
    pub(crate) fn count_miss(&mut self) {
        self.stats.misses += 1;
    }

    /// Inserts or replaces `user`'s adapter, then evicts least recently used entries until the
    /// cache fits its limit again. Returns the dirty records the caller must now write, which
    /// includes the new record itself if it alone is larger than the whole cache.
    pub(crate) fn insert(
        &mut self,
        user: &str,
        record: Arc<AdapterRecord>,
        dirty: bool,
    ) -> Vec<(String, Arc<AdapterRecord>)> {
        self.remove(user);
        let bytes = record.approx_bytes();
        if bytes > self.limit {
            return if dirty { vec![(user.to_owned(), record)] } else { Vec::new() };
        }
        self.put_slot(user, record, dirty, bytes);
        let mut out = Vec::new();
        while self.bytes > self.limit {
            let Some((_, victim)) = self.order.pop_first() else { break };
            if let Some(slot) = self.slots.remove(&victim) {
                self.bytes -= slot.bytes;
                self.stats.evictions += 1;
                if slot.dirty {
                    out.push((victim, slot.record));
                }
            }
        }
        out
    }

    /// Puts back a dirty record whose write failed, ignoring the byte limit so no change is lost.
    pub(crate) fn restore_dirty(&mut self, user: &str, record: Arc<AdapterRecord>) {
        if !self.slots.contains_key(user) {
            let bytes = record.approx_bytes();
            self.put_slot(user, record, true, bytes);
        }
    }

    /// Removes `user`'s entry, dirty or not.
    pub(crate) fn remove(&mut self, user: &str) {
        if let Some(slot) = self.slots.remove(user) {
            self.order.remove(&slot.tick);
            self.bytes -= slot.bytes;
        }
    }

    /// Marks `user`'s entry clean and returns it if it was dirty, for the caller to write.
    pub(crate) fn take_dirty(&mut self, user: &str) -> Option<Arc<AdapterRecord>> {
        let slot = self.slots.get_mut(user).filter(|s| s.dirty)?;
        slot.dirty = false;
        Some(slot.record.clone())
    }

    /// Marks `user`'s entry dirty again if it still holds `record` (after a failed write).
    pub(crate) fn mark_dirty(&mut self, user: &str, record: &Arc<AdapterRecord>) {
        if let Some(slot) = self.slots.get_mut(user) {
            if Arc::ptr_eq(&slot.record, record) {
                slot.dirty = true;
            }
        }
    }

    /// Lists the users whose entries are dirty.
    pub(crate) fn dirty_users(&self) -> Vec<String> {
        self.slots.iter().filter(|(_, s)| s.dirty).map(|(u, _)| u.clone()).collect()
    }

    /// Returns the current counters.
    pub(crate) fn stats(&self) -> CacheStats {
        CacheStats {
            entries: self.slots.len(),
            bytes: self.bytes,
            dirty: self.slots.values().filter(|s| s.dirty).count(),
            ..self.stats
        }
    }

    /// Adds a slot as the most recently used one.
    fn put_slot(&mut self, user: &str, record: Arc<AdapterRecord>, dirty: bool, bytes: usize) {
        self.tick += 1;
        self.order.insert(self.tick, user.to_owned());
        self.slots.insert(user.to_owned(), Slot { record, dirty, bytes, tick: self.tick });
        self.bytes += bytes;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::record::{AdapterConfig, Tensor};

    fn record(values: usize) -> Arc<AdapterRecord> {
        let config = AdapterConfig {
            rank: 1,
            alpha: 1.0,
            hidden: 1,
            vocab: 1,
            top_k_rows: 1,
            algorithm: String::new(),
            extra: Default::default(),
        };
        let mut r = AdapterRecord::new(config, 0);
        r.tensors
            .insert("t".into(), Tensor { shape: vec![values as u32], data: vec![0.0; values] });
        Arc::new(r)
    }

    #[test]
    fn evicts_least_recently_used_and_returns_dirty() {
        let one = record(1000).approx_bytes();
        let mut c = Cache::new(one * 2 + one / 2);
        assert!(c.insert("a", record(1000), true).is_empty());
        assert!(c.insert("b", record(1000), false).is_empty());
        assert!(c.get("a").is_some()); // "b" is now the least recently used.
        assert!(c.insert("c", record(1000), false).is_empty(), "clean b goes silently");
        assert!(c.get("b").is_none());
        let out = c.insert("d", record(1000), false);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].0, "a");
        let s = c.stats();
        assert_eq!((s.entries, s.evictions, s.dirty), (2, 2, 0));
        assert!(s.bytes <= one * 2 + one / 2);
    }

    #[test]
    fn oversized_records_are_not_cached() {
        let mut c = Cache::new(10);
        assert!(c.insert("a", record(100), false).is_empty());
        assert_eq!(c.insert("a", record(100), true).len(), 1);
        assert_eq!(c.stats().entries, 0);
    }
}
