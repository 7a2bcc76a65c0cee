//! VADER sentiment (Hutto and Gilbert 2014, "VADER: A Parsimonious Rule-based Model for Sentiment
//! Analysis of Social Media Text"): a valence lexicon plus rules for negation, boosters and
//! dampeners, the contrastive "but", ALL-CAPS emphasis, exclamation and question marks, emoji
//! (replaced by their descriptions), "kind of", "least" and a few idioms. The rules follow the
//! reference implementation, vaderSentiment 3.3.2, closely enough that compound scores agree with
//! it (`tests/rewards.rs` checks 60+ sentences against it), quirks included: the "but" rule scales
//! the first word of equal valence, and an ALL-CAPS word of valence 0 becomes negative.
//!
//! The lexicons are not part of the source: `make setup` copies them from the PyPI package
//! `vadersentiment==3.3.2` (MIT) to `models/vader/` (`models/vader.py`).

mod rules;

use std::collections::HashMap;
use std::path::Path;

use crate::error::{Error, Result};
use rules::{booster, negates, special_case, ALPHA, C_INCR, EXCLAMATION, N_SCALAR, QUESTION, QUESTION_MAX};

/// The word lexicon's file name.
pub const LEXICON_FILE: &str = "vader_lexicon.txt";
/// The emoji lexicon's file name.
pub const EMOJI_FILE: &str = "emoji_utf8_lexicon.txt";

/// VADER's four scores of a text.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Polarity {
    /// The share of negative sentiment.
    pub neg: f64,
    /// The share of neutral words.
    pub neu: f64,
    /// The share of positive sentiment.
    pub pos: f64,
    /// The normalised sum of valences, in [-1, 1]: the one-number score.
    pub compound: f64,
}

/// The analyser: the word lexicon (lower-case words and emoticons with their mean valence in
/// [-4, 4]) and the emoji descriptions.
#[derive(Debug, Clone)]
pub struct Vader {
    lexicon: HashMap<String, f64>,
    emojis: HashMap<char, String>,
}

impl Vader {
    /// Reads `vader_lexicon.txt` and `emoji_utf8_lexicon.txt` from `dir`.
    pub fn load(dir: &Path) -> Result<Vader> {
        let read = |name: &str| {
            let path = dir.join(name);
            std::fs::read_to_string(&path).map_err(|e| {
                Error::Config(format!("VADER lexicon {}: {e} (run `make setup`, which copies it from vadersentiment==3.3.2 with models/vader.py)", path.display()))
            })
        };
        Vader::from_texts(&read(LEXICON_FILE)?, &read(EMOJI_FILE)?)
    }

    /// Parses the two lexicons' text: tab-separated lines, the word (or emoji) first, then its
    /// valence (or description).
    pub fn from_texts(lexicon: &str, emojis: &str) -> Result<Vader> {
        let bad = |what: &str, n: usize, line: &str| Error::Config(format!("VADER {what} line {}: {line:?} is not `entry<TAB>value`", n + 1));
        let mut lex = HashMap::new();
        for (n, line) in lexicon.trim_end_matches('\n').split('\n').enumerate() {
            if line.is_empty() {
                continue;
            }
            let mut f = line.trim_matches(py_space).split('\t');
            let (Some(word), Some(value)) = (f.next(), f.next()) else { return Err(bad("lexicon", n, line)) };
            let value: f64 = value.parse().map_err(|_| bad("lexicon", n, line))?;
            lex.insert(word.to_string(), value);
        }
        let mut emo = HashMap::new();
        for (n, line) in emojis.trim_end_matches('\n').split('\n').enumerate() {
            let mut f = line.trim_matches(py_space).split('\t');
            let (Some(emoji), Some(description)) = (f.next(), f.next()) else { return Err(bad("emoji lexicon", n, line)) };
            // Text is replaced character by character, so only one-character entries can match.
            let mut chars = emoji.chars();
            if let (Some(c), None) = (chars.next(), chars.next()) {
                emo.insert(c, description.to_string());
            }
        }
        if lex.is_empty() {
            return Err(Error::Config("the VADER lexicon is empty".into()));
        }
        Ok(Vader { lexicon: lex, emojis: emo })
    }

