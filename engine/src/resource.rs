//! Resources: typed, shared values (database pools, clients, settings) that compute functions
//! reach through [`crate::AssetContext::resource`]. A resource is either given as a value or built
//! from configuration: the `[resources.NAME]` table of `rainbow.toml`, overridden by environment
//! variables `RAINBOW_RESOURCE__NAME__FIELD=value`.

use std::any::{Any, TypeId, type_name};
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::de::DeserializeOwned;

use crate::error::{Error, Result};

type AnyArc = Arc<dyn Any + Send + Sync>;
type BuildFn = Arc<dyn Fn(&RainbowConfig) -> Result<AnyArc> + Send + Sync>;

/// A resource declared in [`crate::Definitions`]: a ready value, or a recipe from config.
#[derive(Clone)]
pub(crate) struct ResourceDef {
    pub(crate) name: String,
    pub(crate) type_id: TypeId,
    pub(crate) type_name: &'static str,
    pub(crate) build: BuildFn,
}

impl ResourceDef {
    pub(crate) fn value<T: Any + Send + Sync>(value: T) -> Self {
        let value: AnyArc = Arc::new(value);
        let name = short_type_name::<T>();
        ResourceDef {
            name,
            type_id: TypeId::of::<T>(),
            type_name: type_name::<T>(),
            build: Arc::new(move |_| Ok(value.clone())),
        }
    }

    pub(crate) fn from_config<T: DeserializeOwned + Any + Send + Sync>(name: String) -> Self {
        let resource = name.clone();
        ResourceDef {
            name,
            type_id: TypeId::of::<T>(),
            type_name: type_name::<T>(),
            build: Arc::new(move |config: &RainbowConfig| {
                // Environment values are tried as JSON first (numbers, booleans), then as text,
                // so `PASSWORD=12345` still fills a string field.
                let typed = serde_json::from_value::<T>(config.resource_value(&resource, true));
                let parsed = match typed {
                    Ok(v) => v,
                    Err(first) => {
                        serde_json::from_value::<T>(config.resource_value(&resource, false))
                            .map_err(|_| Error::Config {
                                location: config.describe_resource(&resource),
                                message: first.to_string(),
                            })?
                    }
                };
                Ok(Arc::new(parsed) as AnyArc)
            }),
        }
    }
}

fn short_type_name<T>() -> String {
    type_name::<T>()
        .rsplit("::")
        .next()
        .unwrap_or("resource")
        .to_owned()
}

/// The resolved resources of a run, by type.
#[derive(Clone, Default)]
pub struct Resources {
    by_type: HashMap<TypeId, (&'static str, AnyArc)>,
}

impl fmt::Debug for Resources {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.by_type.values().map(|(n, _)| n))
            .finish()
    }
}

impl Resources {
    /// Builds every declared resource from `config`; the first failure names its resource.
    pub(crate) fn resolve(defs: &[ResourceDef], config: &RainbowConfig) -> Result<Self> {
        let mut by_type = HashMap::new();
        for def in defs {
            let value = (def.build)(config)?;
            by_type.insert(def.type_id, (def.type_name, value));
        }
        Ok(Resources { by_type })
    }

    /// The resource of type `T`.
    pub fn get<T: Any + Send + Sync>(&self) -> Result<Arc<T>> {
        self.by_type
            .get(&TypeId::of::<T>())
            .and_then(|(_, v)| v.clone().downcast::<T>().ok())
            .ok_or(Error::MissingResource(type_name::<T>()))
    }
}

/// Project configuration: `rainbow.toml` plus environment overrides.
#[derive(Debug, Clone, Default)]
pub struct RainbowConfig {
    path: Option<PathBuf>,
    resources: BTreeMap<String, serde_json::Value>,
    env: Vec<(String, String)>,
}

const ENV_PREFIX: &str = "RAINBOW_RESOURCE__";

