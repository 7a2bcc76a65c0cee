//! Proves that decoding is bounded: hostile length fields cannot make the decoder allocate more
//! than a small, fixed amount. A counting global allocator measures the peak heap growth of the
//! test thread while it decodes each crafted file.

mod store_support;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use attune::store::{decode, encode, StoreError, Tensor};
use store_support::wire::{self, Header};
use store_support::{fp, sample};

/// Wraps the system allocator and tracks the live and peak bytes of the current thread while
/// tracking is switched on.
struct Counting;

thread_local! {
    static TRACKING: Cell<bool> = const { Cell::new(false) };
    static LIVE: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
}

/// Adds `delta` bytes to the current thread's count if tracking is on.
fn note(delta: isize) {
    // `try_with` because allocations can happen while thread-locals are being torn down.
    let on = TRACKING.try_with(Cell::get).unwrap_or(false);
    if on {
        let _ = LIVE.try_with(|live| {
            let now = live.get() + delta;
            live.set(now);
            let _ = PEAK.try_with(|peak| peak.set(peak.get().max(now)));
        });
    }
}

// SAFETY: every method forwards to `System` with the caller's arguments unchanged, so the
// allocator contract is `System`'s; the bookkeeping only touches `const` thread-locals without
// destructors, which never allocate.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded as is.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            note(layout.size() as isize);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        note(-(layout.size() as isize));
        // SAFETY: forwarded as is.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded as is.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            note(new_size as isize - layout.size() as isize);
        }
        p
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Runs `f` and returns its result with the peak heap growth it caused on this thread.
fn peak_during<T>(f: impl FnOnce() -> T) -> (T, usize) {
    LIVE.with(|l| l.set(0));
    PEAK.with(|p| p.set(0));
    TRACKING.with(|t| t.set(true));
    let out = f();
    TRACKING.with(|t| t.set(false));
    (out, PEAK.with(Cell::get).max(0) as usize)
}

const KIB: usize = 1024;

#[test]
fn hostile_lengths_allocate_almost_nothing() {
    let hostile_meta = |recent: u64| {
        let m = wire::meta(vec![]);
        wire::Meta {
            config: m.config,
            tensors: m.tensors,
            counters: m.counters,
            scalars: m.scalars,
            rewards: wire::Rewards { count: 0, mean: 0.0, recent, thumbs_up: 0, thumbs_down: 0 },
            created_unix: 0,
            updated_unix: 0,
        }
    };
    let mut tensor_count = wire::meta(vec![]);
    tensor_count.config.algorithm = String::new();
    let tensor_count = wire::Meta {
        config: tensor_count.config,
        tensors: 1u64 << 40, // A tensor list that claims 2^40 headers.
        counters: vec![],
        scalars: vec![],
        rewards: tensor_count.rewards,
        created_unix: 0,
        updated_unix: 0,
    };
    let one_tensor = |shape: Vec<u32>| wire::meta(vec![Header { name: "lora.B".into(), shape }]);
    let cases: Vec<(&str, Vec<u8>, usize)> = vec![
        // 2^40 f32 elements claimed by a tensor shape: 4 TiB if believed.
        (
            "2^40-element tensor",
            wire::file(&fp(), &one_tensor(vec![1 << 20, 1 << 20]), &[]),
            64 * KIB,
        ),
        // Just under the element limit (1 GiB of data claimed), with no data present.
        ("2^28-element tensor", wire::file(&fp(), &one_tensor(vec![1 << 28]), &[]), 64 * KIB),
        // A postcard length prefix of 2^40 for the reward history (Vec<f32>).
        ("2^40 rewards", wire::file(&fp(), &hostile_meta(1 << 40), &[]), 64 * KIB),
        // A postcard length prefix of 2^40 tensor headers; serde caps the up-front capacity of a
        // Vec at 1 MiB, so this is the worst case of the metadata decoder.
        ("2^40 tensor headers", wire::file(&fp(), &tensor_count, &[]), 1100 * KIB),
        // A metadata length field of 4 GiB.
        ("4 GiB metadata", wire::file_raw(&fp(), u32::MAX, &[1, 2, 3], &[]), 64 * KIB),
    ];
    for (what, bytes, limit) in cases {
        let (result, peak) = peak_during(|| decode(&bytes, &fp()));
        let err = result.expect_err(what);
        println!("{what}: {} byte file -> {err:?}, peak {peak} bytes", bytes.len());
        assert!(peak < limit, "{what}: decoding allocated {peak} bytes (limit {limit})");
    }
    // The exact error for the headline case.
    let f = wire::file(&fp(), &one_tensor(vec![1 << 20, 1 << 20]), &[]);
    assert!(matches!(
        decode(&f, &fp()),
        Err(StoreError::TooLarge { what: "tensor element count", claimed: 1099511627776, .. })
    ));
}

#[test]
fn the_counter_sees_real_allocations() {
    // A control: a valid 4 MiB adapter must show up as about 4 MiB of allocation, or the limits
    // in the test above would prove nothing.
    let mut rec = sample(1);
    rec.tensors.insert("lora.B".into(), Tensor::new(vec![131_072, 8], vec![0.5; 1 << 20]).unwrap());
    let bytes = encode(&rec, &fp()).unwrap();
    let (result, peak) = peak_during(|| decode(&bytes, &fp()));
    assert_eq!(result.unwrap(), rec);
    assert!(peak >= 4 << 20, "peak {peak}");
    println!("valid {} byte file: peak {peak} bytes", bytes.len());
}