    /// The number of words in the lexicon.
    pub fn lexicon_len(&self) -> usize {
        self.lexicon.len()
    }

    /// The compound score of `text`, in [-1, 1] (0 for a text without sentiment).
    pub fn compound(&self, text: &str) -> f64 {
        self.polarity(text).compound
    }

    /// All four scores of `text`.
    pub fn polarity(&self, text: &str) -> Polarity {
        let text = self.describe_emojis(text);
        let text = text.trim_matches(py_space);
        let words: Vec<&str> = text.split(py_space).filter(|w| !w.is_empty()).map(strip_punctuation).collect();
        let lower: Vec<String> = words.iter().map(|w| w.to_lowercase()).collect();
        let t = Tokens { words: &words, lower: &lower, cap_diff: cap_differential(&words) };
        let mut sentiments = Vec::with_capacity(words.len());
        for i in 0..words.len() {
            let modifier = booster(&lower[i]).is_some() || (lower[i] == "kind" && lower.get(i + 1).is_some_and(|w| w == "of"));
            sentiments.push(if modifier { 0.0 } else { self.valence(&t, i) });
        }
        but_rule(&lower, &mut sentiments);
        score(&sentiments, text)
    }

    /// Replaces each emoji by its description, separated by a space from what comes before.
    fn describe_emojis(&self, text: &str) -> String {
        let mut out = String::with_capacity(text.len());
        let mut prev_space = true;
        for c in text.chars() {
            match self.emojis.get(&c) {
                Some(d) => {
                    if !prev_space {
                        out.push(' ');
                    }
                    out.push_str(d);
                    prev_space = false;
                }
                None => {
                    out.push(c);
                    prev_space = c == ' ';
                }
            }
        }
        out
    }

    fn known(&self, word: &str) -> bool {
        self.lexicon.contains_key(word)
    }

    /// The valence of word `i` with the rules that look at the words before it.
    fn valence(&self, t: &Tokens, i: usize) -> f64 {
        let lower = t.lower;
        let Some(&lex) = self.lexicon.get(&lower[i]) else { return 0.0 };
        let mut v = lex;
        // "no" before a lexicon word negates it rather than counting as a word of its own.
        if lower[i] == "no" && i + 1 < lower.len() && self.known(&lower[i + 1]) {
            v = 0.0;
        }
        let is = |k: usize, w: &str| lower[k] == w;
        if (i > 0 && is(i - 1, "no")) || (i > 1 && is(i - 2, "no")) || (i > 2 && is(i - 3, "no") && (is(i - 1, "or") || is(i - 1, "nor"))) {
            v = lex * N_SCALAR;
        }
        if is_upper(t.words[i]) && t.cap_diff {
            v += if v > 0.0 { C_INCR } else { -C_INCR };
        }
        for start in 0..3 {
            if i <= start || self.known(&lower[i - start - 1]) {
                continue;
            }
            let k = i - start - 1;
            let mut s = scalar(t.words[k], &lower[k], v, t.cap_diff);
            if s != 0.0 {
                s *= [1.0, 0.95, 0.9][start];
            }
            v += s;
            v = negation(v, lower, start, i);
            if start == 2 {
                v = idioms(v, lower, i);
            }
        }
        self.least(v, lower, i)
    }

    /// "least" before a word negates it, except in "at least" and "very least".
    fn least(&self, v: f64, lower: &[String], i: usize) -> f64 {
        if i > 0 && lower[i - 1] == "least" && !self.known("least") {
            if i > 1 && (lower[i - 2] == "at" || lower[i - 2] == "very") {
                return v;
            }
            return v * N_SCALAR;
        }
        v
    }
}

/// The words of a text with their lower-case forms, and whether some but not all are ALL CAPS.
struct Tokens<'a> {
    words: &'a [&'a str],
    lower: &'a [String],
    cap_diff: bool,
}

