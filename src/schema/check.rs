//! `lifeboat schema check`: catalog queries that find what makes a schema fragile, each problem
//! with the object it concerns and the fix spelled out (the SQL to run where there is one).
//!
//! Every kind but one is an error (the command exits 1, `[migrate] schema_check = "fail"` fails
//! `up`): a table without a primary key, a foreign key without an index to support it, an
//! invalid index, a `NOT VALID` constraint not yet validated, rows that break a foreign key,
//! a sequence past `sequence_share_limit` of its range, two indexes that are the same, a
//! foreign-key column whose type differs from the column it references. An index whose columns
//! are a leading prefix of another's is a warning only: the shorter index is smaller and a
//! deliberate choice for some workloads.
//!
//! Foreign keys are checked, not assumed: rows can break a validated constraint too (a load with
//! `session_replication_role = replica`, triggers disabled). Each check is an anti-join that
//! stops at [`VIOLATION_CAP`] rows, so a broken table costs little; a sound one is read once.
//! Rows whose key columns are NULL are skipped as the constraint's MATCH type skips them.

use serde::Serialize;
use sqlx::postgres::PgConnection;
use sqlx::{AssertSqlSafe, Row as _};

/// How many breaking rows a foreign-key check counts before it stops.
pub const VIOLATION_CAP: usize = 1000;

/// How many breaking keys a problem quotes.
const EXAMPLES: usize = 3;

#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error("the schema check cannot read {what} from the catalog: {source}")]
    Catalog {
        what: &'static str,
        #[source]
        source: sqlx::Error,
    },
    #[error(
        "the schema check cannot look for rows of {table} without a match in {referenced} (foreign key \
         {constraint}): {source}"
    )]
    Violations {
        table: String,
        referenced: String,
        constraint: String,
        #[source]
        source: sqlx::Error,
    },
}

/// What the check looks at.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `[migrate] sequence_share_limit`: a sequence past this share of its range is a problem.
    pub sequence_share_limit: f64,
    /// Schemas left out besides PostgreSQL's own (lifeboat's history tables' schemas).
    pub skip_schemas: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    MissingPrimaryKey,
    UnindexedForeignKey,
    InvalidIndex,
    NotValidConstraint,
    ForeignKeyViolation,
    SequenceNearLimit,
    DuplicateIndex,
    OverlappingIndex,
    ForeignKeyTypeMismatch,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::MissingPrimaryKey => "missing-primary-key",
            Kind::UnindexedForeignKey => "unindexed-foreign-key",
            Kind::InvalidIndex => "invalid-index",
            Kind::NotValidConstraint => "not-valid-constraint",
            Kind::ForeignKeyViolation => "foreign-key-violation",
            Kind::SequenceNearLimit => "sequence-near-limit",
            Kind::DuplicateIndex => "duplicate-index",
            Kind::OverlappingIndex => "overlapping-index",
            Kind::ForeignKeyTypeMismatch => "foreign-key-type-mismatch",
        }
    }

    pub fn severity(self) -> Severity {
        match self {
            Kind::OverlappingIndex => Severity::Warning,
            _ => Severity::Error,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
        }
    }
}

/// One problem: its kind, the object (`schema.table`, `schema.index`, `schema.table.column`,
/// `schema.table.constraint`, quoted where PostgreSQL would need it), what is wrong, and the fix.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Problem {
    pub kind: Kind,
    pub severity: Severity,
    pub object: String,
    pub message: String,
    pub fix: String,
}

impl Problem {
    fn new(kind: Kind, object: String, message: String, fix: String) -> Problem {
        Problem { kind, severity: kind.severity(), object, message, fix }
    }
}

