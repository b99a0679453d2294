//! The `hypersegnas` command-line tool.
//!
//! Exit codes: 0 success, 2 bad input or usage (one line on stderr naming the file), 1
//! internal failure.

mod cli;

use std::process::ExitCode;

fn main() -> ExitCode {
    hypersegnas::alloc::keep_freed_memory();
    cli::run()
}
