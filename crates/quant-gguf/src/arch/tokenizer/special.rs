//! gguf-py's `SpecialVocab` (0.19, `vocab.py`): special token ids from `tokenizer.json`'s
//! added tokens named by `tokenizer_config.json` (then `config.json`'s `*_token_id`),
//! add-BOS/EOS/SEP flags from the post-processor and `tokenizer_config.json`, the chat
//! template and the normalizer flags. Merges are not read (no BPE vocabulary here).

use std::path::Path;

use quant_core::{Error, Result};
use serde_json::{Map, Value};

use super::read_json;
use crate::gguf::GgufValue;
use crate::gguf::KvList;

/// The special token types gguf-py looks for by default.
pub const DEFAULT_TYPES: &[&str] = &["bos", "eos", "unk", "sep", "pad", "cls", "mask"];

/// Special tokens of a model folder, in the order they were found.
#[derive(Debug, Default)]
pub struct SpecialVocab {
    n_vocab: Option<usize>,
    types: Vec<String>,
    /// (type, id), first found first.
    pub ids: Vec<(String, u32)>,
    /// (type, add?), first set first (later updates keep the position).
    pub add: Vec<(String, bool)>,
    /// `chat_template` of `tokenizer_config.json` (or `chat_template.jinja` / `.json`).
    pub chat_template: Option<Value>,
    /// The normalizer lowercases.
    pub lowercase: Option<bool>,
    /// The normalizer strips accents.
    pub strip_accents: Option<bool>,
}

fn set_flag(list: &mut Vec<(String, bool)>, typ: &str, value: bool) {
    match list.iter_mut().find(|(t, _)| t == typ) {
        Some((_, v)) => *v = value,
        None => list.push((typ.to_string(), value)),
    }
}

fn flag(list: &[(String, bool)], typ: &str) -> Option<bool> {
    list.iter().find(|(t, _)| t == typ).map(|(_, v)| *v)
}

