//! VADER in Rust against the reference implementation (vaderSentiment 3.3.2 in the venv): the
//! compound scores of sentences that exercise every rule agree within 1e-3.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};

use attune::learn::sentiment::Vader;

/// Sentences for each rule: plain lexicon words, negation ("not", "n't", "never", "no", "without"),
/// boosters and dampeners ("very", "kind of", "sort of"), "but", ALL CAPS, exclamation and question
/// marks, emoticons and emoji, "least", and the special-case idioms.
const SENTENCES: &[&str] = &[
    "VADER is smart, handsome, and funny.",
    "VADER is smart, handsome, and funny!",
    "VADER is very smart, handsome, and funny.",
    "VADER is VERY SMART, handsome, and FUNNY.",
    "VADER is VERY SMART, handsome, and FUNNY!!!",
    "VADER is VERY SMART, uber handsome, and FRIGGIN FUNNY!!!",
    "VADER is not smart, handsome, nor funny.",
    "The book was good.",
    "At least it isn't a horrible book.",
    "The book was only kind of good.",
    "The plot was good, but the characters are uncompelling and the dialog is not great.",
    "Today SUX!",
    "Today only kinda sux! But I'll get by, lol",
    "Make sure you :) or :D today!",
    "Catch utf-8 emoji such as 💘 and 💋 and 😁",
    "Not bad at all",
    "Sentiment analysis has never been good.",
    "Sentiment analysis has never been this good!",
    "Most automated sentiment analysis tools are shit.",
    "With VADER, sentiment analysis is the shit!",
    "Other sentiment analysis tools can be quite bad.",
    "On the other hand, VADER is quite bad ass",
    "VADER is such a badass!",
    "Without a doubt, excellent idea.",
    "Roger Dodger is one of the most compelling variations on this theme.",
    "Roger Dodger is at least compelling as a variation on the theme.",
    "Roger Dodger is one of the least compelling variations on this theme.",
    "Not such a badass after all.",
    "Without a doubt, an excellent idea.",
    "Thanks, that really helped a lot.",
    "That was not helpful at all.",
    "I don't like this answer.",
    "I didn't hate it, but it wasn't great either.",
    "This is absolutely terrible.",
    "This is ABSOLUTELY terrible.",
    "this is absolutely TERRIBLE",
    "It is sort of okay, I guess.",
    "It is somewhat useful but mostly confusing.",
    "Great job!!!!!!",
    "Great job?",
    "Is this really the best you can do??",
    "Why would you say that???",
    "What on earth is going on????",
    "No problem at all, happy to help.",
    "There is no good reason to be sad.",
    "No, I am not happy with this.",
    "I love it ❤️ so much 😍",
    "Terrible service 😡😡",
    "ok 👍",
    "The call was cut off and nobody called back. Awful.",
    "I'm extremely disappointed with the support.",
    "The support was barely adequate.",
    "It's hardly a disaster, just a small delay.",
    "You are the best, thank you so much!",
    "I was never so happy in my life.",
    "Nothing good ever comes from this.",
    "This is the bomb, honestly.",
    "Yeah right, like that would ever work.",
    "That cake is to die for!",
    "I am not sure whether this is good or bad.",
    "The waiting music was LOUD but the agent was KIND and helpful.",
    "FANTASTIC!",
    "I hate HATE hate this.",
    "Meh.",
    "The weather is under the weather today, not great, not terrible.",
    "It was the least bit helpful.",
    "At the very least it was quick.",
    "no no no, this is wrong",
    "Neither the price nor the quality was acceptable.",
    "I can't believe how good this is!",
    "",
    "   ",
    ":( :( :(",
    "It was good, it was good, but it was bad and sad.",
    "GOOD good GOOD but NOT good",
];

/// The reference's compound scores, computed by the venv's Python.
fn reference(sentences: &[&str]) -> Vec<f64> {
    let py = common::root().join(".venv/bin/python");
    assert!(py.is_file(), "{} missing: run `make setup`", py.display());
    let script = "import json, sys\n\
        from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer\n\
        a = SentimentIntensityAnalyzer()\n\
        print(json.dumps([a.polarity_scores(s)['compound'] for s in json.load(sys.stdin)]))\n";
    let mut child = Command::new(&py).args(["-c", script]).stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().expect("python starts");
    child.stdin.take().unwrap().write_all(serde_json::to_string(sentences).unwrap().as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "the reference failed (vadersentiment==3.3.2 missing? run `make setup`): {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("the reference prints a JSON list")
}

#[test]
fn compound_scores_match_the_reference_implementation() {
    let dir = common::vader_dir();
    let vader = Vader::load(&dir).unwrap();
    assert!(vader.lexicon_len() > 7000, "{} words", vader.lexicon_len());
    let want = reference(SENTENCES);
    assert!(SENTENCES.len() >= 60 && want.len() == SENTENCES.len());
    let mut bad = Vec::new();
    for (s, w) in SENTENCES.iter().zip(&want) {
        let got = vader.compound(s);
        eprintln!("{got:+.4} (reference {w:+.4})  {s}");
        if (got - w).abs() > 1e-3 {
            bad.push(format!("{s:?}: {got:.4}, reference {w:.4}"));
        }
    }
    assert!(bad.is_empty(), "compound scores differ from vaderSentiment 3.3.2:\n{}", bad.join("\n"));
    let distinct = want.iter().filter(|w| w.abs() > 0.05).count();
    assert!(distinct > SENTENCES.len() / 2, "most sentences carry sentiment ({distinct})");
}
