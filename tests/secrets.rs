//! Secrets stay secret (issue 17, item 7; DESIGN G5): the one sweep over every command.
//!
//! A real cluster whose role `keeper` logs in with a password (SCRAM) archives its WAL with
//! `wal-push -vv` into an S3 repository on s3s-fs (which checks the signatures the secret access
//! key makes), with a local copy (`[[copies]]`), a webhook whose URL carries a token, and a key
//! file, a passphrase in the configuration and another in `LIFEBOAT_PASSPHRASE`: each a
//! recognisable string. Every command runs with `-vv`, in text and, where it has one, `--json`:
//! first as it should go (with each way of giving the key and the database password), then as it
//! goes wrong for an operator (wrong passphrase, wrong or unreachable S3, wrong password or a
//! database that is down, a mistake on a secret's line of the configuration, bad arguments).
//!
//! None of the secrets, nor their hex or base64, may appear in any stdout or stderr, the
//! PostgreSQL logs (the source server's, where `wal-push` runs, and a restored server's, where
//! `wal-fetch` runs), the audit log, the daemon's `/metrics`, `/status` and `/healthz`, the
//! webhook's requests, or any file of the repository (the objects s3s-fs stores), its local copy,
//! the state directory or a fetched WAL file.
//!
//! tests/audit.rs checks what the audit trail records, tests/cli.rs and tests/hardening_messages.rs
//! single messages (`config show`, `key check`); this test only looks for secrets, everywhere.

mod support;

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use sqlx::{Connection as _, PgConnection};
use support::archiving::{LIFEBOAT, Options, Setup, archive_current_segment, execute, lifeboat_command, scalar};
use support::output::describe;
use support::restored::{Restored, free_port};
use support::s3::{S3Server, S3ServerKind, SECRET_KEY};
use support::webhook::Receiver;

/// The key file's whole content: what a leak of the key file would show.
const KEY_FILE_TEXT: &str = "key-file-Qf7Jm2-recognisable-256-bits-of-test-key-material";
const PASSPHRASE: &str = "config-passphrase-Vq93";
const ENV_PASSPHRASE: &str = "env-passphrase-Wd27";
const DB_PASSWORD: &str = "db-password-Hn58";
const WEBHOOK_TOKEN: &str = "webhook-token-Lp72";
/// The secrets of the failures: a wrong secret is as secret as the right one.
const WRONG_PASSPHRASE: &str = "wrong-passphrase-Tz04";
const WRONG_S3_SECRET: &str = "wrong-s3-secret-Rm61";
const WRONG_DB_PASSWORD: &str = "wrong-db-password-Yb35";

const SECRETS: [(&str, &str); 9] = [
    ("the key file", KEY_FILE_TEXT),
    ("the configuration's passphrase", PASSPHRASE),
    ("LIFEBOAT_PASSPHRASE", ENV_PASSPHRASE),
    ("the database password", DB_PASSWORD),
    ("the S3 secret access key", SECRET_KEY),
    ("the webhook's token", WEBHOOK_TOKEN),
    ("a wrong passphrase", WRONG_PASSPHRASE),
    ("a wrong S3 secret access key", WRONG_S3_SECRET),
    ("a wrong database password", WRONG_DB_PASSWORD),
];

/// What would show `secret` in clear or in an obvious encoding: itself, its hex, and its base64
/// (standard and URL-safe) as it appears inside a longer encoded text, at each of the three
/// alignments.
fn forms(secret: &str) -> Vec<(&'static str, String)> {
    let bytes = secret.as_bytes();
    let mut forms = vec![
        ("clear", secret.to_owned()),
        ("hex", hex::encode(bytes)),
        ("HEX", hex::encode_upper(bytes)),
        (
            "percent-encoded",
            percent_encoding::utf8_percent_encode(secret, percent_encoding::NON_ALPHANUMERIC).to_string(),
        ),
    ];
    for offset in 0..3 {
        let whole = (bytes.len() - offset) / 3 * 3;
        let encoded = base64(&bytes[offset..offset + whole]);
        forms.push(("base64url", encoded.replace('+', "-").replace('/', "_")));
        forms.push(("base64", encoded));
    }
    forms
}

/// Standard base64 of whole 3-byte groups (no padding needed).
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    bytes
        .chunks_exact(3)
        .flat_map(|group| {
            let bits = u32::from(group[0]) << 16 | u32::from(group[1]) << 8 | u32::from(group[2]);
            [18, 12, 6, 0].map(|shift| char::from(ALPHABET[(bits >> shift & 63) as usize]))
        })
        .collect()
}

