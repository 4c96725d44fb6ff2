//! Adopting another tool's history: for each tool, the directory and the history table are built
//! the way that tool writes them (table definitions and inserts from its documented formats), in
//! a real PostgreSQL cluster; lifeboat must report exactly which versions the tool applied, which
//! failed, which are pending, with the tool's own dates and checksums, and note a file edited
//! after it ran.

mod support;

use std::path::Path;

use chrono::{DateTime, Utc};
use lifeboat::config::MigrationLayout;
use lifeboat::migrate::adopt::{AdoptError, ForeignHistory, ForeignState, read_history};
use lifeboat::migrate::source::{self, Directory};
use lifeboat::postgres::binaries::PgBinaries;
use lifeboat::postgres::cluster::{LocalCluster, LocalClusterOptions};
use sqlx::{AssertSqlSafe, Connection, PgConnection};

async fn cluster() -> (LocalCluster, PgConnection) {
    let binaries = PgBinaries::find(None).expect("PostgreSQL binaries (scripts/test installs them)");
    let cluster = LocalCluster::start_new(&binaries, LocalClusterOptions::default()).await.expect("start a cluster");
    let conn = PgConnection::connect_with(&cluster.connect_options()).await.expect("connect");
    (cluster, conn)
}

async fn execute(conn: &mut PgConnection, sql: &str) {
    sqlx::raw_sql(AssertSqlSafe(sql.to_owned()))
        .execute(&mut *conn)
        .await
        .unwrap_or_else(|error| panic!("{sql}: {error}"));
}

fn write(dir: &Path, name: &str, text: &str) {
    let path = dir.join(name);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

fn utc(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text).unwrap().with_timezone(&Utc)
}

/// (version, state) of each entry, with `Failed` as "failed".
fn states(history: &ForeignHistory) -> Vec<(String, &'static str)> {
    history
        .entries
        .iter()
        .map(|entry| {
            let state = match entry.state {
                ForeignState::Applied => "applied",
                ForeignState::Failed { .. } => "failed",
                ForeignState::RolledBack => "rolled back",
            };
            (entry.version.to_string(), state)
        })
        .collect()
}

/// The directory's versions without an entry: what `migrate up` would apply.
fn pending(directory: &Directory, history: &ForeignHistory) -> Vec<String> {
    directory
        .migrations
        .iter()
        .filter(|migration| !history.entries.iter().any(|entry| entry.version == migration.version))
        .map(|migration| migration.version.to_string())
        .collect()
}

