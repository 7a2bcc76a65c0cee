//! The coherence reward on the real model (slow tier): teacher-forced through SmolLM2-135M, 20
//! natural replies score above the same replies with their words shuffled, and above the same
//! replies with a phrase repeated, every one of the 40 pairs.

mod common;

use attune::generate::{Model, Prompt};
use attune::learn::{CoherenceTerms, CoherenceWeights};
use attune::tokenizer::Message;
use rand::seq::SliceRandom;
use rand::SeedableRng;

/// Requests and natural replies of the kind an assistant gives.
const PAIRS: [(&str, &str); 20] = [
    ("What is the capital of France?", "The capital of France is Paris. It is also the largest city in the country."),
    ("How do I boil an egg?", "Place the egg in a pot of cold water, bring it to a boil, then simmer for about nine minutes. Cool it in cold water before peeling."),
    ("Why is the sky blue?", "Sunlight is scattered by the molecules in the air, and blue light is scattered much more than red light. That scattered blue light is what we see in every direction."),
    ("Can you suggest a name for a cat?", "How about Luna? It is short, easy to call out, and suits a curious cat."),
    ("What should I pack for a beach day?", "Bring sunscreen, a towel, a hat, plenty of water and a light snack. A book or a ball is nice to have as well."),
    ("How many days are in a leap year?", "A leap year has 366 days. The extra day is added to February, which then has 29 days."),
    ("Give me a tip for sleeping better.", "Try to go to bed at the same time every night and keep your bedroom dark and cool. Avoid screens for an hour before sleep."),
    ("What is photosynthesis?", "Photosynthesis is the process plants use to turn sunlight, water and carbon dioxide into sugar and oxygen. It happens mostly in the leaves."),
    ("How do I say thank you in Spanish?", "You say gracias. To be more emphatic, you can say muchas gracias."),
    ("What is a good way to start learning to code?", "Pick one beginner-friendly language such as Python and build small projects you care about. Practising a little every day helps more than long sessions once a week."),
    ("My flight was cancelled. What can I do?", "I am sorry to hear that. Contact the airline to rebook on the next available flight, and ask whether you are entitled to a refund or a hotel voucher."),
    ("How far is the Moon from Earth?", "The Moon is about 384,000 kilometres from Earth on average. Light covers that distance in a little over one second."),
    ("What does a healthy breakfast look like?", "A healthy breakfast combines protein, fibre and some fruit, for example oatmeal with yogurt and berries. It keeps you full until lunch."),
    ("Write a short reminder to call my mother.", "Reminder: call your mother this evening and ask how her week went."),
    ("What is the boiling point of water?", "At sea level, water boils at 100 degrees Celsius, which is 212 degrees Fahrenheit. At higher altitudes it boils at a lower temperature."),
    ("How can I save money on groceries?", "Plan your meals for the week, make a shopping list and stick to it. Buying store brands and seasonal produce also lowers the bill."),
    ("Who wrote Romeo and Juliet?", "Romeo and Juliet was written by William Shakespeare. It is one of his most famous tragedies."),
    ("What is the best way to water houseplants?", "Water them when the top few centimetres of soil feel dry, and pour slowly until water drains from the bottom of the pot. Most plants suffer more from too much water than too little."),
    ("Tell me a fun fact about octopuses.", "An octopus has three hearts and blue blood. Two of the hearts pump blood through the gills, and the third pumps it through the rest of the body."),
    ("How do I reset my password?", "Open the sign-in page and choose the option for a forgotten password. Follow the link in the email you receive to set a new password."),
];

/// The reply with its words in a random order (never the original one).
fn shuffled(text: &str, seed: u64) -> String {
    let words: Vec<&str> = text.split_whitespace().collect();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut out = words.clone();
    while out == words {
        out.shuffle(&mut rng);
    }
    out.join(" ")
}

/// The reply's first half followed by its opening phrase three times: the loop a degenerate
/// reply falls into.
fn repeated(text: &str) -> String {
    let words: Vec<&str> = text.split_whitespace().collect();
    let phrase = words[..words.len().min(5)].join(" ");
    let mut out = words[..words.len() / 2].join(" ");
    for _ in 0..3 {
        out.push(' ');
        out.push_str(&phrase);
    }
    out
}

/// The coherence of `reply` to `request`, teacher-forced through the model (finished by its end
/// token, so never cut off).
fn coherence(model: &Model, request: &str, reply: &str) -> (f64, CoherenceTerms) {
    let prompt = model.prompt_tokens(&Prompt::Chat(vec![Message::user(request)])).unwrap();
    let records = model.teacher_force(&prompt, reply).unwrap();
    let terms = CoherenceTerms::from_records(&records, reply, Some(false), CoherenceWeights::default().ngram).unwrap();
    (terms.score(&CoherenceWeights::default()), terms)
}

#[test]
fn natural_replies_rank_above_shuffled_and_repeated_ones() {
    let Some(dir) = common::real_dir() else { return };
    let model = common::load(dir);
    let mut failures = Vec::new();
    let (mut margin_shuffled, mut margin_repeated) = (f64::INFINITY, f64::INFINITY);
    let mut nll_alone_wrong = 0;
    for (i, (request, reply)) in PAIRS.iter().enumerate() {
        let (natural, n) = coherence(&model, request, reply);
        let shuffled_text = shuffled(reply, i as u64);
        let (mixed, m) = coherence(&model, request, &shuffled_text);
        let repeated_text = repeated(reply);
        let (looped, l) = coherence(&model, request, &repeated_text);
        eprintln!(
            "{i:2}: natural {natural:+.3} (nll {:.3}, rep {:.2}) | shuffled {mixed:+.3} (nll {:.3}) | repeated {looped:+.3} (nll {:.3}, rep {:.2})",
            n.nll, n.repetition, m.nll, l.nll, l.repetition
        );
        nll_alone_wrong += usize::from(l.nll < n.nll);
        margin_shuffled = margin_shuffled.min(natural - mixed);
        margin_repeated = margin_repeated.min(natural - looped);
        if natural <= mixed {
            failures.push(format!("{reply:?} ({natural:.3}) <= shuffled {shuffled_text:?} ({mixed:.3})"));
        }
        if natural <= looped {
            failures.push(format!("{reply:?} ({natural:.3}) <= repeated {repeated_text:?} ({looped:.3})"));
        }
    }
    eprintln!("smallest margins: shuffled {margin_shuffled:.3}, repeated {margin_repeated:.3}; NLL alone misranks {nll_alone_wrong} repeated replies");
    assert!(failures.is_empty(), "{} of 40 pairs ranked wrong:\n{}", failures.len(), failures.join("\n"));
    // Why the repetition term carries weight: the model copies what it has just read, so a
    // looping reply can be *more* likely than the natural one.
    assert!(nll_alone_wrong > 0, "the NLL alone ranked every repeated reply below its natural one; the repetition weight's rationale no longer holds");
}
