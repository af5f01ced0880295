//! Just enough SQL reading for transaction pooling: spotting statements
//! that change session state (`SET`, `RESET`, `DISCARD`, `DEALLOCATE`) and
//! the session-only features that must keep a client on one server
//! connection (`LISTEN`, session advisory locks, temporary tables, SQL
//! `PREPARE`, `WITH HOLD` cursors, `SET ROLE`). A scanner over keywords,
//! not a parser: it reads the first statement's leading words and looks
//! for advisory-lock calls anywhere in the text.
//!
//! It reads bytes in the client's encoding, never requiring UTF-8. In most
//! encodings (UTF-8, EUC, LATIN, WIN125x) every byte below 0x80 is an ASCII
//! character; in SJIS, BIG5, GBK, UHC, JOHAB and GB18030 the second byte of
//! a character may be an ASCII backslash, so inside strings where a
//! backslash escapes (`E'…'`, or any string with
//! `standard_conforming_strings = off`) the scanner steps over whole
//! characters ([`Charset`]).

/// What a statement does to session state.
#[derive(Debug, PartialEq, Eq)]
pub enum SessionEffect<'a> {
    /// `SET [SESSION] name {TO|=} value` of a parameter the server does not
    /// report (reported ones arrive as ParameterStatus): re-applied later as
    /// `SET name TO value`, with `value` exactly as written.
    Set {
        /// Parameter name, lower case.
        name: String,
        /// The value's SQL text, in the client encoding.
        value: &'a [u8],
    },
    /// `RESET name`.
    Reset(String),
    /// `RESET ALL` or `DISCARD ALL`.
    ResetAll,
    /// `DEALLOCATE [PREPARE] name` (`None`: `ALL`).
    Deallocate(Option<Vec<u8>>),
    /// A session-only feature, named for logs and errors.
    SessionOnly(&'static str),
    /// Nothing the pooler tracks.
    None,
}

/// How a client encoding lays out its characters, as far as finding the
/// end of a string is concerned.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Charset {
    /// Every byte below 0x80 is an ASCII character (UTF8, EUC_*, LATIN*,
    /// WIN125x, KOI8*, ISO_8859_*, SQL_ASCII, MULE_INTERNAL).
    #[default]
    AsciiSafe,
    /// SJIS and SHIFT_JIS_2004: 0x81–0x9F and 0xE0–0xFC lead two bytes;
    /// 0xA1–0xDF are one-byte katakana.
    Sjis,
    /// BIG5, GBK, UHC, JOHAB: every byte from 0x80 leads two bytes.
    DoubleByte,
    /// GB18030: a high byte leads two bytes, or four when the second is a
    /// digit.
    Gb18030,
}

impl Charset {
    /// The charset of a `client_encoding` value, in the server's spelling
    /// or any alias Postgres accepts (case, `-` and `_` ignored).
    pub fn of(client_encoding: &[u8]) -> Charset {
        let name: Vec<u8> = client_encoding
            .iter()
            .filter(|b| b.is_ascii_alphanumeric())
            .map(u8::to_ascii_lowercase)
            .collect();
        match &name[..] {
            b"sjis" | b"shiftjis" | b"mskanji" | b"win932" | b"shiftjis2004" => Charset::Sjis,
            b"big5" | b"win950" | b"gbk" | b"win936" | b"cp936" | b"uhc" | b"win949" | b"cp949"
            | b"johab" => Charset::DoubleByte,
            b"gb18030" => Charset::Gb18030,
            _ => Charset::AsciiSafe,
        }
    }

    /// Bytes of the character starting `text` (at least 1, at most what is
    /// left).
    fn char_len(self, text: &[u8]) -> usize {
        let Some(&lead) = text.first() else {
            return 0;
        };
        let len = match self {
            _ if lead < 0x80 => 1,
            Charset::AsciiSafe => 1,
            Charset::Sjis if (0xa1..=0xdf).contains(&lead) => 1,
            Charset::Sjis | Charset::DoubleByte => 2,
            Charset::Gb18030 => match text.get(1) {
                Some(b'0'..=b'9') => 4,
                _ => 2,
            },
        };
        len.min(text.len())
    }
}

