//! Prompt conditioning: turns prompts into the cross-attention context of the UNet, with the
//! null context classifier-free guidance needs.

pub mod captions;
pub mod prompts;
pub mod settings;
pub mod tokenizer;
pub mod vocab;

use candle_core::{Device, Tensor};
use candle_nn::{Init, VarBuilder};

use crate::models::clip_text::ClipText;
use crate::models::text_encoder::{TextEncoder, TextEncoderConfig};
pub use captions::{CaptionModel, CaptionTokenizer, Encoded};
pub use settings::{ConditioningConfig, ConditioningKind};
pub use tokenizer::{PromptTokenizer, TokenizerError, TokenizerKind};
pub use vocab::{PromptError, Vocabulary};

/// What a prompt becomes in the UNet.
#[derive(Debug, Clone)]
pub enum Conditioner {
    /// Prompts through a transformer text encoder: a (B, max_tokens, width) context.
    Text(TextEncoder),
    /// The prompt's class through an embedding table (last row = null): a (B, 1, width) context.
    Class { table: Tensor, classes: usize },
    /// Prompts through a frozen CLIP text encoder: a (B, max_tokens, width) context; the null
    /// context is the empty prompt's.
    Clip {
        encoder: std::sync::Arc<ClipText>,
        tokens: usize,
    },
    /// Unconditional: no context.
    None,
}

impl Conditioner {
    /// Builds the conditioner of `cfg` for a tokenizer, `width` wide.
    pub fn new(
        cfg: &ConditioningConfig,
        tokenizer: &PromptTokenizer,
        width: usize,
        vb: VarBuilder,
    ) -> anyhow::Result<Self> {
        Ok(match cfg.kind {
            ConditioningKind::Text => Self::Text(TextEncoder::new(
                TextEncoderConfig {
                    vocab: tokenizer.vocab_size(),
                    max_tokens: tokenizer.max_tokens(),
                    width,
                    layers: cfg.layers,
                    heads: cfg.heads,
                },
                vb.pp("text_encoder"),
            )?),
            ConditioningKind::Class => {
                let classes = class_vocabulary(tokenizer)?.class_names.len();
                let init = Init::Randn {
                    mean: 0.0,
                    stdev: 1.0,
                };
                Self::Class {
                    table: vb.get_with_hints((classes + 1, width), "class_embedding", init)?,
                    classes,
                }
            }
            ConditioningKind::None => Self::None,
            ConditioningKind::Clip => {
                let (Some(weights), Some(tokenizer)) = (&cfg.clip_weights, &cfg.clip_tokenizer)
                else {
                    anyhow::bail!(
                        "conditioning.kind = \"clip\" needs clip_weights and clip_tokenizer"
                    );
                };
                let encoder = ClipText::load(ClipText::open(weights, vb.device())?, tokenizer)?;
                if encoder.width != width {
                    anyhow::bail!(
                        "the CLIP text encoder of {} is {} wide, but unet.context_dim is {width}; \
                         set unet.context_dim = {}",
                        weights.display(),
                        encoder.width,
                        encoder.width
                    );
                }
                Self::Clip {
                    encoder: std::sync::Arc::new(encoder),
                    tokens: cfg.max_tokens,
                }
            }
        })
    }

    /// Width of the context, `None` when unconditional.
    pub fn is_conditional(&self) -> bool {
        !matches!(self, Self::None)
    }

    /// The context for a batch of prompts; `None` entries get the null context (for guidance
    /// and context dropout). Unknown words are errors; caption tokenizers cut long prompts
    /// silently here (callers report cuts, see [`prompts::report_cuts`]).
    pub fn context(
        &self,
        tokenizer: &PromptTokenizer,
        prompts: &[Option<&str>],
        device: &Device,
    ) -> anyhow::Result<Option<Tensor>> {
        match self {
            Self::None => Ok(None),
            Self::Text(encoder) => {
                let tokens = tokenizer.max_tokens();
                let mut ids = Vec::with_capacity(prompts.len() * tokens);
                for p in prompts {
                    ids.extend(tokenizer.encode(p.unwrap_or(""))?.ids);
                }
                let ids = Tensor::from_vec(ids, (prompts.len(), tokens), device)?;
                Ok(Some(encoder.forward(&ids)?))
            }
            Self::Clip { encoder, tokens } => {
                let texts: Vec<&str> = prompts.iter().map(|p| p.unwrap_or("")).collect();
                Ok(Some(encoder.encode(&texts, *tokens, device)?))
            }
            Self::Class { table, classes } => {
                let vocab = class_vocabulary(tokenizer)?;
                let labels: Vec<u32> = prompts
                    .iter()
                    .map(|p| p.map_or(Ok(*classes as u32), |p| vocab.label_of(p)))
                    .collect::<std::result::Result<_, _>>()?;
                let idx = Tensor::from_vec(labels, prompts.len(), device)?;
                Ok(Some(table.index_select(&idx, 0)?.unsqueeze(1)?))
            }
        }
    }
}

/// The class vocabulary class conditioning needs (the configuration's checks allow no other
/// tokenizer with it).
fn class_vocabulary(tokenizer: &PromptTokenizer) -> anyhow::Result<&Vocabulary> {
    tokenizer.vocabulary().ok_or_else(|| {
        anyhow::anyhow!(
            "class conditioning needs the classes tokenizer, not {}",
            tokenizer.kind().as_str()
        )
    })
}
