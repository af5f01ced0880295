//! SQL quoting for the statements backends send (`CREATE ROLE`, `CREATE
//! DATABASE`, `GRANT` …), which take no bind parameters.
//!
//! Both assume `standard_conforming_strings = on` (the default since
//! PostgreSQL 9.1): a backslash is an ordinary character, never an escape.

/// `name` as a double-quoted SQL identifier: `a"b` → `"a""b"`.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `value` as a single-quoted SQL string literal: `it's` → `'it''s'`.
pub fn quote_literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_double_their_quotes() {
        assert_eq!(quote_ident("shop"), "\"shop\"");
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(quote_ident("\""), "\"\"\"\"");
        assert_eq!(quote_ident(""), "\"\"");
        // Single quotes and backslashes are ordinary inside an identifier.
        assert_eq!(quote_ident("o'k\\"), "\"o'k\\\"");
        assert_eq!(quote_ident("Mixed Case;--"), "\"Mixed Case;--\"");
    }

    #[test]
    fn literals_double_their_quotes_and_keep_backslashes() {
        assert_eq!(quote_literal("pw"), "'pw'");
        assert_eq!(quote_literal("it's"), "'it''s'");
        assert_eq!(quote_literal("''"), "''''''");
        assert_eq!(quote_literal("a\\'b"), "'a\\''b'");
        assert_eq!(quote_literal("\\"), "'\\'");
        assert_eq!(quote_literal("\"x\""), "'\"x\"'");
        assert_eq!(quote_literal(""), "''");
    }
}
