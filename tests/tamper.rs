//! Tamper trials (issue 17, item 4): every kind of object a repository stores, altered in each
//! way an attacker or a broken disk could alter it, must be refused and named by every read path
//! that reads it (`list`, `info`, `verify --integrity-only`, `restore`, `wal-fetch`, and `audit`
//! for audit batches), without a panic, a death by signal, or altered data handed back.
//!
//! One repository is populated with every kind (tests/tamper.rs `populate`), and a second one,
//! of another cluster, gives each kind's "foreign" object. The repository and the state directory
//! are snapshotted; each case alters one object, runs the real binary's read paths on it, and puts
//! the snapshot back, so cases are independent and no cache of an earlier case hides a tampering.
//! The outcomes form a table that must equal the one in docs/tamper.md; on a difference the test
//! prints the new table and what each differing command said.

mod support;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Instant;

use lifeboat::catalog::id::BackupId;
use lifeboat::format::backup_manifest::BackupManifest;
use sqlx::{Connection, PgConnection};
use support::archiving::{Setup, archive_current_segment, execute, layout};
use support::output::{assert_success, describe};

/// The ways an object is altered; every kind gets each of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Way {
    FlipStart,
    FlipMiddle,
    FlipEnd,
    Truncate,
    Append,
    Swap,
    Foreign,
    Delete,
}

const WAYS: [Way; 8] =
    [Way::FlipStart, Way::FlipMiddle, Way::FlipEnd, Way::Truncate, Way::Append, Way::Swap, Way::Foreign, Way::Delete];

impl Way {
    fn label(self) -> &'static str {
        match self {
            Way::FlipStart => "bit flipped at the start",
            Way::FlipMiddle => "bit flipped in the middle",
            Way::FlipEnd => "bit flipped at the end",
            Way::Truncate => "truncated to half",
            Way::Append => "one byte appended",
            Way::Swap => "swapped with another of its kind",
            Way::Foreign => "replaced by another repository's",
            Way::Delete => "deleted",
        }
    }
}

/// The read paths, the table's columns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Column {
    List,
    Info,
    Verify,
    Restore,
    WalFetch,
    Audit,
}

const PATHS: [Column; 6] =
    [Column::List, Column::Info, Column::Verify, Column::Restore, Column::WalFetch, Column::Audit];

impl Column {
    fn label(self) -> &'static str {
        match self {
            Column::List => "list",
            Column::Info => "info",
            Column::Verify => "verify",
            Column::Restore => "restore",
            Column::WalFetch => "wal-fetch",
            Column::Audit => "audit",
        }
    }
}

/// One run of a read path on a tampered object.
#[derive(Debug, Clone)]
enum Read {
    /// `list --json`: refuses with exit status 1 and the object among `problems`.
    List,
    /// `info <id>`.
    Info(String),
    /// `verify --integrity-only --json <id>`.
    Verify(String),
    /// `restore --pgdata <scratch> --backup <id>`: nothing startable may be left.
    Restore(String),
    /// `restore --dump <id> --db app --into <empty database>`: no table may be left.
    RestoreDump(String),
    /// `wal-fetch <file> <scratch>/<file>`: no file may be left.
    WalFetch(String),
    /// `audit --json`.
    Audit,
}

impl Read {
    fn path(&self) -> Column {
        match self {
            Read::List => Column::List,
            Read::Info(_) => Column::Info,
            Read::Verify(_) => Column::Verify,
            Read::Restore(_) | Read::RestoreDump(_) => Column::Restore,
            Read::WalFetch(_) => Column::WalFetch,
            Read::Audit => Column::Audit,
        }
    }
}

/// A kind of stored object: one object of it to tamper with, where its same-kind substitutes
/// are, what a message may call it, and the read paths that read it.
struct Kind {
    label: &'static str,
    /// The object's key in the repository.
    key: String,
    /// Another object of the same kind in the same repository; `None` when there is none.
    swap: Option<String>,
    /// The object of the same role in the other repository.
    foreign: String,
    /// What naming the object means: its key, or the backup, dump or WAL file it belongs to.
    names: Vec<String>,
    reads: Vec<Read>,
}

