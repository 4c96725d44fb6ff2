//! Adopting another tool end to end (issue 14, item 5), through the built binary on a real
//! PostgreSQL cluster: for each of sqlx, Prisma, Drizzle, golang-migrate, dbmate and Flyway, the
//! tool's directory holds migrations of which the first ones were applied to database `app` the
//! way the tool applies them (their SQL run, their rows written to the tool's history table as
//! the tool writes them); `lifeboat migrate adopt` records those, `migrate status` shows them
//! applied and the rest pending, and `migrate up` runs only the rest. That nothing adopted ran
//! again is proven by the applied files themselves: each would fail if run a second time.
//! Also: adoption without `--from`, and a dirty golang-migrate history, after which `up` refuses
//! with the choices until the operator resolves it.

mod support;

use std::collections::BTreeMap;
use std::path::PathBuf;

use sqlx::{AssertSqlSafe, Connection as _, PgConnection};
use support::archiving::{Archiving, Options, Setup, execute, scalar};
use support::output::{assert_failure, assert_success, describe};

/// A cluster with database `app` and `[migrate]` pointing at a migration directory laid out as
/// `layout` (none: detected).
struct Project {
    setup: Setup,
    dir: PathBuf,
    _migrations: tempfile::TempDir,
}

impl Project {
    async fn new(layout: Option<&str>) -> Project {
        let migrations = tempfile::tempdir().unwrap();
        let dir = migrations.path().join("migrations");
        std::fs::create_dir(&dir).unwrap();
        let layout = layout.map(|layout| format!("layout = \"{layout}\"\n")).unwrap_or_default();
        let setup = Setup::with(Options::new().archiving(Archiving::Copy).extra(&format!(
            "\n[migrate]\ndir = \"{}\"\ndatabase = \"app\"\n{layout}lock_timeout = \"5s\"\nlock_wait = \"60s\"\n",
            dir.display()
        )))
        .await;
        let mut conn = setup.connect().await;
        execute(&mut conn, "CREATE DATABASE app").await;
        Project { setup, dir, _migrations: migrations }
    }

    async fn app(&self) -> PgConnection {
        PgConnection::connect_with(&self.setup.cluster.connect_options().database("app")).await.unwrap()
    }

    /// Writes `text` to `name` in the migration directory (creating subdirectories); the text.
    fn write(&self, name: &str, text: &str) -> String {
        let path = self.dir.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
        text.to_owned()
    }

    /// `migrate adopt [--from TOOL] --json`: the `migrate-change/1` document.
    fn adopt(&self, from: Option<&str>) -> serde_json::Value {
        let mut args = vec!["migrate", "adopt", "--json"];
        if let Some(tool) = from {
            args.extend(["--from", tool]);
        }
        let document = self.setup.json(&args);
        assert_eq!(document["schema"], "migrate-change/1", "{document}");
        assert_eq!(document["change"], "adopt", "{document}");
        document
    }

    /// `migrate status --json`: (version, state) of each migration, and the problems.
    fn status(&self) -> (Vec<(String, String)>, Vec<String>) {
        let output = self.setup.run(&["migrate", "status", "--json"]);
        let document: serde_json::Value =
            serde_json::from_slice(&output.stdout).unwrap_or_else(|_| panic!("status --json: {}", describe(&output)));
        assert_eq!(document["schema"], "migrate-status/1", "{document}");
        let states = document["migrations"]
            .as_array()
            .unwrap()
            .iter()
            .map(|entry| (text(&entry["version"]), text(&entry["state"])))
            .collect();
        let problems = document["problems"].as_array().unwrap().iter().map(text).collect();
        (states, problems)
    }

    /// `migrate up --json`, which must succeed: the versions it ran.
    fn up(&self) -> Vec<String> {
        let document = self.setup.json(&["migrate", "up", "--json"]);
        assert_eq!(document["schema"], "migrate-run/1", "{document}");
        assert!(document["error"].is_null(), "{document}");
        document["ran"].as_array().unwrap().iter().map(|ran| text(&ran["version"])).collect()
    }

