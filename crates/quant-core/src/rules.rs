//! Ordered per-tensor rules: `(regex, action)`, searched anywhere in the tensor name
//! (like Python's `re.search`); the first match wins.
//!
//! Sources: pairs in code, a JSON / TOML / YAML file (a map in file order, a list of
//! `{pattern, action}` objects or `[pattern, action]` pairs, or an envelope with a `rules`
//! key beside `method` and `params`), or a bare dtype name meaning `".*" → dtype`.

use std::path::Path;

use regex::Regex;
use serde::Deserialize;

use crate::catalog;
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::method::Params;
use crate::registry::Registry;

/// What a rule does with the tensors it matches.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RuleAction {
    /// Keep unquantized, cast to this dtype (floating tensors only).
    Dtype(DType),
    /// Quantize with this method instead of the default.
    Method(String),
    /// Keep exactly as stored.
    Skip,
}

impl RuleAction {
    /// Parses `float16`, `skip` or a method name (known to the registry or the catalog).
    pub fn parse(text: &str) -> std::result::Result<RuleAction, String> {
        let t = text.trim();
        if t.eq_ignore_ascii_case("skip") {
            return Ok(RuleAction::Skip);
        }
        if let Ok(d) = DType::parse(t) {
            return if matches!(d, DType::F32 | DType::F16 | DType::BF16) {
                Ok(RuleAction::Dtype(d))
            } else {
                Err(format!(
                    "dtype '{t}' cannot hold unquantized weights (use float32, float16 or bfloat16)"
                ))
            };
        }
        let registered = Registry::global().is_ok_and(|r| r.get(t).is_some());
        if registered || catalog::lookup(t).is_some() {
            return Ok(RuleAction::Method(t.to_string()));
        }
        Err(format!(
            "'{t}' is not a dtype (float32, float16, bfloat16), 'skip' or a known method"
        ))
    }

    /// The action as written in a rule file.
    pub fn as_text(&self) -> String {
        match self {
            RuleAction::Dtype(d) => d.torch_name().to_string(),
            RuleAction::Method(m) => m.clone(),
            RuleAction::Skip => "skip".into(),
        }
    }
}

/// One compiled rule.
#[derive(Clone, Debug)]
pub struct Rule {
    /// The pattern as written.
    pub pattern: String,
    /// The compiled pattern.
    pub regex: Regex,
    /// The action.
    pub action: RuleAction,
}

/// An ordered list of rules.
#[derive(Clone, Debug, Default)]
pub struct Rules {
    rules: Vec<Rule>,
    source: String,
}

/// A config file: rules alone, or an envelope with the method and its parameters.
#[derive(Clone, Debug, Default)]
pub struct ConfigFile {
    /// The default method, if the file names one.
    pub method: Option<String>,
    /// Method parameters.
    pub params: Params,
    /// The rules.
    pub rules: Rules,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Envelope {
    #[serde(default)]
    method: Option<String>,
    #[serde(default)]
    params: Params,
    #[serde(default)]
    rules: serde_json::Value,
}

impl Rules {
    /// No rules.
    pub fn new() -> Self {
        Rules::default()
    }

    /// Compiles `(pattern, action)` pairs given in code.
    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Result<Self> {
        let mut out = Rules {
            rules: Vec::new(),
            source: "<inline>".into(),
        };
        for (p, a) in pairs {
            out.push(p, a)?;
        }
        Ok(out)
    }

    /// `".*" → dtype`, for a bare dtype name.
    pub fn all_to(dtype: DType) -> Result<Self> {
        Rules::from_pairs([(".*", dtype.torch_name())])
    }

    fn push(&mut self, pattern: &str, action: &str) -> Result<()> {
        let entry = format!("{pattern} = {action}");
        let regex = Regex::new(pattern).map_err(|e| Error::Config {
            source_name: self.source.clone(),
            entry: entry.clone(),
            reason: format!("bad regex: {e}"),
        })?;
        let action = RuleAction::parse(action).map_err(|reason| Error::Config {
            source_name: self.source.clone(),
            entry,
            reason,
        })?;
        self.rules.push(Rule {
            pattern: pattern.to_string(),
            regex,
            action,
        });
        Ok(())
    }

    /// Reads `--rules` text: a bare dtype name, or a path to a JSON / TOML / YAML file.
    pub fn from_arg(arg: &str) -> Result<Self> {
        if let Ok(d) = DType::parse(arg) {
            if matches!(d, DType::F32 | DType::F16 | DType::BF16) && !Path::new(arg).exists() {
                return Rules::all_to(d);
            }
        }
        Ok(ConfigFile::load(arg)?.rules)
    }

    /// The rules, in order.
    pub fn iter(&self) -> impl Iterator<Item = &Rule> {
        self.rules.iter()
    }

    /// True when there are no rules.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The first rule whose pattern is found in `name`, with its index.
    pub fn matching(&self, name: &str) -> Option<(usize, &Rule)> {
        self.rules
            .iter()
            .enumerate()
            .find(|(_, r)| r.regex.is_match(name))
    }

    /// The rules as `[[pattern, action], ...]` JSON, for metadata.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::Value::Array(
            self.rules
                .iter()
                .map(|r| serde_json::json!([r.pattern, r.action.as_text()]))
                .collect(),
        )
    }
}

