//! Tokenizers learned from the training captions with Hugging Face `tokenizers`, so prompts may
//! use any word the captions used.
//!
//! Both kinds lowercase the text. `bpe` is byte-level BPE (GPT-2's pre-tokenizer and
//! alphabet): its 256 byte tokens spell anything, so a word the captions never used is split
//! into known pieces and never refused. `word_level` keeps whole words (runs of letters and
//! digits, and runs of punctuation) and refuses a prompt with a word it does not know, naming
//! the known words closest to it. Ids 0 and 1 are `<pad>` and `<unk>` in both.
//!
//! Prompts longer than `max_tokens` are cut to their first `max_tokens` tokens, and the number
//! of tokens cut is returned for the caller to report: captions are data, and one long caption
//! must not stop a run. Shorter prompts are padded with `<pad>`.
//!
//! The saved file is a Hugging Face `tokenizer.json` whose truncation and padding settings
//! hold `max_tokens`.

use serde::{Deserialize, Serialize};
use tokenizers::models::bpe::{BPE, BpeTrainer};
use tokenizers::models::wordlevel::{WordLevel, WordLevelTrainer};
use tokenizers::models::{ModelWrapper, TrainerWrapper};
use tokenizers::normalizers::Lowercase;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::whitespace::Whitespace;
use tokenizers::{
    AddedToken, PaddingParams, PaddingStrategy, Tokenizer, TruncationParams, TruncationStrategy,
};

use super::vocab::{PAD, PromptError};

/// Id of `<unk>`.
pub const UNK: u32 = 1;
const PAD_TOKEN: &str = "<pad>";
const UNK_TOKEN: &str = "<unk>";
/// Byte-level BPE needs room for the special tokens and the 256 bytes.
pub const MIN_BPE_VOCAB: usize = 2 + 256;
/// The BPE vocabulary when none is asked for: the bytes and some 740 merges. Measured on the
/// emoji data set (1,238 training captions, about 1,300 distinct words): no caption of either
/// split is longer than 11 tokens.
pub const DEFAULT_BPE_VOCAB: usize = 1000;
/// How many known words an unknown-word error names.
const NEAREST: usize = 8;

/// The model a caption tokenizer learns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CaptionModel {
    Bpe,
    WordLevel,
}

/// Why a caption tokenizer could not be trained or read.
#[derive(Debug, thiserror::Error)]
pub enum CaptionTokenizerError {
    #[error("no captions to learn a tokenizer from")]
    NoCaptions,
    #[error("a byte-level BPE vocabulary needs at least {MIN_BPE_VOCAB} tokens, not {0}")]
    VocabTooSmall(usize),
    #[error("max_tokens must be at least 1")]
    NoTokens,
    #[error("{0}")]
    Tokenizers(String),
    #[error("not a tokenizer of ldm-run: {0}")]
    Foreign(String),
}

fn hf(e: tokenizers::Error) -> CaptionTokenizerError {
    CaptionTokenizerError::Tokenizers(e.to_string())
}

/// A tokenizer learned from captions. Encodes without truncation or padding; [`Self::encode`]
/// does both itself, so it can count what it cut.
#[derive(Clone)]
pub struct CaptionTokenizer {
    /// Boxed: a tokenizer is large, and prompt tokenizers are moved about.
    tokenizer: Box<Tokenizer>,
    model: CaptionModel,
    max_tokens: usize,
}

impl std::fmt::Debug for CaptionTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaptionTokenizer")
            .field("model", &self.model)
            .field("vocab_size", &self.vocab_size())
            .field("max_tokens", &self.max_tokens)
            .finish()
    }
}

/// A prompt's token ids, padded to `max_tokens`, and how many tokens were cut to fit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoded {
    pub ids: Vec<u32>,
    pub truncated: usize,
}

impl CaptionTokenizer {
    /// Learns a `model` tokenizer of at most `vocab_size` tokens (`None`: word-level keeps
    /// every word, BPE has [`DEFAULT_BPE_VOCAB`]) from `captions`. Deterministic: the same captions in any
    /// order give the same tokenizer.
    pub fn train<S: AsRef<str> + Sync>(
        model: CaptionModel,
        captions: &[S],
        vocab_size: Option<usize>,
        max_tokens: usize,
    ) -> Result<Self, CaptionTokenizerError> {
        if captions.iter().all(|c| c.as_ref().trim().is_empty()) {
            return Err(CaptionTokenizerError::NoCaptions);
        }
        if max_tokens == 0 {
            return Err(CaptionTokenizerError::NoTokens);
        }
        let specials = vec![
            AddedToken::from(PAD_TOKEN, true),
            AddedToken::from(UNK_TOKEN, true),
        ];
        let (mut tokenizer, mut trainer): (Tokenizer, TrainerWrapper) = match model {
            CaptionModel::Bpe => {
                let size = vocab_size.unwrap_or(DEFAULT_BPE_VOCAB);
                if size < MIN_BPE_VOCAB {
                    return Err(CaptionTokenizerError::VocabTooSmall(size));
                }
                let mut t = Tokenizer::new(BPE::default());
                t.with_pre_tokenizer(Some(ByteLevel::default()));
                t.with_decoder(Some(ByteLevel::default()));
                let trainer = BpeTrainer::builder()
                    .vocab_size(size)
                    .min_frequency(0)
                    .show_progress(false)
                    .special_tokens(specials)
                    .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
                    .build();
                (t, trainer.into())
            }
            CaptionModel::WordLevel => {
                let unk = WordLevel::builder()
                    .unk_token(UNK_TOKEN.into())
                    .build()
                    .map_err(hf)?;
                let mut t = Tokenizer::new(unk);
                t.with_pre_tokenizer(Some(Whitespace));
                let trainer = WordLevelTrainer::builder()
                    .vocab_size(vocab_size.unwrap_or(usize::MAX))
                    .min_frequency(0)
                    .show_progress(false)
                    .special_tokens(specials)
                    .build()
                    .map_err(|e| CaptionTokenizerError::Tokenizers(e.to_string()))?;
                (t, trainer.into())
            }
        };
        tokenizer.with_normalizer(Some(Lowercase)).map_err(hf)?;
        tokenizer
            .train(&mut trainer, captions.iter().map(|c| c.as_ref()))
            .map_err(hf)?;
        Ok(Self {
            tokenizer: Box::new(tokenizer),
            model,
            max_tokens,
        })
    }