fn owned(pairs: &[(&str, &'static str)]) -> Vec<(String, &'static str)> {
    pairs.iter().map(|(version, state)| (version.to_string(), *state)).collect()
}

#[tokio::test]
async fn sqlx_history_is_adopted_with_dates_checksums_failures_and_edits() {
    let (_cluster, mut conn) = cluster().await;
    let dir = tempfile::tempdir().unwrap();
    let applied_texts = [
        ("20240101000000_create_users.sql", "CREATE TABLE users (id bigint PRIMARY KEY);\n"),
        ("20240102000000_add_email.sql", "ALTER TABLE users ADD email text;\n"),
        (
            "20240103000000_index_email.sql",
            "-- no-transaction\nCREATE INDEX CONCURRENTLY users_email ON users (email);\n",
        ),
    ];
    // On disk now: the first checked out with CRLF (not an edit), the second edited after it ran.
    write(dir.path(), applied_texts[0].0, &applied_texts[0].1.replace('\n', "\r\n"));
    write(dir.path(), applied_texts[1].0, "ALTER TABLE users ADD email text NOT NULL DEFAULT '';\n");
    write(dir.path(), applied_texts[2].0, applied_texts[2].1);
    write(dir.path(), "20240104000000_add_name.sql", "ALTER TABLE users ADD name text;\n");
    let directory = source::read(dir.path(), None).unwrap();
    assert_eq!(directory.layout, MigrationLayout::Sqlx);

    let error = read_history(&mut conn, MigrationLayout::Sqlx, &directory).await.unwrap_err();
    assert!(matches!(error, AdoptError::NoTable { .. }));
    let message = error.to_string();
    assert!(
        message.contains("no _sqlx_migrations table in database postgres")
            && message.contains("lifeboat migrate baseline"),
        "{message}"
    );

    // sqlx-postgres's ensure_migrations_table and apply, then the dates as if applied back then.
    execute(
        &mut conn,
        "CREATE TABLE IF NOT EXISTS _sqlx_migrations (
            version BIGINT PRIMARY KEY,
            description TEXT NOT NULL,
            installed_on TIMESTAMPTZ NOT NULL DEFAULT now(),
            success BOOLEAN NOT NULL,
            checksum BYTEA NOT NULL,
            execution_time BIGINT NOT NULL
        )",
    )
    .await;
    let rows = [
        (20240101000000_i64, "create users", true),
        (20240102000000, "add email", true),
        (20240103000000, "index email", false),
    ];
    for ((version, description, success), (_, text)) in rows.iter().zip(applied_texts) {
        sqlx::query(
            "INSERT INTO _sqlx_migrations ( version, description, success, checksum, execution_time ) \
             VALUES ( $1, $2, $3, sha384($4), -1 )",
        )
        .bind(version)
        .bind(description)
        .bind(success)
        .bind(text.as_bytes())
        .execute(&mut conn)
        .await
        .unwrap();
        sqlx::query("UPDATE _sqlx_migrations SET execution_time = $1 WHERE version = $2")
            .bind(1_500_000_i64)
            .bind(version)
            .execute(&mut conn)
            .await
            .unwrap();
    }
    execute(
        &mut conn,
        "UPDATE _sqlx_migrations SET installed_on = timestamptz '2024-01-01 10:00:00+00' + (version - 20240101000000) / 1000000 * interval '1 day'",
    )
    .await;
    // A version applied from a file that is no longer in the directory.
    execute(
        &mut conn,
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
         VALUES (20231231000000, 'gone', TRUE, sha384('x'), 7)",
    )
    .await;

    let history = read_history(&mut conn, MigrationLayout::Sqlx, &directory).await.unwrap();
    assert_eq!(history.table, "public._sqlx_migrations");
    assert_eq!(
        states(&history),
        owned(&[("20240101000000", "applied"), ("20240102000000", "applied"), ("20240103000000", "failed")])
    );
    assert_eq!(pending(&directory, &history), ["20240104000000"]);
    let dates: Vec<Option<DateTime<Utc>>> = history.entries.iter().map(|entry| entry.applied_at).collect();
    assert_eq!(
        dates,
        [Some(utc("2024-01-01T10:00:00Z")), Some(utc("2024-01-02T10:00:00Z")), Some(utc("2024-01-03T10:00:00Z"))]
    );
    let expected_checksum: String = sqlx::query_scalar("SELECT encode(sha384($1), 'hex')")
        .bind(applied_texts[0].1.as_bytes())
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(history.entries[0].original_checksum.as_deref(), Some(expected_checksum.as_str()));
    assert_eq!(history.entries[0].name, "create users");
    let ForeignState::Failed { detail } = &history.entries[2].state else { unreachable!() };
    assert!(detail.contains("success = false"), "{detail}");
    assert_eq!(history.notes.len(), 2, "{:?}", history.notes);
    assert!(
        history.notes[0].contains("20231231000000") && history.notes[0].contains("no such migration"),
        "{:?}",
        history.notes
    );
    let edited: String = sqlx::query_scalar("SELECT encode(sha384($1), 'hex')")
        .bind(applied_texts[1].1.as_bytes())
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert!(
        history.notes[1].contains("20240102000000_add_email.sql") && history.notes[1].contains(&edited),
        "{:?}",
        history.notes
    );
    assert!(history.notes[1].contains("edited"), "{:?}", history.notes);
}

const PRISMA_TABLE: &str = r#"CREATE TABLE "_prisma_migrations" (
    "id"                    VARCHAR(36) PRIMARY KEY NOT NULL,
    "checksum"              VARCHAR(64) NOT NULL,
    "finished_at"           TIMESTAMPTZ,
    "migration_name"        VARCHAR(255) NOT NULL,
    "logs"                  TEXT,
    "rolled_back_at"        TIMESTAMPTZ,
    "started_at"            TIMESTAMPTZ NOT NULL DEFAULT now(),
    "applied_steps_count"   INTEGER NOT NULL DEFAULT 0
)"#;