/// Every problem of the connected database, grouped by kind, each kind ordered by object.
pub async fn check(conn: &mut PgConnection, settings: &Settings) -> Result<Vec<Problem>, CheckError> {
    let skip = &settings.skip_schemas;
    let mut problems = missing_primary_keys(conn, skip).await?;
    let foreign_keys = foreign_keys(conn, skip).await?;
    problems.extend(foreign_keys.iter().filter(|key| !key.indexed).map(ForeignKey::unindexed));
    problems.extend(invalid_indexes(conn, skip).await?);
    problems.extend(not_valid_constraints(conn, skip).await?);
    for key in &foreign_keys {
        problems.extend(key.violations(conn).await?);
    }
    problems.extend(sequences(conn, skip, settings.sequence_share_limit).await?);
    problems.extend(duplicate_indexes(conn, skip).await?);
    problems.extend(overlapping_indexes(conn, skip).await?);
    problems.extend(foreign_keys.iter().flat_map(ForeignKey::type_mismatches));
    Ok(problems)
}

/// The schemas no check looks into: PostgreSQL's own and `skip` (bound as `$1`).
const USER_SCHEMA: &str = "n.nspname <> ALL ($1) AND n.nspname NOT LIKE 'pg\\_%' AND n.nspname <> 'information_schema'";

fn catalog(what: &'static str) -> impl FnOnce(sqlx::Error) -> CheckError {
    move |source| CheckError::Catalog { what, source }
}

async fn missing_primary_keys(conn: &mut PgConnection, skip: &[String]) -> Result<Vec<Problem>, CheckError> {
    // A unique b-tree index over NOT NULL columns can become the primary key as it is.
    let sql = format!(
        "SELECT format('%I.%I', n.nspname, c.relname) AS object, format('%I', c.relname || '_pkey') AS pkey,
                (SELECT format('%I', ic.relname) FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid
                  WHERE i.indrelid = c.oid AND i.indisunique AND i.indisvalid AND i.indpred IS NULL
                    AND i.indexprs IS NULL AND i.indnatts = i.indnkeyatts
                    AND ic.relam = (SELECT oid FROM pg_am WHERE amname = 'btree')
                    AND NOT EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = c.oid
                                     AND a.attnum = ANY (i.indkey::int2[]) AND NOT a.attnotnull)
                  ORDER BY i.indnatts, ic.relname LIMIT 1) AS unique_index
           FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
          WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition AND {USER_SCHEMA}
            AND NOT EXISTS (SELECT 1 FROM pg_constraint p WHERE p.conrelid = c.oid AND p.contype = 'p')
          ORDER BY 1"
    );
    let rows = sqlx::query(AssertSqlSafe(sql)).bind(skip).fetch_all(&mut *conn).await.map_err(catalog("the tables"))?;
    rows.iter()
        .map(|row| {
            let object: String = row.try_get("object")?;
            let pkey: String = row.try_get("pkey")?;
            let unique: Option<String> = row.try_get("unique_index")?;
            let fix = match &unique {
                Some(index) => format!("ALTER TABLE {object} ADD CONSTRAINT {pkey} PRIMARY KEY USING INDEX {index};"),
                None => format!(
                    "ALTER TABLE {object} ADD PRIMARY KEY (<the columns that identify a row>); or, with no such \
                     columns: ALTER TABLE {object} ADD COLUMN id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY; \
                     (rewrites the table)"
                ),
            };
            let message = format!(
                "table {object} has no primary key: its rows cannot be told apart (logical replication cannot \
                 send its updates and deletes, tools cannot address one row){}",
                unique
                    .map(|index| format!("; unique index {index} on NOT NULL columns can become it"))
                    .unwrap_or_default()
            );
            Ok(Problem::new(Kind::MissingPrimaryKey, object, message, fix))
        })
        .collect::<Result<_, sqlx::Error>>()
        .map_err(catalog("the tables"))
}

/// A foreign key as the checks need it; names quoted for SQL.
#[derive(Debug)]
struct ForeignKey {
    table: String,
    referenced: String,
    name: String,
    validated: bool,
    /// `confmatchtype`: `f` (MATCH FULL), `s` (MATCH SIMPLE) or `p` (MATCH PARTIAL, unimplemented
    /// by PostgreSQL).
    full: bool,
    columns: Vec<String>,
    referenced_columns: Vec<String>,
    types: Vec<String>,
    referenced_types: Vec<String>,
    indexed: bool,
}

