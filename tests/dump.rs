//! `lifeboat dump` against a real PostgreSQL cluster, on a local repository and on S3: the manifest
//! holds exact row counts taken in the dump's own snapshot, the stored dumps restore with
//! `pg_restore` to exactly those counts, and failures (a failing or killed pg_dump, a missing
//! database, a held lease, tools older than the server) keep nothing and say why.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use lifeboat::catalog::layout::ClusterLayout;
use lifeboat::catalog::lease::Lease;
use lifeboat::config::ClusterName;
use lifeboat::format::dump_manifest::{DumpManifest, encode_database_name};
use lifeboat::keys::Unlock;
use lifeboat::keys::slots::KeyFile;
use lifeboat::object::WriteOptions;
use lifeboat::postgres::binaries::PgBinaries;
use lifeboat::postgres::cluster::{LocalCluster, LocalClusterOptions};
use lifeboat::repository::Repository;
use lifeboat::storage::local::LocalStore;
use lifeboat::storage::s3::{S3Settings, S3Store};
use lifeboat::storage::{ObjectKey, ObjectStore};
use sqlx::postgres::PgConnectOptions;
use sqlx::{AssertSqlSafe, Connection, PgConnection};
use support::output::{assert_failure, assert_success};
use support::s3::{ACCESS_KEY, S3Server, S3ServerKind, SECRET_KEY};
use tokio::io::AsyncReadExt;

/// A database name that needs every kind of care: upper case, a space, quotes.
const ANALYTICS: &str = "Analytics \"2026\"";

const SHOP_SCHEMA: &str = r#"
CREATE TABLE customers (id int PRIMARY KEY, name text NOT NULL);
INSERT INTO customers SELECT g, 'customer ' || g FROM generate_series(1, 250) g;
CREATE TABLE orders (id bigint NOT NULL, placed date NOT NULL, amount numeric) PARTITION BY RANGE (placed);
CREATE TABLE orders_2025 PARTITION OF orders FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
CREATE TABLE orders_2026 PARTITION OF orders FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
INSERT INTO orders SELECT g, date '2025-01-01' + (g % 500), g * 1.5 FROM generate_series(1, 1000) g;
CREATE SCHEMA "Sales Data";
CREATE TABLE "Sales Data"."Big ""Quoted"" Table" (id int, note text);
INSERT INTO "Sales Data"."Big ""Quoted"" Table" SELECT g, repeat('x', g % 50) FROM generate_series(1, 77) g;
CREATE UNLOGGED TABLE scratch (v int);
INSERT INTO scratch VALUES (1), (2), (3);
CREATE TABLE empty_table (v int);
CREATE MATERIALIZED VIEW customer_count AS SELECT count(*) FROM customers;
CREATE TABLE ticks (id bigserial PRIMARY KEY, payload text NOT NULL);
INSERT INTO ticks (payload) SELECT md5(g::text) FROM generate_series(1, 100000) g;
"#;

const ANALYTICS_SCHEMA: &str = r#"
CREATE TABLE events (id int, kind text);
INSERT INTO events SELECT g, CASE WHEN g % 3 = 0 THEN 'view' ELSE 'click' END FROM generate_series(1, 5000) g;
"#;

const GLOBALS: &str = "CREATE ROLE app_reader LOGIN PASSWORD 'reader-secret-31x';";

fn binaries() -> PgBinaries {
    PgBinaries::find(None).expect("PostgreSQL binaries (scripts/test installs them)")
}

/// Where the repository lives.
enum Backend {
    Local,
    S3(Box<S3Settings>),
}

/// A running cluster, a configuration file and a repository (initialised with a key file).
struct Env {
    cluster: LocalCluster,
    dir: tempfile::TempDir,
    backend: Backend,
}

