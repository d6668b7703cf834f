//! Resources: typed, shared values (database pools, clients, settings) that compute functions
//! reach through [`crate::AssetContext::resource`]. A resource is either given as a value or built
//! from configuration ([`RainbowConfig`]): the `[resources.NAME]` table of `rainbow.toml`,
//! overridden by environment variables `RAINBOW_RESOURCES__NAME__FIELD=value`.

use std::any::{Any, TypeId, type_name};
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use serde::de::DeserializeOwned;

use crate::config::RainbowConfig;
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
                let bad = |message: String| Error::Config {
                    location: config.describe_resource(&resource),
                    message,
                };
                let parsed = match config.get::<T>(&format!("resources.{resource}")) {
                    Ok(Some(v)) => v,
                    // Nothing configured: the type's defaults, if it has them.
                    Ok(None) => serde_json::from_value::<T>(serde_json::json!({}))
                        .map_err(|e| bad(e.to_string()))?,
                    Err(Error::Config { message, .. }) => return Err(bad(message)),
                    Err(e) => return Err(e),
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
        let config = RainbowConfig::default()
            .with_toml(
                "[resources.warehouse]\npath = \"/data\"\nthreads = 2\n",
                "rainbow.toml",
            )
            .expect("valid toml")
            .with_env([(
                "RAINBOW_RESOURCE__WAREHOUSE__THREADS".to_owned(),
                "8".to_owned(),
            )])
            .expect("env");
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
}