/// What one repository holds, as the kinds need it.
struct Population {
    repo: PathBuf,
    full: String,
    incr: String,
    dump: String,
    /// A segment the full backup needs to be consistent, and another one.
    segment: String,
    other_segment: String,
    /// The backup history files PostgreSQL archived for the two backups.
    backup_histories: Vec<String>,
    /// Keys of: a bundle and a part of a large file of the full backup, a data object of the
    /// incremental, and two other objects of the full backup to swap with.
    bundle: String,
    part: String,
    incr_object: String,
    reports: Vec<String>,
    journal: Vec<String>,
    audit: Vec<String>,
}

const HISTORY_2: &str = "00000002.history";
const HISTORY_3: &str = "00000003.history";

/// Fills `setup`'s repository with every kind of object: a full backup with a bundle, a large
/// file in parts and a block map, an incremental on it, a dump of two databases, a verification
/// report for each backup, two timeline history files (branching far beyond anything archived,
/// so they change no restore of these backups), WAL, journal entries and audit batches.
async fn populate(setup: &Setup) -> Population {
    let mut conn = setup.connect().await;
    execute(&mut conn, "CREATE TABLE big AS SELECT g, repeat('x', 200) AS v FROM generate_series(1, 15000) g").await;
    let full = setup.backup().await;
    execute(&mut conn, "UPDATE big SET v = 'changed' WHERE g % 100 = 0").await;
    let incr = setup
        .backup_with(|options| {
            options.part_size = 1024 * 1024;
            options.incremental = true;
        })
        .await
        .manifest
        .id
        .to_string();
    // Created after the base backups, which it would only make slower to restore.
    execute(&mut conn, "CREATE DATABASE app").await;
    let mut app = PgConnection::connect_with(&setup.cluster.connect_options().database("app")).await.unwrap();
    execute(&mut app, "CREATE TABLE accounts AS SELECT g AS id FROM generate_series(1, 1000) g").await;
    app.close().await.unwrap();
    let dump = setup.json(&["dump", "--db", "app", "--db", "postgres", "--json"])["id"].as_str().unwrap().to_owned();
    for id in [&full, &incr] {
        assert_success(&setup.run(&["verify", "--integrity-only", id]));
    }
    for (name, text) in [
        (HISTORY_2, "1\tFF/0\tno recovery target specified\n"),
        (HISTORY_3, "1\tFF/0\tno recovery target specified\n2\tFF/1000000\tno recovery target specified\n"),
    ] {
        let path = setup.cluster.data_dir().join("pg_wal").join(name);
        std::fs::write(&path, text).unwrap();
        assert_success(&setup.run(&["wal-push", path.to_str().unwrap()]));
        std::fs::remove_file(&path).unwrap();
    }
    archive_current_segment(&mut conn).await;
    // An audit batch of its own after the others: `audit` flushes this host's spool.
    assert_success(&setup.run(&["audit"]));

    let repository = setup.repository().await;
    let manifest = BackupManifest::read(&repository, &layout(), full.parse::<BackupId>().unwrap()).await.unwrap();
    let incremental = BackupManifest::read(&repository, &layout(), incr.parse::<BackupId>().unwrap()).await.unwrap();
    let backup_key = |id: &str, object: &str| format!("clusters/main/backups/{id}/{object}");
    let bundle = manifest.objects.iter().find(|object| object.files > 1).expect("a bundle").key.clone();
    let part = manifest.files.iter().find(|file| file.locations.len() > 1).expect("a file stored in parts").locations
        [0]
    .object
    .clone();
    let repo = setup.repo_dir();
    let wal_dir = repo.join("clusters/main/wal/00000001");
    let segments = names_in(&wal_dir, |name| name.len() == 24);
    let other_segment = segments.iter().find(|name| **name != manifest.start_wal).unwrap().clone();
    Population {
        full: full.clone(),
        incr: incr.clone(),
        dump,
        segment: manifest.start_wal.clone(),
        other_segment,
        backup_histories: names_in(&wal_dir, |name| name.ends_with(".backup")),
        bundle: backup_key(&full, &bundle),
        part: backup_key(&full, &part),
        incr_object: backup_key(&incr, &incremental.objects[0].key),
        reports: [&full, &incr]
            .iter()
            .map(|id| {
                let dir = format!("clusters/main/verify/{id}");
                format!("{dir}/{}", names_in(&repo.join(&dir), |_| true)[0])
            })
            .collect(),
        journal: names_in(&repo.join("clusters/main/journal"), |_| true)
            .into_iter()
            .rev()
            .map(|name| format!("clusters/main/journal/{name}"))
            .collect(),
        audit: names_in(&repo.join("clusters/main/audit"), |_| true)
            .into_iter()
            .map(|name| format!("clusters/main/audit/{name}"))
            .collect(),
        repo,
    }
}

