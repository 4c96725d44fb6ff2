//! Finding the installed PostgreSQL programs and their major version.
//!
//! The search order is the one the design promises: an explicit directory (`cluster.bin_dir`),
//! else what `pg_config --bindir` reports, else the newest `/usr/lib/postgresql/<major>/bin`
//! (the Debian and Ubuntu layout, where several majors can sit side by side). An explicit
//! directory is never second-guessed: if it is wrong, the error says so instead of silently using
//! another installation.
//!
//! Discovery runs two short programs (`pg_config`, `postgres --version`) synchronously; it is meant
//! to be done once at start-up, not on a hot path.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Where Debian and Ubuntu install each PostgreSQL major version (`<root>/<major>/bin`).
const DEBIAN_ROOT: &str = "/usr/lib/postgresql";

/// Programs whose `--version` output tells the major version, in order of preference. The server
/// comes first; the client tools let lifeboat work on a host that only has the client package
/// (remote backups with `pg_basebackup` and `pg_dump`).
const VERSION_SOURCES: &[&str] = &["postgres", "pg_ctl", "pg_basebackup", "pg_dump", "psql"];

/// A directory of PostgreSQL programs of one major version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgBinaries {
    /// The directory holding `postgres`, `initdb`, `pg_ctl`, `pg_dump`, ...
    dir: PathBuf,
    /// The major version the programs report (15 for 15.18), so callers can refuse to drive a
    /// server of another major version with them.
    major: u32,
}

/// Why PostgreSQL programs could not be found or used. Every message names the program and the
/// place it was looked for, and says what to do next.
#[derive(Debug, thiserror::Error)]
pub enum BinariesError {
    #[error(
        "PostgreSQL program `{name}` not found: {} does not exist; {}",
        dir.join(name).display(),
        install_hint(*major)
    )]
    Missing { name: String, dir: PathBuf, major: Option<u32> },

    #[error(
        "no PostgreSQL installation found (looked at: {}); install the PostgreSQL server package \
         (`apt-get install postgresql`, or postgresql-<major> for a specific version) or set \
         cluster.bin_dir to the directory that holds postgres, initdb and pg_ctl",
        looked.join("; ")
    )]
    NotFound { looked: Vec<String> },

    #[error("could not run {}: {source}", program.display())]
    Run {
        program: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error(
        "could not read the PostgreSQL version from `{} --version` (output: {output:?}); \
         set cluster.bin_dir to a PostgreSQL installation's bin directory",
        program.display()
    )]
    Version { program: PathBuf, output: String },

    #[error(
        "the PostgreSQL programs in {} are version {tools} but the server is version {server}; \
         install postgresql-client-{server} (or postgresql-{server}) and point cluster.bin_dir at \
         /usr/lib/postgresql/{server}/bin (or wherever that version's programs live)",
        dir.display()
    )]
    MajorMismatch { dir: PathBuf, tools: u32, server: u32 },
}

fn install_hint(major: Option<u32>) -> String {
    match major {
        Some(major) => format!(
            "install postgresql-{major} (the PostgreSQL {major} server package, which brings the client tools) \
             or set cluster.bin_dir to the directory that holds it"
        ),
        None => "install the PostgreSQL server package (postgresql-<major>) or set cluster.bin_dir \
                 to the directory that holds it"
            .to_string(),
    }
}

impl PgBinaries {
    /// Finds the programs: `bin_dir` when given (the `cluster.bin_dir` setting), else
    /// `pg_config --bindir`, else the newest `/usr/lib/postgresql/<major>/bin`. Among automatic
    /// candidates a directory with the server (`postgres`) wins over one with only client tools.
    pub fn find(bin_dir: Option<&Path>) -> Result<Self, BinariesError> {
        if let Some(dir) = bin_dir {
            return Self::at(dir);
        }

        let mut looked = Vec::new();
        let mut client_only = None;

        match pg_config_bindir() {
            Some(dir) => {
                if dir.join("postgres").is_file() {
                    return Self::at(&dir);
                }
                if has_any_tool(&dir) {
                    client_only.get_or_insert(dir.clone());
                }
                looked.push(format!("{} (from pg_config --bindir)", dir.display()));
            }
            None => looked.push("pg_config --bindir (pg_config not on PATH or failed)".to_string()),
        }

        let mut majors = debian_majors(Path::new(DEBIAN_ROOT));
        majors.sort_unstable_by(|a, b| b.cmp(a));
        for major in &majors {
            let dir = Path::new(DEBIAN_ROOT).join(major.to_string()).join("bin");
            if dir.join("postgres").is_file() {
                return Self::at(&dir);
            }
            if has_any_tool(&dir) {
                client_only.get_or_insert(dir);
            }
        }
        looked.push(format!("{DEBIAN_ROOT}/<major>/bin"));

        match client_only {
            Some(dir) => Self::at(&dir),
            None => Err(BinariesError::NotFound { looked }),
        }
    }