impl Env {
    async fn start(backend: Backend) -> Env {
        let cluster =
            LocalCluster::start_new(&binaries(), LocalClusterOptions::default()).await.expect("start a cluster");
        let env = Env { cluster, dir: tempfile::tempdir().unwrap(), backend };
        env.write_config(&env.cluster.connection_url(), None, "");
        let init = env.lifeboat(&["init"]).await;
        assert_success(&init);
        env
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes the configuration: `connection`, an optional `bin_dir`, and extra TOML at the end.
    fn write_config(&self, connection: &str, bin_dir: Option<&Path>, extra: &str) {
        let root = self.dir.path().display();
        let bin_dir = bin_dir.map(|dir| format!("bin_dir = \"{}\"\n", dir.display())).unwrap_or_default();
        let repository = match &self.backend {
            Backend::Local => format!(
                "[audit]\npath = \"{root}/audit.jsonl\"\n\n[repository]\nurl = \"file://{root}/repo\"\nkey_file = \"{root}/repo.key\"\n"
            ),
            Backend::S3(settings) => format!(
                "[audit]\npath = \"{root}/audit.jsonl\"\n\n[repository]\nurl = \"s3://{bucket}/prod\"\nkey_file = \"{root}/repo.key\"\n\n[repository.s3]\n\
                 endpoint = \"{endpoint}\"\nforce_path_style = true\naccess_key_id = \"{ACCESS_KEY}\"\n\
                 secret_access_key = \"{SECRET_KEY}\"\n",
                bucket = settings.bucket,
                endpoint = settings.endpoint.as_deref().unwrap(),
            ),
        };
        let config = format!(
            "[cluster]\nname = \"main\"\nconnection = \"{}\"\n{bin_dir}\n{repository}\n{extra}",
            connection.replace('\\', "\\\\").replace('"', "\\\"")
        );
        std::fs::write(self.path("lifeboat.toml"), config).unwrap();
        std::fs::set_permissions(self.path("lifeboat.toml"), std::fs::Permissions::from_mode(0o600)).unwrap();
    }

    fn command(&self, args: &[&str]) -> tokio::process::Command {
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_lifeboat"));
        command.arg("--config").arg(self.path("lifeboat.toml")).args(args);
        for (variable, _) in std::env::vars_os() {
            let name = variable.to_string_lossy();
            if name.starts_with("LIFEBOAT_") || name.starts_with("AWS_") || name.starts_with("PG") {
                command.env_remove(&variable);
            }
        }
        command.stdin(std::process::Stdio::null()).kill_on_drop(true);
        command
    }

    async fn lifeboat(&self, args: &[&str]) -> Output {
        self.command(args).output().await.unwrap()
    }

    async fn repository(&self) -> Repository {
        let store: Arc<dyn ObjectStore> = match &self.backend {
            Backend::Local => Arc::new(LocalStore::new(self.path("repo"))),
            Backend::S3(settings) => {
                let mut settings = S3Settings::clone(settings);
                settings.prefix = "prod".into();
                Arc::new(S3Store::connect(settings).await.unwrap())
            }
        };
        let unlock = Unlock::KeyFile(KeyFile::load(&self.path("repo.key")).unwrap());
        Repository::open(store, Some(&unlock), WriteOptions::default()).await.unwrap()
    }

    fn options(&self, database: &str) -> PgConnectOptions {
        self.cluster.connect_options().database(database)
    }

    async fn connect(&self, database: &str) -> PgConnection {
        PgConnection::connect_with(&self.options(database)).await.unwrap()
    }

    async fn execute(&self, database: &str, sql: &str) {
        let mut connection = self.connect(database).await;
        sqlx::raw_sql(AssertSqlSafe(sql.to_owned())).execute(&mut connection).await.unwrap();
        connection.close().await.unwrap();
    }

    async fn count(&self, database: &str, schema: &str, table: &str) -> i64 {
        let mut connection = self.connect(database).await;
        let sql = format!("SELECT count(*) FROM {}.{}", quote(schema), quote(table));
        let count = sqlx::query_scalar(AssertSqlSafe(sql)).fetch_one(&mut connection).await.unwrap();
        connection.close().await.unwrap();
        count
    }

    /// The shop and analytics databases and a role.
    async fn populate(&self) {
        // One statement each: CREATE DATABASE cannot share a (implicitly transactional) query.
        self.execute("postgres", "CREATE DATABASE shop").await;
        self.execute("postgres", &format!("CREATE DATABASE {}", quote(ANALYTICS))).await;
        self.execute("postgres", GLOBALS).await;
        self.execute("shop", SHOP_SCHEMA).await;
        self.execute(ANALYTICS, ANALYTICS_SCHEMA).await;
    }

    /// Every object key of the cluster's dumps.
    async fn dump_keys(&self) -> Vec<String> {
        let repository = self.repository().await;
        let listing = repository.store().list("clusters/main/dumps/").await.unwrap();
        listing.into_iter().map(|meta| meta.key.to_string()).collect()
    }

    /// The manifest stored for `id`.
    async fn stored_manifest(&self, id: &str) -> DumpManifest {
        let repository = self.repository().await;
        let key = ObjectKey::new(format!("clusters/main/dumps/{id}/manifest")).unwrap();
        DumpManifest::from_json(&repository.get_bytes(&key).await.unwrap()).unwrap()
    }

    /// Decrypts the object under `key` into a file, as a restore would.
    async fn fetch(&self, key: &str, path: &Path) -> Vec<u8> {
        let repository = self.repository().await;
        let mut reader = repository.get(&ObjectKey::new(key).unwrap()).await.unwrap();
        let mut bytes = Vec::new();
        reader.read_to_end(&mut bytes).await.unwrap();
        std::fs::write(path, &bytes).unwrap();
        bytes
    }

    /// Runs one of the PostgreSQL programs against database `database` of the test cluster.
    async fn pg_program(&self, program: &str, database: &str, args: &[&str]) -> Output {
        let url = self.cluster.connection_url().replacen(
            "postgresql:///postgres?",
            &format!("postgresql:///{}?", encode(database)),
            1,
        );
        tokio::process::Command::new(self.cluster.binaries().require(program).unwrap())
            .args(args)
            .arg(format!("--dbname={url}"))
            .output()
            .await
            .unwrap()
    }
}

fn quote(identifier: &str) -> String {
    format!("\"{}\"", identifier.replace('"', "\"\""))
}

fn encode(text: &str) -> String {
    text.bytes()
        .map(|byte| if byte.is_ascii_alphanumeric() { (byte as char).to_string() } else { format!("%{byte:02X}") })
        .collect()
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// The manifest stored for the dump a `dump --json` printed, checked against what it printed.
async fn manifest_of(env: &Env, output: &Output) -> DumpManifest {
    let printed: serde_json::Value =
        serde_json::from_slice(&output.stdout).unwrap_or_else(|error| panic!("{error}: {}", stdout(output)));
    assert_eq!(printed["schema"], "dump/1", "{printed:#}");
    let manifest = env.stored_manifest(printed["id"].as_str().expect("the dump's id")).await;
    assert_eq!(printed["manifest"], format!("clusters/main/dumps/{}/manifest", manifest.id));
    assert_eq!(printed["system_identifier"], manifest.system_identifier.to_string());
    assert_eq!(printed["globals"]["key"], manifest.globals.object.key.as_str());
    let databases = printed["databases"].as_array().unwrap();
    assert_eq!(databases.len(), manifest.databases.len(), "{printed:#}");
    for (printed, stored) in databases.iter().zip(&manifest.databases) {
        assert_eq!(printed["name"], stored.name.as_str());
        assert_eq!(printed["key"], stored.object.key.as_str());
        assert_eq!(printed["size"], stored.object.size);
        assert_eq!(printed["total_rows"], stored.total_rows());
        assert_eq!(printed["tables"], serde_json::to_value(&stored.tables).unwrap());
    }
    manifest
}

/// A bin directory holding every real PostgreSQL program (as links) except `scripts`, which are
/// shell scripts; `REAL` in a script is replaced by the real bin directory. Start a script with
/// [`VERSION_AS_REAL`] to answer `--version` as the real program does.
const VERSION_AS_REAL: &str = "[ \"$1\" = --version ] && exec REAL/pg_dump --version\n";

fn fake_bin_dir(dir: &Path, scripts: &[(&str, &str)]) -> PathBuf {
    let real = binaries().dir().to_path_buf();
    let bin = dir.join("bin");
    std::fs::create_dir(&bin).unwrap();
    for entry in std::fs::read_dir(&real).unwrap() {
        let name = entry.unwrap().file_name();
        if !scripts.iter().any(|(script, _)| name == *script) {
            std::os::unix::fs::symlink(real.join(&name), bin.join(&name)).unwrap();
        }
    }
    for (name, body) in scripts {
        let path = bin.join(name);
        std::fs::write(&path, format!("#!/bin/sh\n{}\n", body.replace("REAL", &real.display().to_string()))).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    bin
}

/// Restores every database dump of `manifest` into a fresh database and checks each table's
/// row count against the manifest, and the fetched bytes against its size and hash.
async fn restore_and_compare(env: &Env, manifest: &DumpManifest) {
    let work = tempfile::tempdir().unwrap();
    for (index, database) in manifest.databases.iter().enumerate() {
        let file = work.path().join(format!("{index}.dump"));
        let bytes = env.fetch(&database.object.key, &file).await;
        assert_eq!(bytes.len() as u64, database.object.size, "{}", database.name);
        assert_eq!(blake3::hash(&bytes).to_hex().as_str(), database.object.blake3, "{}", database.name);

        let list = env.pg_program("pg_restore", "postgres", &["--list", file.to_str().unwrap()]).await;
        assert_success(&list);

        let target = format!("restored_{index}");
        env.execute("postgres", &format!("CREATE DATABASE {target}")).await;
        let restore =
            env.pg_program("pg_restore", &target, &["--exit-on-error", "--no-owner", file.to_str().unwrap()]).await;
        assert_success(&restore);
        for table in &database.tables {
            let restored = env.count(&target, &table.schema, &table.table).await;
            assert_eq!(restored as u64, table.rows, "{}: {}.{} restored", database.name, table.schema, table.table);
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn dump_all_records_exact_counts_that_the_restored_dumps_match() {
    let env = Env::start(Backend::Local).await;
    env.populate().await;

    // Rows keep arriving while the dump runs; the counts must still describe the dump exactly.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        let mut connection = env.connect("shop").await;
        tokio::spawn(async move {
            let mut batches = 0u32;
            loop {
                let last = stop.load(Ordering::SeqCst);
                sqlx::raw_sql("INSERT INTO ticks (payload) SELECT 'late ' || g FROM generate_series(1, 20) g")
                    .execute(&mut connection)
                    .await
                    .unwrap();
                batches += 1;
                if last {
                    return batches;
                }
            }
        })
    };
    let output = env.lifeboat(&["dump", "--all", "--json"]).await;
    stop.store(true, Ordering::SeqCst);
    let batches = writer.await.unwrap();
    assert_success(&output);
    let manifest = manifest_of(&env, &output).await;

    // What was printed is what the stored manifest, the commit point of the dump, says.
    assert_eq!(manifest.format, "lifeboat-dump");
    assert_eq!(manifest.cluster, "main");
    assert!(manifest.server_version_num >= 150000 && manifest.pg_dump_version.contains("pg_dump"), "{manifest:?}");
    let names: Vec<&str> = manifest.databases.iter().map(|database| database.name.as_str()).collect();
    assert_eq!(names, [ANALYTICS, "postgres", "shop"], "every non-template database, by name");
    let analytics = &manifest.databases[0];
    assert_eq!(
        analytics.object.key,
        format!("clusters/main/dumps/{}/data/{}.dump", manifest.id, encode_database_name(ANALYTICS))
    );
    assert!(!analytics.object.key.contains(' ') && !analytics.object.key.contains('"'));

    let shop = &manifest.databases[2];
    let tables: Vec<(&str, &str, u64)> =
        shop.tables.iter().map(|table| (table.schema.as_str(), table.table.as_str(), table.rows)).collect();
    let ticks = tables.iter().find(|table| table.1 == "ticks").unwrap().2;
    let orders_2025 = env.count("shop", "public", "orders_2025").await as u64;
    assert_eq!(
        tables,
        [
            ("Sales Data", "Big \"Quoted\" Table", 77),
            ("public", "customers", 250),
            ("public", "empty_table", 0),
            ("public", "orders_2025", orders_2025),
            ("public", "orders_2026", 1000 - orders_2025),
            ("public", "scratch", 3),
            ("public", "ticks", ticks),
        ],
        "leaf partitions and unlogged tables count; partitioned parents and materialized views do not"
    );
    assert!(orders_2025 > 0 && orders_2025 < 1000);
    let final_ticks = env.count("shop", "public", "ticks").await as u64;
    assert!(
        ticks >= 100_000 && ticks < final_ticks,
        "ticks: {ticks} in the dump, {final_ticks} now ({batches} batches)"
    );
    assert_eq!(analytics.tables.len(), 1);
    assert_eq!(analytics.tables[0].rows, 5000);
    assert!(manifest.databases[1].tables.is_empty());
    for database in &manifest.databases {
        assert!(database.object.stored_size > 0 && !database.snapshot.is_empty(), "{database:?}");
    }

    // The globals are a SQL script with the role and, taken by a superuser, its password hash.
    assert!(manifest.globals.role_passwords);
    let globals = env.fetch(&manifest.globals.object.key, &env.path("globals.sql")).await;
    let globals = String::from_utf8(globals).unwrap();
    assert!(globals.contains("CREATE ROLE app_reader") && globals.contains("SCRAM-SHA-256$"), "{globals}");

    // The stored dumps are valid custom-format archives holding exactly the counted rows.
    restore_and_compare(&env, &manifest).await;
    let restored_ticks = env.count("restored_2", "public", "ticks").await as u64;
    assert_eq!(restored_ticks, ticks);

    // The text output names every database with its size, ratio and rows.
    let text = env.lifeboat(&["dump", "--db", "shop"]).await;
    assert_success(&text);
    let out = stdout(&text);
    assert!(out.contains("shop") && out.contains(" rows") && out.contains('%') && out.contains("complete"), "{out}");
    assert!(!out.contains(ANALYTICS), "only the database asked for: {out}");
    assert!(env.dump_keys().await.iter().filter(|key| key.ends_with("/manifest")).count() == 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn dump_to_s3_restores() {
    let server = S3Server::start(S3ServerKind::S3sFs).await;
    let env = Env::start(Backend::S3(Box::new(server.fresh_bucket().await))).await;
    env.populate().await;
    env.write_config(&env.cluster.connection_url(), None, &format!("[dump]\ndatabases = [\"shop\", '{ANALYTICS}']\n"));

    let output = env.lifeboat(&["dump", "--json"]).await;
    assert_success(&output);
    let manifest = manifest_of(&env, &output).await;
    let names: Vec<&str> = manifest.databases.iter().map(|database| database.name.as_str()).collect();
    assert_eq!(names, ["shop", ANALYTICS], "the configured databases, in their order");
    restore_and_compare(&env, &manifest).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_pg_dump_fails_the_dump_and_keeps_nothing() {
    let env = Env::start(Backend::Local).await;
    env.execute("postgres", "CREATE DATABASE shop").await;
    env.execute("shop", SHOP_SCHEMA).await;
    // pg_dump writes part of a dump, then fails, printing the password (which must not get out).
    let password = "pg-pass-7c1e9a";
    let bin = fake_bin_dir(
        env.dir.path(),
        &[(
            "pg_dump",
            &format!(
                "{VERSION_AS_REAL}REAL/pg_dump \"$@\" | head -c 3000\n\
             echo \"pg_dump: error: simulated failure talking to the server with password $PGPASSWORD\" >&2\n\
             exit 1"
            ),
        )],
    );
    let connection =
        env.cluster.connection_url().replacen("postgresql://", &format!("postgresql://postgres:{password}@"), 1);
    env.write_config(&connection, Some(&bin), "");

    let output = env.lifeboat(&["dump", "--db", "shop"]).await;
    let error = assert_failure(&output);
    assert!(error.contains("pg_dump of database \"shop\" failed (exit status 1)"), "{error}");
    assert!(error.contains("simulated failure"), "pg_dump's own message is shown: {error}");
    assert!(!error.contains(password) && !stdout(&output).contains(password), "the password leaked: {error}");
    assert!(error.contains("<redacted>"), "{error}");
    assert_eq!(env.dump_keys().await, Vec::<String>::new(), "a failed dump keeps no object");
    let repository = env.repository().await;
    assert!(repository.store().list("clusters/main/locks/").await.unwrap().is_empty(), "the lease is released");

    // A database that does not exist is named, with the ones that do.
    env.write_config(&env.cluster.connection_url(), None, "");
    let error = assert_failure(&env.lifeboat(&["dump", "--db", "shop", "--db", "no_such_db"]).await);
    assert!(error.contains("\"no_such_db\" does not exist") && error.contains("shop"), "{error}");
    assert_eq!(env.dump_keys().await, Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_dump_is_never_listed_and_the_next_dump_removes_its_objects() {
    let env = Env::start(Backend::Local).await;
    env.execute("postgres", "CREATE DATABASE shop").await;
    env.execute("shop", SHOP_SCHEMA).await;
    // pg_dump writes the whole dump, then waits: lifeboat is killed while the object is unfinished.
    let markers = env.dir.path().display().to_string();
    let bin = fake_bin_dir(
        env.dir.path(),
        &[(
            "pg_dump",
            &format!(
                "{VERSION_AS_REAL}REAL/pg_dump \"$@\"\nstatus=$?\ntouch '{markers}/dumped'\n\
                 while [ ! -e '{markers}/release' ]; do sleep 0.1; done\nexit $status"
            ),
        )],
    );
    env.write_config(&env.cluster.connection_url(), Some(&bin), "");

    let mut child = env
        .command(&["dump", "--db", "shop"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    for _ in 0..600 {
        if env.path("dumped").exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(env.path("dumped").exists(), "pg_dump never finished");
    child.kill().await.unwrap();
    std::fs::write(env.path("release"), "").unwrap();

    let leftovers = env.dump_keys().await;
    assert!(!leftovers.is_empty(), "the killed dump stored its globals");
    assert!(leftovers.iter().all(|key| !key.ends_with("/manifest")), "{leftovers:?}");
    let killed_id = leftovers[0].split('/').nth(3).unwrap().to_owned();

    // The next dump takes over the dead holder's lease and removes the orphans.
    let output = env.lifeboat(&["dump", "--db", "shop", "--json"]).await;
    assert_success(&output);
    let manifest = manifest_of(&env, &output).await;
    assert_ne!(manifest.id.to_string(), killed_id);
    let prefix = format!("clusters/main/dumps/{}/", manifest.id);
    let keys = env.dump_keys().await;
    assert!(keys.iter().all(|key| key.starts_with(&prefix)), "orphans of {killed_id} remain: {keys:?}");
    assert_eq!(keys.len(), 3, "globals, shop, manifest: {keys:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_password_reaches_pg_dump_only_through_its_environment() {
    let env = Env::start(Backend::Local).await;
    env.execute("postgres", "CREATE DATABASE shop").await;
    env.execute("shop", SHOP_SCHEMA).await;
    let password = "dumper-pw-4e2b";
    env.execute(
        "postgres",
        &format!("CREATE ROLE dumper LOGIN PASSWORD '{password}' IN ROLE pg_read_all_data; {GLOBALS}"),
    )
    .await;
    // The dumper must authenticate with its password (SCRAM) over the socket.
    let hba = env.cluster.data_dir().join("pg_hba.conf");
    let rules = std::fs::read_to_string(&hba).unwrap();
    std::fs::write(&hba, format!("local all dumper scram-sha-256\n{rules}")).unwrap();
    env.execute("postgres", "SELECT pg_reload_conf()").await;

    let log = env.path("pg_dump.log");
    let bin = fake_bin_dir(
        env.dir.path(),
        &[(
            "pg_dump",
            &format!(
                "echo \"args: $*\" >> '{log}'\necho \"PGPASSWORD is ${{PGPASSWORD:+set}}\" >> '{log}'\n\
                 exec REAL/pg_dump \"$@\"",
                log = log.display()
            ),
        )],
    );
    let connection = env.cluster.connection_url().replace("user=postgres", "user=dumper").replacen(
        "postgresql://",
        &format!("postgresql://dumper:{password}@"),
        1,
    );
    env.write_config(&connection, Some(&bin), "");

    let output = env.lifeboat(&["dump", "--db", "shop", "--json"]).await;
    assert_success(&output);
    let manifest = manifest_of(&env, &output).await;
    let log = std::fs::read_to_string(&log).unwrap();
    assert!(log.contains("--snapshot=") && log.contains("PGPASSWORD is set"), "{log}");
    assert!(!log.contains(password), "the password was on pg_dump's command line: {log}");
    assert!(!stdout(&output).contains(password) && !stderr(&output).contains(password));
    // Not a superuser: the globals come without role passwords, and the manifest says so.
    assert!(!manifest.globals.role_passwords);
    assert!(stderr(&output).contains("without role passwords"), "{}", stderr(&output));
    assert_eq!(manifest.databases[0].tables.iter().find(|table| table.table == "customers").unwrap().rows, 250);

    // A wrong password fails clearly and without echoing either password.
    env.write_config(&connection.replace(password, "wrong-pw-0000"), Some(&bin), "");
    let error = assert_failure(&env.lifeboat(&["dump", "--db", "shop"]).await);
    assert!(error.contains("password authentication failed"), "{error}");
    assert!(!error.contains(password) && !error.contains("wrong-pw-0000"), "{error}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dump_waits_for_the_cluster_lease_and_names_its_holder() {
    let env = Env::start(Backend::Local).await;
    env.write_config(&env.cluster.connection_url(), None, "[dump]\nlock_wait = \"1s\"\n");
    let repository = Arc::new(env.repository().await);
    let layout = ClusterLayout::new(&ClusterName::parse("main").unwrap());
    let minute = Duration::from_secs(60);
    let lease =
        Lease::acquire(repository, &layout.lock("backup"), "backup 20261127T0300Z", minute, minute).await.unwrap();

    let error = assert_failure(&env.lifeboat(&["dump", "--all"]).await);
    assert!(error.contains("held by backup 20261127T0300Z") && error.contains("gave up after waiting"), "{error}");
    assert_eq!(env.dump_keys().await, Vec::<String>::new());
    lease.release().await.unwrap();
    assert_success(&env.lifeboat(&["dump", "--all"]).await);
}

#[tokio::test(flavor = "multi_thread")]
async fn pg_dump_older_than_the_server_is_refused() {
    let env = Env::start(Backend::Local).await;
    let older = binaries().major() - 1;
    let bin = fake_bin_dir(
        env.dir.path(),
        &[("postgres", &format!("echo 'postgres (PostgreSQL) {older}.3'")), ("pg_dump", "exit 1")],
    );
    env.write_config(&env.cluster.connection_url(), Some(&bin), "");
    let error = assert_failure(&env.lifeboat(&["dump", "--all"]).await);
    let server = binaries().major();
    assert!(
        error.contains(&format!("holds pg_dump {older} (too old)"))
            && error.contains(&format!("version {server}"))
            && error.contains(&format!("postgresql-client-{server}")),
        "{error}"
    );
}
