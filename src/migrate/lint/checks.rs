//! lifeboat's own checks, for what squawk does not look at (strong_migrations' PostgreSQL checks
//! among them): json columns, exclusion constraints, stored generated and serial columns added to
//! an existing table, concurrent index builds on PostgreSQL 14.0-14.3, and backfills without a
//! WHERE. Each returns the rule and the byte offset of what it flags in the file's text.

use std::collections::HashSet;

use squawk_syntax::ast::{self, AstNode};
use squawk_syntax::{Parse, SourceFile, SyntaxKind, SyntaxNode};

use crate::config::ServerVersion;

/// One raw finding: the rule and where in the text.
pub(super) struct Hit {
    pub rule: &'static str,
    pub offset: usize,
}

/// The checks over a whole file. `transaction`: lifeboat runs the file in one; `server` is the
/// target's version when known.
pub(super) fn run(parse: &Parse<SourceFile>, transaction: bool, server: Option<ServerVersion>) -> Vec<Hit> {
    let file = parse.tree();
    let created = tables_created(&file);
    let mut hits = Vec::new();
    let mut hit = |rule: &'static str, node: &SyntaxNode| hits.push(Hit { rule, offset: start_of(node) });
    let affected = server.is_some_and(|version| version.major == 14 && version.minor <= 3);
    // squawk leaves a file of one CREATE INDEX CONCURRENTLY alone (its tools run such a file
    // outside a transaction); lifeboat runs it in one unless the file says otherwise.
    let alone = file.stmts().count() == 1;
    for stmt in file.stmts() {
        if transaction && has_token(stmt.syntax(), SyntaxKind::CONCURRENTLY_KW) {
            match &stmt {
                ast::Stmt::CreateIndex(_) if alone => {
                    hit("ban-concurrent-index-creation-in-transaction", stmt.syntax())
                }
                ast::Stmt::DropIndex(_) | ast::Stmt::Reindex(_) | ast::Stmt::AlterTable(_) => {
                    hit("concurrently-in-transaction", stmt.syntax())
                }
                _ => {}
            }
        }
        match &stmt {
            ast::Stmt::CreateTable(create) => {
                for column in create.table_arg_list().into_iter().flat_map(|list| list.args()) {
                    if let ast::TableArg::Column(column) = column
                        && let Some(ty) = column.ty()
                        && is_type(&ty, &["json"])
                    {
                        hit("prefer-jsonb", ty.syntax());
                    }
                }
            }
            ast::Stmt::AlterTable(alter) => {
                let existing = !target_in(alter.syntax(), &created);
                for action in alter.actions() {
                    match action {
                        ast::AlterTableAction::AddColumn(add) => {
                            if let Some(ty) = add.ty() {
                                if is_type(&ty, &["json"]) {
                                    hit("prefer-jsonb", ty.syntax());
                                }
                                if existing
                                    && is_type(
                                        &ty,
                                        &["serial", "serial4", "bigserial", "serial8", "smallserial", "serial2"],
                                    )
                                {
                                    hit("adding-serial-column", ty.syntax());
                                }
                            }
                            for constraint in add.constraints() {
                                if let ast::Constraint::GeneratedConstraint(generated) = constraint
                                    && existing
                                    && has_token(generated.syntax(), SyntaxKind::STORED_KW)
                                {
                                    hit("adding-stored-generated-column", generated.syntax());
                                }
                            }
                        }
                        ast::AlterTableAction::AlterColumn(alter_column) => {
                            if let Some(ast::AlterColumnOption::SetType(set_type)) = alter_column.option()
                                && let Some(ty) = set_type.ty()
                                && is_type(&ty, &["json"])
                            {
                                hit("prefer-jsonb", ty.syntax());
                            }
                        }
                        ast::AlterTableAction::AddConstraint(add) => {
                            if let Some(ast::Constraint::ExcludeConstraint(_)) = add.constraint()
                                && existing
                            {
                                hit("adding-exclusion-constraint", add.syntax());
                            }
                        }
                        _ => {}
                    }
                }
            }
            ast::Stmt::CreateIndex(index) if affected && index.concurrently_token().is_some() => {
                hit("concurrent-index-corruption-bug", index.syntax());
            }
            ast::Stmt::Reindex(reindex) if affected && has_token(reindex.syntax(), SyntaxKind::CONCURRENTLY_KW) => {
                hit("concurrent-index-corruption-bug", reindex.syntax());
            }
            ast::Stmt::Update(update)
                if update.where_clause_or_current_of().is_none() && !target_in(update.syntax(), &created) =>
            {
                hit("unbatched-backfill", update.syntax());
            }
            ast::Stmt::Delete(delete)
                if delete.where_clause_or_current_of().is_none() && !target_in(delete.syntax(), &created) =>
            {
                hit("unbatched-backfill", delete.syntax());
            }
            _ => {}
        }
    }
    hits
}

/// Whether squawk's `adding-field-with-default` finding at `offset` is a generated column that
/// lifeboat judges itself: a STORED one is [`run`]'s `adding-stored-generated-column`, a VIRTUAL
/// one (PostgreSQL 18) rewrites nothing. Identity columns stay squawk's.
pub(super) fn is_generated_column(parse: &Parse<SourceFile>, offset: usize) -> bool {
    let root = parse.syntax_node();
    let Some(token) = root.token_at_offset((offset as u32).into()).right_biased() else { return false };
    token
        .parent_ancestors()
        .any(|node| node.kind() == SyntaxKind::GENERATED_CONSTRAINT && !has_token(&node, SyntaxKind::IDENTITY_KW))
}

/// The names (last segment, as squawk compares them) of the tables the file creates.
fn tables_created(file: &ast::SourceFile) -> HashSet<String> {
    file.stmts()
        .filter_map(|stmt| match stmt {
            ast::Stmt::CreateTable(create) => create
                .table_name()
                .and_then(|name| name.path())
                .and_then(|path| path.segment())
                .map(|segment| segment.text()),
            _ => None,
        })
        .collect()
}

/// Whether the table `statement` works on is one of `created`.
fn target_in(statement: &SyntaxNode, created: &HashSet<String>) -> bool {
    statement
        .descendants()
        .find(|node| matches!(node.kind(), SyntaxKind::PATH | SyntaxKind::PATH_REF))
        .and_then(|path| {
            path.children()
                .filter(|child| matches!(child.kind(), SyntaxKind::PATH_SEGMENT | SyntaxKind::PATH_SEGMENT_REF))
                .last()
        })
        .is_some_and(|segment| created.contains(&ast::normalize_name_node(&segment)))
}

fn is_type(ty: &ast::Type, names: &[&str]) -> bool {
    match ty {
        ast::Type::ArrayType(array) => array.ty().is_some_and(|inner| is_type(&inner, names)),
        ast::Type::PathType(path) => path
            .path_ref()
            .and_then(|path| path.segment())
            .is_some_and(|segment| names.contains(&segment.text().to_ascii_lowercase().as_str())),
        _ => false,
    }
}

fn has_token(node: &SyntaxNode, kind: SyntaxKind) -> bool {
    node.descendants_with_tokens().any(|element| element.kind() == kind)
}

/// The offset of the node's first token that is not whitespace or a comment.
pub(super) fn start_of(node: &SyntaxNode) -> usize {
    node.descendants_with_tokens()
        .find(|element| element.as_token().is_some() && !element.kind().is_trivia())
        .map_or_else(|| usize::from(node.text_range().start()), |element| usize::from(element.text_range().start()))
}
