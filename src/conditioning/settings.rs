//! `[conditioning]`: how prompts reach the UNet.

use std::path::PathBuf;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::captions::MIN_BPE_VOCAB;
use super::tokenizer::TokenizerKind;
use crate::settings::Checks;

/// How samples are conditioned on prompts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct ConditioningConfig {
    /// `text` (prompts through a text encoder trained with the UNet), `class` (a label
    /// embedding as a one-token context), `clip` (a frozen CLIP text encoder from local files)
    /// or `none` (unconditional).
    pub kind: ConditioningKind,
    /// Probability of dropping a sample's context during training (classifier-free guidance).
    pub context_dropout: f64,
    /// Text encoder width; must equal `unet.context_dim`. Unset: `unet.context_dim`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub width: Option<usize>,
    /// Transformer blocks of the text encoder.
    pub layers: usize,
    /// Attention heads of the text encoder.
    pub heads: usize,
    /// Longest prompt in tokens: with the `classes` tokenizer longer prompts are an error, with
    /// a caption tokenizer they are cut (and the cut reported); with `clip`, the padded length
    /// of every prompt (Stable Diffusion: 77).
    pub max_tokens: usize,
    /// How `text` prompts become tokens: `classes` (class names and digits; the training
    /// prompt is the image's class), or a tokenizer learned from the training captions at the
    /// start of the diffusion stage and saved as its `tokenizer.json`, the training prompt
    /// being the image's caption: `bpe` (byte-level BPE: unknown words are spelled from known
    /// pieces) or `word_level` (whole words: unknown words are refused).
    pub tokenizer: TokenizerKind,
    /// Caption tokenizers: at most this many tokens (BPE: at least 258, the bytes and the two
    /// special tokens). Unset: BPE 1,000; word-level every word of the captions.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vocab_size: Option<usize>,
    /// `clip`: the text tower's weights, safetensors with Hugging Face `CLIPTextModel` names,
    /// relative to the file that sets it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub clip_weights: Option<PathBuf>,
    /// `clip`: the model's `tokenizer.json`, relative to the file that sets it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub clip_tokenizer: Option<PathBuf>,
}

impl Default for ConditioningConfig {
    fn default() -> Self {
        Self {
            kind: ConditioningKind::Text,
            context_dropout: 0.1,
            width: None,
            layers: 1,
            heads: 4,
            max_tokens: 8,
            tokenizer: TokenizerKind::Classes,
            vocab_size: None,
            clip_weights: None,
            clip_tokenizer: None,
        }
    }
}

/// Most tokens of a prompt.
pub const MAX_TOKENS: usize = 512;
/// Most transformer blocks of the text encoder.
pub const MAX_LAYERS: usize = 64;
/// Most tokens of a caption tokenizer (rows of the text encoder's embedding).
pub const MAX_VOCAB: usize = 1 << 20;

impl ConditioningConfig {
    /// The checks that need nothing but these settings (the width against the UNet's is the
    /// configuration's).
    pub fn check(&self) -> Checks {
        let mut c = Checks::new();
        c.probability("context_dropout", self.context_dropout);
        c.count_in("max_tokens", self.max_tokens, 1, MAX_TOKENS);
        if self.kind == ConditioningKind::Clip {
            for (key, value) in [
                ("clip_weights", &self.clip_weights),
                ("clip_tokenizer", &self.clip_tokenizer),
            ] {
                if value.is_none() {
                    c.fail(
                        key,
                        "conditioning.kind = \"clip\" needs it: a local file (see README)",
                    );
                }
            }
        }
        if self.kind == ConditioningKind::Text {
            c.count_in("layers", self.layers, 1, MAX_LAYERS);
            c.count_in("heads", self.heads, 1, crate::models::unet::MAX_HEADS);
        }
        if self.tokenizer != TokenizerKind::Classes && self.kind != ConditioningKind::Text {
            c.fail(
                "tokenizer",
                format!(
                    "the {} tokenizer feeds a text encoder, and conditioning.kind is \"{}\"; \
                     set kind = \"text\" or tokenizer = \"classes\"",
                    self.tokenizer.as_str(),
                    self.kind.as_str()
                ),
            );
        }
        match (self.tokenizer, self.vocab_size) {
            (TokenizerKind::Classes, Some(_)) => c.fail(
                "vocab_size",
                "the classes tokenizer's vocabulary is the class names and digits; leave \
                 vocab_size out, or choose tokenizer = \"bpe\" or \"word_level\"",
            ),
            (TokenizerKind::Bpe, Some(n)) => c.count_in("vocab_size", n, MIN_BPE_VOCAB, MAX_VOCAB),
            (TokenizerKind::WordLevel, Some(n)) => c.count_in("vocab_size", n, 3, MAX_VOCAB),
            _ => {}
        }
        c
    }
}

/// Conditioning kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ConditioningKind {
    #[default]
    Text,
    Class,
    None,
    /// A frozen CLIP text encoder from local files (`clip_weights`, `clip_tokenizer`).
    Clip,
}

impl ConditioningKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Text => "text",
            Self::Class => "class",
            Self::None => "none",
            Self::Clip => "clip",
        }
    }
}