impl ConfigFile {
    /// Loads a JSON (`.json`), TOML (`.toml`) or YAML (`.yaml`/`.yml`) config or rules file.
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let name = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let ext = path
            .extension()
            .map(|e| e.to_string_lossy().to_ascii_lowercase())
            .unwrap_or_default();
        let cfg = |reason: String| Error::Config {
            source_name: name.clone(),
            entry: "(file)".into(),
            reason,
        };
        let value: serde_json::Value = match ext.as_str() {
            "json" => serde_json::from_str(&text).map_err(|e| cfg(format!("bad JSON: {e}")))?,
            "toml" => toml::from_str(&text).map_err(|e| cfg(format!("bad TOML: {e}")))?,
            "yaml" | "yml" => {
                serde_norway::from_str(&text).map_err(|e| cfg(format!("bad YAML: {e}")))?
            }
            other => {
                return Err(cfg(format!(
                    "unknown config extension '{other}' (use .json, .toml, .yaml or .yml)"
                )))
            }
        };
        Self::from_value(&name, value)
    }

    /// Builds a config from an already parsed value; `source` names it in errors.
    pub fn from_value(source: &str, value: serde_json::Value) -> Result<Self> {
        let is_envelope = value.as_object().is_some_and(|o| {
            o.contains_key("rules") || o.contains_key("method") || o.contains_key("params")
        });
        let (method, params, rules_value) = if is_envelope {
            let env: Envelope = serde_json::from_value(value).map_err(|e| Error::Config {
                source_name: source.to_string(),
                entry: "(envelope)".into(),
                reason: e.to_string(),
            })?;
            (env.method, env.params, env.rules)
        } else {
            (None, Params::new(), value)
        };
        let mut rules = Rules {
            rules: Vec::new(),
            source: source.to_string(),
        };
        let bad = |entry: String, reason: &str| Error::Config {
            source_name: source.to_string(),
            entry,
            reason: reason.to_string(),
        };
        match rules_value {
            serde_json::Value::Null => {}
            serde_json::Value::Object(map) => {
                for (k, v) in map {
                    let a = v
                        .as_str()
                        .ok_or_else(|| bad(format!("{k} = {v}"), "the action must be a string"))?;
                    rules.push(&k, a)?;
                }
            }
            serde_json::Value::Array(items) => {
                for item in items {
                    let (p, a) = match &item {
                        serde_json::Value::Array(pair) if pair.len() == 2 => {
                            (pair[0].as_str(), pair[1].as_str())
                        }
                        serde_json::Value::Object(o) => (
                            o.get("pattern").and_then(|v| v.as_str()),
                            o.get("action").and_then(|v| v.as_str()),
                        ),
                        _ => (None, None),
                    };
                    match (p, a) {
                        (Some(p), Some(a)) => rules.push(p, a)?,
                        _ => {
                            return Err(bad(
                                item.to_string(),
                                "expected [pattern, action] or {pattern, action}",
                            ))
                        }
                    }
                }
            }
            serde_json::Value::String(s) => {
                // A bare dtype for everything.
                rules.push(".*", &s)?;
            }
            other => return Err(bad(other.to_string(), "rules must be a map or a list")),
        }
        Ok(ConfigFile {
            method,
            params,
            rules,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_match_wins_and_search_is_unanchored() {
        let r = Rules::from_pairs([
            ("norm", "float32"),
            ("layers\\.0\\.", "skip"),
            (".*", "bfloat16"),
        ])
        .unwrap();
        assert_eq!(
            r.matching("model.layers.0.input_layernorm.weight")
                .unwrap()
                .0,
            0
        );
        assert_eq!(r.matching("model.layers.0.mlp.weight").unwrap().0, 1);
        assert_eq!(
            r.matching("lm_head.weight").unwrap().1.action,
            RuleAction::Dtype(DType::BF16)
        );
    }

    #[test]
    fn bad_entries_name_themselves() {
        let e = Rules::from_pairs([("(", "float32")]).unwrap_err();
        assert!(matches!(e, Error::Config { ref entry, .. } if entry.contains('(')));
        let e = Rules::from_pairs([("x", "float13")]).unwrap_err();
        assert!(matches!(e, Error::Config { .. }));
        let e = Rules::from_pairs([("x", "int8")]).unwrap_err();
        assert!(matches!(e, Error::Config { .. }));
    }

    #[test]
    fn json_keeps_file_order() {
        let v: serde_json::Value =
            serde_json::from_str(r#"{"z": "float32", "a": "skip"}"#).unwrap();
        let c = ConfigFile::from_value("t.json", v).unwrap();
        let pats: Vec<_> = c.rules.iter().map(|r| r.pattern.clone()).collect();
        assert_eq!(pats, ["z", "a"]);
    }

    #[test]
    fn envelope_rejects_unknown_keys() {
        let v: serde_json::Value = serde_json::from_str(r#"{"rules": {}, "methd": "x"}"#).unwrap();
        assert!(matches!(
            ConfigFile::from_value("t.json", v),
            Err(Error::Config { .. })
        ));
    }
}
