//! The metadata of a captioned image folder (Hugging Face's `imagefolder` convention): one
//! `metadata.jsonl` (a JSON object per line) or `metadata.csv` (a header row, then a row per
//! image) in each split folder, whose `file_name` is an image's path relative to that folder
//! and whose caption column (`text` unless told otherwise) is its caption. An optional label
//! column names each image's class.
//!
//! CSV is read with the `csv` crate: RFC 4180 quoting (a field in double quotes may hold
//! commas, line breaks and doubled quotes), a leading UTF-8 byte order mark is ignored, and
//! every row must have as many fields as the header. Blank JSONL lines are skipped. Every
//! error names the metadata file and the line of the row.

use std::path::{Component, Path, PathBuf};

use serde_json::Value;

use super::error::DataError;

pub const JSONL: &str = "metadata.jsonl";
pub const CSV: &str = "metadata.csv";
/// The column holding each image's path.
pub const FILE_NAME: &str = "file_name";
/// The caption column unless told otherwise (Hugging Face's default).
pub const DEFAULT_CAPTION: &str = "text";

/// Which metadata columns hold the caption and the class.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Columns {
    /// The caption column (Hugging Face's default: `text`).
    pub caption: String,
    /// The class column, if classes come from the metadata rather than from sub-folders.
    pub label: Option<String>,
}

impl Default for Columns {
    fn default() -> Self {
        Self {
            caption: DEFAULT_CAPTION.into(),
            label: None,
        }
    }
}

/// One image of a split, as its metadata row describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    /// Line of the metadata file the row starts on (1-based; a CSV header is line 1).
    pub line: usize,
    /// Path relative to the split folder, `/`-separated.
    pub file_name: String,
    pub caption: String,
    /// The label column's value, when there is one.
    pub label: Option<String>,
}

/// The metadata file of `split_dir`, if it has one; having both kinds is an error.
pub fn find(split_dir: &Path) -> Result<Option<PathBuf>, DataError> {
    let found: Vec<PathBuf> = [JSONL, CSV]
        .iter()
        .map(|n| split_dir.join(n))
        .filter(|p| p.is_file())
        .collect();
    match found.as_slice() {
        [] => Ok(None),
        [one] => Ok(Some(one.clone())),
        _ => Err(DataError::TwoMetadataFiles {
            dir: split_dir.to_path_buf(),
        }),
    }
}

/// The rows of a `metadata.jsonl` or `metadata.csv` (told apart by the extension).
pub fn read(path: &Path, columns: &Columns) -> Result<Vec<Row>, DataError> {
    let text = std::fs::read_to_string(path).map_err(|e| DataError::io("read", path, e))?;
    let rows = if path.extension().is_some_and(|e| e == "csv") {
        read_csv(&text, path, columns)?
    } else {
        read_jsonl(&text, path, columns)?
    };
    if rows.is_empty() {
        return Err(DataError::EmptyMetadata {
            path: path.to_path_buf(),
        });
    }
    Ok(rows)
}

fn row_error(path: &Path, line: usize, message: impl Into<String>) -> DataError {
    DataError::MetadataRow {
        path: path.to_path_buf(),
        line,
        message: message.into(),
    }
}

fn read_jsonl(text: &str, path: &Path, columns: &Columns) -> Result<Vec<Row>, DataError> {
    let mut rows = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        if raw.trim().is_empty() {
            continue;
        }
        let object: serde_json::Map<String, Value> = serde_json::from_str(raw)
            .map_err(|e| row_error(path, line, format!("not a JSON object: {e}")))?;
        let field = |name: &str| -> Result<Option<String>, DataError> {
            match object.get(name) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) => Ok(Some(s.clone())),
                Some(Value::Number(n)) => Ok(Some(n.to_string())),
                Some(other) => Err(row_error(
                    path,
                    line,
                    format!("`{name}` must be a string, not {other}"),
                )),
            }
        };
        rows.push(row(path, line, columns, field)?);
    }
    Ok(rows)
}

fn read_csv(text: &str, path: &Path, columns: &Columns) -> Result<Vec<Row>, DataError> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .from_reader(text.as_bytes());
    let csv_error = |e: csv::Error| {
        let line = e.position().map_or(1, |p| p.line() as usize);
        let message = match e.kind() {
            csv::ErrorKind::UnequalLengths {
                expected_len, len, ..
            } => format!("{len} fields where the header has {expected_len}"),
            _ => e.to_string(),
        };
        row_error(path, line, format!("bad CSV row: {message}"))
    };
    let header: Vec<String> = reader
        .headers()
        .map_err(csv_error)?
        .iter()
        .map(str::to_string)
        .collect();
    let mut wanted = vec![FILE_NAME, columns.caption.as_str()];
    wanted.extend(columns.label.as_deref());
    if let Some(absent) = wanted.iter().find(|w| !header.iter().any(|h| h == *w)) {
        return Err(row_error(
            path,
            1,
            format!(
                "the header has no `{absent}` column (it has: {})",
                header.join(", ")
            ),
        ));
    }
    let mut rows = Vec::new();
    for record in reader.records() {
        let record = record.map_err(csv_error)?;
        let line = record.position().map_or(0, |p| p.line() as usize);
        let field = |name: &str| -> Result<Option<String>, DataError> {
            Ok(header
                .iter()
                .position(|h| h == name)
                .and_then(|i| record.get(i))
                .filter(|v| !v.is_empty())
                .map(str::to_string))
        };
        rows.push(row(path, line, columns, field)?);
    }
    Ok(rows)
}

