//! The DDL that takes one [`Schema`] to another, in an order PostgreSQL accepts: views that
//! would be in the way are dropped first, then foreign keys, then the other constraints and
//! indexes that go; schemas, enum types and sequences are created before the tables that use
//! them, tables before their columns are changed, and tables, sequences, types and schemas are
//! dropped only once nothing uses them; constraints and indexes come back once every table and
//! column exists, foreign keys last among them, and views after everything they read.
//!
//! The same function writes both files of a migration: `changes(current, desired)` is the up
//! file and `changes(desired, current)` the down file.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use super::model::{Column, Constraint, ConstraintKind, Enum, Schema, Sequence, Table, View};

/// One statement of the generated file, with the warning written above it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub warning: Option<String>,
    pub sql: String,
}

/// What differs, by kind of object, in names as the generated DDL writes them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    pub tables_created: Vec<String>,
    pub tables_dropped: Vec<String>,
    pub tables_altered: Vec<String>,
    pub indexes_created: Vec<String>,
    pub indexes_dropped: Vec<String>,
    pub constraints_added: Vec<String>,
    pub constraints_dropped: Vec<String>,
    pub enums_created: Vec<String>,
    pub enums_altered: Vec<String>,
    pub enums_dropped: Vec<String>,
    pub sequences_created: Vec<String>,
    pub sequences_altered: Vec<String>,
    pub sequences_dropped: Vec<String>,
    pub views_created: Vec<String>,
    pub views_replaced: Vec<String>,
    pub views_dropped: Vec<String>,
}

impl Summary {
    /// "2 tables created, 1 altered; 3 indexes created; ..." (kinds with nothing are left out).
    pub fn line(&self) -> String {
        let groups: [(&str, [(&str, usize); 3]); 6] = [
            (
                "tables",
                [
                    ("created", self.tables_created.len()),
                    ("dropped", self.tables_dropped.len()),
                    ("altered", self.tables_altered.len()),
                ],
            ),
            ("indexes", [("created", self.indexes_created.len()), ("dropped", self.indexes_dropped.len()), ("", 0)]),
            (
                "constraints",
                [("added", self.constraints_added.len()), ("dropped", self.constraints_dropped.len()), ("", 0)],
            ),
            (
                "enums",
                [
                    ("created", self.enums_created.len()),
                    ("altered", self.enums_altered.len()),
                    ("dropped", self.enums_dropped.len()),
                ],
            ),
            (
                "sequences",
                [
                    ("created", self.sequences_created.len()),
                    ("altered", self.sequences_altered.len()),
                    ("dropped", self.sequences_dropped.len()),
                ],
            ),
            (
                "views",
                [
                    ("created", self.views_created.len()),
                    ("replaced", self.views_replaced.len()),
                    ("dropped", self.views_dropped.len()),
                ],
            ),
        ];
        let parts: Vec<String> = groups
            .iter()
            .filter_map(|(kind, counts)| {
                let said: Vec<String> = counts
                    .iter()
                    .filter(|(_, count)| *count > 0)
                    .map(|(verb, count)| format!("{count} {verb}"))
                    .collect();
                (!said.is_empty()).then(|| format!("{kind}: {}", said.join(", ")))
            })
            .collect();
        parts.join("; ")
    }
}

/// The statements that take `from` to `to`, what they change, and notes on what PostgreSQL
/// cannot do in place (column order).
#[derive(Debug, Clone, Default)]
pub struct Changes {
    pub statements: Vec<Change>,
    pub summary: Summary,
    pub notes: Vec<String>,
}

impl Changes {
    fn push(&mut self, sql: String) {
        self.statements.push(Change { warning: None, sql });
    }

    fn warn(&mut self, warning: String, sql: String) {
        self.statements.push(Change { warning: Some(warning), sql });
    }
}

