//! The one configuration ([`RainbowConfig`]), layered with figment, each layer overriding the
//! one before:
//!
//! 1. `<home>/rainbow.toml` — the state directory's own settings (written by `rainbow demo`);
//! 2. the project's file: `--config FILE` (must exist), else `./rainbow.toml` if present;
//! 3. the environment: `RAINBOW_<SECTION>__<KEY>[__<KEY>…]`, `__` nesting
//!    (`RAINBOW_PIPELINE__LAKE`, `RAINBOW_STORAGE__DATABASE_URL`,
//!    `RAINBOW_RESOURCES__SHOP__CURRENCY`), plus the older spellings
//!    `RAINBOW_RESOURCE__NAME__FIELD` and the pipeline's `RAINBOW_SOURCE_URL`, `RAINBOW_LAKE`,
//!    `RAINBOW_WAREHOUSE`, `RAINBOW_SQL_MODELS`;
//! 4. command-line flags ([`RainbowConfig::set`]).
//!
//! Sections: `[storage]` (run storage: `database_url`, `heartbeat_timeout`), `[pipeline]` (the
//! Rainbow code location's settings), `[resources.NAME]` (configured resources). Errors name the
//! key and where its value came from (the file, or the environment variable). dbt targets stay
//! in `profiles.yml`, as dbt users expect.

use std::path::{Path, PathBuf};

use figment::value::{Dict, Map, Value};
use figment::{Figment, Metadata, Profile, Provider};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{Error, Result};

/// The prefix of configuration environment variables.
const ENV_PREFIX: &str = "RAINBOW_";

/// The sections a configuration file may have.
pub const SECTIONS: [&str; 4] = ["storage", "pipeline", "resources", "streaming"];

/// Flat environment variables kept from earlier releases: variable -> key.
const LEGACY_ENV: [(&str, &str); 4] = [
    ("RAINBOW_SOURCE_URL", "pipeline.source_url"),
    ("RAINBOW_LAKE", "pipeline.lake"),
    ("RAINBOW_WAREHOUSE", "pipeline.warehouse"),
    ("RAINBOW_SQL_MODELS", "pipeline.sql_models"),
];

/// The project's configuration: files, environment and flags, layered.
#[derive(Debug, Clone)]
pub struct RainbowConfig {
    /// Environment values typed (numbers, booleans parsed).
    typed: Figment,
    /// The same with environment values kept as text (for text fields holding `12345`).
    text: Figment,
    files: Vec<PathBuf>,
}

impl Default for RainbowConfig {
    /// Nothing configured: no file, no environment.
    fn default() -> Self {
        RainbowConfig {
            typed: Figment::new(),
            text: Figment::new(),
            files: Vec::new(),
        }
    }
}

impl RainbowConfig {
    /// Layers `<home>/rainbow.toml`, then `file` (which must exist) or `./rainbow.toml` if
    /// present, then the process environment. Errors: a file that cannot be read or parsed
    /// (named, with line and column), a missing `file`.
    pub fn load(home: &Path, file: Option<&Path>) -> Result<Self> {
        let mut config = RainbowConfig::default();
        config = config.with_file(&home.join("rainbow.toml"), false)?;
        config = match file {
            Some(path) => config.with_file(path, true)?,
            None => config.with_file(Path::new("rainbow.toml"), false)?,
        };
        config.with_env(std::env::vars())
    }

