//! Finding the installed PostgreSQL programs that fit the server lifeboat talks to.
//!
//! Two kinds of program, two rules. Server programs (`postgres`, `pg_ctl`, `initdb`) run a data
//! directory, which only its own major version can: they must be of exactly that major. Client
//! programs (`pg_dump`, `pg_restore`, `psql`, `pg_basebackup`, `pg_amcheck`, ...) support older
//! servers, so a newer one is fine where the exact major is not installed; the exact major is
//! preferred, else the closest newer one. Programs that work together (`pg_dump` and
//! `pg_dumpall`, `pg_restore` and `psql`) come from one directory.
//!
//! Where to look, in order: `cluster.bin_dir` when set, then `pg_config --bindir`, every
//! `/usr/lib/postgresql/<N>/bin` (Debian, Ubuntu), every `/usr/pgsql-<N>/bin` (the PGDG packages
//! for RHEL and its relatives) and each directory on `PATH`. An explicit `cluster.bin_dir` is never
//! second-guessed: a program it holds at a major that does not fit is an error, and so is a server
//! program it lacks; only a client program it lacks (a directory holding a server alone) is looked
//! for further, and the log says where it was taken from. Debian's `pg_wrapper` (what
//! `/usr/bin/pg_dump` is a link to) is skipped: it picks a version by its own rules, not by the
//! server's major.
//!
//! [`PgBinaries::find`] and [`PgBinaries::at`] are the older, simpler entry points: one
//! installation, preferably one with a server, with no major version to match (the quickstart and
//! the tests start clusters with them).
//!
//! Discovery runs short programs (`pg_config`, `<program> --version`) synchronously; it is meant
//! to be done once per operation, not on a hot path.

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use super::process::PgCommand;

/// Where Debian and Ubuntu install each PostgreSQL major version (`<root>/<major>/bin`).
const DEBIAN_ROOT: &str = "/usr/lib/postgresql";

/// Where the PGDG packages for RHEL, Rocky, Alma and Fedora install each major (`/usr/pgsql-<major>/bin`).
const PGDG_ROOT: &str = "/usr";
const PGDG_PREFIX: &str = "pgsql-";

/// Programs whose `--version` output tells the major version, in order of preference. The server
/// comes first; the client tools let lifeboat work on a host that only has the client package
/// (remote backups with `pg_basebackup` and `pg_dump`).
const VERSION_SOURCES: &[&str] = &["postgres", "pg_ctl", "pg_basebackup", "pg_dump", "psql"];

/// The programs that run a data directory, which must be of the data directory's major version.
pub const SERVER_PROGRAMS: &[&str] = &["postgres", "pg_ctl", "initdb"];

/// A directory of PostgreSQL programs of one major version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgBinaries {
    /// The directory holding `postgres`, `initdb`, `pg_ctl`, `pg_dump`, ...
    dir: PathBuf,
    /// The major version the programs report (15 for 15.18), so callers can refuse to drive a
    /// server of another major version with them.
    major: u32,
}

/// What a lookup must find ([`PgBinaries::locate`]): which programs, for what, and which majors fit.
#[derive(Debug, Clone)]
pub struct Need<'a> {
    /// Found together, in one directory.
    programs: &'a [&'a str],
    /// The major version of the server (or backup, or dump) they are for.
    major: u32,
    /// Whether a newer major fits too (client programs), the closest one preferred.
    newer: bool,
    /// What they are for, as messages name it: "the server at ...", "backup ...".
    purpose: String,
}

impl Need<'static> {
    /// `postgres`, `pg_ctl` and `initdb` of exactly `major`, to run a data directory of that
    /// version. `purpose` completes "needed for ...", e.g. "backup 20261201T0100F".
    pub fn server(major: u32, purpose: impl Into<String>) -> Self {
        Need { programs: SERVER_PROGRAMS, major, newer: false, purpose: purpose.into() }
    }

    /// A new, empty server to load logical dumps of `major` into: that major, else the closest
    /// newer one (a newer server restores an older dump).
    pub fn server_or_newer(major: u32, purpose: impl Into<String>) -> Self {
        Need { programs: SERVER_PROGRAMS, major, newer: true, purpose: purpose.into() }
    }
}