/// What the scanner must know of the client's session to read its SQL.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Dialect {
    /// The client encoding's layout.
    pub charset: Charset,
    /// `standard_conforming_strings = off`: a backslash escapes in every
    /// string, not only in `E'…'`.
    pub backslash_strings: bool,
}

impl Dialect {
    /// The dialect of a session with these reported `client_encoding` and
    /// `standard_conforming_strings` values.
    pub fn of(client_encoding: Option<&[u8]>, standard_conforming_strings: Option<&[u8]>) -> Self {
        Dialect {
            charset: client_encoding.map(Charset::of).unwrap_or_default(),
            backslash_strings: standard_conforming_strings == Some(b"off"),
        }
    }

    /// The dialect of a session whose reported parameters are `params`.
    pub fn of_params(params: &crate::pool::params::Params) -> Self {
        Dialect::of(
            params.get("client_encoding"),
            params.get("standard_conforming_strings"),
        )
    }
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

/// Whether `sql` may send a notification (`NOTIFY`, `pg_notify(…)`): the
/// pooler then remembers which client used the server connection, so
/// listeners see that client's pid.
pub fn notifies(sql: &[u8]) -> bool {
    find_ignore_case(sql, b"notify").is_some()
}

/// Reads the session effect of `sql` (the first statement only, plus an
/// advisory-lock scan of the whole text).
pub fn session_effect(sql: &[u8], dialect: Dialect) -> SessionEffect<'_> {
    if let Some(feature) = advisory_lock(sql) {
        return SessionEffect::SessionOnly(feature);
    }
    let mut words = Words::new(sql, dialect);
    let Some(first) = words.next() else {
        return SessionEffect::None;
    };
    let upper = first.to_ascii_uppercase();
    match &upper[..] {
        b"SET" => set_effect(words),
        b"RESET" => match words.next() {
            Some(w) if w.eq_ignore_ascii_case(b"ALL") => SessionEffect::ResetAll,
            Some(w) if w.eq_ignore_ascii_case(b"SESSION") || w.eq_ignore_ascii_case(b"ROLE") => {
                SessionEffect::None
            }
            Some(w) => match name_of(w) {
                Some(name) if !is_reported(&name) => SessionEffect::Reset(name),
                _ => SessionEffect::None,
            },
            None => SessionEffect::None,
        },
        b"DISCARD" => match words.next() {
            Some(w) if w.eq_ignore_ascii_case(b"ALL") => SessionEffect::ResetAll,
            _ => SessionEffect::None,
        },
        b"DEALLOCATE" => {
            let mut next = words.next();
            if next.is_some_and(|w| w.eq_ignore_ascii_case(b"PREPARE")) {
                next = words.next();
            }
            match next {
                Some(w) if w.eq_ignore_ascii_case(b"ALL") => SessionEffect::Deallocate(None),
                Some(w) => SessionEffect::Deallocate(Some(unquote(w))),
                None => SessionEffect::None,
            }
        }
        b"LISTEN" => SessionEffect::SessionOnly("LISTEN"),
        b"PREPARE" => SessionEffect::SessionOnly("PREPARE (SQL prepared statements)"),
        b"LOAD" => SessionEffect::SessionOnly("LOAD"),
        b"DECLARE" => {
            // DECLARE name [BINARY] [ASENSITIVE|INSENSITIVE] [[NO] SCROLL] CURSOR {WITH|WITHOUT} HOLD FOR …
            for w in words.by_ref().take(8) {
                if w.eq_ignore_ascii_case(b"HOLD") {
                    return SessionEffect::SessionOnly("cursors WITH HOLD");
                }
                if w.eq_ignore_ascii_case(b"FOR") {
                    break;
                }
            }
            SessionEffect::None
        }
        b"CREATE" => {
            let mut saw_temp = false;
            for w in words.by_ref().take(4) {
                match &w.to_ascii_uppercase()[..] {
                    b"TEMP" | b"TEMPORARY" => saw_temp = true,
                    b"GLOBAL" | b"LOCAL" | b"OR" | b"REPLACE" | b"UNLOGGED" => {}
                    _ => break,
                }
            }
            if saw_temp && find_ignore_case(sql, b"ON COMMIT DROP").is_none() {
                SessionEffect::SessionOnly("temporary tables")
            } else {
                SessionEffect::None
            }
        }
        _ => SessionEffect::None,
    }
}

