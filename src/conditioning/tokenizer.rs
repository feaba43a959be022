//! The prompt tokenizer of a run, saved as its `tokenizer.json`: the class vocabulary
//! ([`Vocabulary`]: class names and digits, unchanged) or a tokenizer learned from the
//! captions ([`CaptionTokenizer`]: byte-level BPE or word-level).
//!
//! The two file formats tell themselves apart: a class vocabulary is the JSON object
//! `{class_names, words, max_tokens}` that runs have always saved, a caption tokenizer a
//! Hugging Face `tokenizer.json`. Too-long prompts: the class vocabulary refuses them (as it
//! always has), caption tokenizers cut them and report how many tokens were cut.

use std::path::Path;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::captions::{CaptionModel, CaptionTokenizer, CaptionTokenizerError, Encoded};
use super::settings::{ConditioningConfig, ConditioningKind};
use super::vocab::{PromptError, Vocabulary};

/// Which tokenizer a run builds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum TokenizerKind {
    /// Class names and digits (every data set with classes).
    #[default]
    Classes,
    /// Byte-level BPE learned from the captions: unknown words become known pieces.
    Bpe,
    /// Whole words of the captions: unknown words are refused.
    WordLevel,
}

impl TokenizerKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Classes => "classes",
            Self::Bpe => "bpe",
            Self::WordLevel => "word_level",
        }
    }
}

/// Why a tokenizer could not be built, saved or read.
#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    #[error(
        "the {kind} tokenizer learns from captions, and the data set has none; use a captioned \
         image_folder (metadata.jsonl or metadata.csv with a caption column), or \
         conditioning.tokenizer = \"classes\""
    )]
    NoCaptions { kind: &'static str },
    #[error(
        "the classes tokenizer needs class names, and the data set has none; name a class \
         column (dataset.label_column), or learn a tokenizer from the captions \
         (conditioning.tokenizer = \"bpe\" or \"word_level\")"
    )]
    NoClasses,
    #[error(transparent)]
    Captions(#[from] CaptionTokenizerError),
    #[error("could not write the tokenizer as JSON: {0}")]
    Json(String),
    #[error("could not {action} {}: {source}", .path.display())]
    Io {
        action: &'static str,
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} is not a tokenizer.json of ldm-run: {message}", .path.display())]
    Format {
        path: std::path::PathBuf,
        message: String,
    },
}

/// Turns prompts into token ids.
#[derive(Debug, Clone)]
pub enum PromptTokenizer {
    Classes(Vocabulary),
    Captions(CaptionTokenizer),
}

impl PromptTokenizer {
    /// The tokenizer of `kind` for a data set: its `class_names` for [`TokenizerKind::Classes`],
    /// its `captions` for the others. `vocab_size`: the BPE vocabulary (`None`:
    /// [`super::captions::DEFAULT_BPE_VOCAB`]), the most words a word-level one keeps (`None`:
    /// all).
    pub fn build(
        kind: TokenizerKind,
        class_names: &[String],
        captions: Option<&[String]>,
        vocab_size: Option<usize>,
        max_tokens: usize,
    ) -> Result<Self, TokenizerError> {
        let model = match kind {
            TokenizerKind::Classes if class_names.is_empty() => {
                return Err(TokenizerError::NoClasses);
            }
            TokenizerKind::Classes => {
                return Ok(Self::Classes(Vocabulary::for_classes(
                    class_names,
                    max_tokens,
                )));
            }
            TokenizerKind::Bpe => CaptionModel::Bpe,
            TokenizerKind::WordLevel => CaptionModel::WordLevel,
        };
        let captions = captions
            .filter(|c| !c.is_empty())
            .ok_or(TokenizerError::NoCaptions {
                kind: kind.as_str(),
            })?;
        Ok(Self::Captions(CaptionTokenizer::train(
            model, captions, vocab_size, max_tokens,
        )?))
    }

