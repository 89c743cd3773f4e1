//! The `rcompose` binary: everything lives in the library; see `rcompose::cli`.

fn main() -> std::process::ExitCode {
    rcompose::cli::main()
}
