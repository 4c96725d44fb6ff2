//! The order of the generated DDL, on models built by hand.

use std::collections::BTreeSet;

use super::generate::changes;
use super::model::*;
use super::{render, without_column_order};
use crate::migrate::schema_dump::NormalisedSchema;

fn column(name: &str, data_type: &str) -> Column {
    Column {
        name: name.to_owned(),
        data_type: data_type.to_owned(),
        not_null: false,
        default: None,
        identity: None,
        generated: None,
    }
}

fn table(name: &str, columns: Vec<Column>) -> Table {
    Table { name: name.to_owned(), columns }
}

fn constraint(table: &str, name: &str, kind: ConstraintKind, definition: &str, references: Option<&str>) -> Constraint {
    Constraint {
        table: table.to_owned(),
        name: name.to_owned(),
        kind,
        definition: definition.to_owned(),
        references: references.map(str::to_owned),
    }
}

fn view(name: &str, definition: &str, columns: &[(&str, &str)], depends_on: &[&str]) -> View {
    View {
        name: name.to_owned(),
        definition: definition.to_owned(),
        columns: columns.iter().map(|(name, kind)| ((*name).to_owned(), (*kind).to_owned())).collect(),
        depends_on: depends_on.iter().map(|name| (*name).to_owned()).collect(),
    }
}

fn schema() -> Schema {
    Schema { schemas: BTreeSet::from(["public".to_owned()]), ..Schema::default() }
}

fn add_table(schema: &mut Schema, table: Table) {
    schema.tables.insert(table.name.clone(), table);
}

fn add_constraint(schema: &mut Schema, constraint: Constraint) {
    schema.constraints.insert((constraint.table.clone(), constraint.name.clone()), constraint);
}

fn position(statements: &[String], starts: &str) -> usize {
    statements
        .iter()
        .position(|statement| statement.starts_with(starts))
        .unwrap_or_else(|| panic!("no statement starts with {starts:?} in {statements:#?}"))
}

fn sql(from: &Schema, to: &Schema) -> Vec<String> {
    changes(from, to).statements.into_iter().map(|change| change.sql).collect()
}

/// customers(id) <- orders(customer_id) with an enum status and a sequence used as a default.
fn shop() -> Schema {
    let mut shop = schema();
    shop.enums.insert(
        "public.status".to_owned(),
        Enum {
            name: "public.status".to_owned(),
            type_name: "status".to_owned(),
            labels: vec!["new".into(), "paid".into()],
        },
    );
    shop.sequences.insert(
        "public.invoice_no".to_owned(),
        Sequence {
            name: "public.invoice_no".to_owned(),
            data_type: "bigint".to_owned(),
            increment: 1,
            min: 1,
            max: i64::MAX,
            start: 1,
            cache: 1,
            cycle: false,
            owned_by: None,
        },
    );
    let mut id = column("id", "integer");
    id.not_null = true;
    add_table(&mut shop, table("public.customers", vec![id.clone(), column("name", "text")]));
    let mut invoice = column("invoice", "bigint");
    invoice.default = Some("nextval('invoice_no'::regclass)".to_owned());
    add_table(
        &mut shop,
        table("public.orders", vec![id, column("customer_id", "integer"), column("state", "status"), invoice]),
    );
    add_constraint(
        &mut shop,
        constraint("public.customers", "customers_pkey", ConstraintKind::Primary, "PRIMARY KEY (id)", None),
    );
    add_constraint(
        &mut shop,
        constraint("public.orders", "orders_pkey", ConstraintKind::Primary, "PRIMARY KEY (id)", None),
    );
    add_constraint(
        &mut shop,
        constraint(
            "public.orders",
            "orders_customer_id_fkey",
            ConstraintKind::Foreign,
            "FOREIGN KEY (customer_id) REFERENCES public.customers(id)",
            Some("public.customers"),
        ),
    );
    shop.indexes.insert(
        "public.orders_state".to_owned(),
        Index {
            name: "public.orders_state".to_owned(),
            table: "public.orders".to_owned(),
            definition: "CREATE INDEX orders_state ON public.orders USING btree (state)".to_owned(),
        },
    );
    shop.views.insert(
        "public.open_orders".to_owned(),
        view(
            "public.open_orders",
            "SELECT id, state FROM orders",
            &[("id", "integer"), ("state", "status")],
            &["public.orders"],
        ),
    );
    shop
}

