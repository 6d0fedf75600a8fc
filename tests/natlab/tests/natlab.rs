//! The NAT lab's test group (needs root; see `corenet_natlab::suite`):
//!
//! ```text
//! cargo test -p corenet-natlab --locked -- --test-threads=1
//! cargo test -p corenet-natlab --test natlab -- rust-js/ --skip relay   # a selection
//! cargo test -p corenet-natlab --test natlab -- --list
//! ```
//!
//! `NATLAB_RUNS` (default 3) sets the runs per quick case, `NATLAB_CORENET=PATH` uses a built
//! `corenet` instead of running `cargo build -p corenet-cli --locked`. A missing tool, JS
//! install or binary is a failure, never a skip.

use std::process::ExitCode;

fn main() -> ExitCode {
    corenet_natlab::suite::main(std::env::args().skip(1))
}
