//! The `general.*` keys gguf-py's `Metadata` (0.19, `metadata.py`) derives for a model
//! folder: name, organization, basename, finetune, version, size label from the model
//! card's YAML front matter, `config.json`'s `_name_or_path` and the folder name; license,
//! tags, languages, datasets and base models from the model card; sampling defaults from
//! `generation_config.json`; the size label from the parameter count when nothing names it.

use std::path::Path;

use quant_core::{Error, Result};
use regex::Regex;
use serde_json::{Map, Value};

use super::{HfModel, KvList};
use crate::arch::tokenizer::{read_json, string_array};
use crate::gguf::GgufValue;

/// Python's `str.title()`.
fn title(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut prev_cased = false;
    for c in s.chars() {
        let cased = c.is_lowercase() || c.is_uppercase();
        if cased && !prev_cased {
            out.extend(c.to_uppercase());
        } else if cased {
            out.extend(c.to_lowercase());
        } else {
            out.push(c);
        }
        prev_cased = cased;
    }
    out
}

/// Python's `str.islower()`.
fn is_lower(s: &str) -> bool {
    let mut any = false;
    for c in s.chars() {
        if c.is_uppercase() {
            return false;
        }
        any |= c.is_lowercase();
    }
    any
}

/// gguf-py's patterns (Python `re` syntax the `regex` crate reads the same way).
const VERSION_WORD: &str = r"^(v\d+(?:\.\d+)*|\d.*)$";
const VERSION_PART: &str = r"(?i)^(v|iter)?\d+([.]\d+)*$";
const TYPE_PART: &str = r"(?i)^(i?q\d(_\w)*|b?fp?(16|32))$";
const SIZE_PART: &str =
    r"(?i)^(([A]|\d+[x])?\d+([._]\d+)?[KMBT][\d]?|small|mini|medium|large|x?xl)$";
const FINETUNE_PART: &str = r"(?i)^(chat|instruct|vision|lora)$";
const HF_URL: &str = r"^https?://huggingface.co/([^/]+/[^/]+)$";

/// A compiled pattern of this file (all compile: see the tests); one that did not would
/// match nothing.
struct Pattern(Option<Regex>);

impl Pattern {
    fn new(re: &str) -> Self {
        Pattern(Regex::new(re).ok())
    }
    fn is_match(&self, s: &str) -> bool {
        self.0.as_ref().is_some_and(|r| r.is_match(s))
    }
    fn group1<'s>(&self, s: &'s str) -> Option<&'s str> {
        Some(self.0.as_ref()?.captures(s)?.get(1)?.as_str())
    }
}