/// Every place a secret is found in `text`: (secret, form, the text around it).
fn findings(text: &[u8]) -> Vec<String> {
    // Secrets are ASCII, which a lossy conversion keeps wherever it stands.
    let text = String::from_utf8_lossy(text);
    let mut found = Vec::new();
    for (name, secret) in SECRETS {
        for (form, needle) in forms(secret) {
            if let Some(at) = text.find(&needle) {
                let start = text.floor_char_boundary(at.saturating_sub(120));
                let end = text.ceil_char_boundary((at + needle.len() + 120).min(text.len()));
                found.push(format!("{name} ({form}) in: …{}…", &text[start..end]));
            }
        }
    }
    found
}

/// Every file under `dir`, by path.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut files = Vec::new();
    for entry in entries {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(files_under(&path));
        } else if path.is_file() {
            files.push(path);
        }
    }
    files
}

/// The test's cluster and servers, and everything the commands showed or left behind.
struct Sweep {
    setup: Setup,
    /// Configuration files, passphrase files, the key file, the copy, migrations: outside the
    /// setup's directory, which the server's OS user owns.
    work: tempfile::TempDir,
    /// (what it is, its bytes), checked for secrets at the end.
    seen: Vec<(String, Vec<u8>)>,
    /// How many runs went as expected, success or failure.
    runs: usize,
}

impl Sweep {
    fn config(&self, name: &str) -> PathBuf {
        self.work.path().join(format!("{name}.toml"))
    }

    /// `lifeboat -vv --config <config name> args`, with `env` added to a clean environment.
    fn run(&mut self, config: &str, env: &[(&str, &str)], args: &[&str]) -> Output {
        let mut all = vec!["-vv"];
        all.extend_from_slice(args);
        let config_path = if config == "main" { self.setup.config_path() } else { self.config(config) };
        let mut command = lifeboat_command(&config_path, &all);
        command.env("LIFEBOAT_STATE_DIR", self.setup.state_dir()).envs(env.iter().copied());
        let output = command.output().unwrap();
        let label = format!("`lifeboat {}` with {config}.toml {env:?}", args.join(" "));
        self.seen.push((format!("{label}: stdout"), output.stdout.clone()));
        self.seen.push((format!("{label}: stderr"), output.stderr.clone()));
        output
    }

    /// Runs `args` with the main configuration; it must succeed.
    fn ok(&mut self, args: &[&str]) -> Output {
        self.ok_with("main", &[], args)
    }

    fn ok_with(&mut self, config: &str, env: &[(&str, &str)], args: &[&str]) -> Output {
        let output = self.run(config, env, args);
        assert!(
            output.status.success(),
            "`lifeboat {}` with {config}.toml failed:\n{}",
            args.join(" "),
            describe(&output)
        );
        self.runs += 1;
        output
    }

    /// Runs `args` and `args --json` with the main configuration; both must succeed. The JSON.
    fn ok_both(&mut self, args: &[&str]) -> serde_json::Value {
        self.ok(args);
        let mut json = args.to_vec();
        json.push("--json");
        let output = self.ok(&json);
        serde_json::from_slice(&output.stdout)
            .unwrap_or_else(|error| panic!("{json:?} printed no JSON ({error}): {}", describe(&output)))
    }

    /// Runs `args`, which must fail (and not crash).
    fn fails(&mut self, config: &str, env: &[(&str, &str)], args: &[&str]) {
        let output = self.run(config, env, args);
        assert!(
            matches!(output.status.code(), Some(code) if code != 0 && code < 101),
            "`lifeboat {}` with {config}.toml should fail cleanly:\n{}",
            args.join(" "),
            describe(&output)
        );
        self.runs += 1;
    }

    /// Runs `args`, which may succeed or fail as long as it does not crash: `status` reports a
    /// database it cannot reach in its output, with exit status 0.
    fn reports(&mut self, config: &str, env: &[(&str, &str)], args: &[&str]) {
        let output = self.run(config, env, args);
        assert!(matches!(output.status.code(), Some(code) if code < 101), "{args:?}: {}", describe(&output));
        self.runs += 1;
    }

