//! Prompts as stages and `ldm-run sample` use them: read from a prompt file, drawn like
//! training prompts, checked for length, and written beside a sample grid.
//!
//! A prompt list (a prompt file, `sample --prompts`) is split the way the run's tokenizer reads
//! prompts: for the `classes` tokenizer every whitespace-separated word is one prompt (`one 7
//! nine`, as ever); for a caption tokenizer every non-blank line is one prompt (a whole
//! caption, `red apple`).

use std::path::Path;

use anyhow::{Context, bail};

use super::{PromptTokenizer, TokenizerKind, Vocabulary};
use crate::rng::Rng;

/// The prompts of a prompt list, split as `kind` reads them (see the module's documentation).
pub fn split(text: &str, kind: TokenizerKind) -> Vec<String> {
    match kind {
        TokenizerKind::Classes => text.split_whitespace().map(str::to_string).collect(),
        TokenizerKind::Bpe | TokenizerKind::WordLevel => text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect(),
    }
}

/// What one prompt of a list is, for messages.
pub fn format_hint(kind: TokenizerKind) -> &'static str {
    match kind {
        TokenizerKind::Classes => "whitespace-separated words, one prompt each, e.g. `one 7 nine`",
        TokenizerKind::Bpe | TokenizerKind::WordLevel => {
            "one prompt per line, e.g. `red apple` (the run's tokenizer learns from captions)"
        }
    }
}

/// Prompts of a prompt file, split as `kind` reads them. The file must be UTF-8 text holding at
/// least one prompt.
pub fn read(path: &Path, kind: TokenizerKind) -> anyhow::Result<Vec<String>> {
    let bytes = std::fs::read(path)
        .with_context(|| format!("cannot read prompt file {}", path.display()))?;
    let text = String::from_utf8(bytes).map_err(|e| {
        anyhow::anyhow!(
            "prompt file {} is not UTF-8 text (invalid byte at offset {})",
            path.display(),
            e.utf8_error().valid_up_to()
        )
    })?;
    let prompts = split(&text, kind);
    if prompts.is_empty() {
        bail!(
            "prompt file {} holds no prompts ({})",
            path.display(),
            format_hint(kind)
        );
    }
    Ok(prompts)
}

/// `count` prompts drawn like training prompts (a random class, as its name or its digit).
pub fn random(vocab: &Vocabulary, count: usize, rng: &mut Rng) -> Vec<String> {
    (0..count)
        .map(|_| {
            let label = rng.below(vocab.class_names.len()) as u32;
            vocab.prompt_for(label, rng)
        })
        .collect()
}

/// `count` captions drawn at random from `captions` (the training prompts of a caption
/// tokenizer).
pub fn random_captions(captions: &[String], count: usize, rng: &mut Rng) -> Vec<String> {
    (0..count)
        .map(|_| captions[rng.below(captions.len())].clone())
        .collect()
}

/// The prompts of a sample grid of `count` images: `listed` (a prompt file's) when given, else
/// drawn like training prompts (class prompts, or the training `captions` of a caption
/// tokenizer).
pub fn for_grid(
    listed: Option<&[String]>,
    tokenizer: &PromptTokenizer,
    captions: Option<&[String]>,
    count: usize,
    rng: &mut Rng,
) -> anyhow::Result<Vec<String>> {
    match (listed, tokenizer.vocabulary(), captions) {
        (Some(listed), ..) => Ok(listed.to_vec()),
        (None, Some(vocab), _) if !vocab.class_names.is_empty() => Ok(random(vocab, count, rng)),
        (None, None, Some(c)) if !c.is_empty() => Ok(random_captions(c, count, rng)),
        _ => bail!(
            "no prompts for the grid: the {} tokenizer has no {} to draw them from; set \
             prompts_file",
            tokenizer.kind().as_str(),
            if tokenizer.vocabulary().is_some() {
                "classes"
            } else {
                "captions"
            }
        ),
    }
}

