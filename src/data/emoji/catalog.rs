//! Which emoji the data set holds, their captions and their groups, from Unicode's own files
//! (Debian `unicode-data`): `emoji/emoji-test.txt` lists every recommended emoji with its CLDR
//! short name ("red heart") in one of ten groups ("Smileys & Emotion", "Food & Drink", ...);
//! `UnicodeData.txt` gives each code point's character name ("HEAVY BLACK HEART").
//!
//! Only single code points are kept (a fully-qualified emoji of one code point, with or
//! without the emoji presentation selector U+FE0F), and not the "Component" group (skin-tone
//! swatches and hair pieces, not pictures of anything). Sequences are left out: some 1,900 of
//! them are skin-tone variants of other emoji (the same drawing recoloured, captions differing
//! by a suffix), flags and keycaps are pictures of text rather than of things, and a font maps
//! them to glyphs only through shaping (GSUB ligatures), while single code points go straight
//! through its character map.

use std::collections::HashMap;
use std::path::Path;

use super::EmojiError;

/// The emoji presentation selector.
const VS16: u32 = 0xfe0f;
const COMPONENT: &str = "Component";

/// One emoji of the catalog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub codepoint: char,
    /// CLDR short name, lowercased: the caption.
    pub name: String,
    /// emoji-test.txt's group.
    pub group: String,
}

fn bad(path: &Path, line: usize, message: impl Into<String>) -> EmojiError {
    EmojiError::Catalog {
        path: path.to_path_buf(),
        line,
        message: message.into(),
    }
}

/// The single-code-point emoji of an `emoji-test.txt`, in its order. `path` names it in errors.
pub fn parse_emoji_test(text: &str, path: &Path) -> Result<Vec<Entry>, EmojiError> {
    let mut group: Option<String> = None;
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        if let Some(g) = raw.strip_prefix("# group:") {
            group = Some(g.trim().to_string());
            continue;
        }
        if raw.starts_with('#') || raw.trim().is_empty() {
            continue;
        }
        let (fields, comment) = raw
            .split_once('#')
            .ok_or_else(|| bad(path, line, "no `# emoji name` comment"))?;
        let (points, status) = fields
            .split_once(';')
            .ok_or_else(|| bad(path, line, "no `;` between code points and status"))?;
        let points = points
            .split_whitespace()
            .map(|p| u32::from_str_radix(p, 16))
            .collect::<Result<Vec<u32>, _>>()
            .map_err(|e| bad(path, line, format!("bad code point: {e}")))?;
        let single = match points.as_slice() {
            [cp] | [cp, VS16] => char::from_u32(*cp),
            _ => None,
        };
        let group = group
            .as_deref()
            .ok_or_else(|| bad(path, line, "an emoji before any `# group:` line"))?;
        let (Some(codepoint), "fully-qualified") = (single, status.trim()) else {
            continue;
        };
        if group == COMPONENT {
            continue;
        }
        // The comment is `<emoji> E<version> <name>`.
        let name = comment
            .split_once(" E")
            .and_then(|(_, rest)| rest.split_once(' '))
            .map(|(_, name)| name.trim().to_lowercase())
            .filter(|n| !n.is_empty())
            .ok_or_else(|| bad(path, line, "no name after the emoji version"))?;
        out.push(Entry {
            codepoint,
            name,
            group: group.to_string(),
        });
    }
    Ok(out)
}

/// Character names of a `UnicodeData.txt`, lowercased, by code point (ranges' `<...>`
/// placeholders left out).
pub fn parse_unicode_names(text: &str) -> HashMap<u32, String> {
    text.lines()
        .filter_map(|l| {
            let mut f = l.split(';');
            let cp = u32::from_str_radix(f.next()?, 16).ok()?;
            let name = f.next()?;
            (!name.starts_with('<')).then(|| (cp, name.to_lowercase()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXCERPT: &str = "\
# group: Smileys & Emotion

# subgroup: face-smiling
1F600                                                  ; fully-qualified     # 😀 E1.0 grinning face
263A FE0F                                              ; fully-qualified     # ☺️ E0.6 smiling face
263A                                                   ; unqualified         # ☺ E0.6 smiling face
2764 FE0F 200D 1F525                                   ; fully-qualified     # ❤️‍🔥 E13.1 heart on fire

# group: Component
1F3FB                                                  ; fully-qualified     # 🏻 E1.0 light skin tone

# group: Symbols
0023 FE0F 20E3                                         ; fully-qualified     # #️⃣ E0.6 keycap: #
1F170 FE0F                                             ; fully-qualified     # 🅰️ E0.6 A button (blood type)
";

    #[test]
    fn single_code_points_with_groups_and_names() {
        let got = parse_emoji_test(EXCERPT, Path::new("emoji-test.txt")).unwrap();
        let want = [
            ('\u{1F600}', "grinning face", "Smileys & Emotion"),
            ('\u{263A}', "smiling face", "Smileys & Emotion"),
            ('\u{1F170}', "a button (blood type)", "Symbols"),
        ];
        assert_eq!(got.len(), want.len());
        for (e, (cp, name, group)) in got.iter().zip(want) {
            assert_eq!(
                (e.codepoint, e.name.as_str(), e.group.as_str()),
                (cp, name, group)
            );
        }
    }

    #[test]
    fn malformed_lines_are_named() {
        let p = Path::new("/u/emoji-test.txt");
        let err = parse_emoji_test("1F600 ; fully-qualified # 😀 E1.0 grinning face\n", p)
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "/u/emoji-test.txt, line 1: an emoji before any `# group:` line"
        );
        let err = parse_emoji_test("# group: X\n1F60Z ; fully-qualified # x E1.0 y\n", p)
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("/u/emoji-test.txt, line 2: bad code point"),
            "{err}"
        );
    }

    #[test]
    fn unicode_names() {
        let names = parse_unicode_names(
            "1F34E;RED APPLE;So;0;ON;;;;;N;;;;;\n4E00;<CJK Ideograph, First>;Lo;0;L;;;;;N;;;;;\n",
        );
        assert_eq!(names.len(), 1);
        assert_eq!(names[&0x1F34E], "red apple");
    }
}