/// A string as an SQL literal.
pub fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// How a column of an existing table changes.
struct ColumnPlan<'a> {
    added: Vec<&'a Column>,
    /// Generated columns whose expression changed: dropped and added again.
    readded: Vec<&'a Column>,
    dropped: Vec<&'a Column>,
    altered: Vec<(&'a Column, &'a Column)>,
}

impl ColumnPlan<'_> {
    fn new<'a>(from: &'a Table, to: &'a Table) -> ColumnPlan<'a> {
        let mut plan = ColumnPlan { added: Vec::new(), readded: Vec::new(), dropped: Vec::new(), altered: Vec::new() };
        for new in &to.columns {
            match from.column(&new.name) {
                None => plan.added.push(new),
                Some(old) if old.generated != new.generated => plan.readded.push(new),
                Some(old) if old != new => plan.altered.push((old, new)),
                Some(_) => {}
            }
        }
        plan.dropped = from.columns.iter().filter(|old| to.column(&old.name).is_none()).collect();
        plan
    }

    fn retypes(&self) -> bool {
        !self.dropped.is_empty()
            || !self.readded.is_empty()
            || self.altered.iter().any(|(old, new)| old.data_type != new.data_type)
    }

    fn is_empty(&self) -> bool {
        self.added.is_empty() && self.readded.is_empty() && self.dropped.is_empty() && self.altered.is_empty()
    }
}

/// Whether column type `data_type` is enum `item` or an array of it.
fn uses_enum(data_type: &str, item: &Enum) -> bool {
    data_type == item.type_name || data_type.strip_suffix("[]") == Some(item.type_name.as_str())
}

/// Whether an enum can go from `old` to `new` labels by adding labels only.
fn only_added(old: &[String], new: &[String]) -> bool {
    let kept: Vec<&String> = new.iter().filter(|label| old.contains(label)).collect();
    kept.len() == old.len() && kept.iter().zip(old).all(|(a, b)| *a == b)
}

/// `CREATE OR REPLACE VIEW` keeps the old columns (names and types, in order) and may add more.
fn replaceable(old: &View, new: &View) -> bool {
    new.columns.len() >= old.columns.len() && new.columns[..old.columns.len()] == old.columns[..]
}

/// The views of `views` named in `names`, each after the views it reads (ties by name).
fn in_dependency_order<'a>(views: &'a BTreeMap<String, View>, names: &BTreeSet<String>) -> Vec<&'a View> {
    let mut done: BTreeSet<&str> = BTreeSet::new();
    let mut order = Vec::new();
    while order.len() < names.len() {
        let before = order.len();
        for name in names {
            if done.contains(name.as_str()) {
                continue;
            }
            let view = &views[name];
            let waiting = view.depends_on.iter().any(|dep| names.contains(dep) && !done.contains(dep.as_str()));
            if !waiting {
                done.insert(name);
                order.push(view);
            }
        }
        if order.len() == before {
            // A cycle cannot exist among views; keep what is left in name order rather than loop.
            order.extend(names.iter().filter(|name| !done.contains(name.as_str())).map(|name| &views[name]));
            break;
        }
    }
    order
}

fn column_sql(column: &Column) -> String {
    let mut sql = format!("{} {}", column.name, column.data_type);
    if let Some(expression) = &column.generated {
        sql.push_str(&format!(" GENERATED ALWAYS AS {expression} STORED"));
    }
    if let Some(identity) = column.identity {
        sql.push_str(&format!(" GENERATED {} AS IDENTITY", identity.sql()));
    }
    if let Some(default) = &column.default {
        sql.push_str(&format!(" DEFAULT {default}"));
    }
    if column.not_null {
        sql.push_str(" NOT NULL");
    }
    sql
}

fn sequence_parameters(sequence: &Sequence) -> String {
    format!(
        "AS {} INCREMENT BY {} MINVALUE {} MAXVALUE {} START WITH {} CACHE {} {}",
        sequence.data_type,
        sequence.increment,
        sequence.min,
        sequence.max,
        sequence.start,
        sequence.cache,
        if sequence.cycle { "CYCLE" } else { "NO CYCLE" }
    )
}