    /// A file's bytes, to be checked.
    fn look_at(&mut self, what: &str, path: &Path) {
        let bytes = std::fs::read(path).unwrap_or_else(|error| panic!("{what} {}: {error}", path.display()));
        self.seen.push((format!("{what} {}", path.display()), bytes));
    }

    /// Every file under `dir`, to be checked; how many.
    fn look_under(&mut self, what: &str, dir: &Path) -> usize {
        let files = files_under(dir);
        for file in &files {
            self.look_at(what, file);
        }
        files.len()
    }
}

fn json(output: &Output) -> serde_json::Value {
    serde_json::from_slice(&output.stdout).unwrap_or_else(|error| panic!("no JSON ({error}): {}", describe(output)))
}

fn write_secret_file(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// Replaces the one line of `config` that starts with `start`.
fn replace_line(config: &str, start: &str, with: &str) -> String {
    let line = config.lines().find(|line| line.starts_with(start)).unwrap_or_else(|| panic!("no {start} in {config}"));
    config.replacen(line, with, 1)
}

#[tokio::test(flavor = "multi_thread")]
async fn no_command_shows_a_secret_in_output_logs_metrics_payloads_or_stored_files() {
    let began = Instant::now();
    let server = S3Server::start(S3ServerKind::S3sFs).await;
    let bucket = server.fresh_bucket().await.bucket;
    let receiver = Receiver::start().await;
    let work = tempfile::tempdir().unwrap();
    let secrets_dir = work.path().join("secrets");
    for dir in ["secrets", "migrations", "seeds", "seeds/dev", "fetched"] {
        std::fs::create_dir(work.path().join(dir)).unwrap();
    }
    let daemon_address = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let extra = format!(
        "\n[[copies]]\nname = \"offsite\"\nurl = \"file://{work}/copy\"\n\n[notify]\nwebhook = \"{webhook}\"\n\
         desktop = false\nattempts = 1\n\n[daemon]\nlisten = \"{daemon_address}\"\n\n[migrate]\ndir = \
         \"{work}/migrations\"\nseeds_dir = \"{work}/seeds\"\ndatabase = \"app\"\nenvironment = \"dev\"\n",
        work = work.path().display(),
        webhook = receiver.url(&format!("/hooks/{WEBHOOK_TOKEN}")),
    );
    // Role `keeper` must give its password (SCRAM) over the socket; the test's own connections,
    // as the bootstrap superuser, are trusted.
    let hba = "local all keeper scram-sha-256\nlocal replication keeper scram-sha-256\nlocal all all trust\nlocal replication all trust\n";
    let setup = Setup::verifying(Options::restorable().s3(&server, &bucket).hba(hba).extra(&extra), "").await;
    let mut conn = setup.connect().await;
    execute(&mut conn, &format!("CREATE ROLE keeper LOGIN SUPERUSER PASSWORD '{DB_PASSWORD}'")).await;
    let unchecked = setup.cluster.connect_options().username("keeper").password(WRONG_DB_PASSWORD);
    assert!(PgConnection::connect_with(&unchecked).await.is_err(), "the server checks keeper's password");
    execute(&mut conn, "CREATE DATABASE app").await;
    execute(&mut conn, "CREATE DATABASE restored_app").await;
    let mut sweep = Sweep { setup, work, seen: Vec::new(), runs: 0 };

    // The key file and both passphrases get slots, opened by the key file the setup made; then
    // the configuration names the recognisable key file and the passphrase, and the setup's
    // key file is gone.
    let key_file = secrets_dir.join("lifeboat.key");
    write_secret_file(&key_file, &format!("{KEY_FILE_TEXT}\n"));
    let (passphrase_file, env_passphrase_file) = (secrets_dir.join("passphrase"), secrets_dir.join("env-passphrase"));
    write_secret_file(&passphrase_file, PASSPHRASE);
    write_secret_file(&env_passphrase_file, ENV_PASSPHRASE);
    for new in [
        ["--new-key-file", key_file.to_str().unwrap()],
        ["--new-passphrase-file", passphrase_file.to_str().unwrap()],
        ["--new-passphrase-file", env_passphrase_file.to_str().unwrap()],
    ] {
        sweep.ok(&["key", "add", new[0], new[1]]);
    }
    let original = std::fs::read_to_string(sweep.setup.config_path()).unwrap();
    let main = replace_line(&original, "key_file = ", &format!("key_file = \"{}\"", key_file.display()))
        .replacen("[repository]\n", &format!("[repository]\npassphrase = \"{PASSPHRASE}\"\n"), 1)
        .replacen("&user=postgres", &format!("&user=keeper&password={DB_PASSWORD}"), 1);
    assert!(main.contains("user=keeper") && main.contains(key_file.to_str().unwrap()), "{main}");
    std::fs::write(sweep.setup.config_path(), &main).unwrap();
    std::fs::remove_file(sweep.setup.dir.path().join("repo.key")).unwrap();
    let without_key_file = replace_line(&main, "key_file = ", "");
    let variants = [
        // Opened by the passphrase in the file.
        ("passphrase", without_key_file.clone()),
        // Opened by LIFEBOAT_PASSPHRASE.
        ("env-passphrase", replace_line(&without_key_file, "passphrase = ", "")),
        // The password from PGPASSWORD.
        ("pgpassword", main.replacen(&format!("&password={DB_PASSWORD}"), "", 1)),
        ("wrong-passphrase", without_key_file.replacen(PASSPHRASE, WRONG_PASSPHRASE, 1)),
        (
            "wrong-s3-secret",
            main.replacen(SECRET_KEY, WRONG_S3_SECRET, 1).replacen(
                "force_path_style",
                "max_attempts = 1\nforce_path_style",
                1,
            ),
        ),
        (
            "s3-unreachable",
            replace_line(&main, "endpoint = ", "endpoint = \"http://127.0.0.1:9\"").replacen(
                "force_path_style",
                "max_attempts = 1\nforce_path_style",
                1,
            ),
        ),
        ("wrong-db-password", main.replacen(DB_PASSWORD, WRONG_DB_PASSWORD, 1)),
        // Mistakes on a secret's line: TOML errors quote the line they are on.
        ("secret-line-syntax", main.replacen(&format!("\"{SECRET_KEY}\""), &format!("\"{SECRET_KEY}\" trailing"), 1)),
        ("passphrase-line-syntax", main.replacen(&format!("\"{PASSPHRASE}\""), &format!("\"{PASSPHRASE}"), 1)),
        (
            "passphrase-twice",
            main.replacen("[repository]\n", &format!("[repository]\npassphrase = \"{PASSPHRASE}\"\n"), 1),
        ),
        ("connection-bad-port", main.replacen("&port=", "&port=notaport&was=", 1)),
        (
            "connection-bad-url",
            main.replacen("postgresql:///postgres?", &format!("postgresql://keeper:{DB_PASSWORD}@[::1/postgres?"), 1),
        ),
    ];
    for (name, text) in &variants {
        assert!(text != &main, "variant {name} changed nothing");
        std::fs::write(sweep.config(name), text).unwrap();
    }
    // The scanner finds what it looks for: the configuration holds four of the secrets.
    let in_config = findings(main.as_bytes()).join("\n");
    for secret in [PASSPHRASE, DB_PASSWORD, SECRET_KEY, WEBHOOK_TOKEN] {
        assert!(in_config.contains(secret), "the scanner missed {secret} in {main}");
    }
    for prefix in ["", "k", "ke"] {
        let encoded = base64(format!("{prefix}{KEY_FILE_TEXT}\n\n").as_bytes());
        assert!(!findings(encoded.as_bytes()).is_empty(), "the scanner misses the key file in base64: {encoded}");
    }
    // wal-push, wal-fetch and the restored server run as the server's OS user.
    sweep.setup.cluster.give_to_server_user(sweep.work.path()).unwrap();
    sweep.setup.cluster.give_to_server_user(sweep.setup.dir.path()).unwrap();

    // The server archives with `-vv`, so wal-push's trace goes into the server's log.
    let archive_command = format!(
        "LIFEBOAT_STATE_DIR={} {LIFEBOAT} -vv --config {} wal-push %p",
        sweep.setup.state_dir().display(),
        sweep.setup.config_path().display()
    );
    execute(&mut conn, &format!("ALTER SYSTEM SET archive_command = '{archive_command}'")).await;
    execute(&mut conn, "SELECT pg_reload_conf()").await;
    execute(&mut conn, "CREATE TABLE things (id int primary key, name text)").await;
    execute(&mut conn, "INSERT INTO things SELECT g, 'thing ' || g FROM generate_series(1, 1000) g").await;
    let mut app = PgConnection::connect_with(&sweep.setup.cluster.connect_options().database("app")).await.unwrap();
    execute(&mut app, "CREATE TABLE orders (id int primary key, note text)").await;
    execute(&mut app, "INSERT INTO orders SELECT g, 'order ' || g FROM generate_series(1, 100) g").await;
    app.close().await.unwrap();
    archive_current_segment(&mut conn).await;

    // Configuration and keys.
    sweep.ok(&["config", "check"]);
    sweep.ok(&["config", "show"]);
    sweep.ok_both(&["key", "check"]);
    sweep.ok_both(&["repo", "info"]);
    let slots = sweep.ok_both(&["key", "list"]);
    let extra_passphrase = secrets_dir.join("extra-passphrase");
    write_secret_file(&extra_passphrase, PASSPHRASE);
    sweep.ok(&["key", "add", "--new-passphrase-file", extra_passphrase.to_str().unwrap(), "--label", "extra"]);
    let after_add = json(&sweep.ok(&["key", "list", "--json"]));
    let known: Vec<&serde_json::Value> = slots["slots"].as_array().unwrap().iter().map(|slot| &slot["id"]).collect();
    let added = after_add["slots"].as_array().unwrap().iter().find(|slot| !known.contains(&&slot["id"])).unwrap();
    sweep.ok(&["key", "remove", added["id"].as_str().unwrap()]);
    sweep.ok(&["init", "--copy", "offsite", "--json"]);

    // Backups, dumps and what the repository shows of them.
    let backup = json(&sweep.ok(&["backup", "--json"]));
    let backup_id = backup["id"].as_str().unwrap().to_owned();
    execute(&mut conn, "UPDATE things SET name = name || '!' WHERE id % 10 = 0").await;
    sweep.ok(&["backup", "--incremental"]);
    sweep.ok(&["backup", "--method", "basebackup", "--json"]);
    let dump = json(&sweep.ok(&["dump", "--json"]));
    let dump_id = dump["id"].as_str().unwrap().to_owned();
    sweep.ok(&["dump", "--db", "app"]);
    archive_current_segment(&mut conn).await;
    sweep.ok_both(&["list"]);
    sweep.ok_both(&["info", "latest"]);
    sweep.ok_both(&["info", &backup_id]);
    sweep.ok_both(&["wal", "check"]);
    sweep.ok(&["verify", "--integrity-only", &backup_id]);
    sweep.ok(&["verify", "--json", &backup_id]);
    sweep.ok(&["verify", "--integrity-only", "--json", &dump_id]);

    // WAL by hand: a segment already archived (a repeated push), and fetched back.
    let segment = scalar(&mut conn, "SELECT last_archived_wal FROM pg_stat_archiver").await;
    let segment_path = sweep.setup.cluster.data_dir().join("pg_wal").join(&segment);
    if segment_path.exists() {
        sweep.ok(&["wal-push", segment_path.to_str().unwrap()]);
    }
    let fetched = sweep.work.path().join("fetched").join(&segment);
    sweep.ok(&["wal-fetch", &segment, fetched.to_str().unwrap()]);

    // Restores: a plan, a started server replaying through wal-fetch, a dump into a database
    // named by a URL that carries the password.
    let pgdata = sweep.setup.restore_dir("restored");
    let pgdata_text = pgdata.to_str().unwrap().to_owned();
    sweep.ok(&["restore", "--pgdata", &pgdata_text, "--dry-run", "--json"]);
    let port = free_port(&sweep.setup);
    let port_text = port.to_string();
    let started = sweep.run("main", &[], &["restore", "--pgdata", &pgdata_text, "--start", "--port", &port_text]);
    let restored = Restored::of(&sweep.setup, pgdata.clone(), port);
    assert!(started.status.success(), "{}", describe(&started));
    drop(restored);
    for file in files_under(&pgdata).into_iter().filter(|file| file.parent() == Some(pgdata.as_path())) {
        sweep.look_at("the restored data directory's file", &file);
    }
    let into = format!(
        "postgresql:///restored_app?host={}&port={}&user=keeper&password={DB_PASSWORD}",
        sweep.setup.cluster.socket_dir().display(),
        sweep.setup.cluster.port()
    );
    sweep.ok(&["restore", "--dump", &dump_id, "--db", "app", "--into", &into, "--json"]);

    // Copies, the audit trail, status, retention, deletion, notifications.
    sweep.ok_both(&["copy"]);
    sweep.ok(&["copy", "--check"]);
    sweep.ok(&["--repository", "offsite", "list", "--json"]);
    sweep.ok_both(&["audit"]);
    sweep.ok_both(&["status"]);
    sweep.ok_both(&["expire", "--dry-run"]);
    sweep.ok(&["delete", &dump_id, "--json"]);
    sweep.ok_both(&["notify", "test"]);

    // Migrations, seeds, the schema check and the gate, on database `app`.
    let created = sweep.ok(&["migrate", "new", "add_customers"]);
    let up = files_under(&sweep.work.path().join("migrations"))
        .into_iter()
        .find(|file| file.to_string_lossy().ends_with(".up.sql"))
        .unwrap_or_else(|| panic!("migrate new made no up file: {}", describe(&created)));
    std::fs::write(&up, "CREATE TABLE customers (id int primary key, name text);\n").unwrap();
    std::fs::write(up.to_string_lossy().replace(".up.sql", ".down.sql"), "DROP TABLE customers;\n").unwrap();
    sweep.setup.cluster.give_to_server_user(sweep.work.path()).unwrap();
    sweep.ok_both(&["migrate", "status"]);
    sweep.ok_both(&["migrate", "plan"]);
    sweep.ok_both(&["migrate", "lint"]);
    sweep.ok_both(&["migrate", "validate"]);
    sweep.ok(&["migrate", "up", "--json"]);
    sweep.ok(&["migrate", "down"]);
    sweep.ok_both(&["schema", "check"]);
    sweep.ok_both(&["seed", "status"]);
    sweep.ok(&["gate", "--json", "--", "true"]);
    sweep.ok(&["db", "reset", "--yes"]);
    sweep.ok(&["completions", "bash"]);
    sweep.ok(&["man"]);

    // The other ways of giving the key and the password.
    sweep.ok_with("passphrase", &[], &["key", "check", "--json"]);
    sweep.ok_with("passphrase", &[], &["backup", "--json"]);
    sweep.ok_with("passphrase", &[], &["wal-fetch", &segment, fetched.with_extension("again").to_str().unwrap()]);
    sweep.ok_with("env-passphrase", &[("LIFEBOAT_PASSPHRASE", ENV_PASSPHRASE)], &["key", "check"]);
    sweep.ok_with("env-passphrase", &[("LIFEBOAT_PASSPHRASE", ENV_PASSPHRASE)], &["list", "--json"]);
    sweep.ok_with(
        "env-passphrase",
        &[("LIFEBOAT_PASSPHRASE", ENV_PASSPHRASE)],
        &["verify", "--integrity-only", "latest"],
    );
    sweep.ok_with("pgpassword", &[("PGPASSWORD", DB_PASSWORD)], &["backup", "--method", "basebackup"]);
    sweep.ok_with("pgpassword", &[("PGPASSWORD", DB_PASSWORD)], &["dump", "--json"]);
    sweep.ok_with("pgpassword", &[("PGPASSWORD", DB_PASSWORD)], &["status", "--json"]);

    // Every library's trace too (sqlx, the AWS SDK, hyper), not only lifeboat's.
    let everything = [("LIFEBOAT_LOG", "trace")];
    for args in [&["list", "--json"][..], &["backup", "--json"], &["dump"], &["schema", "check"], &["notify", "test"]] {
        sweep.ok_with("main", &everything, args);
    }
    sweep.ok_with("passphrase", &everything, &["key", "check"]);
    sweep.ok_with("pgpassword", &[("PGPASSWORD", DB_PASSWORD), everything[0]], &["status", "--json"]);

    // The daemon, briefly: its endpoints, then SIGTERM.
    let mut daemon = {
        let mut command = lifeboat_command(&sweep.setup.config_path(), &["-vv", "daemon"]);
        command.env("LIFEBOAT_STATE_DIR", sweep.setup.state_dir()).stdout(Stdio::piped()).stderr(Stdio::piped());
        command.spawn().unwrap()
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while tokio::net::TcpStream::connect(daemon_address).await.is_err() {
        assert!(Instant::now() < deadline, "the daemon never listened on {daemon_address}");
        assert!(daemon.try_wait().unwrap().is_none(), "the daemon exited");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for path in ["/status", "/metrics", "/healthz"] {
        let (code, body) = support::http::get(daemon_address, path).await;
        assert!(code == 200 || code == 503, "{path}: {code} {body}");
        sweep.seen.push((format!("the daemon's {path}"), body.into_bytes()));
    }
    // SAFETY: kill(2) on the child this test started.
    assert_eq!(unsafe { libc::kill(daemon.id() as libc::pid_t, libc::SIGTERM) }, 0);
    let daemon = daemon.wait_with_output().unwrap();
    assert!(daemon.status.success(), "the daemon on SIGTERM: {}", describe(&daemon));
    sweep.seen.push(("the daemon's stdout".into(), daemon.stdout));
    sweep.seen.push(("the daemon's stderr".into(), daemon.stderr));

    // Failures.
    let wrong_env = [("LIFEBOAT_PASSPHRASE", WRONG_PASSPHRASE)];
    for args in [&["key", "check", "--json"][..], &["list"], &["backup", "--json"]] {
        sweep.fails("wrong-passphrase", &[], args);
    }
    for args in [&["key", "check"][..], &["list", "--json"], &["wal-fetch", &segment, "/tmp/never"]] {
        sweep.fails("env-passphrase", &wrong_env, args);
    }
    for args in [&["list", "--json"][..], &["backup"], &["key", "check"]] {
        sweep.fails("wrong-s3-secret", &[], args);
        sweep.fails("s3-unreachable", &[], args);
    }
    if segment_path.exists() {
        sweep.fails("wrong-s3-secret", &[], &["wal-push", segment_path.to_str().unwrap()]);
    }
    for args in [&["backup", "--json"][..], &["dump"], &["schema", "check"], &["migrate", "status"]] {
        sweep.fails("wrong-db-password", &[], args);
    }
    sweep.reports("wrong-db-password", &[], &["status", "--json"]);
    for config in [
        "secret-line-syntax",
        "passphrase-line-syntax",
        "passphrase-twice",
        "connection-bad-port",
        "connection-bad-url",
    ] {
        // `config check` leaves the connection string to libpq.
        sweep.reports(config, &[], &["config", "check"]);
        sweep.fails(config, &[], &["backup"]);
    }
    let bad_into = format!("postgresql://keeper:{DB_PASSWORD}@[::1/app");
    sweep.fails("main", &[], &["restore", "--dump", "latest", "--db", "app", "--into", &bad_into]);
    sweep.fails("main", &[], &["restore", "--pgdata", &pgdata_text, "--target-time", "yesterday"]);
    sweep.fails("main", &[], &["info", "no-such-backup"]);
    sweep.fails("main", &[], &["backup", "--workers", "none"]);
    // The database is down.
    sweep.setup.cluster.stop().await.unwrap();
    for args in [&["backup"][..], &["dump", "--json"], &["schema", "check"], &["migrate", "up"]] {
        sweep.fails("main", &[], args);
    }
    sweep.reports("main", &[], &["status"]);

    // Everything the commands left behind.
    let server_log = sweep.setup.cluster.log_file().to_path_buf();
    sweep.look_at("the server log", &server_log);
    assert!(
        String::from_utf8_lossy(&sweep.seen.last().unwrap().1).contains("wal-push"),
        "the server log holds wal-push's trace"
    );
    let audit_path = sweep.setup.audit_path();
    sweep.look_at("the audit log", &audit_path);
    let stored = sweep.look_under("the repository's object", &server.data_dir().unwrap().join(&bucket));
    assert!(stored > 20, "the repository holds {stored} objects");
    let copied = sweep.look_under("the copy's file", &sweep.work.path().join("copy"));
    assert!(copied > 20, "the copy holds {copied} files");
    let state_dir = sweep.setup.state_dir();
    sweep.look_under("the state directory's file", &state_dir);
    sweep.look_under("a fetched WAL file", &sweep.work.path().join("fetched"));
    for request in receiver.received() {
        let headers = format!("{} {:?}", request.method, request.headers);
        sweep.seen.push(("a webhook request's headers".into(), headers.into_bytes()));
        sweep.seen.push(("a webhook request's body".into(), request.body));
    }
    assert!(!receiver.received().is_empty(), "notify test reached the webhook");

    let leaks: Vec<String> = sweep
        .seen
        .iter()
        .flat_map(|(what, bytes)| findings(bytes).into_iter().map(move |finding| format!("{what}: {finding}")))
        .collect();
    assert!(leaks.is_empty(), "{} leaks:\n{}", leaks.len(), leaks.join("\n\n"));
    eprintln!("{} runs, {} outputs and files checked, in {:?}", sweep.runs, sweep.seen.len(), began.elapsed());
}
