//! Finding the IDX files of a split, downloading the missing ones; downloading an archive.
//!
//! A download streams into `<file>.gz.part` in the data folder, is checked against the MD5 of
//! the decompressed content, and only then renamed into place; a failed one leaves no file
//! under the final name and removes its `.part`. Mirrors are tried in order; when all fail,
//! one error lists the missing files, every folder looked in, and what each attempt gave.

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::error::{Attempt, DataError};
use super::files::{self, KnownFile};
use super::idx;
use super::settings::{DatasetConfig, DatasetName};

/// Largest download accepted (the biggest file, Fashion-MNIST's train images, is 26 MB gzip).
const MAX_DOWNLOAD: u64 = 256 << 20;

/// Paths of `wanted` (in the same order), downloading the missing ones if `cfg.download`.
pub fn ensure_files(
    cfg: &DatasetConfig,
    wanted: &[KnownFile],
    env_data_dir: Option<&str>,
) -> Result<Vec<PathBuf>, DataError> {
    let dirs = files::search_dirs(cfg, env_data_dir);
    let mut found: Vec<Option<PathBuf>> = wanted
        .iter()
        .map(|f| files::locate(&dirs, f.name))
        .collect();
    let mut attempts = Vec::new();
    if cfg.download && found.iter().any(Option::is_none) {
        let dest = &dirs[0];
        let mirrors = files::mirrors(cfg);
        let created = missing_ancestors(dest);
        let mut downloaded = 0;
        match std::fs::create_dir_all(dest) {
            Err(e) => attempts.push(Attempt {
                url: dest.display().to_string(),
                outcome: format!("could not create the data folder: {e}"),
            }),
            Ok(()) => {
                for (slot, file) in found.iter_mut().zip(wanted) {
                    if slot.is_some() {
                        continue;
                    }
                    for mirror in &mirrors {
                        let url = file_url(mirror, file);
                        match download(&url, file, dest) {
                            Ok(path) => {
                                *slot = Some(path);
                                downloaded += 1;
                                break;
                            }
                            Err(outcome) => {
                                eprintln!("data: {url}: {outcome}");
                                attempts.push(Attempt { url, outcome });
                            }
                        }
                    }
                }
            }
        }
        if downloaded == 0 {
            // Nothing landed: take back the folders made for it, so a failed download leaves
            // no trace.
            for dir in created.iter().rev() {
                let _ = std::fs::remove_dir(dir);
            }
        }
    }
    let missing: Vec<String> = found
        .iter()
        .zip(wanted)
        .filter(|(p, _)| p.is_none())
        .map(|(_, f)| f.name.to_string())
        .collect();
    if !missing.is_empty() {
        return Err(DataError::Missing {
            dataset: cfg.name.as_str(),
            missing,
            searched: dirs,
            attempts,
            download: cfg.download,
            debian_package: (cfg.name == DatasetName::FashionMnist)
                .then_some(files::DEBIAN_FASHION_PACKAGE),
        });
    }
    Ok(found.into_iter().flatten().collect())
}

/// `dir` and those of its ancestors that do not exist yet, outermost first.
pub(crate) fn missing_ancestors(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = dir
        .ancestors()
        .take_while(|a| !a.as_os_str().is_empty() && !a.exists())
        .map(Path::to_path_buf)
        .collect();
    out.reverse();
    out
}

/// `<mirror>/<file>.gz`, with exactly one slash between.
pub fn file_url(mirror: &str, file: &KnownFile) -> String {
    format!("{}/{}.gz", mirror.trim_end_matches('/'), file.name)
}

fn is_loopback(url: &str) -> bool {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .unwrap_or(url);
    rest.starts_with("127.") || rest.starts_with("localhost") || rest.starts_with("[::1]")
}

fn agent(url: &str) -> ureq::Agent {
    let mut config = ureq::Agent::config_builder()
        .timeout_connect(Some(Duration::from_secs(15)))
        .timeout_recv_response(Some(Duration::from_secs(30)))
        .timeout_per_read(Some(Duration::from_secs(60)))
        .user_agent(concat!("ldm-run/", env!("CARGO_PKG_VERSION")));
    if is_loopback(url) {
        // A proxy from the environment must not intercept a local mirror.
        config = config.proxy(None);
    }
    config.build().into()
}

/// Downloads `url` into `dest` as `file`, verified. Returns the final path, or what went wrong.
pub fn download(url: &str, file: &KnownFile, dest: &Path) -> Result<PathBuf, String> {
    let part = dest.join(format!("{}.gz.part", file.name));
    eprintln!("data: downloading {url}");
    let result = fetch_into(url, file, &part, dest);
    if result.is_err() {
        let _ = std::fs::remove_file(&part);
    }
    result
}