impl RainbowConfig {
    /// Loads `path` if it exists (a missing file is an empty config) and captures the
    /// `RAINBOW_RESOURCE__*` environment variables.
    pub fn load(path: &Path) -> Result<Self> {
        let mut config = RainbowConfig::from_env(std::env::vars());
        if !path.exists() {
            return Ok(config);
        }
        let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
            path: path.to_owned(),
            source,
        })?;
        config.merge_toml(&text, path)?;
        Ok(config)
    }

    /// Loads `path`, which must exist (a config file named explicitly).
    pub fn load_required(path: &Path) -> Result<Self> {
        if !path.exists() {
            return Err(Error::Config {
                location: path.display().to_string(),
                message: "the config file does not exist".into(),
            });
        }
        RainbowConfig::load(path)
    }

    /// A config with no file, only the given environment variables.
    pub fn from_env(vars: impl IntoIterator<Item = (String, String)>) -> Self {
        RainbowConfig {
            path: None,
            resources: BTreeMap::new(),
            env: vars
                .into_iter()
                .filter(|(k, _)| k.starts_with(ENV_PREFIX))
                .collect(),
        }
    }

    /// Parses TOML text (from `path`, used in error messages) into this config.
    pub fn merge_toml(&mut self, text: &str, path: &Path) -> Result<()> {
        let table: toml::Table = toml::from_str(text).map_err(|e| Error::Config {
            location: path.display().to_string(),
            message: e.to_string(),
        })?;
        for (key, value) in table {
            match (key.as_str(), value) {
                ("resources", toml::Value::Table(resources)) => {
                    for (name, value) in resources {
                        let json = serde_json::to_value(&value).map_err(|e| Error::Config {
                            location: format!("{} [resources.{name}]", path.display()),
                            message: e.to_string(),
                        })?;
                        self.resources.insert(name, json);
                    }
                }
                ("resources", _) => {
                    return Err(Error::Config {
                        location: path.display().to_string(),
                        message: "`resources` must be a table of tables ([resources.NAME])".into(),
                    });
                }
                (other, _) => {
                    return Err(Error::Config {
                        location: path.display().to_string(),
                        message: format!("unknown top-level key `{other}`; expected `resources`"),
                    });
                }
            }
        }
        self.path = Some(path.to_owned());
        Ok(())
    }

    /// The JSON object for resource `name`: file values overridden by environment variables.
    /// With `typed`, environment values are parsed as JSON when they parse (numbers, booleans),
    /// else kept as text; without, they are always text.
    fn resource_value(&self, name: &str, typed: bool) -> serde_json::Value {
        let mut object = match self.resources.get(name) {
            Some(serde_json::Value::Object(map)) => map.clone(),
            _ => serde_json::Map::new(),
        };
        let prefix = format!("{ENV_PREFIX}{}__", name.to_ascii_uppercase());
        for (key, value) in &self.env {
            if let Some(field) = key.strip_prefix(&prefix) {
                let text = serde_json::Value::String(value.clone());
                let parsed = if typed {
                    serde_json::from_str(value).unwrap_or(text)
                } else {
                    text
                };
                object.insert(field.to_ascii_lowercase(), parsed);
            }
        }
        serde_json::Value::Object(object)
    }

    fn describe_resource(&self, name: &str) -> String {
        let file = self
            .path
            .as_ref()
            .map(|p| format!("{} [resources.{name}]", p.display()))
            .unwrap_or_else(|| format!("[resources.{name}] (no config file)"));
        format!(
            "resource `{name}` ({file} and {ENV_PREFIX}{}__*)",
            name.to_ascii_uppercase()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, Debug, PartialEq)]
    struct Warehouse {
        path: String,
        threads: u32,
    }

    #[test]
    fn env_overrides_file_and_errors_name_the_resource() {
        let mut config = RainbowConfig::from_env([(
            "RAINBOW_RESOURCE__WAREHOUSE__THREADS".to_owned(),
            "8".to_owned(),
        )]);
        config
            .merge_toml(
                "[resources.warehouse]\npath = \"/data\"\nthreads = 2\n",
                Path::new("rainbow.toml"),
            )
            .expect("valid toml");
        let defs = [ResourceDef::from_config::<Warehouse>("warehouse".into())];
        let resources = Resources::resolve(&defs, &config).expect("resolves");
        let wh = resources.get::<Warehouse>().expect("present");
        assert_eq!(
            *wh,
            Warehouse {
                path: "/data".into(),
                threads: 8
            }
        );

        let empty = RainbowConfig::default();
        let err = Resources::resolve(&defs, &empty).expect_err("missing field");
        let text = err.to_string();
        assert!(
            text.contains("resource `warehouse`") && text.contains("missing field `path`"),
            "{text}"
        );
    }

    #[test]
    fn bad_toml_names_the_file() {
        let mut config = RainbowConfig::default();
        let err = config
            .merge_toml("[resources.x\n", Path::new("conf/rainbow.toml"))
            .expect_err("bad toml");
        assert!(err.to_string().contains("conf/rainbow.toml"), "{err}");
    }
}
