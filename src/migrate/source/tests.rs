//! Reading each layout from files written the way its tool writes them.

use std::path::Path;

use chrono::{TimeZone, Utc};

use super::*;

fn write(dir: &Path, name: &str, text: &str) {
    let path = dir.join(name);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

fn versions(directory: &Directory) -> Vec<&str> {
    directory.migrations.iter().map(|migration| migration.version.as_str()).collect()
}

fn file_names(paths: &[PathBuf]) -> Vec<String> {
    paths.iter().map(|path| path.file_name().unwrap().to_string_lossy().into_owned()).collect()
}

#[test]
fn lifeboat_pairs_and_up_only_files_are_read() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "0001_create_users.up.sql", "CREATE TABLE users (id int);\n");
    write(dir.path(), "0001_create_users.down.sql", "DROP TABLE users;\n");
    write(dir.path(), "0002_seed.sql", "INSERT INTO users VALUES (1);\nINSERT INTO users VALUES (2);\n");
    write(dir.path(), "0003_orphan.down.sql", "SELECT 1;\n");
    write(dir.path(), "README.md", "not a migration");
    write(dir.path(), "create-tables.sql", "SELECT 1;\n");
    let directory = read(dir.path(), None).unwrap();
    assert_eq!(directory.layout, MigrationLayout::Lifeboat);
    assert_eq!(directory.numbering, Numbering::Sequential);
    assert_eq!(versions(&directory), ["0001", "0002"]);
    let first = &directory.migrations[0];
    assert_eq!(first.name, "create_users");
    assert_eq!(first.down.as_ref().unwrap().statements[0].text, "DROP TABLE users");
    assert!(directory.migrations[1].down.is_none());
    assert_eq!(directory.migrations[1].up.statements.len(), 2);
    assert_eq!(directory.problems.len(), 2, "{:?}", directory.problems);
    let messages: Vec<String> = directory.problems.iter().map(ToString::to_string).collect();
    assert!(messages.iter().any(|m| m.contains("create-tables.sql") && m.contains("<version>_<name>.up.sql")));
    assert!(messages.iter().any(|m| m.contains("0003_orphan.down.sql") && m.contains("no up migration")));
}

#[test]
fn gaps_and_duplicate_versions_are_problems() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "0001_a.sql", "SELECT 1;");
    write(dir.path(), "0003_b.sql", "SELECT 3;");
    write(dir.path(), "0003_c.up.sql", "SELECT 3;");
    write(dir.path(), "0004_d.sql", "SELECT 4;");
    let directory = read(dir.path(), Some(MigrationLayout::Lifeboat)).unwrap();
    assert_eq!(versions(&directory), ["0001", "0003", "0004"]);
    assert_eq!(directory.migrations[1].name, "b");
    let [Problem::DuplicateVersion { version, paths }, Problem::Gap { after, next }] = directory.problems.as_slice()
    else {
        panic!("{:?}", directory.problems)
    };
    assert_eq!(version.as_str(), "0003");
    assert_eq!(file_names(paths), ["0003_b.sql", "0003_c.up.sql"]);
    assert_eq!((after.as_str(), next.as_str()), ("0001", "0003"));
}

#[test]
fn mixing_timestamps_with_sequence_numbers_is_a_problem() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "20240102030405_a.sql", "SELECT 1;");
    write(dir.path(), "20240102030406_b.sql", "SELECT 1;");
    write(dir.path(), "0003_c.sql", "SELECT 1;");
    let directory = read(dir.path(), None).unwrap();
    assert_eq!(directory.numbering, Numbering::Timestamp);
    let [Problem::MixedNumbering { timestamp, sequential }] = directory.problems.as_slice() else {
        panic!("{:?}", directory.problems)
    };
    assert_eq!(file_names(timestamp), ["20240102030405_a.sql", "20240102030406_b.sql"]);
    assert_eq!(file_names(sequential), ["0003_c.sql"]);
    assert!(directory.problems[0].to_string().contains("keeps one numbering"));
}

#[test]
fn sqlx_no_transaction_descriptions_and_i64_versions() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "20240101000000_create_users.sql", "CREATE TABLE users (id int);");
    write(
        dir.path(),
        "20240102000000_add_email_index.sql",
        "-- no-transaction\nCREATE INDEX CONCURRENTLY i ON users (id);",
    );
    write(dir.path(), "99999999999999999999_too_big.sql", "SELECT 1;");
    assert_eq!(detect(dir.path()).unwrap(), Some(MigrationLayout::Sqlx));
    let directory = read(dir.path(), None).unwrap();
    assert_eq!(directory.layout, MigrationLayout::Sqlx);
    assert_eq!(versions(&directory), ["20240101000000", "20240102000000"]);
    assert_eq!(directory.migrations[1].name, "add email index");
    assert!(directory.migrations[0].up.transaction);
    assert!(!directory.migrations[1].up.transaction);
    let [Problem::Unreadable { path, why }] = directory.problems.as_slice() else { panic!("{:?}", directory.problems) };
    assert!(path.ends_with("99999999999999999999_too_big.sql") && why.contains("i64"), "{why}");
}