impl<'a> Need<'a> {
    /// Client `programs`, from one directory, for a server (or dump) of `major`: that major, else
    /// the closest newer one (PostgreSQL's client programs support older servers).
    pub fn clients(programs: &'a [&'a str], major: u32, purpose: impl Into<String>) -> Self {
        Need { programs, major, newer: true, purpose: purpose.into() }
    }

    fn fits(&self, major: u32) -> bool {
        major == self.major || (self.newer && major > self.major)
    }

    fn is_server(&self) -> bool {
        self.programs.iter().any(|name| SERVER_PROGRAMS.contains(name))
    }

    /// "pg_dump and pg_dumpall".
    fn names(&self) -> String {
        names(self.programs)
    }

    /// The Debian package that brings these programs.
    fn package(&self) -> String {
        if self.is_server() {
            format!("postgresql-{}", self.major)
        } else {
            format!("postgresql-client-{}", self.major)
        }
    }

    /// "PostgreSQL 16's pg_dump (or a newer one) is needed for the server at ..., version 16".
    fn describe(&self) -> String {
        let (newer, verb) = match (self.newer, self.programs.len()) {
            (true, 1) => (" (or a newer one)", "is"),
            (true, _) => (" (or newer ones)", "are"),
            (false, 1) => ("", "is"),
            (false, _) => ("", "are"),
        };
        format!(
            "PostgreSQL {}'s {}{newer} {verb} needed for {}, version {}",
            self.major,
            self.names(),
            self.purpose,
            self.major
        )
    }

    fn wanted(&self) -> Box<Wanted> {
        Box::new(Wanted { text: self.describe(), package: self.package(), major: self.major })
    }
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
        "cluster.bin_dir {} holds {program} {found} ({}), but {}; install {} and point cluster.bin_dir at \
         its bin directory (e.g. /usr/lib/postgresql/{}/bin), or unset it to let lifeboat search",
        dir.display(),
        misfit(*found, wanted.major),
        wanted.text,
        wanted.package,
        wanted.major
    )]
    Unfit { dir: PathBuf, program: String, found: u32, wanted: Box<Wanted> },

    #[error(
        "cluster.bin_dir {} has no {program}, and {}; install {} and point cluster.bin_dir at its bin \
         directory (e.g. /usr/lib/postgresql/{}/bin), or unset it to let lifeboat search",
        dir.display(),
        wanted.text,
        wanted.package,
        wanted.major
    )]
    BinDirLacks { dir: PathBuf, program: String, wanted: Box<Wanted> },

    #[error(
        "{}; found: {}; looked in: {}; install {} (or set cluster.bin_dir)",
        wanted.text,
        if found.is_empty() { "none".to_owned() } else { found.join(", ") },
        looked.join(", "),
        wanted.package
    )]
    NoneFits { wanted: Box<Wanted>, found: Vec<String>, looked: Vec<String> },
}

/// What a lookup needed, as its errors say it (boxed in them, to keep errors small).
#[derive(Debug)]
pub struct Wanted {
    /// "PostgreSQL 16's pg_dump (or a newer one) is needed for the server at ..., version 16".
    pub text: String,
    /// The Debian package that brings the programs: postgresql-client-16, postgresql-16.
    pub package: String,
    /// The major version they were needed for.
    pub major: u32,
}