    /// adopt → status → up → up again, checking at each step that exactly `applied` (version and
    /// the tool's checksum) were taken over from `tool` and exactly `pending` ran.
    async fn adopt_and_apply(
        &self,
        from: Option<&str>,
        tool: &str,
        applied: &[(&str, Option<String>)],
        pending: &[&str],
    ) {
        let document = self.adopt(from);
        let changes: Vec<String> = document["changes"].as_array().unwrap().iter().map(text).collect();
        assert_eq!(changes.len(), applied.len(), "{document}");
        for (change, (version, _)) in changes.iter().zip(applied) {
            assert!(
                change.starts_with(&format!("recorded {version} ("))
                    && change.ends_with(&format!("as applied by {tool}")),
                "{change}"
            );
        }
        let notes: Vec<String> = document["notes"].as_array().unwrap().iter().map(text).collect();
        let expected_note = format!("pending, for `lifeboat migrate up`: {}", pending.join(", "));
        assert!(notes.contains(&expected_note), "{expected_note:?} missing from {notes:?}");

        let (states, problems) = self.status();
        let mut expected: Vec<(String, String)> =
            applied.iter().map(|(version, _)| (version.to_string(), "applied".to_owned())).collect();
        expected.extend(pending.iter().map(|version| (version.to_string(), "pending".to_owned())));
        assert_eq!(states, expected);
        assert!(problems.is_empty(), "{problems:?}");

        assert_eq!(self.up(), pending, "migrate up runs exactly what {tool} had not applied");
        let again = self.setup.run(&["migrate", "up"]);
        assert_success(&again);
        assert!(String::from_utf8_lossy(&again.stdout).contains("nothing to apply"), "{}", describe(&again));
        let (states, _) = self.status();
        assert!(states.iter().all(|(_, state)| state == "applied"), "{states:?}");

        let rows = history(&mut self.app().await).await;
        assert_eq!(rows.len(), applied.len() + pending.len(), "{rows:?}");
        for (version, checksum) in applied {
            let row = &rows[*version];
            assert!(row.success, "{version}: {row:?}");
            assert_eq!(row.adopted_from.as_deref(), Some(tool), "{version}: {row:?}");
            assert_eq!(&row.original_checksum, checksum, "{version}: {row:?}");
            assert!(row.restore_point.is_none(), "{version} was not run by lifeboat: {row:?}");
        }
        for version in pending {
            let row = &rows[*version];
            assert!(row.success, "{version}: {row:?}");
            assert_eq!(row.adopted_from, None, "{version}: {row:?}");
            assert_eq!(row.original_checksum, None, "{version}: {row:?}");
            assert_eq!(row.restore_point.as_deref(), Some(format!("lifeboat-before-{version}").as_str()), "{row:?}");
        }
    }
}

fn text(value: &serde_json::Value) -> String {
    value.as_str().unwrap_or_else(|| panic!("not a string: {value}")).to_owned()
}

#[derive(Debug)]
struct HistoryRow {
    success: bool,
    adopted_from: Option<String>,
    original_checksum: Option<String>,
    restore_point: Option<String>,
}

/// `lifeboat.migrations` by version.
async fn history(conn: &mut PgConnection) -> BTreeMap<String, HistoryRow> {
    type Columns = (String, bool, Option<String>, Option<String>, Option<String>);
    let rows: Vec<Columns> = sqlx::query_as(
        "SELECT version, success, adopted_from, original_checksum, restore_point FROM lifeboat.migrations",
    )
    .fetch_all(&mut *conn)
    .await
    .unwrap();
    rows.into_iter()
        .map(|(version, success, adopted_from, original_checksum, restore_point)| {
            (version, HistoryRow { success, adopted_from, original_checksum, restore_point })
        })
        .collect()
}

/// Runs a script as the tools send it: all of it in one simple query.
async fn run_script(conn: &mut PgConnection, sql: &str) {
    sqlx::raw_sql(AssertSqlSafe(sql.to_owned()))
        .execute(&mut *conn)
        .await
        .unwrap_or_else(|error| panic!("{sql}: {error}"));
}

/// Runs an applied migration's SQL again: it must fail because its objects exist, which is what
/// `migrate up` would have hit had it re-run it.
async fn assert_not_rerunnable(conn: &mut PgConnection, sql: &str) {
    let error = sqlx::raw_sql(AssertSqlSafe(sql.to_owned()))
        .execute(&mut *conn)
        .await
        .expect_err("an applied migration fails when run again");
    assert!(error.to_string().contains("already exists"), "{sql}: {error}");
}

async fn exists(conn: &mut PgConnection, relation: &str) -> bool {
    sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL").bind(relation).fetch_one(&mut *conn).await.unwrap()
}

async fn has_column(conn: &mut PgConnection, table: &str, column: &str) -> bool {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT FROM information_schema.columns WHERE table_name = $1 AND column_name = $2)",
    )
    .bind(table)
    .bind(column)
    .fetch_one(&mut *conn)
    .await
    .unwrap()
}

