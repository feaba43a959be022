//! Stage reuse: a stage whose fingerprint matches a finished stage anywhere under the runs
//! folder (found through the run index) takes that stage's artifacts (hard links, so nothing
//! is copied or retrained). A lock per fingerprint makes two runs that need the same stage at
//! once train it only once.

use std::fs::{self, File, OpenOptions};
use std::path::Path;

/// Recreates the file tree `from` under `to`, hard-linking files (copying them where links are
/// impossible, e.g. across file systems).
pub fn link_tree(from: &Path, to: &Path) -> std::io::Result<()> {
    fs::create_dir_all(to)?;
    for entry in fs::read_dir(from)? {
        let entry = entry?;
        let (src, dst) = (entry.path(), to.join(entry.file_name()));
        if entry.file_type()?.is_dir() {
            link_tree(&src, &dst)?;
        } else if fs::hard_link(&src, &dst).is_err() {
            fs::copy(&src, &dst)?;
        }
    }
    Ok(())
}

/// Exclusive hold on one fingerprint under `<runs>/.locks/`, released when dropped (or when the
/// process ends).
#[derive(Debug)]
pub struct StageLock {
    _file: File,
}

impl StageLock {
    /// Waits for the fingerprint to be free; `on_wait` is called once if it has to wait.
    pub fn acquire(
        runs_dir: &Path,
        fingerprint: &str,
        on_wait: impl FnOnce(),
    ) -> std::io::Result<Self> {
        let dir = runs_dir.join(".locks");
        fs::create_dir_all(&dir)?;
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join(format!("{fingerprint}.lock")))?;
        if let Err(std::fs::TryLockError::WouldBlock) = file.try_lock() {
            on_wait();
            file.lock()?;
        }
        Ok(Self { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_tree_mirrors_files() {
        let tmp = tempfile::tempdir().unwrap();
        let from = tmp.path().join("a");
        fs::create_dir_all(from.join("checkpoints")).unwrap();
        fs::write(from.join("checkpoints/step-1.safetensors"), b"w").unwrap();
        fs::write(from.join("tokenizer.json"), b"{}").unwrap();
        let to = tmp.path().join("b");
        link_tree(&from, &to).unwrap();
        assert_eq!(
            fs::read(to.join("checkpoints/step-1.safetensors")).unwrap(),
            b"w"
        );
        assert_eq!(fs::read(to.join("tokenizer.json")).unwrap(), b"{}");
    }

    #[test]
    fn stage_lock_is_exclusive() {
        let tmp = tempfile::tempdir().unwrap();
        let first = StageLock::acquire(tmp.path(), "abc", || panic!("free at first")).unwrap();
        let path = tmp.path().join(".locks/abc.lock");
        let other = OpenOptions::new().write(true).open(&path).unwrap();
        assert!(matches!(
            other.try_lock(),
            Err(std::fs::TryLockError::WouldBlock)
        ));
        drop(first);
        assert!(other.try_lock().is_ok());
    }
}
