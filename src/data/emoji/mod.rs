//! A colour, captioned text-to-image data set built offline from an emoji font: every
//! single-code-point emoji of Unicode's list that the font draws in colour, as a square RGB
//! PNG on white, captioned with its CLDR short name ("red apple", "beaming face with smiling
//! eyes") and labelled with its Unicode emoji group, written as a captioned image folder
//! ([`crate::data::captioned`]) with a held-out test split.
//!
//! On Debian: `fonts-noto-color-emoji` (the bitmaps) and `unicode-data` (the names and
//! groups); [`Sources::debian`] names their files. Each `metadata.jsonl` row holds
//! `file_name` (`u1f34e.png`), `text` (the CLDR name), `group`, `unicode_name` (the
//! character's Unicode name, lowercased: another caption column to train on) and `codepoint`.
//!
//! The split is stratified: in every group, `round(test_fraction * n)` emoji, drawn with the
//! seeded stream `Rng::stream(seed, "emoji-split")`, go to `test/` (at least one while the group
//! has two or more), so every group is in both splits. The same inputs and seed give the same
//! files, byte for byte.

pub mod catalog;
pub mod font;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use image::RgbaImage;
use serde_json::json;

use crate::data::download::missing_ancestors;
use crate::data::metadata::JSONL;
use crate::data::{DataError, Split};
use crate::rng::Rng;
use catalog::Entry;

/// The files a build reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sources {
    /// A colour emoji font (CBDT or sbix bitmaps).
    pub font: PathBuf,
    /// Unicode's `emoji-test.txt`: the emoji, their names and groups.
    pub emoji_test: PathBuf,
    /// Unicode's `UnicodeData.txt`: character names.
    pub unicode_data: PathBuf,
}

impl Sources {
    /// Where Debian's `fonts-noto-color-emoji` and `unicode-data` put them.
    pub fn debian() -> Self {
        Self {
            font: "/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf".into(),
            emoji_test: "/usr/share/unicode/emoji/emoji-test.txt".into(),
            unicode_data: "/usr/share/unicode/UnicodeData.txt".into(),
        }
    }
}

/// What a build wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    pub train: usize,
    pub test: usize,
    /// Images per group (both splits), by group name.
    pub groups: BTreeMap<String, usize>,
    /// Emoji of the list the font has no colour bitmap for.
    pub not_in_font: Vec<char>,
}

#[derive(Debug, thiserror::Error)]
pub enum EmojiError {
    /// Reading or writing a file failed.
    #[error(transparent)]
    Data(#[from] DataError),
    #[error("{}, line {line}: {message}", .path.display())]
    Catalog {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error("{} is not a usable emoji font: {reason}", .path.display())]
    Font { path: PathBuf, reason: String },
    #[error("{} exists and is not empty; choose a new folder or empty it", .path.display())]
    NotEmpty { path: PathBuf },
    #[error("{0}")]
    Options(String),
}

fn io<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> EmojiError + 'a {
    move |source| DataError::io(action, path, source).into()
}

/// One picture of the data set.
pub struct Emoji {
    pub entry: Entry,
    /// Its Unicode character name, lowercased, when `UnicodeData.txt` has one.
    pub unicode_name: Option<String>,
    pub image: RgbaImage,
}

/// Builds the data set into `out` (a new or empty folder): `size` x `size` PNGs, a share
/// `test_fraction` (0 to 1) of each group held out, split by `seed`.
pub fn build(
    sources: &Sources,
    out: &Path,
    size: usize,
    test_fraction: f64,
    seed: u64,
) -> Result<Summary, EmojiError> {
    check_out(out)?;
    let read = |p: &Path| std::fs::read_to_string(p).map_err(io("read", p));
    let entries = catalog::parse_emoji_test(&read(&sources.emoji_test)?, &sources.emoji_test)?;
    let names = catalog::parse_unicode_names(&read(&sources.unicode_data)?);
    let bytes = std::fs::read(&sources.font).map_err(io("read", &sources.font))?;
    let font_error = |reason: String| EmojiError::Font {
        path: sources.font.clone(),
        reason,
    };
    let face = ttf_parser::Face::parse(&bytes, 0).map_err(|e| font_error(e.to_string()))?;
    let mut emoji = Vec::new();
    let mut not_in_font = Vec::new();
    for entry in entries {
        match font::bitmap(&face, entry.codepoint) {
            None => not_in_font.push(entry.codepoint),
            Some(Err(why)) => {
                return Err(font_error(format!(
                    "the bitmap of U+{:04X} ({}): {why}",
                    u32::from(entry.codepoint),
                    entry.name
                )));
            }
            Some(Ok(image)) => emoji.push(Emoji {
                unicode_name: names.get(&u32::from(entry.codepoint)).cloned(),
                entry,
                image,
            }),
        }
    }
    if emoji.is_empty() {
        return Err(font_error(
            "it draws none of the listed emoji in colour".into(),
        ));
    }
    let mut summary = write(&emoji, out, size, test_fraction, seed)?;
    summary.not_in_font = not_in_font;
    Ok(summary)
}