async fn hex_digest(conn: &mut PgConnection, function: &str, text: &str) -> String {
    sqlx::query_scalar(AssertSqlSafe(format!("SELECT encode({function}($1), 'hex')")))
        .bind(text.as_bytes())
        .fetch_one(&mut *conn)
        .await
        .unwrap()
}

#[tokio::test]
async fn sqlx_project_is_adopted_and_up_runs_only_its_pending_migrations() {
    let project = Project::new(Some("sqlx")).await;
    let users = project.write("20240101000000_create_users.sql", "CREATE TABLE users (id bigint PRIMARY KEY);\n");
    let email = project.write("20240102000000_add_email.sql", "ALTER TABLE users ADD COLUMN email text;\n");
    // sqlx runs a file starting with `-- no-transaction` outside a transaction, which
    // CREATE INDEX CONCURRENTLY needs.
    project.write(
        "20240103000000_index_email.sql",
        "-- no-transaction\nCREATE INDEX CONCURRENTLY users_email ON users (email);\n",
    );
    let mut conn = project.app().await;
    // sqlx-postgres: ensure_migrations_table, then per migration its SQL and the row in one
    // transaction (execution_time -1, updated afterwards).
    run_script(
        &mut conn,
        "CREATE TABLE IF NOT EXISTS _sqlx_migrations (
            version BIGINT PRIMARY KEY,
            description TEXT NOT NULL,
            installed_on TIMESTAMPTZ NOT NULL DEFAULT now(),
            success BOOLEAN NOT NULL,
            checksum BYTEA NOT NULL,
            execution_time BIGINT NOT NULL
        );",
    )
    .await;
    for (version, description, sql) in
        [(20240101000000_i64, "create users", &users), (20240102000000, "add email", &email)]
    {
        let mut tx = conn.begin().await.unwrap();
        sqlx::raw_sql(AssertSqlSafe(sql.clone())).execute(&mut *tx).await.unwrap();
        sqlx::query(
            "INSERT INTO _sqlx_migrations ( version, description, success, checksum, execution_time ) \
             VALUES ( $1, $2, TRUE, $3, -1 )",
        )
        .bind(version)
        .bind(description)
        .bind(sha384(&mut tx, sql).await)
        .execute(&mut *tx)
        .await
        .unwrap();
        tx.commit().await.unwrap();
        sqlx::query("UPDATE _sqlx_migrations SET execution_time = $1 WHERE version = $2")
            .bind(4_000_000_i64)
            .bind(version)
            .execute(&mut conn)
            .await
            .unwrap();
    }

    let applied = [
        ("20240101000000", Some(hex_digest(&mut conn, "sha384", &users).await)),
        ("20240102000000", Some(hex_digest(&mut conn, "sha384", &email).await)),
    ];
    project.adopt_and_apply(Some("sqlx"), "sqlx", &applied, &["20240103000000"]).await;

    assert_not_rerunnable(&mut conn, &users).await;
    assert_not_rerunnable(&mut conn, &email).await;
    let valid: bool = sqlx::query_scalar("SELECT indisvalid FROM pg_index WHERE indexrelid = 'users_email'::regclass")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert!(valid, "the no-transaction migration built its index concurrently");
    let transactional: bool =
        sqlx::query_scalar("SELECT transactional FROM lifeboat.migrations WHERE version = '20240103000000'")
            .fetch_one(&mut conn)
            .await
            .unwrap();
    assert!(!transactional, "sqlx's `-- no-transaction` is honoured");
    assert_eq!(
        scalar(&mut conn, "SELECT count(*)::text FROM _sqlx_migrations").await,
        "2",
        "sqlx's table is left alone"
    );
}

async fn sha384(conn: &mut PgConnection, text: &str) -> Vec<u8> {
    sqlx::query_scalar("SELECT sha384($1)").bind(text.as_bytes()).fetch_one(&mut *conn).await.unwrap()
}