/// The names of the files in `dir` that `keep` keeps, sorted.
fn names_in(dir: &Path, keep: impl Fn(&str) -> bool) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap_or_else(|error| panic!("{}: {error}", dir.display()))
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| keep(name))
        .collect();
    names.sort();
    names
}

/// The number of the journal entry stored under `key` (messages say "entry 7").
fn entry_number(key: &str) -> u64 {
    key.rsplit('/').next().unwrap().parse().unwrap()
}

/// The kinds, with their objects in `main` and their foreign substitutes in `other`.
fn kinds(main: &Population, other: &Population) -> Vec<Kind> {
    let (full, incr, dump) = (&main.full, &main.incr, &main.dump);
    let wal = |name: &str| format!("clusters/main/wal/00000001/{name}");
    let history = |name: &str| format!("clusters/main/wal/{name}");
    let manifest = |id: &str| format!("clusters/main/backups/{id}/manifest");
    let dump_key = |id: &str, object: &str| format!("clusters/main/dumps/{id}/{object}");
    let every_reader_of_the_catalog =
        |id: &str| vec![Read::List, Read::Info(id.to_owned()), Read::Verify(id.to_owned())];
    let catalog_listings = |id: &str| vec![Read::List, Read::Info(id.to_owned())];
    let with = |mut reads: Vec<Read>, more: Vec<Read>| {
        reads.extend(more);
        reads
    };
    vec![
        Kind {
            label: "repository file (`lifeboat.repo`)",
            key: "lifeboat.repo".into(),
            swap: None,
            foreign: "lifeboat.repo".into(),
            names: vec!["lifeboat.repo".into()],
            reads: with(
                every_reader_of_the_catalog(full),
                vec![Read::Restore(full.clone()), Read::WalFetch(main.segment.clone())],
            ),
        },
        Kind {
            label: "repository file copy (`lifeboat.repo.copy`)",
            key: "lifeboat.repo.copy".into(),
            swap: None,
            foreign: "lifeboat.repo.copy".into(),
            names: vec!["lifeboat.repo.copy".into()],
            reads: catalog_listings(full),
        },
        Kind {
            label: "cluster record",
            key: "clusters/main/cluster".into(),
            swap: None,
            foreign: "clusters/main/cluster".into(),
            names: vec!["clusters/main/cluster".into()],
            reads: with(
                catalog_listings(full),
                vec![Read::Restore(full.clone()), Read::WalFetch(main.segment.clone())],
            ),
        },
        Kind {
            label: "full backup manifest",
            key: manifest(full),
            swap: Some(manifest(incr)),
            foreign: manifest(&other.full),
            names: vec![manifest(full), full.clone()],
            reads: with(every_reader_of_the_catalog(full), vec![Read::Restore(full.clone())]),
        },
        Kind {
            label: "incremental backup manifest",
            key: manifest(incr),
            swap: Some(manifest(full)),
            foreign: manifest(&other.incr),
            names: vec![manifest(incr), incr.clone()],
            reads: with(every_reader_of_the_catalog(incr), vec![Read::Restore(incr.clone())]),
        },
        Kind {
            label: "data object: bundle of small files",
            key: main.bundle.clone(),
            swap: Some(main.part.clone()),
            foreign: other.bundle.clone(),
            names: vec![main.bundle.clone()],
            reads: vec![Read::Verify(full.clone()), Read::Restore(full.clone())],
        },
        Kind {
            label: "data object: part of a large file",
            key: main.part.clone(),
            swap: Some(main.bundle.clone()),
            foreign: other.part.clone(),
            names: vec![main.part.clone()],
            reads: vec![Read::Verify(full.clone()), Read::Restore(full.clone())],
        },
        Kind {
            label: "data object of an incremental",
            key: main.incr_object.clone(),
            swap: Some(main.bundle.clone()),
            foreign: other.incr_object.clone(),
            names: vec![main.incr_object.clone()],
            reads: vec![Read::Verify(incr.clone()), Read::Restore(incr.clone())],
        },
        Kind {
            label: "block map (`blocks`)",
            key: format!("clusters/main/backups/{full}/blocks"),
            swap: Some(format!("clusters/main/backups/{incr}/blocks")),
            foreign: format!("clusters/main/backups/{}/blocks", other.full),
            names: vec![format!("clusters/main/backups/{full}/blocks")],
            reads: vec![Read::Verify(full.clone())],
        },
        Kind {
            label: "WAL segment",
            key: wal(&main.segment),
            swap: Some(wal(&main.other_segment)),
            foreign: wal(&other.segment),
            names: vec![main.segment.clone()],
            reads: with(
                every_reader_of_the_catalog(full),
                vec![Read::Restore(full.clone()), Read::WalFetch(main.segment.clone())],
            ),
        },
        Kind {
            label: "backup history file",
            key: wal(&main.backup_histories[0]),
            swap: Some(wal(&main.backup_histories[1])),
            foreign: wal(&other.backup_histories[0]),
            names: vec![main.backup_histories[0].clone()],
            reads: vec![Read::WalFetch(main.backup_histories[0].clone())],
        },
        Kind {
            label: "timeline history file",
            key: history(HISTORY_2),
            swap: Some(history(HISTORY_3)),
            foreign: history(HISTORY_2),
            names: vec![HISTORY_2.into()],
            reads: vec![Read::Restore(full.clone()), Read::WalFetch(HISTORY_2.into())],
        },
        Kind {
            label: "dump manifest",
            key: dump_key(dump, "manifest"),
            swap: None,
            foreign: dump_key(&other.dump, "manifest"),
            names: vec![dump_key(dump, "manifest"), dump.clone()],
            reads: with(every_reader_of_the_catalog(dump), vec![Read::RestoreDump(dump.clone())]),
        },
        Kind {
            label: "dump data (a database's archive)",
            key: dump_key(dump, "data/app.dump"),
            swap: Some(dump_key(dump, "data/postgres.dump")),
            foreign: dump_key(&other.dump, "data/app.dump"),
            names: vec![dump_key(dump, "data/app.dump")],
            reads: vec![Read::Verify(dump.clone()), Read::RestoreDump(dump.clone())],
        },
        Kind {
            label: "dump data (globals)",
            key: dump_key(dump, "data/globals.sql"),
            swap: Some(dump_key(dump, "data/postgres.dump")),
            foreign: dump_key(&other.dump, "data/globals.sql"),
            names: vec![dump_key(dump, "data/globals.sql")],
            reads: vec![Read::Verify(dump.clone())],
        },
        Kind {
            label: "verification report",
            key: main.reports[0].clone(),
            swap: Some(main.reports[1].clone()),
            foreign: other.reports[0].clone(),
            names: vec![main.reports[0].clone()],
            reads: catalog_listings(full),
        },
        Kind {
            label: "journal entry (the newest)",
            key: main.journal[0].clone(),
            swap: Some(main.journal[1].clone()),
            foreign: other.journal[0].clone(),
            names: vec![main.journal[0].clone(), format!("entry {}", entry_number(&main.journal[0]))],
            reads: every_reader_of_the_catalog(full),
        },
        Kind {
            label: "audit batch",
            key: main.audit[0].clone(),
            swap: Some(main.audit[1].clone()),
            foreign: other.audit[0].clone(),
            names: vec![main.audit[0].clone()],
            reads: vec![Read::Audit],
        },
    ]
}

