//! The `lifeboat` binary: everything happens in the library; see `lifeboat::cli`.

fn main() -> std::process::ExitCode {
    lifeboat::cli::main()
}
