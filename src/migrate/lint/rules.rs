//! Every rule `lifeboat migrate lint` knows: its name, what it is about (the category decides how
//! size grades it), its severity when no table size is known, and lifeboat's own wording of the
//! problem and of the safe way to do the same thing. Detection is squawk's for the rules named
//! after squawk's ([`squawk_linter::Rule`]) and lifeboat's for the others ([`super::checks`]).

use serde::Serialize;

use super::Severity;

/// How a rule's findings are graded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Category {
    /// Holds a lock that blocks reads or writes, or rewrites the table, for as long as the table
    /// takes: graded by the table's size and rows.
    Blocking,
    /// Fails on a table that has rows: an error when the table has any, a note when it is empty.
    FailsOnRows,
    /// Breaks clients running the previous release (drops, renames): an error at any size.
    Breaking,
    /// Cannot work as written (the statement fails, or corrupts data on that server): an error.
    Invalid,
    /// Takes away something another release may rely on, without blocking: a warning.
    Compatibility,
    /// Types and habits that cost later: a note or a warning.
    Hygiene,
}

impl Category {
    pub fn as_str(self) -> &'static str {
        match self {
            Category::Blocking => "blocking",
            Category::FailsOnRows => "fails-on-rows",
            Category::Breaking => "breaking",
            Category::Invalid => "invalid",
            Category::Compatibility => "compatibility",
            Category::Hygiene => "hygiene",
        }
    }
}

/// One rule.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct RuleInfo {
    pub name: &'static str,
    pub category: Category,
    /// The severity when no table size is at hand (lint of files alone).
    pub severity: Severity,
    /// Off unless `[migrate.lint] enable` names it.
    pub opt_in: bool,
    pub message: &'static str,
    pub fix: &'static str,
}

use Category::{Blocking, Breaking, Compatibility, FailsOnRows, Hygiene, Invalid};
use Severity::{Error, Note, Warning};

const fn rule(
    name: &'static str,
    category: Category,
    severity: Severity,
    message: &'static str,
    fix: &'static str,
) -> RuleInfo {
    RuleInfo { name, category, severity, opt_in: false, message, fix }
}

const fn opt_in(
    name: &'static str,
    category: Category,
    severity: Severity,
    message: &'static str,
    fix: &'static str,
) -> RuleInfo {
    RuleInfo { opt_in: true, ..rule(name, category, severity, message, fix) }
}

/// The lifeboat rule that reports an allow directive which allowed nothing.
pub const UNUSED_ALLOW: &str = "unused-allow";
/// The lifeboat rule for text the parser could not read (its findings may be incomplete).
pub const SYNTAX_ERROR: &str = "syntax-error";

