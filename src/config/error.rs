//! What can be wrong with an experiment file, said so the user can fix it.

use std::fmt;
use std::path::PathBuf;

use super::load::Layered;
use crate::settings::Invalid;

/// One problem found in the layered configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    /// Where the value came from: a file, an environment variable or a `--set` argument.
    pub source: String,
    /// Dotted key, e.g. `autoencoder.ch`.
    pub key: String,
    /// What is wrong and what was expected.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: key `{}`: {}", self.source, self.key, self.message)
    }
}

/// Collects problems, naming the source of each key through the layers it came from.
pub struct Problems<'a> {
    layered: &'a Layered,
    pub problems: Vec<Problem>,
}

impl<'a> Problems<'a> {
    pub fn new(layered: &'a Layered) -> Self {
        Self {
            layered,
            problems: Vec::new(),
        }
    }

    pub fn fail(&mut self, key: &str, message: String) {
        self.problems.push(Problem {
            source: self.layered.source_of(key),
            key: key.to_string(),
            message,
        });
    }

    /// The invalid values of the settings table at `table`.
    pub fn table(&mut self, table: &str, invalid: Vec<Invalid>) {
        for i in invalid {
            self.fail(&format!("{table}.{}", i.key), i.message);
        }
    }

    /// The first of `keys` some layer sets (the likeliest cause of a problem between them),
    /// else the first.
    pub fn blame<'k>(&self, keys: &[&'k str]) -> &'k str {
        keys.iter()
            .copied()
            .find(|k| self.layered.figment.find_metadata(k).is_some())
            .unwrap_or(keys[0])
    }

    /// `Ok` when nothing was found, else every problem.
    pub fn into_result(self) -> Result<(), ConfigError> {
        if self.problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid(self.problems))
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(
        "experiment file {path} does not exist (give the path of a .toml experiment file, e.g. experiments/smoke.toml)"
    )]
    NotFound { path: PathBuf },
    #[error("cannot read experiment file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "experiment file {path} is not a regular file (a folder, a pipe or a device); give the path of a .toml file"
    )]
    NotAFile { path: PathBuf },
    #[error(
        "experiment file {path} is {bytes} bytes, more than an experiment file can be (1 MiB); is it the right file?"
    )]
    TooLarge { path: PathBuf, bytes: u64 },
    #[error(
        "experiment file {path} is not UTF-8 text (invalid byte at offset {offset}); save it as UTF-8"
    )]
    NotUtf8 { path: PathBuf, offset: usize },
    #[error("{path}:{line}:{column}: malformed TOML: {message}")]
    Syntax {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("{path}: `extends` forms a cycle: {chain}")]
    ExtendsCycle { path: PathBuf, chain: String },
    #[error("invalid argument `--set {arg}`: {why}")]
    BadSet { arg: String, why: String },
    #[error("{}", list(.0))]
    Invalid(Vec<Problem>),
}

fn list(problems: &[Problem]) -> String {
    let mut out = format!(
        "the experiment configuration has {} problem{}:",
        problems.len(),
        if problems.len() == 1 { "" } else { "s" }
    );
    for p in problems {
        out.push_str("\n  - ");
        out.push_str(&p.to_string());
    }
    out
}

/// serde's name of an expected type, in the words of a TOML file: `struct UnetConfig` is a
/// table, `usize` a non-negative integer, a sequence a list.
pub fn plain_type(expected: &str) -> String {
    let word = |w: &str| -> Option<&'static str> {
        Some(match w {
            "usize" | "u64" | "u32" | "u16" | "u8" => "a non-negative integer",
            "isize" | "i64" | "i32" | "i16" | "i8" => "an integer",
            "f64" | "f32" => "a number",
            "bool" => "a boolean",
            "a map" | "map" => "a table",
            "a sequence" | "sequence" => "a list",
            "option" => "a value",
            _ => return None,
        })
    };
    let e = expected.trim();
    if let Some(w) = word(e) {
        return w.to_string();
    }
    if e.starts_with("struct ")
        || e.starts_with("newtype struct ")
        || e.starts_with("tuple struct ")
    {
        return "a table".to_string();
    }
    if e.starts_with("enum ") || e.starts_with("variant identifier") {
        return "one of the names listed for this key".to_string();
    }
    e.split(' ')
        .map(|w| word(w).map_or_else(|| w.to_string(), str::to_string))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The valid name closest to `wrong` (edit distance), if any is reasonably close.
pub fn closest<'a>(wrong: &str, valid: &[&'a str]) -> Option<&'a str> {
    valid
        .iter()
        .map(|v| (edit_distance(wrong, v), *v))
        .filter(|(d, v)| *d <= (v.len().max(wrong.len()) / 2).max(2))
        .min()
        .map(|(_, v)| v)
}

/// Edits (insert, delete, substitute, swap of neighbours) between two words.
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            d[i][j] = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                d[i][j] = d[i][j].min(d[i - 2][j - 2] + 1);
            }
        }
    }
    d[a.len()][b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closest_key_is_suggested() {
        let keys = ["steps", "batch_size", "lr", "betas"];
        assert_eq!(closest("setps", &keys), Some("steps"));
        assert_eq!(closest("batchsize", &keys), Some("batch_size"));
        assert_eq!(closest("lrr", &keys), Some("lr"));
        assert_eq!(closest("completely_different", &keys), None);
    }

    #[test]
    fn rust_type_names_become_toml_words() {
        assert_eq!(plain_type("struct UnetConfig"), "a table");
        assert_eq!(plain_type("usize"), "a non-negative integer");
        assert_eq!(plain_type("f64"), "a number");
        assert_eq!(plain_type("a sequence"), "a list");
        assert_eq!(plain_type("an array of length 2"), "an array of length 2");
        assert_eq!(
            plain_type("enum LrDecay"),
            "one of the names listed for this key"
        );
    }

    #[test]
    fn edit_distance_counts_edits() {
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("same", "same"), 0);
        assert_eq!(edit_distance("setps", "steps"), 1);
    }
}