    /// The tokenizer `cfg` asks for, for a data set's classes and training captions.
    /// Unconditional models take no prompts: they get the class vocabulary, however empty.
    pub fn for_config(
        cfg: &ConditioningConfig,
        class_names: &[String],
        captions: Option<&[String]>,
    ) -> Result<Self, TokenizerError> {
        if cfg.kind == ConditioningKind::None {
            return Ok(Self::Classes(Vocabulary::for_classes(
                class_names,
                cfg.max_tokens,
            )));
        }
        Self::build(
            cfg.tokenizer,
            class_names,
            captions,
            cfg.vocab_size,
            cfg.max_tokens,
        )
    }

    pub fn kind(&self) -> TokenizerKind {
        match self {
            Self::Classes(_) => TokenizerKind::Classes,
            Self::Captions(c) => match c.model() {
                CaptionModel::Bpe => TokenizerKind::Bpe,
                CaptionModel::WordLevel => TokenizerKind::WordLevel,
            },
        }
    }

    /// Ids of a prompt, padded to [`Self::max_tokens`], and how many tokens were cut.
    pub fn encode(&self, prompt: &str) -> Result<Encoded, PromptError> {
        match self {
            Self::Classes(v) => Ok(Encoded {
                ids: v.encode(prompt)?,
                truncated: 0,
            }),
            Self::Captions(c) => c.encode(prompt),
        }
    }

    /// The prompt of `ids`, without padding.
    pub fn decode(&self, ids: &[u32]) -> String {
        match self {
            Self::Classes(v) => v.decode(ids),
            Self::Captions(c) => c.decode(ids),
        }
    }

    /// Rows of the text encoder's token embedding.
    pub fn vocab_size(&self) -> usize {
        match self {
            Self::Classes(v) => v.words.len(),
            Self::Captions(c) => c.vocab_size(),
        }
    }

    pub fn max_tokens(&self) -> usize {
        match self {
            Self::Classes(v) => v.max_tokens,
            Self::Captions(c) => c.max_tokens(),
        }
    }

    /// The class vocabulary, for class conditioning and class prompts.
    pub fn vocabulary(&self) -> Option<&Vocabulary> {
        match self {
            Self::Classes(v) => Some(v),
            Self::Captions(_) => None,
        }
    }

    /// The `tokenizer.json` text.
    pub fn to_json(&self) -> Result<String, TokenizerError> {
        match self {
            Self::Classes(v) => {
                serde_json::to_string_pretty(v).map_err(|e| TokenizerError::Json(e.to_string()))
            }
            Self::Captions(c) => Ok(c.to_json()?),
        }
    }

    /// Reads a `tokenizer.json` of either format; `path` names it in errors.
    pub fn from_json(text: &str, path: &Path) -> Result<Self, TokenizerError> {
        let format = |message: String| TokenizerError::Format {
            path: path.to_path_buf(),
            message,
        };
        let value: serde_json::Value =
            serde_json::from_str(text).map_err(|e| format(e.to_string()))?;
        if value.get("class_names").is_some() {
            serde_json::from_value(value)
                .map(Self::Classes)
                .map_err(|e| format(e.to_string()))
        } else {
            CaptionTokenizer::from_json(text)
                .map(Self::Captions)
                .map_err(|e| format(e.to_string()))
        }
    }

    /// Writes `tokenizer.json` to `path` (atomically: the old file or the new one, never half).
    pub fn save(&self, path: &Path) -> Result<(), TokenizerError> {
        crate::atomic_file::write(path, self.to_json()?.as_bytes()).map_err(|e| {
            TokenizerError::Io {
                action: "write",
                path: e.path,
                source: e.source,
            }
        })
    }

    /// Reads the `tokenizer.json` at `path`.
    pub fn load(path: &Path) -> Result<Self, TokenizerError> {
        let text = std::fs::read_to_string(path).map_err(|source| TokenizerError::Io {
            action: "read",
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_json(&text, path)
    }
}
