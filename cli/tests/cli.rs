//! The command line a person keeps using, on the tiny model: `attune chat --user` keeps what the
//! chat taught after a normal exit and after Ctrl-C, `attune user stats|history|export|import|
//! rollback|forget` read and change the stored adapter, `--config` takes the C API's JSON, a chat
//! samples by default and `--greedy` chat stays greedy. The computed reward sources: `--config`'s `rewards`, `chat --rewards`,
//! `/rate JSON` and `attune user feedback`.

#[path = "../../tests/common/mod.rs"]
mod common;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};

fn attune() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_attune"));
    c.env("RUST_LOG", "error");
    c
}

fn base_args(store: &Path) -> Vec<String> {
    vec!["--model".into(), common::tiny_dir().display().to_string(), "--store".into(), store.display().to_string(), "--threads".into(), "2".into()]
}

fn stats(store: &Path, user: &str) -> serde_json::Value {
    let out = attune().args(["user"]).args(base_args(store)).args(["stats", user]).output().expect("attune user stats");
    assert!(out.status.success(), "user stats failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("stats JSON")
}

#[test]
fn chat_feedback_survives_a_normal_exit_and_ctrl_c() {
    let store = tempfile::tempdir().unwrap();
    // A normal exit: the chat is piped in and ends with /quit.
    let mut child = attune()
        .arg("chat")
        .args(base_args(store.path()))
        .args(["--user", "sam", "--max-new-tokens", "6", "--temperature", "0.8"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"Hello there\n/good\nWhat now?\n/bad\n/quit\n").unwrap();
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "chat failed: {err}");
    assert!(err.contains("(sampled replies: temperature 0.8, min-p 0.05, top-p 1, repetition penalty 1.1;"), "{err}");
    let s = stats(store.path(), "sam");
    assert_eq!(s["counters"]["feedback"], 2, "{s}");
    assert_eq!((s["rewards"]["positive"].as_u64(), s["rewards"]["negative"].as_u64()), (Some(1), Some(1)), "{s}");

    // Ctrl-C: the chat is interrupted after its feedback was acknowledged. SIGINT gets its default
    // action in the chat, as in a terminal, even where this test runs with SIGINT ignored (a
    // background job of a shell without job control), which the chat would inherit.
    let mut chat = attune();
    chat.arg("chat")
        .args(base_args(store.path()))
        .args(["--user", "sam", "--max-new-tokens", "6", "--greedy"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    // SAFETY: signal(2) is async-signal-safe, the only call made between fork and exec.
    unsafe {
        chat.pre_exec(|| {
            libc::signal(libc::SIGINT, libc::SIG_DFL);
            Ok(())
        });
    }
    let mut child = chat.spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut seen = Vec::new();
    let mut greedy_note = false;
    stdin.write_all(b"Hi again\n/good\n").unwrap();
    stdin.flush().unwrap();
    for line in lines.by_ref() {
        let line = line.unwrap();
        greedy_note |= line.contains("greedy");
        let done = line.contains("(saved as version");
        seen.push(line);
        if done {
            break;
        }
    }
    assert!(greedy_note, "--greedy is greedy and says so: {seen:?}");
    let pid = child.id().to_string();
    assert!(Command::new("kill").args(["-INT", &pid]).status().unwrap().success());
    let status = child.wait().unwrap();
    assert!(!status.success(), "the chat was interrupted");
    let s = stats(store.path(), "sam");
    assert_eq!(s["counters"]["feedback"], 3, "the interrupted chat's feedback was kept: {s}");
}

#[test]
fn user_commands_and_config_file() {
    let store = tempfile::tempdir().unwrap();
    let cfg = store.path().join("runtime.json");
    // The same JSON the C API takes; the flags (model, store) override it.
    std::fs::write(&cfg, r#"{"engine": {"threads": 2, "max_context": 256}, "learner": {"max_updates_per_minute": 0}}"#).unwrap();
    let gen = attune()
        .arg("generate")
        .args(base_args(store.path()))
        .args(["--config", cfg.to_str().unwrap(), "--user", "ann", "--max-new-tokens", "4", "Hello"])
        .output()
        .unwrap();
    assert!(gen.status.success(), "{}", String::from_utf8_lossy(&gen.stderr));
    assert!(String::from_utf8_lossy(&gen.stderr).contains("episode 0 for user ann"));
    let s = stats(store.path(), "ann");
    assert_eq!(s["pending_episodes"], 1, "the generated reply waits for feedback: {s}");
    // A chat that teaches, then history, export, rollback, import and forget.
    let mut child = attune().arg("chat").args(base_args(store.path())).args(["--user", "ann", "--max-new-tokens", "4", "--temperature", "0.9"]).stdin(Stdio::piped()).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    child.stdin.take().unwrap().write_all(b"One\n/good\nTwo\n/bad\n").unwrap();
    assert!(child.wait().unwrap().success());
    let run = |args: &[&str]| {
        let out = attune().arg("user").args(base_args(store.path())).args(args).output().unwrap();
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let history = run(&["history", "ann"]);
    assert!(history.lines().count() >= 2, "a version per change: {history}");
    let file = store.path().join("ann.attune");
    assert!(run(&["export", "ann", file.to_str().unwrap()]).contains("exported"));
    run(&["rollback", "ann", "--steps", "1"]);
    assert_eq!(stats(store.path(), "ann")["counters"]["feedback"], 1, "one version back: one thumbs");
    run(&["import", "ann", file.to_str().unwrap()]);
    assert_eq!(stats(store.path(), "ann")["counters"]["feedback"], 2, "the export came back");
    assert!(run(&["forget", "ann"]).contains("forgot ann"));
    assert_eq!(stats(store.path(), "ann")["saved_versions"], 0);
    // A bad configuration file is a clear error.
    std::fs::write(&cfg, r#"{"learner": {"lr": -1}}"#).unwrap();
    let bad = attune().arg("user").args(base_args(store.path())).args(["--config", cfg.to_str().unwrap(), "stats", "ann"]).output().unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("lr"), "{}", String::from_utf8_lossy(&bad.stderr));
}

#[test]
fn reward_sources_from_config_flags_and_rate() {
    let store = tempfile::tempdir().unwrap();
    let cfg = store.path().join("runtime.json");
    std::fs::write(&cfg, r#"{"learner": {"max_updates_per_minute": 0}, "rewards": {"task": {"checks": [{"avoid_word": "sorry"}]}}}"#).unwrap();
    let mut child = attune()
        .arg("chat")
        .args(base_args(store.path()))
        .args(["--config", cfg.to_str().unwrap(), "--user", "eve", "--max-new-tokens", "5", "--temperature", "0.9", "--rewards", "coherence,sentiment"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"Hello\nThanks, that is great!\n/rate {\"task\": [{\"use_word\": \"the\"}]}\n/rate {\"smile\": 1}\n/quit\n").unwrap();
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "chat failed: {err}");
    // The first reply's feedback came with the next message: its coherence and that message's
    // sentiment, plus the configured task check; the second reply's with /rate.
    for want in ["episode 0 coherence", "episode 0 sentiment", "episode 0 task", "episode 1 task"] {
        assert!(err.contains(want), "{want:?} missing from: {err}");
    }
    assert!(err.contains("unknown field `smile`"), "{err}");
    let s = stats(store.path(), "eve");
    assert_eq!(s["counters"]["feedback"], 2, "{s}");
    // `attune user feedback` on a reply generated for later feedback.
    let gen = attune().arg("generate").args(base_args(store.path())).args(["--user", "eve", "--max-new-tokens", "4", "Hi"]).output().unwrap();
    let gen_err = String::from_utf8_lossy(&gen.stderr);
    assert!(gen.status.success(), "{gen_err}");
    let id = gen_err.split("(episode ").nth(1).and_then(|t| t.split_whitespace().next()).expect("the episode id is printed").to_string();
    let fb = attune().arg("user").args(base_args(store.path())).args(["feedback", "eve", &id, r#"[{"thumbs": true}, {"sentiment": "reply"}]"#]).output().unwrap();
    let fb_err = String::from_utf8_lossy(&fb.stderr);
    assert!(fb.status.success(), "{fb_err}");
    assert!(fb_err.contains(&format!("episode {id} sentiment")) && fb_err.contains(&format!("episode {id} thumbs")), "{fb_err}");
    assert_eq!(stats(store.path(), "eve")["counters"]["feedback"], 3);
}

#[test]
fn chat_samples_by_default_and_says_how() {
    let store = tempfile::tempdir().unwrap();
    let mut child = attune()
        .arg("chat")
        .args(base_args(store.path()))
        .args(["--user", "kim", "--max-new-tokens", "4", "--no-save"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"Hello\n/quit\n").unwrap();
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "chat failed: {err}");
    assert!(err.contains("(sampled replies: temperature 0.7, min-p 0.05, top-p 1, repetition penalty 1.1; --greedy for greedy ones)"), "{err}");
    // --greedy and --temperature together are refused by the argument parser.
    let both = attune().arg("chat").args(base_args(store.path())).args(["--greedy", "--temperature", "0.5"]).stdin(Stdio::null()).output().unwrap();
    assert!(!both.status.success());
}