#[test]
fn a_schema_built_from_nothing_creates_types_and_sequences_then_tables_then_keys_then_views() {
    let statements = sql(&schema(), &shop());
    let order = [
        "CREATE TYPE public.status AS ENUM ('new', 'paid')",
        "CREATE SEQUENCE public.invoice_no AS bigint",
        "CREATE TABLE public.customers",
        "CREATE TABLE public.orders",
        "ALTER TABLE public.customers ADD CONSTRAINT customers_pkey PRIMARY KEY (id)",
        "CREATE INDEX orders_state",
        "ALTER TABLE public.orders ADD CONSTRAINT orders_customer_id_fkey FOREIGN KEY",
        "CREATE VIEW public.open_orders AS",
    ];
    let positions: Vec<usize> = order.iter().map(|start| position(&statements, start)).collect();
    assert!(positions.windows(2).all(|pair| pair[0] < pair[1]), "{statements:#?}");
    assert_eq!(statements.len(), 9, "{statements:#?}");
}

#[test]
fn tearing_it_down_drops_views_and_foreign_keys_before_tables_and_types_after() {
    let statements = sql(&shop(), &schema());
    let order = [
        "DROP VIEW public.open_orders",
        "ALTER TABLE public.orders DROP CONSTRAINT orders_customer_id_fkey",
        "DROP TABLE public.customers",
        "DROP TABLE public.orders",
        "DROP SEQUENCE public.invoice_no",
        "DROP TYPE public.status",
    ];
    let positions: Vec<usize> = order.iter().map(|start| position(&statements, start)).collect();
    assert!(positions.windows(2).all(|pair| pair[0] < pair[1]), "{statements:#?}");
    // Constraints and indexes of dropped tables go with them.
    assert!(!statements.iter().any(|s| s.contains("customers_pkey") || s.starts_with("DROP INDEX")), "{statements:#?}");
    let dropped = changes(&shop(), &schema());
    let warnings: Vec<String> = dropped.statements.iter().filter_map(|change| change.warning.clone()).collect();
    assert_eq!(warnings.len(), 2, "{warnings:?}");
    assert!(warnings[0].contains("if the table was renamed"), "{warnings:?}");
}

#[test]
fn a_column_type_change_drops_the_view_reading_it_and_the_foreign_key_first() {
    let mut to = shop();
    let orders = to.tables.get_mut("public.orders").unwrap();
    orders.columns[1].data_type = "bigint".to_owned();
    to.views.get_mut("public.open_orders").unwrap().columns[0].1 = "integer".to_owned();
    let statements = sql(&shop(), &to);
    let order = [
        "DROP VIEW public.open_orders",
        "ALTER TABLE public.orders DROP CONSTRAINT orders_customer_id_fkey",
        "ALTER TABLE public.orders ALTER COLUMN customer_id TYPE bigint USING customer_id::bigint",
        "ALTER TABLE public.orders ADD CONSTRAINT orders_customer_id_fkey",
        "CREATE VIEW public.open_orders AS",
    ];
    let positions: Vec<usize> = order.iter().map(|start| position(&statements, start)).collect();
    assert!(positions.windows(2).all(|pair| pair[0] < pair[1]), "{statements:#?}");
    let summary = changes(&shop(), &to).summary;
    assert_eq!(summary.tables_altered, ["public.orders"]);
    assert!(summary.constraints_added.is_empty() && summary.views_replaced.is_empty(), "{summary:?}");
}