async fn foreign_keys(conn: &mut PgConnection, skip: &[String]) -> Result<Vec<ForeignKey>, CheckError> {
    // An index supports the key when its leading columns are the key's columns, in any order.
    let sql = format!(
        "SELECT format('%I.%I', n.nspname, c.relname) AS table_name,
                format('%I.%I', fn.nspname, fc.relname) AS referenced,
                format('%I', co.conname) AS name, co.convalidated, co.confmatchtype = 'f' AS full_match,
                ARRAY(SELECT format('%I', a.attname) FROM unnest(co.conkey) WITH ORDINALITY k(num, ord)
                        JOIN pg_attribute a ON a.attrelid = co.conrelid AND a.attnum = k.num ORDER BY k.ord) AS columns,
                ARRAY(SELECT format('%I', a.attname) FROM unnest(co.confkey) WITH ORDINALITY k(num, ord)
                        JOIN pg_attribute a ON a.attrelid = co.confrelid AND a.attnum = k.num ORDER BY k.ord)
                  AS referenced_columns,
                ARRAY(SELECT format_type(a.atttypid, a.atttypmod) FROM unnest(co.conkey) WITH ORDINALITY k(num, ord)
                        JOIN pg_attribute a ON a.attrelid = co.conrelid AND a.attnum = k.num ORDER BY k.ord) AS types,
                ARRAY(SELECT format_type(a.atttypid, a.atttypmod) FROM unnest(co.confkey) WITH ORDINALITY k(num, ord)
                        JOIN pg_attribute a ON a.attrelid = co.confrelid AND a.attnum = k.num ORDER BY k.ord)
                  AS referenced_types,
                EXISTS (SELECT 1 FROM pg_index i
                         WHERE i.indrelid = co.conrelid AND i.indisvalid AND i.indpred IS NULL
                           AND i.indnkeyatts >= cardinality(co.conkey)
                           AND (SELECT array_agg(x ORDER BY x) FROM unnest(
                                  (string_to_array(i.indkey::text, ' ')::int2[])[1:cardinality(co.conkey)]) x)
                             = (SELECT array_agg(x ORDER BY x) FROM unnest(co.conkey) x)) AS indexed
           FROM pg_constraint co
           JOIN pg_class c ON c.oid = co.conrelid JOIN pg_namespace n ON n.oid = c.relnamespace
           JOIN pg_class fc ON fc.oid = co.confrelid JOIN pg_namespace fn ON fn.oid = fc.relnamespace
          WHERE co.contype = 'f' AND co.conparentid = 0 AND {USER_SCHEMA}
          ORDER BY 1, 3"
    );
    let rows =
        sqlx::query(AssertSqlSafe(sql)).bind(skip).fetch_all(&mut *conn).await.map_err(catalog("the foreign keys"))?;
    rows.iter()
        .map(|row| {
            Ok(ForeignKey {
                table: row.try_get("table_name")?,
                referenced: row.try_get("referenced")?,
                name: row.try_get("name")?,
                validated: row.try_get("convalidated")?,
                full: row.try_get("full_match")?,
                columns: row.try_get("columns")?,
                referenced_columns: row.try_get("referenced_columns")?,
                types: row.try_get("types")?,
                referenced_types: row.try_get("referenced_types")?,
                indexed: row.try_get("indexed")?,
            })
        })
        .collect::<Result<_, sqlx::Error>>()
        .map_err(catalog("the foreign keys"))
}

impl ForeignKey {
    fn object(&self) -> String {
        format!("{}.{}", self.table, self.name)
    }

    fn unindexed(&self) -> Problem {
        let columns = self.columns.join(", ");
        Problem::new(
            Kind::UnindexedForeignKey,
            self.object(),
            format!(
                "foreign key {} of {} ({columns}) has no index on those columns: each delete or key update in {} \
                 scans {} in full, and joins on the key cannot use an index",
                self.name, self.table, self.referenced, self.table
            ),
            format!("CREATE INDEX CONCURRENTLY ON {} ({columns});", self.table),
        )
    }

