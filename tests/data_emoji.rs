//! The emoji data set builder: on synthetic pictures, and on the real Noto Color Emoji font
//! and Unicode files when they are installed (skipped with a message when not).

use std::path::Path;

use image::{Rgba, RgbaImage};
use ldm_run::data::emoji::catalog::Entry;
use ldm_run::data::emoji::{self, Emoji, EmojiError, Sources};
use ldm_run::data::{DatasetConfig, DatasetName};
use ldm_run::data::{Split, load};

fn synthetic() -> Vec<Emoji> {
    let groups = [
        "Food & Drink",
        "Food & Drink",
        "Food & Drink",
        "Food & Drink",
        "Symbols",
        "Symbols",
        "Flags",
    ];
    groups
        .iter()
        .enumerate()
        .map(|(i, g)| Emoji {
            entry: Entry {
                codepoint: char::from_u32(0x1F600 + i as u32).unwrap(),
                name: format!("thing number {i}"),
                group: g.to_string(),
            },
            unicode_name: (i != 3).then(|| format!("THING {i}").to_lowercase()),
            // A red square with a transparent corner, 6 wide and 4 high.
            image: RgbaImage::from_fn(6, 4, |x, y| {
                if x == 0 && y == 0 {
                    Rgba([0, 0, 0, 0])
                } else {
                    Rgba([200, (20 * i) as u8, 0, 255])
                }
            }),
        })
        .collect()
}

fn cfg(root: &Path, size: usize) -> DatasetConfig {
    DatasetConfig {
        name: DatasetName::ImageFolder,
        root: Some(root.to_path_buf()),
        channels: 3,
        image_size: size,
        download: false,
        ..DatasetConfig::default()
    }
}

/// `c` with classes from the `group` column.
fn grouped(c: &DatasetConfig) -> DatasetConfig {
    DatasetConfig {
        label_column: Some("group".into()),
        ..c.clone()
    }
}

fn files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for split in ["train", "test"] {
        let mut names: Vec<_> = std::fs::read_dir(dir.join(split))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        names.sort();
        for p in names {
            out.push((
                format!("{split}/{}", p.file_name().unwrap().to_string_lossy()),
                std::fs::read(&p).unwrap(),
            ));
        }
    }
    out
}

#[test]
fn writes_a_stratified_captioned_folder_deterministically() {
    let emoji = synthetic();
    let a = tempfile::tempdir().unwrap();
    let out = a.path().join("emoji");
    let summary = emoji::write(&emoji, &out, 8, 0.25, 5).unwrap();
    // Food & Drink: 4 -> 1 held out; Symbols: 2 -> 1 (at least one); Flags: 1 -> none.
    assert_eq!((summary.train, summary.test), (5, 2));
    assert_eq!(summary.groups["Food & Drink"], 4);

    let train = load(&grouped(&cfg(&out, 8)), Split::Train, None).unwrap();
    let test = load(&grouped(&cfg(&out, 8)), Split::Test, None).unwrap();
    assert_eq!(train.class_names, ["Flags", "Food & Drink", "Symbols"]);
    let count =
        |d: &ldm_run::data::Dataset, label: u32| d.labels.iter().filter(|&&l| l == label).count();
    assert_eq!(
        (count(&train, 0), count(&train, 1), count(&train, 2)),
        (1, 3, 1)
    );
    assert_eq!(
        (count(&test, 0), count(&test, 1), count(&test, 2)),
        (0, 1, 1)
    );
    let caps = train.captions.clone().unwrap();
    assert!(
        caps.iter().all(|c| c.starts_with("thing number ")),
        "{caps:?}"
    );
    // 6x4 padded to 6x6 with white (top and bottom rows), shrunk to 8: corners white, the
    // middle red.
    let img = train.image(0);
    assert_eq!(img[0], 1.0);
    let mid = 4 * 8 + 4;
    assert!(
        (img[mid] - (200.0 / 127.5 - 1.0)).abs() < 1e-6,
        "{}",
        img[mid]
    );

    // The unicode_name column is a caption column too, and the rows are in code point order.
    let meta = std::fs::read_to_string(out.join("train/metadata.jsonl")).unwrap();
    let first: serde_json::Value = serde_json::from_str(meta.lines().next().unwrap()).unwrap();
    assert!(first["file_name"].as_str().unwrap().starts_with("u1f60"));
    assert_eq!(first["codepoint"].as_str().unwrap().len(), 7);

    // Byte for byte the same again; another seed splits differently.
    let b = tempfile::tempdir().unwrap();
    emoji::write(&emoji, b.path(), 8, 0.25, 5).unwrap();
    assert_eq!(files(&out), files(b.path()));
    let c = tempfile::tempdir().unwrap();
    let other: Vec<_> = (6..40)
        .map(|seed| {
            let dir = c.path().join(seed.to_string());
            emoji::write(&emoji, &dir, 2, 0.25, seed).unwrap();
            files(&dir).into_iter().map(|(n, _)| n).collect::<Vec<_>>()
        })
        .collect();
    let names: Vec<String> = files(&out).into_iter().map(|(n, _)| n).collect();
    assert!(other.iter().any(|o| *o != names));

    // Never into a folder that holds something.
    let err = emoji::write(&emoji, &out, 8, 0.25, 5).unwrap_err();
    assert!(matches!(err, EmojiError::NotEmpty { .. }), "{err}");
    let err = emoji::write(&emoji, &a.path().join("x"), 8, 1.0, 5).unwrap_err();
    assert!(err.to_string().contains("test_fraction in [0, 1)"), "{err}");
}

