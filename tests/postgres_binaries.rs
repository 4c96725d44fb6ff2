//! Choosing PostgreSQL programs with real installations of several majors (what scripts/test
//! installs under LIFEBOAT_TEST_POSTGRES, and Debian's PostgreSQL 15 in /usr/lib/postgresql/15/bin):
//! - a PostgreSQL 13 server, which no `pg_amcheck` can check, is checked with amcheck through SQL:
//!   a healthy cluster passes, and one whose btree index block was overwritten fails, naming the
//!   index;
//! - a PostgreSQL 16 server is checked by PostgreSQL 18's `pg_amcheck` (a newer client program),
//!   taken from elsewhere when `cluster.bin_dir` holds only the server; with no fitting
//!   `pg_amcheck` anywhere the error says what is needed and what was found;
//! - server programs are taken of exactly the major, client programs of the major or newer.

use std::io::{Seek as _, SeekFrom, Write as _};
use std::path::{Path, PathBuf};

use lifeboat::config::AmcheckLevel;
use lifeboat::postgres::binaries::{Need, PgBinaries};
use lifeboat::postgres::cluster::{LocalCluster, LocalClusterOptions};
use lifeboat::verify::amcheck_cluster;
use sqlx::{Connection, PgConnection};

/// Where scripts/test installs PostgreSQL programs of each major.
const DEFAULT_ROOT: &str = "/var/cache/lifeboat-test/postgres";

/// The bin directory of `name` (a major such as "13", or "clients-18") under
/// LIFEBOAT_TEST_POSTGRES.
fn installed(name: &str) -> PathBuf {
    let root = std::env::var_os("LIFEBOAT_TEST_POSTGRES").map_or_else(|| PathBuf::from(DEFAULT_ROOT), PathBuf::from);
    let dir = root.join(name).join("bin");
    assert!(
        dir.join("postgres").is_file(),
        "no PostgreSQL {name} in {}: run scripts/test (it installs every major into {}), or point \
         LIFEBOAT_TEST_POSTGRES at where they are",
        dir.display(),
        root.display()
    );
    dir
}

/// A started cluster of the server programs in `bin` with database `shop`: table `t`, 2000 rows
/// and its primary key `t_pkey`.
async fn cluster_with_shop(bin: &Path) -> LocalCluster {
    let binaries = PgBinaries::at(bin).expect("the installed server programs answer --version");
    let cluster = LocalCluster::start_new(&binaries, LocalClusterOptions::default()).await.expect("start a cluster");
    let mut conn = PgConnection::connect_with(&cluster.connect_options()).await.unwrap();
    sqlx::raw_sql("CREATE DATABASE shop").execute(&mut conn).await.unwrap();
    conn.close().await.unwrap();
    let mut shop = PgConnection::connect_with(&cluster.connect_options().database("shop")).await.unwrap();
    sqlx::raw_sql(
        "CREATE TABLE t (id int PRIMARY KEY, v text NOT NULL); \
         INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, 2000) g; CHECKPOINT",
    )
    .execute(&mut shop)
    .await
    .unwrap();
    shop.close().await.unwrap();
    cluster
}

/// The file of `t_pkey` in `shop`.
async fn index_file(cluster: &LocalCluster) -> PathBuf {
    let mut shop = PgConnection::connect_with(&cluster.connect_options().database("shop")).await.unwrap();
    let relative: String =
        sqlx::query_scalar("SELECT pg_relation_filepath('t_pkey')").fetch_one(&mut shop).await.unwrap();
    shop.close().await.unwrap();
    cluster.data_dir().join(relative)
}

