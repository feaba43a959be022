//! Layering an experiment: `extends` base files, the file, `LDM_...` environment variables,
//! then `--set` arguments, each later layer winning. Errors name the layer a value came from.

use std::path::{Path, PathBuf};

use figment::Figment;
use figment::error::Kind;
use figment::providers::{Format, Toml};
use serde::de::DeserializeOwned;

use super::error::{ConfigError, Problem, closest, plain_type};
use super::overrides::KeyOverride;
use super::schema::ExperimentFile;

/// Largest experiment file read (a configuration, not a data set).
const MAX_FILE_BYTES: u64 = 1 << 20;

/// An experiment as layered from its sources, not yet validated.
#[derive(Debug, Clone)]
pub struct Layered {
    /// The experiment file the user named.
    pub path: PathBuf,
    /// The figment the values came from, to name the source of any key later.
    pub figment: Figment,
    pub file: ExperimentFile,
}

impl Layered {
    /// The value of type `T` in the table at the dotted key `table` (e.g. `stages.vae`); every
    /// problem names its full key and the layer it came from.
    pub fn extract_at<T: DeserializeOwned>(&self, table: &str) -> Result<T, Vec<Problem>> {
        self.figment
            .focus(table)
            .extract::<T>()
            .map_err(|e| problems(&self.figment, e, table))
    }

    /// The keys set in the table at the dotted key `table`.
    pub fn keys_at(&self, table: &str) -> Vec<String> {
        self.figment
            .find_value(table)
            .ok()
            .and_then(|v| v.into_dict())
            .map(|d| d.into_keys().collect())
            .unwrap_or_default()
    }

    /// Where the value at a dotted key came from, e.g. "file experiments/x.toml".
    pub fn source_of(&self, key: &str) -> String {
        source_name(&self.figment, key)
    }

    /// The folder relative paths at `key` are taken from: the folder of the file that set the
    /// value, or the working folder for values from the environment or `--set`.
    pub fn base_dir_of(&self, key: &str) -> PathBuf {
        match self
            .figment
            .find_metadata(key)
            .and_then(|m| m.source.as_ref())
        {
            Some(figment::Source::File(file)) => {
                file.parent().unwrap_or(Path::new(".")).to_path_buf()
            }
            _ => PathBuf::from("."),
        }
    }
}

/// Reads and layers the experiment at `path`, then a sweep member's values, the environment
/// and the `--set` arguments.
pub fn layer(
    path: &Path,
    member: &[KeyOverride],
    env: impl IntoIterator<Item = (String, String)>,
    sets: &[String],
) -> Result<Layered, ConfigError> {
    let mut figment = Figment::new();
    for file in extends_chain(path)? {
        figment = figment.merge(Toml::file_exact(file));
    }
    for o in member {
        figment = figment.merge(o.clone());
    }
    for o in KeyOverride::from_env(env) {
        figment = figment.merge(o);
    }
    for arg in sets {
        figment = figment.merge(KeyOverride::from_set(arg)?);
    }
    let file = figment
        .extract::<ExperimentFile>()
        .map_err(|e| ConfigError::Invalid(problems(&figment, e, "")))?;
    Ok(Layered {
        path: path.to_path_buf(),
        figment,
        file,
    })
}

/// The files to layer, base first: follows `extends` from `path`, checking each file.
fn extends_chain(path: &Path) -> Result<Vec<PathBuf>, ConfigError> {
    let mut chain: Vec<PathBuf> = Vec::new();
    let mut next = Some(path.to_path_buf());
    while let Some(file) = next.take() {
        let canonical = file.canonicalize().unwrap_or_else(|_| file.clone());
        if chain
            .iter()
            .any(|seen| seen.canonicalize().ok().as_ref() == Some(&canonical))
        {
            let names: Vec<String> = chain
                .iter()
                .chain(std::iter::once(&file))
                .map(|p| p.display().to_string())
                .collect();
            return Err(ConfigError::ExtendsCycle {
                path: path.to_path_buf(),
                chain: names.join(" -> "),
            });
        }
        let table = read_toml(&file)?;
        if let Some(base) = table.get("extends") {
            let base = base.as_str().ok_or_else(|| {
                ConfigError::Invalid(vec![Problem {
                    source: format!("file {}", file.display()),
                    key: "extends".into(),
                    message: "expected a string: the path of a base experiment file".into(),
                }])
            })?;
            let dir = file.parent().unwrap_or(Path::new("."));
            next = Some(dir.join(base));
        }
        chain.push(file);
    }
    chain.reverse();
    Ok(chain)
}