/// One `_prisma_migrations` row as `migrate deploy` leaves it; `text` is the script it checksummed.
async fn prisma_row(
    conn: &mut PgConnection,
    name: &str,
    text: &str,
    started: &str,
    finished: Option<&str>,
    rolled_back: Option<&str>,
    logs: Option<&str>,
) {
    sqlx::query(
        "INSERT INTO _prisma_migrations (id, checksum, migration_name, started_at, finished_at, rolled_back_at, logs, \
         applied_steps_count) VALUES (gen_random_uuid()::text, encode(sha256(convert_to($1, 'UTF8')), 'hex'), $2, \
         $3::timestamptz, $4::timestamptz, $5::timestamptz, $6, CASE WHEN $4 IS NULL THEN 0 ELSE 1 END)",
    )
    .bind(text)
    .bind(name)
    .bind(started)
    .bind(finished)
    .bind(rolled_back)
    .bind(logs)
    .execute(&mut *conn)
    .await
    .unwrap();
}

fn prisma_directory(dir: &Path) -> Directory {
    write(dir, "migration_lock.toml", "# Please do not edit this file manually\nprovider = \"postgresql\"\n");
    write(
        dir,
        "20240101000000_init/migration.sql",
        "-- CreateTable\nCREATE TABLE \"User\" (\"id\" SERIAL NOT NULL);\n",
    );
    write(dir, "20240102000000_add users table/migration.sql", "ALTER TABLE \"User\" ADD \"name\" TEXT;\n");
    write(dir, "20240103000000_add_email/migration.sql", "ALTER TABLE \"User\" ADD \"email\" TEXT NOT NULL;\n");
    write(dir, "20240104000000_add_posts/migration.sql", "CREATE TABLE \"Post\" (\"id\" SERIAL NOT NULL);\n");
    source::read(dir, None).unwrap()
}

#[tokio::test]
async fn prisma_history_is_adopted_with_names_holding_spaces_and_an_edited_script() {
    let (_cluster, mut conn) = cluster().await;
    let dir = tempfile::tempdir().unwrap();
    let directory = prisma_directory(dir.path());
    assert_eq!(directory.layout, MigrationLayout::Prisma);
    execute(&mut conn, PRISMA_TABLE).await;
    let init = "-- CreateTable\r\nCREATE TABLE \"User\" (\"id\" SERIAL NOT NULL);\r\n"; // applied from a Windows checkout
    prisma_row(
        &mut conn,
        "20240101000000_init",
        init,
        "2024-01-01 10:00:00+00",
        Some("2024-01-01 10:00:01+00"),
        None,
        None,
    )
    .await;
    prisma_row(
        &mut conn,
        "20240102000000_add users table",
        "ALTER TABLE \"User\" ADD \"name\" VARCHAR(20);\n",
        "2024-01-02 10:00:00+00",
        Some("2024-01-02 10:00:02+00"),
        None,
        None,
    )
    .await;
    prisma_row(
        &mut conn,
        "20240103000000_add_email",
        "ALTER TABLE \"User\" ADD \"email\" TEXT NOT NULL;\n",
        "2024-01-03 10:00:00+00",
        Some("2024-01-03 10:00:03+00"),
        None,
        None,
    )
    .await;

    let history = read_history(&mut conn, MigrationLayout::Prisma, &directory).await.unwrap();
    assert_eq!(history.table, "public._prisma_migrations");
    assert_eq!(
        states(&history),
        owned(&[("20240101000000", "applied"), ("20240102000000", "applied"), ("20240103000000", "applied")])
    );
    assert_eq!(pending(&directory, &history), ["20240104000000"]);
    assert_eq!(history.entries[1].name, "add users table");
    assert_eq!(history.entries[1].applied_at, Some(utc("2024-01-02T10:00:02Z")));
    let init_checksum: String =
        sqlx::query_scalar("SELECT checksum FROM _prisma_migrations WHERE migration_name = '20240101000000_init'")
            .fetch_one(&mut conn)
            .await
            .unwrap();
    assert_eq!(history.entries[0].original_checksum.as_deref(), Some(init_checksum.as_str()));
    assert_eq!(history.notes.len(), 1, "{:?}", history.notes);
    assert!(history.notes[0].contains("20240102000000_add users table/migration.sql"), "{:?}", history.notes);
}

