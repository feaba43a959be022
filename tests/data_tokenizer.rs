//! Prompt tokenizers: the class vocabulary exactly as before, and BPE and word-level
//! tokenizers learned from captions, through tokenizer.json and back.

use std::path::Path;

use ldm_run::conditioning::{PromptError, PromptTokenizer, TokenizerKind, Vocabulary};

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

fn mnist() -> Vec<String> {
    strings(&[
        "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
    ])
}

fn captions() -> Vec<String> {
    strings(&[
        "red apple",
        "green apple",
        "grinning face with smiling eyes",
        "grinning face",
        "face with tears of joy",
        "red heart",
        "Japanese “here” button",
        "apple and pear on a table",
    ])
}

fn round_trip(t: &PromptTokenizer) -> PromptTokenizer {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tokenizer.json");
    t.save(&path).unwrap();
    PromptTokenizer::load(&path).unwrap()
}

#[test]
fn class_vocabulary_is_unchanged() {
    let t = PromptTokenizer::build(TokenizerKind::Classes, &mnist(), None, None, 4).unwrap();
    let v = Vocabulary::for_classes(&mnist(), 4);
    assert_eq!(t.vocabulary(), Some(&v));
    assert_eq!((t.vocab_size(), t.max_tokens()), (21, 4));
    let e = t.encode("one Nine 2").unwrap();
    assert_eq!(e.ids, v.encode("one Nine 2").unwrap());
    assert_eq!(e.ids, [2, 10, 13, 0]);
    assert_eq!(e.truncated, 0);
    assert_eq!(t.decode(&e.ids), "one nine 2");
    // The same errors: unknown words listed with all known ones, too-long prompts refused.
    assert_eq!(
        t.encode("eleven").unwrap_err(),
        v.encode("eleven").unwrap_err()
    );
    assert!(matches!(
        t.encode("1 2 3 4 5").unwrap_err(),
        PromptError::TooLong {
            count: 5,
            max: 4,
            ..
        }
    ));
    // The file is what runs have always written, and such a file reads back.
    let json = t.to_json().unwrap();
    assert_eq!(json, serde_json::to_string_pretty(&v).unwrap());
    let old = r#"{"class_names": ["ant", "bee"], "words": ["<pad>", "ant", "bee", "0", "1"], "max_tokens": 8}"#;
    let back = PromptTokenizer::from_json(old, Path::new("old/tokenizer.json")).unwrap();
    assert_eq!(back.kind(), TokenizerKind::Classes);
    assert_eq!(back.encode("bee 0").unwrap().ids, [2, 3, 0, 0, 0, 0, 0, 0]);
    assert_eq!(round_trip(&t).vocabulary(), Some(&v));
    // Classes need class names.
    let err = PromptTokenizer::build(TokenizerKind::Classes, &[], Some(&captions()), None, 4);
    assert!(err.unwrap_err().to_string().contains("needs class names"));
}

#[test]
fn bpe_round_trips_and_splits_unknown_words() {
    let caps = captions();
    let t = PromptTokenizer::build(TokenizerKind::Bpe, &[], Some(&caps), Some(300), 16).unwrap();
    assert_eq!(t.kind(), TokenizerKind::Bpe);
    assert!(
        t.vocab_size() <= 300 && t.vocab_size() > 258,
        "{}",
        t.vocab_size()
    );
    for c in &caps {
        let e = t.encode(c).unwrap();
        assert_eq!(e.ids.len(), 16);
        assert_eq!(e.truncated, 0, "{c}");
        assert_eq!(t.decode(&e.ids), c.to_lowercase());
    }
    // Merges learned from the captions: a caption word is one token, an unknown word several.
    let apple = t.encode("apple").unwrap().ids;
    assert_eq!(apple.iter().filter(|&&i| i != 0).count(), 1, "{apple:?}");
    let zebra = t.encode("zebra, naïve").unwrap();
    assert_eq!(zebra.truncated, 0);
    assert!(zebra.ids.iter().filter(|&&i| i != 0).count() > 4);
    assert!(!zebra.ids.contains(&1), "no <unk> in byte-level BPE");
    assert_eq!(t.decode(&zebra.ids), "zebra, naïve");
    // Too long: cut, and the cut counted.
    let long = ["red apple"; 20].join(" ");
    let e = t.encode(&long).unwrap();
    assert_eq!(e.ids.len(), 16);
    assert!(!e.ids.contains(&0));
    assert_eq!(e.truncated, 40 - 16);
    // Saved and read back: the same ids.
    let back = round_trip(&t);
    assert_eq!(back.kind(), TokenizerKind::Bpe);
    for p in ["grinning apple", "zebra", &long] {
        assert_eq!(back.encode(p).unwrap(), t.encode(p).unwrap(), "{p}");
    }
    // Unset, the vocabulary is at most the default 1,000 (here the merges run out first).
    let default = PromptTokenizer::build(TokenizerKind::Bpe, &[], Some(&caps), None, 16).unwrap();
    assert!(
        (300..=1000).contains(&default.vocab_size()),
        "{}",
        default.vocab_size()
    );
    // Too small a vocabulary for the 256 bytes.
    let err = PromptTokenizer::build(TokenizerKind::Bpe, &[], Some(&caps), Some(100), 16);
    assert!(err.unwrap_err().to_string().contains("at least 258"));
}

