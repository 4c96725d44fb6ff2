//! `lifeboat restore --dump` against real clusters: a dump of a source cluster restored, whole or
//! table by table, into databases of a second cluster, compared row for row with the source; and
//! the failures (an unknown table, a damaged object, a manifest that does not match, objects that
//! already exist, missing roles) change nothing on the target and say what to do. The target's
//! password never reaches a command line or a message.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::Arc;

use lifeboat::format::dump_manifest::DumpManifest;
use lifeboat::keys::Unlock;
use lifeboat::keys::slots::KeyFile;
use lifeboat::object::WriteOptions;
use lifeboat::postgres::binaries::PgBinaries;
use lifeboat::postgres::cluster::{LocalCluster, LocalClusterOptions};
use lifeboat::repository::Repository;
use lifeboat::storage::local::LocalStore;
use lifeboat::storage::{ObjectKey, ObjectStore, PutMode};
use sqlx::{AssertSqlSafe, Connection, PgConnection};
use support::output::{assert_failure, assert_success};

/// Two tables named `customers` and two named `regions`, in two schemas, so that choosing tables
/// by name has to get the schema right; `sales.zz_history` is large (several chunks of the stored
/// object) and comes last in the archive.
const SHOP: &str = r#"
CREATE TABLE customers (id serial PRIMARY KEY, name text NOT NULL, email text UNIQUE);
INSERT INTO customers (name, email) SELECT 'customer ' || g, 'c' || g || '@example.com' FROM generate_series(1, 300) g;
CREATE TABLE orders (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    customer_id int NOT NULL REFERENCES customers (id),
    amount numeric(10, 2),
    placed timestamptz
);
CREATE INDEX orders_customer ON orders (customer_id);
INSERT INTO orders (customer_id, amount, placed)
    SELECT 1 + g % 300, g * 1.25, timestamptz '2026-01-01 00:00+00' + g * interval '1 minute' FROM generate_series(1, 1000) g;
CREATE TABLE regions (id int PRIMARY KEY, name text);
INSERT INTO regions VALUES (1, 'public north'), (2, 'public south');
CREATE SCHEMA sales;
CREATE TABLE sales.customers (id int PRIMARY KEY, region text, note text);
INSERT INTO sales.customers SELECT g, 'r' || g % 5, CASE WHEN g % 7 = 0 THEN NULL ELSE 'it''s "quoted"' END FROM generate_series(1, 50) g;
CREATE TABLE sales.regions (id int PRIMARY KEY, name text NOT NULL);
INSERT INTO sales.regions SELECT g, 'region ' || g FROM generate_series(1, 5) g;
CREATE VIEW sales.region_names AS SELECT name FROM sales.regions;
CREATE TABLE sales.zz_history (id int PRIMARY KEY, payload text NOT NULL);
INSERT INTO sales.zz_history SELECT g, md5(g::text) || md5((g * 31)::text) FROM generate_series(1, 120000) g;
"#;

/// Every table of [`SHOP`].
const TABLES: [(&str, &str); 6] = [
    ("public", "customers"),
    ("public", "orders"),
    ("public", "regions"),
    ("sales", "customers"),
    ("sales", "regions"),
    ("sales", "zz_history"),
];

fn binaries() -> PgBinaries {
    PgBinaries::find(None).expect("PostgreSQL binaries (scripts/test installs them)")
}

/// A source cluster with database `shop` and a dump of it, a target cluster, a configuration and
/// a local repository.
struct Env {
    source: LocalCluster,
    target: LocalCluster,
    dir: tempfile::TempDir,
    dump: DumpManifest,
}

