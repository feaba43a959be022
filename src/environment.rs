//! The process environment as ldm-run reads it, checked once at start-up: `LDM_DATA_DIR`,
//! `LDM_<SECTION>__<KEY>` overrides of experiment keys, and the tool's own switches. Any other
//! `LDM_...` variable is a mistake (a misspelt name would otherwise be ignored without a word),
//! and a variable ldm-run reads must be valid UTF-8 where it holds text.

use std::ffi::OsString;

use crate::config::error::closest;

/// Prefix of every variable ldm-run reads.
pub const PREFIX: &str = "LDM_";
/// Where data sets are looked for (`$LDM_DATA_DIR/<name>`).
pub const DATA_DIR: &str = "LDM_DATA_DIR";
/// Variables of the tool itself (not experiment keys).
pub const TOOL_VARIABLES: &[&str] = &[DATA_DIR, "LDM_KERNELS_NO_WINOGRAD"];

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum EnvError {
    #[error(
        "environment variable `{name}` is not one ldm-run knows{hint}; experiment keys are set \
         as LDM_<SECTION>__<KEY> (two underscores between the parts, e.g. LDM_STAGES__VAE__LR), \
         and the tool's own variables are {}; unset it or fix its name",
        TOOL_VARIABLES.join(", ")
    )]
    Unknown { name: String, hint: String },
    #[error(
        "environment variable `{name}` is not valid UTF-8 ({lossy:?}); ldm-run reads it as text, so give it a UTF-8 value or unset it"
    )]
    NotUtf8 { name: String, lossy: String },
    #[error(
        "an environment variable whose name starts with LDM_ is not valid UTF-8 ({lossy:?}); rename or unset it"
    )]
    NameNotUtf8 { lossy: String },
}

/// The `LDM_...` variables of one process.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Environment {
    /// `LDM_<SECTION>__<KEY>` variables with their values, sorted by name.
    pub overrides: Vec<(String, String)>,
    /// The value of `LDM_DATA_DIR`.
    pub data_dir: Option<String>,
}

impl Environment {
    /// The environment of this process.
    pub fn from_process() -> Result<Self, EnvError> {
        Self::from_vars(std::env::vars_os())
    }

    /// The environment of the given variables (tests pass their own).
    pub fn from_vars(
        vars: impl IntoIterator<Item = (OsString, OsString)>,
    ) -> Result<Self, EnvError> {
        let mut env = Self::default();
        for (name, value) in vars {
            let Some(name) = name.to_str().map(str::to_string) else {
                let lossy = name.to_string_lossy().to_string();
                if lossy.starts_with(PREFIX) {
                    return Err(EnvError::NameNotUtf8 { lossy });
                }
                continue;
            };
            let Some(rest) = name.strip_prefix(PREFIX) else {
                continue;
            };
            if TOOL_VARIABLES.contains(&name.as_str()) && name != DATA_DIR {
                continue;
            }
            if name != DATA_DIR && !rest.contains("__") {
                let hint = closest(&name, TOOL_VARIABLES)
                    .map(|c| format!(" (did you mean `{c}`?)"))
                    .unwrap_or_default();
                return Err(EnvError::Unknown { name, hint });
            }
            let value = value.into_string().map_err(|v| EnvError::NotUtf8 {
                name: name.clone(),
                lossy: v.to_string_lossy().to_string(),
            })?;
            if name == DATA_DIR {
                env.data_dir = Some(value);
            } else {
                env.overrides.push((name, value));
            }
        }
        env.overrides.sort();
        Ok(env)
    }

    /// `LDM_DATA_DIR`, if set.
    pub fn data_dir(&self) -> Option<&str> {
        self.data_dir.as_deref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::ffi::OsStringExt;

    fn vars(pairs: &[(&str, &str)]) -> Vec<(OsString, OsString)> {
        pairs
            .iter()
            .map(|(k, v)| (OsString::from(k), OsString::from(v)))
            .collect()
    }

    #[test]
    fn overrides_and_the_data_folder_are_read() {
        let env = Environment::from_vars(vars(&[
            ("LDM_STAGES__VAE__LR", "1e-4"),
            ("LDM_DATA_DIR", "/data"),
            ("HOME", "/root"),
            ("LDM_KERNELS_NO_WINOGRAD", "1"),
        ]))
        .unwrap();
        assert_eq!(
            env.overrides,
            vec![("LDM_STAGES__VAE__LR".to_string(), "1e-4".to_string())]
        );
        assert_eq!(env.data_dir(), Some("/data"));
    }

    #[test]
    fn misspelt_and_non_utf8_variables_are_refused() {
        let err = Environment::from_vars(vars(&[("LDM_DATADIR", "/x")])).unwrap_err();
        assert!(
            err.to_string().contains("did you mean `LDM_DATA_DIR`"),
            "{err}"
        );
        let bad = (
            OsString::from("LDM_STAGES__VAE__LR"),
            OsString::from_vec(vec![0x31, 0xff]),
        );
        let err = Environment::from_vars([bad]).unwrap_err().to_string();
        assert!(
            err.contains("LDM_STAGES__VAE__LR") && err.contains("UTF-8"),
            "{err}"
        );
        let other = (OsString::from("OTHER"), OsString::from_vec(vec![0xff]));
        assert!(
            Environment::from_vars([other]).is_ok(),
            "only LDM_ variables are read"
        );
        let path = (
            OsString::from("LDM_DATA_DIR"),
            OsString::from_vec(vec![b'/', 0xff]),
        );
        let err = Environment::from_vars([path]).unwrap_err().to_string();
        assert!(err.contains("LDM_DATA_DIR"), "{err}");
    }
}