#[tokio::test]
async fn prisma_project_with_spaces_in_names_is_adopted_and_up_runs_only_its_pending_migrations() {
    let project = Project::new(Some("prisma")).await;
    project.write("migration_lock.toml", "# Please do not edit this file manually\nprovider = \"postgresql\"\n");
    let init = project.write(
        "20240101000000_init/migration.sql",
        "-- CreateTable\nCREATE TABLE \"User\" (\n    \"id\" SERIAL NOT NULL,\n\n    CONSTRAINT \"User_pkey\" PRIMARY KEY (\"id\")\n);\n",
    );
    let name = project.write(
        "20240102000000_add users name/migration.sql",
        "-- AlterTable\nALTER TABLE \"User\" ADD COLUMN \"name\" TEXT;\n",
    );
    project.write(
        "20240103000000_add posts/migration.sql",
        "-- CreateTable\nCREATE TABLE \"Post\" (\n    \"id\" SERIAL NOT NULL,\n    \"authorId\" INTEGER NOT NULL,\n\n    CONSTRAINT \"Post_pkey\" PRIMARY KEY (\"id\")\n);\n\n\
         -- AddForeignKey\nALTER TABLE \"Post\" ADD CONSTRAINT \"Post_authorId_fkey\" FOREIGN KEY (\"authorId\") REFERENCES \"User\"(\"id\") ON DELETE RESTRICT ON UPDATE CASCADE;\n",
    );
    project.write(
        "20240104000000_index_user_names/migration.sql",
        "-- CreateIndex\nCREATE INDEX \"User_name_idx\" ON \"User\"(\"name\");\n",
    );
    let mut conn = project.app().await;
    // Prisma's migrate deploy: its table, a row started, the script, the row finished.
    run_script(
        &mut conn,
        r#"CREATE TABLE "_prisma_migrations" (
    "id"                    VARCHAR(36) PRIMARY KEY NOT NULL,
    "checksum"              VARCHAR(64) NOT NULL,
    "finished_at"           TIMESTAMPTZ,
    "migration_name"        VARCHAR(255) NOT NULL,
    "logs"                  TEXT,
    "rolled_back_at"        TIMESTAMPTZ,
    "started_at"            TIMESTAMPTZ NOT NULL DEFAULT now(),
    "applied_steps_count"   INTEGER NOT NULL DEFAULT 0
);"#,
    )
    .await;
    for (migration_name, sql) in [("20240101000000_init", &init), ("20240102000000_add users name", &name)] {
        let id: String = sqlx::query_scalar(
            "INSERT INTO _prisma_migrations (id, checksum, migration_name, logs, started_at, applied_steps_count) \
             VALUES (gen_random_uuid()::text, encode(sha256($1), 'hex'), $2, NULL, now(), 0) RETURNING id",
        )
        .bind(sql.as_bytes())
        .bind(migration_name)
        .fetch_one(&mut conn)
        .await
        .unwrap();
        run_script(&mut conn, sql).await;
        sqlx::query("UPDATE _prisma_migrations SET finished_at = now(), applied_steps_count = 1 WHERE id = $1")
            .bind(&id)
            .execute(&mut conn)
            .await
            .unwrap();
    }

    let applied = [
        ("20240101000000", Some(hex_digest(&mut conn, "sha256", &init).await)),
        ("20240102000000", Some(hex_digest(&mut conn, "sha256", &name).await)),
    ];
    project.adopt_and_apply(Some("prisma"), "prisma", &applied, &["20240103000000", "20240104000000"]).await;

    assert_not_rerunnable(&mut conn, &init).await;
    assert_not_rerunnable(&mut conn, &name).await;
    assert!(exists(&mut conn, "\"Post\"").await && exists(&mut conn, "\"User_name_idx\"").await);
    let names: String =
        scalar(&mut conn, "SELECT string_agg(name, ',' ORDER BY version) FROM lifeboat.migrations").await;
    assert_eq!(names, "init,add users name,add posts,index_user_names");
}