fn constraint_label(constraint: &Constraint) -> String {
    format!("{} on {}", constraint.name, constraint.table)
}

/// The name of an enum while it is being replaced by a new one with fewer labels.
fn retired(name: &str) -> String {
    let bare = name.rsplit('.').next().unwrap_or(name).trim_matches('"');
    format!("{}__lifeboat_old", bare)
}

/// The statements that take schema `from` to schema `to`.
pub fn changes(from: &Schema, to: &Schema) -> Changes {
    let mut out = Changes::default();

    // What changes, before any statement is written.
    let dropped_tables: BTreeSet<&String> = from.tables.keys().filter(|name| !to.tables.contains_key(*name)).collect();
    let plans: BTreeMap<&String, ColumnPlan<'_>> = from
        .tables
        .iter()
        .filter_map(|(name, old)| to.tables.get(name).map(|new| (name, ColumnPlan::new(old, new))))
        .filter(|(_, plan)| !plan.is_empty())
        .collect();
    let recreated_enums: Vec<(&Enum, &Enum)> = from
        .enums
        .values()
        .filter_map(|old| to.enums.get(&old.name).map(|new| (old, new)))
        .filter(|(old, new)| !only_added(&old.labels, &new.labels))
        .collect();
    // Columns of kept tables that stay of a recreated enum type: converted to the new type.
    let mut enum_columns: Vec<(&Enum, &Table, &Column, &Column)> = Vec::new();
    for (old_enum, _) in &recreated_enums {
        for (name, table) in &from.tables {
            let Some(new_table) = to.tables.get(name) else { continue };
            for column in table.columns.iter().filter(|column| uses_enum(&column.data_type, old_enum)) {
                if let Some(new_column) = new_table.column(&column.name).filter(|new| new.data_type == column.data_type)
                {
                    enum_columns.push((old_enum, table, column, new_column));
                }
            }
        }
    }
    // Tables whose columns go away or change type: views reading them are dropped and created again.
    let mut reshaped: BTreeSet<&String> = dropped_tables.clone();
    reshaped.extend(plans.iter().filter(|(_, plan)| plan.retypes()).map(|(name, _)| *name));
    reshaped.extend(enum_columns.iter().map(|(_, table, _, _)| &table.name));

    let mut views_dropped: BTreeSet<String> = from
        .views
        .values()
        .filter(|old| match to.views.get(&old.name) {
            None => true,
            Some(new) => {
                (old.definition != new.definition && !replaceable(old, new))
                    || old.depends_on.iter().any(|dep| reshaped.contains(dep))
            }
        })
        .map(|view| view.name.clone())
        .collect();
    loop {
        let more: Vec<String> = from
            .views
            .values()
            .filter(|view| !views_dropped.contains(&view.name))
            .filter(|view| view.depends_on.iter().any(|dep| views_dropped.contains(dep)))
            .map(|view| view.name.clone())
            .collect();
        if more.is_empty() {
            break;
        }
        views_dropped.extend(more);
    }
    let views_created: BTreeSet<String> = to
        .views
        .keys()
        .filter(|name| !from.views.contains_key(*name) || views_dropped.contains(*name))
        .cloned()
        .collect();
    let views_replaced: BTreeSet<String> = to
        .views
        .values()
        .filter(|new| from.views.get(&new.name).is_some_and(|old| old.definition != new.definition))
        .filter(|new| !views_dropped.contains(&new.name))
        .map(|view| view.name.clone())
        .collect();

    let constraint_gone = |key: &(String, String), constraint: &Constraint| {
        to.constraints.get(key).is_none_or(|new| new.definition != constraint.definition)
    };
    let constraint_new = |key: &(String, String), constraint: &Constraint| {
        from.constraints.get(key).is_none_or(|old| old.definition != constraint.definition)
    };
    let dropped_keys: Vec<(&(String, String), &Constraint)> = from
        .constraints
        .iter()
        .filter(|(_, constraint)| constraint.kind != ConstraintKind::Foreign)
        .filter(|(_, constraint)| !dropped_tables.contains(&constraint.table))
        .filter(|(key, constraint)| constraint_gone(key, constraint))
        .collect();
    let dropped_indexes: Vec<&super::model::Index> = from
        .indexes
        .values()
        .filter(|index| !dropped_tables.contains(&index.table))
        .filter(|index| to.indexes.get(&index.name).is_none_or(|new| new.definition != index.definition))
        .collect();
    // A foreign key leans on its referenced table's unique keys and on both tables' column types:
    // it is taken off while they change and put back afterwards.
    let mut leaned_on: BTreeSet<&String> = dropped_keys.iter().map(|(_, constraint)| &constraint.table).collect();
    leaned_on.extend(dropped_indexes.iter().map(|index| &index.table));
    leaned_on.extend(plans.iter().filter(|(_, plan)| plan.retypes()).map(|(name, _)| *name));
    let foreign_dropped: BTreeSet<&(String, String)> = from
        .constraints
        .iter()
        .filter(|(_, constraint)| constraint.kind == ConstraintKind::Foreign)
        .filter(|(key, constraint)| {
            constraint_gone(key, constraint)
                || dropped_tables.contains(&constraint.table)
                || leaned_on.contains(&constraint.table)
                || constraint
                    .references
                    .as_ref()
                    .is_some_and(|table| dropped_tables.contains(table) || leaned_on.contains(table))
        })
        .map(|(key, _)| key)
        .collect();

    // Summary.
    let summary = &mut out.summary;
    summary.tables_created = to.tables.keys().filter(|name| !from.tables.contains_key(*name)).cloned().collect();
    summary.tables_dropped = dropped_tables.iter().map(|name| (*name).clone()).collect();
    summary.tables_altered = plans.keys().map(|name| (*name).clone()).collect();
    summary.indexes_created = to
        .indexes
        .values()
        .filter(|index| from.indexes.get(&index.name).is_none_or(|old| old.definition != index.definition))
        .map(|index| index.name.clone())
        .collect();
    summary.indexes_dropped = from
        .indexes
        .values()
        .filter(|index| to.indexes.get(&index.name).is_none_or(|new| new.definition != index.definition))
        .map(|index| index.name.clone())
        .collect();
    summary.constraints_added = to
        .constraints
        .iter()
        .filter(|(key, constraint)| constraint_new(key, constraint))
        .map(|(_, constraint)| constraint_label(constraint))
        .collect();
    summary.constraints_dropped = from
        .constraints
        .iter()
        .filter(|(key, constraint)| constraint_gone(key, constraint))
        .map(|(_, constraint)| constraint_label(constraint))
        .collect();
    summary.enums_created = to.enums.keys().filter(|name| !from.enums.contains_key(*name)).cloned().collect();
    summary.enums_altered = to
        .enums
        .values()
        .filter(|new| from.enums.get(&new.name).is_some_and(|old| old.labels != new.labels))
        .map(|item| item.name.clone())
        .collect();
    summary.enums_dropped = from.enums.keys().filter(|name| !to.enums.contains_key(*name)).cloned().collect();
    summary.sequences_created =
        to.sequences.keys().filter(|name| !from.sequences.contains_key(*name)).cloned().collect();
    summary.sequences_altered = to
        .sequences
        .values()
        .filter(|new| from.sequences.get(&new.name).is_some_and(|old| old != *new))
        .map(|sequence| sequence.name.clone())
        .collect();
    summary.sequences_dropped =
        from.sequences.keys().filter(|name| !to.sequences.contains_key(*name)).cloned().collect();
    summary.views_created = to.views.keys().filter(|name| !from.views.contains_key(*name)).cloned().collect();
    summary.views_replaced = to
        .views
        .values()
        .filter(|new| from.views.get(&new.name).is_some_and(|old| old != *new))
        .map(|view| view.name.clone())
        .collect();
    summary.views_dropped = from.views.keys().filter(|name| !to.views.contains_key(*name)).cloned().collect();

    // 1. Views in the way, dependents first.
    let mut order = in_dependency_order(&from.views, &views_dropped);
    order.reverse();
    for view in order {
        out.push(format!("DROP VIEW {}", view.name));
    }
    // 2. Foreign keys.
    for key in &foreign_dropped {
        let constraint = &from.constraints[*key];
        out.push(format!("ALTER TABLE {} DROP CONSTRAINT {}", constraint.table, constraint.name));
    }
    // 3. Other constraints and indexes that go or change.
    for (_, constraint) in &dropped_keys {
        out.push(format!("ALTER TABLE {} DROP CONSTRAINT {}", constraint.table, constraint.name));
    }
    for index in &dropped_indexes {
        out.push(format!("DROP INDEX {}", index.name));
    }
    // 4. Schemas, enum types and sequences, before the tables that use them.
    for schema in to.schemas.difference(&from.schemas) {
        out.push(format!("CREATE SCHEMA {schema}"));
    }
    for new in to.enums.values() {
        let labels = new.labels.iter().map(|label| literal(label)).collect::<Vec<_>>().join(", ");
        match from.enums.get(&new.name) {
            None => out.push(format!("CREATE TYPE {} AS ENUM ({labels})", new.name)),
            Some(old) if only_added(&old.labels, &new.labels) => {
                for (position, label) in new.labels.iter().enumerate() {
                    if old.labels.contains(label) {
                        continue;
                    }
                    let place = match position {
                        0 => format!("BEFORE {}", literal(&new.labels[1])),
                        _ => format!("AFTER {}", literal(&new.labels[position - 1])),
                    };
                    out.push(format!("ALTER TYPE {} ADD VALUE {} {place}", new.name, literal(label)));
                }
            }
            Some(old) => {
                let removed: Vec<String> =
                    old.labels.iter().filter(|label| !new.labels.contains(label)).map(|label| literal(label)).collect();
                let why = if removed.is_empty() {
                    "reorders its labels".to_owned()
                } else {
                    format!("removes {}", removed.join(", "))
                };
                out.warn(
                    format!(
                        "enum {} {why}; PostgreSQL cannot do that in place, so the type is created again and its \
                         columns converted through text: a row holding a removed label makes this fail",
                        new.name
                    ),
                    format!("ALTER TYPE {} RENAME TO {}", new.name, retired(&new.name)),
                );
                out.push(format!("CREATE TYPE {} AS ENUM ({labels})", new.name));
                for (_, table, column, new_column) in enum_columns.iter().filter(|(item, ..)| item.name == old.name) {
                    let array = if column.data_type.ends_with("[]") { "[]" } else { "" };
                    if column.default.is_some() {
                        out.push(format!("ALTER TABLE {} ALTER COLUMN {} DROP DEFAULT", table.name, column.name));
                    }
                    out.push(format!(
                        "ALTER TABLE {} ALTER COLUMN {} TYPE {}{array} USING {}::text{array}::{}{array}",
                        table.name, column.name, new.name, column.name, new.name
                    ));
                    if let Some(default) = new_column.default.as_ref().filter(|_| column.default == new_column.default)
                    {
                        out.push(format!(
                            "ALTER TABLE {} ALTER COLUMN {} SET DEFAULT {default}",
                            table.name, column.name
                        ));
                    }
                }
            }
        }
    }
    for new in to.sequences.values() {
        match from.sequences.get(&new.name) {
            None => out.push(format!("CREATE SEQUENCE {} {}", new.name, sequence_parameters(new))),
            Some(old) => {
                if !old.same_parameters(new) {
                    out.push(format!("ALTER SEQUENCE {} {}", new.name, sequence_parameters(new)));
                }
                if old.owned_by.is_some() && old.owned_by != new.owned_by {
                    out.push(format!("ALTER SEQUENCE {} OWNED BY NONE", new.name));
                }
            }
        }
    }
    // 5. New tables, without their constraints.
    for new in to.tables.values().filter(|table| !from.tables.contains_key(&table.name)) {
        let columns: Vec<String> = new.columns.iter().map(|column| format!("    {}", column_sql(column))).collect();
        out.push(format!("CREATE TABLE {} (\n{}\n)", new.name, columns.join(",\n")));
    }
    // 6. Columns of the tables on both sides.
    for (name, plan) in &plans {
        alter_columns(&mut out, name, plan, &from.tables[*name], &to.tables[*name]);
    }
    // 7. Tables that go.
    for name in &dropped_tables {
        out.warn(
            format!(
                "drops table {name} and every row in it; if the table was renamed, replace this with ALTER TABLE \
                 <old name> RENAME TO <new name>"
            ),
            format!("DROP TABLE {name}"),
        );
    }
    // 8. Sequence owners, then sequences nothing uses any more.
    for new in to.sequences.values() {
        let old_owner = from.sequences.get(&new.name).and_then(|old| old.owned_by.as_ref());
        if let Some((table, column)) = &new.owned_by
            && old_owner != new.owned_by.as_ref()
        {
            out.push(format!("ALTER SEQUENCE {} OWNED BY {table}.{column}", new.name));
        }
    }
    for old in from.sequences.values().filter(|old| !to.sequences.contains_key(&old.name)) {
        // A sequence owned by a dropped table or column went with it.
        let gone_with_owner = old.owned_by.as_ref().is_some_and(|(table, column)| {
            dropped_tables.contains(table)
                || plans.get(table).is_some_and(|plan| plan.dropped.iter().any(|c| &c.name == column))
        });
        if !gone_with_owner {
            out.push(format!("DROP SEQUENCE {}", old.name));
        }
    }
    // 9. Enum types nothing uses any more.
    for (old, _) in &recreated_enums {
        out.push(format!("DROP TYPE {}", qualified_retired(&old.name)));
    }
    for old in from.enums.values().filter(|old| !to.enums.contains_key(&old.name)) {
        out.push(format!("DROP TYPE {}", old.name));
    }
    // 10. Constraints and indexes, foreign keys last.
    let mut added: Vec<&Constraint> = to
        .constraints
        .iter()
        .filter(|(key, constraint)| constraint_new(key, constraint) || foreign_dropped.contains(key))
        .map(|(_, constraint)| constraint)
        .collect();
    added.sort_by_key(|constraint| constraint.kind);
    let (foreign, others): (Vec<&Constraint>, Vec<&Constraint>) =
        added.into_iter().partition(|constraint| constraint.kind == ConstraintKind::Foreign);
    for constraint in others {
        out.push(format!(
            "ALTER TABLE {} ADD CONSTRAINT {} {}",
            constraint.table, constraint.name, constraint.definition
        ));
    }
    for index in to
        .indexes
        .values()
        .filter(|index| from.indexes.get(&index.name).is_none_or(|old| old.definition != index.definition))
    {
        out.push(index.definition.clone());
    }
    for constraint in foreign {
        out.push(format!(
            "ALTER TABLE {} ADD CONSTRAINT {} {}",
            constraint.table, constraint.name, constraint.definition
        ));
    }
    // 11. Views, each after what it reads.
    let mut wanted = views_created.clone();
    wanted.extend(views_replaced.iter().cloned());
    for view in in_dependency_order(&to.views, &wanted) {
        let verb = if views_replaced.contains(&view.name) { "CREATE OR REPLACE VIEW" } else { "CREATE VIEW" };
        out.push(format!("{verb} {} AS\n{}", view.name, view.definition));
    }
    // 12. Schemas, once empty.
    for schema in from.schemas.difference(&to.schemas) {
        out.push(format!("DROP SCHEMA {schema}"));
    }
    out
}

