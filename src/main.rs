//! `ldm-run`: parse, dispatch, print errors.

use std::process::ExitCode;

fn main() -> ExitCode {
    match ldm_run::cli::main() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            for cause in e.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            ExitCode::FAILURE
        }
    }
}