#[tokio::test]
async fn drizzle_project_is_adopted_by_its_journal_and_up_runs_only_its_pending_migrations() {
    let project = Project::new(Some("drizzle")).await;
    project.write(
        "meta/_journal.json",
        r#"{
  "version": "7",
  "dialect": "postgresql",
  "entries": [
    { "idx": 0, "version": "7", "when": 1717000000000, "tag": "0000_tough_wolverine", "breakpoints": true },
    { "idx": 1, "version": "7", "when": 1717000100000, "tag": "0001_silent_storm", "breakpoints": true },
    { "idx": 2, "version": "7", "when": 1717000200000, "tag": "0002_brave_nova", "breakpoints": true }
  ]
}"#,
    );
    let first = project.write(
        "0000_tough_wolverine.sql",
        "CREATE TABLE \"users\" (\n\t\"id\" serial PRIMARY KEY NOT NULL,\n\t\"name\" text\n);\n--> statement-breakpoint\n\
         CREATE TABLE \"posts\" (\n\t\"id\" serial PRIMARY KEY NOT NULL,\n\t\"author_id\" integer\n);\n",
    );
    let second = project.write(
        "0001_silent_storm.sql",
        "ALTER TABLE \"posts\" ADD COLUMN \"title\" text;--> statement-breakpoint\n\
         CREATE INDEX \"users_name_idx\" ON \"users\" USING btree (\"name\");",
    );
    project.write(
        "0002_brave_nova.sql",
        "ALTER TABLE \"posts\" ADD CONSTRAINT \"posts_author_id_users_id_fk\" FOREIGN KEY (\"author_id\") REFERENCES \"public\".\"users\"(\"id\") ON DELETE no action ON UPDATE no action;--> statement-breakpoint\n\
         CREATE INDEX \"posts_title_idx\" ON \"posts\" USING btree (\"title\");",
    );
    let mut conn = project.app().await;
    // drizzle-orm's pg migrator: its schema and table, then in one transaction each migration's
    // statements (split at the breakpoints) and its row (the file's SHA-256, the journal's `when`).
    run_script(
        &mut conn,
        "CREATE SCHEMA IF NOT EXISTS \"drizzle\";\nCREATE TABLE IF NOT EXISTS \"drizzle\".\"__drizzle_migrations\" (\n\t\t\tid SERIAL PRIMARY KEY,\n\t\t\thash text NOT NULL,\n\t\t\tcreated_at bigint\n\t\t);",
    )
    .await;
    let mut tx = conn.begin().await.unwrap();
    for (sql, when) in [(&first, 1717000000000_i64), (&second, 1717000100000)] {
        for statement in sql.split("--> statement-breakpoint") {
            sqlx::raw_sql(AssertSqlSafe(statement.to_owned())).execute(&mut *tx).await.unwrap();
        }
        sqlx::query(
            "insert into \"drizzle\".\"__drizzle_migrations\" (\"hash\", \"created_at\") values(encode(sha256($1), 'hex'), $2)",
        )
        .bind(sql.as_bytes())
        .bind(when)
        .execute(&mut *tx)
        .await
        .unwrap();
    }
    tx.commit().await.unwrap();

    let applied = [
        ("0000", Some(hex_digest(&mut conn, "sha256", &first).await)),
        ("0001", Some(hex_digest(&mut conn, "sha256", &second).await)),
    ];
    project.adopt_and_apply(Some("drizzle"), "drizzle", &applied, &["0002"]).await;

    assert_not_rerunnable(&mut conn, &first).await;
    assert_not_rerunnable(&mut conn, &second).await;
    assert!(exists(&mut conn, "posts_title_idx").await);
    let constraint =
        scalar(&mut conn, "SELECT count(*)::text FROM pg_constraint WHERE conname = 'posts_author_id_users_id_fk'")
            .await;
    assert_eq!(constraint, "1");
}

/// golang-migrate's postgres driver: its table, and SetVersion (TRUNCATE, then INSERT) in a
/// transaction.
async fn golang_set_version(conn: &mut PgConnection, version: i64, dirty: bool) {
    run_script(
        conn,
        "CREATE TABLE IF NOT EXISTS \"schema_migrations\" (version bigint not null primary key, dirty boolean not null)",
    )
    .await;
    let mut tx = conn.begin().await.unwrap();
    execute(&mut tx, "TRUNCATE \"schema_migrations\"").await;
    sqlx::query("INSERT INTO \"schema_migrations\" (version, dirty) VALUES ($1, $2)")
        .bind(version)
        .bind(dirty)
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
}

/// A golang-migrate directory: 1 and 2 create and alter `users`, 3 depends on both.
fn golang_directory(project: &Project) -> [String; 2] {
    let users = project.write("1_create_users.up.sql", "CREATE TABLE users (id bigint PRIMARY KEY);\n");
    project.write("1_create_users.down.sql", "DROP TABLE users;\n");
    let email = project.write("2_add_email.up.sql", "ALTER TABLE users ADD COLUMN email text;\n");
    project.write("2_add_email.down.sql", "ALTER TABLE users DROP COLUMN email;\n");
    project.write("3_index_email.up.sql", "CREATE UNIQUE INDEX users_email ON users (email);\n");
    project.write("3_index_email.down.sql", "DROP INDEX users_email;\n");
    [users, email]
}

/// migrate up as golang-migrate runs each file: dirty before, the file, clean after.
async fn golang_apply(conn: &mut PgConnection, version: i64, sql: &str) {
    golang_set_version(conn, version, true).await;
    run_script(conn, sql).await;
    golang_set_version(conn, version, false).await;
}

#[tokio::test]
async fn golang_migrate_project_is_adopted_and_up_runs_only_its_pending_migrations() {
    let project = Project::new(Some("golang-migrate")).await;
    let [users, email] = golang_directory(&project);
    let mut conn = project.app().await;
    golang_apply(&mut conn, 1, &users).await;
    golang_apply(&mut conn, 2, &email).await;

    project.adopt_and_apply(Some("golang-migrate"), "golang-migrate", &[("1", None), ("2", None)], &["3"]).await;

    assert_not_rerunnable(&mut conn, &users).await;
    assert_not_rerunnable(&mut conn, &email).await;
    assert!(exists(&mut conn, "users_email").await);
}