#[test]
fn defaults_and_nullability_change_in_place_and_a_dropped_primary_key_releases_its_foreign_keys() {
    let mut to = shop();
    let customers = to.tables.get_mut("public.customers").unwrap();
    customers.columns[1].default = Some("'anonymous'::text".to_owned());
    customers.columns[1].not_null = true;
    to.constraints.remove(&("public.customers".to_owned(), "customers_pkey".to_owned()));
    add_constraint(
        &mut to,
        constraint("public.customers", "customers_id_key", ConstraintKind::Unique, "UNIQUE (id)", None),
    );
    let statements = sql(&shop(), &to);
    let order = [
        "ALTER TABLE public.orders DROP CONSTRAINT orders_customer_id_fkey",
        "ALTER TABLE public.customers DROP CONSTRAINT customers_pkey",
        "ALTER TABLE public.customers ALTER COLUMN name SET NOT NULL",
        "ALTER TABLE public.customers ALTER COLUMN name SET DEFAULT 'anonymous'::text",
        "ALTER TABLE public.customers ADD CONSTRAINT customers_id_key UNIQUE (id)",
        "ALTER TABLE public.orders ADD CONSTRAINT orders_customer_id_fkey",
    ];
    let positions: Vec<usize> = order.iter().map(|start| position(&statements, start)).collect();
    assert!(positions.windows(2).all(|pair| pair[0] < pair[1]), "{statements:#?}");
    // The view reads nothing that changed shape.
    assert!(!statements.iter().any(|s| s.contains("VIEW")), "{statements:#?}");
    let back = sql(&to, &shop());
    assert!(back.contains(&"ALTER TABLE public.customers ALTER COLUMN name DROP NOT NULL".to_owned()), "{back:#?}");
    assert!(back.contains(&"ALTER TABLE public.customers ALTER COLUMN name DROP DEFAULT".to_owned()), "{back:#?}");
}

#[test]
fn an_added_enum_label_is_placed_and_a_removed_one_recreates_the_type() {
    let mut to = shop();
    to.enums.get_mut("public.status").unwrap().labels = vec!["new".into(), "shipped".into(), "paid".into()];
    let statements = sql(&shop(), &to);
    assert_eq!(statements, ["ALTER TYPE public.status ADD VALUE 'shipped' AFTER 'new'"]);

    let back = changes(&to, &shop());
    let statements: Vec<&str> = back.statements.iter().map(|change| change.sql.as_str()).collect();
    let order = [
        "DROP VIEW public.open_orders",
        "ALTER TYPE public.status RENAME TO status__lifeboat_old",
        "CREATE TYPE public.status AS ENUM ('new', 'paid')",
        "ALTER TABLE public.orders ALTER COLUMN state TYPE public.status USING state::text::public.status",
        "DROP TYPE public.status__lifeboat_old",
        "CREATE VIEW public.open_orders AS",
    ];
    let owned: Vec<String> = statements.iter().map(|s| (*s).to_owned()).collect();
    let positions: Vec<usize> = order.iter().map(|start| position(&owned, start)).collect();
    assert!(positions.windows(2).all(|pair| pair[0] < pair[1]), "{statements:#?}");
    assert!(back.statements[1].warning.as_deref().unwrap().contains("removes 'shipped'"), "{:?}", back.statements[1]);
}

#[test]
fn a_compatible_view_is_replaced_and_an_incompatible_one_dropped_and_created() {
    let mut wider = shop();
    let open = wider.views.get_mut("public.open_orders").unwrap();
    open.definition = "SELECT id, state, invoice FROM orders".to_owned();
    open.columns.push(("invoice".to_owned(), "bigint".to_owned()));
    assert_eq!(
        sql(&shop(), &wider),
        ["CREATE OR REPLACE VIEW public.open_orders AS\nSELECT id, state, invoice FROM orders"]
    );
    // Going back removes a column: CREATE OR REPLACE cannot.
    let back = sql(&wider, &shop());
    assert_eq!(
        back,
        ["DROP VIEW public.open_orders", "CREATE VIEW public.open_orders AS\nSELECT id, state FROM orders"]
    );
}