/// Every rule, squawk's first (in squawk's order), then lifeboat's own.
pub const RULES: &[RuleInfo] = &[
    rule(
        "require-concurrent-index-creation",
        Blocking,
        Warning,
        "a plain CREATE INDEX holds a SHARE lock on the table until the build ends: every INSERT, UPDATE and DELETE waits",
        "build it with CREATE INDEX CONCURRENTLY IF NOT EXISTS, alone in a migration whose first line is \
         `-- lifeboat:no-transaction`",
    ),
    rule(
        "require-concurrent-index-deletion",
        Blocking,
        Warning,
        "a plain DROP INDEX takes ACCESS EXCLUSIVE on the index's table: reads and writes wait, and wait behind any \
         long query already running",
        "use DROP INDEX CONCURRENTLY IF EXISTS in a `-- lifeboat:no-transaction` migration",
    ),
    rule(
        "constraint-missing-not-valid",
        Blocking,
        Warning,
        "adding a checked constraint scans every row while writes are blocked (or VALIDATE runs in the same \
         transaction as the ADD, which keeps the ADD's ACCESS EXCLUSIVE lock for the whole scan)",
        "add the constraint with NOT VALID (instant: new rows are checked), then run ALTER TABLE ... VALIDATE \
         CONSTRAINT in a later migration, where the scan only takes SHARE UPDATE EXCLUSIVE",
    ),
    rule(
        "adding-field-with-default",
        Blocking,
        Warning,
        "the new column's default is volatile (or an identity), so PostgreSQL writes it into every existing row: the \
         table is rewritten under ACCESS EXCLUSIVE",
        "add the column without a default, ALTER COLUMN ... SET DEFAULT for new rows, backfill old rows in batches \
         in later migrations or a job, then add NOT NULL if needed",
    ),
    rule(
        "adding-foreign-key-constraint",
        Blocking,
        Warning,
        "a validated foreign key scans the table while holding SHARE ROW EXCLUSIVE on it and on the table it \
         references: writes to both wait",
        "add it with NOT VALID, then VALIDATE CONSTRAINT in a later migration (validation does not block writes)",
    ),
    rule(
        "changing-column-type",
        Blocking,
        Warning,
        "changing a column's type rewrites the table and its indexes under ACCESS EXCLUSIVE (unless the new type is \
         binary-compatible, e.g. varchar to text or a longer varchar)",
        "add a column of the new type, write both from the application, backfill in batches, switch reads, then \
         drop the old column in a later release",
    ),
    rule(
        "adding-not-nullable-field",
        Blocking,
        Warning,
        "SET NOT NULL scans every row under ACCESS EXCLUSIVE to prove there is no NULL",
        "add CHECK (col IS NOT NULL) NOT VALID, VALIDATE CONSTRAINT in a later migration, then SET NOT NULL (on \
         PostgreSQL 12+ it uses the validated check and skips the scan) and drop the check",
    ),
    rule(
        "adding-serial-primary-key-field",
        Blocking,
        Warning,
        "adding a primary key builds its unique index under ACCESS EXCLUSIVE: the table is unreadable for the \
         whole build",
        "CREATE UNIQUE INDEX CONCURRENTLY in a `-- lifeboat:no-transaction` migration, then ALTER TABLE ... ADD \
         CONSTRAINT ... PRIMARY KEY USING INDEX (instant)",
    ),
    rule(
        "renaming-column",
        Breaking,
        Error,
        "the running release still reads and writes the old column name and fails from the moment this commits",
        "add the new column, write both, backfill, move readers over, and drop the old column once no release \
         uses it (or keep the old name and rename only in the application)",
    ),
    rule(
        "renaming-table",
        Breaking,
        Error,
        "the running release still queries the old table name and fails from the moment this commits",
        "rename, then CREATE VIEW old_name AS SELECT * FROM new_name in the same migration so both names work, \
         and drop the view once no release uses the old name",
    ),
    rule(
        "disallowed-unique-constraint",
        Blocking,
        Warning,
        "adding a UNIQUE constraint builds its index under ACCESS EXCLUSIVE",
        "CREATE UNIQUE INDEX CONCURRENTLY in a `-- lifeboat:no-transaction` migration, then ALTER TABLE ... ADD \
         CONSTRAINT ... UNIQUE USING INDEX",
    ),
    rule(
        "ban-drop-database",
        Breaking,
        Error,
        "dropping a database from a migration destroys everything in it",
        "drop databases by hand, deliberately, after a verified backup; never from a migration",
    ),
    rule(
        "prefer-bigint-over-int",
        Hygiene,
        Note,
        "a 32-bit integer key runs out at 2,147,483,647, and widening it later rewrites the table",
        "use bigint (8 bytes instead of 4) for ids and counters that grow",
    ),
    rule(
        "prefer-bigint-over-smallint",
        Hygiene,
        Note,
        "a smallint runs out at 32,767, and widening it later rewrites the table",
        "use bigint unless the range is fixed by its meaning",
    ),
    rule(
        "prefer-identity",
        Hygiene,
        Note,
        "serial columns own a loosely attached sequence (permissions, dumps and copies treat it separately)",
        "use bigint GENERATED BY DEFAULT AS IDENTITY",
    ),
    rule(
        "prefer-repack",
        Blocking,
        Warning,
        "VACUUM FULL and CLUSTER rewrite the table under ACCESS EXCLUSIVE",
        "on PostgreSQL 19+ use REPACK (CONCURRENTLY); before that, pg_repack outside migrations",
    ),
    rule(
        "prefer-robust-stmts",
        Hygiene,
        Note,
        "this file runs outside a transaction: if it stops half way, running it again fails on what already landed",
        "write IF NOT EXISTS / IF EXISTS (CREATE INDEX CONCURRENTLY IF NOT EXISTS, DROP INDEX CONCURRENTLY IF \
         EXISTS, ADD COLUMN IF NOT EXISTS) so a retry finishes the job",
    ),
    rule(
        "prefer-text-field",
        Hygiene,
        Note,
        "varchar(n) limits are changed with ALTER COLUMN TYPE, which can lock the table; the limit is better \
         stated as a constraint",
        "use text with CHECK (char_length(col) <= n); the check can be replaced NOT VALID later",
    ),
    rule(
        "prefer-timestamp-tz",
        Hygiene,
        Note,
        "timestamp without time zone stores wall-clock time and loses the instant it meant",
        "use timestamptz (it stores the instant; the session's TimeZone only affects display)",
    ),
    rule(
        "ban-char-field",
        Hygiene,
        Note,
        "char(n) pads with spaces and compares in surprising ways; it saves nothing over text",
        "use text (with a CHECK on the length if the length matters)",
    ),
    rule(
        "ban-drop-column",
        Breaking,
        Error,
        "the running release may still select or insert this column and fails once it is gone",
        "stop using the column in the application first (deploy that), then drop it in a later migration",
    ),
    rule(
        "ban-drop-table",
        Breaking,
        Error,
        "the running release may still use this table, and its rows are gone for good",
        "stop using the table first (deploy that), make sure a verified backup holds its rows, then drop it in a \
         later migration",
    ),
    rule(
        "ban-drop-not-null",
        Breaking,
        Error,
        "clients of the running release may rely on the column never being NULL",
        "update every reader to cope with NULL first, then drop NOT NULL",
    ),
    rule(
        "transaction-nesting",
        Invalid,
        Error,
        "lifeboat already runs this file in a transaction; BEGIN/COMMIT/ROLLBACK inside it end or nest that \
         transaction",
        "remove the transaction statements; for statements that must run outside a transaction, put \
         `-- lifeboat:no-transaction` as the file's first line",
    ),
    rule(
        "adding-required-field",
        FailsOnRows,
        Warning,
        "a NOT NULL column without a default fails on a table that has rows, and INSERTs of the running release \
         that do not name it fail too",
        "add it nullable (or with a constant default), backfill, then add NOT NULL the safe way (CHECK ... NOT \
         VALID, VALIDATE, SET NOT NULL)",
    ),
    rule(
        "ban-concurrent-index-creation-in-transaction",
        Invalid,
        Error,
        "CREATE INDEX CONCURRENTLY cannot run inside a transaction block, and lifeboat runs this file in one",
        "move the statement into a migration of its own that needs -- lifeboat:no-transaction as its first line",
    ),
    rule(
        "unused-ignore",
        Hygiene,
        Note,
        "a `-- squawk-ignore` comment suppresses nothing",
        "remove the comment (lifeboat's own form is `-- lifeboat:allow <rule> <reason>`)",
    ),
    rule(
        "ban-create-domain-with-constraint",
        Hygiene,
        Warning,
        "a domain's CHECK is hard to change later: altering it revalidates every column of that domain under \
         locks",
        "create the domain without constraints and put the CHECK on each column (replaceable NOT VALID)",
    ),
    rule(
        "ban-alter-domain-with-add-constraint",
        Blocking,
        Warning,
        "adding a constraint to a domain checks every column using it, locking each of those tables",
        "add NOT VALID CHECK constraints on the columns themselves and validate them in a later migration",
    ),
    rule(
        "ban-truncate-cascade",
        Breaking,
        Error,
        "TRUNCATE ... CASCADE also empties every table that references this one, recursively",
        "truncate the tables you mean by name, without CASCADE",
    ),
    opt_in(
        "require-timeout-settings",
        Hygiene,
        Warning,
        "the file sets neither lock_timeout nor statement_timeout",
        "lifeboat sets lock_timeout itself (and statement_timeout when configured); to set them in the file \
         anyway, write SET lock_timeout / SET statement_timeout before the first DDL statement",
    ),
    rule(
        "ban-uncommitted-transaction",
        Invalid,
        Error,
        "a BEGIN without its COMMIT leaves the rest of the file in a transaction that never ends",
        "close the transaction, or drop BEGIN and let lifeboat run the file in its own transaction",
    ),
    rule(
        "require-enum-value-ordering",
        Hygiene,
        Note,
        "a new enum value without BEFORE/AFTER goes last, which is rarely the order its users expect",
        "say where it goes: ALTER TYPE ... ADD VALUE 'x' BEFORE 'y' (or AFTER)",
    ),
    opt_in(
        "require-table-schema",
        Hygiene,
        Note,
        "the table is named without its schema, so search_path decides where it goes",
        "qualify it: schema.table",
    ),
    rule(
        "identifier-too-long",
        Hygiene,
        Warning,
        "PostgreSQL cuts identifiers at 63 bytes, so the object gets another name than the one written",
        "choose a name of at most 63 bytes",
    ),
    rule(
        "require-concurrent-partition-detach",
        Blocking,
        Warning,
        "DETACH PARTITION without CONCURRENTLY takes ACCESS EXCLUSIVE on the partitioned table",
        "use ALTER TABLE ... DETACH PARTITION ... CONCURRENTLY in a `-- lifeboat:no-transaction` migration",
    ),
    rule(
        "require-concurrent-reindex",
        Blocking,
        Warning,
        "REINDEX without CONCURRENTLY blocks writes to the table (and reads using the index) while it rebuilds",
        "use REINDEX ... CONCURRENTLY in a `-- lifeboat:no-transaction` migration",
    ),
    opt_in(
        "require-lock-timeout",
        Hygiene,
        Warning,
        "the file sets no lock_timeout before its DDL",
        "not needed under lifeboat, which SETs lock_timeout for every migration; otherwise SET lock_timeout first",
    ),
    opt_in(
        "require-statement-timeout",
        Hygiene,
        Warning,
        "the file sets no statement_timeout",
        "set [migrate] statement_timeout, a `-- lifeboat:statement-timeout` directive, or SET statement_timeout",
    ),
    rule(
        "ban-duplicate-column-assignments",
        Invalid,
        Error,
        "the same column is assigned twice in one statement, which PostgreSQL refuses",
        "assign each column once",
    ),
    rule(
        "ban-drop-view",
        Breaking,
        Error,
        "the running release may still query this view",
        "stop using the view first (deploy that), then drop it in a later migration",
    ),
    rule(
        "ban-drop-function",
        Breaking,
        Error,
        "the running release, triggers or defaults may still call this function",
        "remove every caller first, then drop it in a later migration",
    ),
    rule(
        "ban-drop-type",
        Breaking,
        Error,
        "the running release may still cast to or use this type",
        "stop using the type first, then drop it in a later migration",
    ),
    rule(
        "ban-drop-default",
        Compatibility,
        Warning,
        "INSERTs of the running release that leave the column out stop getting a value",
        "make sure every writer sets the column before dropping the default",
    ),
    opt_in(
        "ban-drop-trigger",
        Compatibility,
        Warning,
        "the running release may rely on what the trigger does",
        "move the trigger's work into the application first, then drop it",
    ),
    rule(
        "ban-drop-schema",
        Breaking,
        Error,
        "dropping a schema removes every object in it that the running release may use",
        "empty and retire the schema deliberately, after a verified backup",
    ),
    rule(
        "ban-drop-sequence",
        Breaking,
        Error,
        "defaults and the running release may still call nextval on this sequence",
        "remove every use first, then drop it in a later migration",
    ),
    rule(
        "ban-drop-domain",
        Breaking,
        Error,
        "columns and the running release may still use this domain",
        "move the columns to a plain type first, then drop the domain",
    ),
    rule(
        "ban-drop-constraint",
        Compatibility,
        Warning,
        "the running release may count on this constraint keeping the data valid, and putting it back later \
         needs another scan",
        "drop it only once no code relies on it; to replace a constraint, add the new one NOT VALID first",
    ),
    rule(
        "ban-drop-generated-expression",
        Breaking,
        Error,
        "the column stops being computed, so rows written by the running release get no value",
        "have every writer set the column first, then drop the expression",
    ),
    rule(
        "renaming-object",
        Breaking,
        Error,
        "the running release still uses the old name and fails from the moment this commits",
        "create the object under the new name beside the old one, move every user over, then drop the old one",
    ),
    rule(
        "ban-set-schema",
        Breaking,
        Error,
        "moving the object to another schema breaks every query that names it with the old schema or finds it \
         through search_path",
        "create it in the new schema beside the old one (or a view), move users over, then drop the old one",
    ),
    rule(
        "ban-alter-identity",
        Breaking,
        Error,
        "changing an identity column changes which values inserts get or whether they may supply their own",
        "leave the identity as it is and change the application first",
    ),
    rule(
        "ban-drop-extension",
        Breaking,
        Error,
        "dropping an extension drops its types, functions and operators that columns and queries may use",
        "remove every use first, then drop it deliberately",
    ),
    opt_in(
        "ban-alter-generated-expression",
        Blocking,
        Warning,
        "SET EXPRESSION recomputes the column for every row (a rewrite under ACCESS EXCLUSIVE)",
        "add a new generated column and switch readers, or do it in a maintenance window",
    ),
    opt_in(
        "ban-drop-index",
        Compatibility,
        Warning,
        "queries of the running release may depend on this index to stay fast",
        "check pg_stat_user_indexes that it is unused, then drop it CONCURRENTLY",
    ),
    opt_in(
        "ban-set-default",
        Compatibility,
        Warning,
        "a changed default changes what the running release's INSERTs store",
        "change the application to set the value explicitly first",
    ),
    opt_in(
        "ban-disable-trigger",
        Compatibility,
        Warning,
        "while the trigger is off its work is not done for anyone",
        "change the trigger's function instead of switching it off",
    ),
    opt_in(
        "ban-replica-identity",
        Compatibility,
        Warning,
        "changing replica identity or publications changes what logical replicas receive",
        "coordinate with the subscribers first",
    ),
    opt_in(
        "ban-drop-policy",
        Compatibility,
        Warning,
        "dropping a row-level security policy changes who sees which rows",
        "add the replacement policy first, then drop the old one",
    ),
    opt_in(
        "ban-revoke",
        Compatibility,
        Warning,
        "revoking a privilege can make the running release fail with permission errors",
        "revoke only after no release needs the privilege",
    ),
    opt_in(
        "ban-replace-view-function",
        Compatibility,
        Warning,
        "CREATE OR REPLACE changes what the running release gets from this view or function",
        "create a new version under a new name and move callers over",
    ),
    opt_in(
        "ban-alter-policy-condition",
        Compatibility,
        Warning,
        "changing a policy's condition changes which rows the running release sees or may write",
        "add a new policy and retire the old one once the application agrees",
    ),
    opt_in(
        "ban-alter-policy-roles",
        Compatibility,
        Warning,
        "changing a policy's roles changes who the rows are visible to",
        "coordinate the change with the roles the running release uses",
    ),
    opt_in(
        "ban-create-policy",
        Compatibility,
        Warning,
        "a new policy can hide rows from the running release or refuse its writes",
        "check the policy against every role the running release uses",
    ),
    opt_in(
        "ban-alter-function-options",
        Compatibility,
        Warning,
        "changing a function's options (security, volatility, search_path) changes how callers' queries behave",
        "create a new function and move callers over",
    ),
    opt_in(
        "ban-alter-view-options",
        Compatibility,
        Warning,
        "changing a view's options (security_barrier, security_invoker) changes what callers see",
        "create a new view and move callers over",
    ),
    opt_in(
        "ban-alter-role-options",
        Compatibility,
        Warning,
        "changing a role's options changes what sessions using it may do",
        "change roles outside migrations, deliberately",
    ),
    opt_in(
        "ban-alter-database-options",
        Compatibility,
        Warning,
        "changing database settings changes every new session's behaviour",
        "change database settings outside migrations, deliberately",
    ),
    opt_in(
        "ban-alter-row-level-security",
        Compatibility,
        Warning,
        "switching row-level security changes which rows every client sees",
        "create the policies first and switch RLS on with the application ready",
    ),
    opt_in(
        "ban-new-write-restriction",
        Compatibility,
        Warning,
        "a new restriction can refuse writes the running release makes",
        "make the application comply first, then add the restriction NOT VALID",
    ),
    opt_in(
        "ban-add-enum-value",
        Compatibility,
        Warning,
        "readers of the running release may not know the new value",
        "deploy readers that accept the value before writers that use it",
    ),
    opt_in(
        "ban-add-composite-attribute",
        Compatibility,
        Warning,
        "readers of the composite type may not expect the new attribute",
        "deploy readers that accept it first",
    ),
    opt_in(
        "ban-add-column",
        Compatibility,
        Warning,
        "SELECT * and positional INSERTs of the running release see a different table",
        "name columns in every query before adding one",
    ),
    opt_in(
        "ban-detach-inheritance",
        Compatibility,
        Warning,
        "queries on the parent stop seeing the child's rows",
        "move readers to the child first",
    ),
    opt_in(
        "ban-alter-sequence-values",
        Compatibility,
        Warning,
        "changing a sequence's range or position can hand out values already used or run out",
        "change sequences deliberately, checking the values already in use",
    ),
    opt_in(
        "ban-alter-system-options",
        Compatibility,
        Warning,
        "ALTER SYSTEM changes the whole server's configuration from a migration",
        "manage server settings outside migrations",
    ),
    opt_in(
        "ban-alter-extension",
        Compatibility,
        Warning,
        "updating an extension changes its functions and types under the running release",
        "update extensions deliberately, outside application migrations",
    ),
    // lifeboat's own rules.
    rule(
        "prefer-jsonb",
        Hygiene,
        Warning,
        "json keeps the text as written and has no equality operator, so DISTINCT, GROUP BY, UNION and unique \
         indexes on it fail",
        "use jsonb",
    ),
    rule(
        "adding-exclusion-constraint",
        Blocking,
        Warning,
        "an exclusion constraint is built and checked under ACCESS EXCLUSIVE and cannot be added NOT VALID or from \
         an index built concurrently: there is no non-blocking way",
        "add it while the table is new or small, or in a maintenance window; on a large table allow it on purpose \
         with `-- lifeboat:allow adding-exclusion-constraint <reason>`",
    ),
    rule(
        "adding-stored-generated-column",
        Blocking,
        Warning,
        "a STORED generated column is computed for every existing row: the table is rewritten under ACCESS \
         EXCLUSIVE",
        "on PostgreSQL 18+ add it VIRTUAL (computed on read, no rewrite); otherwise add a plain nullable column, \
         fill it with a trigger for new rows and a batched backfill for old ones",
    ),
    rule(
        "adding-serial-column",
        Blocking,
        Warning,
        "a serial column on an existing table takes nextval() for every row: the table is rewritten under ACCESS \
         EXCLUSIVE",
        "add a nullable bigint column, attach a sequence with SET DEFAULT nextval(...), backfill in batches, then \
         add NOT NULL the safe way",
    ),
    rule(
        "concurrent-index-corruption-bug",
        Invalid,
        Error,
        "PostgreSQL 14.0 to 14.3 can build corrupt indexes with CREATE INDEX CONCURRENTLY or REINDEX CONCURRENTLY",
        "upgrade the server to 14.4 or later first (and REINDEX the indexes built concurrently on 14.0-14.3)",
    ),
    rule(
        "concurrently-in-transaction",
        Invalid,
        Error,
        "DROP INDEX, REINDEX and DETACH PARTITION ... CONCURRENTLY cannot run inside a transaction block, and \
         lifeboat runs this file in one",
        "move the statement into a migration of its own that needs -- lifeboat:no-transaction as its first line",
    ),
    rule(
        "unbatched-backfill",
        Blocking,
        Warning,
        "an UPDATE or DELETE of every row runs in one transaction: it locks each row until the end, bloats the \
         table and generates WAL for all of it at once",
        "backfill in batches outside the schema migration (e.g. UPDATE ... WHERE id BETWEEN x AND y, committing \
         each batch, in a `-- lifeboat:no-transaction` migration or a job), throttled",
    ),
    rule(
        UNUSED_ALLOW,
        Hygiene,
        Note,
        "this `-- lifeboat:allow` suppresses nothing: the next statement has no such finding",
        "remove the directive, or move it just above the statement it is meant for",
    ),
    rule(
        SYNTAX_ERROR,
        Hygiene,
        Warning,
        "the linter's parser could not read part of this statement, so its findings there may be incomplete",
        "check the statement; if PostgreSQL accepts it, review it by hand",
    ),
];

/// The rule called `name`, accepting squawk's aliases (`prefer-timestamptz`).
pub fn find(name: &str) -> Option<&'static RuleInfo> {
    let name = match name {
        "prefer-timestamptz" => "prefer-timestamp-tz",
        other => other,
    };
    RULES.iter().find(|rule| rule.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_squawk_rule_has_lifeboats_wording_and_names_are_unique() {
        for rule in enum_iterator::all::<squawk_linter::Rule>() {
            let name = rule.to_string();
            assert!(find(&name).is_some(), "squawk's {name} has no entry in RULES");
        }
        let mut names: Vec<&str> = RULES.iter().map(|rule| rule.name).collect();
        names.sort_unstable();
        let count = names.len();
        names.dedup();
        assert_eq!(names.len(), count, "a rule name is listed twice");
        for rule in RULES {
            assert!(!rule.message.is_empty() && !rule.fix.is_empty(), "{}", rule.name);
            if rule.category == Category::Breaking || rule.category == Category::Invalid {
                assert_eq!(rule.severity, Severity::Error, "{}", rule.name);
            }
        }
    }
}
