//! Fuzzes the adapter file decoder.
//!
//! Each input is tried twice: as a whole file, which exercises the envelope checks (length,
//! magic, checksum, version), and as a version-1 body wrapped in a valid envelope with this
//! target's fingerprint and a correct checksum, which lets mutations reach the metadata and tensor
//! parser. Whatever the decoder accepts must re-encode to bytes that decode to the same record.
//!
//! Run it from `fuzz/` (a nightly toolchain, or `RUSTC_BOOTSTRAP=1` on stable), with the committed
//! seeds as a read-only second corpus:
//!
//! ```text
//! RUSTC_BOOTSTRAP=1 cargo fuzz run decode corpus/decode seeds/decode -- -max_total_time=600 -malloc_limit_mb=16
//! ```
#![no_main]

use attune::store::{decode, encode, reseal, ModelFingerprint, FORMAT_VERSION, MAGIC};
use libfuzzer_sys::fuzz_target;

const FINGERPRINT: ModelFingerprint = ModelFingerprint::from_bytes([0x5a; 32]);

fuzz_target!(|data: &[u8]| {
    let _ = decode(data, &FINGERPRINT);

    let mut file = Vec::with_capacity(data.len() + 14);
    file.extend_from_slice(&MAGIC);
    file.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    file.extend_from_slice(data);
    file.extend_from_slice(&[0; 4]);
    reseal(&mut file, Some(&FINGERPRINT));
    if let Ok(record) = decode(&file, &FINGERPRINT) {
        let again = encode(&record, &FINGERPRINT).expect("a decoded record re-encodes");
        assert_eq!(decode(&again, &FINGERPRINT).as_ref(), Ok(&record));
    }
});