/// A row from its fields (`field(name)`: the value, `None` when absent or empty), checked.
fn row(
    path: &Path,
    line: usize,
    columns: &Columns,
    field: impl Fn(&str) -> Result<Option<String>, DataError>,
) -> Result<Row, DataError> {
    let file_name = field(FILE_NAME)?
        .ok_or_else(|| row_error(path, line, format!("the row has no `{FILE_NAME}`")))?;
    check_relative(&file_name).map_err(|why| row_error(path, line, why))?;
    let caption = field(&columns.caption)?
        .filter(|c| !c.trim().is_empty())
        .ok_or_else(|| {
            row_error(
                path,
                line,
                format!(
                    "the row of {file_name} has no caption (column `{}`)",
                    columns.caption
                ),
            )
        })?;
    let label = match &columns.label {
        None => None,
        Some(name) => Some(field(name)?.ok_or_else(|| {
            row_error(
                path,
                line,
                format!("the row of {file_name} has no class (column `{name}`)"),
            )
        })?),
    };
    Ok(Row {
        line,
        file_name,
        caption,
        label,
    })
}

/// A `file_name` must stay inside its split folder.
fn check_relative(file_name: &str) -> Result<(), String> {
    let p = Path::new(file_name);
    if p.components()
        .all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
    {
        Ok(())
    } else {
        Err(format!(
            "`{FILE_NAME}` {file_name:?} must be a path inside the split folder (relative, without ..)"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn columns(label: Option<&str>) -> Columns {
        Columns {
            caption: "caption".into(),
            label: label.map(str::to_string),
        }
    }

    #[test]
    fn jsonl_rows_with_lines_and_labels() {
        let text = "{\"file_name\": \"a.png\", \"caption\": \"a cat\", \"group\": 3}\n\n\
                    {\"file_name\": \"d/b.jpg\", \"caption\": \"a dog\", \"group\": \"pets\", \"x\": [1]}\n";
        let rows = read_jsonl(text, Path::new("m.jsonl"), &columns(Some("group"))).unwrap();
        assert_eq!(
            rows,
            [
                Row {
                    line: 1,
                    file_name: "a.png".into(),
                    caption: "a cat".into(),
                    label: Some("3".into()),
                },
                Row {
                    line: 3,
                    file_name: "d/b.jpg".into(),
                    caption: "a dog".into(),
                    label: Some("pets".into()),
                },
            ]
        );
    }

    #[test]
    fn csv_quoting_and_lines() {
        let text = "file_name,caption\na.png,\"red, ripe \"\"apple\"\"\"\nb.png,\"two\nlines\"\nc.png,plain\n";
        let rows = read_csv(text, Path::new("m.csv"), &columns(None)).unwrap();
        let got: Vec<(usize, &str, &str)> = rows
            .iter()
            .map(|r| (r.line, r.file_name.as_str(), r.caption.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                (2, "a.png", "red, ripe \"apple\""),
                (3, "b.png", "two\nlines"),
                (5, "c.png", "plain"),
            ]
        );
    }

    #[test]
    fn bad_rows_name_their_line() {
        let p = Path::new("/d/train/metadata.jsonl");
        let err = |text: &str| read_jsonl(text, p, &columns(None)).unwrap_err().to_string();
        let e = err("{\"file_name\": \"a.png\", \"caption\": \"x\"}\n{\"file_name\": \"b.png\"}\n");
        assert!(
            e.starts_with("/d/train/metadata.jsonl, line 2: the row of b.png has no caption (column `caption`)"),
            "{e}"
        );
        let e = err("{\"file_name\": \"b.png\", \"caption\": \"  \"}");
        assert!(e.contains("line 1: the row of b.png has no caption"), "{e}");
        let e = err("\n{\"file_name\": \"b.png\", \"caption\": \"x\"\n");
        assert!(e.contains("line 2: not a JSON object"), "{e}");
        let e = err("{\"caption\": \"x\"}");
        assert!(e.contains("line 1: the row has no `file_name`"), "{e}");
        let e = err("{\"file_name\": \"../x.png\", \"caption\": \"x\"}");
        assert!(e.contains("inside the split folder"), "{e}");
        let e = err("{\"file_name\": \"/etc/x.png\", \"caption\": \"x\"}");
        assert!(e.contains("inside the split folder"), "{e}");
        let e = err("{\"file_name\": \"x.png\", \"caption\": [\"x\"]}");
        assert!(e.contains("`caption` must be a string"), "{e}");
        let e = read_jsonl(
            "{\"file_name\": \"x.png\", \"caption\": \"x\"}",
            p,
            &columns(Some("group")),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("has no class (column `group`)"), "{e}");

        let q = Path::new("m.csv");
        let e = read_csv("file_name,caption\na.png,x\nb.png,y,z\n", q, &columns(None))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("m.csv, line 3: bad CSV row: 3 fields where the header has 2"),
            "{e}"
        );
        let e = read_csv("file_name,text\na.png,x\n", q, &columns(None))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("line 1: the header has no `caption` column (it has: file_name, text)"),
            "{e}"
        );
        let e = read_csv("file_name,caption\na.png,\n", q, &columns(None))
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 2: the row of a.png has no caption"), "{e}");
    }
}