#[tokio::test]
async fn dbmate_project_is_adopted_and_up_runs_only_the_up_sections_of_its_pending_migrations() {
    let project = Project::new(Some("dbmate")).await;
    let users_up = "create table users (\n  id bigint primary key,\n  name text\n);\n";
    project.write(
        "20240101000000_create_users.sql",
        &format!("-- migrate:up\n{users_up}\n-- migrate:down\ndrop table users;\n"),
    );
    let email_up = "alter table users add column email text;\n";
    project.write(
        "20240102000000_add_email.sql",
        &format!("-- migrate:up\n{email_up}\n-- migrate:down\nalter table users drop column email;\n"),
    );
    // The down sections must not run on up: this one would drop the index the up section builds,
    // and the next one would drop the table.
    project.write(
        "20240103000000_index_email.sql",
        "-- migrate:up transaction:false\ncreate index concurrently users_email on users (email);\n\n\
         -- migrate:down\ndrop index users_email;\n",
    );
    project.write(
        "20240104000000_create_posts.sql",
        "-- migrate:up\ncreate table posts (id bigint primary key, user_id bigint references users (id));\n\n\
         -- migrate:down\ndrop table posts;\ndrop table users;\n",
    );
    let mut conn = project.app().await;
    // dbmate's postgres driver: its table, then per migration the up section and the version
    // row in one transaction.
    run_script(
        &mut conn,
        "create table if not exists \"public\".\"schema_migrations\" (version varchar(128) primary key)",
    )
    .await;
    for (version, up) in [("20240101000000", users_up), ("20240102000000", email_up)] {
        let mut tx = conn.begin().await.unwrap();
        sqlx::raw_sql(AssertSqlSafe(up.to_owned())).execute(&mut *tx).await.unwrap();
        sqlx::query("insert into \"public\".\"schema_migrations\" (version) values ($1)")
            .bind(version)
            .execute(&mut *tx)
            .await
            .unwrap();
        tx.commit().await.unwrap();
    }

    project
        .adopt_and_apply(
            Some("dbmate"),
            "dbmate",
            &[("20240101000000", None), ("20240102000000", None)],
            &["20240103000000", "20240104000000"],
        )
        .await;

    assert_not_rerunnable(&mut conn, users_up).await;
    assert_not_rerunnable(&mut conn, email_up).await;
    assert!(exists(&mut conn, "users_email").await, "the down section of 20240103000000 did not run");
    assert!(exists(&mut conn, "posts").await && exists(&mut conn, "users").await);
    let transactional: bool =
        sqlx::query_scalar("SELECT transactional FROM lifeboat.migrations WHERE version = '20240103000000'")
            .fetch_one(&mut conn)
            .await
            .unwrap();
    assert!(!transactional, "dbmate's transaction:false is honoured");
}

#[tokio::test]
async fn flyway_project_with_dotted_versions_is_adopted_and_up_runs_only_its_pending_migrations() {
    let project = Project::new(Some("flyway")).await;
    let items = project.write("V1__create_items.sql", "CREATE TABLE items (id int PRIMARY KEY);\n");
    let name = project.write("V1.1__add_name.sql", "ALTER TABLE items ADD COLUMN name text;\n");
    // 1.2 before 1.10, as Flyway orders versions: 1.10 indexes the column 1.2 adds.
    project.write("V1.2__add_price.sql", "ALTER TABLE items ADD COLUMN price numeric;\n");
    project.write("V1.10__index_price.sql", "CREATE INDEX items_price ON items (price);\n");
    let mut conn = project.app().await;
    // Flyway's PostgreSQL createMetaDataTable.sql, then per migration its SQL and its row in one
    // transaction. The checksums are CRC32 of the lines without their endings (computed with
    // zlib.crc32, as Flyway's ChecksumCalculator does), stored signed.
    run_script(&mut conn, support::adoption::FLYWAY_HISTORY_TABLE).await;
    for (rank, version, description, script, sql, checksum) in [
        (1, "1", "create items", "V1__create_items.sql", &items, 968_145_331),
        (2, "1.1", "add name", "V1.1__add_name.sql", &name, -1_687_194_261),
    ] {
        let mut tx = conn.begin().await.unwrap();
        sqlx::raw_sql(AssertSqlSafe(sql.clone())).execute(&mut *tx).await.unwrap();
        sqlx::query(
            "INSERT INTO \"public\".\"flyway_schema_history\" (\"installed_rank\", \"version\", \"description\", \
             \"type\", \"script\", \"checksum\", \"installed_by\", \"execution_time\", \"success\") \
             VALUES ($1, $2, $3, 'SQL', $4, $5, 'postgres', 7, true)",
        )
        .bind(rank)
        .bind(version)
        .bind(description)
        .bind(script)
        .bind(checksum)
        .execute(&mut *tx)
        .await
        .unwrap();
        tx.commit().await.unwrap();
    }

    project
        .adopt_and_apply(
            Some("flyway"),
            "flyway",
            &[("1", Some("968145331".to_owned())), ("1.1", Some("-1687194261".to_owned()))],
            &["1.2", "1.10"],
        )
        .await;

    assert_not_rerunnable(&mut conn, &items).await;
    assert_not_rerunnable(&mut conn, &name).await;
    assert!(exists(&mut conn, "items_price").await);
}