/// The schema-qualified name a recreated enum's old type has while its columns are converted.
fn qualified_retired(name: &str) -> String {
    match name.rsplit_once('.') {
        Some((schema, _)) => format!("{schema}.{}", retired(name)),
        None => retired(name),
    }
}

fn alter_columns(out: &mut Changes, name: &str, plan: &ColumnPlan<'_>, from: &Table, to: &Table) {
    for column in &plan.added {
        let sql = format!("ALTER TABLE {name} ADD COLUMN {}", column_sql(column));
        if column.not_null && column.default.is_none() && column.identity.is_none() && column.generated.is_none() {
            out.warn(
                format!(
                    "adds NOT NULL column {} without a default, which fails when {name} has rows: give it a \
                     default, or add it nullable, fill it, then SET NOT NULL",
                    column.name
                ),
                sql,
            );
        } else {
            out.push(sql);
        }
    }
    for column in &plan.readded {
        out.warn(
            format!(
                "the expression of generated column {}.{} changes; PostgreSQL cannot change it in place, so the \
                 column is dropped and added again",
                name, column.name
            ),
            format!("ALTER TABLE {name} DROP COLUMN {}", column.name),
        );
        out.push(format!("ALTER TABLE {name} ADD COLUMN {}", column_sql(column)));
    }
    for (old, new) in &plan.altered {
        let column = format!("ALTER TABLE {name} ALTER COLUMN {}", new.name);
        let retyped = old.data_type != new.data_type;
        let default_changes = old.default != new.default;
        if old.identity.is_some() && new.identity.is_none() {
            out.push(format!("{column} DROP IDENTITY"));
        }
        if old.default.is_some() && (retyped || default_changes) {
            out.push(format!("{column} DROP DEFAULT"));
        }
        if retyped {
            out.push(format!("{column} TYPE {} USING {}::{}", new.data_type, new.name, new.data_type));
        }
        if new.not_null && !old.not_null {
            out.push(format!("{column} SET NOT NULL"));
        }
        match (old.identity, new.identity) {
            (None, Some(identity)) => out.push(format!("{column} ADD GENERATED {} AS IDENTITY", identity.sql())),
            (Some(before), Some(after)) if before != after => {
                out.push(format!("{column} SET GENERATED {}", after.sql()))
            }
            _ => {}
        }
        if let Some(default) = new.default.as_ref().filter(|_| retyped || default_changes) {
            out.push(format!("{column} SET DEFAULT {default}"));
        }
        if old.not_null && !new.not_null {
            out.push(format!("{column} DROP NOT NULL"));
        }
    }
    for column in &plan.dropped {
        out.warn(
            format!(
                "drops column {name}.{} and its data; if the column was renamed, replace this with ALTER TABLE \
                 {name} RENAME COLUMN <old name> TO <new name>",
                column.name
            ),
            format!("ALTER TABLE {name} DROP COLUMN {}", column.name),
        );
    }
    // PostgreSQL appends new columns; it cannot move one.
    let mut result: Vec<&str> = from
        .columns
        .iter()
        .filter(|column| to.column(&column.name).is_some() && !plan.readded.iter().any(|r| r.name == column.name))
        .map(|column| column.name.as_str())
        .collect();
    result.extend(
        to.columns
            .iter()
            .filter(|column| {
                plan.added.iter().any(|added| added.name == column.name)
                    || plan.readded.iter().any(|r| r.name == column.name)
            })
            .map(|column| column.name.as_str()),
    );
    let wanted: Vec<&str> = to.columns.iter().map(|column| column.name.as_str()).collect();
    if result != wanted {
        out.notes.push(format!(
            "PostgreSQL adds columns at the end and cannot move them: {name} will have its columns in the order \
             ({}), not ({})",
            result.join(", "),
            wanted.join(", ")
        ));
    }
}
