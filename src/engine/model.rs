//! The model folder: `genai_config.json`, `model.onnx`, `tokenizer.json`, `tokenizer_config.json`,
//! laid out as onnxruntime-genai expects, and checks that the graph has the signature Attune needs.
//! A folder made by `models/convert.py` also holds `attune_model.json`, whose `profile` (`fast` or
//! `exact`, or `custom`) says how its 4-bit projections compute.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::{Error, Result};

/// What Attune reads from `genai_config.json` (extra fields are ignored).
#[derive(Debug, Clone, Deserialize)]
struct GenaiConfig {
    model: GenaiModel,
    #[serde(default)]
    search: Option<GenaiSearch>,
}

#[derive(Debug, Clone, Deserialize)]
struct GenaiModel {
    #[serde(rename = "type")]
    kind: String,
    context_length: usize,
    decoder: GenaiDecoder,
    #[serde(default)]
    eos_token_id: EosIds,
    #[serde(default)]
    bos_token_id: Option<u32>,
    #[serde(default)]
    pad_token_id: Option<u32>,
    vocab_size: usize,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum EosIds {
    One(u32),
    Many(Vec<u32>),
}

impl Default for EosIds {
    fn default() -> Self {
        EosIds::Many(Vec::new())
    }
}

#[derive(Debug, Clone, Deserialize)]
struct GenaiDecoder {
    filename: String,
    head_size: usize,
    hidden_size: usize,
    num_attention_heads: usize,
    num_hidden_layers: usize,
    num_key_value_heads: usize,
    inputs: GenaiInputs,
    outputs: GenaiOutputs,
}

#[derive(Debug, Clone, Deserialize)]
struct GenaiInputs {
    input_ids: String,
    attention_mask: String,
    past_key_names: String,
    past_value_names: String,
    #[serde(default)]
    position_ids: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
struct GenaiOutputs {
    logits: String,
    present_key_names: String,
    present_value_names: String,
}

/// What Attune reads from `attune_model.json` (written by `models/convert.py`; optional).
#[derive(Debug, Clone, Deserialize)]
struct ConverterMeta {
    #[serde(default)]
    profile: Option<String>,
}

/// The name of the converter's metadata file in a model folder.
pub const CONVERTER_META: &str = "attune_model.json";

#[derive(Debug, Clone, Deserialize)]
struct GenaiSearch {
    #[serde(default)]
    max_length: Option<usize>,
}

/// Everything the engine needs to know about a model folder.
#[derive(Debug, Clone)]
pub struct ModelInfo {
    /// The folder itself.
    pub dir: PathBuf,
    /// Path of the ONNX graph.
    pub onnx_path: PathBuf,
    /// Model family named in `genai_config.json` (e.g. `llama`).
    pub kind: String,
    /// Maximum context length of the model.
    pub context_length: usize,
    /// Number of transformer blocks.
    pub num_layers: usize,
    /// Key/value heads per block.
    pub num_kv_heads: usize,
    /// Dimension of one attention head.
    pub head_size: usize,
    /// Hidden size `d`, the length of a `hidden_states` row.
    pub hidden_size: usize,
    /// Vocabulary size `V`, the length of a `logits` row.
    pub vocab_size: usize,
    /// Tokens that end a reply.
    pub eos_token_ids: Vec<u32>,
    /// Beginning-of-sequence token, if the model has one.
    pub bos_token_id: Option<u32>,
    /// Padding token, if any.
    pub pad_token_id: Option<u32>,
    /// The converter profile recorded in `attune_model.json` (`fast`: int8 activations at
    /// llama.cpp's accuracy; `exact`: fp32 compute in the 4-bit projections; `custom`: other
    /// accuracy levels), or `None` for a folder without one (e.g. from onnxruntime-genai's builder).
    pub profile: Option<String>,
    /// Graph input names.
    pub names: IoNames,
}

/// Input and output names of the decoder graph.
#[derive(Debug, Clone)]
pub struct IoNames {
    pub input_ids: String,
    pub attention_mask: String,
    pub position_ids: Option<String>,
    pub past_key: Vec<String>,
    pub past_value: Vec<String>,
    pub logits: String,
    pub hidden_states: String,
    /// The optional input that limits logits and hidden states to the last `n` positions (0: all),
    /// when the graph has it.
    pub logits_to_keep: Option<String>,
    pub present_key: Vec<String>,
    pub present_value: Vec<String>,
}

/// The name of the optional input that limits which positions reach the LM head.
pub const LOGITS_TO_KEEP: &str = "logits_to_keep";

/// Files every model folder must contain.
pub const REQUIRED_FILES: [&str; 4] = ["genai_config.json", "tokenizer.json", "tokenizer_config.json", "model.onnx"];

impl ModelInfo {
    /// Reads and checks `genai_config.json` and the presence of the other files.
    pub fn from_dir(dir: &Path) -> Result<Self> {
        if !dir.is_dir() {
            return Err(Error::model(dir, "not a directory (expected a model folder with genai_config.json, model.onnx, tokenizer.json, tokenizer_config.json)"));
        }
        let cfg_path = dir.join("genai_config.json");
        let text = std::fs::read_to_string(&cfg_path)
            .map_err(|e| Error::model(dir, format!("cannot read genai_config.json: {e}")))?;
        let cfg: GenaiConfig = serde_json::from_str(&text)
            .map_err(|e| Error::model(dir, format!("genai_config.json is not a valid onnxruntime-genai config: {e}")))?;
        let m = cfg.model;
        let d = m.decoder;
        let onnx_path = dir.join(&d.filename);
        for f in REQUIRED_FILES.iter().filter(|f| **f != "model.onnx") {
            if !dir.join(f).is_file() {
                return Err(Error::model(dir, format!("missing file {f}")));
            }
        }
        if !onnx_path.is_file() {
            return Err(Error::model(dir, format!("missing file {} (named by genai_config.json)", d.filename)));
        }
        let fmt_names = |pattern: &str| -> Vec<String> {
            (0..d.num_hidden_layers).map(|i| pattern.replace("%d", &i.to_string())).collect()
        };
        let eos_token_ids = match m.eos_token_id {
            EosIds::One(x) => vec![x],
            EosIds::Many(v) => v,
        };
        let context_length = cfg
            .search
            .and_then(|s| s.max_length)
            .map_or(m.context_length, |ml| ml.min(m.context_length).max(1));
        let _ = d.num_attention_heads;
        let profile = read_profile(dir)?;
        Ok(ModelInfo {
            dir: dir.to_path_buf(),
            onnx_path,
            kind: m.kind,
            context_length,
            num_layers: d.num_hidden_layers,
            num_kv_heads: d.num_key_value_heads,
            head_size: d.head_size,
            hidden_size: d.hidden_size,
            vocab_size: m.vocab_size,
            eos_token_ids,
            bos_token_id: m.bos_token_id,
            pad_token_id: m.pad_token_id,
            profile,
            names: IoNames {
                input_ids: d.inputs.input_ids,
                attention_mask: d.inputs.attention_mask,
                position_ids: d.inputs.position_ids,
                past_key: fmt_names(&d.inputs.past_key_names),
                past_value: fmt_names(&d.inputs.past_value_names),
                logits: d.outputs.logits,
                hidden_states: "hidden_states".to_string(),
                logits_to_keep: None,
                present_key: fmt_names(&d.outputs.present_key_names),
                present_value: fmt_names(&d.outputs.present_value_names),
            },
        })
    }