#[test]
fn builds_from_the_real_font() {
    let sources = Sources::debian();
    for p in [&sources.font, &sources.emoji_test, &sources.unicode_data] {
        if !p.is_file() {
            eprintln!(
                "skipped: {} is not installed (apt install fonts-noto-color-emoji unicode-data)",
                p.display()
            );
            return;
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("emoji");
    let s = emoji::build(&sources, &out, 16, 0.1, 0).unwrap();
    let total = s.train + s.test;
    eprintln!(
        "{total} emoji: {} train, {} test, groups {:?}, not in the font: {:?}",
        s.train, s.test, s.groups, s.not_in_font
    );
    assert!(total > 1300, "{total}");
    assert_eq!(s.groups.len(), 9, "{:?}", s.groups);
    assert!(!s.groups.contains_key("Component"));
    assert!((s.test as f64 / total as f64 - 0.1).abs() < 0.01);

    let meta = std::fs::read_to_string(out.join("train/metadata.jsonl")).unwrap()
        + &std::fs::read_to_string(out.join("test/metadata.jsonl")).unwrap();
    let apple = meta.lines().find(|l| l.contains("\"u1f34e.png\"")).unwrap();
    let row: serde_json::Value = serde_json::from_str(apple).unwrap();
    assert_eq!(row["text"], "red apple");
    assert_eq!(row["group"], "Food & Drink");
    assert_eq!(row["unicode_name"], "red apple");
    let heart = meta.lines().find(|l| l.contains("\"u2764.png\"")).unwrap();
    assert!(
        heart.contains("\"text\":\"red heart\"")
            && heart.contains("\"unicode_name\":\"heavy black heart\""),
        "{heart}"
    );

    // It loads as a captioned folder; the apple is red on white.
    let split = if out.join("train/u1f34e.png").is_file() {
        Split::Train
    } else {
        Split::Test
    };
    let d = load(&grouped(&cfg(&out, 16)), split, None).unwrap();
    let i = d
        .captions
        .as_ref()
        .unwrap()
        .iter()
        .position(|c| c == "red apple")
        .unwrap();
    let img = d.image(i);
    let (r, g) = (&img[..256], &img[256..512]);
    let red = r
        .iter()
        .zip(g)
        .filter(|(r, g)| **r > 0.5 && **g < -0.3)
        .count();
    assert!(red > 40, "{red} red pixels");
    assert_eq!(img[0], 1.0, "white corner");
}