#[tokio::test]
async fn flyway_repeatables_it_ran_unchanged_are_adopted_and_only_a_changed_one_runs_again() {
    let project = Project::new(Some("flyway")).await;
    let items = project.write("V1__create_items.sql", "CREATE TABLE items (id int PRIMARY KEY, price numeric);\n");
    let view = project.write("R__items_view.sql", "CREATE OR REPLACE VIEW items_view AS SELECT id FROM items;\n");
    let ran_before = "CREATE OR REPLACE FUNCTION item_count() RETURNS bigint LANGUAGE sql AS $$ SELECT 1::bigint $$;\n";
    project.write(
        "R__item_count.sql",
        "CREATE OR REPLACE FUNCTION item_count() RETURNS bigint LANGUAGE sql AS $$ SELECT count(*) FROM items $$;\n",
    );
    let mut conn = project.app().await;
    run_script(
        &mut conn,
        r#"CREATE TABLE "public"."flyway_schema_history" ("installed_rank" INT NOT NULL PRIMARY KEY, "version" VARCHAR(50),
    "description" VARCHAR(200) NOT NULL, "type" VARCHAR(20) NOT NULL, "script" VARCHAR(1000) NOT NULL, "checksum" INTEGER,
    "installed_by" VARCHAR(100) NOT NULL, "installed_on" TIMESTAMP NOT NULL DEFAULT now(), "execution_time" INTEGER NOT NULL,
    "success" BOOLEAN NOT NULL);"#,
    )
    .await;
    // Flyway ran V1, then both repeatables; item_count's file changed since.
    for (rank, version, script, sql) in [
        (1, Some("1"), "V1__create_items.sql", items.as_str()),
        (2, None, "R__items_view.sql", view.as_str()),
        (3, None, "R__item_count.sql", ran_before),
    ] {
        run_script(&mut conn, sql).await;
        sqlx::query(
            "INSERT INTO flyway_schema_history (installed_rank, version, description, type, script, checksum, \
             installed_by, execution_time, success) VALUES ($1, $2, $3, 'SQL', $3, $4, 'postgres', 5, true)",
        )
        .bind(rank)
        .bind(version)
        .bind(script)
        .bind(lifeboat::migrate::adopt::flyway_checksum(sql))
        .execute(&mut conn)
        .await
        .unwrap();
    }
    let document = project.adopt(Some("flyway"));
    let changes: Vec<String> = document["changes"].as_array().unwrap().iter().map(text).collect();
    assert!(
        changes.contains(&"recorded repeatable items view as applied by flyway (unchanged since)".to_owned()),
        "{changes:?}"
    );
    assert!(!changes.iter().any(|change| change.contains("item count")), "a changed repeatable stays due: {changes:?}");
    assert_eq!(project.up(), ["R__item count"], "only the changed repeatable runs");
    let count: i64 = sqlx::query_scalar("SELECT item_count()").fetch_one(&mut conn).await.unwrap();
    assert_eq!(count, 0, "the new body counts the rows");
}