    /// The condition a row of the referencing table (alias `c`) must meet to be checked: MATCH
    /// SIMPLE skips a row with any key column NULL, MATCH FULL one with all of them NULL.
    fn checked_rows(&self) -> String {
        let nulls: Vec<String> = self.columns.iter().map(|column| format!("c.{column} IS NULL")).collect();
        if self.full { format!("NOT ({})", nulls.join(" AND ")) } else { format!("NOT ({})", nulls.join(" OR ")) }
    }

    fn orphans_query(&self) -> String {
        let matches: Vec<String> = self
            .columns
            .iter()
            .zip(&self.referenced_columns)
            .map(|(column, referenced)| format!("p.{referenced} = c.{column}"))
            .collect();
        format!(
            "SELECT {{}} FROM {} c WHERE {} AND NOT EXISTS (SELECT 1 FROM {} p WHERE {})",
            self.table,
            self.checked_rows(),
            self.referenced,
            matches.join(" AND ")
        )
    }

    async fn violations(&self, conn: &mut PgConnection) -> Result<Option<Problem>, CheckError> {
        let keys: Vec<String> = self.columns.iter().map(|column| format!("c.{column}")).collect();
        let sql = format!(
            "{} LIMIT {}",
            self.orphans_query().replace("{}", &format!("ROW({})::text", keys.join(", "))),
            VIOLATION_CAP + 1
        );
        let found: Vec<String> =
            sqlx::query_scalar(AssertSqlSafe(sql)).fetch_all(&mut *conn).await.map_err(|source| {
                CheckError::Violations {
                    table: self.table.clone(),
                    referenced: self.referenced.clone(),
                    constraint: self.name.clone(),
                    source,
                }
            })?;
        if found.is_empty() {
            return Ok(None);
        }
        let count = if found.len() > VIOLATION_CAP {
            format!("at least {VIOLATION_CAP} rows")
        } else if found.len() == 1 {
            "1 row".to_owned()
        } else {
            format!("{} rows", found.len())
        };
        let examples: Vec<&str> = found.iter().take(EXAMPLES).map(String::as_str).collect();
        let state = if self.validated {
            "although the constraint is validated (rows loaded with triggers disabled or session_replication_role = \
             replica)"
        } else {
            "(the constraint is NOT VALID, so PostgreSQL never checked the rows it had when it was added)"
        };
        let mut fix = format!(
            "list them: {}; then insert the missing rows into {}, or set the key of these rows to NULL, or delete \
             them",
            self.orphans_query().replace("{}", "c.*"),
            self.referenced
        );
        if !self.validated {
            fix.push_str(&format!("; then: ALTER TABLE {} VALIDATE CONSTRAINT {};", self.table, self.name));
        }
        Ok(Some(Problem::new(
            Kind::ForeignKeyViolation,
            self.object(),
            format!(
                "{count} of {} have a key ({}) with no match in {} {state}; for example {}",
                self.table,
                self.columns.join(", "),
                self.referenced,
                examples.join(", ")
            ),
            fix,
        )))
    }

    fn type_mismatches(&self) -> Vec<Problem> {
        let mut problems = Vec::new();
        for index in 0..self.columns.len() {
            let (column, referenced) = (&self.columns[index], &self.referenced_columns[index]);
            let (ty, referenced_ty) = (&self.types[index], &self.referenced_types[index]);
            if ty == referenced_ty {
                continue;
            }
            problems.push(Problem::new(
                Kind::ForeignKeyTypeMismatch,
                format!("{}.{column}", self.table),
                format!(
                    "column {}.{column} is {ty} but references {}.{referenced}, which is {referenced_ty} (foreign key \
                     {}): the key may not fit, and each comparison converts",
                    self.table, self.referenced, self.name
                ),
                format!(
                    "ALTER TABLE {} ALTER COLUMN {column} TYPE {referenced_ty}; (rewrites the table under an ACCESS \
                     EXCLUSIVE lock: on a large table add a new column, backfill it in batches, then swap)",
                    self.table
                ),
            ));
        }
        problems
    }
}