/// `Metadata.id_to_title`.
pub fn id_to_title(s: &str) -> String {
    let version = Pattern::new(VERSION_WORD);
    s.trim()
        .replace('-', " ")
        .split_whitespace()
        .map(|w| {
            if is_lower(w) && !version.is_match(w) {
                title(w)
            } else {
                w.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The components of a model id (`org/name-size-finetune-version`), as
/// `Metadata.get_model_id_components` finds them.
#[derive(Debug, Default, PartialEq)]
pub struct IdComponents {
    /// The full name component.
    pub name: Option<String>,
    /// The organization component.
    pub org: Option<String>,
    /// Basename.
    pub basename: Option<String>,
    /// Finetune.
    pub finetune: Option<String>,
    /// Version.
    pub version: Option<String>,
    /// Size label.
    pub size_label: Option<String>,
}

/// `Metadata.get_model_id_components`.
pub fn model_id_components(id: &str, total_params: i64) -> IdComponents {
    if id.contains(' ') {
        return IdComponents {
            name: Some(id.to_string()),
            ..Default::default()
        };
    }
    let (mut org, full) = match id.split_once('/') {
        Some((o, n)) => (Some(o.to_string()), n.to_string()),
        None => (None, id.to_string()),
    };
    if org.as_deref().is_some_and(|o| o.starts_with('.')) {
        org = None;
    }
    let mut parts: Vec<String> = full
        .split('-')
        .filter(|p| !p.is_empty())
        .map(str::to_string)
        .collect();
    let mut types: Vec<Vec<&str>> = vec![Vec::new(); parts.len()];
    let version_re = Pattern::new(VERSION_PART);
    let type_re = Pattern::new(TYPE_PART);
    let size_re = Pattern::new(SIZE_PART);
    let finetune_re = Pattern::new(FINETUNE_PART);
    for i in 0..parts.len() {
        let part = parts[i].clone();
        if version_re.is_match(&part) {
            types[i].push("version");
        } else if type_re.is_match(&part) {
            types[i].push("type");
            parts[i] = part.to_uppercase();
        } else if i > 0 && size_re.is_match(&part) {
            let mut p: Vec<char> = part.replace('_', ".").chars().collect();
            let n = p.len();
            if p.last().is_some_and(|c| c.is_ascii_digit()) && n >= 2 {
                // bloom-7b1 → 7.1B
                let last = p[n - 1];
                let before = p[n - 2];
                p.truncate(n - 2);
                p.push('.');
                p.push(last);
                p.push(before);
            }
            let n = p.len();
            if n > 1 && p[n - 2].is_ascii_digit() && "kmbt".contains(p[n - 1]) {
                p[n - 1] = p[n - 1].to_ascii_uppercase();
            }
            let mut s: String = p.iter().collect();
            if total_params != 0 {
                let num: String = p[..p.len().saturating_sub(1)].iter().collect();
                let unit = p.last().copied().unwrap_or(' ');
                if let (Ok(x), Some(pow)) = (num.parse::<f64>(), " KMBT".find(unit)) {
                    let label = x * 1000f64.powi(pow as i32);
                    let t = total_params as f64;
                    let far = if total_params < 0 {
                        label < (total_params.unsigned_abs() / 8) as f64
                    } else {
                        (label - t).abs() > (7 * total_params / 8) as f64
                    };
                    if far {
                        types[i].push("finetune");
                        let last = s.pop().map(|c| c.to_ascii_lowercase());
                        s.extend(last);
                    }
                }
            }
            if types[i].is_empty() {
                types[i].push("size_label");
            }
            parts[i] = s;
        } else if i > 0 && finetune_re.is_match(&part) {
            if total_params < 0 && part.eq_ignore_ascii_case("lora") {
                types[i].push("type");
            } else {
                types[i].push("finetune");
            }
        }
    }
    let numeric_size = parts
        .iter()
        .zip(&types)
        .any(|(n, t)| t.contains(&"size_label") && n.chars().any(|c| c.is_ascii_digit()));
    if numeric_size {
        for (n, t) in parts.iter().zip(types.iter_mut()) {
            if t.contains(&"size_label") && n.chars().all(char::is_alphabetic) {
                t.retain(|x| *x != "size_label");
            }
        }
    }
    let mut at_start = true;
    for (part, t) in parts.iter().zip(types.iter_mut()) {
        let first_alpha = part.chars().next().is_some_and(char::is_alphabetic);
        if at_start && ((t.is_empty() && first_alpha) || t.contains(&"version")) {
            t.push("basename");
        } else {
            at_start = false;
            if t.is_empty() {
                t.push("finetune");
            }
        }
    }
    for t in types.iter_mut().rev() {
        if t.contains(&"basename") && t.len() > 1 {
            t.retain(|x| *x != "basename");
        } else {
            break;
        }
    }
    let join = |want: &str, exclude: Option<&str>, dedup: bool| {
        let mut out: Vec<&str> = Vec::new();
        for (n, t) in parts.iter().zip(&types) {
            if t.contains(&want)
                && !exclude.is_some_and(|e| t.contains(&e))
                && !(dedup && out.contains(&n.as_str()))
            {
                out.push(n);
            }
        }
        (!out.is_empty()).then(|| out.join("-"))
    };
    let mut basename = join("basename", None, false);
    let size_label = join("size_label", None, true);
    let finetune = join("finetune", None, false);
    let version = join("version", Some("basename"), false);
    if size_label.is_none() && finetune.is_none() && version.is_none() {
        basename = None;
    }
    IdComponents {
        name: Some(full),
        org,
        basename,
        finetune,
        version,
        size_label,
    }
}

/// `gguf.utility.model_weight_count_rounded_notation` (min_digits 2).
pub fn rounded_count(n: u64) -> String {
    let n = n as f64;
    let (scaled, suffix) = if n > 1e12 {
        (n * 1e-12, "T")
    } else if n > 1e9 {
        (n * 1e-9, "B")
    } else if n > 1e6 {
        (n * 1e-6, "M")
    } else {
        (n * 1e-3, "K")
    };
    let rounded = format!("{}", scaled.round_ties_even() as i64);
    let digits = rounded.trim_start_matches('0').len();
    let fix = 2usize.saturating_sub(digits);
    format!("{scaled:.fix$}{suffix}")
}

/// The YAML front matter of `README.md` (between the first two `---` lines), as JSON.
fn model_card(dir: &Path) -> Result<Map<String, Value>> {
    let path = dir.join("README.md");
    if !path.is_file() {
        return Ok(Map::new());
    }
    let content = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    let mut lines = content.lines();
    if lines.next() != Some("---") {
        return Ok(Map::new());
    }
    let mut yaml = String::new();
    for l in lines {
        if l == "---" {
            break;
        }
        yaml.push_str(l);
        yaml.push('\n');
    }
    let yaml = yaml.replace("- no\n", "- \"no\"\n").replace('\t', "  ");
    let v: Value = serde_norway::from_str(&yaml)
        .map_err(|e| Error::file(&path, "model card", format!("front matter: {e}")))?;
    Ok(match v {
        Value::Object(m) => m,
        _ => Map::new(),
    })
}

/// A list entry (base model or dataset) of the model card, as gguf-py expands it.
fn card_entry(id: &Value, total: i64) -> Map<String, Value> {
    let mut e = Map::new();
    match id {
        Value::String(s)
            if s.starts_with("http://") || s.starts_with("https://") || s.starts_with("ssh://") =>
        {
            e.insert("repo_url".into(), Value::from(s.as_str()));
            if s.contains("huggingface.co") {
                if let Some(m) = Pattern::new(HF_URL).group1(s) {
                    let c = model_id_components(m, total);
                    if let Some(n) = c.name {
                        e.insert("name".into(), Value::from(id_to_title(&n)));
                    }
                    if let Some(o) = c.org {
                        e.insert("organization".into(), Value::from(id_to_title(&o)));
                    }
                    if let Some(v) = c.version {
                        e.insert("version".into(), Value::from(v));
                    }
                }
            }
        }
        Value::String(s) => {
            let c = model_id_components(s, total);
            if let Some(n) = &c.name {
                e.insert("name".into(), Value::from(id_to_title(n)));
            }
            if let Some(o) = &c.org {
                e.insert("organization".into(), Value::from(id_to_title(o)));
            }
            if let Some(v) = c.version {
                e.insert("version".into(), Value::from(v));
            }
            if let (Some(o), Some(n)) = (c.org, c.name) {
                e.insert(
                    "repo_url".into(),
                    Value::from(format!("https://huggingface.co/{o}/{n}")),
                );
            }
        }
        Value::Object(m) => e = m.clone(),
        _ => {}
    }
    e
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Writes `general.name` … `general.languages` (and sampling keys) for `model`, whose
/// converted tensors hold `total` parameters.
pub fn set_general(model: &HfModel, total: u64, kv: &mut KvList) -> Result<()> {
    let card = model_card(&model.dir)?;
    let total_i = total as i64;
    // Field name → value, in gguf-py's dataclass order for the scalar fields.
    let mut f: Map<String, Value> = Map::new();
    let use_card = |f: &mut Map<String, Value>, key: &str, card_key: &str| {
        if let Some(v) = card.get(card_key) {
            if !f.contains_key(key) && !v.is_null() {
                f.insert(key.to_string(), v.clone());
            }
        }
    };
    for (k, ck) in [
        ("name", "name"),
        ("author", "author"),
        ("version", "version"),
        ("organization", "organization"),
        ("description", "description"),
        ("finetune", "finetune"),
        ("basename", "basename"),
        ("size_label", "size_label"),
        ("source_url", "url"),
        ("source_doi", "doi"),
        ("source_uuid", "uuid"),
        ("source_repo_url", "repo_url"),
        ("name", "model_name"),
        ("author", "model_author"),
        ("version", "model_version"),
        ("organization", "model_organization"),
        ("description", "model_description"),
        ("finetune", "model_finetune"),
        ("basename", "model_basename"),
        ("size_label", "model_size_label"),
        ("source_url", "model_url"),
        ("source_doi", "model_doi"),
        ("source_uuid", "model_uuid"),
        ("source_repo_url", "model_repo_url"),
        ("name", "model_name"),
        ("author", "model_creator"),
        ("basename", "model_type"),
    ] {
        use_card(&mut f, k, ck);
    }
    let list_of = |keys: &[&str]| -> Option<Vec<Value>> {
        let v = keys.iter().find_map(|k| card.get(*k))?;
        Some(match v {
            Value::String(_) => vec![v.clone()],
            Value::Array(a) => a.clone(),
            _ => Vec::new(),
        })
    };
    let base_models: Option<Vec<Map<String, Value>>> =
        list_of(&["base_model", "base_models", "base_model_sources"])
            .map(|l| l.iter().map(|m| card_entry(m, total_i)).collect());
    let datasets: Option<Vec<Map<String, Value>>> =
        list_of(&["datasets", "dataset", "dataset_sources"])
            .map(|l| l.iter().map(|m| card_entry(m, total_i)).collect());
    for k in ["license", "license_name", "license_link"] {
        use_card(&mut f, k, k);
    }
    let array = |keys: [&str; 2]| -> Option<Vec<String>> {
        let mut out: Option<Vec<String>> = None;
        for k in keys {
            match card.get(k) {
                Some(Value::String(s)) => out.get_or_insert_with(Vec::new).push(s.clone()),
                Some(Value::Array(a)) => {
                    out.get_or_insert_with(Vec::new).extend(a.iter().map(text))
                }
                Some(v) if !v.is_null() => {
                    out.get_or_insert_with(Vec::new);
                }
                _ => {}
            }
        }
        out
    };
    let tags = array(["tags", "pipeline_tag"]);
    let languages = array(["languages", "language"]);

    let from_id = |f: &mut Map<String, Value>, id: &str| {
        let c = model_id_components(id, total_i);
        let mut put = |k: &str, v: Option<String>| {
            if let Some(v) = v {
                if !f.contains_key(k) {
                    f.insert(k.to_string(), Value::from(v));
                }
            }
        };
        put("name", c.name.as_deref().map(id_to_title));
        put("organization", c.org.as_deref().map(id_to_title));
        put("basename", c.basename);
        put("finetune", c.finetune);
        put("version", c.version);
        put("size_label", c.size_label);
    };
    if let Some(id) = model
        .raw_config
        .get("_name_or_path")
        .and_then(Value::as_str)
    {
        if id.matches('/').count() <= 1 {
            from_id(&mut f, id);
        }
    }
    let folder = model
        .dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    from_id(&mut f, &folder);
    if !f.contains_key("name") {
        f.insert("name".into(), Value::from(folder));
    }
    if !f.contains_key("size_label") && total > 0 {
        f.insert("size_label".into(), Value::from(rounded_count(total)));
    }

    let generation = read_json(&model.dir.join("generation_config.json")).unwrap_or(None);
    if let Some(g) = generation.as_ref().and_then(Value::as_object) {
        let sampling: [(&str, &[&str], u32); 12] = [
            ("sequence", &["sequence"], 8),
            ("top_k", &["top_k"], 5),
            ("top_p", &["top_p"], 6),
            ("min_p", &["min_p"], 6),
            ("xtc_probability", &["xtc_probability"], 6),
            ("xtc_threshold", &["xtc_threshold"], 6),
            ("temp", &["temperature"], 6),
            ("penalty_last_n", &["penalty_last_n"], 5),
            (
                "penalty_repeat",
                &["penalty_repeat", "repetition_penalty"],
                6,
            ),
            ("mirostat", &["mirostat"], 5),
            ("mirostat_tau", &["mirostat_tau"], 6),
            ("mirostat_eta", &["mirostat_eta"], 6),
        ];
        for (name, keys, ty) in sampling {
            let Some(v) = keys.iter().find_map(|k| g.get(*k)).filter(|v| !v.is_null()) else {
                continue;
            };
            let value = match ty {
                8 => GgufValue::String(text(v)),
                5 => GgufValue::I32(v.as_i64().unwrap_or(0) as i32),
                _ => GgufValue::F32(v.as_f64().unwrap_or(0.0) as f32),
            };
            kv.set(format!("general.sampling.{name}"), value);
        }
    }

    let s = |k: &str| f.get(k).map(text);
    for (field, key) in [
        ("name", "name"),
        ("author", "author"),
        ("version", "version"),
        ("organization", "organization"),
        ("finetune", "finetune"),
        ("basename", "basename"),
        ("description", "description"),
        ("quantized_by", "quantized_by"),
        ("size_label", "size_label"),
    ] {
        if let Some(v) = s(field) {
            kv.set(format!("general.{key}"), GgufValue::String(v));
        }
    }
    match f.get("license") {
        Some(Value::Array(l)) => kv.set(
            "general.license",
            GgufValue::String(l.iter().map(text).collect::<Vec<_>>().join(",")),
        ),
        Some(v) => kv.set("general.license", GgufValue::String(text(v))),
        None => {}
    }
    for (field, key) in [
        ("license_name", "license.name"),
        ("license_link", "license.link"),
        ("url", "url"),
        ("doi", "doi"),
        ("uuid", "uuid"),
        ("repo_url", "repo_url"),
        ("source_url", "source.url"),
        ("source_doi", "source.doi"),
        ("source_uuid", "source.uuid"),
        ("source_repo_url", "source.repo_url"),
    ] {
        if let Some(v) = s(field) {
            kv.set(format!("general.{key}"), GgufValue::String(v));
        }
    }
    for (list, prefix) in [(&base_models, "base_model"), (&datasets, "dataset")] {
        let Some(list) = list else { continue };
        kv.set(
            format!("general.{prefix}.count"),
            GgufValue::U32(list.len() as u32),
        );
        for (i, e) in list.iter().enumerate() {
            for field in [
                "name",
                "author",
                "version",
                "organization",
                "description",
                "url",
                "doi",
                "uuid",
                "repo_url",
            ] {
                if let Some(v) = e.get(field) {
                    kv.set(
                        format!("general.{prefix}.{i}.{field}"),
                        GgufValue::String(text(v)),
                    );
                }
            }
        }
    }
    if let Some(t) = tags {
        kv.set("general.tags", string_array(t));
    }
    if let Some(l) = languages {
        kv.set("general.languages", string_array(l));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_as_gguf_py() {
        assert_eq!(id_to_title("llama_a"), "Llama_A");
        assert_eq!(
            id_to_title("MiniLM-L6-H384-uncased"),
            "MiniLM L6 H384 Uncased"
        );
        let c = model_id_components("nreimers/MiniLM-L6-H384-uncased", 22_000_000);
        assert_eq!(c.org.as_deref(), Some("nreimers"));
        assert_eq!(c.name.as_deref(), Some("MiniLM-L6-H384-uncased"));
        let c = model_id_components("mistralai/Mistral-7B-Instruct-v0.3", 7_000_000_000);
        assert_eq!(c.basename.as_deref(), Some("Mistral"));
        assert_eq!(c.size_label.as_deref(), Some("7B"));
        assert_eq!(c.finetune.as_deref(), Some("Instruct"));
        assert_eq!(c.version.as_deref(), Some("v0.3"));
    }

    #[test]
    fn patterns_compile() {
        for p in [
            VERSION_WORD,
            VERSION_PART,
            TYPE_PART,
            SIZE_PART,
            FINETUNE_PART,
            HF_URL,
        ] {
            assert!(Regex::new(p).is_ok(), "{p}");
        }
    }

    #[test]
    fn size_labels() {
        assert_eq!(rounded_count(1_837_312), "1.8M");
        assert_eq!(rounded_count(22_565_376), "23M");
        assert_eq!(rounded_count(7_241_732_096), "7.2B");
    }
}
