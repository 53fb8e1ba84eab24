//! Strict reading of diffusers/transformers config.json files.
//!
//! Every key is either used, known to be irrelevant for inference (dropout, bookkeeping), or
//! known to change the math — then it must hold the value we implement, or loading fails with
//! an error naming the key. Keys we have never heard of are errors too, unless null/false:
//! silently ignoring them is how a port quietly computes something else.

use serde_json::{Map, Value};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{file}: invalid JSON: {error}")]
    Json {
        file: String,
        error: serde_json::Error,
    },
    #[error("{file}: {key} = {value} is not supported ({why})")]
    Unsupported {
        file: String,
        key: String,
        value: String,
        why: String,
    },
    #[error(
        "{file}: unknown config key {key} = {value}; refusing to guess whether it changes the math"
    )]
    UnknownKey {
        file: String,
        key: String,
        value: String,
    },
    #[error("{file}: {key}: {why}")]
    Invalid {
        file: String,
        key: String,
        why: String,
    },
    #[error("{file}: {error}")]
    Io { file: String, error: std::io::Error },
}

/// A parsed config with key bookkeeping.
pub struct ConfigReader {
    pub file: String,
    map: Map<String, Value>,
    seen: std::collections::BTreeSet<String>,
}

impl ConfigReader {
    pub fn parse(text: &str, file: &str) -> Result<Self, ConfigError> {
        let value: Value = serde_json::from_str(text).map_err(|error| ConfigError::Json {
            file: file.to_string(),
            error,
        })?;
        let map = value
            .as_object()
            .cloned()
            .ok_or_else(|| ConfigError::Invalid {
                file: file.to_string(),
                key: "<root>".into(),
                why: "not a JSON object".into(),
            })?;
        Ok(Self {
            file: file.to_string(),
            map,
            seen: Default::default(),
        })
    }

    pub fn read(path: &std::path::Path) -> Result<Self, ConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Io {
            file: file.clone(),
            error,
        })?;
        Self::parse(&text, &file)
    }

    pub fn raw(&mut self, key: &str) -> Option<&Value> {
        self.seen.insert(key.to_string());
        self.map.get(key).filter(|v| !v.is_null())
    }

    fn invalid(&self, key: &str, why: &str) -> ConfigError {
        ConfigError::Invalid {
            file: self.file.clone(),
            key: key.into(),
            why: why.into(),
        }
    }

    pub fn usize_or(&mut self, key: &str, default: usize) -> Result<usize, ConfigError> {
        Ok(self.usize_opt(key)?.unwrap_or(default))
    }

    /// A non-negative integer, or None when absent or null.
    pub fn usize_opt(&mut self, key: &str) -> Result<Option<usize>, ConfigError> {
        match self.raw(key).cloned() {
            None => Ok(None),
            Some(v) => v
                .as_u64()
                .map(|v| Some(v as usize))
                .ok_or_else(|| self.invalid(key, "expected a non-negative integer")),
        }
    }

    pub fn f64_or(&mut self, key: &str, default: f64) -> Result<f64, ConfigError> {
        match self.raw(key).cloned() {
            None => Ok(default),
            Some(v) => v
                .as_f64()
                .ok_or_else(|| self.invalid(key, "expected a number")),
        }
    }

    pub fn bool_or(&mut self, key: &str, default: bool) -> Result<bool, ConfigError> {
        match self.raw(key).cloned() {
            None => Ok(default),
            Some(v) => v
                .as_bool()
                .ok_or_else(|| self.invalid(key, "expected true or false")),
        }
    }

    pub fn string_or(&mut self, key: &str, default: &str) -> Result<String, ConfigError> {
        match self.raw(key).cloned() {
            None => Ok(default.to_string()),
            Some(v) => v
                .as_str()
                .map(str::to_string)
                .ok_or_else(|| self.invalid(key, "expected a string")),
        }
    }

    pub fn usize_list(&mut self, key: &str, default: &[usize]) -> Result<Vec<usize>, ConfigError> {
        match self.raw(key).cloned() {
            None => Ok(default.to_vec()),
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| v.as_u64().map(|v| v as usize))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| self.invalid(key, "expected a list of non-negative integers")),
            Some(_) => Err(self.invalid(key, "expected a list")),
        }
    }

    /// An int applied to every level, or a per-level list (UNet attention_head_dim).
    pub fn usize_per_level(
        &mut self,
        key: &str,
        levels: usize,
        default: usize,
    ) -> Result<Vec<usize>, ConfigError> {
        match self.raw(key).cloned() {
            None => Ok(vec![default; levels]),
            Some(Value::Number(n)) => Ok(vec![n.as_u64().unwrap_or(0) as usize; levels]),
            Some(Value::Array(_)) => {
                let list = self.usize_list(key, &[])?;
                if list.len() != levels {
                    return Err(self.invalid(
                        key,
                        &format!("has {} entries for {levels} levels", list.len()),
                    ));
                }
                Ok(list)
            }
            Some(_) => Err(self.invalid(key, "expected an integer or a list")),
        }
    }

    pub fn string_list(&mut self, key: &str, default: &[&str]) -> Result<Vec<String>, ConfigError> {
        match self.raw(key).cloned() {
            None => Ok(default.iter().map(|s| s.to_string()).collect()),
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| v.as_str().map(str::to_string))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| self.invalid(key, "expected a list of strings")),
            Some(_) => Err(self.invalid(key, "expected a list")),
        }
    }

    /// The key must be absent, null, or equal to `expected` (a value we implement).
    pub fn require(&mut self, key: &str, expected: Value, why: &str) -> Result<(), ConfigError> {
        match self.raw(key).cloned() {
            None => Ok(()),
            Some(v) if values_equal(&v, &expected) => Ok(()),
            Some(v) => Err(ConfigError::Unsupported {
                file: self.file.clone(),
                key: key.into(),
                value: v.to_string(),
                why: why.into(),
            }),
        }
    }

    pub fn unsupported(&self, key: &str, value: impl std::fmt::Display, why: &str) -> ConfigError {
        ConfigError::Unsupported {
            file: self.file.clone(),
            key: key.into(),
            value: value.to_string(),
            why: why.into(),
        }
    }

    /// Marks keys that do not affect inference (dropout, bookkeeping, training-only).
    pub fn ignore(&mut self, keys: &[&str]) {
        for k in keys {
            self.seen.insert(k.to_string());
        }
    }

    /// Fails on any key not read, required or ignored — unless it is null or false.
    pub fn finish(self) -> Result<(), ConfigError> {
        for (key, value) in &self.map {
            if self.seen.contains(key) || key.starts_with('_') {
                continue;
            }
            if value.is_null() || value == &Value::Bool(false) {
                continue;
            }
            return Err(ConfigError::UnknownKey {
                file: self.file.clone(),
                key: key.clone(),
                value: value.to_string(),
            });
        }
        Ok(())
    }
}

fn values_equal(a: &Value, b: &Value) -> bool {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => x == y,
        _ => a == b,
    }
}
