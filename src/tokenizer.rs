//! Text to tokens and back (`tokenizers`), and chat messages to a prompt through the model's own
//! Jinja chat template (`minijinja`, with Python-compatible string methods).

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// One chat message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// `system`, `user` or `assistant`.
    pub role: String,
    /// The message text.
    pub content: String,
}

impl Message {
    /// A message with the given role.
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        Message { role: role.into(), content: content.into() }
    }

    /// A user message.
    pub fn user(content: impl Into<String>) -> Self {
        Message::new("user", content)
    }

    /// An assistant message.
    pub fn assistant(content: impl Into<String>) -> Self {
        Message::new("assistant", content)
    }

    /// A system message.
    pub fn system(content: impl Into<String>) -> Self {
        Message::new("system", content)
    }
}

/// The model's tokenizer and chat template.
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    template: Option<String>,
    bos_token: String,
    eos_token: String,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer").field("vocab", &self.inner.get_vocab_size(true)).finish()
    }
}

#[derive(Deserialize)]
struct TokenizerConfig {
    #[serde(default)]
    chat_template: Option<String>,
    #[serde(default)]
    bos_token: Option<TokenString>,
    #[serde(default)]
    eos_token: Option<TokenString>,
}

/// `tokenizer_config.json` writes special tokens either as strings or as `{"content": ...}` objects.
#[derive(Deserialize)]
#[serde(untagged)]
enum TokenString {
    Plain(String),
    Object { content: String },
}

impl TokenString {
    fn into_string(self) -> String {
        match self {
            TokenString::Plain(s) | TokenString::Object { content: s } => s,
        }
    }
}

impl Tokenizer {
    /// Loads `tokenizer.json` and `tokenizer_config.json` from a model folder.
    pub fn from_dir(dir: &Path) -> Result<Self> {
        let tok_path = dir.join("tokenizer.json");
        let inner = tokenizers::Tokenizer::from_file(&tok_path)
            .map_err(|e| Error::model(dir, format!("tokenizer.json cannot be loaded: {e}")))?;
        let cfg_path = dir.join("tokenizer_config.json");
        let text = std::fs::read_to_string(&cfg_path)
            .map_err(|e| Error::model(dir, format!("cannot read tokenizer_config.json: {e}")))?;
        let cfg: TokenizerConfig = serde_json::from_str(&text)
            .map_err(|e| Error::model(dir, format!("tokenizer_config.json is invalid: {e}")))?;
        let tok = Tokenizer {
            inner,
            template: cfg.chat_template,
            bos_token: cfg.bos_token.map(TokenString::into_string).unwrap_or_default(),
            eos_token: cfg.eos_token.map(TokenString::into_string).unwrap_or_default(),
        };
        if let Some(t) = &tok.template {
            // Parse once here so a broken template is reported at load time, not at the first reply.
            let mut env = template_env();
            env.add_template("chat", t).map_err(|e| Error::Template(e.to_string()))?;
        }
        Ok(tok)
    }

    /// Vocabulary size including added tokens.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// Token ids of `text`; special-token strings such as `<|im_start|>` become their single ids.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self.inner.encode(text, false).map_err(|e| Error::Tokenizer(e.to_string()))?;
        Ok(enc.get_ids().to_vec())
    }

    /// Text of `ids`; with `skip_special` control tokens are left out.
    pub fn decode(&self, ids: &[u32], skip_special: bool) -> Result<String> {
        self.inner.decode(ids, skip_special).map_err(|e| Error::Tokenizer(e.to_string()))
    }

    /// The id of a token string, if the vocabulary has it.
    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// Whether the model folder carries a chat template.
    pub fn has_chat_template(&self) -> bool {
        self.template.is_some()
    }

    /// Renders `messages` with the model's chat template; `add_generation_prompt` appends the
    /// assistant header so the model answers next.
    pub fn apply_chat_template(&self, messages: &[Message], add_generation_prompt: bool) -> Result<String> {
        let template = self
            .template
            .as_deref()
            .ok_or_else(|| Error::Template("the model folder has no chat_template in tokenizer_config.json".into()))?;
        if messages.is_empty() {
            return Err(Error::InvalidArgument("no chat messages given".into()));
        }
        let mut env = template_env();
        env.add_template("chat", template).map_err(|e| Error::Template(e.to_string()))?;
        let tmpl = env.get_template("chat").map_err(|e| Error::Template(e.to_string()))?;
        tmpl.render(minijinja::context! {
            messages => messages,
            add_generation_prompt => add_generation_prompt,
            bos_token => &self.bos_token,
            eos_token => &self.eos_token,
        })
        .map_err(|e| Error::Template(e.to_string()))
    }
}

fn template_env() -> minijinja::Environment<'static> {
    let mut env = minijinja::Environment::new();
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    env.add_function("raise_exception", |msg: String| -> std::result::Result<String, minijinja::Error> {
        Err(minijinja::Error::new(minijinja::ErrorKind::InvalidOperation, msg))
    });
    env
}

/// Turns a growing list of token ids into text pieces for streaming, never cutting a UTF-8 sequence
/// (a byte-level BPE token can hold part of a character).
#[derive(Debug, Default)]
pub struct StreamDecoder {
    ids: Vec<u32>,
    prefix_offset: usize,
    read_offset: usize,
}

impl StreamDecoder {
    /// Adds one token and returns the new complete text, if any.
    pub fn push(&mut self, tok: &Tokenizer, id: u32) -> Result<Option<String>> {
        self.ids.push(id);
        let prefix = tok.decode(&self.ids[self.prefix_offset..self.read_offset], true)?;
        let full = tok.decode(&self.ids[self.prefix_offset..], true)?;
        if full.len() > prefix.len() && !full.ends_with('\u{FFFD}') && full.is_char_boundary(prefix.len()) {
            let piece = full[prefix.len()..].to_string();
            self.prefix_offset = self.read_offset;
            self.read_offset = self.ids.len();
            Ok(Some(piece))
        } else {
            Ok(None)
        }
    }
}