async fn invalid_indexes(conn: &mut PgConnection, skip: &[String]) -> Result<Vec<Problem>, CheckError> {
    let sql = format!(
        "SELECT format('%I.%I', n.nspname, ic.relname) AS object, format('%I.%I', tn.nspname, c.relname) AS table_name
           FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid JOIN pg_namespace n ON n.oid = ic.relnamespace
           JOIN pg_class c ON c.oid = i.indrelid JOIN pg_namespace tn ON tn.oid = c.relnamespace
          WHERE NOT i.indisvalid AND {USER_SCHEMA}
          ORDER BY 1"
    );
    let rows =
        sqlx::query(AssertSqlSafe(sql)).bind(skip).fetch_all(&mut *conn).await.map_err(catalog("the indexes"))?;
    rows.iter()
        .map(|row| {
            let object: String = row.try_get("object")?;
            let table: String = row.try_get("table_name")?;
            Ok(Problem::new(
                Kind::InvalidIndex,
                object.clone(),
                format!(
                    "index {object} on {table} is invalid (a CREATE INDEX CONCURRENTLY or REINDEX CONCURRENTLY that \
                     failed, or one still running): queries do not use it, yet every write to {table} updates it"
                ),
                format!(
                    "REINDEX INDEX CONCURRENTLY {object}; (or DROP INDEX CONCURRENTLY {object}; if it is not wanted)"
                ),
            ))
        })
        .collect::<Result<_, sqlx::Error>>()
        .map_err(catalog("the indexes"))
}

async fn not_valid_constraints(conn: &mut PgConnection, skip: &[String]) -> Result<Vec<Problem>, CheckError> {
    let sql = format!(
        "SELECT format('%I.%I', n.nspname, c.relname) AS table_name, format('%I', co.conname) AS name,
                CASE co.contype WHEN 'f' THEN 'foreign key' ELSE 'check constraint' END AS what
           FROM pg_constraint co JOIN pg_class c ON c.oid = co.conrelid JOIN pg_namespace n ON n.oid = c.relnamespace
          WHERE NOT co.convalidated AND co.contype IN ('f', 'c') AND co.conparentid = 0 AND {USER_SCHEMA}
          ORDER BY 1, 2"
    );
    let rows =
        sqlx::query(AssertSqlSafe(sql)).bind(skip).fetch_all(&mut *conn).await.map_err(catalog("the constraints"))?;
    rows.iter()
        .map(|row| {
            let table: String = row.try_get("table_name")?;
            let name: String = row.try_get("name")?;
            let what: String = row.try_get("what")?;
            Ok(Problem::new(
                Kind::NotValidConstraint,
                format!("{table}.{name}"),
                format!(
                    "{what} {name} of {table} was added NOT VALID and never validated: new rows are checked, the rows \
                     it found are not, and the planner cannot rely on it"
                ),
                format!(
                    "ALTER TABLE {table} VALIDATE CONSTRAINT {name}; (takes only a SHARE UPDATE EXCLUSIVE lock; run it \
                     in its own migration)"
                ),
            ))
        })
        .collect::<Result<_, sqlx::Error>>()
        .map_err(catalog("the constraints"))
}

/// The range of a column type a sequence fills, when it is narrower than bigint's.
fn column_range(type_name: &str) -> Option<(i64, i64)> {
    match type_name {
        "smallint" => Some((i16::MIN.into(), i16::MAX.into())),
        "integer" => Some((i32::MIN.into(), i32::MAX.into())),
        _ => None,
    }
}

