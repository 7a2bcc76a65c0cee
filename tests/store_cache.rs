//! The adapter cache: write-back, LRU eviction that saves dirty entries, and use from threads.

mod store_support;

use std::sync::{Arc, Barrier};
use std::thread;

use attune::store::AdapterStore;
use store_support::{assert_same, open, open_with, sample};

#[test]
fn store_is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<AdapterStore>();
}

#[test]
fn put_is_write_back_until_flush() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open(tmp.path());
    store.put("amy", sample(1)).unwrap();
    assert!(store.list_versions("amy").unwrap().is_empty(), "put must not write");
    assert_eq!(store.cache_stats().dirty, 1);
    assert_same(&store.load("amy").unwrap().unwrap(), &sample(1));
    assert!(store.flush("amy").unwrap());
    assert!(!store.flush("amy").unwrap());
    assert_eq!(store.list_versions("amy").unwrap().len(), 1);
    store.put("amy", sample(2)).unwrap();
    store.put("amy", sample(3)).unwrap(); // Coalesced: only the latest is written.
    assert_eq!(store.flush_all().unwrap(), 1);
    assert_eq!(store.list_versions("amy").unwrap().len(), 2);
    let stats = store.cache_stats();
    assert_eq!((stats.entries, stats.dirty, stats.hits, stats.misses), (1, 0, 1, 0));
}

#[test]
fn drop_flushes_dirty_entries() {
    let tmp = tempfile::tempdir().unwrap();
    {
        let store = open(tmp.path());
        store.put("ben", sample(4)).unwrap();
    }
    assert_same(&open(tmp.path()).load("ben").unwrap().unwrap(), &sample(4));
}

#[test]
fn eviction_saves_dirty_entries_and_respects_the_limit() {
    let tmp = tempfile::tempdir().unwrap();
    let one = sample(1).approx_bytes();
    let store = open_with(tmp.path(), |o| o.cache_bytes = one * 3);
    for i in 0..10u64 {
        store.put(&format!("user{i}"), sample(i)).unwrap();
        let stats = store.cache_stats();
        assert!(stats.bytes <= one * 3 + one / 2, "{stats:?}");
    }
    let stats = store.cache_stats();
    assert!(stats.evictions >= 7 && stats.entries <= 3, "{stats:?}");
    // Evicted users are on disk already, the cached ones only after the flush on drop.
    let on_disk = (0..10).filter(|i| !store.list_versions(&format!("user{i}")).unwrap().is_empty());
    assert!(on_disk.count() >= 7);
    drop(store);
    let store = open(tmp.path());
    for i in 0..10u64 {
        assert_same(&store.load(&format!("user{i}")).unwrap().unwrap(), &sample(i));
    }
    // Loading also fills the cache in LRU order: touch user0, load two more, user0 stays.
    let store = open_with(tmp.path(), |o| o.cache_bytes = one * 2 + one / 2);
    store.load("user0").unwrap();
    store.load("user1").unwrap();
    store.load("user0").unwrap();
    store.load("user2").unwrap();
    let misses = store.cache_stats().misses;
    store.load("user0").unwrap();
    assert_eq!(store.cache_stats().misses, misses, "user0 was recently used and must be cached");
    store.load("user1").unwrap();
    assert_eq!(store.cache_stats().misses, misses + 1, "user1 was least recently used");
}

#[test]
fn records_larger_than_the_cache_are_written_through() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open_with(tmp.path(), |o| o.cache_bytes = 100);
    store.put("cy", sample(5)).unwrap();
    assert_eq!(store.list_versions("cy").unwrap().len(), 1);
    assert_eq!(store.cache_stats().entries, 0);
    assert_same(&store.load("cy").unwrap().unwrap(), &sample(5));
}

#[test]
fn concurrent_saves_to_one_user_never_collide() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Arc::new(open_with(tmp.path(), |o| o.keep_versions = 1000));
    let barrier = Arc::new(Barrier::new(4));
    let handles: Vec<_> = (0..4u64)
        .map(|t| {
            let (store, barrier) = (store.clone(), barrier.clone());
            thread::spawn(move || {
                barrier.wait();
                (0..15u64)
                    .map(|i| store.save("shared", sample(t * 100 + i)).unwrap())
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut seqs: Vec<u64> = handles.into_iter().flat_map(|h| h.join().unwrap()).collect();
    seqs.sort_unstable();
    assert_eq!(seqs, (1..=60).collect::<Vec<_>>(), "every save got its own version");
    let listed = store.list_versions("shared").unwrap();
    assert_eq!(listed.len(), 60);
    assert!(listed.iter().all(|v| v.problem.is_none()));
}

#[test]
fn mixed_operations_from_threads() {
    let tmp = tempfile::tempdir().unwrap();
    let one = sample(1).approx_bytes();
    let store = Arc::new(open_with(tmp.path(), |o| o.cache_bytes = one * 4));
    let handles: Vec<_> = (0..4u64)
        .map(|t| {
            let store = store.clone();
            thread::spawn(move || {
                for i in 0..40u64 {
                    let own = format!("t{t}-u{}", i % 3);
                    match i % 4 {
                        0 => drop(store.save(&own, sample(t * 1000 + i)).unwrap()),
                        1 | 2 => store.put(&own, sample(t * 1000 + i)).unwrap(),
                        _ => {
                            // Read another thread's users: whatever is returned must be whole.
                            let other = format!("t{}-u{}", (t + 1) % 4, i % 3);
                            if let Some(r) = store.load(&other).unwrap() {
                                assert!(r.validate().is_ok());
                            }
                        }
                    }
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    store.flush_all().unwrap();
    let fresh = open(tmp.path());
    for t in 0..4u64 {
        for u in 0..3u64 {
            // The last write to user u of thread t was at the largest i < 40 with i % 3 == u and
            // i % 4 != 3.
            let last = (0..40u64).filter(|i| i % 3 == u && i % 4 != 3).max().unwrap();
            let id = format!("t{t}-u{u}");
            assert_same(&fresh.load(&id).unwrap().unwrap(), &sample(t * 1000 + last));
            assert_same(&store.load(&id).unwrap().unwrap(), &sample(t * 1000 + last));
        }
    }
}
