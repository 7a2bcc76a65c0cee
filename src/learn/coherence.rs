//! Coherence of a reply, from what generation already records: how surprising the base model finds
//! the reply's tokens, how much of it repeats itself, and whether it was cut off mid-sentence.
//!
//! `coherence = -(w_nll * NLL + w_rep * R + w_cut * C)`, where
//! - `NLL = -(1/T) sum_t log q(a_t | s_t)` is the base model's mean negative log-likelihood per
//!   token of the reply (`TokenRecord::base_logprobs` at the sampled token; with a repetition
//!   penalty, the penalised base distribution that generation sampled from);
//! - `R` is the fraction of the reply's token `n`-grams that already occurred earlier in it (0 for
//!   a reply with fewer than `n + 1` tokens);
//! - `C` is 1 when generation stopped at the token limit and the text does not end a sentence
//!   (`.`, `!`, `?`, `…` and their full-width forms, optionally followed by closing quotes or
//!   brackets), else 0; unknown when the finish reason is (replies restored after a restart), then 0.
//!
//! The repetition weight is larger than the NLL's on purpose: a model that has just seen a phrase
//! predicts its repetition well (copying), so a looping reply can have a *lower* NLL than the reply
//! it repeats, and then only the repetition term ranks it below (`tests/coherence.rs`).

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::generate::TokenRecord;

/// The base log-probability of each record's token (NaN for a record without it).
pub fn token_logprobs(records: &[TokenRecord]) -> Vec<f32> {
    records.iter().map(|r| r.base_logprobs.get(r.token as usize).map_or(f32::NAN, |l| l.to_f32())).collect()
}

/// The weights of the three terms and the `n` of the repetition term.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CoherenceWeights {
    /// Weight of the mean NLL per token (nats).
    pub nll: f64,
    /// Weight of the repeated-`n`-gram fraction.
    pub repetition: f64,
    /// Weight of a reply cut off mid-sentence.
    pub cutoff: f64,
    /// The `n` of the repeated `n`-grams (tokens).
    pub ngram: usize,
}

impl Default for CoherenceWeights {
    fn default() -> Self {
        CoherenceWeights { nll: 1.0, repetition: 4.0, cutoff: 1.0, ngram: 3 }
    }
}

impl CoherenceWeights {
    /// Weights must be finite and non-negative, `ngram` at least 1.
    pub fn validate(&self) -> Result<()> {
        for (name, w) in [("nll", self.nll), ("repetition", self.repetition), ("cutoff", self.cutoff)] {
            if !(w.is_finite() && w >= 0.0) {
                return Err(Error::Config(format!("coherence weight {name} must be finite and >= 0, got {w}")));
            }
        }
        if self.ngram == 0 {
            return Err(Error::Config("coherence ngram must be at least 1".into()));
        }
        Ok(())
    }
}

/// The three measured terms of one reply.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CoherenceTerms {
    /// Mean NLL per token under the base model (nats).
    pub nll: f64,
    /// Fraction of `n`-grams seen earlier in the reply, in [0, 1].
    pub repetition: f64,
    /// Whether the reply was cut off mid-sentence.
    pub cut_off: bool,
}

impl CoherenceTerms {
    /// Measures a reply: `logprobs` are the base log-probabilities of its tokens `tokens` (one
    /// each), `text` its text, `by_length` whether generation stopped at the token limit (`None`:
    /// unknown).
    pub fn measure(logprobs: &[f32], tokens: &[u32], text: &str, by_length: Option<bool>, ngram: usize) -> Result<CoherenceTerms> {
        if logprobs.is_empty() || logprobs.len() != tokens.len() {
            return Err(Error::InvalidArgument(format!("coherence needs one log-probability per token ({} for {} tokens)", logprobs.len(), tokens.len())));
        }
        let nll = -logprobs.iter().map(|&l| f64::from(l)).sum::<f64>() / logprobs.len() as f64;
        if !nll.is_finite() {
            return Err(Error::InvalidReward(format!("the reply's mean NLL {nll} is not finite")));
        }
        Ok(CoherenceTerms { nll, repetition: repetition(tokens, ngram), cut_off: by_length == Some(true) && !ends_sentence(text) })
    }

