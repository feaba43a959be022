//! `ldm-run`: parse, dispatch, print errors.

use std::process::ExitCode;

fn main() -> ExitCode {
    match ldm_run::cli::main() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", ldm_run::commands::describe_error(&e));
            ExitCode::FAILURE
        }
    }
}