#[tokio::test]
async fn prisma_failed_and_rolled_back_attempts_are_reported_not_papered_over() {
    let (_cluster, mut conn) = cluster().await;
    let dir = tempfile::tempdir().unwrap();
    let directory = prisma_directory(dir.path());
    execute(&mut conn, PRISMA_TABLE).await;
    let text = |i: usize| std::fs::read_to_string(&directory.migrations[i].up.path).unwrap();
    prisma_row(
        &mut conn,
        "20240101000000_init",
        &text(0),
        "2024-01-01 10:00:00+00",
        Some("2024-01-01 10:00:01+00"),
        None,
        None,
    )
    .await;
    // First attempt failed and was marked rolled back (`migrate resolve --rolled-back`), then applied.
    prisma_row(
        &mut conn,
        "20240102000000_add users table",
        &text(1),
        "2024-01-02 10:00:00+00",
        None,
        Some("2024-01-02 11:00:00+00"),
        Some("Database error code: 42P01"),
    )
    .await;
    prisma_row(
        &mut conn,
        "20240102000000_add users table",
        &text(1),
        "2024-01-02 12:00:00+00",
        Some("2024-01-02 12:00:01+00"),
        None,
        None,
    )
    .await;
    // Failed and left so: `migrate deploy` stops here with P3009.
    prisma_row(
        &mut conn,
        "20240103000000_add_email",
        &text(2),
        "2024-01-03 10:00:00+00",
        None,
        None,
        Some("\nDatabase error code: 23502\n\ncolumn \"email\" of relation \"User\" contains null values"),
    )
    .await;
    // Applied and then rolled back, never applied again.
    prisma_row(
        &mut conn,
        "20240104000000_add_posts",
        &text(3),
        "2024-01-04 10:00:00+00",
        None,
        Some("2024-01-04 10:10:00+00"),
        None,
    )
    .await;

    let history = read_history(&mut conn, MigrationLayout::Prisma, &directory).await.unwrap();
    assert_eq!(
        states(&history),
        owned(&[
            ("20240101000000", "applied"),
            ("20240102000000", "applied"),
            ("20240103000000", "failed"),
            ("20240104000000", "rolled back")
        ])
    );
    assert_eq!(history.entries[1].applied_at, Some(utc("2024-01-02T12:00:01Z")));
    let ForeignState::Failed { detail } = &history.entries[2].state else { unreachable!() };
    assert!(detail.contains("never finished") && detail.contains("Database error code: 23502"), "{detail}");
    assert_eq!(history.entries[2].applied_at, None);
    assert!(history.notes.is_empty(), "{:?}", history.notes);
}