#[tokio::test]
async fn adopt_without_from_finds_golang_migrate_by_its_dirty_column() {
    // No layout in the configuration: the directory reads as lifeboat's (the same file names).
    let project = Project::new(None).await;
    let [users, email] = golang_directory(&project);
    let mut conn = project.app().await;
    golang_apply(&mut conn, 1, &users).await;
    golang_apply(&mut conn, 2, &email).await;

    let document = project.adopt(None);
    let notes: Vec<String> = document["notes"].as_array().unwrap().iter().map(text).collect();
    assert!(
        notes.iter().any(|note| note.starts_with("set layout = \"golang-migrate\"")),
        "the operator is told to name the layout: {notes:?}"
    );
    let changes: Vec<String> = document["changes"].as_array().unwrap().iter().map(text).collect();
    assert_eq!(
        changes,
        [
            "recorded 1 (create_users) as applied by golang-migrate",
            "recorded 2 (add_email) as applied by golang-migrate"
        ]
    );
    assert!(notes.contains(&"pending, for `lifeboat migrate up`: 3".to_owned()), "{notes:?}");
    let (states, problems) = project.status();
    assert_eq!(
        states,
        [("1", "applied"), ("2", "applied"), ("3", "pending")].map(|(v, s)| (v.to_owned(), s.to_owned()))
    );
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!(project.up(), ["3"]);
    assert_not_rerunnable(&mut conn, &users).await;
    assert!(exists(&mut conn, "users_email").await);
    let rows = history(&mut conn).await;
    assert_eq!(rows["1"].adopted_from.as_deref(), Some("golang-migrate"));
    assert_eq!(rows["3"].adopted_from, None);

    // A second adoption finds everything recorded already and changes nothing.
    let again = project.adopt(None);
    assert_eq!(again["changes"].as_array().unwrap().len(), 0, "{again}");
    assert_eq!(history(&mut conn).await.len(), 3);
}

#[tokio::test]
async fn a_dirty_golang_migrate_history_is_adopted_as_failed_and_up_refuses_with_the_choices() {
    let project = Project::new(Some("golang-migrate")).await;
    let [users, _] = golang_directory(&project);
    // 2 as it was when golang-migrate ran it: the statement fails, so the implicit transaction of
    // the one query lands nothing, and golang-migrate leaves version 2 dirty.
    project.write("2_add_email.up.sql", "ALTER TABLE users ADD COLUMN email text;\nALTER TABLE nowhere ADD x int;\n");
    let mut conn = project.app().await;
    golang_apply(&mut conn, 1, &users).await;
    golang_set_version(&mut conn, 2, true).await;
    let failed = sqlx::raw_sql("ALTER TABLE users ADD COLUMN email text;\nALTER TABLE nowhere ADD x int;\n")
        .execute(&mut conn)
        .await;
    assert!(failed.is_err());

    let document = project.adopt(Some("golang-migrate"));
    let changes: Vec<String> = document["changes"].as_array().unwrap().iter().map(text).collect();
    assert_eq!(changes.len(), 2, "{document}");
    assert_eq!(changes[0], "recorded 1 (create_users) as applied by golang-migrate");
    assert!(
        changes[1].starts_with("recorded 2 (add_email) as FAILED under golang-migrate") && changes[1].contains("dirty"),
        "{}",
        changes[1]
    );
    let (states, problems) = project.status();
    assert_eq!(
        states,
        [("1", "applied"), ("2", "failed"), ("3", "pending")].map(|(v, s)| (v.to_owned(), s.to_owned()))
    );
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(problems[0].contains("history is dirty"), "{problems:?}");

    let refused = assert_failure(&project.setup.run(&["migrate", "up"]));
    for choice in [
        "migration 2 (add_email)",
        "lifeboat restore --pgdata DIR --target-time",
        "lifeboat migrate repair",
        "golang-migrate",
    ] {
        assert!(refused.contains(choice), "{choice:?} missing from: {refused}");
    }
    // lifeboat did not watch golang-migrate's run, so it does not claim to know what landed.
    assert!(refused.contains("what of it landed is unknown") && !refused.contains("none of it landed"), "{refused}");
    assert!(!has_column(&mut conn, "users", "email").await, "nothing ran");
    assert!(!exists(&mut conn, "users_email").await, "nothing ran");

    // Fixed forward: repair clears the failed row, and up runs 2 and 3.
    project.write("2_add_email.up.sql", "ALTER TABLE users ADD COLUMN email text;\n");
    let repaired = project.setup.run(&["migrate", "repair"]);
    assert_success(&repaired);
    let said = String::from_utf8_lossy(&repaired.stdout);
    assert!(
        said.contains("cleared the failed run of 2 (add_email)") && said.contains("what of it landed is unknown"),
        "{said}"
    );
    assert_eq!(project.up(), ["2", "3"]);
    assert!(exists(&mut conn, "users_email").await);
    let rows = history(&mut conn).await;
    assert_eq!(rows["1"].adopted_from.as_deref(), Some("golang-migrate"));
    assert!(rows["2"].success && rows["2"].adopted_from.is_none(), "{rows:?}");
}