/// Why programs of major `found` do not fit a need of `major`: "too old" or "not 16".
fn misfit(found: u32, major: u32) -> String {
    if found < major { "too old".to_owned() } else { format!("not {major}") }
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

/// "postgres", "pg_dump and pg_dumpall", "postgres, pg_ctl and initdb".
fn names(programs: &[&str]) -> String {
    match programs {
        [] => String::new(),
        [one] => (*one).to_owned(),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
    }
}

impl PgBinaries {
    /// The programs `need` asks for, found as the module documentation says: `bin_dir` (the
    /// `cluster.bin_dir` setting) first, then the usual places on this host.
    pub fn locate(bin_dir: Option<&Path>, need: &Need<'_>) -> Result<Self, BinariesError> {
        Search::from_system(bin_dir).choose(need)
    }

    /// Finds one installation, with no major version to match: `bin_dir` when given, else
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

        for dir in numbered_dirs(Path::new(DEBIAN_ROOT), "") {
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
        Ok(Self { dir: dir.to_path_buf(), major: read_major(&program)? })
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
}

impl fmt::Display for PgBinaries {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PostgreSQL {} in {}", self.major, self.dir.display())
    }
}

/// Where one lookup looks: the explicit directory, then the automatic candidates in order. Built
/// from the host by [`Search::from_system`]; the unit tests build it from a temporary tree.
struct Search {
    /// `cluster.bin_dir`.
    bin_dir: Option<PathBuf>,
    /// The automatic candidates, in order of preference among equal majors.
    candidates: Vec<PathBuf>,
    /// What the candidates came from, for the message when nothing fits.
    sources: Vec<String>,
    /// Each directory's major version (or why it could not be read), read once.
    majors: HashMap<PathBuf, Result<u32, String>>,
}

impl Search {
    fn new(bin_dir: Option<&Path>, candidates: Vec<PathBuf>, sources: Vec<String>) -> Search {
        Search { bin_dir: bin_dir.map(Path::to_path_buf), candidates, sources, majors: HashMap::new() }
    }

    /// The candidates on this host: `pg_config --bindir`, `/usr/lib/postgresql/<N>/bin`,
    /// `/usr/pgsql-<N>/bin` (newest first), then `PATH`.
    fn from_system(bin_dir: Option<&Path>) -> Search {
        let mut candidates = Vec::new();
        let mut sources = Vec::new();
        match pg_config_bindir() {
            Some(dir) => {
                sources.push(format!("pg_config --bindir ({})", dir.display()));
                candidates.push(dir);
            }
            None => sources.push("pg_config --bindir (no pg_config on PATH)".to_owned()),
        }
        candidates.extend(numbered_dirs(Path::new(DEBIAN_ROOT), ""));
        sources.push(format!("{DEBIAN_ROOT}/<N>/bin"));
        candidates.extend(numbered_dirs(Path::new(PGDG_ROOT), PGDG_PREFIX));
        sources.push(format!("{PGDG_ROOT}/{PGDG_PREFIX}<N>/bin"));
        if let Some(path) = std::env::var_os("PATH") {
            candidates.extend(std::env::split_paths(&path).filter(|dir| dir.is_absolute()));
        }
        sources.push("PATH".to_owned());
        Search::new(bin_dir, candidates, sources)
    }

    /// The directory that fits `need` best: the explicit one when it has everything, else the
    /// first candidate of exactly the major, else the closest newer major where that fits.
    fn choose(&mut self, need: &Need<'_>) -> Result<PgBinaries, BinariesError> {
        let mut lacking = None;
        if let Some(dir) = self.bin_dir.clone() {
            let present: Vec<&str> = need.programs.iter().copied().filter(|name| dir.join(name).is_file()).collect();
            if let Some(first) = present.first() {
                let source = version_source(&dir, |name| dir.join(name).is_file()).unwrap_or_else(|| dir.join(first));
                let major = read_major(&source)?;
                if !need.fits(major) {
                    return Err(BinariesError::Unfit {
                        program: (*first).to_owned(),
                        found: major,
                        wanted: need.wanted(),
                        dir,
                    });
                }
                if present.len() == need.programs.len() {
                    return Ok(PgBinaries { dir, major });
                }
            }
            let missing: Vec<&str> = need.programs.iter().copied().filter(|name| !present.contains(name)).collect();
            if let Some(server) = missing.iter().find(|name| SERVER_PROGRAMS.contains(name)) {
                return Err(BinariesError::BinDirLacks { program: (*server).to_owned(), wanted: need.wanted(), dir });
            }
            lacking = Some((dir, names(&missing)));
        }

        let mut seen: Vec<PathBuf> = self.bin_dir.iter().filter_map(|dir| dir.canonicalize().ok()).collect();
        let mut found = Vec::new();
        let mut best: Option<PgBinaries> = None;
        for dir in self.candidates.clone() {
            let Ok(canonical) = dir.canonicalize() else { continue };
            if seen.contains(&canonical) {
                continue;
            }
            seen.push(canonical);
            let present: Vec<&str> = need.programs.iter().copied().filter(|name| is_program(&dir, name)).collect();
            if present.is_empty() {
                continue;
            }
            let major = match self.major(&dir) {
                Ok(major) => major,
                Err(detail) => {
                    found.push(format!(
                        "{} in {} (its version could not be read: {detail})",
                        names(&present),
                        dir.display()
                    ));
                    continue;
                }
            };
            if present.len() < need.programs.len() {
                let missing: Vec<&str> = need.programs.iter().copied().filter(|name| !present.contains(name)).collect();
                found.push(format!("{} {major} in {} (no {} there)", names(&present), dir.display(), names(&missing)));
                continue;
            }
            if !need.fits(major) {
                found.push(format!("{} {major} in {} ({})", names(&present), dir.display(), misfit(major, need.major)));
                continue;
            }
            if major == need.major {
                best = Some(PgBinaries { dir, major });
                break;
            }
            if best.as_ref().is_none_or(|best| major < best.major) {
                best = Some(PgBinaries { dir, major });
            }
        }

        let Some(chosen) = best else {
            let mut looked = vec![match (&self.bin_dir, &lacking) {
                (Some(dir), Some((_, missing))) => format!("cluster.bin_dir ({}: no {missing})", dir.display()),
                (Some(dir), None) => format!("cluster.bin_dir ({})", dir.display()),
                (None, _) => "cluster.bin_dir (not set)".to_owned(),
            }];
            looked.extend(self.sources.iter().cloned());
            return Err(BinariesError::NoneFits { wanted: need.wanted(), found, looked });
        };
        let why = if chosen.major == need.major {
            format!("PostgreSQL {}, as {} is", chosen.major, need.purpose)
        } else {
            format!(
                "PostgreSQL {}, the closest newer major found: no PostgreSQL {} {} was found, and newer client \
                 programs work with older servers",
                chosen.major,
                need.major,
                need.names()
            )
        };
        match lacking {
            Some((bin_dir, missing)) => tracing::info!(
                "cluster.bin_dir {} has no {missing}; using {} from {} ({why})",
                bin_dir.display(),
                need.names(),
                chosen.dir.display()
            ),
            None if chosen.major != need.major => {
                tracing::info!("using {} from {} for {} ({why})", need.names(), chosen.dir.display(), need.purpose)
            }
            None => tracing::debug!("using {} from {} ({why})", need.names(), chosen.dir.display()),
        }
        Ok(chosen)
    }

    /// The major version of the programs in `dir`, read once from the first program there that
    /// tells it (the server first, as in [`PgBinaries::at`]).
    fn major(&mut self, dir: &Path) -> Result<u32, String> {
        if let Some(known) = self.majors.get(dir) {
            return known.clone();
        }
        let major = match version_source(dir, |name| is_program(dir, name)) {
            Some(program) => read_major(&program).map_err(|error| match error {
                BinariesError::Version { output, .. } => format!("`{} --version` said {output:?}", program.display()),
                other => other.to_string(),
            }),
            None => Err(format!("no PostgreSQL program in {}", dir.display())),
        };
        self.majors.insert(dir.to_path_buf(), major.clone());
        major
    }
}

/// The program of `dir` whose `--version` tells the directory's major: the server first, as in
/// [`PgBinaries::at`], else any client program lifeboat runs.
fn version_source(dir: &Path, present: impl Fn(&str) -> bool) -> Option<PathBuf> {
    VERSION_SOURCES
        .iter()
        .chain(SERVER_PROGRAMS)
        .chain(CLIENT_PROGRAMS)
        .find(|name| present(name))
        .map(|name| dir.join(name))
}

/// Client programs lifeboat runs, the last resort for telling a directory's version.
const CLIENT_PROGRAMS: &[&str] = &["pg_dumpall", "pg_restore", "pg_amcheck"];

/// Whether `dir` holds program `name` itself, not Debian's `pg_wrapper` (or another dispatcher)
/// under its name: the file a link resolves to must have the program's own name.
fn is_program(dir: &Path, name: &str) -> bool {
    let path = dir.join(name);
    path.is_file()
        && path.canonicalize().is_ok_and(|real| real.file_name().is_some_and(|file| file == std::ffi::OsStr::new(name)))
}

/// The major version `program --version` reports.
fn read_major(program: &Path) -> Result<u32, BinariesError> {
    let output = PgCommand::local(program)
        .arg("--version")
        .output_blocking()
        .map_err(|source| BinariesError::Run { program: program.to_path_buf(), source })?;
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    match parse_major(&text) {
        Some(major) if output.status.success() => Ok(major),
        _ => Err(BinariesError::Version {
            program: program.to_path_buf(),
            output: format!("{}{}", text.trim(), String::from_utf8_lossy(&output.stderr).trim()),
        }),
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
    let output = PgCommand::local(Path::new("pg_config")).arg("--bindir").output_blocking().ok()?;
    if !output.status.success() {
        return None;
    }
    let dir = String::from_utf8(output.stdout).ok()?;
    let dir = dir.trim();
    (!dir.is_empty()).then(|| PathBuf::from(dir))
}

/// `<root>/<prefix><N>/bin` for each numeric N, newest first (`/usr/lib/postgresql/15/bin`,
/// `/usr/pgsql-16/bin`).
fn numbered_dirs(root: &Path, prefix: &str) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(root) else {
        return Vec::new();
    };
    let mut majors: Vec<u32> =
        entries.filter_map(|entry| entry.ok()?.file_name().to_str()?.strip_prefix(prefix)?.parse().ok()).collect();
    majors.sort_unstable_by(|a, b| b.cmp(a));
    majors.into_iter().map(|major| root.join(format!("{prefix}{major}")).join("bin")).collect()
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
    }

    const DUMP: &[&str] = &["pg_dump", "pg_dumpall"];

    /// `<root>/<name>/` holding `programs`, each a script that answers `--version` as PostgreSQL
    /// `version` does.
    fn install(root: &Path, name: &str, programs: &[&str], version: &str) -> PathBuf {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = root.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        for program in programs {
            let path = dir.join(program);
            std::fs::write(&path, format!("#!/bin/sh\necho '{program} (PostgreSQL) {version}'\n")).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        dir
    }

    fn search(bin_dir: Option<&Path>, candidates: &[&Path]) -> Search {
        let candidates: Vec<PathBuf> = candidates.iter().map(|dir| dir.to_path_buf()).collect();
        let sources = candidates.iter().map(|dir| dir.display().to_string()).collect();
        Search::new(bin_dir, candidates, sources)
    }

    fn dump_need(major: u32) -> Need<'static> {
        Need::clients(DUMP, major, "the server at postgresql://db.example/shop")
    }

    #[test]
    fn the_exact_major_is_preferred_over_a_newer_one() {
        let root = tempfile::tempdir().unwrap();
        let v18 = install(root.path(), "18", DUMP, "18.6");
        let v16 = install(root.path(), "16", DUMP, "16.4 (Debian 16.4-1)");
        let chosen = search(None, &[&v18, &v16]).choose(&dump_need(16)).unwrap();
        assert_eq!(chosen, PgBinaries { dir: v16, major: 16 });
    }

    #[test]
    fn else_the_closest_newer_client_is_taken() {
        let root = tempfile::tempdir().unwrap();
        let v18 = install(root.path(), "18", DUMP, "18.6");
        let v15 = install(root.path(), "15", DUMP, "15.18");
        let v17 = install(root.path(), "17", DUMP, "17beta1");
        let chosen = search(None, &[&v18, &v15, &v17]).choose(&dump_need(16)).unwrap();
        assert_eq!(chosen, PgBinaries { dir: v17, major: 17 });
    }

    #[test]
    fn programs_needed_together_come_from_one_directory() {
        let root = tempfile::tempdir().unwrap();
        let partial = install(root.path(), "partial", &["pg_dump"], "16.4");
        let v18 = install(root.path(), "18", DUMP, "18.6");
        let chosen = search(None, &[&partial, &v18]).choose(&dump_need(16)).unwrap();
        assert_eq!(chosen, PgBinaries { dir: v18, major: 18 });
    }

    #[test]
    fn too_old_clients_are_refused_naming_what_was_found_and_what_is_needed() {
        let root = tempfile::tempdir().unwrap();
        let v15 = install(root.path(), "15", DUMP, "15.18");
        let error = search(None, &[&v15]).choose(&dump_need(16)).unwrap_err();
        assert!(matches!(error, BinariesError::NoneFits { .. }), "{error:?}");
        let message = error.to_string();
        let expected = format!(
            "PostgreSQL 16's pg_dump and pg_dumpall (or newer ones) are needed for the server at \
             postgresql://db.example/shop, version 16; found: pg_dump and pg_dumpall 15 in {} (too old); \
             looked in: cluster.bin_dir (not set), {}; install postgresql-client-16 (or set cluster.bin_dir)",
            v15.display(),
            v15.display()
        );
        assert_eq!(message, expected);
    }

    #[test]
    fn server_programs_must_be_of_exactly_the_major() {
        let root = tempfile::tempdir().unwrap();
        let v17 = install(root.path(), "17", SERVER_PROGRAMS, "17.2");
        let message = search(None, &[&v17]).choose(&Need::server(16, "backup 20261201T0100F")).unwrap_err().to_string();
        assert!(
            message.starts_with(
                "PostgreSQL 16's postgres, pg_ctl and initdb are needed for backup 20261201T0100F, version 16"
            ),
            "{message}"
        );
        assert!(
            message.contains(&format!("postgres, pg_ctl and initdb 17 in {} (not 16)", v17.display())),
            "{message}"
        );
        assert!(message.contains("install postgresql-16 "), "{message}");

        let chosen = search(None, &[&v17]).choose(&Need::server_or_newer(16, "a restore test of dump x")).unwrap();
        assert_eq!(chosen.major(), 17);
    }

    #[test]
    fn an_explicit_bin_dir_of_a_wrong_major_is_refused() {
        let root = tempfile::tempdir().unwrap();
        let v15 = install(root.path(), "15", DUMP, "15.18");
        let v16 = install(root.path(), "16", DUMP, "16.4");
        let error = search(Some(&v15), &[&v16]).choose(&dump_need(16)).unwrap_err();
        let message = error.to_string();
        assert!(matches!(error, BinariesError::Unfit { found: 15, .. }), "{message}");
        assert!(
            message.starts_with(&format!("cluster.bin_dir {} holds pg_dump 15 (too old)", v15.display())),
            "{message}"
        );
        assert!(message.contains("version 16") && message.contains("postgresql-client-16"), "{message}");

        let v17 = install(root.path(), "17", SERVER_PROGRAMS, "17.2");
        let message = search(Some(&v17), &[]).choose(&Need::server(16, "backup x")).unwrap_err().to_string();
        assert!(message.contains("holds postgres 17 (not 16)"), "{message}");
    }

    #[test]
    fn a_bin_dir_without_a_client_program_falls_back_but_one_without_the_server_is_refused() {
        let root = tempfile::tempdir().unwrap();
        let server_only = install(root.path(), "16", SERVER_PROGRAMS, "16.14");
        let clients = install(root.path(), "clients-18", &["pg_amcheck", "pg_dump", "pg_dumpall"], "18.6");
        let chosen = search(Some(&server_only), &[&clients]).choose(&dump_need(16)).unwrap();
        assert_eq!(chosen, PgBinaries { dir: clients.clone(), major: 18 });
        // The same directory still serves the server programs.
        let chosen = search(Some(&server_only), &[&clients]).choose(&Need::server(16, "backup x")).unwrap();
        assert_eq!(chosen, PgBinaries { dir: server_only.clone(), major: 16 });

        let error = search(Some(&clients), &[&server_only]).choose(&Need::server(18, "backup x")).unwrap_err();
        let message = error.to_string();
        assert!(matches!(error, BinariesError::BinDirLacks { .. }), "{message}");
        assert!(message.starts_with(&format!("cluster.bin_dir {} has no postgres", clients.display())), "{message}");
    }

    #[test]
    fn debian_pg_wrapper_is_skipped() {
        let root = tempfile::tempdir().unwrap();
        // /usr/bin/pg_dump -> ../share/postgresql-common/pg_wrapper, which would answer for
        // whichever version it picks.
        let share = install(root.path(), "share/postgresql-common", &["pg_wrapper"], "16.4");
        let bin = root.path().join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        for program in DUMP {
            std::os::unix::fs::symlink(share.join("pg_wrapper"), bin.join(program)).unwrap();
        }
        let v17 = install(root.path(), "17", DUMP, "17.2");
        let chosen = search(None, &[&bin, &v17]).choose(&dump_need(16)).unwrap();
        assert_eq!(chosen, PgBinaries { dir: v17, major: 17 });

        let message = search(None, &[&bin]).choose(&dump_need(16)).unwrap_err().to_string();
        assert!(message.contains("found: none;"), "{message}");
    }

    #[test]
    fn a_link_to_the_program_itself_is_followed() {
        let root = tempfile::tempdir().unwrap();
        let real = install(root.path(), "opt/pg16/bin", DUMP, "16.4");
        let bin = root.path().join("local/bin");
        std::fs::create_dir_all(&bin).unwrap();
        for program in DUMP {
            std::os::unix::fs::symlink(real.join(program), bin.join(program)).unwrap();
        }
        let chosen = search(None, &[&bin]).choose(&dump_need(16)).unwrap();
        assert_eq!(chosen, PgBinaries { dir: bin, major: 16 });
    }
}