/// Whether `sql` holds one statement only (an optional `;` and space or
/// comments after it).
pub fn is_single_statement(sql: &[u8], dialect: Dialect) -> bool {
    let mut words = Words::new(sql, dialect);
    if words.rest().is_none() {
        return false;
    }
    words.at += 1; // the `;`, if any
    words.skip_space();
    words.at >= sql.len()
}

fn set_effect(mut words: Words<'_>) -> SessionEffect<'_> {
    let Some(mut name) = words.next() else {
        return SessionEffect::None;
    };
    if name.eq_ignore_ascii_case(b"LOCAL") {
        return SessionEffect::None; // transaction-scoped
    }
    if name.eq_ignore_ascii_case(b"SESSION") {
        match words.next() {
            Some(w) if w.eq_ignore_ascii_case(b"AUTHORIZATION") => {
                return SessionEffect::SessionOnly("SET SESSION AUTHORIZATION")
            }
            Some(w) if w.eq_ignore_ascii_case(b"CHARACTERISTICS") => {
                return SessionEffect::SessionOnly("SET SESSION CHARACTERISTICS")
            }
            Some(w) => name = w,
            None => return SessionEffect::None,
        }
    }
    match &name.to_ascii_uppercase()[..] {
        b"ROLE" => return SessionEffect::SessionOnly("SET ROLE"),
        b"TRANSACTION" | b"CONSTRAINTS" | b"TIME" | b"NAMES" => return SessionEffect::None,
        b"SCHEMA" => {
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
    let Some(name) = name_of(name).filter(|n| !is_reported(n)) else {
        return SessionEffect::None;
    };
    match words.next() {
        Some(w) if w == b"=" || w.eq_ignore_ascii_case(b"TO") => {}
        _ => return SessionEffect::None,
    }
    match words.rest() {
        Some(value) if value.eq_ignore_ascii_case(b"DEFAULT") => SessionEffect::Reset(name),
        Some(value) => SessionEffect::Set { name, value },
        None => SessionEffect::None,
    }
}

/// A parameter name (letters, digits, `_`, `.` for custom `ext.name`),
/// lower case.
fn name_of(w: &[u8]) -> Option<String> {
    let valid = !w.is_empty()
        && w.iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'_' || *b == b'.');
    valid.then(|| String::from_utf8_lossy(w).to_ascii_lowercase())
}

/// A statement name as the server stores it: a quoted identifier without
/// its quotes (`""` → `"`), an unquoted one in lower case.
fn unquote(w: &[u8]) -> Vec<u8> {
    match w.strip_prefix(b"\"").and_then(|w| w.strip_suffix(b"\"")) {
        Some(inner) => {
            let mut name = Vec::with_capacity(inner.len());
            let mut i = 0;
            while i < inner.len() {
                name.push(inner[i]);
                i += if inner[i] == b'"' { 2 } else { 1 };
            }
            name
        }
        None => w.to_ascii_lowercase(),
    }
}

/// Session-level advisory lock calls (the `_xact_` ones end with the
/// transaction and are fine).
fn advisory_lock(sql: &[u8]) -> Option<&'static str> {
    let mut at = 0;
    while let Some(pos) = find_ignore_case(&sql[at..], b"advisory_lock") {
        let start = at + pos;
        let before = &sql[..start];
        let ends_with = |suffix: &[u8]| {
            before.len() >= suffix.len()
                && before[before.len() - suffix.len()..].eq_ignore_ascii_case(suffix)
        };
        if ends_with(b"pg_") || ends_with(b"pg_try_") {
            return Some("session advisory locks");
        }
        at = start + 1;
    }
    None
}

fn find_ignore_case(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || haystack.len() < needle.len() {
        return None;
    }
    let (lower, upper) = (
        needle[0].to_ascii_lowercase(),
        needle[0].to_ascii_uppercase(),
    );
    let last = haystack.len() - needle.len();
    let mut at = 0;
    while at <= last {
        let pos = memchr::memchr2(lower, upper, &haystack[at..=last])?;
        let start = at + pos;
        if haystack[start..start + needle.len()].eq_ignore_ascii_case(needle) {
            return Some(start);
        }
        at = start + 1;
    }
    None
}

/// Whether `b` may continue an identifier (Postgres: letters, digits, `_`,
/// `$`, any byte from 0x80).
fn is_ident_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'$' || b >= 0x80
}

