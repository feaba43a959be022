//! The prompt vocabulary: a word-level tokenizer built from the data set's class names and
//! their digits ("seven" and "7" both name class 7), saved with the run.

use serde::{Deserialize, Serialize};

use crate::rng::Rng;

/// Token id of padding (also the whole of the empty, unconditional prompt).
pub const PAD: u32 = 0;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum PromptError {
    #[error("unknown word `{word}` in prompt \"{prompt}\"; known words: {known}")]
    UnknownWord {
        word: String,
        prompt: String,
        known: String,
    },
    #[error("prompt \"{prompt}\" has {count} words; at most {max} fit (conditioning.max_tokens)")]
    TooLong {
        prompt: String,
        count: usize,
        max: usize,
    },
    /// The Hugging Face tokenizer failed on the prompt.
    #[error("could not tokenize the prompt: {0}")]
    Tokenizer(String),
}

/// Words, their ids and the class each names.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Vocabulary {
    /// Class names, index = label.
    pub class_names: Vec<String>,
    /// Token strings, index = id; id 0 is `<pad>`.
    pub words: Vec<String>,
    /// Tokens per prompt (prompts are padded to this length).
    pub max_tokens: usize,
}

impl Vocabulary {
    /// `<pad>`, then each class name, then each class's digit.
    pub fn for_classes(class_names: &[String], max_tokens: usize) -> Self {
        let mut words = vec!["<pad>".to_string()];
        words.extend(class_names.iter().map(|n| n.to_lowercase()));
        words.extend((0..class_names.len()).map(|i| i.to_string()));
        Self {
            class_names: class_names.to_vec(),
            words,
            max_tokens,
        }
    }

    /// The class a word names (its class name or its digit).
    pub fn label_of_word(&self, word: &str) -> Option<u32> {
        let w = word.to_lowercase();
        let n = self.class_names.len();
        self.words
            .iter()
            .position(|v| *v == w)
            .filter(|&id| id > 0)
            .map(|id| ((id - 1) % n) as u32)
    }

    /// The class a one-word prompt names.
    pub fn label_of(&self, prompt: &str) -> Result<u32, PromptError> {
        let ids = self.encode(prompt)?;
        let first = ids.iter().find(|&&id| id != PAD).copied().unwrap_or(PAD);
        let word = &self.words[first as usize];
        self.label_of_word(word)
            .ok_or_else(|| PromptError::UnknownWord {
                word: prompt.to_string(),
                prompt: prompt.to_string(),
                known: self.known(),
            })
    }

    /// Token ids of a prompt, padded with [`PAD`] to `max_tokens`.
    pub fn encode(&self, prompt: &str) -> Result<Vec<u32>, PromptError> {
        let mut ids = Vec::with_capacity(self.max_tokens);
        for word in prompt.split_whitespace() {
            let w = word.to_lowercase();
            match self.words.iter().position(|v| *v == w).filter(|&id| id > 0) {
                Some(id) => ids.push(id as u32),
                None => {
                    return Err(PromptError::UnknownWord {
                        word: word.to_string(),
                        prompt: prompt.to_string(),
                        known: self.known(),
                    });
                }
            }
        }
        if ids.len() > self.max_tokens {
            return Err(PromptError::TooLong {
                prompt: prompt.to_string(),
                count: ids.len(),
                max: self.max_tokens,
            });
        }
        ids.resize(self.max_tokens, PAD);
        Ok(ids)
    }

    /// The prompt of token ids, without padding.
    pub fn decode(&self, ids: &[u32]) -> String {
        ids.iter()
            .filter(|&&id| id != PAD)
            .filter_map(|&id| self.words.get(id as usize).cloned())
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// A training prompt for `label`: its name or its digit, with equal chance.
    pub fn prompt_for(&self, label: u32, rng: &mut Rng) -> String {
        if rng.uniform() < 0.5 {
            self.class_names[label as usize].to_lowercase()
        } else {
            label.to_string()
        }
    }

    fn known(&self) -> String {
        self.words[1..].join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mnist() -> Vocabulary {
        let names: Vec<String> = [
            "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        Vocabulary::for_classes(&names, 4)
    }

    #[test]
    fn words_and_digits_name_the_same_class() {
        let v = mnist();
        assert_eq!(v.label_of("seven"), Ok(7));
        assert_eq!(v.label_of("7"), Ok(7));
        assert_eq!(v.label_of("Zero"), Ok(0));
        assert_eq!(v.words.len(), 21);
    }

    #[test]
    fn encode_decode_round_trip() {
        let v = mnist();
        let ids = v.encode("one nine 2").unwrap();
        assert_eq!(ids.len(), 4);
        assert_eq!(ids[3], PAD);
        assert_eq!(v.decode(&ids), "one nine 2");
        assert_eq!(v.encode("").unwrap(), vec![PAD; 4]);
    }

    #[test]
    fn unknown_word_lists_the_known_ones() {
        let err = mnist().encode("one eleven").unwrap_err().to_string();
        assert!(err.contains("unknown word `eleven`"), "{err}");
        assert!(err.contains("known words: zero, one, two"), "{err}");
        assert!(err.contains(", 9"), "{err}");
        let err = mnist().encode("1 2 3 4 5").unwrap_err().to_string();
        assert!(err.contains("at most 4"), "{err}");
    }

    #[test]
    fn training_prompts_use_words_and_digits_equally() {
        let v = mnist();
        let mut rng = Rng::new(0);
        let prompts: Vec<String> = (0..2000).map(|_| v.prompt_for(7, &mut rng)).collect();
        let words = prompts.iter().filter(|p| *p == "seven").count();
        let digits = prompts.iter().filter(|p| *p == "7").count();
        assert_eq!(words + digits, 2000);
        assert!((900..1100).contains(&words), "{words}");
    }
}
