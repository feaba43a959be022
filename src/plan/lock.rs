//! One process per run folder: an exclusive advisory lock on `<run>/.lock`, held while the run
//! executes. The operating system drops it when the process ends, however it ends, so a lock
//! left by a dead process never blocks a resume. Taking the lock changes no file: the holder's
//! process id is written only once it [claims](RunLock::claim) the run, so a resume that is
//! refused after locking leaves the folder as it was.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error(
        "run folder {dir} is in use by another ldm-run process{holder}; wait for it to end (or stop it) before resuming"
    )]
    Busy { dir: PathBuf, holder: String },
    #[error("cannot lock run folder {dir}: {source}")]
    Io {
        dir: PathBuf,
        source: std::io::Error,
    },
}

/// Holds the run folder until dropped.
#[derive(Debug)]
pub struct RunLock {
    file: File,
    dir: PathBuf,
}

impl RunLock {
    pub fn acquire(dir: &Path) -> Result<Self, LockError> {
        let io = |source| LockError::Io {
            dir: dir.to_path_buf(),
            source,
        };
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(dir.join(".lock"))
            .map_err(io)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut pid = String::new();
                let _ = file.read_to_string(&mut pid);
                let holder = match pid.trim() {
                    "" => String::new(),
                    p => format!(" (pid {p})"),
                };
                return Err(LockError::Busy {
                    dir: dir.to_path_buf(),
                    holder,
                });
            }
            Err(TryLockError::Error(e)) => return Err(io(e)),
        }
        Ok(Self {
            file,
            dir: dir.to_path_buf(),
        })
    }

    /// Records this process as the run's holder (its id, shown to a process refused the lock):
    /// called once the run goes ahead and writes.
    pub fn claim(&mut self) -> Result<(), LockError> {
        let io = |source| LockError::Io {
            dir: self.dir.clone(),
            source,
        };
        self.file.set_len(0).map_err(io)?;
        self.file.seek(SeekFrom::Start(0)).map_err(io)?;
        writeln!(self.file, "{}", std::process::id()).map_err(io)?;
        self.file.sync_all().map_err(io)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_holder_is_refused_until_the_first_lets_go() {
        let dir = tempfile::tempdir().unwrap();
        let mut first = RunLock::acquire(dir.path()).unwrap();
        let lock_file = dir.path().join(".lock");
        assert_eq!(
            std::fs::read(&lock_file).unwrap(),
            b"",
            "locking writes nothing"
        );
        let err = RunLock::acquire(dir.path()).unwrap_err().to_string();
        assert!(!err.contains("pid"), "no holder before a claim: {err}");
        first.claim().unwrap();
        let err = RunLock::acquire(dir.path()).unwrap_err().to_string();
        assert!(err.contains("in use by another ldm-run process"), "{err}");
        assert!(
            err.contains(&format!("pid {}", std::process::id())),
            "{err}"
        );
        drop(first);
        RunLock::acquire(dir.path()).unwrap();
    }
}
