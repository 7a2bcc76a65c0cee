//! The engine and generation on the tiny model (fast tier): KV cache correctness, streaming, barge-in,
//! stop conditions, seeded sampling, and clear errors for bad input and wrong model folders.

mod common;

use std::path::Path;

use attune::engine::{Engine, EngineConfig};
use attune::generate::{FinishReason, GenerateOptions, Model, Prompt, SamplingConfig};
use attune::tokenizer::Message;
use attune::Error;

fn copy_dir(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).unwrap();
    for e in std::fs::read_dir(src).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), dst.join(e.file_name())).unwrap();
    }
}

fn tmpdir(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("attune-test-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

#[test]
fn incremental_decoding_matches_teacher_forcing() {
    let model = common::load(common::tiny_dir());
    let engine = model.engine();
    let ids = model.tokenizer().encode("The KV cache is kept in place, step after step, and must agree.").unwrap();
    assert!(ids.len() > 10);
    let v = engine.info().vocab_size;
    let d = engine.info().hidden_size;
    let mut full = engine.new_sequence().unwrap();
    engine.forward(&mut full, &ids, true).unwrap();
    assert_eq!(full.rows(), ids.len());
    let mut inc = engine.new_sequence().unwrap();
    engine.forward(&mut inc, &ids[..3], true).unwrap();
    let mut max_err = 0f32;
    for (i, &t) in ids.iter().enumerate().skip(3) {
        engine.forward(&mut inc, &[t], false).unwrap();
        let a = &full.logits()[i * v..(i + 1) * v];
        let b = inc.logits();
        for (x, y) in a.iter().zip(b) {
            max_err = max_err.max((x - y).abs() / (1.0 + x.abs()));
        }
        let ha = &full.hidden()[i * d..(i + 1) * d];
        for (x, y) in ha.iter().zip(inc.hidden()) {
            assert!((x - y).abs() <= 1e-3 * (1.0 + x.abs()), "hidden differs at position {i}");
        }
    }
    assert!(max_err < 1e-3, "incremental logits differ from teacher forcing by {max_err}");
    // The logits are not degenerate.
    let row = &full.logits()[..v];
    let (mn, mx) = row.iter().fold((f32::MAX, f32::MIN), |(a, b), &x| (a.min(x), b.max(x)));
    assert!(mx - mn > 0.1, "tiny model logits are flat");
}

#[test]
fn prefill_keeps_only_the_last_row_and_it_matches_the_full_pass() {
    let model = common::load(common::tiny_dir());
    let engine = model.engine();
    assert!(engine.info().names.logits_to_keep.is_some(), "the converted model has the logits_to_keep input");
    let ids = model.tokenizer().encode("Only the last position of a prompt needs logits.").unwrap();
    let (v, d, n) = (engine.info().vocab_size, engine.info().hidden_size, ids.len());
    let mut full = engine.new_sequence().unwrap();
    engine.forward(&mut full, &ids, true).unwrap();
    let mut last = engine.new_sequence().unwrap();
    engine.forward(&mut last, &ids, false).unwrap();
    assert_eq!((full.rows(), last.rows()), (n, 1));
    assert_eq!(last.logits(), &full.logits()[(n - 1) * v..], "last-row logits");
    assert_eq!(last.hidden(), &full.hidden()[(n - 1) * d..], "last-row hidden state");
    // The caches agree too: the next step is the same from both.
    engine.forward(&mut full, &ids[..1], false).unwrap();
    engine.forward(&mut last, &ids[..1], false).unwrap();
    assert_eq!(last.logits(), full.logits());
}

/// Teacher forcing a reply keeps the reply's rows only: `forward_last(k)` gives exactly the last
/// `k` rows of the full pass, and no others.
#[test]
fn teacher_forcing_keeps_only_the_rows_it_uses() {
    let model = common::load(common::tiny_dir());
    let engine = model.engine();
    let ids = model.tokenizer().encode("A long prompt, then a short reply whose rows are the only ones used.").unwrap();
    let (v, d, n) = (engine.info().vocab_size, engine.info().hidden_size, ids.len());
    let mut full = engine.new_sequence().unwrap();
    engine.forward(&mut full, &ids, true).unwrap();
    for k in [1, 3, n - 1, n, n + 5] {
        let mut some = engine.new_sequence().unwrap();
        engine.forward_last(&mut some, &ids, k).unwrap();
        let k = k.min(n);
        assert_eq!(some.rows(), k);
        assert_eq!(some.logits().len(), k * v, "only {k} rows of logits are kept");
        assert_eq!(some.logits(), &full.logits()[(n - k) * v..], "the last {k} rows' logits");
        assert_eq!(some.hidden(), &full.hidden()[(n - k) * d..], "the last {k} rows' hidden states");
    }
    // A compact episode's rebuild gives the same records as the full pass would.
    let (prompt, reply) = ids.split_at(n - 4);
    let recs = model.teacher_force_ids(prompt, reply, 1.0).unwrap();
    assert_eq!(recs.len(), 4);
    for (j, r) in recs.iter().enumerate() {
        let row = prompt.len() - 1 + j;
        assert_eq!(r.token, reply[j]);
        assert_eq!(r.hidden, &full.hidden()[row * d..(row + 1) * d], "record {j}'s hidden state is the row that predicts it");
    }
}

#[test]
fn seeded_generation_is_reproducible_and_streams_the_reply() {
    let model = common::load(common::tiny_dir());
    let opts = GenerateOptions {
        sampling: SamplingConfig { temperature: 1.0, seed: 42, ..SamplingConfig::default() },
        max_new_tokens: 24,
        ..GenerateOptions::default()
    };
    let p = Prompt::Chat(vec![Message::user("Hello there")]);
    let mut streamed = String::new();
    let a = model.generate(&p, &opts, None, &mut |s| {
        streamed.push_str(s);
        true
    }).unwrap();
    let b = model.generate(&p, &opts, None, &mut |_| true).unwrap();
    assert_eq!(a.tokens, b.tokens);
    assert_eq!(streamed, a.text, "streamed pieces add up to the reply");
    let c = model
        .generate(&p, &GenerateOptions { sampling: SamplingConfig { seed: 43, ..opts.sampling }, ..opts.clone() }, None, &mut |_| true)
        .unwrap();
    assert_ne!(a.tokens, c.tokens, "another seed gives another reply");
}

#[test]
fn barge_in_stops_within_one_token() {
    let model = common::load(common::tiny_dir());
    let opts = GenerateOptions {
        sampling: SamplingConfig { temperature: 1.0, seed: 3, ..SamplingConfig::default() },
        max_new_tokens: 64,
        ..GenerateOptions::default()
    };
    let mut pieces = 0;
    let g = model
        .generate(&Prompt::Text("Once upon a time".into()), &opts, None, &mut |_| {
            pieces += 1;
            false
        })
        .unwrap();
    assert_eq!(g.finish, FinishReason::Cancelled);
    assert_eq!(pieces, 1, "no text after the callback said stop");
    // The callback fires on the first token that completes text, and no further token is generated.
    let first_text_token = g.tokens.len();
    assert!(first_text_token <= 4, "stopped after {first_text_token} tokens");
    assert_eq!(g.timings.decode_steps + 1, g.tokens.len(), "no decode step after the stop");
}

#[test]
fn stop_strings_and_length_limits() {
    let model = common::load(common::tiny_dir());
    let base = GenerateOptions {
        sampling: SamplingConfig { temperature: 1.0, seed: 11, ..SamplingConfig::default() },
        max_new_tokens: 40,
        ..GenerateOptions::default()
    };
    let p = Prompt::Text("A list of words:".into());
    let g = model.generate(&p, &base, None, &mut |_| true).unwrap();
    assert!(g.tokens.len() <= 40);
    if g.finish == FinishReason::Length {
        assert_eq!(g.tokens.len(), 40);
    }
    // Pick a stop string from the middle of the unconstrained reply: the constrained reply ends before it.
    let chars: Vec<char> = g.text.chars().collect();
    if chars.len() >= 6 {
        let mid = chars.len() / 2;
        let stop: String = chars[mid..mid + 2].iter().collect();
        let first = g.text.find(&stop).unwrap();
        let opts = GenerateOptions { stop_strings: vec![stop.clone()], ..base.clone() };
        let mut streamed = String::new();
        let h = model.generate(&p, &opts, None, &mut |s| {
            streamed.push_str(s);
            true
        }).unwrap();
        assert_eq!(h.finish, FinishReason::StopString);
        assert_eq!(h.text, g.text[..first]);
        assert_eq!(streamed, h.text, "the stop string is never streamed");
    }
    let one = GenerateOptions { max_new_tokens: 1, ..base };
    assert_eq!(model.generate(&p, &one, None, &mut |_| true).unwrap().tokens.len(), 1);
}

#[test]
fn records_recompute_the_sampled_distribution() {
    let model = common::load(common::tiny_dir());
    let opts = GenerateOptions {
        sampling: SamplingConfig { temperature: 0.7, top_k: 20, seed: 5, ..SamplingConfig::default() },
        max_new_tokens: 8,
        record: true,
        ..GenerateOptions::default()
    };
    let g = model.generate(&Prompt::Text("Records".into()), &opts, None, &mut |_| true).unwrap();
    assert_eq!(g.records.len(), g.tokens.len());
    let d = model.engine().info().hidden_size;
    for r in &g.records {
        assert_eq!(r.hidden.len(), d);
        let kept = r.kept.as_ref().expect("top-k recorded");
        assert_eq!(kept.len(), 20);
        assert!(kept.contains(&r.token));
        // Recompute log p(token) from the stored base log-probs (adapter off): softmax over the kept set.
        let z: Vec<f64> = kept.iter().map(|&i| r.base_logprobs[i as usize].to_f64() / 0.7).collect();
        let m = z.iter().cloned().fold(f64::MIN, f64::max);
        let lse = m + z.iter().map(|x| (x - m).exp()).sum::<f64>().ln();
        let j = kept.iter().position(|&i| i == r.token).unwrap();
        let lp = z[j] - lse;
        assert!((lp - r.behaviour_logprob as f64).abs() < 2e-2, "recomputed {lp} vs recorded {}", r.behaviour_logprob);
    }
}

#[test]
fn bad_input_gives_clear_errors() {
    let model = common::load(common::tiny_dir());
    let opts = GenerateOptions::default();
    let e = model.generate(&Prompt::Text(String::new()), &opts, None, &mut |_| true).unwrap_err();
    assert!(matches!(e, Error::InvalidArgument(_)), "{e}");
    let long = vec![100u32; model.engine().capacity() + 5];
    let e = model.generate(&Prompt::Tokens(long), &opts, None, &mut |_| true).unwrap_err();
    assert!(matches!(e, Error::ContextOverflow { .. }), "{e}");
    assert!(e.to_string().contains("does not fit"), "{e}");
    let bad = GenerateOptions { sampling: SamplingConfig { temperature: -1.0, ..SamplingConfig::default() }, ..GenerateOptions::default() };
    let e = model.generate(&Prompt::Text("x".into()), &bad, None, &mut |_| true).unwrap_err();
    assert!(e.to_string().contains("temperature"), "{e}");
    let bad = GenerateOptions { sampling: SamplingConfig { top_p: 1.01, ..SamplingConfig::default() }, ..GenerateOptions::default() };
    let e = model.generate(&Prompt::Text("x".into()), &bad, None, &mut |_| true).unwrap_err();
    assert!(e.to_string().contains("top_p"), "{e}");
    let cfg = EngineConfig { execution_providers: vec!["warpdrive".into()], ..common::cpu_config(common::tiny_dir()) };
    let e = Model::load(&cfg).unwrap_err();
    assert!(matches!(e, Error::Config(_)) && e.to_string().contains("warpdrive"), "{e}");
}

#[test]
fn wrong_model_folders_say_what_is_wrong() {
    let tiny = common::tiny_dir();
    // Not a folder at all.
    let e = Engine::load(&common::cpu_config(tiny.join("nope"))).unwrap_err();
    assert!(e.to_string().contains("not a directory"), "{e}");
    // Each required file missing in turn.
    for f in ["genai_config.json", "tokenizer.json", "tokenizer_config.json", "model.onnx"] {
        let d = tmpdir(&format!("missing-{f}"));
        copy_dir(&tiny, &d);
        std::fs::remove_file(d.join(f)).unwrap();
        let e = Model::load(&common::cpu_config(d.clone())).unwrap_err();
        assert!(e.to_string().contains(f), "missing {f}: {e}");
        let _ = std::fs::remove_dir_all(&d);
    }
    // Wrong input names: the config names an input the graph does not have.
    let d = tmpdir("wrong-input");
    copy_dir(&tiny, &d);
    let cfg = std::fs::read_to_string(d.join("genai_config.json")).unwrap();
    std::fs::write(d.join("genai_config.json"), cfg.replace("\"input_ids\": \"input_ids\"", "\"input_ids\": \"tokens\"")).unwrap();
    let e = Engine::load(&common::cpu_config(d.clone())).unwrap_err();
    assert!(e.to_string().contains("no input named `tokens`"), "{e}");
    let _ = std::fs::remove_dir_all(&d);
    // A graph without hidden_states (edited with the onnx package from the project's venv).
    let d = tmpdir("no-hidden");
    copy_dir(&tiny, &d);
    let py = common::root().join(".venv/bin/python");
    let script = "import onnx,sys; p=sys.argv[1]; m=onnx.load(p); outs=[o for o in m.graph.output if o.name!='hidden_states']; del m.graph.output[:]; m.graph.output.extend(outs); onnx.save(m,p,save_as_external_data=True,location='model.onnx.data.2')";
    let st = std::process::Command::new(py).arg("-c").arg(script).arg(d.join("model.onnx")).status().unwrap();
    assert!(st.success());
    let e = Engine::load(&common::cpu_config(d.clone())).unwrap_err();
    assert!(e.to_string().contains("hidden_states"), "{e}");
    let _ = std::fs::remove_dir_all(&d);
    // A corrupt genai_config.json.
    let d = tmpdir("bad-json");
    copy_dir(&tiny, &d);
    std::fs::write(d.join("genai_config.json"), "{ not json").unwrap();
    let e = Engine::load(&common::cpu_config(d.clone())).unwrap_err();
    assert!(e.to_string().contains("genai_config.json"), "{e}");
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn ort_library_errors_name_the_paths_tried() {
    let c = attune::engine::ortlib::candidate_paths(Some(Path::new("/nonexistent/libonnxruntime.so")));
    assert_eq!(c.len(), 1, "an explicit path is the only candidate");
    let all = attune::engine::ortlib::candidate_paths(None);
    assert!(all.iter().any(|(p, _)| p.ends_with(".ort/libonnxruntime.so")));
}

#[test]
fn model_folder_reports_its_converter_profile() {
    let tiny = common::tiny_dir();
    // models/make_tiny.py builds the tiny folder with the exact profile; the runtime reports it.
    let engine = Engine::load(&common::cpu_config(tiny.clone())).unwrap();
    assert_eq!(engine.info().profile.as_deref(), Some("exact"));
    let rt = attune::runtime::Runtime::new(attune::runtime::RuntimeConfig { engine: common::cpu_config(tiny.clone()), ..Default::default() }).unwrap();
    assert_eq!(rt.stats().model_profile.as_deref(), Some("exact"));
    let json = serde_json::to_value(rt.stats()).unwrap();
    assert_eq!(json["model_profile"], "exact");
    // The recorded value is read, not assumed.
    let d = tmpdir("profile-fast");
    copy_dir(&tiny, &d);
    let meta = std::fs::read_to_string(d.join("attune_model.json")).unwrap();
    assert!(meta.contains("\"profile\": \"exact\""), "{meta}");
    std::fs::write(d.join("attune_model.json"), meta.replace("\"profile\": \"exact\"", "\"profile\": \"fast\"")).unwrap();
    assert_eq!(Engine::load(&common::cpu_config(d.clone())).unwrap().info().profile.as_deref(), Some("fast"));
    // A folder without the file (e.g. from onnxruntime-genai's builder) loads, with no profile.
    std::fs::remove_file(d.join("attune_model.json")).unwrap();
    let info = Engine::load(&common::cpu_config(d.clone())).unwrap().info().clone();
    assert_eq!((info.profile.as_deref(), info.profile_name()), (None, "unrecorded"));
    // A corrupt one is refused by name.
    std::fs::write(d.join("attune_model.json"), "{\"profile\": 4").unwrap();
    let e = Engine::load(&common::cpu_config(d.clone())).unwrap_err();
    assert!(e.to_string().contains("attune_model.json"), "{e}");
    let _ = std::fs::remove_dir_all(&d);
}