impl Env {
    async fn start(schema: &str) -> Env {
        let binaries = binaries();
        let (source, target) = tokio::join!(
            LocalCluster::start_new(&binaries, LocalClusterOptions::default()),
            LocalCluster::start_new(&binaries, LocalClusterOptions::default()),
        );
        let (source, target) = (source.expect("start the source cluster"), target.expect("start the target cluster"));
        let dir = tempfile::tempdir().unwrap();
        execute(&source, "postgres", "CREATE DATABASE shop").await;
        execute(&source, "shop", schema).await;
        let mut env = Env { source, target, dir, dump: placeholder_manifest() };
        env.write_config(None);
        assert_success(&env.lifeboat(&["init"]).await);
        let output = env.lifeboat(&["dump", "--db", "shop", "--json"]).await;
        assert_success(&output);
        let printed: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
        let id = printed["id"].as_str().expect("dump --json names the dump");
        let key = ObjectKey::new(format!("clusters/main/dumps/{id}/manifest")).unwrap();
        env.dump = DumpManifest::from_json(&env.repository().await.get_bytes(&key).await.unwrap()).unwrap();
        env
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn write_config(&self, bin_dir: Option<&Path>) {
        let root = self.dir.path().display();
        let bin_dir = bin_dir.map(|dir| format!("bin_dir = \"{}\"\n", dir.display())).unwrap_or_default();
        let config = format!(
            "[cluster]\nname = \"main\"\nconnection = \"{}\"\n{bin_dir}\n[audit]\npath = \"{root}/audit.jsonl\"\n\n[repository]\nurl = \"file://{root}/repo\"\n\
             key_file = \"{root}/repo.key\"\n",
            self.source.connection_url()
        );
        std::fs::write(self.path("lifeboat.toml"), config).unwrap();
        std::fs::set_permissions(self.path("lifeboat.toml"), std::fs::Permissions::from_mode(0o600)).unwrap();
    }

    async fn lifeboat(&self, args: &[&str]) -> Output {
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_lifeboat"));
        command.arg("--config").arg(self.path("lifeboat.toml")).args(args);
        for (variable, _) in std::env::vars_os() {
            let name = variable.to_string_lossy();
            if name.starts_with("LIFEBOAT_") || name.starts_with("PG") {
                command.env_remove(&variable);
            }
        }
        command.stdin(std::process::Stdio::null()).kill_on_drop(true);
        command.output().await.unwrap()
    }

    /// `lifeboat restore --dump <the dump> --db shop --into <database on the target> ...`.
    async fn restore(&self, database: &str, extra: &[&str]) -> Output {
        self.restore_url(&target_url(&self.target, database), extra).await
    }

    async fn restore_url(&self, into: &str, extra: &[&str]) -> Output {
        let id = self.dump.id.to_string();
        let mut args = vec!["restore", "--dump", &id, "--db", "shop", "--into", into];
        args.extend_from_slice(extra);
        self.lifeboat(&args).await
    }

    async fn create_target_database(&self, name: &str) {
        execute(&self.target, "postgres", &format!("CREATE DATABASE {name}")).await;
    }

    fn stored_object(&self) -> PathBuf {
        self.path("repo").join(&self.dump.databases[0].object.key)
    }

    async fn repository(&self) -> Repository {
        let store: Arc<dyn ObjectStore> = Arc::new(LocalStore::new(self.path("repo")));
        let unlock = Unlock::KeyFile(KeyFile::load(&self.path("repo.key")).unwrap());
        Repository::open(store, Some(&unlock), WriteOptions::default()).await.unwrap()
    }
}

fn placeholder_manifest() -> DumpManifest {
    serde_json::from_value(serde_json::json!({
        "format": "lifeboat-dump", "version": 1, "id": "20260101T000000Z-dump", "cluster": "main",
        "system_identifier": "1", "server_version": "", "server_version_num": 0, "pg_dump_version": "",
        "started_at": "2026-01-01T00:00:00Z", "finished_at": "2026-01-01T00:00:00Z",
        "globals": {"object": {"key": "k", "size": 0, "stored_size": 0, "blake3": ""}, "role_passwords": false},
        "databases": []
    }))
    .unwrap()
}

/// A URL of database `database` of `cluster` that libpq and lifeboat accept.
fn target_url(cluster: &LocalCluster, database: &str) -> String {
    cluster.connection_url().replacen("postgresql:///postgres?", &format!("postgresql:///{database}?"), 1)
}

async fn connect(cluster: &LocalCluster, database: &str) -> PgConnection {
    PgConnection::connect_with(&cluster.connect_options().database(database)).await.unwrap()
}

async fn execute(cluster: &LocalCluster, database: &str, sql: &str) {
    let mut connection = connect(cluster, database).await;
    sqlx::raw_sql(AssertSqlSafe(sql.to_owned())).execute(&mut connection).await.unwrap();
    connection.close().await.unwrap();
}

async fn scalar<T>(cluster: &LocalCluster, database: &str, sql: &str) -> T
where
    T: for<'r> sqlx::Decode<'r, sqlx::Postgres> + sqlx::Type<sqlx::Postgres> + Send + Unpin,
{
    let mut connection = connect(cluster, database).await;
    let value = sqlx::query_scalar(AssertSqlSafe(sql.to_owned())).fetch_one(&mut connection).await.unwrap();
    connection.close().await.unwrap();
    value
}

/// Every row of a table, as one hash: equal only if the rows are (ordered by id).
async fn fingerprint(cluster: &LocalCluster, database: &str, schema: &str, table: &str) -> String {
    let sql = format!("SELECT md5(string_agg(t::text, ',' ORDER BY id)) || ':' || count(*) FROM {schema}.{table} t");
    scalar::<Option<String>>(cluster, database, &sql).await.unwrap_or_default()
}

/// The user tables of a database, `schema.table`, sorted.
async fn user_tables(cluster: &LocalCluster, database: &str) -> Vec<String> {
    let mut connection = connect(cluster, database).await;
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT schemaname || '.' || tablename FROM pg_tables \
         WHERE schemaname NOT IN ('pg_catalog', 'information_schema') ORDER BY 1",
    )
    .fetch_all(&mut connection)
    .await
    .unwrap();
    connection.close().await.unwrap();
    tables
}