    /// Adds the TOML file at `path` as the next layer; a missing file is skipped unless
    /// `required`.
    pub fn with_file(mut self, path: &Path, required: bool) -> Result<Self> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => return Ok(self),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::Config {
                    location: path.display().to_string(),
                    message: "the config file does not exist".into(),
                });
            }
            Err(source) => {
                return Err(Error::Io {
                    path: path.to_owned(),
                    source,
                });
            }
        };
        self = self.with_toml(&text, &path.display().to_string())?;
        self.files.push(path.to_owned());
        Ok(self)
    }

    /// Adds TOML `text` (named `name` in errors) as the next layer.
    pub fn with_toml(mut self, text: &str, name: &str) -> Result<Self> {
        let table: toml::Table = toml::from_str(text).map_err(|e| Error::Config {
            location: name.to_owned(),
            message: e.to_string(),
        })?;
        if let Some(unknown) = table.keys().find(|k| !SECTIONS.contains(&k.as_str())) {
            return Err(Error::Config {
                location: name.to_owned(),
                message: format!(
                    "unknown section `{unknown}`{}; expected one of {}",
                    crate::error::did_you_mean(unknown, SECTIONS),
                    SECTIONS.join(", ")
                ),
            });
        }
        let value = Value::serialize(&table).map_err(|e| Error::Config {
            location: name.to_owned(),
            message: e.to_string(),
        })?;
        let dict = value.into_dict().unwrap_or_default();
        let layer = Layer {
            name: format!("{name} TOML file"),
            data: dict,
        };
        self.typed = self.typed.merge(layer.clone());
        self.text = self.text.merge(layer);
        Ok(self)
    }

    /// Adds the configuration variables among `vars` as the next layer (see the module doc).
    /// Errors: a `RAINBOW_<SECTION>__…` variable naming an unknown section.
    pub fn with_env(mut self, vars: impl IntoIterator<Item = (String, String)>) -> Result<Self> {
        let mut typed = Dict::new();
        let mut text = Dict::new();
        for (name, value) in vars {
            let Some(key) = env_key(&name) else { continue };
            let section = key.split('.').next().unwrap_or_default();
            if !SECTIONS.contains(&section) {
                return Err(Error::Config {
                    location: name.clone(),
                    message: format!(
                        "unknown section `{section}`{}; expected one of {}",
                        crate::error::did_you_mean(section, SECTIONS),
                        SECTIONS.join(", ")
                    ),
                });
            }
            insert(&mut typed, &key, parse_env_value(&value));
            insert(&mut text, &key, Value::from(value));
        }
        let layer = |data| Layer {
            name: "environment".into(),
            data,
        };
        self.typed = self.typed.merge(layer(typed));
        self.text = self.text.merge(layer(text));
        Ok(self)
    }

    /// Sets `key` (dotted: `storage.database_url`) to `value`: the top layer (flags).
    pub fn set(mut self, key: &str, value: impl Serialize) -> Self {
        self.typed = self.typed.merge(Flag(key, &value));
        self.text = self.text.merge(Flag(key, &value));
        self
    }

    /// The files read, in layer order.
    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }

    /// Whether anything sets `key` (dotted).
    pub fn contains(&self, key: &str) -> bool {
        self.typed.contains(key)
    }

    /// The value at `key` (dotted: `pipeline`, `storage.database_url`) as `T`; `None` when
    /// nothing sets it. Errors name the key and where the bad value came from.
    pub fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>> {
        if !self.typed.contains(key) {
            return Ok(None);
        }
        match self.typed.extract_inner::<T>(key) {
            Ok(v) => Ok(Some(v)),
            // A text field given a number or boolean in the environment (`PASSWORD=12345`).
            Err(first) => self
                .text
                .extract_inner::<T>(key)
                .map(Some)
                .map_err(|_| Error::Config {
                    location: "the configuration".into(),
                    message: describe(&first, key),
                }),
        }
    }

    /// The value at `key` as `T`, over `defaults` (the lowest layer: every field the layers
    /// set overrides the default's). Errors as [`RainbowConfig::get`].
    pub fn get_or<T: Serialize + DeserializeOwned>(&self, key: &str, defaults: &T) -> Result<T> {
        let with_defaults =
            |layers: &Figment| Figment::from(Flag(key, defaults)).merge(layers.clone());
        match with_defaults(&self.typed).extract_inner::<T>(key) {
            Ok(v) => Ok(v),
            Err(first) => with_defaults(&self.text)
                .extract_inner::<T>(key)
                .map_err(|_| Error::Config {
                    location: "the configuration".into(),
                    message: describe(&first, key),
                }),
        }
    }

    /// Where resource `name` is configured, for messages.
    pub(crate) fn describe_resource(&self, name: &str) -> String {
        let files: Vec<String> = self.files.iter().map(|p| p.display().to_string()).collect();
        format!(
            "resource `{name}` ([resources.{name}] in {} and RAINBOW_RESOURCES__{}__*)",
            if files.is_empty() {
                "no config file".to_owned()
            } else {
                files.join(", ")
            },
            name.to_ascii_uppercase()
        )
    }
}

