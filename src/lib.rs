//! Attune: an on-device LLM runtime on ONNX Runtime that learns from the person using it.
#![deny(unsafe_code)]

pub mod adapter;
pub mod engine;
pub mod error;
pub mod generate;
pub mod learn;
pub mod runtime;
pub mod store;
pub mod tokenizer;

pub use error::{Error, Result};