async fn sequences(conn: &mut PgConnection, skip: &[String], limit: f64) -> Result<Vec<Problem>, CheckError> {
    // The column a sequence fills (serial, identity, OWNED BY) narrows its range when its type is
    // narrower: an integer column overflows at 2^31 whatever the sequence's own type.
    let sql = format!(
        "SELECT format('%I.%I', s.schemaname, s.sequencename) AS object, s.last_value, s.min_value, s.max_value,
                s.increment_by, s.data_type::text AS data_type, col.object AS column_name, col.type_name,
                col.table_name, col.attname
           FROM pg_sequences s
           JOIN pg_namespace n ON n.nspname = s.schemaname
           JOIN pg_class sc ON sc.relnamespace = n.oid AND sc.relname = s.sequencename
           LEFT JOIN LATERAL (
                SELECT format('%I.%I.%I', tn.nspname, t.relname, a.attname) AS object,
                       format('%I.%I', tn.nspname, t.relname) AS table_name, format('%I', a.attname) AS attname,
                       format_type(a.atttypid, NULL) AS type_name
                  FROM pg_depend d JOIN pg_class t ON t.oid = d.refobjid
                  JOIN pg_namespace tn ON tn.oid = t.relnamespace
                  JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = d.refobjsubid
                 WHERE d.classid = 'pg_class'::regclass AND d.objid = sc.oid
                   AND d.refclassid = 'pg_class'::regclass AND d.deptype IN ('a', 'i') AND d.refobjsubid > 0
                 LIMIT 1) col ON true
          WHERE s.last_value IS NOT NULL AND NOT s.cycle AND {USER_SCHEMA}
          ORDER BY 1"
    );
    let rows =
        sqlx::query(AssertSqlSafe(sql)).bind(skip).fetch_all(&mut *conn).await.map_err(catalog("the sequences"))?;
    let mut problems = Vec::new();
    for row in &rows {
        let read = || -> Result<_, sqlx::Error> {
            Ok((
                row.try_get::<String, _>("object")?,
                row.try_get::<i64, _>("last_value")?,
                row.try_get::<i64, _>("min_value")?,
                row.try_get::<i64, _>("max_value")?,
                row.try_get::<i64, _>("increment_by")?,
                row.try_get::<String, _>("data_type")?,
                row.try_get::<Option<String>, _>("column_name")?,
                row.try_get::<Option<String>, _>("type_name")?,
                row.try_get::<Option<String>, _>("table_name")?,
                row.try_get::<Option<String>, _>("attname")?,
            ))
        };
        let (object, last, min, max, increment, data_type, column, column_type, table, attname) =
            read().map_err(catalog("the sequences"))?;
        let narrow = column_type.as_deref().and_then(column_range);
        // The end the sequence runs towards, and whether the column's type sets it.
        let (start, end, by_column) = if increment > 0 {
            match narrow {
                Some((_, column_max)) if column_max < max => (min, column_max, true),
                _ => (min, max, false),
            }
        } else {
            match narrow {
                Some((column_min, _)) if column_min > min => (max, column_min, true),
                _ => (max, min, false),
            }
        };
        let span = (end as f64 - start as f64).abs();
        let used = (last as f64 - start as f64).abs();
        let share = if span > 0.0 { used / span } else { 1.0 };
        if share <= limit {
            continue;
        }
        let percent = format!("{:.1} %", share * 100.0);
        let shown_limit = format!("{:.0} %", limit * 100.0);
        let (message, fix) = match (by_column, &column, &table, &attname) {
            (true, Some(column), Some(table), Some(attname)) => (
                format!(
                    "sequence {object} is at {last}, {percent} of what column {column} ({}) can hold (limit \
                     {end}); past sequence_share_limit = {shown_limit}: inserts fail once it passes {end}",
                    column_type.as_deref().unwrap_or_default()
                ),
                format!(
                    "ALTER TABLE {table} ALTER COLUMN {attname} TYPE bigint;{} (rewrites the table under an ACCESS \
                     EXCLUSIVE lock: on a large table add a bigint column, backfill it in batches, then swap)",
                    if data_type == "bigint" { String::new() } else { format!(" ALTER SEQUENCE {object} AS bigint;") }
                ),
            ),
            _ => (
                format!(
                    "sequence {object} ({data_type}) is at {last}, {percent} of its range up to {end}; past \
                     sequence_share_limit = {shown_limit}: nextval fails once it passes {end}"
                ),
                if data_type == "bigint" && (end == i64::MAX || end == i64::MIN) {
                    format!(
                        "no wider type exists: plan new keys (a uuid column), or restart the sequence where keys are \
                         free: ALTER SEQUENCE {object} RESTART WITH <a free value>;"
                    )
                } else if data_type == "bigint" {
                    format!(
                        "ALTER SEQUENCE {object} {} (its own bound is narrower than bigint's)",
                        if increment > 0 { "NO MAXVALUE;" } else { "NO MINVALUE;" }
                    )
                } else {
                    let owner = match (&table, &attname) {
                        (Some(table), Some(attname)) => {
                            format!(" ALTER TABLE {table} ALTER COLUMN {attname} TYPE bigint; (rewrites the table)")
                        }
                        _ => String::new(),
                    };
                    format!(
                        "ALTER SEQUENCE {object} AS bigint {};{owner}",
                        if increment > 0 { "NO MAXVALUE" } else { "NO MINVALUE" }
                    )
                },
            ),
        };
        problems.push(Problem::new(Kind::SequenceNearLimit, object, message, fix));
    }
    Ok(problems)
}

