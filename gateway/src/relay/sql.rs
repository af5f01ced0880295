//! Just enough SQL reading for transaction pooling: spotting statements
//! that change session state (`SET`, `RESET`, `DISCARD`, `DEALLOCATE`) and
//! the session-only features that must keep a client on one server
//! connection (`LISTEN`, session advisory locks, temporary tables, SQL
//! `PREPARE`, `WITH HOLD` cursors, `SET ROLE`). A scanner over keywords,
//! not a parser: it reads the first statement's leading words and looks
//! for advisory-lock calls anywhere in the text.

/// What a statement does to session state.
#[derive(Debug, PartialEq, Eq)]
pub enum SessionEffect<'a> {
    /// `SET [SESSION] name {TO|=} value` of a parameter the server does not
    /// report (reported ones arrive as ParameterStatus): re-applied later as
    /// `SET name TO value`, with `value` exactly as written.
    Set {
        /// Parameter name, lower case.
        name: String,
        /// The value's SQL text.
        value: &'a str,
    },
    /// `RESET name`.
    Reset(String),
    /// `RESET ALL` or `DISCARD ALL`.
    ResetAll,
    /// `DEALLOCATE [PREPARE] name` (`None`: `ALL`).
    Deallocate(Option<String>),
    /// A session-only feature, named for logs and errors.
    SessionOnly(&'static str),
    /// Nothing the pooler tracks.
    None,
}

/// Parameters the server reports with ParameterStatus; the pooler tracks
/// those from the reports, not from SQL.
pub fn is_reported(name: &str) -> bool {
    matches!(
        name.to_ascii_lowercase().as_str(),
        "application_name"
            | "client_encoding"
            | "datestyle"
            | "intervalstyle"
            | "timezone"
            | "standard_conforming_strings"
            | "is_superuser"
            | "session_authorization"
            | "server_encoding"
            | "server_version"
            | "integer_datetimes"
            | "default_transaction_read_only"
            | "in_hot_standby"
            | "scram_iterations"
    )
}

/// Reads the session effect of `sql` (the first statement only, plus an
/// advisory-lock scan of the whole text).
pub fn session_effect(sql: &str) -> SessionEffect<'_> {
    if let Some(feature) = advisory_lock(sql) {
        return SessionEffect::SessionOnly(feature);
    }
    let mut words = Words::new(sql);
    let Some(first) = words.next() else {
        return SessionEffect::None;
    };
    let upper = first.to_ascii_uppercase();
    match upper.as_str() {
        "SET" => set_effect(words),
        "RESET" => match words.next() {
            Some(w) if w.eq_ignore_ascii_case("ALL") => SessionEffect::ResetAll,
            Some(w) if w.eq_ignore_ascii_case("SESSION") || w.eq_ignore_ascii_case("ROLE") => {
                SessionEffect::None
            }
            Some(w) if is_reported(w) => SessionEffect::None,
            Some(w) if is_name(w) => SessionEffect::Reset(w.to_ascii_lowercase()),
            _ => SessionEffect::None,
        },
        "DISCARD" => match words.next() {
            Some(w) if w.eq_ignore_ascii_case("ALL") => SessionEffect::ResetAll,
            _ => SessionEffect::None,
        },
        "DEALLOCATE" => {
            let mut next = words.next();
            if next.is_some_and(|w| w.eq_ignore_ascii_case("PREPARE")) {
                next = words.next();
            }
            match next {
                Some(w) if w.eq_ignore_ascii_case("ALL") => SessionEffect::Deallocate(None),
                Some(w) => SessionEffect::Deallocate(Some(unquote(w))),
                None => SessionEffect::None,
            }
        }
        "LISTEN" => SessionEffect::SessionOnly("LISTEN"),
        "PREPARE" => SessionEffect::SessionOnly("PREPARE (SQL prepared statements)"),
        "LOAD" => SessionEffect::SessionOnly("LOAD"),
        "DECLARE" => {
            // DECLARE name [BINARY] [ASENSITIVE|INSENSITIVE] [[NO] SCROLL] CURSOR {WITH|WITHOUT} HOLD FOR …
            for w in words.by_ref().take(8) {
                if w.eq_ignore_ascii_case("HOLD") {
                    return SessionEffect::SessionOnly("cursors WITH HOLD");
                }
                if w.eq_ignore_ascii_case("FOR") {
                    break;
                }
            }
            SessionEffect::None
        }
        "CREATE" => {
            let mut saw_temp = false;
            for w in words.by_ref().take(4) {
                let w = w.to_ascii_uppercase();
                match w.as_str() {
                    "TEMP" | "TEMPORARY" => saw_temp = true,
                    "GLOBAL" | "LOCAL" | "OR" | "REPLACE" | "UNLOGGED" => {}
                    _ => break,
                }
            }
            if saw_temp && !contains_ignore_case(sql, "ON COMMIT DROP") {
                SessionEffect::SessionOnly("temporary tables")
            } else {
                SessionEffect::None
            }
        }
        _ => SessionEffect::None,
    }
}