#[tokio::test]
async fn drizzle_history_is_matched_to_the_journal_by_when() {
    let (_cluster, mut conn) = cluster().await;
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "meta/_journal.json",
        r#"{"version":"7","dialect":"postgresql","entries":[
  {"idx":0,"version":"7","when":1717000000000,"tag":"0000_gray_revanche","breakpoints":true},
  {"idx":1,"version":"7","when":1717000100000,"tag":"0001_quick_fox","breakpoints":true},
  {"idx":2,"version":"7","when":1717000050000,"tag":"0002_late_branch","breakpoints":true},
  {"idx":3,"version":"7","when":1717000200000,"tag":"0003_new_table","breakpoints":true}]}"#,
    );
    let first = "CREATE TABLE \"users\" (\n\t\"id\" serial PRIMARY KEY NOT NULL\n);\n--> statement-breakpoint\nCREATE TABLE \"posts\" (\"id\" serial);";
    let second_applied = "ALTER TABLE \"users\" ADD COLUMN \"email\" text;";
    write(dir.path(), "0000_gray_revanche.sql", first);
    write(dir.path(), "0001_quick_fox.sql", "ALTER TABLE \"users\" ADD COLUMN \"email\" varchar(100);");
    write(dir.path(), "0002_late_branch.sql", "ALTER TABLE \"posts\" ADD COLUMN \"title\" text;");
    write(dir.path(), "0003_new_table.sql", "CREATE TABLE \"tags\" (\"id\" serial);");
    let directory = source::read(dir.path(), None).unwrap();
    assert_eq!(directory.layout, MigrationLayout::Drizzle);
    // drizzle-orm's pg migrator.
    execute(&mut conn, "CREATE SCHEMA IF NOT EXISTS \"drizzle\"").await;
    execute(
        &mut conn,
        "CREATE TABLE IF NOT EXISTS \"drizzle\".\"__drizzle_migrations\" (\n\t\t\tid SERIAL PRIMARY KEY,\n\t\t\thash text NOT NULL,\n\t\t\tcreated_at bigint\n\t\t)",
    )
    .await;
    for (text, when) in [(first, 1717000000000_i64), (second_applied, 1717000100000)] {
        sqlx::query(
            "insert into \"drizzle\".\"__drizzle_migrations\" (\"hash\", \"created_at\") values(encode(sha256(convert_to($1, 'UTF8')), 'hex'), $2)",
        )
        .bind(text)
        .bind(when)
        .execute(&mut conn)
        .await
        .unwrap();
    }

    let history = read_history(&mut conn, MigrationLayout::Drizzle, &directory).await.unwrap();
    assert_eq!(history.table, "drizzle.__drizzle_migrations");
    assert_eq!(states(&history), owned(&[("0000", "applied"), ("0001", "applied")]));
    assert_eq!(pending(&directory, &history), ["0002", "0003"]);
    let first_hash: String = sqlx::query_scalar("SELECT encode(sha256(convert_to($1, 'UTF8')), 'hex')")
        .bind(first)
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(history.entries[0].original_checksum.as_deref(), Some(first_hash.as_str()));
    assert_eq!(history.entries[0].applied_at, None);
    assert_eq!(history.notes.len(), 2, "{:?}", history.notes);
    assert!(
        history.notes[1].contains("0002_late_branch") && history.notes[1].contains("never run it"),
        "{:?}",
        history.notes
    );
    assert!(
        history.notes[0].contains("0001_quick_fox.sql") && history.notes[0].contains("edited"),
        "{:?}",
        history.notes
    );
}

/// golang-migrate's postgres driver: its table, and SetVersion's TRUNCATE + INSERT.
async fn golang_set_version(conn: &mut PgConnection, version: i64, dirty: bool) {
    execute(conn, "CREATE TABLE IF NOT EXISTS \"schema_migrations\" (version bigint not null primary key, dirty boolean not null)").await;
    execute(conn, "TRUNCATE \"schema_migrations\"").await;
    sqlx::query("INSERT INTO \"schema_migrations\" (version, dirty) VALUES ($1, $2)")
        .bind(version)
        .bind(dirty)
        .execute(&mut *conn)
        .await
        .unwrap();
}

fn golang_directory(dir: &Path) -> Directory {
    for (version, name) in [(1, "create_users"), (2, "add_email"), (3, "add_index"), (10, "add_name")] {
        write(dir, &format!("{version}_{name}.up.sql"), &format!("SELECT {version};\n"));
        write(dir, &format!("{version}_{name}.down.sql"), &format!("SELECT -{version};\n"));
    }
    source::read(dir, Some(MigrationLayout::GolangMigrate)).unwrap()
}