/// Words of the first statement: skips whitespace and comments; `=` is a
/// word of its own; a quoted identifier is one word; a string literal or
/// `(` ends the words.
struct Words<'a> {
    sql: &'a [u8],
    at: usize,
    dialect: Dialect,
}

impl<'a> Words<'a> {
    fn new(sql: &'a [u8], dialect: Dialect) -> Self {
        Words {
            sql,
            at: 0,
            dialect,
        }
    }

    fn skip_space(&mut self) {
        let b = self.sql;
        loop {
            while self.at < b.len() && b[self.at].is_ascii_whitespace() {
                self.at += 1;
            }
            let rest = &b[self.at.min(b.len())..];
            if rest.starts_with(b"--") {
                self.at += memchr::memchr(b'\n', rest).unwrap_or(rest.len());
            } else if rest.starts_with(b"/*") {
                self.at += block_comment_len(rest);
            } else {
                return;
            }
        }
    }

    /// Steps over the string literal, quoted identifier or dollar-quoted
    /// string starting at `self.at`, if one does. `Some(false)`: it does
    /// not end.
    fn skip_quoted(&mut self) -> Option<bool> {
        let b = self.sql;
        let at = self.at;
        let len = match b.get(at)? {
            b'\'' => {
                let e_string = at > 0
                    && matches!(b[at - 1], b'e' | b'E')
                    && (at < 2 || !is_ident_byte(b[at - 2]));
                let backslashes = e_string || self.dialect.backslash_strings;
                quoted_len(&b[at..], b'\'', self.dialect.charset, backslashes)
            }
            b'"' => quoted_len(&b[at..], b'"', self.dialect.charset, false),
            b'$' if at == 0 || !is_ident_byte(b[at - 1]) => dollar_quoted_len(&b[at..])?,
            _ => return None,
        };
        match len {
            Some(n) => {
                self.at += n;
                Some(true)
            }
            None => {
                self.at = b.len();
                Some(false)
            }
        }
    }

    /// The rest of the statement, trimmed, up to a `;` outside quotes and
    /// comments (`None` if empty or a quote does not end). Leaves `at` on
    /// the `;` (or the end).
    fn rest(&mut self) -> Option<&'a [u8]> {
        self.skip_space();
        let start = self.at;
        let mut end = start;
        while self.at < self.sql.len() {
            match self.skip_quoted() {
                Some(true) => {
                    end = self.at;
                    continue;
                }
                Some(false) => return None,
                None => {}
            }
            let rest = &self.sql[self.at..];
            if rest[0] == b';' {
                break;
            }
            if rest.starts_with(b"--") || rest.starts_with(b"/*") {
                self.skip_space();
                continue;
            }
            let n = self.dialect.charset.char_len(rest);
            if !rest[0].is_ascii_whitespace() {
                end = self.at + n;
            }
            self.at += n;
        }
        (end > start).then(|| &self.sql[start..end])
    }
}

/// Length of the `quote`-delimited text at the start of `text`, stepping
/// over whole characters of `charset` (a doubled quote stands for one;
/// with `backslashes`, a backslash escapes the next character). `None`: it
/// does not end.
fn quoted_len(text: &[u8], quote: u8, charset: Charset, backslashes: bool) -> Option<usize> {
    let mut i = 1;
    while i < text.len() {
        let b = text[i];
        if b == quote {
            if text.get(i + 1) == Some(&quote) {
                i += 2;
                continue;
            }
            return Some(i + 1);
        }
        i += if backslashes && b == b'\\' {
            1 + charset.char_len(&text[i + 1..]).max(1)
        } else {
            charset.char_len(&text[i..])
        };
    }
    None
}

/// Length of a `$tag$…$tag$` string at the start of `text`; `None` if
/// `text` does not start with a dollar quote; `Some(None)` if it does not
/// end.
fn dollar_quoted_len(text: &[u8]) -> Option<Option<usize>> {
    let tag_end = 1 + text[1..].iter().position(|b| *b == b'$')?;
    let tag = &text[1..tag_end];
    let valid = tag.first().is_none_or(|b| !b.is_ascii_digit())
        && tag.iter().all(|b| *b != b'$' && is_ident_byte(*b));
    if !valid {
        return None;
    }
    let delimiter = &text[..=tag_end];
    let body = &text[delimiter.len()..];
    Some(memchr::memmem::find(body, delimiter).map(|end| delimiter.len() * 2 + end))
}