#[test]
fn learning_is_deterministic() {
    let caps = captions();
    let mut reversed = caps.clone();
    reversed.reverse();
    for kind in [TokenizerKind::Bpe, TokenizerKind::WordLevel] {
        let first = PromptTokenizer::build(kind, &[], Some(&caps), Some(280), 8)
            .unwrap()
            .to_json()
            .unwrap();
        for order in [&caps, &reversed, &caps] {
            let again = PromptTokenizer::build(kind, &[], Some(order), Some(280), 8)
                .unwrap()
                .to_json()
                .unwrap();
            assert_eq!(again, first, "{kind:?}");
        }
    }
}

#[test]
fn word_level_refuses_unknown_words_naming_the_nearest() {
    let caps = captions();
    let t = PromptTokenizer::build(TokenizerKind::WordLevel, &[], Some(&caps), None, 6).unwrap();
    assert_eq!(t.kind(), TokenizerKind::WordLevel);
    let e = t.encode("Red APPLE").unwrap();
    assert_eq!(t.decode(&e.ids), "red apple");
    assert_eq!(e.ids[2..], [0; 4]);
    // Most frequent words first, after <pad> and <unk>: apple (3), face (3), grinning (2)...
    let apple = t.encode("apple").unwrap().ids[0];
    assert_eq!(apple, 2);
    let err = t.encode("red aple").unwrap_err();
    match &err {
        PromptError::UnknownWord { word, known, .. } => {
            assert_eq!(word, "aple");
            assert!(known.starts_with("apple, "), "{known}");
            assert!(known.ends_with("words in all)"), "{known}");
        }
        other => panic!("{other:?}"),
    }
    assert!(
        err.to_string()
            .contains("unknown word `aple` in prompt \"red aple\"")
    );
    let e = t.encode("red apple and pear on a table").unwrap();
    assert_eq!(e.truncated, 1);
    assert_eq!(t.decode(&e.ids), "red apple and pear on a");
    let back = round_trip(&t);
    assert_eq!(
        back.encode("green apple").unwrap(),
        t.encode("green apple").unwrap()
    );
    assert!(back.encode("aple").is_err());
    // A word limit keeps the most frequent words.
    let small =
        PromptTokenizer::build(TokenizerKind::WordLevel, &[], Some(&caps), Some(4), 6).unwrap();
    assert_eq!(small.vocab_size(), 4);
    assert!(small.encode("face apple").is_ok());
    assert!(small.encode("red").is_err());
}

#[test]
fn bad_files_and_missing_captions() {
    let err = PromptTokenizer::build(TokenizerKind::Bpe, &mnist(), None, Some(300), 8).unwrap_err();
    assert!(
        err.to_string()
            .contains("the bpe tokenizer learns from captions"),
        "{err}"
    );
    let p = Path::new("/runs/x/ldm/tokenizer.json");
    for text in ["not json", "{}", r#"{"class_names": 3}"#] {
        let err = PromptTokenizer::from_json(text, p).unwrap_err().to_string();
        assert!(
            err.starts_with("/runs/x/ldm/tokenizer.json is not a tokenizer.json of ldm-run"),
            "{err}"
        );
    }
    let err = PromptTokenizer::load(Path::new("/nonexistent/tokenizer.json")).unwrap_err();
    assert!(
        err.to_string()
            .contains("could not read /nonexistent/tokenizer.json"),
        "{err}"
    );
}