/// Parses one TOML file, reporting a missing file, something that is not a regular file (a
/// folder, a FIFO that would block), a file that is not UTF-8, or a syntax error with line and
/// column.
fn read_toml(path: &Path) -> Result<toml::Table, ConfigError> {
    let read = |source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(|source| {
        if source.kind() == std::io::ErrorKind::NotFound {
            ConfigError::NotFound {
                path: path.to_path_buf(),
            }
        } else {
            read(source)
        }
    })?;
    if !meta.is_file() {
        return Err(ConfigError::NotAFile {
            path: path.to_path_buf(),
        });
    }
    if meta.len() > MAX_FILE_BYTES {
        return Err(ConfigError::TooLarge {
            path: path.to_path_buf(),
            bytes: meta.len(),
        });
    }
    let bytes = std::fs::read(path).map_err(read)?;
    let text = String::from_utf8(bytes).map_err(|e| ConfigError::NotUtf8 {
        path: path.to_path_buf(),
        offset: e.utf8_error().valid_up_to(),
    })?;
    toml::from_str::<toml::Table>(&text).map_err(|e| {
        let (line, column) = e
            .span()
            .map(|span| line_column(&text, span.start))
            .unwrap_or((1, 1));
        ConfigError::Syntax {
            path: path.to_path_buf(),
            line,
            column,
            message: e.message().trim().to_string(),
        }
    })
}

/// 1-based line and column of a byte offset.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

/// Turns figment's errors into problems naming the source, the full key and a fix. `table` is
/// the dotted key the errors' paths are relative to ("" for the whole file).
fn problems(figment: &Figment, errors: figment::Error, table: &str) -> Vec<Problem> {
    errors
        .into_iter()
        .map(|e| {
            let mut key: Vec<String> = table
                .split('.')
                .filter(|p| !p.is_empty())
                .map(str::to_string)
                .chain(e.path.iter().cloned())
                .collect();
            let message = match &e.kind {
                Kind::UnknownField(field, expected) => {
                    if key.last() != Some(field) {
                        key.push(field.clone());
                    }
                    let hint = match closest(field, expected) {
                        Some(near) => format!("; did you mean `{near}`?"),
                        None => format!("; valid keys here: {}", expected.join(", ")),
                    };
                    format!("unknown key{hint}")
                }
                Kind::MissingField(field) => {
                    if key.last().map(String::as_str) != Some(field.as_ref()) {
                        key.push(field.to_string());
                    }
                    "missing: this key is required".to_string()
                }
                Kind::UnknownVariant(found, expected) => {
                    format!(
                        "unknown value `{found}`; expected one of: {}",
                        expected.join(", ")
                    )
                }
                Kind::InvalidType(found, expected) => {
                    format!(
                        "wrong type: found {found}, expected {}",
                        plain_type(expected)
                    )
                }
                Kind::InvalidValue(found, expected) => {
                    format!(
                        "invalid value: found {found}, expected {}",
                        plain_type(expected)
                    )
                }
                Kind::InvalidLength(found, expected) => {
                    format!("wrong length {found}, expected {}", plain_type(expected))
                }
                other => plain_type(&other.to_string()),
            };
            let key = key.join(".");
            let source = if key.is_empty() {
                e.metadata
                    .as_ref()
                    .map_or_else(|| "configuration".to_string(), describe)
            } else {
                parent_source_name(figment, &key)
            };
            Problem {
                source,
                key,
                message,
            }
        })
        .collect()
}

/// Names the provider that supplied `key`; a key no layer sets has its default value.
pub(crate) fn source_name(figment: &Figment, key: &str) -> String {
    // An entry of a list (`a.b[2].c`) comes from where the list was set.
    let key = key.split('[').next().unwrap_or(key);
    match figment.find_metadata(key) {
        Some(meta) => describe(meta),
        None => "default value".to_string(),
    }
}

/// Names the provider of `key` or, failing that, of its nearest parent (for keys that are
/// missing or unknown, where the parent table is where the fix goes).
fn parent_source_name(figment: &Figment, key: &str) -> String {
    let mut probe = key.to_string();
    loop {
        if let Some(meta) = figment.find_metadata(&probe) {
            return describe(meta);
        }
        match probe.rsplit_once('.') {
            Some((parent, _)) => probe = parent.to_string(),
            None => return "defaults".to_string(),
        }
    }
}

fn describe(meta: &figment::Metadata) -> String {
    match &meta.source {
        Some(figment::Source::File(path)) => format!("file {}", display_path(path)),
        _ => meta.name.to_string(),
    }
}

/// A path as the user would write it: relative to the working folder when it is inside it.
fn display_path(path: &Path) -> String {
    std::env::current_dir()
        .ok()
        .and_then(|cwd| path.strip_prefix(cwd).ok().map(Path::to_path_buf))
        .unwrap_or_else(|| path.to_path_buf())
        .display()
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_column_is_one_based() {
        let text = "a = 1\nb = \n";
        assert_eq!(line_column(text, 0), (1, 1));
        assert_eq!(line_column(text, 10), (2, 5));
    }
}