/// Python's `str.isspace` (Unicode white space plus the ASCII separators 0x1c ..= 0x1f), which
/// the reference splits and strips on.
fn py_space(c: char) -> bool {
    c.is_whitespace() || ('\x1c'..='\x1f').contains(&c)
}

/// Strips leading and trailing ASCII punctuation, unless two or fewer characters would be left
/// (an emoticon such as ":)" stays whole).
fn strip_punctuation(token: &str) -> &str {
    let stripped = token.trim_matches(|c: char| c.is_ascii_punctuation());
    if stripped.chars().count() <= 2 {
        token
    } else {
        stripped
    }
}

/// Python's `str.isupper`: some cased character and no lower-case one.
fn is_upper(word: &str) -> bool {
    word.chars().any(char::is_uppercase) && !word.chars().any(char::is_lowercase)
}

/// Whether some, but not all, words are ALL CAPS (then capitals are emphasis).
fn cap_differential(words: &[&str]) -> bool {
    let caps = words.iter().filter(|w| is_upper(w)).count();
    let diff = words.len() - caps;
    0 < diff && diff < words.len()
}

/// A booster's or dampener's effect on a following word of valence `valence`.
fn scalar(word: &str, lower: &str, valence: f64, cap_diff: bool) -> f64 {
    let Some(b) = booster(lower) else { return 0.0 };
    let mut s = if valence < 0.0 { -b } else { b };
    if is_upper(word) && cap_diff {
        s += if valence > 0.0 { C_INCR } else { -C_INCR };
    }
    s
}

/// Negation by the word `start + 1` places before word `i`; "never so/this" intensifies instead and
/// "without doubt" leaves the word alone.
fn negation(v: f64, lower: &[String], start: usize, i: usize) -> f64 {
    let w = |k: usize| lower[i - k].as_str();
    match start {
        0 if negates(w(1)) => v * N_SCALAR,
        1 if w(2) == "never" && (w(1) == "so" || w(1) == "this") => v * 1.25,
        1 if w(2) == "without" && w(1) == "doubt" => v,
        1 if negates(w(2)) => v * N_SCALAR,
        2 if (w(3) == "never" && (w(2) == "so" || w(2) == "this")) || (w(1) == "so" || w(1) == "this") => v * 1.25,
        2 if w(3) == "without" && (w(2) == "doubt" || w(1) == "doubt") => v,
        2 if negates(w(3)) => v * N_SCALAR,
        _ => v,
    }
}

/// Special-case phrases around word `i` (at least the fourth word) replace its valence; a
/// two- or three-word booster before it ("kind of") adds its increment.
fn idioms(mut v: f64, lower: &[String], i: usize) -> f64 {
    let w = |k: usize| lower[k].as_str();
    let one_zero = format!("{} {}", w(i - 1), w(i));
    let two_one_zero = format!("{} {} {}", w(i - 2), w(i - 1), w(i));
    let two_one = format!("{} {}", w(i - 2), w(i - 1));
    let three_two_one = format!("{} {} {}", w(i - 3), w(i - 2), w(i - 1));
    let three_two = format!("{} {}", w(i - 3), w(i - 2));
    if let Some(x) = [&one_zero, &two_one_zero, &two_one, &three_two_one, &three_two].into_iter().find_map(|s| special_case(s)) {
        v = x;
    }
    if lower.len() - 1 > i {
        if let Some(x) = special_case(&format!("{} {}", w(i), w(i + 1))) {
            v = x;
        }
    }
    if lower.len() - 1 > i + 1 {
        if let Some(x) = special_case(&format!("{} {} {}", w(i), w(i + 1), w(i + 2))) {
            v = x;
        }
    }
    for n_gram in [&three_two_one, &three_two, &two_one] {
        if let Some(b) = booster(n_gram) {
            v += b;
        }
    }
    v
}

