//! The part of a database schema `migrate diff` compares: schemas, enums, sequences, tables with
//! their columns, indexes, constraints and views, each keyed by its schema-qualified name as
//! PostgreSQL quotes it (`quote_ident`), so a key is also ready to be written into DDL.
//!
//! Definitions are kept as PostgreSQL prints them (`format_type`, `pg_get_expr`,
//! `pg_get_indexdef`, `pg_get_constraintdef`, `pg_get_viewdef`): two databases on the same server
//! print the same object the same way, so comparing the text compares the objects.

use std::collections::{BTreeMap, BTreeSet};

/// One database's schema, as [`super::catalog::read`] finds it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Schema {
    /// Quoted schema names, `public` included.
    pub schemas: BTreeSet<String>,
    pub enums: BTreeMap<String, Enum>,
    /// Sequences other than those behind identity columns (they belong to their column).
    pub sequences: BTreeMap<String, Sequence>,
    pub tables: BTreeMap<String, Table>,
    /// Indexes that back no constraint (a primary key's index comes with its constraint).
    pub indexes: BTreeMap<String, Index>,
    /// By (qualified table, quoted constraint name).
    pub constraints: BTreeMap<(String, String), Constraint>,
    pub views: BTreeMap<String, View>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Enum {
    /// Qualified and quoted: `public.status`.
    pub name: String,
    /// The name as `format_type` prints it in column types (`status` when on the search path).
    pub type_name: String,
    /// Labels in their sort order.
    pub labels: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sequence {
    pub name: String,
    /// `bigint`, `integer` or `smallint`.
    pub data_type: String,
    pub increment: i64,
    pub min: i64,
    pub max: i64,
    pub start: i64,
    pub cache: i64,
    pub cycle: bool,
    /// The (qualified table, quoted column) the sequence belongs to (`OWNED BY`).
    pub owned_by: Option<(String, String)>,
}

impl Sequence {
    /// Everything but the owner, which is set once the table exists.
    pub fn same_parameters(&self, other: &Sequence) -> bool {
        (&self.data_type, self.increment, self.min, self.max, self.start, self.cache, self.cycle)
            == (&other.data_type, other.increment, other.min, other.max, other.start, other.cache, other.cycle)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    pub name: String,
    /// In `attnum` order.
    pub columns: Vec<Column>,
}

impl Table {
    pub fn column(&self, name: &str) -> Option<&Column> {
        self.columns.iter().find(|column| column.name == name)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    /// Quoted.
    pub name: String,
    /// `format_type(atttypid, atttypmod)`.
    pub data_type: String,
    pub not_null: bool,
    /// `pg_get_expr` of the default; `None` for generated columns (see `generated`).
    pub default: Option<String>,
    pub identity: Option<Identity>,
    /// The expression of a `GENERATED ALWAYS AS (...) STORED` column.
    pub generated: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Identity {
    Always,
    ByDefault,
}

impl Identity {
    pub fn sql(self) -> &'static str {
        match self {
            Identity::Always => "ALWAYS",
            Identity::ByDefault => "BY DEFAULT",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Index {
    /// Qualified: `public.orders_status_idx`.
    pub name: String,
    pub table: String,
    /// `pg_get_indexdef`: a complete `CREATE [UNIQUE] INDEX` statement.
    pub definition: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ConstraintKind {
    Primary,
    Unique,
    Check,
    Exclusion,
    Foreign,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Constraint {
    pub table: String,
    /// Quoted.
    pub name: String,
    pub kind: ConstraintKind,
    /// `pg_get_constraintdef`: `PRIMARY KEY (id)`, `CHECK ((price > 0))`, `FOREIGN KEY ...`.
    pub definition: String,
    /// The table a foreign key references.
    pub references: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct View {
    pub name: String,
    /// `pg_get_viewdef` without its final `;`.
    pub definition: String,
    /// (quoted name, type) in order: `CREATE OR REPLACE VIEW` may only add columns at the end.
    pub columns: Vec<(String, String)>,
    /// The tables and views it reads.
    pub depends_on: BTreeSet<String>,
}
