//! The real SmolLM2-135M-Instruct model (slow tier; CI runs it): answers, chat template, tokens.

mod common;

use attune::generate::{FinishReason, GenerateOptions, Prompt, SamplingConfig};
use attune::tokenizer::Message;

#[test]
fn greedy_answer_names_paris() {
    let Some(dir) = common::real_dir() else { return };
    let model = common::load(dir);
    let opts = GenerateOptions { sampling: SamplingConfig::greedy(), max_new_tokens: 48, ..GenerateOptions::default() };
    let p = Prompt::Chat(vec![Message::user("What is the capital of France?")]);
    let g = model.generate(&p, &opts, None, &mut |_| true).unwrap();
    eprintln!("reply: {:?} ({:?}, {} tokens)", g.text, g.finish, g.tokens.len());
    assert!(g.text.contains("Paris"), "reply was {:?}", g.text);
}

#[test]
fn default_folder_is_the_exact_profile() {
    // models/prepare.py builds the default folder with the converter's exact profile (the fast one,
    // models/smollm2-135m-instruct-fast, misses "Paris" in greedy_answer_names_paris).
    let Some(dir) = common::real_dir() else { return };
    let model = common::load(dir);
    assert_eq!(model.engine().info().profile.as_deref(), Some("exact"));
}

#[test]
fn chat_template_renders_chatml_with_default_system_prompt() {
    let Some(dir) = common::real_dir() else { return };
    let tok = attune::tokenizer::Tokenizer::from_dir(&dir).unwrap();
    let text = tok.apply_chat_template(&[Message::user("Hi")], true).unwrap();
    assert!(text.starts_with("<|im_start|>system\n"), "{text}");
    assert!(text.ends_with("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"), "{text}");
    let own = tok.apply_chat_template(&[Message::system("Be brief."), Message::user("Hi")], false).unwrap();
    assert_eq!(own, "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n");
    let ids = tok.encode("<|im_start|>user\nHi<|im_end|>").unwrap();
    assert_eq!(ids[0], 1);
    assert_eq!(*ids.last().unwrap(), 2);
}

#[test]
fn reply_ends_at_im_end() {
    let Some(dir) = common::real_dir() else { return };
    let model = common::load(dir);
    let opts = GenerateOptions { sampling: SamplingConfig::greedy(), max_new_tokens: 200, ..GenerateOptions::default() };
    let g = model.generate(&Prompt::Chat(vec![Message::user("Say hello.")]), &opts, None, &mut |_| true).unwrap();
    assert_eq!(g.finish, FinishReason::StopToken, "{:?}", g.text);
    assert_eq!(*g.tokens.last().unwrap(), 2);
    assert!(!g.text.contains("<|im_end|>"));
}