#[test]
fn golang_migrate_versions_sort_numerically_and_only_sql_is_read() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "9_create_users.up.sql", "CREATE TABLE users (id int);");
    write(dir.path(), "9_create_users.down.sql", "DROP TABLE users;");
    write(dir.path(), "10_add_email.up.sql", "ALTER TABLE users ADD email text;");
    write(dir.path(), "11_data.up.json", "{}");
    write(dir.path(), "12_single.sql", "SELECT 1;");
    assert_eq!(detect(dir.path()).unwrap(), Some(MigrationLayout::Lifeboat));
    let directory = read(dir.path(), Some(MigrationLayout::GolangMigrate)).unwrap();
    assert_eq!(versions(&directory), ["9", "10"]);
    let messages: Vec<String> = directory.problems.iter().map(ToString::to_string).collect();
    assert_eq!(messages.len(), 2, "{messages:?}");
    assert!(messages[0].contains("11_data.up.json") && messages[0].contains("only .sql"), "{messages:?}");
    assert!(messages[1].contains("12_single.sql") && messages[1].contains(".up.sql"), "{messages:?}");
}

#[test]
fn dbmate_sections_and_transaction_false() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "20240101000000_create_users.sql",
        "-- migrate:up\nCREATE TABLE users (id int);\n\n-- migrate:down\nDROP TABLE users;\n",
    );
    write(
        dir.path(),
        "20240102000000_index.sql",
        "-- migrate:up transaction:false\nCREATE INDEX CONCURRENTLY i ON users (id);\n-- migrate:down\n",
    );
    write(dir.path(), "20240103000000_nothing.sql", "SELECT 1;\n");
    assert_eq!(detect(dir.path()).unwrap(), Some(MigrationLayout::Dbmate));
    let directory = read(dir.path(), None).unwrap();
    assert_eq!(versions(&directory), ["20240101000000", "20240102000000"]);
    let first = &directory.migrations[0];
    assert_eq!(first.name, "create_users");
    assert_eq!(first.up.statements, [Statement { text: "CREATE TABLE users (id int)".to_owned(), line: 2 }]);
    assert_eq!(first.down.as_ref().unwrap().statements[0].line, 5);
    assert!(first.up.transaction);
    assert!(!directory.migrations[1].up.transaction);
    assert!(directory.migrations[1].down.is_none());
    let [Problem::Unreadable { path, why }] = directory.problems.as_slice() else { panic!("{:?}", directory.problems) };
    assert!(path.ends_with("20240103000000_nothing.sql") && why.contains("-- migrate:up"), "{why}");
}

#[test]
fn flyway_versions_repeatables_undo_and_conf_files() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "V1__init.sql", "CREATE TABLE a (id int);");
    write(dir.path(), "V1_1__add_column.sql", "ALTER TABLE a ADD b int;");
    write(dir.path(), "V2__.sql", "SELECT 2;");
    write(dir.path(), "sub/V3__index.sql", "CREATE INDEX CONCURRENTLY i ON a (id);");
    write(dir.path(), "sub/V3__index.sql.conf", "executeInTransaction=false\n");
    write(dir.path(), "U3__index.sql", "DROP INDEX i;");
    write(dir.path(), "V4.11.0.1__later.sql", "SELECT 5;");
    write(dir.path(), "V4.11__earlier.sql", "SELECT 4;");
    write(dir.path(), "R__views.sql", "CREATE OR REPLACE VIEW v AS SELECT 1;");
    write(dir.path(), "V5_missing_underscore.sql", "SELECT 1;");
    write(dir.path(), "afterMigrate.sql", "SELECT 1;");
    assert_eq!(detect(dir.path()).unwrap(), Some(MigrationLayout::Flyway));
    let directory = read(dir.path(), None).unwrap();
    assert_eq!(versions(&directory), ["1", "1_1", "2", "3", "4.11", "4.11.0.1"]);
    let names: Vec<&str> = directory.migrations.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(names, ["init", "add column", "", "index", "earlier", "later"]);
    let index = &directory.migrations[3];
    assert!(!index.up.transaction);
    assert_eq!(index.down.as_ref().unwrap().text, "DROP INDEX i;");
    assert!(directory.migrations[0].up.transaction);
    assert_eq!(directory.repeatables.len(), 1);
    assert_eq!(directory.repeatables[0].name, "views");
    let messages: Vec<String> = directory.problems.iter().map(ToString::to_string).collect();
    assert_eq!(messages.len(), 2, "{messages:?}");
    assert!(messages.iter().any(|m| m.contains("V5_missing_underscore.sql") && m.contains("V<version>__")));
    assert!(messages.iter().any(|m| m.contains("afterMigrate.sql") && m.contains("ignored")));
    assert!(directory.problems.iter().all(|p| p.is_blocking() == !matches!(p, Problem::Ignored { .. })));
}

