//! [`AssetKey`]: the identity of an asset, a path of segments shown as `a/b/c`.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The identity of an asset: one or more path segments, e.g. `warehouse/fact_sales`.
///
/// Segments may hold ASCII letters, digits, `_`, `-` and `.`. Conversions from strings split on
/// `/` and never fail; the graph validates every key when it is built, so a bad key is reported
/// with the asset that declares it.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(into = "String", from = "String")]
pub struct AssetKey(Vec<String>);

impl AssetKey {
    /// A key from explicit segments.
    pub fn new<I, S>(segments: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        AssetKey(segments.into_iter().map(Into::into).collect())
    }

    /// Parses `a/b/c`, validating every segment.
    pub fn parse(s: &str) -> Result<Self> {
        let key = AssetKey::from(s);
        key.validate()?;
        Ok(key)
    }

    /// The path segments.
    pub fn segments(&self) -> &[String] {
        &self.0
    }

    /// The last segment (the asset's short name).
    pub fn name(&self) -> &str {
        self.0.last().map(String::as_str).unwrap_or("")
    }

    /// A new key with `segment` appended.
    pub fn child(&self, segment: impl Into<String>) -> Self {
        let mut segments = self.0.clone();
        segments.push(segment.into());
        AssetKey(segments)
    }

    /// Checks that the key has at least one segment and only allowed characters.
    pub fn validate(&self) -> Result<()> {
        if self.0.is_empty() {
            return Err(Error::Definition("an asset key must not be empty".into()));
        }
        for segment in &self.0 {
            let ok = !segment.is_empty()
                && segment
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
            if !ok {
                return Err(Error::Definition(format!(
                    "asset key `{self}` has an invalid segment `{segment}`: use letters, digits, `_`, `-` or `.`"
                )));
            }
        }
        Ok(())
    }
}

impl fmt::Display for AssetKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.join("/"))
    }
}

impl fmt::Debug for AssetKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AssetKey({self})")
    }
}

impl From<&str> for AssetKey {
    fn from(s: &str) -> Self {
        AssetKey(s.split('/').map(str::to_owned).collect())
    }
}

impl From<String> for AssetKey {
    fn from(s: String) -> Self {
        AssetKey::from(s.as_str())
    }
}

impl From<&AssetKey> for AssetKey {
    fn from(k: &AssetKey) -> Self {
        k.clone()
    }
}

impl From<AssetKey> for String {
    fn from(k: AssetKey) -> Self {
        k.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_displays_paths() {
        let k = AssetKey::parse("warehouse/fact_sales").expect("valid");
        assert_eq!(k.segments(), ["warehouse", "fact_sales"]);
        assert_eq!(k.to_string(), "warehouse/fact_sales");
        assert_eq!(k.name(), "fact_sales");
    }

    #[test]
    fn rejects_bad_segments() {
        let err = AssetKey::parse("raw//orders").expect_err("empty segment");
        assert!(err.to_string().contains("invalid segment ``"), "{err}");
        let err = AssetKey::parse("raw/ord ers").expect_err("space");
        assert!(err.to_string().contains("`ord ers`"), "{err}");
    }
}