#[test]
fn views_on_views_are_dropped_dependents_first_and_created_in_the_other_order() {
    let mut from = shop();
    from.views.insert(
        "public.open_count".to_owned(),
        view(
            "public.open_count",
            "SELECT count(*) AS count FROM open_orders",
            &[("count", "bigint")],
            &["public.open_orders"],
        ),
    );
    let mut to = from.clone();
    to.tables.get_mut("public.orders").unwrap().columns.remove(2);
    let open = to.views.get_mut("public.open_orders").unwrap();
    open.definition = "SELECT id FROM orders".to_owned();
    open.columns.truncate(1);
    let statements = sql(&from, &to);
    let order = [
        "DROP VIEW public.open_count",
        "DROP VIEW public.open_orders",
        "ALTER TABLE public.orders DROP COLUMN state",
        "CREATE VIEW public.open_orders AS",
        "CREATE VIEW public.open_count AS",
    ];
    let positions: Vec<usize> = order.iter().map(|start| position(&statements, start)).collect();
    assert!(positions.windows(2).all(|pair| pair[0] < pair[1]), "{statements:#?}");
}

#[test]
fn sequences_are_altered_in_place_and_owners_set_after_the_table_exists() {
    let mut to = shop();
    let sequence = to.sequences.get_mut("public.invoice_no").unwrap();
    sequence.increment = 10;
    sequence.cache = 20;
    sequence.owned_by = Some(("public.orders".to_owned(), "invoice".to_owned()));
    let statements = sql(&shop(), &to);
    assert_eq!(
        statements,
        [
            "ALTER SEQUENCE public.invoice_no AS bigint INCREMENT BY 10 MINVALUE 1 MAXVALUE 9223372036854775807 START \
             WITH 1 CACHE 20 NO CYCLE",
            "ALTER SEQUENCE public.invoice_no OWNED BY public.orders.invoice",
        ]
    );
    // Dropping the owning table takes the sequence with it: no DROP SEQUENCE of its own.
    let mut gone = to.clone();
    gone.tables.remove("public.orders");
    gone.sequences.remove("public.invoice_no");
    gone.views.clear();
    gone.indexes.clear();
    gone.constraints.retain(|(table, _), _| table != "public.orders");
    let statements = sql(&to, &gone);
    assert!(statements.contains(&"DROP TABLE public.orders".to_owned()), "{statements:#?}");
    assert!(!statements.iter().any(|s| s.starts_with("DROP SEQUENCE")), "{statements:#?}");
}

#[test]
fn a_column_added_in_the_middle_is_appended_and_the_note_says_so() {
    let mut to = shop();
    to.tables.get_mut("public.customers").unwrap().columns.insert(1, column("email", "text"));
    let generated = changes(&shop(), &to);
    assert_eq!(generated.statements[0].sql, "ALTER TABLE public.customers ADD COLUMN email text");
    assert_eq!(generated.notes.len(), 1);
    assert!(generated.notes[0].contains("(id, name, email), not (id, email, name)"), "{:?}", generated.notes);
    let text = render("schema.sql", "up", &generated);
    assert!(text.starts_with("-- Generated by `lifeboat migrate diff` from schema.sql (up)"), "{text}");
    assert!(text.contains("-- Note: PostgreSQL adds columns at the end"), "{text}");
    assert!(text.ends_with("ADD COLUMN email text;\n"), "{text}");
    // The proof compares tables with their columns in any order.
    let appended = NormalisedSchema { statements: vec!["CREATE TABLE t ( a int, c numeric(10,2), b text );".into()] };
    let written = NormalisedSchema { statements: vec!["CREATE TABLE t ( a int, b text, c numeric(10,2) );".into()] };
    assert_eq!(without_column_order(&appended), without_column_order(&written));
    assert!(appended.difference(&written).is_some());
}

#[test]
fn a_not_null_column_without_a_default_is_warned_about() {
    let mut to = shop();
    let mut email = column("email", "text");
    email.not_null = true;
    to.tables.get_mut("public.customers").unwrap().columns.push(email);
    let generated = changes(&shop(), &to);
    assert_eq!(generated.statements.len(), 1);
    assert!(generated.statements[0].warning.as_deref().unwrap().contains("fails when public.customers has rows"));
}

#[test]
fn the_same_schema_gives_nothing() {
    assert!(changes(&shop(), &shop()).statements.is_empty());
}
