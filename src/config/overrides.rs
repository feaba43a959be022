//! Single-key overrides from the environment (`LDM_SECTION__KEY=value`) and the command line
//! (`--set section.key=value`), as figment providers whose metadata names their origin.
//!
//! Values are parsed as TOML (so `1e-4` is a float and `[1, 2]` a list); a value that is not
//! valid TOML is taken as a plain string, so `--set experiment.name=foo` works unquoted.

use figment::value::{Dict, Map, Value};
use figment::{Error, Metadata, Profile, Provider};

use super::error::ConfigError;

/// Prefix of environment variables that override experiment keys.
pub const ENV_PREFIX: &str = "LDM_";

/// One overridden key with the place it came from.
#[derive(Debug, Clone)]
pub struct KeyOverride {
    /// How the user wrote it, for messages: `--set a.b=1` or `environment variable LDM_A__B`.
    pub origin: String,
    /// Dotted key path, e.g. `stages.vae.lr`.
    pub key: String,
    pub value: toml::Value,
}

impl KeyOverride {
    /// Parses one `--set key=value` argument.
    pub fn from_set(arg: &str) -> Result<Self, ConfigError> {
        let bad = |why: &str| ConfigError::BadSet {
            arg: arg.to_string(),
            why: why.to_string(),
        };
        let (key, raw) = arg
            .split_once('=')
            .ok_or_else(|| bad("expected KEY=VALUE, e.g. --set stages.vae.lr=1e-4"))?;
        let key = key.trim();
        if key.is_empty() || key.split('.').any(|part| part.is_empty()) {
            return Err(bad("the key must be a dotted path such as stages.vae.lr"));
        }
        Ok(Self {
            origin: format!("`--set {arg}`"),
            key: key.to_string(),
            value: parse_value(raw.trim()),
        })
    }

    /// Every `LDM_<SECTION>__<KEY>` variable of the given environment, sorted by name.
    /// Variables without `__` (such as `LDM_DATA_DIR`) are settings of the tool, not of the
    /// experiment, and are left alone.
    pub fn from_env(vars: impl IntoIterator<Item = (String, String)>) -> Vec<Self> {
        let mut found: Vec<Self> = vars
            .into_iter()
            .filter_map(|(name, raw)| {
                let rest = name.strip_prefix(ENV_PREFIX)?;
                if !rest.contains("__") {
                    return None;
                }
                let key = rest.split("__").map(str::to_lowercase).collect::<Vec<_>>();
                Some(Self {
                    origin: format!("environment variable `{name}`"),
                    key: key.join("."),
                    value: parse_value(raw.trim()),
                })
            })
            .collect();
        found.sort_by(|a, b| a.origin.cmp(&b.origin));
        found
    }
}

/// A TOML value if the text is one, else the text as a string.
fn parse_value(raw: &str) -> toml::Value {
    let doc = format!("v = {raw}");
    match toml::from_str::<toml::Table>(&doc) {
        Ok(mut table) => table
            .remove("v")
            .unwrap_or_else(|| toml::Value::String(raw.to_string())),
        Err(_) => toml::Value::String(raw.to_string()),
    }
}

impl Provider for KeyOverride {
    fn metadata(&self) -> Metadata {
        Metadata::named(self.origin.clone())
    }

    fn data(&self) -> Result<Map<Profile, Dict>, Error> {
        let value = Value::serialize(&self.value)?;
        let nested = figment::util::nest(&self.key, value);
        let dict = nested
            .into_dict()
            .ok_or_else(|| Error::from(format!("{}: empty key", self.origin)))?;
        Ok(Profile::Default.collect(dict))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_values_are_parsed_as_toml() {
        let o = KeyOverride::from_set("stages.vae.lr=1e-4").unwrap();
        assert_eq!(o.key, "stages.vae.lr");
        assert_eq!(o.value, toml::Value::Float(1e-4));
        let o = KeyOverride::from_set("autoencoder.ch_mult=[1, 2]").unwrap();
        assert_eq!(
            o.value,
            toml::Value::Array(vec![toml::Value::Integer(1), toml::Value::Integer(2)])
        );
        let o = KeyOverride::from_set("experiment.name=plain words").unwrap();
        assert_eq!(o.value, toml::Value::String("plain words".into()));
    }

    #[test]
    fn malformed_set_is_refused_with_the_argument() {
        let err = KeyOverride::from_set("stages.vae.lr")
            .unwrap_err()
            .to_string();
        assert!(err.contains("--set stages.vae.lr"), "{err}");
        assert!(err.contains("KEY=VALUE"), "{err}");
        let err = KeyOverride::from_set("stages..lr=1")
            .unwrap_err()
            .to_string();
        assert!(err.contains("dotted path"), "{err}");
    }

    #[test]
    fn env_vars_need_the_double_underscore() {
        let vars = [
            ("LDM_STAGES__VAE__LR".to_string(), "2e-4".to_string()),
            ("LDM_DATA_DIR".to_string(), "/x".to_string()),
            ("HOME".to_string(), "/root".to_string()),
        ];
        let found = KeyOverride::from_env(vars);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].key, "stages.vae.lr");
        assert_eq!(found[0].value, toml::Value::Float(2e-4));
        assert!(found[0].origin.contains("LDM_STAGES__VAE__LR"));
    }
}