/// Reports (on stderr, as `who`) how many of `prompts` the tokenizer cuts to `max_tokens`, and
/// returns that number. Unknown words are not reported here (encoding them again fails).
pub fn report_cuts<S: AsRef<str>>(tokenizer: &PromptTokenizer, prompts: &[S], who: &str) -> usize {
    let cut: Vec<(usize, &str)> = prompts
        .iter()
        .filter_map(|p| {
            let p = p.as_ref();
            let n = tokenizer.encode(p).ok()?.truncated;
            (n > 0).then_some((n, p))
        })
        .collect();
    if let Some((most, longest)) = cut.iter().max_by_key(|(n, _)| *n) {
        eprintln!(
            "{who}: {} of {} prompts are longer than conditioning.max_tokens = {} tokens and \
             were cut (the most: {most} tokens of \"{longest}\")",
            cut.len(),
            prompts.len(),
            tokenizer.max_tokens()
        );
    }
    cut.len()
}

/// Prompts as written beside a sample grid: for class prompts `cols` words per line, for
/// captions one per line (row by row).
pub fn grid_text(prompts: &[Option<String>], cols: usize, kind: TokenizerKind) -> String {
    let words: Vec<&str> = prompts
        .iter()
        .map(|p| p.as_deref().unwrap_or("<none>"))
        .collect();
    let per_line = match kind {
        TokenizerKind::Classes => cols.max(1),
        TokenizerKind::Bpe | TokenizerKind::WordLevel => 1,
    };
    let mut out = String::new();
    for row in words.chunks(per_line) {
        out.push_str(&row.join(" "));
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompt_files_must_be_utf8_words() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.txt");
        std::fs::write(&path, "one 7\n nine\n").unwrap();
        assert_eq!(
            read(&path, TokenizerKind::Classes).unwrap(),
            vec!["one", "7", "nine"]
        );
        std::fs::write(&path, " \n\t").unwrap();
        let err = read(&path, TokenizerKind::Classes).unwrap_err().to_string();
        assert!(
            err.contains("holds no prompts (whitespace-separated"),
            "{err}"
        );
        let err = read(&path, TokenizerKind::Bpe).unwrap_err().to_string();
        assert!(
            err.contains("holds no prompts (one prompt per line"),
            "{err}"
        );
        std::fs::write(&path, [b'o', 0xff]).unwrap();
        assert!(
            read(&path, TokenizerKind::Classes)
                .unwrap_err()
                .to_string()
                .contains("not UTF-8")
        );
    }

    #[test]
    fn caption_prompts_are_lines() {
        let text = "red apple\n\n  grinning face  \r\none\n";
        assert_eq!(
            split(text, TokenizerKind::Bpe),
            ["red apple", "grinning face", "one"]
        );
        assert_eq!(split(text, TokenizerKind::WordLevel).len(), 3);
        assert_eq!(split(text, TokenizerKind::Classes).len(), 5);
    }

    #[test]
    fn grid_text_wraps_rows() {
        let p = vec![Some("a".to_string()), None, Some("c d".to_string())];
        assert_eq!(grid_text(&p, 2, TokenizerKind::Classes), "a <none>\nc d\n");
        assert_eq!(grid_text(&p, 2, TokenizerKind::Bpe), "a\n<none>\nc d\n");
    }

    #[test]
    fn cuts_are_counted() {
        let captions = ["a red apple on a plate".to_string(), "a pear".to_string()];
        let t = PromptTokenizer::build(TokenizerKind::WordLevel, &[], Some(&captions), None, 3)
            .unwrap();
        assert_eq!(report_cuts(&t, &captions, "test"), 1);
        assert_eq!(report_cuts(&t, &["a pear"], "test"), 0);
        let mut rng = Rng::new(3);
        let drawn = random_captions(&captions, 50, &mut rng);
        assert!(drawn.iter().any(|c| c == "a pear") && drawn.iter().any(|c| c != "a pear"));
    }
}
