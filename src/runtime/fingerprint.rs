//! The fingerprint of the base model that adapters are valid for: the graph, the tokenizer, the
//! shapes the adapter depends on, and the content of every weight file beside the graph.
//!
//! Hashing 100+ MB of weights at every start would cost a noticeable fraction of a second on a
//! phone, so each weight file's SHA-256 is kept in the store directory (`.weights-sha256.json`)
//! together with the file's size and modification time, and reused while both are unchanged. Any
//! write to a weight file changes its modification time, so the next open hashes it again and an
//! adapter trained on other weights is refused. `store.verify_weights` re-hashes at every open.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::generate::Model;
use crate::store::ModelFingerprint;

/// The name of the hash cache in the store directory.
pub const WEIGHTS_CACHE: &str = ".weights-sha256.json";

/// What checking the weight files cost when a runtime opened.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct WeightsCheck {
    /// Weight files covered by the fingerprint.
    pub files: usize,
    /// Files whose cached hash was reused.
    pub cached: usize,
    /// Bytes read and hashed.
    pub hashed_bytes: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Cache {
    entries: Vec<CacheEntry>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct CacheEntry {
    path: PathBuf,
    size: u64,
    mtime_ns: u128,
    sha256: String,
}

/// The weight files of a model folder: external-data files of the graph (`*.data`), sorted.
fn weight_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for item in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let item = item.map_err(|e| Error::io(dir, e))?;
        let path = item.path();
        if path.is_file() && path.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.ends_with(".data")) {
            out.push(path);
        }
    }
    out.sort();
    Ok(out)
}

fn sha256_file(path: &Path) -> Result<String> {
    let mut f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(|e| Error::io(path, e))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// The fingerprint of `model` and what it cost, using and refreshing the hash cache in `store_dir`.
pub(super) fn of_model(model: &Model, store_dir: &Path, verify: bool) -> Result<(ModelFingerprint, WeightsCheck)> {
    let info = model.engine().info();
    let read = |p: PathBuf| std::fs::read(&p).map_err(|e| Error::io(p, e));
    let graph = read(info.onnx_path.clone())?;
    let tokenizer = read(info.dir.join("tokenizer.json"))?;
    let shape = format!("hidden={} vocab={} layers={}", info.hidden_size, info.vocab_size, info.num_layers);
    let cache_path = store_dir.join(WEIGHTS_CACHE);
    let mut cache: Cache = std::fs::read(&cache_path).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default();
    let mut check = WeightsCheck::default();
    let mut parts: Vec<Vec<u8>> = vec![graph, tokenizer, shape.into_bytes()];
    let mut changed = false;
    for path in weight_files(&info.dir)? {
        let meta = std::fs::metadata(&path).map_err(|e| Error::io(&path, e))?;
        let mtime_ns = meta.modified().ok().and_then(|t| t.duration_since(UNIX_EPOCH).ok()).map_or(0, |d| d.as_nanos());
        let abs = path.canonicalize().unwrap_or_else(|_| path.clone());
        let hit = cache.entries.iter().find(|e| e.path == abs && e.size == meta.len() && e.mtime_ns == mtime_ns && mtime_ns != 0);
        let sha = match (hit, verify) {
            (Some(e), false) => {
                check.cached += 1;
                e.sha256.clone()
            }
            _ => {
                let sha = sha256_file(&path)?;
                check.hashed_bytes += meta.len();
                cache.entries.retain(|e| e.path != abs);
                cache.entries.push(CacheEntry { path: abs, size: meta.len(), mtime_ns, sha256: sha.clone() });
                changed = true;
                sha
            }
        };
        check.files += 1;
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        parts.push(format!("weights {name} sha256={sha}").into_bytes());
    }
    if changed {
        // A cache that cannot be written only costs a re-hash at the next open.
        let tmp = store_dir.join(format!("{WEIGHTS_CACHE}.tmp-{}", std::process::id()));
        let written = serde_json::to_vec_pretty(&cache)
            .map_err(|e| e.to_string())
            .and_then(|b| std::fs::write(&tmp, b).map_err(|e| e.to_string()))
            .and_then(|()| std::fs::rename(&tmp, &cache_path).map_err(|e| e.to_string()));
        if let Err(e) = written {
            log::warn!("could not write the weight hash cache {}: {e}", cache_path.display());
            let _ = std::fs::remove_file(&tmp);
        }
    }
    Ok((ModelFingerprint::of_parts(parts.iter().map(Vec::as_slice)), check))
}