#[tokio::test]
async fn golang_migrate_version_marks_everything_up_to_it_applied() {
    let (_cluster, mut conn) = cluster().await;
    let dir = tempfile::tempdir().unwrap();
    let directory = golang_directory(dir.path());
    golang_set_version(&mut conn, 3, true).await;
    golang_set_version(&mut conn, 3, false).await;
    let history = read_history(&mut conn, MigrationLayout::GolangMigrate, &directory).await.unwrap();
    assert_eq!(history.table, "public.schema_migrations");
    assert_eq!(states(&history), owned(&[("1", "applied"), ("2", "applied"), ("3", "applied")]));
    assert_eq!(pending(&directory, &history), ["10"]);
    assert!(history.entries.iter().all(|entry| entry.applied_at.is_none() && entry.original_checksum.is_none()));
    assert!(history.notes.is_empty(), "{:?}", history.notes);

    // Read as lifeboat's layout (what detection gives), the same files adopt the same way.
    let detected = source::read(dir.path(), None).unwrap();
    assert_eq!(detected.layout, MigrationLayout::Lifeboat);
    let again = read_history(&mut conn, MigrationLayout::GolangMigrate, &detected).await.unwrap();
    assert_eq!(states(&again), states(&history));

    let error = read_history(&mut conn, MigrationLayout::Dbmate, &detected).await.unwrap_err();
    assert!(error.to_string().contains("laid out for lifeboat, not dbmate"), "{error}");
}

#[tokio::test]
async fn golang_migrate_dirty_version_is_failed() {
    let (_cluster, mut conn) = cluster().await;
    let dir = tempfile::tempdir().unwrap();
    let directory = golang_directory(dir.path());
    golang_set_version(&mut conn, 2, false).await;
    golang_set_version(&mut conn, 3, true).await;
    let history = read_history(&mut conn, MigrationLayout::GolangMigrate, &directory).await.unwrap();
    assert_eq!(states(&history), owned(&[("1", "applied"), ("2", "applied"), ("3", "failed")]));
    let ForeignState::Failed { detail } = &history.entries[2].state else { unreachable!() };
    assert!(detail.contains("version 3 dirty"), "{detail}");
    assert_eq!(pending(&directory, &history), ["10"]);
}

#[tokio::test]
async fn dbmate_versions_are_adopted_and_golang_migrate_tables_told_apart() {
    let (_cluster, mut conn) = cluster().await;
    let dir = tempfile::tempdir().unwrap();
    for (version, name) in
        [("20240101000000", "create_users"), ("20240102000000", "add_email"), ("20240103000000", "add_name")]
    {
        write(
            dir.path(),
            &format!("{version}_{name}.sql"),
            &format!("-- migrate:up\nSELECT {version};\n\n-- migrate:down\nSELECT -{version};\n"),
        );
    }
    let directory = source::read(dir.path(), None).unwrap();
    assert_eq!(directory.layout, MigrationLayout::Dbmate);
    // dbmate's postgres driver.
    execute(
        &mut conn,
        "create table if not exists \"public\".\"schema_migrations\" (version varchar(128) primary key)",
    )
    .await;
    for version in ["20240101000000", "20240102000000", "20231201000000"] {
        sqlx::query("insert into \"public\".\"schema_migrations\" (version) values ($1)")
            .bind(version)
            .execute(&mut conn)
            .await
            .unwrap();
    }
    let history = read_history(&mut conn, MigrationLayout::Dbmate, &directory).await.unwrap();
    assert_eq!(history.table, "public.schema_migrations");
    assert_eq!(states(&history), owned(&[("20240101000000", "applied"), ("20240102000000", "applied")]));
    assert_eq!(pending(&directory, &history), ["20240103000000"]);
    assert_eq!(history.notes.len(), 1, "{:?}", history.notes);
    assert!(history.notes[0].contains("\"20231201000000\""), "{:?}", history.notes);

    let golang = source::read(dir.path(), Some(MigrationLayout::Lifeboat)).unwrap();
    let error = read_history(&mut conn, MigrationLayout::GolangMigrate, &golang).await.unwrap_err();
    let message = error.to_string();
    assert!(message.contains("public.schema_migrations") && message.contains("--from dbmate"), "{message}");
    assert_eq!(lifeboat::migrate::adopt::find_tools(&mut conn).await.unwrap(), [MigrationLayout::Dbmate]);
}