/// Alters `kind`'s object in `repo` in `way`; `false` when the way does not apply (no other
/// object of the kind to swap with). The altered object is written as a new file, never in
/// place: the snapshot shares the original's inode.
fn tamper(repo: &Path, other_repo: &Path, kind: &Kind, way: Way) -> bool {
    let path = repo.join(&kind.key);
    let original = std::fs::read(&path).unwrap_or_else(|error| panic!("{}: {error}", path.display()));
    let flip = |at: usize| {
        let mut bytes = original.clone();
        bytes[at] ^= 0x01;
        bytes
    };
    let altered = match way {
        Way::FlipStart => flip(0),
        Way::FlipMiddle => flip(original.len() / 2),
        Way::FlipEnd => flip(original.len() - 1),
        Way::Truncate => original[..original.len() / 2].to_vec(),
        Way::Append => [original.as_slice(), b"\0"].concat(),
        Way::Swap => match &kind.swap {
            Some(swap) => std::fs::read(repo.join(swap)).unwrap(),
            None => return false,
        },
        Way::Foreign => std::fs::read(other_repo.join(&kind.foreign)).unwrap(),
        Way::Delete => {
            std::fs::remove_file(&path).unwrap();
            return true;
        }
    };
    assert_ne!(altered, original, "{} {}: the tampering changes the bytes", kind.label, way.label());
    std::fs::remove_file(&path).unwrap();
    std::fs::write(&path, altered).unwrap();
    true
}