fn fetch_into(url: &str, file: &KnownFile, part: &Path, dest: &Path) -> Result<PathBuf, String> {
    let received = fetch(url, part)?;
    let raw = std::fs::read(part).map_err(|e| format!("could not read {}: {e}", part.display()))?;
    // A server that sets Content-Encoding: gzip has it undone by the client: keep what came.
    let gzipped = idx::is_gzip(&raw);
    let content = idx::decompress(raw, part).map_err(|e| format!("not a valid gzip file: {e}"))?;
    let actual = files::md5_hex(&content);
    if actual != file.md5 {
        return Err(format!(
            "wrong checksum: MD5 of the decompressed content is {actual}, expected {}",
            file.md5
        ));
    }
    let target = if gzipped {
        dest.join(format!("{}.gz", file.name))
    } else {
        dest.join(file.name)
    };
    place(part, target, received)
}

/// Renames a checked `part` to `target` (in the same folder) and syncs that folder.
fn place(part: &Path, target: PathBuf, received: u64) -> Result<PathBuf, String> {
    let dir = target.parent().unwrap_or(Path::new("."));
    std::fs::rename(part, &target)
        .and_then(|()| crate::atomic_file::sync_dir(dir))
        .map_err(|e| {
            format!(
                "could not rename {} to {}: {e}",
                part.display(),
                target.display()
            )
        })?;
    eprintln!(
        "data: {} saved ({received} bytes, checksum ok)",
        target.display()
    );
    Ok(target)
}

/// Streams `url` into the file `part`; returns how many bytes came.
fn fetch(url: &str, part: &Path) -> Result<u64, String> {
    let response = agent(url).get(url).call().map_err(|e| match e {
        ureq::Error::StatusCode(code) => format!("HTTP {code}"),
        ureq::Error::Io(e) => e.to_string(),
        e => e.to_string(),
    })?;
    // For the message only: ureq itself fails a body cut short of its Content-Length (and
    // with Content-Encoding the decoded length differs from it).
    let expected_len = response.body().content_length();
    let mut reader = response
        .into_body()
        .into_with_config()
        .limit(MAX_DOWNLOAD)
        .reader();
    let mut out =
        File::create(part).map_err(|e| format!("could not create {}: {e}", part.display()))?;
    let mut received: u64 = 0;
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                let of = expected_len.map(|l| format!(" of {l}")).unwrap_or_default();
                return Err(format!("connection failed after {received}{of} bytes: {e}"));
            }
        };
        out.write_all(&buf[..n])
            .map_err(|e| format!("could not write {}: {e}", part.display()))?;
        received += n as u64;
    }
    out.sync_all()
        .map_err(|e| format!("could not write {}: {e}", part.display()))?;
    drop(out);
    Ok(received)
}

/// Downloads `url` into `dest/name` through `dest/name.part`, renamed into place only once
/// the MD5 of the bytes as they came is `md5` (for archives, whose published checksum is of
/// the file itself). Returns the final path, or what went wrong (the `.part` removed).
pub fn download_verbatim(url: &str, name: &str, md5: &str, dest: &Path) -> Result<PathBuf, String> {
    let part = dest.join(format!("{name}.part"));
    eprintln!("data: downloading {url}");
    let result = fetch(url, &part).and_then(|received| {
        let actual = files::md5_file(&part)
            .map_err(|e| format!("could not read {}: {e}", part.display()))?;
        if actual != md5 {
            return Err(format!("wrong checksum: MD5 is {actual}, expected {md5}"));
        }
        place(&part, dest.join(name), received)
    });
    if result.is_err() {
        let _ = std::fs::remove_file(&part);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_join_with_one_slash() {
        let f = files::MNIST.train_labels;
        assert_eq!(
            file_url("http://h/mnist/", &f),
            "http://h/mnist/train-labels-idx1-ubyte.gz"
        );
        assert_eq!(
            file_url("http://h/mnist", &f),
            "http://h/mnist/train-labels-idx1-ubyte.gz"
        );
    }

    #[test]
    fn loopback_detection() {
        assert!(is_loopback("http://127.0.0.1:8000/x"));
        assert!(is_loopback("http://localhost:1/"));
        assert!(!is_loopback(
            "https://storage.googleapis.com/cvdf-datasets/mnist/"
        ));
    }
}