/// The `id` of a `SpecialToken` entry of a TemplateProcessing template item.
fn special_id(item: Option<&Value>) -> Option<String> {
    item?
        .get("SpecialToken")?
        .get("id")?
        .as_str()
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

fn sequence_id(item: Option<&Value>) -> Option<String> {
    item?
        .get("Sequence")?
        .get("id")?
        .as_str()
        .map(str::to_string)
}

/// A string field of the (possibly absent) tokenizer config; empty strings count as unset,
/// as Python's truthiness does.
fn cfg_str(cfg: &Option<Map<String, Value>>, key: &str) -> Option<String> {
    cfg.as_ref()?
        .get(key)?
        .as_str()
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

fn cfg_set(cfg: &mut Option<Map<String, Value>>, key: &str, value: &str) {
    if let Some(c) = cfg.as_mut().filter(|c| !c.is_empty()) {
        c.insert(key.to_string(), Value::String(value.to_string()));
    }
}

fn truthy(cfg: &Option<Map<String, Value>>) -> bool {
    cfg.as_ref().is_some_and(|c| !c.is_empty())
}

impl SpecialVocab {
    /// Reads the special tokens of `dir` for `types`; ids at or above `n_vocab` are skipped.
    pub fn load(dir: &Path, n_vocab: Option<usize>, types: &[&str]) -> Result<Self> {
        let mut v = SpecialVocab {
            n_vocab,
            types: types.iter().map(|t| t.to_string()).collect(),
            ..Default::default()
        };
        v.load_tokenizer_json(dir)?;
        v.load_config_json(dir)?;
        Ok(v)
    }

    fn set_special(&mut self, path: &Path, typ: &str, id: Option<&Value>) -> Result<()> {
        let Some(id) = id.and_then(|i| i.as_i64()) else {
            return Ok(());
        };
        let id = u32::try_from(id).map_err(|_| {
            Error::file(
                path,
                "json",
                format!("invalid value for special token type {typ}: {id}"),
            )
        })?;
        if self.n_vocab.is_none_or(|n| (id as usize) < n) && !self.ids.iter().any(|(t, _)| t == typ)
        {
            self.ids.push((typ.to_string(), id));
        }
        Ok(())
    }

    fn parse_normalizer(&mut self, n: &Value) {
        match n.get("type").and_then(|t| t.as_str()) {
            Some("Lowercase") => self.lowercase = Some(true),
            Some("StripAccents") => self.strip_accents = Some(true),
            Some("BertNormalizer") => {
                if let Some(v) = n.get("lowercase") {
                    self.lowercase = v.as_bool();
                }
                if let Some(v) = n.get("strip_accents") {
                    self.strip_accents = v.as_bool();
                }
            }
            Some("Sequence") => {
                for m in n
                    .get("normalizers")
                    .and_then(|m| m.as_array())
                    .into_iter()
                    .flatten()
                {
                    self.parse_normalizer(m);
                }
            }
            _ => {}
        }
    }

    /// `_try_load_from_tokenizer_json`, step for step.
    fn load_tokenizer_json(&mut self, dir: &Path) -> Result<()> {
        let tokenizer = read_json(&dir.join("tokenizer.json"))?;
        let empty = Vec::new();
        let mut added_tokens = &empty;
        if let Some(t) = &tokenizer {
            if let Some(n) = t.get("normalizer").filter(|n| !n.is_null()) {
                self.parse_normalizer(n);
            }
            if let Some(a) = t.get("added_tokens").and_then(|a| a.as_array()) {
                added_tokens = a;
            }
        }
        let config_path = dir.join("tokenizer_config.json");
        let mut cfg: Option<Map<String, Value>> = match read_json(&config_path)? {
            None => None,
            Some(Value::Object(m)) => Some(m),
            Some(_) => return Err(Error::file(&config_path, "json", "not an object")),
        };
        if let Some(t) = &tokenizer {
            self.post_processor(t, &mut cfg);
        }
        if !truthy(&cfg) {
            return Ok(());
        }
        let jinja = dir.join("chat_template.jinja");
        let json = dir.join("chat_template.json");
        let alt = if jinja.is_file() {
            let text = std::fs::read_to_string(&jinja).map_err(|e| Error::io(&jinja, e))?;
            let mut extra: Vec<_> = std::fs::read_dir(dir.join("additional_chat_templates"))
                .into_iter()
                .flatten()
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "jinja"))
                .collect();
            if extra.is_empty() {
                Some(Value::String(text))
            } else {
                extra.sort();
                let mut list = vec![serde_json::json!({"name": "default", "template": text})];
                for p in extra {
                    let t = std::fs::read_to_string(&p).map_err(|e| Error::io(&p, e))?;
                    let stem = p
                        .file_stem()
                        .map(|s| s.to_string_lossy().into_owned())
                        .unwrap_or_default();
                    list.push(serde_json::json!({"name": stem, "template": t}));
                }
                Some(Value::Array(list))
            }
        } else {
            read_json(&json)?.and_then(|v| v.get("chat_template").cloned())
        };
        let Some(c) = cfg.as_ref() else {
            return Ok(());
        };
        let template = c.get("chat_template").cloned().or(alt);
        if let Some(t) = template.filter(|t| t.is_string() || t.is_array()) {
            self.chat_template = Some(t);
        }
        let types = self.types.clone();
        for typ in &types {
            if let Some(add) = c.get(&format!("add_{typ}_token")).and_then(|v| v.as_bool()) {
                if flag(&self.add, typ).is_none() {
                    set_flag(&mut self.add, typ, add);
                }
            }
            let content = match c.get(&format!("{typ}_token")) {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Object(o)) => match o.get("content").and_then(|c| c.as_str()) {
                    Some(s) => s.to_string(),
                    None => continue,
                },
                _ => continue,
            };
            let id = added_tokens
                .iter()
                .find(|a| a.get("content").and_then(|c| c.as_str()) == Some(content.as_str()))
                .and_then(|a| a.get("id"))
                .cloned();
            self.set_special(&config_path, typ, id.as_ref())?;
        }
        Ok(())
    }

    /// The post-processor part of `_try_load_from_tokenizer_json` (it may edit the
    /// tokenizer config's special token names, as the reference does).
    fn post_processor(&mut self, tokenizer: &Value, cfg: &mut Option<Map<String, Value>>) {
        let mut special_bos = cfg_str(cfg, "bos_token");
        let mut special_cls = cfg_str(cfg, "cls_token");
        let mut special_eos = cfg_str(cfg, "eos_token");
        let mut special_sep = cfg_str(cfg, "sep_token");
        if special_bos.is_none() && truthy(cfg) {
            if let Some(cls) = special_cls.clone() {
                cfg_set(cfg, "bos_token", &cls);
                special_bos = Some(cls);
            }
        }
        if special_eos.is_none() && truthy(cfg) {
            if let Some(sep) = special_sep.clone() {
                cfg_set(cfg, "eos_token", &sep);
                special_eos = Some(sep);
            }
        }
        let Some(pp) = tokenizer.get("post_processor").filter(|p| !p.is_null()) else {
            return;
        };
        let processors: Vec<&Value> = match pp.get("processors").and_then(|p| p.as_array()) {
            Some(list) => list.iter().collect(),
            None => vec![pp],
        };
        for p in processors {
            match p.get("type").and_then(|t| t.as_str()) {
                Some("ByteLevel") => {
                    if flag(&self.add, "bos").is_none() {
                        set_flag(&mut self.add, "bos", false);
                    }
                    if flag(&self.add, "eos").is_none() {
                        set_flag(&mut self.add, "eos", false);
                    }
                }
                Some("RobertaProcessing") => {
                    set_flag(&mut self.add, "bos", true);
                    set_flag(&mut self.add, "eos", true);
                    set_flag(&mut self.add, "sep", true);
                    // The processor's (name, id) pair's name, else the fallback.
                    let named = |key: &str, fallback: &Option<String>| {
                        p.get(key)
                            .and_then(|c| c.get(0))
                            .and_then(|c| c.as_str())
                            .map(str::to_string)
                            .or(fallback.clone())
                    };
                    if special_cls.is_none() && truthy(cfg) {
                        special_cls = named("cls", &special_bos);
                        if let Some(cls) = &special_cls {
                            cfg_set(cfg, "cls_token", cls);
                        }
                    }
                    if special_sep.is_none() && truthy(cfg) {
                        special_sep = named("sep", &special_eos);
                        if let Some(sep) = &special_sep {
                            cfg_set(cfg, "sep_token", sep);
                        }
                    }
                }
                Some("TemplateProcessing") => {
                    let empty = Vec::new();
                    let single = p.get("single").and_then(|s| s.as_array()).unwrap_or(&empty);
                    let pair = p.get("pair").and_then(|s| s.as_array()).unwrap_or(&empty);
                    let mut special_first = None;
                    let mut special_last = None;
                    if single.len() > 1 {
                        special_first = special_id(single.first());
                        if let Some(first) = &special_first {
                            if !truthy(cfg) {
                                special_bos = Some(first.clone());
                            } else if Some(first) != special_bos.as_ref()
                                && Some(first) != special_cls.as_ref()
                            {
                                if special_bos.is_none() {
                                    cfg_set(cfg, "bos_token", first);
                                    special_bos = Some(first.clone());
                                }
                                if special_cls.is_none() {
                                    cfg_set(cfg, "cls_token", first);
                                    special_cls = Some(first.clone());
                                }
                            }
                            let is_bos = Some(first) == special_bos.as_ref()
                                || Some(first) == special_cls.as_ref();
                            set_flag(&mut self.add, "bos", is_bos);
                        }
                        special_last = special_id(single.last());
                        if let Some(last) = &special_last {
                            if !truthy(cfg) {
                                special_eos = Some(last.clone());
                            } else if Some(last) != special_eos.as_ref() {
                                let old = special_eos.clone().unwrap_or_default();
                                if !self.types.iter().any(|t| t == "eot") {
                                    self.types.push("eot".into());
                                    cfg_set(cfg, "eot_token", &old);
                                } else if !self.types.iter().any(|t| t == "eom") {
                                    self.types.push("eom".into());
                                    cfg_set(cfg, "eom_token", &old);
                                }
                                cfg_set(cfg, "eos_token", last);
                                special_eos = Some(last.clone());
                            }
                            let is_eos = Some(last) == special_eos.as_ref();
                            set_flag(&mut self.add, "eos", is_eos);
                        }
                    }
                    if !pair.is_empty() {
                        let start = usize::from(
                            special_first.is_some() && special_id(pair.first()) == special_first,
                        );
                        let stop_trim =
                            special_last.is_some() && special_id(pair.last()) == special_last;
                        let end = if stop_trim {
                            pair.len().saturating_sub(1)
                        } else {
                            pair.len()
                        };
                        let inner = pair.get(start..end.max(start)).unwrap_or(&[]);
                        if !inner.is_empty() {
                            let a = sequence_id(inner.first());
                            let b = sequence_id(inner.last());
                            if a.as_deref() == Some("A") && b.as_deref() == Some("B") {
                                let middle = inner.get(1..inner.len() - 1).unwrap_or(&[]);
                                if !middle.is_empty() {
                                    let mut add_sep = false;
                                    let is_sep = |e: &Option<String>| {
                                        e.is_some() && (*e == special_sep || *e == special_eos)
                                    };
                                    let entry = special_id(middle.first());
                                    if is_sep(&entry) && special_last.is_none() {
                                        add_sep = true;
                                    }
                                    if middle.len() == 2 && is_sep(&special_id(middle.get(1))) {
                                        add_sep = true;
                                    }
                                    set_flag(&mut self.add, "sep", add_sep);
                                    if add_sep && special_sep.is_none() && truthy(cfg) {
                                        if let Some(eos) = special_eos.clone() {
                                            cfg_set(cfg, "sep_token", &eos);
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
                _ => {}
            }
        }
    }

    /// `_try_load_from_config_json`: `config.json`'s `*_token_id` (root, then
    /// `text_config`).
    fn load_config_json(&mut self, dir: &Path) -> Result<()> {
        let path = dir.join("config.json");
        let Some(cfg) = read_json(&path)? else {
            return Ok(());
        };
        let types = self.types.clone();
        for typ in &types {
            let key = format!("{typ}_token_id");
            let id = match cfg.get(&key).filter(|v| !v.is_null()) {
                Some(v) => Some(v.clone()),
                None => cfg.get("text_config").and_then(|t| t.get(&key)).cloned(),
            };
            self.set_special(&path, typ, id.as_ref())?;
        }
        Ok(())
    }

    /// `add_to_gguf`: the keys, in the reference's order.
    pub fn add_to(&self, kv: &mut KvList) -> Result<()> {
        for (typ, id) in &self.ids {
            let key = match typ.as_str() {
                "bos" => "bos_token_id",
                "eos" => "eos_token_id",
                "unk" => "unknown_token_id",
                "sep" => "seperator_token_id",
                "pad" => "padding_token_id",
                "mask" => "mask_token_id",
                "eot" => "eot_token_id",
                "eom" => "eom_token_id",
                // gguf-py has no handler for the others (cls, ...) and skips them.
                _ => continue,
            };
            kv.set(format!("tokenizer.ggml.{key}"), GgufValue::U32(*id));
        }
        for (typ, add) in &self.add {
            if matches!(typ.as_str(), "bos" | "eos" | "sep") {
                kv.set(
                    format!("tokenizer.ggml.add_{typ}_token"),
                    GgufValue::Bool(*add),
                );
            }
        }
        match &self.chat_template {
            None => {}
            Some(Value::String(s)) => {
                kv.set("tokenizer.chat_template", GgufValue::String(s.clone()))
            }
            Some(Value::Array(list)) => {
                let mut default = None;
                let mut names: Vec<String> = Vec::new();
                for choice in list {
                    let name: String = choice
                        .get("name")
                        .and_then(|n| n.as_str())
                        .unwrap_or("")
                        .chars()
                        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
                        .collect();
                    let Some(template) = choice.get("template").and_then(|t| t.as_str()) else {
                        continue;
                    };
                    if name.is_empty() {
                        continue;
                    }
                    if name == "default" {
                        default = Some(template.to_string());
                    } else {
                        kv.set(
                            format!("tokenizer.chat_template.{name}"),
                            GgufValue::String(template.to_string()),
                        );
                        if !names.contains(&name) {
                            names.push(name);
                        }
                    }
                }
                if !names.is_empty() {
                    // The reference writes a Python set here, whose order is not defined;
                    // quant writes the names in file order.
                    kv.set("tokenizer.chat_templates", super::string_array(names));
                }
                if let Some(d) = default {
                    kv.set("tokenizer.chat_template", GgufValue::String(d));
                }
            }
            Some(_) => {}
        }
        if let Some(l) = self.lowercase {
            kv.set("tokenizer.ggml.normalizer.lowercase", GgufValue::Bool(l));
        }
        if let Some(s) = self.strip_accents {
            kv.set(
                "tokenizer.ggml.normalizer.strip_accents",
                GgufValue::Bool(s),
            );
        }
        Ok(())
    }
}