/// Length of the (nested) `/* … */` comment at the start of `text`, all of
/// it if it does not end.
fn block_comment_len(text: &[u8]) -> usize {
    let mut depth = 0usize;
    let mut i = 0;
    while i + 1 < text.len() {
        match &text[i..i + 2] {
            b"/*" => {
                depth += 1;
                i += 2;
            }
            b"*/" => {
                depth -= 1;
                i += 2;
                if depth == 0 {
                    return i;
                }
            }
            _ => i += 1,
        }
    }
    text.len()
}

impl<'a> Iterator for Words<'a> {
    type Item = &'a [u8];
    fn next(&mut self) -> Option<&'a [u8]> {
        self.skip_space();
        let b = self.sql;
        let start = self.at;
        match b.get(start)? {
            b'=' => {
                self.at += 1;
                Some(&b[start..start + 1])
            }
            b'"' => match self.skip_quoted() {
                Some(true) => Some(&b[start..self.at]),
                _ => None,
            },
            b';' | b'\'' | b'(' | b'$' => None,
            _ => {
                while self.at < b.len()
                    && !b[self.at].is_ascii_whitespace()
                    && !matches!(b[self.at], b'=' | b';' | b'(' | b'\'' | b'"')
                {
                    self.at += self.dialect.charset.char_len(&b[self.at..]);
                }
                (self.at > start).then(|| &b[start..self.at])
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use SessionEffect::*;

    fn effect(sql: &str) -> SessionEffect<'_> {
        session_effect(sql.as_bytes(), Dialect::default())
    }

    #[test]
    fn set_statements() {
        assert_eq!(
            effect("SET search_path TO app, public"),
            Set {
                name: "search_path".into(),
                value: &b"app, public"[..]
            }
        );
        assert_eq!(
            effect("  /* c */ set SESSION statement_timeout = '5s'; select 1"),
            Set {
                name: "statement_timeout".into(),
                value: &b"'5s'"[..]
            }
        );
        assert_eq!(
            effect("SET myapp.tenant = 'a;b'"),
            Set {
                name: "myapp.tenant".into(),
                value: &b"'a;b'"[..]
            }
        );
        assert_eq!(
            effect("SET SCHEMA 'x'"),
            Set {
                name: "search_path".into(),
                value: &b"'x'"[..]
            }
        );
        assert_eq!(effect("SET LOCAL search_path TO x"), None);
        assert_eq!(effect("SET application_name = 'x'"), None, "reported");
        assert_eq!(effect("SET TIME ZONE 'UTC'"), None, "reported");
        assert_eq!(effect("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE"), None);
        assert_eq!(effect("set work_mem to default"), Reset("work_mem".into()));
        assert_eq!(effect("RESET ALL"), ResetAll);
        assert_eq!(effect("discard all"), ResetAll);
        assert_eq!(effect("RESET search_path"), Reset("search_path".into()));
        assert_eq!(effect("SET ROLE other"), SessionOnly("SET ROLE"));
    }

    #[test]
    fn session_only_features() {
        assert_eq!(effect("LISTEN chan"), SessionOnly("LISTEN"));
        assert_eq!(
            effect("select pg_advisory_lock(1)"),
            SessionOnly("session advisory locks")
        );
        assert_eq!(
            effect("SELECT PG_TRY_ADVISORY_LOCK(1)"),
            SessionOnly("session advisory locks")
        );
        assert_eq!(effect("select pg_advisory_xact_lock(1)"), None);
        assert_eq!(
            effect("CREATE TEMP TABLE t (a int)"),
            SessionOnly("temporary tables")
        );
        assert_eq!(
            effect("create temporary table t as select 1 on commit drop"),
            None
        );
        assert_eq!(effect("CREATE TABLE temp (a int)"), None);
        assert_eq!(
            effect("PREPARE q AS SELECT 1"),
            SessionOnly("PREPARE (SQL prepared statements)")
        );
        assert_eq!(
            effect("DECLARE c CURSOR WITH HOLD FOR SELECT 1"),
            SessionOnly("cursors WITH HOLD")
        );
        assert_eq!(effect("DECLARE c CURSOR FOR SELECT 1"), None);
        assert_eq!(
            effect("DEALLOCATE PREPARE s1"),
            Deallocate(Some(b"s1".to_vec()))
        );
        assert_eq!(effect("deallocate all"), Deallocate(Option::None));
        assert_eq!(effect("SELECT 1"), None);
        assert_eq!(effect(""), None);
        assert_eq!(effect("-- only a comment"), None);
        assert_eq!(effect("/* unterminated"), None);
    }

    #[test]
    fn quoted_names_and_strings() {
        assert_eq!(
            effect(r#"DEALLOCATE "My""Stmt""#),
            Deallocate(Some(br#"My"Stmt"#.to_vec()))
        );
        assert_eq!(effect("DEALLOCATE S1"), Deallocate(Some(b"s1".to_vec())));
        assert_eq!(
            effect(r"SET app.x TO E'a\'b;c'; SELECT 1"),
            Set {
                name: "app.x".into(),
                value: &br"E'a\'b;c'"[..]
            }
        );
        assert_eq!(
            effect("SET app.x TO $q$a;'b$q$ ; SELECT 1"),
            Set {
                name: "app.x".into(),
                value: &b"$q$a;'b$q$"[..]
            }
        );
        assert_eq!(
            effect("SET app.x = 'a' /* ; */ -- ;\n; SELECT 1"),
            Set {
                name: "app.x".into(),
                value: &b"'a'"[..]
            }
        );
        assert_eq!(effect("SET app.x = 'unterminated"), None);
        assert_eq!(
            effect("/* a /* nested */ comment */ LISTEN x"),
            SessionOnly("LISTEN")
        );
        assert!(is_single_statement(
            b"DEALLOCATE s1 ;  -- done",
            Dialect::default()
        ));
        assert!(is_single_statement(
            b"DEALLOCATE \"a;b\"",
            Dialect::default()
        ));
        assert!(!is_single_statement(
            b"DEALLOCATE s1; SELECT 1",
            Dialect::default()
        ));
        assert!(notifies(b"select PG_NOTIFY('c', 'x')"));
        assert!(notifies(b"NOTIFY c"));
        assert!(!notifies(b"select 1"));
    }

    #[test]
    fn multibyte_trailing_backslashes_do_not_escape() {
        // SJIS "表" is 0x95 0x5C: its second byte is an ASCII backslash.
        let sjis = Dialect {
            charset: Charset::of(b"SJIS"),
            backslash_strings: false,
        };
        let sql = b"SET app.x TO E'\x95\x5c'; SELECT 1";
        assert_eq!(
            session_effect(sql, sjis),
            Set {
                name: "app.x".into(),
                value: &b"E'\x95\x5c'"[..]
            }
        );
        // Read as UTF-8 or LATIN1, the same bytes end in an escaped quote.
        assert_eq!(session_effect(sql, Dialect::default()), None);
        // standard_conforming_strings = off: every string escapes.
        let off = Dialect {
            backslash_strings: true,
            ..sjis
        };
        assert_eq!(
            session_effect(b"SET app.x TO '\x95\x5c'", off),
            Set {
                name: "app.x".into(),
                value: &b"'\x95\x5c'"[..]
            }
        );
        // BIG5 "功" is 0xA5 0x5C; GB18030 four-byte characters have digits.
        for (encoding, ch) in [
            (&b"BIG5"[..], &b"\xa5\x5c"[..]),
            (b"GBK", b"\x81\x5c"),
            (b"gb18030", b"\x81\x30\x81\x30"),
        ] {
            let dialect = Dialect::of(Some(encoding), Some(b"on"));
            let mut sql = b"SET app.x TO E'".to_vec();
            sql.extend_from_slice(ch);
            sql.extend_from_slice(b"'");
            let SessionEffect::Set { value, .. } = session_effect(&sql, dialect) else {
                panic!("{}: not read as a SET", String::from_utf8_lossy(encoding));
            };
            assert_eq!(value, &sql[13..]);
        }
        assert_eq!(Charset::of(b"Shift-JIS"), Charset::Sjis);
        assert_eq!(Charset::of(b"LATIN9"), Charset::AsciiSafe);
        assert_eq!(Charset::of(b"EUC_JP"), Charset::AsciiSafe);
    }
}