#[tokio::test]
async fn flyway_history_is_adopted_with_dotted_versions_failures_and_crc_checksums() {
    let (_cluster, mut conn) = cluster().await;
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "V1__init.sql", "CREATE TABLE items (id int PRIMARY KEY);\n");
    write(dir.path(), "V1_1__add_column.sql", "ALTER TABLE items ADD name text;\r\n");
    write(dir.path(), "V2__.sql", "INSERT INTO items VALUES (1, 'uno');\n");
    write(dir.path(), "V4.11__index.sql", "CREATE INDEX items_name ON items (name);\n");
    write(dir.path(), "V4.11.0.1__later.sql", "SELECT 1;\n");
    write(dir.path(), "R__views.sql", "CREATE OR REPLACE VIEW item_names AS SELECT name FROM items;\n");
    let directory = source::read(dir.path(), None).unwrap();
    assert_eq!(directory.layout, MigrationLayout::Flyway);
    // Flyway's PostgreSQL createMetaDataTable.sql.
    execute(&mut conn, support::adoption::FLYWAY_HISTORY_TABLE).await;
    execute(&mut conn, "SET TIME ZONE 'UTC'").await;
    // Checksums as Flyway computed them (CRC32 of the lines without endings, from zlib.crc32);
    // V2 ran as "(1, 'one')" and has been edited since.
    type Row<'a> = (i32, Option<&'a str>, &'a str, &'a str, i32, &'a str, bool);
    let rows: [Row; 5] = [
        (1, Some("1"), "init", "V1__init.sql", 968_145_331, "2024-01-01 10:00:00", true),
        (2, Some("1.1"), "add column", "V1_1__add_column.sql", -2_060_831_155, "2024-01-02 10:00:00", true),
        (3, Some("2"), "", "V2__.sql", 1_323_619_238, "2024-01-03 10:00:00", true),
        (4, None, "views", "R__views.sql", -1_903_191_625, "2024-01-03 10:00:01", true),
        (5, Some("4.11"), "index", "V4.11__index.sql", -455_446_042, "2024-01-04 10:00:00", false),
    ];
    for (rank, version, description, script, checksum, installed_on, success) in rows {
        sqlx::query(
            "INSERT INTO \"public\".\"flyway_schema_history\" (\"installed_rank\", \"version\", \"description\", \"type\", \
             \"script\", \"checksum\", \"installed_by\", \"installed_on\", \"execution_time\", \"success\") \
             VALUES ($1, $2, $3, 'SQL', $4, $5, 'postgres', $6::timestamp, 12, $7)",
        )
        .bind(rank)
        .bind(version)
        .bind(description)
        .bind(script)
        .bind(checksum)
        .bind(installed_on)
        .bind(success)
        .execute(&mut conn)
        .await
        .unwrap();
    }

    let history = read_history(&mut conn, MigrationLayout::Flyway, &directory).await.unwrap();
    assert_eq!(history.table, "public.flyway_schema_history");
    assert_eq!(states(&history), owned(&[("1", "applied"), ("1_1", "applied"), ("2", "applied"), ("4.11", "failed")]));
    assert_eq!(pending(&directory, &history), ["4.11.0.1"]);
    assert_eq!(history.entries[1].applied_at, Some(utc("2024-01-02T10:00:00Z")));
    assert_eq!(history.entries[1].original_checksum.as_deref(), Some("-2060831155"));
    let ForeignState::Failed { detail } = &history.entries[3].state else { unreachable!() };
    assert!(detail.contains("V4.11__index.sql") && detail.contains("success = false"), "{detail}");
    assert_eq!(history.notes.len(), 1, "{:?}", history.notes);
    assert!(
        history.notes[0].contains("V2__.sql")
            && history.notes[0].contains("1323619238")
            && history.notes[0].contains("-2095836609"),
        "{:?}",
        history.notes
    );
}
