//! `ldm-run data emoji OUT`: builds the emoji data set ([`crate::data::emoji`]) from the
//! installed Noto Color Emoji font and Unicode files into a new captioned image folder.

use std::fmt::Write;
use std::path::PathBuf;

use crate::data::emoji::{self, Sources};

/// What `ldm-run data emoji` was asked for.
#[derive(Debug, Clone, clap::Args)]
pub struct EmojiArgs {
    /// The folder to write (new, or empty); it appears whole or not at all.
    #[arg(value_name = "OUT_DIR")]
    pub out: PathBuf,
    /// Side of the square images, in pixels.
    #[arg(long, default_value_t = 32, value_parser = crate::cli::at_least_one)]
    pub size: usize,
    /// Share of every emoji group held out as the test split, in [0, 1).
    #[arg(long, default_value_t = 0.1)]
    pub test_fraction: f64,
    /// Seed of the split.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// The colour emoji font (default: Debian's NotoColorEmoji.ttf).
    #[arg(long, value_name = "FILE")]
    pub font: Option<PathBuf>,
    /// Unicode's emoji-test.txt (default: Debian's unicode-data).
    #[arg(long, value_name = "FILE")]
    pub emoji_test: Option<PathBuf>,
    /// Unicode's UnicodeData.txt (default: Debian's unicode-data).
    #[arg(long, value_name = "FILE")]
    pub unicode_data: Option<PathBuf>,
}

/// Builds the data set and returns what to print: the counts and what the font lacks.
pub fn emoji(args: &EmojiArgs) -> anyhow::Result<String> {
    emoji::check_out(&args.out)?;
    let debian = Sources::debian();
    let sources = Sources {
        font: args.font.clone().unwrap_or(debian.font),
        emoji_test: args.emoji_test.clone().unwrap_or(debian.emoji_test),
        unicode_data: args.unicode_data.clone().unwrap_or(debian.unicode_data),
    };
    for (path, package) in [
        (&sources.font, "fonts-noto-color-emoji"),
        (&sources.emoji_test, "unicode-data"),
        (&sources.unicode_data, "unicode-data"),
    ] {
        if !path.is_file() {
            anyhow::bail!(
                "{} does not exist; install the Debian package {package} (apt-get install \
                 {package}) or name the file with --{}",
                path.display(),
                flag_of(&sources, path)
            );
        }
    }
    let s = emoji::build(
        &sources,
        &args.out,
        args.size,
        args.test_fraction,
        args.seed,
    )?;
    let mut out = format!(
        "wrote {} train and {} test images ({size}x{size}) to {}\n",
        s.train,
        s.test,
        args.out.display(),
        size = args.size
    );
    for (group, n) in &s.groups {
        writeln!(out, "  {group}: {n}")?;
    }
    if !s.not_in_font.is_empty() {
        writeln!(
            out,
            "{} emoji of the list have no colour bitmap in the font and were left out",
            s.not_in_font.len()
        )?;
    }
    Ok(out)
}

/// The command-line flag that names `path` among `sources`.
fn flag_of(sources: &Sources, path: &std::path::Path) -> &'static str {
    if path == sources.font {
        "font"
    } else if path == sources.emoji_test {
        "emoji-test"
    } else {
        "unicode-data"
    }
}