async fn duplicate_indexes(conn: &mut PgConnection, skip: &[String]) -> Result<Vec<Problem>, CheckError> {
    // Same table, access method, columns, operator classes, collations, options, expressions and
    // predicate: one of the two does nothing but slow writes.
    let sql = format!(
        "SELECT format('%I.%I', n.nspname, a.relname) AS first, format('%I.%I', n.nspname, b.relname) AS second,
                format('%I.%I', tn.nspname, t.relname) AS table_name, pg_get_indexdef(ia.indexrelid) AS definition,
                (SELECT format('%I', conname) FROM pg_constraint WHERE conindid = ia.indexrelid
                    AND conrelid = ia.indrelid AND contype IN ('p', 'u', 'x') LIMIT 1) AS first_constraint,
                (SELECT format('%I', conname) FROM pg_constraint WHERE conindid = ib.indexrelid
                    AND conrelid = ib.indrelid AND contype IN ('p', 'u', 'x') LIMIT 1) AS second_constraint,
                ia.indisunique AS first_unique, ib.indisunique AS second_unique
           FROM pg_index ia JOIN pg_index ib ON ib.indrelid = ia.indrelid AND ia.indexrelid < ib.indexrelid
           JOIN pg_class a ON a.oid = ia.indexrelid JOIN pg_class b ON b.oid = ib.indexrelid
           JOIN pg_namespace n ON n.oid = a.relnamespace
           JOIN pg_class t ON t.oid = ia.indrelid JOIN pg_namespace tn ON tn.oid = t.relnamespace
          WHERE a.relam = b.relam AND ia.indisvalid AND ib.indisvalid AND NOT t.relispartition
            AND ia.indnatts = ib.indnatts AND ia.indnkeyatts = ib.indnkeyatts
            AND ia.indkey::text = ib.indkey::text AND ia.indclass::text = ib.indclass::text
            AND ia.indcollation::text = ib.indcollation::text AND ia.indoption::text = ib.indoption::text
            AND coalesce(pg_get_expr(ia.indexprs, ia.indrelid), '') = coalesce(pg_get_expr(ib.indexprs, ib.indrelid), '')
            AND coalesce(pg_get_expr(ia.indpred, ia.indrelid), '') = coalesce(pg_get_expr(ib.indpred, ib.indrelid), '')
            AND {}
          ORDER BY 3, 1, 2",
        USER_SCHEMA.replace("n.nspname", "tn.nspname")
    );
    let rows =
        sqlx::query(AssertSqlSafe(sql)).bind(skip).fetch_all(&mut *conn).await.map_err(catalog("the indexes"))?;
    rows.iter()
        .map(|row| {
            let first: String = row.try_get("first")?;
            let second: String = row.try_get("second")?;
            let table: String = row.try_get("table_name")?;
            let definition: String = row.try_get("definition")?;
            let first_constraint: Option<String> = row.try_get("first_constraint")?;
            let second_constraint: Option<String> = row.try_get("second_constraint")?;
            let first_needed = first_constraint.is_some() || row.try_get::<bool, _>("first_unique")?;
            let second_needed = second_constraint.is_some() || row.try_get::<bool, _>("second_unique")?;
            // Keep the one a constraint or uniqueness needs; between equals, the older.
            let (keep, drop, drop_constraint) = if second_needed && !first_needed {
                (&second, &first, first_constraint)
            } else {
                (&first, &second, second_constraint)
            };
            let fix = match drop_constraint {
                Some(constraint) => format!("ALTER TABLE {table} DROP CONSTRAINT {constraint};"),
                None => format!("DROP INDEX CONCURRENTLY {drop};"),
            };
            Ok(Problem::new(
                Kind::DuplicateIndex,
                drop.clone(),
                format!(
                    "index {drop} on {table} is the same as {keep} ({}): it doubles the cost of every write for \
                     nothing",
                    definition.split_once(" USING ").map_or(definition.as_str(), |(_, rest)| rest)
                ),
                fix,
            ))
        })
        .collect::<Result<_, sqlx::Error>>()
        .map_err(catalog("the indexes"))
}