/// Refuses an `out` folder that exists and is not empty (checked before any work).
pub fn check_out(out: &Path) -> Result<(), EmojiError> {
    if out.exists()
        && std::fs::read_dir(out)
            .map_err(io("list", out))?
            .next()
            .is_some()
    {
        return Err(EmojiError::NotEmpty {
            path: out.to_path_buf(),
        });
    }
    Ok(())
}

/// The split of each emoji, by index: stratified by group (see the module's documentation).
pub fn split(emoji: &[Emoji], test_fraction: f64, seed: u64) -> Vec<Split> {
    let mut by_group: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, e) in emoji.iter().enumerate() {
        by_group.entry(&e.entry.group).or_default().push(i);
    }
    let mut rng = Rng::stream(seed, "emoji-split");
    let mut out = vec![Split::Train; emoji.len()];
    for members in by_group.values_mut() {
        members.sort_by_key(|&i| emoji[i].entry.codepoint);
        rng.shuffle(members);
        let n = members.len();
        let wanted = (test_fraction * n as f64).round() as usize;
        let test = if n >= 2 { wanted.clamp(1, n - 1) } else { 0 };
        for &i in &members[..test] {
            out[i] = Split::Test;
        }
    }
    out
}

/// Writes `emoji` as a captioned image folder into `out` (created; must be empty if it exists).
/// The folder appears whole or not at all: the files are written into a hidden folder beside
/// `out` and renamed into place at the end; on an error it, and any folder made for it, are
/// removed.
pub fn write(
    emoji: &[Emoji],
    out: &Path,
    size: usize,
    test_fraction: f64,
    seed: u64,
) -> Result<Summary, EmojiError> {
    if size == 0 || !(0.0..1.0).contains(&test_fraction) {
        return Err(EmojiError::Options(format!(
            "size must be at least 1 and test_fraction in [0, 1): got {size} and {test_fraction}"
        )));
    }
    check_out(out)?;
    let name = out
        .file_name()
        .ok_or_else(|| EmojiError::Options(format!("{} names no folder", out.display())))?;
    let parent = out.parent().filter(|p| !p.as_os_str().is_empty());
    let created = parent.map(missing_ancestors).unwrap_or_default();
    let part = out.with_file_name(format!(
        ".{}.part-{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let result = write_into(emoji, &part, size, test_fraction, seed).and_then(|summary| {
        std::fs::rename(&part, out).map_err(io("rename into place", out))?;
        Ok(summary)
    });
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&part);
        for dir in created.iter().rev() {
            let _ = std::fs::remove_dir(dir);
        }
    }
    result
}

/// Writes the files of [`write`] into the new folder `out`.
fn write_into(
    emoji: &[Emoji],
    out: &Path,
    size: usize,
    test_fraction: f64,
    seed: u64,
) -> Result<Summary, EmojiError> {
    let splits = split(emoji, test_fraction, seed);
    let mut order: Vec<usize> = (0..emoji.len()).collect();
    order.sort_by_key(|&i| emoji[i].entry.codepoint);
    let mut rows: HashMap<Split, String> = HashMap::new();
    let mut summary = Summary {
        train: 0,
        test: 0,
        groups: BTreeMap::new(),
        not_in_font: Vec::new(),
    };
    for split in [Split::Train, Split::Test] {
        let dir = out.join(split.as_str());
        std::fs::create_dir_all(&dir).map_err(io("create", &dir))?;
        rows.insert(split, String::new());
    }
    for i in order {
        let (e, split) = (&emoji[i], splits[i]);
        let cp = u32::from(e.entry.codepoint);
        let file_name = format!("u{cp:04x}.png");
        let path = out.join(split.as_str()).join(&file_name);
        let rgb = font::square_rgb(&e.image, size);
        image::RgbImage::from_raw(size as u32, size as u32, rgb)
            .ok_or_else(|| EmojiError::Options(format!("size {size} is too large")))?
            .save_with_format(&path, image::ImageFormat::Png)
            .map_err(|e| DataError::io("write", &path, std::io::Error::other(e.to_string())))?;
        let row = json!({
            "file_name": file_name,
            "text": e.entry.name,
            "group": e.entry.group,
            "unicode_name": e.unicode_name,
            "codepoint": format!("U+{cp:04X}"),
        });
        let text = rows.entry(split).or_default();
        text.push_str(&row.to_string());
        text.push('\n');
        *summary.groups.entry(e.entry.group.clone()).or_default() += 1;
        match split {
            Split::Train => summary.train += 1,
            Split::Test => summary.test += 1,
        }
    }
    for (split, text) in rows {
        let path = out.join(split.as_str()).join(JSONL);
        std::fs::write(&path, text).map_err(io("write", &path))?;
    }
    Ok(summary)
}
