//! The user documentation states what the code does: every learner setting in `docs/learning.md`'s
//! defaults tables has the default `LearnerConfig::default()` has (and every setting is there), so
//! does every reward source setting in its table (`RewardsConfig`), and
//! `docs/c-api.md`'s status table lists exactly the status codes of `include/attune.h`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use attune::learn::LearnerConfig;
use serde_json::Value;

fn read(rel: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// The first two cells of every table row whose first cell is one code span: `| `name` | value |`.
fn table_rows(doc: &str) -> Vec<(String, String)> {
    doc.lines()
        .filter_map(|line| {
            let cells: Vec<&str> = line.trim().strip_prefix('|')?.split('|').map(str::trim).collect();
            let name = cells.first()?.strip_prefix('`')?.strip_suffix('`')?;
            if name.is_empty() || name.contains('`') {
                return None;
            }
            Some((name.to_string(), cells.get(1)?.trim_matches('`').to_string()))
        })
        .collect()
}

/// `value`'s leaves as `path -> value`, nested objects joined with dots (`adapter.rank`).
fn flatten(prefix: &str, value: &Value, out: &mut BTreeMap<String, Value>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                let key = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                flatten(&key, v, out);
            }
        }
        leaf => {
            out.insert(prefix.to_string(), leaf.clone());
        }
    }
}

fn same(doc: &Value, code: &Value) -> bool {
    match (doc.as_f64(), code.as_f64()) {
        // f32 settings widen to f64 inexactly (0.7f32 is 0.699999988...), hence a relative bound.
        (Some(a), Some(b)) => (a - b).abs() <= 1e-6 * a.abs().max(b.abs()),
        _ => doc == code,
    }
}

#[test]
fn learning_doc_lists_every_learner_default() {
    let doc = read("docs/learning.md");
    let section = doc.split("\n## Defaults\n").nth(1).expect("docs/learning.md has a \"## Defaults\" section");
    let section = section.split("\n## ").next().unwrap_or(section);
    let mut documented = BTreeMap::new();
    for (name, text) in table_rows(section) {
        let value = serde_json::from_str::<Value>(&text).unwrap_or_else(|_| panic!("docs/learning.md: `{name}`'s default `{text}` is not a JSON value"));
        assert!(documented.insert(name.clone(), value).is_none(), "docs/learning.md lists `{name}` twice");
    }
    let mut code = BTreeMap::new();
    flatten("", &serde_json::to_value(LearnerConfig::default()).expect("the defaults serialise"), &mut code);
    let mut problems = Vec::new();
    for (name, value) in &code {
        match documented.get(name) {
            None => problems.push(format!("`{name}` (default {value}) is not in the defaults tables")),
            Some(d) if !same(d, value) => problems.push(format!("`{name}`: the doc says {d}, the code {value}")),
            Some(_) => {}
        }
    }
    for name in documented.keys().filter(|n| !code.contains_key(*n)) {
        problems.push(format!("`{name}` is documented but is no setting of LearnerConfig"));
    }
    assert!(problems.is_empty(), "docs/learning.md's defaults differ from LearnerConfig::default():\n{}", problems.join("\n"));
}

#[test]
fn c_api_doc_lists_every_status_code() {
    let header: BTreeMap<String, String> = read("include/attune.h")
        .lines()
        .filter_map(|l| {
            let mut words = l.strip_prefix("#define ATTUNE_STATUS_")?.split_whitespace();
            Some((format!("ATTUNE_STATUS_{}", words.next()?), words.next()?.to_string()))
        })
        .collect();
    assert!(header.len() > 20, "include/attune.h defines the status codes");
    let documented: BTreeMap<String, String> = table_rows(&read("docs/c-api.md")).into_iter().filter(|(n, _)| n.starts_with("ATTUNE_STATUS_")).collect();
    assert_eq!(documented, header, "docs/c-api.md's status table must list exactly the header's status codes and values");
}

#[test]
fn learning_doc_lists_every_reward_source_default() {
    use attune::learn::RewardsConfig;
    let doc = read("docs/learning.md");
    let section = doc.split("\n## Rewards the runtime computes\n").nth(1).expect("docs/learning.md has a \"## Rewards the runtime computes\" section");
    let section = section.split("\n## ").next().unwrap_or(section);
    let documented: BTreeMap<String, Value> = table_rows(section)
        .into_iter()
        .filter(|(name, _)| name.starts_with("rewards."))
        .map(|(name, text)| {
            let v = serde_json::from_str::<Value>(&text).unwrap_or_else(|_| panic!("docs/learning.md: `{name}`'s default `{text}` is not a JSON value"));
            (name, v)
        })
        .collect();
    // Every source on with the defaults the configuration JSON gets (the task's checks have none:
    // they are required).
    let all: RewardsConfig = serde_json::from_str(r#"{"coherence": {}, "sentiment": {}, "task": {"checks": ["valid_json"]}, "callback": {}}"#).unwrap();
    let mut code = BTreeMap::new();
    flatten("rewards", &serde_json::to_value(all).expect("the defaults serialise"), &mut code);
    code.remove("rewards.task.checks");
    let mut problems = Vec::new();
    for (name, value) in &code {
        match documented.get(name) {
            None => problems.push(format!("`{name}` (default {value}) is not in the reward sources table")),
            Some(d) if !same(d, value) => problems.push(format!("`{name}`: the doc says {d}, the code {value}")),
            Some(_) => {}
        }
    }
    for name in documented.keys().filter(|n| !code.contains_key(*n)) {
        problems.push(format!("`{name}` is documented but is no setting of RewardsConfig"));
    }
    assert!(problems.is_empty(), "docs/learning.md's reward source defaults differ from the code:\n{}", problems.join("\n"));
}
