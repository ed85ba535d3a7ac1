//! The `dialin` binary: see `dialin --help`.

fn main() -> std::process::ExitCode {
    dialin::cli::main()
}