/// The repository and state directory as populated, put back after every case.
struct Snapshot {
    dir: tempfile::TempDir,
}

impl Snapshot {
    fn take(setup: &Setup) -> Snapshot {
        let dir = tempfile::tempdir().unwrap();
        copy_tree(&setup.repo_dir(), &dir.path().join("repo"), true);
        copy_tree(&setup.state_dir(), &dir.path().join("state"), false);
        Snapshot { dir }
    }

    fn put_back(&self, setup: &Setup) {
        for (name, target, link) in [("repo", setup.repo_dir(), true), ("state", setup.state_dir(), false)] {
            std::fs::remove_dir_all(&target).unwrap();
            copy_tree(&self.dir.path().join(name), &target, link);
        }
    }
}

/// `cp -a` (with `link`, hard links instead of copies: nothing rewrites a stored object in place).
fn copy_tree(from: &Path, to: &Path, link: bool) {
    let flags = if link { "-al" } else { "-a" };
    let status = Command::new("cp").arg(flags).arg(from).arg(to).status().unwrap();
    assert!(status.success(), "cp {flags} {} {}", from.display(), to.display());
}

/// The outcome of one read, and what the command said (for the report of a difference).
struct Outcome {
    cell: String,
    succeeded: bool,
    evidence: String,
}

/// Runs `read` and judges it. `names`: what naming the object means.
async fn judge(setup: &Setup, read: &Read, names: &[String]) -> Outcome {
    let scratch = tempfile::tempdir_in(setup.cluster.root_dir()).unwrap();
    let restored = scratch.path().join("pgdata");
    let fetched = scratch.path().join("fetched");
    let (output, left) = match read {
        Read::List => (setup.run(&["list", "--json"]), None),
        Read::Info(id) => (setup.run(&["info", id]), None),
        Read::Verify(id) => (setup.run(&["verify", "--integrity-only", "--json", id]), None),
        Read::Restore(id) => {
            let output = setup.restore(&restored, &["--backup", id]);
            let control = restored.join("global/pg_control");
            (output, control.exists().then(|| format!("{} exists", control.display())))
        }
        Read::RestoreDump(id) => {
            let mut conn = setup.connect().await;
            execute(&mut conn, "DROP DATABASE IF EXISTS tamper_target").await;
            execute(&mut conn, "CREATE DATABASE tamper_target").await;
            let into = setup.cluster.connection_url().replacen("///postgres?", "///tamper_target?", 1);
            let output = setup.run(&["restore", "--dump", id, "--db", "app", "--into", &into]);
            let mut target =
                PgConnection::connect_with(&setup.cluster.connect_options().database("tamper_target")).await.unwrap();
            let tables: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'")
                .fetch_one(&mut target)
                .await
                .unwrap();
            target.close().await.unwrap();
            (output, (tables > 0).then(|| format!("{tables} tables restored")))
        }
        Read::WalFetch(name) => {
            std::fs::create_dir(&fetched).unwrap();
            let target = fetched.join(name);
            let output = setup.run(&["wal-fetch", name, target.to_str().unwrap()]);
            (output, target.exists().then(|| format!("{} exists", target.display())))
        }
        Read::Audit => (setup.run(&["audit", "--json"]), None),
    };
    let said = what_it_says(read, &output);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let named = names.iter().any(|name| said.contains(name.as_str()));
    let cell = if output.status.code().is_none() {
        "KILLED BY A SIGNAL"
    } else if stderr.contains("panicked") {
        "PANICKED"
    } else if output.status.success() {
        if named { "warned" } else { "not refused" }
    } else if left.is_some() {
        "REFUSED, LEFT DATA"
    } else if named {
        "refused"
    } else {
        "REFUSED, UNNAMED"
    };
    let evidence = format!("{read:?}: {}\n{}", left.unwrap_or_default(), describe(&output));
    Outcome { cell: cell.to_owned(), succeeded: output.status.success(), evidence }
}

