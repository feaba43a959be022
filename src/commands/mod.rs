//! The commands of the `ldm-run` binary, as library functions.

pub mod bench;
pub mod plan;
pub mod run;
pub mod sample;

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
