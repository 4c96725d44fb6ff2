//! `lifeboat completions SHELL` and `lifeboat man`: shell completions and roff man pages generated
//! from the clap definitions, so they never drift from the real command line. `scripts/package`
//! runs both to put them into the Debian package.

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::{Args, CommandFactory, ValueEnum};

use super::Cli;

/// The shells `lifeboat completions` writes a script for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Shell {
    Bash,
    Zsh,
    Fish,
}

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to complete for
    #[arg(value_enum)]
    pub shell: Shell,
}

#[derive(Debug, Args)]
pub struct ManArgs {
    /// Write one page per command into DIR instead (lifeboat.1, lifeboat-backup.1,
    /// lifeboat-key-add.1, ...), as a package installs them under /usr/share/man/man1
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum GenerateError {
    #[error("cannot write the man pages into {}: {source}; create the directory or choose another with --out", dir.display())]
    ManDir { dir: PathBuf, source: std::io::Error },
    #[error("cannot write to stdout: {0}")]
    Stdout(std::io::Error),
}

/// Writes the completion script for `shell` to `out`.
pub fn completions(shell: Shell, out: &mut dyn Write) {
    let mut command = Cli::command();
    let name = command.get_name().to_string();
    match shell {
        Shell::Bash => clap_complete::generate(clap_complete::Shell::Bash, &mut command, name, out),
        Shell::Zsh => clap_complete::generate(clap_complete::Shell::Zsh, &mut command, name, out),
        Shell::Fish => clap_complete::generate(clap_complete::Shell::Fish, &mut command, name, out),
    }
}

/// Writes the main man page (`lifeboat(1)`, listing every subcommand) to `out`.
pub fn man_page(out: &mut dyn Write) -> std::io::Result<()> {
    clap_mangen::Man::new(Cli::command()).render(out)
}

/// Writes `lifeboat.1` and one page per subcommand, nested ones included, into `dir`.
pub fn man_pages_to(dir: &Path) -> Result<(), GenerateError> {
    clap_mangen::generate_to(Cli::command(), dir)
        .map_err(|source| GenerateError::ManDir { dir: dir.to_path_buf(), source })
}

/// Writes `text` to stdout. A reader that stopped reading (`lifeboat man | head`) is no failure.
fn print(text: &[u8]) -> Result<(), GenerateError> {
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(text).and_then(|()| stdout.flush()) {
        Err(error) if error.kind() != std::io::ErrorKind::BrokenPipe => Err(GenerateError::Stdout(error)),
        _ => Ok(()),
    }
}

pub fn run_completions(args: CompletionsArgs) -> anyhow::Result<()> {
    // Generated into memory first: clap_complete panics when its writer fails.
    let mut script = Vec::new();
    completions(args.shell, &mut script);
    Ok(print(&script)?)
}

pub fn run_man(args: ManArgs) -> anyhow::Result<()> {
    match args.out {
        Some(dir) => man_pages_to(&dir)?,
        None => {
            let mut page = Vec::new();
            man_page(&mut page).map_err(GenerateError::Stdout)?;
            print(&page)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(write: impl FnOnce(&mut Vec<u8>)) -> String {
        let mut out = Vec::new();
        write(&mut out);
        String::from_utf8(out).expect("generated text is UTF-8")
    }

    /// Subcommands every generated artefact must mention, nested ones included.
    const SUBCOMMANDS: &[&str] = &["backup", "restore", "verify", "expire", "wal-push", "completions", "man"];

    #[test]
    fn bash_completions_offer_the_subcommands() {
        let script = text(|out| completions(Shell::Bash, out));
        assert!(script.contains("_lifeboat()"), "not a bash completion function:\n{script}");
        for name in SUBCOMMANDS {
            assert!(script.contains(name), "bash completions miss {name}");
        }
        // Nested subcommands and their flags too.
        assert!(script.contains("lifeboat__key__add") || script.contains("lifeboat__subcmd__key__subcmd__add"));
        assert!(script.contains("--fast-checkpoint") || script.contains("--no-fast-checkpoint"));
    }

    #[test]
    fn zsh_and_fish_completions_offer_the_subcommands() {
        let zsh = text(|out| completions(Shell::Zsh, out));
        assert!(zsh.starts_with("#compdef lifeboat"), "zsh completions lack #compdef:\n{zsh}");
        let fish = text(|out| completions(Shell::Fish, out));
        assert!(fish.contains("complete -c lifeboat"), "not fish completions:\n{fish}");
        for name in SUBCOMMANDS {
            assert!(zsh.contains(name), "zsh completions miss {name}");
            assert!(fish.contains(name), "fish completions miss {name}");
        }
    }

    #[test]
    fn man_page_is_roff_listing_the_subcommands() {
        let page = text(|out| man_page(out).unwrap());
        assert!(page.contains(".TH lifeboat 1"), "no roff title line:\n{page}");
        assert!(page.contains(".SH NAME") && page.contains(".SH SYNOPSIS") && page.contains(".SH SUBCOMMANDS"));
        for name in SUBCOMMANDS {
            assert!(page.contains(&format!("lifeboat\\-{}", name.replace('-', "\\-"))), "man page misses {name}");
        }
    }

    #[test]
    fn man_out_writes_one_page_per_command() {
        let dir = tempfile::tempdir().unwrap();
        man_pages_to(dir.path()).unwrap();
        for page in ["lifeboat.1", "lifeboat-backup.1", "lifeboat-key-add.1", "lifeboat-notify-test.1"] {
            let text = std::fs::read_to_string(dir.path().join(page)).unwrap_or_else(|e| panic!("{page}: {e}"));
            assert!(text.starts_with(".ie \\n(.g") || text.contains(".TH "), "{page} is not roff");
        }
    }
}
