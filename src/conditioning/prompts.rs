//! Prompts as stages and `ldm-run sample` use them: read from a prompt file, drawn like
//! training prompts, and written beside a sample grid.

use std::path::Path;

use anyhow::{Context, bail};

use super::Vocabulary;
use crate::rng::Rng;

/// Prompts of a prompt file: whitespace-separated words, one prompt each. The file must be
/// UTF-8 text holding at least one word.
pub fn read(path: &Path) -> anyhow::Result<Vec<String>> {
    let bytes = std::fs::read(path)
        .with_context(|| format!("cannot read prompt file {}", path.display()))?;
    let text = String::from_utf8(bytes).map_err(|e| {
        anyhow::anyhow!(
            "prompt file {} is not UTF-8 text (invalid byte at offset {})",
            path.display(),
            e.utf8_error().valid_up_to()
        )
    })?;
    let prompts: Vec<String> = text.split_whitespace().map(str::to_string).collect();
    if prompts.is_empty() {
        bail!(
            "prompt file {} holds no prompts (whitespace-separated words, e.g. `one 7 nine`)",
            path.display()
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

/// Prompts laid out `cols` per line, as written beside a sample grid.
pub fn grid_text(prompts: &[Option<String>], cols: usize) -> String {
    let words: Vec<&str> = prompts
        .iter()
        .map(|p| p.as_deref().unwrap_or("<none>"))
        .collect();
    let mut out = String::new();
    for row in words.chunks(cols.max(1)) {
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
        assert_eq!(read(&path).unwrap(), vec!["one", "7", "nine"]);
        std::fs::write(&path, " \n\t").unwrap();
        assert!(
            read(&path)
                .unwrap_err()
                .to_string()
                .contains("holds no prompts")
        );
        std::fs::write(&path, [b'o', 0xff]).unwrap();
        assert!(read(&path).unwrap_err().to_string().contains("not UTF-8"));
    }

    #[test]
    fn grid_text_wraps_rows() {
        let p = vec![Some("a".to_string()), None, Some("c".to_string())];
        assert_eq!(grid_text(&p, 2), "a <none>\nc\n");
    }
}
