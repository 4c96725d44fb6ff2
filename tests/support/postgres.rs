//! The PostgreSQL programs of each major version the tests run, as scripts/test installs them.
//!
//! A major's server programs (`initdb`, `pg_ctl`, `postgres`) come from the distribution's
//! `/usr/lib/postgresql/<major>/bin` when it has them (Debian's 15, the default major of the
//! suite, with its client programs), else from the test cache, `<root>/<major>/bin`. The cache
//! also holds PostgreSQL 18's client programs (`pg_dump`, `pg_restore`, `pg_amcheck`,
//! `pg_basebackup`, ...) in `<root>/clients-18/bin`, which work against older servers. The root is
//! `LIFEBOAT_TEST_POSTGRES`, else the directory scripts/test uses: `/var/cache/lifeboat-test/postgres`
//! as root, `$HOME/.cache/lifeboat-test/postgres` otherwise.

use std::path::{Path, PathBuf};

use lifeboat::postgres::binaries::PgBinaries;

/// The major the suite runs outside the version matrix (Debian's server and clients).
pub const DEFAULT_MAJOR: u32 = 15;

/// Where Debian and Ubuntu install each major.
const DISTRIBUTION_ROOT: &str = "/usr/lib/postgresql";

/// The directory scripts/test installs the majors into.
pub fn cache_root() -> PathBuf {
    if let Some(root) = std::env::var_os("LIFEBOAT_TEST_POSTGRES") {
        return PathBuf::from(root);
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        PathBuf::from("/var/cache/lifeboat-test/postgres")
    } else {
        let home = std::env::var_os("HOME").expect("HOME is set (the test cache is below it)");
        Path::new(&home).join(".cache/lifeboat-test/postgres")
    }
}

/// The bin directory with the server programs of `major`. Panics, naming the major and where it
/// was looked for, when no installation has it.
pub fn bin_dir(major: u32) -> PathBuf {
    let distribution = Path::new(DISTRIBUTION_ROOT).join(major.to_string()).join("bin");
    let cached = cache_root().join(major.to_string()).join("bin");
    for dir in [&distribution, &cached] {
        if ["initdb", "pg_ctl", "postgres"].iter().all(|program| dir.join(program).is_file()) {
            return dir.clone();
        }
    }
    panic!(
        "PostgreSQL {major} is not installed (looked in {} and {}): run scripts/test, which installs it",
        distribution.display(),
        cached.display()
    )
}

/// The programs of `major`, checked to be that major.
pub fn binaries(major: u32) -> PgBinaries {
    let dir = bin_dir(major);
    let binaries =
        PgBinaries::at(&dir).unwrap_or_else(|error| panic!("PostgreSQL {major} in {}: {error}", dir.display()));
    assert_eq!(binaries.major(), major, "{} holds PostgreSQL {}, not {major}", dir.display(), binaries.major());
    binaries
}

/// The bin directory with PostgreSQL 18's client programs. Panics when it is not installed.
pub fn clients_dir() -> PathBuf {
    let dir = cache_root().join("clients-18/bin");
    assert!(
        dir.join("pg_dump").is_file(),
        "PostgreSQL 18's client programs are not installed ({} has no pg_dump): run scripts/test, which installs them",
        dir.display()
    );
    dir
}

/// `PATH` with [`clients_dir`] appended, so programs found on `PATH` come from the system first.
pub fn path_with_clients() -> std::ffi::OsString {
    let mut dirs: Vec<PathBuf> =
        std::env::var_os("PATH").map(|path| std::env::split_paths(&path).collect()).unwrap_or_default();
    dirs.push(clients_dir());
    std::env::join_paths(dirs).expect("PATH entries without ':'")
}