/// A figment error as one line per problem: the dotted key, what is wrong, and where the value
/// came from (the file, or the environment variable). `key` is the key extracted.
fn describe(error: &figment::Error, key: &str) -> String {
    let requested: Vec<&str> = key.split('.').collect();
    error
        .clone()
        .into_iter()
        .map(|e| {
            // Figment lists the fields inside the extracted value, then the extracted key.
            let path: Vec<&str> = e.path.iter().map(String::as_str).collect();
            let inner = match path.len().checked_sub(requested.len()) {
                Some(n) if path[n..] == requested[..] => &path[..n],
                _ => &path[..],
            };
            let full = requested
                .iter()
                .chain(inner.iter())
                .copied()
                .collect::<Vec<_>>()
                .join(".");
            let what = match &e.kind {
                figment::error::Kind::UnknownField(name, expected) => format!(
                    "unknown key `{name}`{}; expected one of {}",
                    crate::error::did_you_mean(name, expected.iter().copied()),
                    expected.join(", ")
                ),
                figment::error::Kind::MissingField(name) => format!("missing key `{name}`"),
                figment::error::Kind::InvalidType(found, expected) => {
                    format!("expected {expected}, found {found}")
                }
                other => other.to_string(),
            };
            let source = match &e.metadata {
                Some(m) if m.name == "environment" => format!(
                    " (from {ENV_PREFIX}{})",
                    full.replace('.', "__").to_ascii_uppercase()
                ),
                Some(m) => format!(" (in {})", m.name),
                None => String::new(),
            };
            format!("`{full}`: {what}{source}")
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// The dotted key of a configuration variable, or None for other variables.
fn env_key(name: &str) -> Option<String> {
    if let Some((_, key)) = LEGACY_ENV.iter().find(|(var, _)| *var == name) {
        return Some((*key).to_owned());
    }
    let rest = name.strip_prefix(ENV_PREFIX)?;
    if !rest.contains("__") {
        return None;
    }
    let mut parts: Vec<String> = rest.split("__").map(str::to_ascii_lowercase).collect();
    if parts.iter().any(String::is_empty) {
        return None;
    }
    if parts[0] == "resource" {
        parts[0] = "resources".into();
    }
    Some(parts.join("."))
}

/// An environment value: an integer, a float or a boolean when it reads as one, else text.
fn parse_env_value(text: &str) -> Value {
    if let Ok(i) = text.parse::<i64>() {
        return Value::from(i);
    }
    if let Ok(f) = text.parse::<f64>()
        && f.is_finite()
        && text.contains('.')
    {
        return Value::from(f);
    }
    match text {
        "true" => Value::from(true),
        "false" => Value::from(false),
        _ => Value::from(text.to_owned()),
    }
}

/// Sets dotted `key` in `dict`, creating the dictionaries on the way.
fn insert(dict: &mut Dict, key: &str, value: Value) {
    let mut parts: Vec<&str> = key.split('.').collect();
    let Some(last) = parts.pop() else { return };
    let mut at = dict;
    for p in parts {
        let entry = at
            .entry(p.to_owned())
            .or_insert_with(|| Value::from(Dict::new()));
        if entry.as_dict().is_none() {
            *entry = Value::from(Dict::new());
        }
        let Value::Dict(_, next) = entry else { return };
        at = next;
    }
    at.insert(last.to_owned(), value);
}

/// A layer of configuration data.
#[derive(Clone)]
struct Layer {
    name: String,
    data: Dict,
}

impl Provider for Layer {
    fn metadata(&self) -> Metadata {
        Metadata::named(self.name.clone())
    }

    fn data(&self) -> std::result::Result<Map<Profile, Dict>, figment::Error> {
        Ok(Profile::Default.collect(self.data.clone()))
    }
}

/// A value given on the command line.
struct Flag<'a, T: Serialize>(&'a str, &'a T);

impl<T: Serialize> Provider for Flag<'_, T> {
    fn metadata(&self) -> Metadata {
        Metadata::named("command-line flag")
    }

    fn data(&self) -> std::result::Result<Map<Profile, Dict>, figment::Error> {
        let value = Value::serialize(self.1)?;
        let mut dict = Dict::new();
        insert(&mut dict, self.0, value);
        Ok(Profile::Default.collect(dict))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, Debug, PartialEq)]
    struct Pipeline {
        lake: String,
        freshness_lag: usize,
    }

    #[test]
    fn layers_override_in_order_and_errors_name_the_source() {
        let config = RainbowConfig::default()
            .with_toml(
                "[pipeline]\nlake = \"/home\"\nfreshness_lag = 1\n",
                "home/rainbow.toml",
            )
            .expect("valid")
            .with_toml("[pipeline]\nlake = \"/project\"\n", "rainbow.toml")
            .expect("valid")
            .with_env([
                ("RAINBOW_PIPELINE__FRESHNESS_LAG".to_owned(), "3".to_owned()),
                ("RAINBOW_HOME".to_owned(), "ignored".to_owned()),
            ])
            .expect("env");
        assert_eq!(
            config.get::<Pipeline>("pipeline").expect("valid"),
            Some(Pipeline {
                lake: "/project".into(),
                freshness_lag: 3
            })
        );
        let flagged = config.clone().set("pipeline.lake", "/flag");
        assert_eq!(
            flagged.get::<String>("pipeline.lake").expect("valid"),
            Some("/flag".into())
        );
        assert_eq!(
            config.get::<String>("storage.database_url").expect("ok"),
            None
        );
        assert!(
            !config.contains("home"),
            "flat variables are not configuration"
        );

        let bad = config
            .with_env([(
                "RAINBOW_PIPELINE__FRESHNESS_LAG".to_owned(),
                "soon".to_owned(),
            )])
            .expect("env");
        let e = bad
            .get::<Pipeline>("pipeline")
            .expect_err("not a number")
            .to_string();
        assert!(
            e.contains("`pipeline.freshness_lag`: expected usize")
                && e.contains("from RAINBOW_PIPELINE__FRESHNESS_LAG"),
            "{e}"
        );
        let e = RainbowConfig::default()
            .with_env([("RAINBOW_PIPELIN__LAKE".to_owned(), "x".to_owned())])
            .expect_err("unknown section")
            .to_string();
        assert!(
            e.contains("RAINBOW_PIPELIN__LAKE") && e.contains("did you mean `pipeline`"),
            "{e}"
        );
        let e = RainbowConfig::default()
            .with_toml("[pipeline\n", "conf/rainbow.toml")
            .expect_err("bad toml")
            .to_string();
        assert!(e.contains("conf/rainbow.toml"), "{e}");
        let e = RainbowConfig::default()
            .with_toml("[resource.shop]\nx = 1\n", "conf/rainbow.toml")
            .expect_err("unknown section")
            .to_string();
        assert!(
            e.contains("conf/rainbow.toml") && e.contains("did you mean `resources`"),
            "{e}"
        );
    }

    #[test]
    fn legacy_variables_and_text_fields_holding_numbers() {
        #[derive(serde::Deserialize, Debug, PartialEq)]
        struct Secret {
            password: String,
        }
        #[derive(serde::Deserialize, Debug, PartialEq)]
        struct Pool {
            threads: u32,
        }
        let config = RainbowConfig::default()
            .with_env([
                (
                    "RAINBOW_RESOURCE__SECRET__PASSWORD".to_owned(),
                    "12345".to_owned(),
                ),
                (
                    "RAINBOW_RESOURCES__POOL__THREADS".to_owned(),
                    "8".to_owned(),
                ),
                ("RAINBOW_LAKE".to_owned(), "/lake".to_owned()),
            ])
            .expect("env");
        assert_eq!(
            config.get::<Secret>("resources.secret").expect("valid"),
            Some(Secret {
                password: "12345".into()
            })
        );
        assert_eq!(
            config.get::<Pool>("resources.pool").expect("valid"),
            Some(Pool { threads: 8 })
        );
        assert_eq!(
            config.get::<String>("pipeline.lake").expect("valid"),
            Some("/lake".into())
        );
    }
}