fn set_effect<'a>(mut words: Words<'a>) -> SessionEffect<'a> {
    let Some(mut name) = words.next() else {
        return SessionEffect::None;
    };
    if name.eq_ignore_ascii_case("LOCAL") {
        return SessionEffect::None; // transaction-scoped
    }
    if name.eq_ignore_ascii_case("SESSION") {
        match words.next() {
            Some(w) if w.eq_ignore_ascii_case("AUTHORIZATION") => {
                return SessionEffect::SessionOnly("SET SESSION AUTHORIZATION")
            }
            Some(w) if w.eq_ignore_ascii_case("CHARACTERISTICS") => {
                return SessionEffect::SessionOnly("SET SESSION CHARACTERISTICS")
            }
            Some(w) => name = w,
            None => return SessionEffect::None,
        }
    }
    let upper = name.to_ascii_uppercase();
    match upper.as_str() {
        "ROLE" => return SessionEffect::SessionOnly("SET ROLE"),
        "TRANSACTION" | "CONSTRAINTS" | "TIME" | "NAMES" => return SessionEffect::None,
        "SCHEMA" => {
            return match words.rest() {
                Some(value) => SessionEffect::Set {
                    name: "search_path".into(),
                    value,
                },
                None => SessionEffect::None,
            }
        }
        _ => {}
    }
    if !is_name(name) || is_reported(name) {
        return SessionEffect::None;
    }
    match words.next() {
        Some(w) if w == "=" || w.eq_ignore_ascii_case("TO") => {}
        _ => return SessionEffect::None,
    }
    match words.rest() {
        Some(value) if value.eq_ignore_ascii_case("DEFAULT") => {
            SessionEffect::Reset(name.to_ascii_lowercase())
        }
        Some(value) => SessionEffect::Set {
            name: name.to_ascii_lowercase(),
            value,
        },
        None => SessionEffect::None,
    }
}

/// A parameter name: letters, digits, `_`, `.` (custom `ext.name`).
fn is_name(w: &str) -> bool {
    !w.is_empty()
        && w.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.')
}

fn unquote(w: &str) -> String {
    w.strip_prefix('"')
        .and_then(|w| w.strip_suffix('"'))
        .map(str::to_string)
        .unwrap_or_else(|| w.to_ascii_lowercase())
}

fn contains_ignore_case(haystack: &str, needle: &str) -> bool {
    let needle = needle.as_bytes();
    haystack
        .as_bytes()
        .windows(needle.len())
        .any(|w| w.eq_ignore_ascii_case(needle))
}

/// Session-level advisory lock calls (the `_xact_` ones end with the
/// transaction and are fine).
fn advisory_lock(sql: &str) -> Option<&'static str> {
    let bytes = sql.as_bytes();
    let mut at = 0;
    while let Some(pos) = find_ignore_case(&bytes[at..], b"advisory_lock") {
        let start = at + pos;
        let before = &bytes[..start];
        let session = before.ends_with(b"pg_")
            || before.ends_with(b"pg_try_")
            || before.ends_with(b"PG_")
            || before.ends_with(b"PG_TRY_");
        if session {
            return Some("session advisory locks");
        }
        at = start + 1;
    }
    None
}

fn find_ignore_case(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|w| w.eq_ignore_ascii_case(needle))
}

/// Words of the first statement: skips whitespace and comments; `=` is a
/// word of its own; a quoted identifier is one word.
struct Words<'a> {
    sql: &'a str,
    at: usize,
}

impl<'a> Words<'a> {
    fn new(sql: &'a str) -> Self {
        Words { sql, at: 0 }
    }

    fn skip_space(&mut self) {
        let b = self.sql.as_bytes();
        loop {
            while self.at < b.len() && b[self.at].is_ascii_whitespace() {
                self.at += 1;
            }
            if b[self.at..].starts_with(b"--") {
                while self.at < b.len() && b[self.at] != b'\n' {
                    self.at += 1;
                }
            } else if b[self.at..].starts_with(b"/*") {
                match self.sql[self.at + 2..].find("*/") {
                    Some(end) => self.at += end + 4,
                    None => self.at = b.len(),
                }
            } else {
                return;
            }
        }
    }