#[tokio::test]
async fn postgresql_13_is_checked_through_sql_and_a_damaged_index_fails_by_name() {
    let mut cluster = cluster_with_shop(&installed("13")).await;

    for level in [AmcheckLevel::Indexes, AmcheckLevel::HeapAllIndexed] {
        // Even with PostgreSQL 18's pg_amcheck at hand, 13 is checked through SQL.
        let amcheck = amcheck_cluster(&cluster, level, Some(&installed("clients-18"))).await.unwrap().unwrap();
        assert!(amcheck.passed, "{amcheck:?}");
        assert!(amcheck.output.starts_with("amcheck through SQL (PostgreSQL 13 has no pg_amcheck)"), "{amcheck:?}");
        assert!(amcheck.output.contains(" 0 failed"), "{amcheck:?}");
    }

    // Block 1 of t_pkey (block 0 is its metapage) overwritten with garbage while the server is down.
    let index = index_file(&cluster).await;
    cluster.stop().await.unwrap();
    let mut file = std::fs::OpenOptions::new().write(true).open(&index).unwrap();
    file.seek(SeekFrom::Start(8192)).unwrap();
    file.write_all(&[0x5a; 8192]).unwrap();
    file.sync_all().unwrap();
    cluster.start().await.unwrap();

    let amcheck = amcheck_cluster(&cluster, AmcheckLevel::Indexes, None).await.unwrap().unwrap();
    assert!(!amcheck.passed, "{amcheck:?}");
    assert!(amcheck.output.starts_with("amcheck through SQL"), "{amcheck:?}");
    assert!(amcheck.output.contains(r#"database "shop", index public.t_pkey: "#), "{amcheck:?}");
    assert!(amcheck.output.contains(" 1 failed"), "{amcheck:?}");
}

#[tokio::test]
async fn postgresql_16_is_checked_by_a_newer_pg_amcheck() {
    let cluster = cluster_with_shop(&installed("16")).await;
    let clients = installed("clients-18");

    let amcheck = amcheck_cluster(&cluster, AmcheckLevel::HeapAllIndexed, Some(&clients)).await.unwrap().unwrap();
    assert!(amcheck.passed, "{amcheck:?}");
    assert_eq!(amcheck.output, format!("pg_amcheck of PostgreSQL 18 ({})", clients.join("pg_amcheck").display()));

    // cluster.bin_dir holding only PostgreSQL 16's server: pg_amcheck is looked for elsewhere, and
    // nothing on this host but the test's PostgreSQL 18 clients is new enough.
    let failure = amcheck_cluster(&cluster, AmcheckLevel::Indexes, Some(&installed("16"))).await.unwrap_err();
    assert!(
        failure
            .message
            .contains("PostgreSQL 16's pg_amcheck (or a newer one) is needed for the restored scratch server"),
        "{failure:?}"
    );
    assert!(failure.message.contains("install postgresql-client-16"), "{failure:?}");
    assert!(failure.message.contains(&format!("cluster.bin_dir ({}: no pg_amcheck)", installed("16").display())));
}

#[test]
fn server_programs_are_of_exactly_the_major_and_clients_of_it_or_newer() {
    let v16 = installed("16");
    let clients = installed("clients-18");

    let server = PgBinaries::locate(Some(&v16), &Need::server(16, "backup b")).unwrap();
    assert_eq!((server.dir(), server.major()), (v16.as_path(), 16));

    // An explicit directory of another major is refused, naming both.
    let message = PgBinaries::locate(Some(&clients), &Need::server(16, "backup b")).unwrap_err().to_string();
    assert!(message.contains("holds postgres 18 (not 16)"), "{message}");

    // pg_dump 18 dumps a PostgreSQL 16 server; it cannot run a PostgreSQL 16 data directory.
    let dump = PgBinaries::locate(Some(&clients), &Need::clients(&["pg_dump", "pg_dumpall"], 16, "x")).unwrap();
    assert_eq!(dump.major(), 18);
    let message = PgBinaries::locate(Some(&clients), &Need::clients(&["pg_dump"], 19, "the server at x"))
        .unwrap_err()
        .to_string();
    assert!(message.contains("holds pg_dump 18 (too old)"), "{message}");
}