async fn overlapping_indexes(conn: &mut PgConnection, skip: &[String]) -> Result<Vec<Problem>, CheckError> {
    // A non-unique b-tree whose key columns (with their operator classes and options) are the
    // leading columns of a longer b-tree on the same table: the longer one serves its lookups.
    let sql = format!(
        "SELECT format('%I.%I', n.nspname, a.relname) AS shorter, format('%I.%I', n.nspname, b.relname) AS longer,
                format('%I.%I', tn.nspname, t.relname) AS table_name,
                pg_get_indexdef(ia.indexrelid) AS shorter_definition, pg_get_indexdef(ib.indexrelid) AS longer_definition
           FROM pg_index ia JOIN pg_index ib ON ib.indrelid = ia.indrelid AND ib.indexrelid <> ia.indexrelid
           JOIN pg_class a ON a.oid = ia.indexrelid JOIN pg_class b ON b.oid = ib.indexrelid
           JOIN pg_namespace n ON n.oid = a.relnamespace
           JOIN pg_class t ON t.oid = ia.indrelid JOIN pg_namespace tn ON tn.oid = t.relnamespace
          WHERE NOT ia.indisunique AND ia.indisvalid AND ib.indisvalid AND NOT t.relispartition
            AND a.relam = (SELECT oid FROM pg_am WHERE amname = 'btree') AND b.relam = a.relam
            AND ia.indexprs IS NULL AND ib.indexprs IS NULL AND ia.indpred IS NULL AND ib.indpred IS NULL
            AND ia.indnatts = ia.indnkeyatts AND ia.indnkeyatts < ib.indnkeyatts
            AND (string_to_array(ib.indkey::text, ' '))[1:ia.indnkeyatts]
                = (string_to_array(ia.indkey::text, ' '))[1:ia.indnkeyatts]
            AND (string_to_array(ib.indclass::text, ' '))[1:ia.indnkeyatts]
                = (string_to_array(ia.indclass::text, ' '))[1:ia.indnkeyatts]
            AND (string_to_array(ib.indoption::text, ' '))[1:ia.indnkeyatts]
                = (string_to_array(ia.indoption::text, ' '))[1:ia.indnkeyatts]
            AND NOT EXISTS (SELECT 1 FROM pg_constraint WHERE conindid = ia.indexrelid AND conrelid = ia.indrelid)
            AND {}
          ORDER BY 3, 1, 2",
        USER_SCHEMA.replace("n.nspname", "tn.nspname")
    );
    let rows =
        sqlx::query(AssertSqlSafe(sql)).bind(skip).fetch_all(&mut *conn).await.map_err(catalog("the indexes"))?;
    let columns = |definition: &str| definition.split_once(" USING ").map_or(definition, |(_, rest)| rest).to_owned();
    rows.iter()
        .map(|row| {
            let shorter: String = row.try_get("shorter")?;
            let longer: String = row.try_get("longer")?;
            let table: String = row.try_get("table_name")?;
            let shorter_definition: String = row.try_get("shorter_definition")?;
            let longer_definition: String = row.try_get("longer_definition")?;
            Ok(Problem::new(
                Kind::OverlappingIndex,
                shorter.clone(),
                format!(
                    "index {shorter} on {table} ({}) covers the leading columns of {longer} ({}), which serves the \
                     same lookups; keep it only if its smaller size matters",
                    columns(&shorter_definition),
                    columns(&longer_definition)
                ),
                format!("DROP INDEX CONCURRENTLY {shorter};"),
            ))
        })
        .collect::<Result<_, sqlx::Error>>()
        .map_err(catalog("the indexes"))
}
