//! The method registry: backends submit [`MethodEntry`] values through
//! [`register_method!`](crate::register_method); the registry is built once, sorted by name.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use serde::Serialize;

use crate::catalog;
use crate::error::{Error, Result};
use crate::method::{ParamSpec, Params, QuantMethod};

/// A method registration, submitted by a backend crate.
pub struct MethodEntry {
    /// Unique method name.
    pub name: &'static str,
    /// The crate that registers it.
    pub backend: &'static str,
    /// Stored bits per weight for a large matrix, including scales.
    pub bits_per_weight: f32,
    /// One line describing the format.
    pub summary: &'static str,
    /// The parameters the factory accepts.
    pub params: &'static [ParamSpec],
    /// Creates the method from parameters.
    pub create: fn(&Params) -> Result<Box<dyn QuantMethod>>,
}

inventory::collect!(MethodEntry);

/// Registers a [`MethodEntry`] from any crate linked into the final binary.
///
/// ```ignore
/// quant_core::register_method!(quant_core::MethodEntry { name: "my_method", .. });
/// ```
#[macro_export]
macro_rules! register_method {
    ($entry:expr) => {
        $crate::__inventory::submit! { $entry }
    };
}

/// The methods linked into this build.
pub struct Registry {
    by_name: BTreeMap<&'static str, &'static MethodEntry>,
}

/// How a requested method name was resolved.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Resolved {
    /// The name asked for.
    pub requested: String,
    /// The method that will run.
    pub effective: String,
    /// Why `effective` differs from `requested`.
    pub fallback_reason: Option<String>,
}

static REGISTRY: OnceLock<std::result::Result<Registry, (String, String, String)>> =
    OnceLock::new();

impl Registry {
    /// The registry of this build, built on first use. Fails when two backends register
    /// the same name.
    pub fn global() -> Result<&'static Registry> {
        let built = REGISTRY.get_or_init(|| {
            let mut by_name: BTreeMap<&'static str, &'static MethodEntry> = BTreeMap::new();
            for entry in inventory::iter::<MethodEntry> {
                if let Some(prev) = by_name.insert(entry.name, entry) {
                    return Err((
                        entry.name.to_string(),
                        prev.backend.to_string(),
                        entry.backend.to_string(),
                    ));
                }
            }
            Ok(Registry { by_name })
        });
        built
            .as_ref()
            .map_err(|(name, first, second)| Error::DuplicateMethod {
                name: name.clone(),
                first: first.clone(),
                second: second.clone(),
            })
    }

    /// Every registered method, sorted by name.
    pub fn entries(&self) -> impl Iterator<Item = &'static MethodEntry> + '_ {
        self.by_name.values().copied()
    }

    /// The registered entry for `name`.
    pub fn get(&self, name: &str) -> Option<&'static MethodEntry> {
        self.by_name.get(name).copied()
    }

    /// Resolves a requested name: itself when registered; its basic fallback when it is a
    /// canonical name whose backend is compiled out (an error in `strict` mode, naming the
    /// feature); an error listing close matches when nobody knows it.
    pub fn resolve(&self, name: &str, strict: bool) -> Result<Resolved> {
        if self.by_name.contains_key(name) {
            return Ok(Resolved {
                requested: name.to_string(),
                effective: name.to_string(),
                fallback_reason: None,
            });
        }
        if let Some(c) = catalog::lookup(name) {
            if strict || c.fallback.is_empty() {
                return Err(Error::MethodNotCompiled {
                    name: name.to_string(),
                    backend: c.backend.to_string(),
                    feature: c.feature.to_string(),
                });
            }
            return Ok(Resolved {
                requested: name.to_string(),
                effective: c.fallback.to_string(),
                fallback_reason: Some(format!(
                    "backend {} is compiled out (enable the cargo feature '{}'); using {}",
                    c.backend, c.feature, c.fallback
                )),
            });
        }
        Err(self.unknown(name))
    }

    /// Creates a registered method (no fallback) from parameters.
    pub fn create(&self, name: &str, params: &Params) -> Result<Box<dyn QuantMethod>> {
        match self.get(name) {
            Some(entry) => (entry.create)(params),
            None => match catalog::lookup(name) {
                Some(c) => Err(Error::MethodNotCompiled {
                    name: name.to_string(),
                    backend: c.backend.to_string(),
                    feature: c.feature.to_string(),
                }),
                None => Err(self.unknown(name)),
            },
        }
    }

    fn unknown(&self, name: &str) -> Error {
        let available: Vec<String> = self.by_name.keys().map(|s| s.to_string()).collect();
        let mut scored: Vec<(f64, &str)> = self
            .by_name
            .keys()
            .copied()
            .chain(
                catalog::CATALOG
                    .iter()
                    .chain(catalog::EXTRA)
                    .map(|c| c.name),
            )
            .map(|k| (strsim::jaro_winkler(name, k), k))
            .filter(|(s, _)| *s > 0.85)
            .collect();
        scored.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(b.1)));
        let mut close: Vec<String> = Vec::new();
        for (_, k) in scored {
            if !close.iter().any(|c| c == k) && close.len() < 3 {
                close.push(k.to_string());
            }
        }
        Error::UnknownMethod {
            name: name.to_string(),
            close,
            available,
        }
    }
}
