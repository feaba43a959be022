//! Ranks other than 0 print only their errors: their standard error goes to `/dev/null`, which
//! silences every progress line and message of every module at once, and a copy of the
//! original is kept for errors (this module's [`error`]) and panics, prefixed with the rank.
//! A panic on any rank ends the whole job, since the other ranks may be waiting for this one.

use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::OnceLock;

/// The rank and the original standard error of a quieted rank.
static ORIGINAL: OnceLock<(usize, Option<OwnedFd>)> = OnceLock::new();

/// Quiets this rank (unless it is rank 0) and makes a panic end the job.
pub fn install(rank: usize) {
    let saved = (rank != 0).then(silence_stderr).flatten();
    let _ = ORIGINAL.set((rank, saved));
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if rank == 0 {
            previous(info);
        } else {
            error(&format!("panic: {info}"));
        }
        super::backend::abort(101);
    }));
}

/// Points standard error at `/dev/null`; returns a handle on the original.
fn silence_stderr() -> Option<OwnedFd> {
    let null = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/null")
        .ok()?;
    // SAFETY: dup of the process's own standard error; the new descriptor is owned here.
    let saved = unsafe { libc::dup(libc::STDERR_FILENO) };
    if saved < 0 {
        return None;
    }
    // SAFETY: `saved` is a fresh descriptor nobody else owns.
    let saved = unsafe { OwnedFd::from_raw_fd(saved) };
    // SAFETY: replaces descriptor 2 with /dev/null; `null` stays open until dup2 returns.
    if unsafe { libc::dup2(null.as_raw_fd(), libc::STDERR_FILENO) } < 0 {
        return None;
    }
    Some(saved)
}

/// Prints `message` as this rank's error: `error: ...` on rank 0, `rank N: error: ...` on the
/// others (on the standard error they started with).
pub fn error(message: &str) {
    match ORIGINAL.get() {
        Some((rank, Some(fd))) => {
            if let Ok(f) = fd.try_clone() {
                let mut out = std::fs::File::from(f);
                let _ = writeln!(out, "rank {rank}: error: {message}");
            }
        }
        _ => eprintln!("error: {message}"),
    }
}
