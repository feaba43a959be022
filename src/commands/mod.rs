//! The commands of the `ldm-run` binary, as library functions.

pub mod bench;
pub mod data;
pub mod ls;
pub mod plan;
pub mod run;
pub mod sample;
pub mod submit;

/// An error and its causes, one per line, leaving out causes the message already quotes.
pub fn describe_error(e: &anyhow::Error) -> String {
    let mut out = e.to_string();
    for cause in e.chain().skip(1) {
        let text = cause.to_string();
        if !out.contains(&text) {
            out.push_str("\n  caused by: ");
            out.push_str(&text);
        }
    }
    out
}

/// Writes `text` to standard output; a closed pipe (`ldm-run ls | head`) is not an error.
pub fn print_out(text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}
