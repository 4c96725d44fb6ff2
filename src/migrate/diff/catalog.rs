//! Reading a database's schema from `pg_catalog` into the [`Schema`] model. System schemas,
//! objects that belong to an extension, partitions and lifeboat's own history table (and its
//! schema when that is `lifeboat`) are left out: they are not the application's schema.

use std::collections::BTreeSet;

use sqlx::postgres::PgConnection;

use super::model::{Column, Constraint, ConstraintKind, Enum, Identity, Index, Schema, Sequence, Table, View};
use crate::config::TableName;

/// What not to read: lifeboat's history table, and its schema when lifeboat owns it.
#[derive(Debug, Clone)]
pub struct Excluded {
    pub schema: Option<String>,
    pub table: TableName,
}

impl Excluded {
    /// The history table of an environment; its schema too when it is `lifeboat` (lifeboat
    /// creates that schema for it).
    pub fn history(table: &TableName) -> Excluded {
        Excluded { schema: (table.schema == "lifeboat").then(|| table.schema.clone()), table: table.clone() }
    }
}

/// The condition a relation `c` in namespace `n` meets to be read ($1: excluded schema or '',
/// $2 and $3: the excluded table).
const RELATION: &str = "n.nspname NOT LIKE 'pg\\_%' AND n.nspname <> 'information_schema' AND n.nspname <> $1 \
     AND NOT (n.nspname = $2 AND c.relname = $3) \
     AND NOT EXISTS (SELECT 1 FROM pg_depend e WHERE e.classid = 'pg_class'::regclass AND e.objid = c.oid \
                     AND e.deptype = 'e')";

/// `schema.name`, quoted as PostgreSQL would, for namespace alias `n` and object name `name`.
fn qualified(namespace: &str, name: &str) -> String {
    format!("quote_ident({namespace}.nspname) || '.' || quote_ident({name})")
}