    /// Uses the programs in `dir`, reading the major version from `postgres --version` (or, on a
    /// client-only installation, from the first client tool present).
    pub fn at(dir: &Path) -> Result<Self, BinariesError> {
        let Some(program) = VERSION_SOURCES.iter().map(|name| dir.join(name)).find(|path| path.is_file()) else {
            return Err(BinariesError::Missing { name: "postgres".to_string(), dir: dir.to_path_buf(), major: None });
        };
        let output = Command::new(&program)
            .arg("--version")
            .stdin(Stdio::null())
            .output()
            .map_err(|source| BinariesError::Run { program: program.clone(), source })?;
        let text = String::from_utf8_lossy(&output.stdout).into_owned();
        match parse_major(&text) {
            Some(major) if output.status.success() => Ok(Self { dir: dir.to_path_buf(), major }),
            _ => Err(BinariesError::Version {
                program,
                output: format!("{}{}", text.trim(), String::from_utf8_lossy(&output.stderr).trim()),
            }),
        }
    }

    /// The directory holding the programs.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The major version of the programs (15 for PostgreSQL 15.18).
    pub fn major(&self) -> u32 {
        self.major
    }

    /// Where program `name` would be; it may not exist (see [`PgBinaries::require`]).
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// The path of program `name`, or an error naming it, the directory, and the package to install.
    pub fn require(&self, name: &str) -> Result<PathBuf, BinariesError> {
        let path = self.path(name);
        if path.is_file() {
            Ok(path)
        } else {
            Err(BinariesError::Missing { name: name.to_string(), dir: self.dir.clone(), major: Some(self.major) })
        }
    }

    /// Refuses to drive a server of another major version: `pg_dump`, `pg_basebackup` and friends
    /// must match the server they talk to.
    pub fn check_server_major(&self, server_major: u32) -> Result<(), BinariesError> {
        if server_major == self.major {
            Ok(())
        } else {
            Err(BinariesError::MajorMismatch { dir: self.dir.clone(), tools: self.major, server: server_major })
        }
    }
}

impl fmt::Display for PgBinaries {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PostgreSQL {} in {}", self.major, self.dir.display())
    }
}

/// The major version in `--version` output such as `postgres (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)`
/// or `pg_ctl (PostgreSQL) 17beta1`.
fn parse_major(version_output: &str) -> Option<u32> {
    let rest = version_output.split("(PostgreSQL)").nth(1)?.trim_start();
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok().filter(|major| *major > 0)
}

/// What `pg_config --bindir` says, if pg_config is on the PATH and answers.
fn pg_config_bindir() -> Option<PathBuf> {
    let output = Command::new("pg_config").arg("--bindir").stdin(Stdio::null()).stderr(Stdio::null()).output().ok()?;
    if !output.status.success() {
        return None;
    }
    let dir = String::from_utf8(output.stdout).ok()?;
    let dir = dir.trim();
    (!dir.is_empty()).then(|| PathBuf::from(dir))
}

/// The numeric directory names under `root` (`/usr/lib/postgresql/15` gives 15).
fn debian_majors(root: &Path) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir(root) else {
        return Vec::new();
    };
    entries.filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok()).collect()
}

fn has_any_tool(dir: &Path) -> bool {
    VERSION_SOURCES.iter().any(|name| dir.join(name).is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_major_versions() {
        assert_eq!(parse_major("postgres (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)\n"), Some(15));
        assert_eq!(parse_major("pg_ctl (PostgreSQL) 17beta1"), Some(17));
        assert_eq!(parse_major("psql (PostgreSQL) 16.4"), Some(16));
        assert_eq!(parse_major("postgres (PostgreSQL) 9.6.24"), Some(9));
        assert_eq!(parse_major("something else 15.1"), None);
        assert_eq!(parse_major("postgres (PostgreSQL) devel"), None);
    }

    #[test]
    fn missing_directory_names_the_program_and_the_next_step() {
        let err = PgBinaries::at(Path::new("/nonexistent/lifeboat/bin")).unwrap_err();
        let message = err.to_string();
        assert!(message.contains("`postgres`"), "{message}");
        assert!(message.contains("/nonexistent/lifeboat/bin/postgres"), "{message}");
        assert!(message.contains("cluster.bin_dir"), "{message}");
    }

    #[test]
    fn missing_program_names_the_package() {
        let binaries = PgBinaries { dir: PathBuf::from("/nonexistent/bin"), major: 15 };
        let message = binaries.require("initdb").unwrap_err().to_string();
        assert!(message.contains("`initdb`"), "{message}");
        assert!(message.contains("postgresql-15"), "{message}");
        assert!(message.contains("cluster.bin_dir"), "{message}");
        let message = binaries.check_server_major(16).unwrap_err().to_string();
        assert!(message.contains("version 15 but the server is version 16"), "{message}");
    }
}