#[test]
fn prisma_directories_with_spaces_in_names() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "migration_lock.toml", "provider = \"postgresql\"\n");
    write(dir.path(), "20240101000000_init/migration.sql", "-- CreateTable\nCREATE TABLE \"User\" (id int);\n");
    write(dir.path(), "20240102000000_add users table/migration.sql", "ALTER TABLE \"User\" ADD name text;\n");
    write(dir.path(), "20240103000000_empty/notes.txt", "");
    assert_eq!(detect(dir.path()).unwrap(), Some(MigrationLayout::Prisma));
    let directory = read(dir.path(), None).unwrap();
    assert_eq!(versions(&directory), ["20240101000000", "20240102000000"]);
    assert_eq!(directory.migrations[1].name, "add users table");
    assert_eq!(prisma::directory_name(&directory.migrations[1].up).as_deref(), Some("20240102000000_add users table"));
    let [Problem::Unreadable { path, why }] = directory.problems.as_slice() else { panic!("{:?}", directory.problems) };
    assert!(path.ends_with("20240103000000_empty") && why.contains("migration.sql"), "{why}");
}

#[test]
fn drizzle_journal_decides_and_unlisted_files_are_ignored() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "meta/_journal.json",
        r#"{"version":"7","dialect":"postgresql","entries":[
            {"idx":0,"version":"7","when":1717000000000,"tag":"0000_gray_revanche","breakpoints":true},
            {"idx":1,"version":"7","when":1717000100000,"tag":"0001_quick_fox","breakpoints":true}]}"#,
    );
    write(
        dir.path(),
        "0000_gray_revanche.sql",
        "CREATE TABLE \"users\" (\"id\" serial PRIMARY KEY);\n--> statement-breakpoint\nCREATE TABLE \"posts\" (\"id\" serial);",
    );
    write(dir.path(), "0001_quick_fox.sql", "ALTER TABLE \"users\" ADD COLUMN \"email\" text;");
    write(dir.path(), "0002_stray.sql", "DROP TABLE users;");
    assert_eq!(detect(dir.path()).unwrap(), Some(MigrationLayout::Drizzle));
    let directory = read(dir.path(), None).unwrap();
    assert_eq!(versions(&directory), ["0000", "0001"]);
    assert_eq!(directory.migrations[0].name, "gray_revanche");
    let lines: Vec<u32> = directory.migrations[0].up.statements.iter().map(|s| s.line).collect();
    assert_eq!(lines, [1, 3]);
    let [problem @ Problem::Ignored { path, .. }] = directory.problems.as_slice() else {
        panic!("{:?}", directory.problems)
    };
    assert!(path.ends_with("0002_stray.sql") && !problem.is_blocking());
}

#[test]
fn empty_and_missing_directories() {
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(detect(dir.path()).unwrap(), None);
    let directory = read(dir.path(), None).unwrap();
    assert_eq!((directory.layout, directory.numbering), (MigrationLayout::Lifeboat, Numbering::Empty));
    let missing = dir.path().join("nope");
    let error = read(&missing, None).unwrap_err();
    assert!(matches!(error, SourceError::Missing { .. }));
    assert!(error.to_string().contains("[migrate] dir"), "{error}");
}

#[test]
fn create_keeps_the_directory_numbering() {
    let now = Utc.with_ymd_and_hms(2026, 12, 6, 4, 5, 6).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let stamped = dir.path().join("migrations");
    let first = create(&stamped, "create_users", now).unwrap();
    assert_eq!(file_names(&first), ["20261206040506_create_users.up.sql", "20261206040506_create_users.down.sql"]);
    // Same second: the next one still sorts after it.
    let second = create(&stamped, "add_email", now).unwrap();
    assert_eq!(file_names(&second)[0], "20261206040507_add_email.up.sql");
    let directory = read(&stamped, None).unwrap();
    assert_eq!(versions(&directory), ["20261206040506", "20261206040507"]);
    assert!(directory.problems.is_empty(), "{:?}", directory.problems);
    assert!(directory.migrations[0].up.transaction && directory.migrations[0].up.statements.is_empty());

    let counted = dir.path().join("counted");
    write(&counted, "0007_a.up.sql", "SELECT 1;");
    assert_eq!(file_names(&create(&counted, "b2", now).unwrap())[0], "0008_b2.up.sql");
}

#[test]
fn create_refuses_bad_names_and_other_tools_directories() {
    let now = Utc.with_ymd_and_hms(2026, 12, 6, 4, 5, 6).unwrap();
    let dir = tempfile::tempdir().unwrap();
    for name in ["Add-Users", "", "add users"] {
        let error = create(dir.path(), name, now).unwrap_err();
        assert!(matches!(error, SourceError::InvalidName { .. }), "{name}: {error}");
        assert!(error.to_string().contains("lowercase letters, digits and underscores"));
    }
    write(dir.path(), "V1__init.sql", "SELECT 1;");
    let error = create(dir.path(), "next", now).unwrap_err();
    assert!(error.to_string().contains("laid out for flyway"), "{error}");
}