    /// The profile for display: the recorded one, or `unrecorded`.
    pub fn profile_name(&self) -> &str {
        self.profile.as_deref().unwrap_or("unrecorded")
    }

    /// Checks the graph's inputs and outputs against the names above; `inputs`/`outputs` are the names
    /// the ONNX session reports.
    pub fn check_signature(&self, inputs: &[String], outputs: &[String]) -> Result<()> {
        let n = &self.names;
        let mut want_in: Vec<&String> = vec![&n.input_ids, &n.attention_mask];
        want_in.extend(n.past_key.iter().chain(n.past_value.iter()));
        if let Some(p) = &n.position_ids {
            want_in.push(p);
        }
        for w in want_in {
            if !inputs.contains(w) {
                return Err(Error::model(&self.dir, format!("graph has no input named `{w}` (inputs: {})", inputs.join(", "))));
            }
        }
        for i in inputs {
            let known = *i == n.input_ids
                || *i == n.attention_mask
                || Some(i) == n.position_ids.as_ref()
                || n.past_key.contains(i)
                || n.past_value.contains(i)
                || i == LOGITS_TO_KEEP;
            if !known {
                return Err(Error::model(&self.dir, format!("graph has an unexpected input `{i}`")));
            }
        }
        if !outputs.contains(&n.hidden_states) {
            return Err(Error::model(
                &self.dir,
                "graph has no `hidden_states` output (the LM head's input); re-export the model with hidden states (onnxruntime-genai builder option include_hidden_states) or with models/convert.py",
            ));
        }
        let mut want_out: Vec<&String> = vec![&n.logits];
        want_out.extend(n.present_key.iter().chain(n.present_value.iter()));
        for w in want_out {
            if !outputs.contains(w) {
                return Err(Error::model(&self.dir, format!("graph has no output named `{w}` (outputs: {})", outputs.join(", "))));
            }
        }
        Ok(())
    }
}

/// The `profile` of the folder's `attune_model.json`: `None` when the file or the key is absent, an
/// error when the file is there but is not a JSON object of that shape.
fn read_profile(dir: &Path) -> Result<Option<String>> {
    let path = dir.join(CONVERTER_META);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::model(dir, format!("cannot read {CONVERTER_META}: {e}"))),
    };
    let meta: ConverterMeta = serde_json::from_str(&text)
        .map_err(|e| Error::model(dir, format!("{CONVERTER_META} is not valid converter metadata: {e}")))?;
    Ok(meta.profile)
}