    /// Measures a reply from its generation (or teacher-forcing) records.
    pub fn from_records(records: &[TokenRecord], text: &str, by_length: Option<bool>, ngram: usize) -> Result<CoherenceTerms> {
        let tokens: Vec<u32> = records.iter().map(|r| r.token).collect();
        CoherenceTerms::measure(&token_logprobs(records), &tokens, text, by_length, ngram)
    }

    /// The coherence score under `w` (higher is more coherent).
    pub fn score(&self, w: &CoherenceWeights) -> f64 {
        -(w.nll * self.nll + w.repetition * self.repetition + w.cutoff * f64::from(u8::from(self.cut_off)))
    }
}

/// The fraction of the `n`-grams of `tokens` that occurred earlier in `tokens`.
pub fn repetition(tokens: &[u32], n: usize) -> f64 {
    let n = n.max(1);
    if tokens.len() <= n {
        return 0.0;
    }
    let grams: Vec<&[u32]> = tokens.windows(n).collect();
    let mut seen = std::collections::HashSet::with_capacity(grams.len());
    let repeated = grams.iter().filter(|g| !seen.insert(**g)).count();
    repeated as f64 / grams.len() as f64
}

/// Whether `text` ends a sentence: its last character other than white space, closing quotes and
/// brackets is sentence-final punctuation.
pub fn ends_sentence(text: &str) -> bool {
    let closing = |c: char| c.is_whitespace() || matches!(c, '"' | '\'' | ')' | ']' | '}' | '»' | '”' | '’' | '*' | '`');
    matches!(text.trim_end_matches(closing).chars().last(), Some('.' | '!' | '?' | '…' | '。' | '！' | '？'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terms_follow_the_formula() {
        let t = CoherenceTerms::measure(&[-1.0, -2.0, -3.0, -2.0], &[5, 6, 7, 8], "Hello there", Some(true), 2).unwrap();
        assert_eq!(t, CoherenceTerms { nll: 2.0, repetition: 0.0, cut_off: true });
        let w = CoherenceWeights::default();
        assert_eq!(t.score(&w), -(2.0 + 1.0));
        let done = CoherenceTerms::measure(&[-1.0], &[5], "Hello there.", Some(true), 3).unwrap();
        assert!(!done.cut_off);
        assert!(!CoherenceTerms::measure(&[-1.0], &[5], "Hello there", None, 3).unwrap().cut_off, "unknown finish");
        assert!(!CoherenceTerms::measure(&[-1.0], &[5], "Hello there", Some(false), 3).unwrap().cut_off);
        assert!(CoherenceTerms::measure(&[], &[], "", None, 3).is_err());
        assert!(CoherenceTerms::measure(&[f32::NEG_INFINITY], &[1], "x", None, 3).is_err());
    }

    #[test]
    fn repetition_counts_repeated_ngrams() {
        assert_eq!(repetition(&[1, 2, 3, 4], 2), 0.0);
        // Bigrams 12 23 31 12 23: the last two were seen.
        assert!((repetition(&[1, 2, 3, 1, 2, 3], 2) - 2.0 / 5.0).abs() < 1e-12);
        assert_eq!(repetition(&[1, 1], 2), 0.0);
        assert!((repetition(&[7; 5], 1) - 4.0 / 5.0).abs() < 1e-12);
    }

    #[test]
    fn sentence_ends_are_recognised() {
        for yes in ["Done.", "Really?!", "He said \"yes.\"", "(see above.)  ", "**Note.**", "終わり。"] {
            assert!(ends_sentence(yes), "{yes}");
        }
        for no in ["and then", "1, 2,", "", "the list:"] {
            assert!(!ends_sentence(no), "{no}");
        }
    }
}