/// The schema of the database `conn` is connected to.
pub async fn read(conn: &mut PgConnection, excluded: &Excluded) -> Result<Schema, sqlx::Error> {
    let excluded_schema = excluded.schema.clone().unwrap_or_default();
    let (table_schema, table_name) = (excluded.table.schema.clone(), excluded.table.name.clone());
    macro_rules! bound {
        ($query:expr) => {
            $query.bind(excluded_schema.clone()).bind(table_schema.clone()).bind(table_name.clone())
        };
    }
    // With an empty search path PostgreSQL qualifies every name it prints (types, sequences in
    // defaults, tables in views), so the generated DDL means the same under any search path.
    sqlx::query("SELECT pg_catalog.set_config('search_path', '', false)").execute(&mut *conn).await?;
    let mut schema = Schema::default();

    let sql = "SELECT quote_ident(n.nspname) FROM pg_namespace n WHERE n.nspname NOT LIKE 'pg\\_%' \
               AND n.nspname <> 'information_schema' AND n.nspname <> $1 AND NOT EXISTS (SELECT 1 FROM pg_depend e \
               WHERE e.classid = 'pg_namespace'::regclass AND e.objid = n.oid AND e.deptype = 'e')";
    let schemas: Vec<String> = sqlx::query_scalar(sql).bind(excluded_schema.clone()).fetch_all(&mut *conn).await?;
    schema.schemas = schemas.into_iter().collect();

    let sql = format!(
        "SELECT {}, format_type(t.oid, NULL), array_agg(e.enumlabel::text ORDER BY e.enumsortorder) \
         FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace JOIN pg_enum e ON e.enumtypid = t.oid \
         WHERE n.nspname NOT LIKE 'pg\\_%' AND n.nspname <> 'information_schema' AND n.nspname <> $1 \
         AND NOT EXISTS (SELECT 1 FROM pg_depend x WHERE x.classid = 'pg_type'::regclass AND x.objid = t.oid \
                         AND x.deptype = 'e') \
         GROUP BY 1, 2",
        qualified("n", "t.typname")
    );
    let rows: Vec<(String, String, Vec<String>)> =
        sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(excluded_schema.clone()).fetch_all(&mut *conn).await?;
    for (name, type_name, labels) in rows {
        schema.enums.insert(name.clone(), Enum { name, type_name, labels });
    }

    let sql = format!(
        "SELECT {}, quote_ident(a.attname), format_type(a.atttypid, a.atttypmod), a.attnotnull, \
                CASE WHEN a.attgenerated = '' THEN pg_get_expr(d.adbin, d.adrelid) END, a.attidentity::text, \
                CASE WHEN a.attgenerated <> '' THEN pg_get_expr(d.adbin, d.adrelid) END \
         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
         LEFT JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped \
         LEFT JOIN pg_attrdef d ON d.adrelid = c.oid AND d.adnum = a.attnum \
         WHERE c.relkind = 'r' AND NOT c.relispartition AND {RELATION} \
         ORDER BY 1, a.attnum",
        qualified("n", "c.relname")
    );
    type ColumnRow =
        (String, Option<String>, Option<String>, Option<bool>, Option<String>, Option<String>, Option<String>);
    let rows: Vec<ColumnRow> = bound!(sqlx::query_as(sqlx::AssertSqlSafe(sql))).fetch_all(&mut *conn).await?;
    for (table, column, data_type, not_null, default, identity, generated) in rows {
        let entry = schema.tables.entry(table.clone()).or_insert_with(|| Table { name: table, columns: Vec::new() });
        let (Some(name), Some(data_type)) = (column, data_type) else { continue };
        let identity = match identity.as_deref() {
            Some("a") => Some(Identity::Always),
            Some("d") => Some(Identity::ByDefault),
            _ => None,
        };
        entry.columns.push(Column {
            name,
            data_type,
            not_null: not_null.unwrap_or(false),
            default,
            identity,
            generated,
        });
    }

    let owner = "FROM pg_depend d JOIN pg_class t ON t.oid = d.refobjid JOIN pg_namespace tn ON tn.oid = \
                 t.relnamespace JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = d.refobjsubid \
                 WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.refclassid = 'pg_class'::regclass \
                 AND d.deptype = 'a' AND d.refobjsubid > 0";
    let sql = format!(
        "SELECT {}, format_type(s.seqtypid, NULL), s.seqincrement, s.seqmin, s.seqmax, s.seqstart, s.seqcache, \
                s.seqcycle, (SELECT {} {owner}), (SELECT quote_ident(a.attname) {owner}) \
         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace JOIN pg_sequence s ON s.seqrelid = c.oid \
         WHERE c.relkind = 'S' AND {RELATION} \
         AND NOT EXISTS (SELECT 1 FROM pg_depend i WHERE i.classid = 'pg_class'::regclass AND i.objid = c.oid \
                         AND i.deptype = 'i')",
        qualified("n", "c.relname"),
        qualified("tn", "t.relname"),
    );
    type SequenceRow = (String, String, i64, i64, i64, i64, i64, bool, Option<String>, Option<String>);
    let rows: Vec<SequenceRow> = bound!(sqlx::query_as(sqlx::AssertSqlSafe(sql))).fetch_all(&mut *conn).await?;
    for (name, data_type, increment, min, max, start, cache, cycle, table, column) in rows {
        let owned_by = table.zip(column);
        schema
            .sequences
            .insert(name.clone(), Sequence { name, data_type, increment, min, max, start, cache, cycle, owned_by });
    }

    let sql = format!(
        "SELECT {}, {}, pg_get_indexdef(x.indexrelid) \
         FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid JOIN pg_class c ON c.oid = x.indrelid \
         JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE c.relkind = 'r' AND NOT c.relispartition AND {RELATION} \
         AND NOT EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conrelid = x.indrelid AND k.conindid = x.indexrelid \
                         AND k.contype IN ('p', 'u', 'x'))",
        qualified("n", "i.relname"),
        qualified("n", "c.relname"),
    );
    let rows: Vec<(String, String, String)> =
        bound!(sqlx::query_as(sqlx::AssertSqlSafe(sql))).fetch_all(&mut *conn).await?;
    for (name, table, definition) in rows {
        schema.indexes.insert(name.clone(), Index { name, table, definition });
    }

    let sql = format!(
        "SELECT {}, quote_ident(k.conname), k.contype::text, pg_get_constraintdef(k.oid), \
                (SELECT {} FROM pg_class r JOIN pg_namespace rn ON rn.oid = r.relnamespace WHERE r.oid = k.confrelid) \
         FROM pg_constraint k JOIN pg_class c ON c.oid = k.conrelid JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE k.contype IN ('p', 'u', 'c', 'f', 'x') AND k.conislocal AND c.relkind = 'r' \
         AND NOT c.relispartition AND {RELATION}",
        qualified("n", "c.relname"),
        qualified("rn", "r.relname"),
    );
    let rows: Vec<(String, String, String, String, Option<String>)> =
        bound!(sqlx::query_as(sqlx::AssertSqlSafe(sql))).fetch_all(&mut *conn).await?;
    for (table, name, kind, definition, references) in rows {
        let kind = match kind.as_str() {
            "p" => ConstraintKind::Primary,
            "u" => ConstraintKind::Unique,
            "c" => ConstraintKind::Check,
            "x" => ConstraintKind::Exclusion,
            _ => ConstraintKind::Foreign,
        };
        let references = references.filter(|_| kind == ConstraintKind::Foreign);
        schema
            .constraints
            .insert((table.clone(), name.clone()), Constraint { table, name, kind, definition, references });
    }

    let sql = format!(
        "SELECT {}, pg_get_viewdef(c.oid), \
                ARRAY(SELECT quote_ident(a.attname) FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attnum > 0 \
                      AND NOT a.attisdropped ORDER BY a.attnum), \
                ARRAY(SELECT format_type(a.atttypid, a.atttypmod) FROM pg_attribute a WHERE a.attrelid = c.oid \
                      AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum), \
                ARRAY(SELECT DISTINCT {} FROM pg_rewrite w JOIN pg_depend d ON d.classid = 'pg_rewrite'::regclass \
                      AND d.objid = w.oid AND d.refclassid = 'pg_class'::regclass JOIN pg_class r ON r.oid = d.refobjid \
                      JOIN pg_namespace rn ON rn.oid = r.relnamespace WHERE w.ev_class = c.oid AND r.oid <> c.oid) \
         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind = 'v' AND {RELATION}",
        qualified("n", "c.relname"),
        qualified("rn", "r.relname"),
    );
    type ViewRow = (String, String, Vec<String>, Vec<String>, Vec<String>);
    let rows: Vec<ViewRow> = bound!(sqlx::query_as(sqlx::AssertSqlSafe(sql))).fetch_all(&mut *conn).await?;
    for (name, definition, names, types, depends_on) in rows {
        let definition = definition.trim().trim_end_matches(';').trim_end().to_owned();
        let columns = names.into_iter().zip(types).collect();
        let depends_on: BTreeSet<String> = depends_on.into_iter().collect();
        schema.views.insert(name.clone(), View { name, definition, columns, depends_on });
    }
    Ok(schema)
}