/// "but": what comes before it counts half, what comes after it one and a half times. As in the
/// reference, each value scales the first word that has that same value.
fn but_rule(lower: &[String], sentiments: &mut [f64]) {
    let Some(bi) = lower.iter().position(|w| w == "but") else { return };
    for k in 0..sentiments.len() {
        let s = sentiments[k];
        let Some(si) = sentiments.iter().position(|&x| x == s) else { continue };
        if si < bi {
            sentiments[si] = s * 0.5;
        } else if si > bi {
            sentiments[si] = s * 1.5;
        }
    }
}

/// The emphasis of exclamation marks (up to four) and of two or more question marks.
fn punctuation_emphasis(text: &str) -> f64 {
    let ep = text.matches('!').count().min(4) as f64 * EXCLAMATION;
    let qm = match text.matches('?').count() {
        0 | 1 => 0.0,
        n @ 2..=3 => n as f64 * QUESTION,
        _ => QUESTION_MAX,
    };
    ep + qm
}

/// The four scores from the words' valences.
fn score(sentiments: &[f64], text: &str) -> Polarity {
    if sentiments.is_empty() {
        return Polarity { neg: 0.0, neu: 0.0, pos: 0.0, compound: 0.0 };
    }
    let mut sum: f64 = sentiments.iter().sum();
    let emphasis = punctuation_emphasis(text);
    if sum > 0.0 {
        sum += emphasis;
    } else if sum < 0.0 {
        sum -= emphasis;
    }
    let compound = (sum / (sum * sum + ALPHA).sqrt()).clamp(-1.0, 1.0);
    // Each non-neutral word counts one more than its valence, so neutral words (1 each) compare.
    let (mut pos, mut neg, mut neu) = (0.0, 0.0, 0.0);
    for &s in sentiments {
        if s > 0.0 {
            pos += s + 1.0;
        } else if s < 0.0 {
            neg += s - 1.0;
        } else {
            neu += 1.0;
        }
    }
    if pos > neg.abs() {
        pos += emphasis;
    } else if pos < neg.abs() {
        neg -= emphasis;
    }
    let total = pos + neg.abs() + neu;
    Polarity { neg: (neg / total).abs(), neu: (neu / total).abs(), pos: (pos / total).abs(), compound }
}

#[cfg(test)]
mod tests {
    use super::rules::B_INCR;
    use super::*;

    fn vader() -> Vader {
        let lexicon = "good\t1.9\t0.9\t[2]\nbad\t-2.5\t0.7\t[-3]\nno\t-1.2\t0.5\t[-1]\nhorrible\t-2.5\t0.6\t[-3]\n:)\t2.0\t1.0\t[2]\n";
        Vader::from_texts(lexicon, "😀\tgrinning face\n").unwrap()
    }

    #[test]
    fn rules_move_the_sum_as_the_paper_says() {
        let v = vader();
        let good = v.compound("The book was good.");
        let norm = |s: f64| s / (s * s + 15.0).sqrt();
        assert!((good - norm(1.9)).abs() < 1e-12);
        assert!((v.compound("The book was very good.") - norm(1.9 + B_INCR)).abs() < 1e-12, "booster");
        assert!((v.compound("The book was not good.") - norm(1.9 * N_SCALAR)).abs() < 1e-12, "negation");
        assert!((v.compound("The book was GOOD.") - norm(1.9 + C_INCR)).abs() < 1e-12, "capitals");
        assert!((v.compound("The book was good!!") - norm(1.9 + 2.0 * EXCLAMATION)).abs() < 1e-12, "exclamation");
        assert!((v.compound("good, but bad") - norm(0.5 * 1.9 + 1.5 * -2.5)).abs() < 1e-12, "but");
        assert!((v.compound("so :)") - norm(2.0 + B_INCR)).abs() < 1e-12, "an emoticon survives stripping");
        assert_eq!(v.compound("😀"), 0.0, "the description's words carry the emoji's valence (none here)");
        assert_eq!(v.compound(""), 0.0);
        assert!(Vader::from_texts("good", "").is_err());
    }
}