/// The text in which a read path names a problem: stderr, and for `list` and `verify` the
/// problems (and failures) of their JSON, not the listing itself, which names every backup.
fn what_it_says(read: &Read, output: &Output) -> String {
    let mut said = String::from_utf8_lossy(&output.stderr).into_owned();
    let json = serde_json::from_slice::<serde_json::Value>(&output.stdout).unwrap_or_default();
    match read {
        Read::List => said.push_str(&json["problems"].to_string()),
        Read::Verify(_) => {
            said.push_str(&json["problems"].to_string());
            for report in json["reports"].as_array().into_iter().flatten() {
                said.push_str(&report["failure"].to_string());
            }
        }
        _ => {}
    }
    said
}

/// The table, as docs/tamper.md holds it between its markers.
fn table(kinds: &[Kind], cells: &BTreeMap<(usize, usize, Column), String>) -> String {
    let mut table = String::from("| object | tampering |");
    for path in PATHS {
        write!(table, " {} |", path.label()).unwrap();
    }
    table.push_str("\n|---|---|");
    table.push_str(&"---|".repeat(PATHS.len()));
    table.push('\n');
    for (k, kind) in kinds.iter().enumerate() {
        for (w, way) in WAYS.iter().enumerate() {
            write!(table, "| {} | {} |", kind.label, way.label()).unwrap();
            for path in PATHS {
                write!(table, " {} |", cells.get(&(k, w, path)).map_or("—", String::as_str)).unwrap();
            }
            table.push('\n');
        }
    }
    table
}

const START: &str = "<!-- tamper table: generated by tests/tamper.rs -->\n";
const END: &str = "<!-- end of tamper table -->";

fn documented_table() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/tamper.md");
    let text = std::fs::read_to_string(&path).unwrap_or_default();
    text.split_once(START)
        .and_then(|(_, rest)| rest.split_once(END))
        .map(|(table, _)| table.to_owned())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn every_tampered_object_is_refused_and_named_by_every_read_path() {
    let started = Instant::now();
    let (setup, other) = tokio::join!(Setup::start(), Setup::start());
    let (main, foreign) = tokio::join!(populate(&setup), populate(&other));
    let kinds = kinds(&main, &foreign);
    let snapshot = Snapshot::take(&setup);
    let populated = started.elapsed();

    // Untouched, every read succeeds: a refusal below is the tampering's doing.
    for kind in &kinds {
        for read in &kind.reads {
            let outcome = judge(&setup, read, &kind.names).await;
            assert!(
                outcome.succeeded,
                "{}: {read:?} fails on the untouched repository\n{}",
                kind.label, outcome.evidence
            );
        }
        snapshot.put_back(&setup);
    }

    let mut cells = BTreeMap::new();
    let mut evidence = BTreeMap::new();
    let mut seconds = BTreeMap::<Column, f64>::new();
    for (k, kind) in kinds.iter().enumerate() {
        for (w, way) in WAYS.iter().enumerate() {
            if !tamper(&main.repo, &foreign.repo, kind, *way) {
                for read in &kind.reads {
                    cells.insert((k, w, read.path()), "n/a".to_owned());
                }
                continue;
            }
            for read in &kind.reads {
                let timer = Instant::now();
                let outcome = judge(&setup, read, &kind.names).await;
                *seconds.entry(read.path()).or_default() += timer.elapsed().as_secs_f64();
                evidence.insert((k, w, read.path()), outcome.evidence);
                cells.insert((k, w, read.path()), outcome.cell);
            }
            snapshot.put_back(&setup);
        }
    }

    let found = table(&kinds, &cells);
    let documented = documented_table();
    println!("populated in {:.1} s, all in {:.1} s", populated.as_secs_f64(), started.elapsed().as_secs_f64());
    for (path, seconds) in &seconds {
        println!("  {}: {seconds:.1} s", path.label());
    }
    if found != documented {
        let mut report = String::new();
        for (k, kind) in kinds.iter().enumerate() {
            for (w, way) in WAYS.iter().enumerate() {
                let row = format!("| {} | {} |", kind.label, way.label());
                let documented_row = documented.lines().find(|line| line.starts_with(&row));
                let found_row = found.lines().find(|line| line.starts_with(&row));
                if documented_row == found_row {
                    continue;
                }
                for path in PATHS {
                    if let Some(said) = evidence.get(&(k, w, path)) {
                        writeln!(
                            report,
                            "--- {} / {} / {}: {}\n{said}",
                            kind.label,
                            way.label(),
                            path.label(),
                            cells[&(k, w, path)]
                        )
                        .unwrap();
                    }
                }
            }
        }
        panic!(
            "the outcomes differ from docs/tamper.md; what each differing command said:\n{report}\nthe table found:\n{START}{found}{END}"
        );
    }
}

