//! VADER's word lists and constants (Hutto and Gilbert 2014, as in vaderSentiment 3.3.2): the
//! negations, the boosters and dampeners with their empirically derived increments, and the
//! special-case idioms whose valence replaces their words'.

/// A booster's increment of a word's intensity ("very good").
pub const B_INCR: f64 = 0.293;
/// A dampener's decrement ("kind of good").
pub const B_DECR: f64 = -0.293;
/// The increment of a word in ALL CAPS among words that are not.
pub const C_INCR: f64 = 0.733;
/// A negated word's valence is multiplied by this.
pub const N_SCALAR: f64 = -0.74;
/// Each exclamation mark (up to four) adds this to the sum's magnitude.
pub const EXCLAMATION: f64 = 0.292;
/// Each question mark (two or three) adds this; four or more add [`QUESTION_MAX`].
pub const QUESTION: f64 = 0.18;
/// The question marks' cap.
pub const QUESTION_MAX: f64 = 0.96;
/// The compound score is `s / sqrt(s^2 + ALPHA)`.
pub const ALPHA: f64 = 15.0;

/// Words that negate the lexicon word up to three places after them.
const NEGATE: &[&str] = &[
    "aint", "arent", "cannot", "cant", "couldnt", "darent", "didnt", "doesnt", "ain't", "aren't", "can't", "couldn't", "daren't",
    "didn't", "doesn't", "dont", "hadnt", "hasnt", "havent", "isnt", "mightnt", "mustnt", "neither", "don't", "hadn't", "hasn't",
    "haven't", "isn't", "mightn't", "mustn't", "neednt", "needn't", "never", "none", "nope", "nor", "not", "nothing", "nowhere",
    "oughtnt", "shant", "shouldnt", "uhuh", "wasnt", "werent", "oughtn't", "shan't", "shouldn't", "uh-uh", "wasn't", "weren't",
    "without", "wont", "wouldnt", "won't", "wouldn't", "rarely", "seldom", "despite",
];

/// Whether a lower-cased word negates: one of the negations, or any word with "n't".
pub fn negates(word: &str) -> bool {
    NEGATE.contains(&word) || word.contains("n't")
}

/// A booster's (positive) or dampener's (negative) increment, for a lower-cased word or phrase.
pub fn booster(word: &str) -> Option<f64> {
    const UP: &[&str] = &[
        "absolutely", "amazingly", "awfully", "completely", "considerable", "considerably", "decidedly", "deeply", "effing", "enormous",
        "enormously", "entirely", "especially", "exceptional", "exceptionally", "extreme", "extremely", "fabulously", "flipping",
        "flippin", "frackin", "fracking", "fricking", "frickin", "frigging", "friggin", "fully", "fuckin", "fucking", "fuggin",
        "fugging", "greatly", "hella", "highly", "hugely", "incredible", "incredibly", "intensely", "major", "majorly", "more", "most",
        "particularly", "purely", "quite", "really", "remarkably", "so", "substantially", "thoroughly", "total", "totally",
        "tremendous", "tremendously", "uber", "unbelievably", "unusually", "utter", "utterly", "very",
    ];
    const DOWN: &[&str] = &[
        "almost", "barely", "hardly", "just enough", "kind of", "kinda", "kindof", "kind-of", "less", "little", "marginal",
        "marginally", "occasional", "occasionally", "partly", "scarce", "scarcely", "slight", "slightly", "somewhat", "sort of",
        "sorta", "sortof", "sort-of",
    ];
    if UP.contains(&word) {
        Some(B_INCR)
    } else if DOWN.contains(&word) {
        Some(B_DECR)
    } else {
        None
    }
}

/// Phrases whose valence replaces that of the lexicon word they contain ("the shit", "bad ass").
pub fn special_case(phrase: &str) -> Option<f64> {
    Some(match phrase {
        "the shit" => 3.0,
        "the bomb" => 3.0,
        "bad ass" => 1.5,
        "badass" => 1.5,
        "bus stop" => 0.0,
        "yeah right" => -2.0,
        "kiss of death" => -1.5,
        "to die for" => 3.0,
        "beating heart" => 3.5,
        _ => return None,
    })
}