    pub fn model(&self) -> CaptionModel {
        self.model
    }

    pub fn max_tokens(&self) -> usize {
        self.max_tokens
    }

    /// Tokens, special ones included: the text encoder's embedding rows.
    pub fn vocab_size(&self) -> usize {
        self.tokenizer.get_vocab_size(true)
    }

    /// The ids of `prompt`, cut to `max_tokens` and padded with [`PAD`]. Word-level tokenizers
    /// refuse unknown words.
    pub fn encode(&self, prompt: &str) -> Result<Encoded, PromptError> {
        let encoding = self
            .tokenizer
            .encode(prompt, false)
            .map_err(|e| PromptError::Tokenizer(e.to_string()))?;
        let mut ids = encoding.get_ids().to_vec();
        if let Some(i) = ids.iter().position(|&id| id == UNK) {
            let (start, end) = encoding.get_offsets()[i];
            let word = prompt.get(start..end).unwrap_or(prompt).to_string();
            let known = self.nearest_words(&word.to_lowercase());
            return Err(PromptError::UnknownWord {
                word,
                prompt: prompt.to_string(),
                known,
            });
        }
        let truncated = ids.len().saturating_sub(self.max_tokens);
        ids.resize(self.max_tokens, PAD);
        Ok(Encoded { ids, truncated })
    }

    /// The text of `ids`, padding left out.
    pub fn decode(&self, ids: &[u32]) -> String {
        let kept: Vec<u32> = ids.iter().copied().filter(|&id| id != PAD).collect();
        self.tokenizer
            .decode(&kept, true)
            .map(|t| t.trim().to_string())
            .unwrap_or_default()
    }

    /// The known words closest to `word` (edit distance, then alphabetical), and how many
    /// there are in all.
    fn nearest_words(&self, word: &str) -> String {
        let vocab = self.tokenizer.get_vocab(false);
        let mut words: Vec<(usize, &String)> = vocab
            .keys()
            .filter(|w| *w != PAD_TOKEN && *w != UNK_TOKEN)
            .map(|w| (edit_distance(word, w), w))
            .collect();
        words.sort();
        let shown: Vec<&str> = words
            .iter()
            .take(NEAREST)
            .map(|(_, w)| w.as_str())
            .collect();
        format!("{} ({} words in all)", shown.join(", "), words.len())
    }

    /// The `tokenizer.json` text: the tokenizer with truncation and padding at `max_tokens`.
    pub fn to_json(&self) -> Result<String, CaptionTokenizerError> {
        let mut t = (*self.tokenizer).clone();
        t.with_truncation(Some(TruncationParams {
            max_length: self.max_tokens,
            strategy: TruncationStrategy::LongestFirst,
            ..TruncationParams::default()
        }))
        .map_err(hf)?;
        t.with_padding(Some(PaddingParams {
            strategy: PaddingStrategy::Fixed(self.max_tokens),
            pad_id: PAD,
            pad_token: PAD_TOKEN.into(),
            ..PaddingParams::default()
        }));
        t.to_string(true).map_err(hf)
    }

    /// Reads what [`Self::to_json`] wrote.
    pub fn from_json(text: &str) -> Result<Self, CaptionTokenizerError> {
        let mut tokenizer: Tokenizer = text.parse().map_err(hf)?;
        let foreign = CaptionTokenizerError::Foreign;
        let max_tokens = tokenizer
            .get_truncation()
            .map(|t| t.max_length)
            .ok_or_else(|| foreign("it has no truncation length (max_tokens)".into()))?;
        let model = match tokenizer.get_model() {
            ModelWrapper::BPE(_) => CaptionModel::Bpe,
            ModelWrapper::WordLevel(_) => CaptionModel::WordLevel,
            _ => return Err(foreign("its model is neither BPE nor word-level".into())),
        };
        if tokenizer.token_to_id(PAD_TOKEN) != Some(PAD)
            || tokenizer.token_to_id(UNK_TOKEN) != Some(UNK)
        {
            return Err(foreign(format!(
                "{PAD_TOKEN} and {UNK_TOKEN} are not ids {PAD} and {UNK}"
            )));
        }
        tokenizer.with_truncation(None).map_err(hf)?;
        tokenizer.with_padding(None);
        Ok(Self {
            tokenizer: Box::new(tokenizer),
            model,
            max_tokens,
        })
    }
}

/// Levenshtein distance over characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let next = (diagonal + usize::from(ca != cb))
                .min(row[j] + 1)
                .min(row[j + 1] + 1);
            diagonal = row[j + 1];
            row[j + 1] = next;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edit_distances() {
        assert_eq!(edit_distance("apple", "apple"), 0);
        assert_eq!(edit_distance("aple", "apple"), 1);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("", "abc"), 3);
    }
}