/// Every schema of a database that is not PostgreSQL's own.
async fn user_schemas(cluster: &LocalCluster, database: &str) -> Vec<String> {
    let mut connection = connect(cluster, database).await;
    let schemas: Vec<String> = sqlx::query_scalar(
        "SELECT nspname::text FROM pg_namespace \
         WHERE nspname NOT LIKE 'pg\\_%' AND nspname NOT IN ('information_schema') ORDER BY 1",
    )
    .fetch_all(&mut connection)
    .await
    .unwrap();
    connection.close().await.unwrap();
    schemas
}

/// Counts the constraints of a type (`p`, `f`...) on user tables (the catalogs have keys too).
fn constraints(kind: char) -> String {
    format!(
        "SELECT count(*) FROM pg_constraint c JOIN pg_namespace n ON n.oid = c.connamespace \
         WHERE c.contype = '{kind}' AND n.nspname IN ('public', 'sales')"
    )
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn report(output: &Output) -> serde_json::Value {
    serde_json::from_slice(&output.stdout).unwrap_or_else(|error| panic!("{error}: {}", stdout(output)))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_whole_database_restores_row_for_row() {
    let env = Env::start(SHOP).await;
    env.create_target_database("whole").await;
    let into = target_url(&env.target, "whole");
    let output = env.lifeboat(&["restore", "--dump", "latest", "--db", "shop", "--into", &into, "--json"]).await;
    assert_success(&output);

    for (schema, table) in TABLES {
        let restored = fingerprint(&env.target, "whole", schema, table).await;
        assert_eq!(restored, fingerprint(&env.source, "shop", schema, table).await, "{schema}.{table}");
        assert!(!restored.ends_with(":0"), "{schema}.{table} has rows");
    }
    let tables = user_tables(&env.target, "whole").await;
    assert_eq!(tables.len(), TABLES.len(), "{tables:?}");
    // Not just the rows: keys, the view, the identity sequence's position.
    let foreign_keys: i64 = scalar(&env.target, "whole", &constraints('f')).await;
    assert_eq!(foreign_keys, 1);
    let names: i64 = scalar(&env.target, "whole", "SELECT count(*) FROM sales.region_names").await;
    assert_eq!(names, 5);
    let next: i64 = scalar(&env.target, "whole", "INSERT INTO orders (customer_id) VALUES (1) RETURNING id").await;
    assert_eq!(next, 1001);

    let report = report(&output);
    assert_eq!(report["dump"], env.dump.id.to_string(), "latest is the dump");
    assert_eq!(report["database"], "shop");
    assert_eq!(report["whole_database"], true);
    assert_eq!(report["tables"].as_array().unwrap().len(), TABLES.len());
    assert_eq!(report["rows"], 300 + 1000 + 2 + 50 + 5 + 120_000);
    assert_eq!(report["bytes"], env.dump.databases[0].object.size);
    assert!(report["seconds"].as_f64().unwrap() > 0.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn chosen_tables_restore_alone_with_their_keys_and_nothing_else() {
    let env = Env::start(SHOP).await;

    // One table whose name two schemas use: only that one, with its primary key.
    env.create_target_database("one").await;
    let output = env.restore("one", &["--table", "sales.customers"]).await;
    assert_success(&output);
    assert_eq!(user_tables(&env.target, "one").await, ["sales.customers"]);
    assert_eq!(
        fingerprint(&env.target, "one", "sales", "customers").await,
        fingerprint(&env.source, "shop", "sales", "customers").await
    );
    let keys: i64 = scalar(&env.target, "one", &constraints('p')).await;
    assert_eq!(keys, 1, "the table's primary key comes with it");
    assert!(stdout(&output).contains("sales.customers") && stdout(&output).contains("50 rows"), "{}", stdout(&output));

    // Tables of two schemas: exactly those, not every pairing of their schemas and names
    // (pg_restore -n public -n sales -t orders -t regions would add public.regions).
    env.create_target_database("two").await;
    let output = env.restore("two", &["--table", "orders", "--table", "sales.regions", "--json"]).await;
    assert_success(&output);
    assert_eq!(user_tables(&env.target, "two").await, ["public.orders", "sales.regions"]);
    for (schema, table) in [("public", "orders"), ("sales", "regions")] {
        assert_eq!(
            fingerprint(&env.target, "two", schema, table).await,
            fingerprint(&env.source, "shop", schema, table).await,
            "{schema}.{table}"
        );
    }
    let index: i64 =
        scalar(&env.target, "two", "SELECT count(*) FROM pg_indexes WHERE indexname = 'orders_customer'").await;
    assert_eq!(index, 1, "the table's index comes with it");
    // orders' foreign key refers to customers, which is neither restored nor on the target; the
    // view on sales.regions is not part of the table. Both are reported.
    let report = report(&output);
    assert_eq!(report["whole_database"], false);
    assert_eq!(report["rows"], 1000 + 5);
    let left_out = report["left_out"].to_string();
    assert!(left_out.contains("FK CONSTRAINT public orders orders_customer_id_fkey"), "{left_out}");
    assert!(left_out.contains("VIEW sales region_names"), "{left_out}");
    assert!(stderr(&output).contains("not restored with the chosen tables"), "{}", stderr(&output));

    // The referenced table restored with it: the foreign key comes along.
    env.create_target_database("three").await;
    assert_success(&env.restore("three", &["--table", "public.customers", "--table", "public.orders"]).await);
    assert_eq!(user_tables(&env.target, "three").await, ["public.customers", "public.orders"]);
    let foreign_keys: i64 = scalar(&env.target, "three", &constraints('f')).await;
    assert_eq!(foreign_keys, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_table_the_dump_lacks_fails_before_the_target_is_touched() {
    let env = Env::start(SHOP).await;
    // The target database does not exist: an error about it would mean lifeboat went there.
    let error = assert_failure(&env.restore("not_created", &["--table", "public.nope"]).await);
    assert!(error.contains("has no table \"public.nope\""), "{error}");
    assert!(error.contains("public.customers") && error.contains("sales.zz_history"), "names what it has: {error}");
    // The log names the target among the restore's arguments; the error must not have been there.
    let message = &error[error.find("lifeboat: error:").expect("an error message")..];
    assert!(!message.contains("not_created") && !message.contains("connect"), "{error}");

    let error =
        assert_failure(&env.restore("not_created", &["--table", "sales.regions", "--table", "customers"]).await);
    assert!(error.contains("several schemas") && error.contains("public.customers, sales.customers"), "{error}");

    let id = env.dump.id.to_string();
    let into = target_url(&env.target, "not_created");
    let error = assert_failure(&env.lifeboat(&["restore", "--dump", &id, "--db", "nope", "--into", &into]).await);
    assert!(error.contains("has no database \"nope\"; it has: shop"), "{error}");
    let databases: i64 =
        scalar(&env.target, "postgres", "SELECT count(*) FROM pg_database WHERE datname = 'not_created'").await;
    assert_eq!(databases, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_damaged_or_mismatched_dump_restores_nothing() {
    let env = Env::start(SHOP).await;
    let object = env.stored_object();
    let original = std::fs::read(&object).unwrap();
    assert!(original.len() > 3 << 20, "the object spans several 1 MiB chunks: {} bytes", original.len());

    // A flipped byte in the last chunk, inside sales.zz_history's data. public.customers comes
    // first in the archive: pg_restore has all it needs long before, and would have committed.
    let mut damaged = original.clone();
    let at = damaged.len() - 5000;
    damaged[at] ^= 0x40;
    std::fs::write(&object, &damaged).unwrap();
    env.create_target_database("victim").await;
    for extra in [&["--table", "public.customers"][..], &[]] {
        let error = assert_failure(&env.restore("victim", extra).await);
        assert!(error.contains("failed authentication") && error.contains("nothing was restored"), "{error}");
        let chunk: Option<u32> =
            error.split(": chunk ").nth(1).and_then(|rest| rest.split(' ').next()).and_then(|chunk| chunk.parse().ok());
        let chunk = chunk.unwrap_or_else(|| panic!("no chunk number: {error}"));
        assert!(chunk >= 2, "the damage was found after the archive's start had been restored: {error}");
        assert_eq!(user_tables(&env.target, "victim").await, Vec::<String>::new(), "{extra:?}");
        assert_eq!(user_schemas(&env.target, "victim").await, ["public"], "{extra:?}");
    }

    // An intact object that is not the one the manifest describes (its hash differs): only the
    // BLAKE3 check can tell, at the very end of the object.
    std::fs::write(&object, &original).unwrap();
    let repository = env.repository().await;
    let key = ObjectKey::new(format!("clusters/main/dumps/{}/manifest", env.dump.id)).unwrap();
    let mut manifest = env.dump.clone();
    manifest.databases[0].object.blake3 = "0".repeat(64);
    repository.put_bytes(&key, manifest.to_json(), PutMode::Overwrite).await.unwrap();
    let error = assert_failure(&env.restore("victim", &["--table", "public.customers"]).await);
    assert!(error.contains("does not match its manifest") && error.contains("BLAKE3"), "{error}");
    assert_eq!(user_tables(&env.target, "victim").await, Vec::<String>::new());

    // The object is intact but the manifest records another row count: the check in the
    // restore's own transaction fails, naming the table and both counts, and nothing stays.
    let mut manifest = env.dump.clone();
    let customers = manifest.databases[0].tables.iter_mut().find(|table| table.table == "customers").unwrap();
    assert_eq!((customers.schema.as_str(), customers.rows), ("public", 300));
    customers.rows = 299;
    repository.put_bytes(&key, manifest.to_json(), PutMode::Overwrite).await.unwrap();
    let error = assert_failure(&env.restore("victim", &["--table", "public.customers"]).await);
    assert!(
        error.contains("table public.customers has 300 rows after the restore, but the dump recorded 299"),
        "{error}"
    );
    assert!(error.contains("rolled back"), "{error}");
    assert_eq!(user_tables(&env.target, "victim").await, Vec::<String>::new());

    // With the true manifest back, the same restore works.
    repository.put_bytes(&key, env.dump.to_json(), PutMode::Overwrite).await.unwrap();
    assert_success(&env.restore("victim", &["--table", "public.customers"]).await);
    assert_eq!(user_tables(&env.target, "victim").await, ["public.customers"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn restoring_over_existing_tables_needs_clean() {
    let env = Env::start(SHOP).await;
    env.create_target_database("again").await;
    assert_success(&env.restore("again", &[]).await);
    execute(
        &env.target,
        "again",
        "DELETE FROM sales.customers WHERE id > 10; UPDATE sales.regions SET name = 'changed'",
    )
    .await;

    let error = assert_failure(&env.restore("again", &[]).await);
    assert!(error.contains("already exists") && error.contains("--clean"), "{error}");
    assert!(error.contains("nothing was restored"), "{error}");
    let kept: i64 = scalar(&env.target, "again", "SELECT count(*) FROM sales.customers").await;
    assert_eq!(kept, 10, "the failed restore changed nothing");
    let error = assert_failure(&env.restore("again", &["--table", "sales.regions"]).await);
    assert!(error.contains("already exists") && error.contains("--clean"), "{error}");

    // --clean cannot drop a table that something on the target still uses (the view), and says so.
    let error = assert_failure(&env.restore("again", &["--table", "sales.regions", "--clean"]).await);
    assert!(
        error.contains("cannot drop table sales.regions") && error.contains("hint: objects on the target"),
        "{error}"
    );

    // --clean replaces one table, and leaves the others as they are.
    let output = env.restore("again", &["--table", "sales.customers", "--clean"]).await;
    assert_success(&output);
    assert_eq!(
        fingerprint(&env.target, "again", "sales", "customers").await,
        fingerprint(&env.source, "shop", "sales", "customers").await
    );
    let kept: String = scalar(&env.target, "again", "SELECT min(name) FROM sales.regions").await;
    assert_eq!(kept, "changed");

    // --clean on the whole database: everything as dumped again.
    let output = env.restore("again", &["--clean"]).await;
    assert_success(&output);
    assert!(stdout(&output).contains("restored 6 table(s) of database \"shop\""), "{}", stdout(&output));
    for (schema, table) in TABLES {
        assert_eq!(
            fingerprint(&env.target, "again", schema, table).await,
            fingerprint(&env.source, "shop", schema, table).await,
            "{schema}.{table}"
        );
    }
}

/// A bin directory of links to the real PostgreSQL programs, where pg_restore and psql are
/// wrappers that log their arguments and whether PGPASSWORD is set.
fn logging_bin_dir(dir: &Path, log: &Path) -> PathBuf {
    let real = binaries().dir().to_path_buf();
    let bin = dir.join("bin");
    std::fs::create_dir(&bin).unwrap();
    for entry in std::fs::read_dir(&real).unwrap() {
        let name = entry.unwrap().file_name();
        if name != "pg_restore" && name != "psql" {
            std::os::unix::fs::symlink(real.join(&name), bin.join(&name)).unwrap();
        }
    }
    for name in ["pg_restore", "psql"] {
        let script = format!(
            "#!/bin/sh\necho \"{name} args: $*\" >> '{log}'\necho \"{name} PGPASSWORD ${{PGPASSWORD:+set}}\" >> '{log}'\n\
             exec '{real}/{name}' \"$@\"\n",
            log = log.display(),
            real = real.display()
        );
        std::fs::write(bin.join(name), script).unwrap();
        std::fs::set_permissions(bin.join(name), std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    bin
}

#[tokio::test(flavor = "multi_thread")]
async fn owners_are_restored_and_the_password_stays_out_of_sight() {
    let env = Env::start(
        "CREATE ROLE ledger_owner; \
         CREATE TABLE ledger (id int PRIMARY KEY, amount numeric); \
         INSERT INTO ledger SELECT g, g FROM generate_series(1, 40) g; \
         ALTER TABLE ledger OWNER TO ledger_owner;",
    )
    .await;
    let password = "restore-pw-5d1f";
    execute(&env.target, "postgres", &format!("CREATE ROLE restorer SUPERUSER LOGIN PASSWORD '{password}'")).await;
    let hba = env.target.data_dir().join("pg_hba.conf");
    let rules = std::fs::read_to_string(&hba).unwrap();
    std::fs::write(&hba, format!("local all restorer scram-sha-256\n{rules}")).unwrap();
    execute(&env.target, "postgres", "SELECT pg_reload_conf()").await;
    env.create_target_database("books").await;
    let log = env.path("programs.log");
    env.write_config(Some(&logging_bin_dir(env.dir.path(), &log)));

    let into = target_url(&env.target, "books").replace("user=postgres", "user=restorer").replacen(
        "postgresql://",
        &format!("postgresql://restorer:{password}@"),
        1,
    );
    // The owner does not exist on the target: refused before anything is written, naming it.
    let output = env.restore_url(&into, &[]).await;
    let error = assert_failure(&output);
    assert!(error.contains("ledger_owner") && error.contains("create them first"), "{error}");
    assert_eq!(user_tables(&env.target, "books").await, Vec::<String>::new());

    execute(&env.target, "postgres", "CREATE ROLE ledger_owner").await;
    let output = env.restore_url(&into, &[]).await;
    assert_success(&output);
    let owner: String =
        scalar(&env.target, "books", "SELECT tableowner::text FROM pg_tables WHERE tablename = 'ledger'").await;
    assert_eq!(owner, "ledger_owner");

    // A failure quotes psql, without the password.
    let failed = env.restore_url(&into, &[]).await;
    let error = assert_failure(&failed);
    assert!(error.contains("already exists") && error.contains("restorer:<redacted>@"), "{error}");

    let log = std::fs::read_to_string(&log).unwrap();
    assert!(log.contains("psql args:") && log.contains("pg_restore args:"), "{log}");
    assert!(log.contains("psql PGPASSWORD set"), "{log}");
    for output in [&output, &failed] {
        assert!(!stdout(output).contains(password) && !stderr(output).contains(password), "{}", stderr(output));
    }
    assert!(!log.contains(password), "the password was on a command line: {log}");
}
