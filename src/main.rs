//! `ldm-run`: parse, dispatch, print errors.

use std::process::ExitCode;

fn main() -> ExitCode {
    // Keep freed tensor memory for reuse instead of returning it to the OS after every op.
    ldm_run::nn::kernels::tune_cpu_allocator();
    match ldm_run::cli::main() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", ldm_run::commands::describe_error(&e));
            ExitCode::FAILURE
        }
    }
}
