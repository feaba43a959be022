//! What generated images are judged against, for the eval stage and for a diffusion stage
//! judging its samples while it trains: the real reference images and prompts drawn like
//! training prompts with the class of each.
//!
//! The reference is the test split for class prompts. With a caption tokenizer a prompt is the
//! caption of a random training image and its class that image's class (from
//! `dataset.label_column`, say emoji groups); the reference is then every image of both splits,
//! since a captioned data set's test split may hold fewer images than the features have
//! dimensions (a covariance that cannot be estimated).

use anyhow::{Context, bail};

use super::artifacts::TrainedClassifier;
use super::context::StageContext;
use crate::conditioning::{PromptTokenizer, prompts};
use crate::data::{Dataset, Split};
use crate::rng::Rng;

/// Refuses a classifier that does not know the classes the diffusion model was trained on.
pub fn check_classes(
    judge: &TrainedClassifier,
    tokenizer: &PromptTokenizer,
    test: &Dataset,
    classifier_stage: &str,
    diffusion_stage: &str,
) -> anyhow::Result<()> {
    let trained_on = tokenizer
        .vocabulary()
        .map_or(&test.class_names, |v| &v.class_names);
    if judge.class_names != *trained_on {
        bail!(
            "the classifier of stage `{classifier_stage}` knows the classes {:?}, but the diffusion \
             stage `{diffusion_stage}` was trained on {:?}",
            judge.class_names,
            trained_on
        );
    }
    Ok(())
}

/// The real images samples are compared with, and where prompts come from.
pub enum Reference {
    /// Class prompts: the test split.
    Test,
    /// Caption prompts: the training split then the test split; prompts from the first
    /// `train` images.
    All { images: Dataset, train: usize },
}

impl Reference {
    pub fn load(
        ctx: &StageContext,
        tokenizer: &PromptTokenizer,
        test: &Dataset,
    ) -> anyhow::Result<Self> {
        if tokenizer.vocabulary().is_some() {
            return Ok(Self::Test);
        }
        let mut images = ctx.load_data(Split::Train)?;
        let train = images.len();
        images.append(test.clone())?;
        Ok(Self::All { images, train })
    }

    pub fn images<'a>(&'a self, test: &'a Dataset) -> &'a Dataset {
        match self {
            Self::Test => test,
            Self::All { images, .. } => images,
        }
    }

    /// `count` prompts drawn like training prompts, and the class of each.
    pub fn prompts(
        &self,
        tokenizer: &PromptTokenizer,
        count: usize,
        rng: &mut Rng,
    ) -> anyhow::Result<(Vec<String>, Vec<u32>)> {
        match (self, tokenizer.vocabulary()) {
            (Self::All { images, train }, _) if *train > 0 => {
                let picked: Vec<usize> = (0..count).map(|_| rng.below(*train)).collect();
                let captions = picked
                    .iter()
                    .map(|&i| images.caption(i).map(str::to_string))
                    .collect::<Option<Vec<String>>>()
                    .context("the training images have no captions")?;
                Ok((captions, picked.iter().map(|&i| images.labels[i]).collect()))
            }
            (Self::Test, Some(vocab)) => {
                let words = prompts::random(vocab, count, rng);
                let labels = words
                    .iter()
                    .map(|w| vocab.label_of(w))
                    .collect::<Result<_, _>>()?;
                Ok((words, labels))
            }
            _ => bail!("no training images to draw prompts from"),
        }
    }
}