    /// The rest of the statement, trimmed, up to a `;` outside quotes.
    fn rest(&mut self) -> Option<&'a str> {
        self.skip_space();
        let b = self.sql.as_bytes();
        let start = self.at;
        let mut quote: Option<u8> = None;
        let mut i = start;
        while i < b.len() {
            match (quote, b[i]) {
                (None, b'\'' | b'"') => quote = Some(b[i]),
                (Some(q), c) if c == q => quote = None,
                (None, b';') => break,
                _ => {}
            }
            i += 1;
        }
        let value = self.sql[start..i].trim();
        (!value.is_empty() && quote.is_none()).then_some(value)
    }
}

impl<'a> Iterator for Words<'a> {
    type Item = &'a str;
    fn next(&mut self) -> Option<&'a str> {
        self.skip_space();
        let b = self.sql.as_bytes();
        let start = self.at;
        match b.get(start)? {
            b'=' => {
                self.at += 1;
                Some(&self.sql[start..start + 1])
            }
            b'"' => {
                let end = self.sql[start + 1..].find('"')? + start + 2;
                self.at = end;
                Some(&self.sql[start..end])
            }
            b';' => None,
            _ => {
                while self.at < b.len()
                    && !b[self.at].is_ascii_whitespace()
                    && !matches!(b[self.at], b'=' | b';' | b'(' | b'\'')
                {
                    self.at += 1;
                }
                (self.at > start).then(|| &self.sql[start..self.at])
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use SessionEffect::*;

    #[test]
    fn set_statements() {
        assert_eq!(
            session_effect("SET search_path TO app, public"),
            Set {
                name: "search_path".into(),
                value: "app, public"
            }
        );
        assert_eq!(
            session_effect("  /* c */ set SESSION statement_timeout = '5s'; select 1"),
            Set {
                name: "statement_timeout".into(),
                value: "'5s'"
            }
        );
        assert_eq!(
            session_effect("SET myapp.tenant = 'a;b'"),
            Set {
                name: "myapp.tenant".into(),
                value: "'a;b'"
            }
        );
        assert_eq!(
            session_effect("SET SCHEMA 'x'"),
            Set {
                name: "search_path".into(),
                value: "'x'"
            }
        );
        assert_eq!(session_effect("SET LOCAL search_path TO x"), None);
        assert_eq!(
            session_effect("SET application_name = 'x'"),
            None,
            "reported"
        );
        assert_eq!(session_effect("SET TIME ZONE 'UTC'"), None, "reported");
        assert_eq!(
            session_effect("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE"),
            None
        );
        assert_eq!(
            session_effect("set work_mem to default"),
            Reset("work_mem".into())
        );
        assert_eq!(session_effect("RESET ALL"), ResetAll);
        assert_eq!(session_effect("discard all"), ResetAll);
        assert_eq!(
            session_effect("RESET search_path"),
            Reset("search_path".into())
        );
        assert_eq!(session_effect("SET ROLE other"), SessionOnly("SET ROLE"));
    }

    #[test]
    fn session_only_features() {
        assert_eq!(session_effect("LISTEN chan"), SessionOnly("LISTEN"));
        assert_eq!(
            session_effect("select pg_advisory_lock(1)"),
            SessionOnly("session advisory locks")
        );
        assert_eq!(
            session_effect("SELECT PG_TRY_ADVISORY_LOCK(1)"),
            SessionOnly("session advisory locks")
        );
        assert_eq!(session_effect("select pg_advisory_xact_lock(1)"), None);
        assert_eq!(
            session_effect("CREATE TEMP TABLE t (a int)"),
            SessionOnly("temporary tables")
        );
        assert_eq!(
            session_effect("create temporary table t as select 1 on commit drop"),
            None
        );
        assert_eq!(session_effect("CREATE TABLE temp (a int)"), None);
        assert_eq!(
            session_effect("PREPARE q AS SELECT 1"),
            SessionOnly("PREPARE (SQL prepared statements)")
        );
        assert_eq!(
            session_effect("DECLARE c CURSOR WITH HOLD FOR SELECT 1"),
            SessionOnly("cursors WITH HOLD")
        );
        assert_eq!(session_effect("DECLARE c CURSOR FOR SELECT 1"), None);
        assert_eq!(
            session_effect("DEALLOCATE PREPARE s1"),
            Deallocate(Some("s1".into()))
        );
        assert_eq!(session_effect("deallocate all"), Deallocate(Option::None));
        assert_eq!(session_effect("SELECT 1"), None);
        assert_eq!(session_effect(""), None);
        assert_eq!(session_effect("-- only a comment"), None);
        assert_eq!(session_effect("/* unterminated"), None);
    }
}