/// Replaces the file at `path` by a copy with the bit at its middle flipped (a new inode).
fn flip_middle(path: &Path) {
    let mut bytes = std::fs::read(path).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    std::fs::remove_file(path).unwrap();
    std::fs::write(path, bytes).unwrap();
}

/// Defect found by the trials: `wal-fetch` refused a segment sealed by another repository, and
/// then panicked ("a WAL download does not panic: JoinError::Cancelled") when the process ended
/// while its prefetches were still queued. The refusal must be the whole answer.
#[tokio::test(flavor = "multi_thread")]
async fn tamper_wal_segment_replaced_by_another_repositorys_is_refused_by_wal_fetch_without_a_panic() {
    let (setup, other) = tokio::join!(Setup::start(), Setup::start());
    let mut conn = setup.connect().await;
    // Segments after the tampered one, for wal-fetch to prefetch.
    for _ in 0..4 {
        archive_current_segment(&mut conn).await;
    }
    let name = "000000010000000000000001";
    let key = format!("clusters/main/wal/00000001/{name}");
    let target = setup.repo_dir().join(&key);
    std::fs::remove_file(&target).unwrap();
    std::fs::copy(other.repo_dir().join(&key), &target).unwrap();
    for attempt in 0..10 {
        let scratch = tempfile::tempdir().unwrap();
        let fetched = scratch.path().join(name);
        let output = setup.run(&["wal-fetch", name, fetched.to_str().unwrap()]);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "attempt {attempt}\n{}", describe(&output));
        assert!(!stderr.contains("panicked"), "attempt {attempt}\n{stderr}");
        assert!(stderr.contains(&key) && stderr.contains("another repository"), "attempt {attempt}\n{stderr}");
        assert!(!fetched.exists(), "attempt {attempt}: nothing is handed to PostgreSQL");
    }
}

/// Defect found by the trials: `info` kept only the problems whose key held the backup's id, so
/// an altered newest journal entry (on which the verdict it prints rests) went unmentioned, while
/// `list` named it.
#[tokio::test(flavor = "multi_thread")]
async fn tamper_journal_entry_altered_is_named_by_info() {
    let setup = Setup::start().await;
    let id = setup.backup().await;
    assert_success(&setup.run(&["info", &id]));
    let journal = setup.repo_dir().join("clusters/main/journal");
    let newest = names_in(&journal, |_| true).pop().unwrap();
    flip_middle(&journal.join(&newest));
    let output = setup.run(&["info", &id]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains(&format!("clusters/main/journal/{newest}")), "{}", describe(&output));
}

/// Defect found by the trials: `verify` never read the block map (only the next incremental
/// backup does), so an altered one passed verification.
#[tokio::test(flavor = "multi_thread")]
async fn tamper_block_map_altered_is_refused_by_verify() {
    let setup = Setup::start().await;
    let id = setup.backup().await;
    let key = format!("clusters/main/backups/{id}/blocks");
    flip_middle(&setup.repo_dir().join(&key));
    let output = setup.run(&["verify", "--integrity-only", &id]);
    assert!(!output.status.success(), "{}", describe(&output));
    let said = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(said.contains(&key), "{}", describe(&output));
}
