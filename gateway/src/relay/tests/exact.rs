//! Byte-exact relaying: client encodings other than UTF-8, statement-name
//! churn answered as the server would, notifications showing the pids
//! clients know, and session settings restored in the right encoding.

use super::*;

/// A simple Query of raw bytes (any client encoding).
fn raw_query(sql: &[u8]) -> Vec<u8> {
    let mut body = sql.to_vec();
    body.push(0);
    msg(b'Q', &body)
}

/// An ErrorResponse with `code` and `message`.
fn error_saying(code: &str, message: &str) -> Vec<u8> {
    let mut out = BytesMut::new();
    messages::error_response(&mut out, false, code, message, None);
    out.to_vec()
}

/// A simple Query the server runs and answers with CommandComplete `sql`
/// and ReadyForQuery `status`, relayed as is.
fn relayed(sql: &str, status: u8) -> Vec<Step> {
    vec![
        Client(query(sql)),
        ServerGets(query(sql)),
        Server(cat(&[complete(sql), ready(status)])),
        ClientGets(cat(&[complete(sql), ready(status)])),
    ]
}

fn notification(pid: u32, channel: &str, payload: &[u8]) -> Vec<u8> {
    let mut b = pid.to_be_bytes().to_vec();
    b.extend_from_slice(channel.as_bytes());
    b.push(0);
    b.extend_from_slice(payload);
    b.push(0);
    msg(b'A', &b)
}

#[tokio::test]
async fn latin9_and_sjis_bytes_pass_both_ways() {
    // LATIN9 '€' is 0xA4; SJIS "表" is 0x95 0x5C (a backslash second byte).
    for sql in [
        &b"select 'x' as \"\xa4\""[..],
        b"select E'\x95\x5c' as \"\x95\x5c\"",
    ] {
        let mut error = BytesMut::new();
        messages::error_response_bytes(&mut error, false, "42703", sql, None);
        let mut row = vec![0, 1, 0, 0, 0, 1];
        row.extend_from_slice(&sql[8..9]);
        run_cases(vec![Case {
            name: "non-UTF-8 SQL, error text and row",
            steps: vec![
                Client(raw_query(sql)),
                ServerGets(raw_query(sql)),
                Server(cat(&[msg(b'D', &row), error.to_vec(), ready(b'I')])),
                ClientGets(cat(&[msg(b'D', &row), error.to_vec(), ready(b'I')])),
            ],
            end: End::Released,
        }])
        .await;
    }
}

#[tokio::test]
async fn settings_follow_in_the_clients_encoding() {
    let (mut relay, mut c) = client(PoolMode::Transaction);
    relay.params.set("client_encoding", b"LATIN9");
    relay.extra.insert("app.note".into(), (*b"'\xa4'").into());
    let (mut conn, mut pg) = server(&[]);
    conn.params.set("client_encoding", b"UTF8");
    let end = run(
        &mut relay,
        &mut c,
        &mut conn,
        &mut pg,
        vec![
            Client(query("SELECT 1")),
            // The encoding first, alone: the server reads each Query in the
            // encoding in force when it arrives.
            ServerGets(cat(&[
                query("SET client_encoding TO 'LATIN9';"),
                raw_query(b"SET app.note TO '\xa4';"),
                query("SELECT 1"),
            ])),
            Server(cat(&[
                complete("SET"),
                msg(b'S', &cstrs(&["client_encoding", "LATIN9"])),
                ready(b'I'),
                complete("SET"),
                ready(b'I'),
                complete("SELECT 1"),
                ready(b'I'),
            ])),
            ClientGets(cat(&[complete("SELECT 1"), ready(b'I')])),
        ],
    )
    .await;
    assert_eq!(end, End::Released);
    assert_eq!(conn.params.get("client_encoding"), Some(&b"LATIN9"[..]));
}

#[tokio::test]
async fn a_second_parse_of_a_name_fails_as_on_the_server() {
    let sql = "SELECT $1::int";
    let name = server_statement_name(sql.as_bytes(), &[0, 0]);
    let (mut relay, mut c) = client(PoolMode::Transaction);
    let (mut conn, mut pg) = server(&[&name]);
    let ours = error_saying("42P05", "prepared statement \"s1\" already exists");
    let end = run(
        &mut relay,
        &mut c,
        &mut conn,
        &mut pg,
        vec![
            Client(cat(&[query("BEGIN"), parse("s1", sql), sync()])),
            ServerGets(cat(&[query("BEGIN"), sync()])),
            Server(cat(&[complete("BEGIN"), ready(b'T'), ready(b'T')])),
            ClientGets(cat(&[
                complete("BEGIN"),
                ready(b'T'),
                parse_complete(),
                ready(b'T'),
            ])),
            // The same name again, another text: the server gets a second
            // Parse of the statement, so it fails and aborts the
            // transaction as it would have; the client's error names s1.
            Client(cat(&[
                parse("s1", "SELECT 2"),
                bind("", "s1"),
                execute(""),
                sync(),
            ])),
            ServerGets(cat(&[
                parse(&name, sql),
                bind("", &name),
                execute(""),
                sync(),
            ])),
            Server(cat(&[error("42P05"), ready(b'E')])),
            ClientGets(cat(&[ours, ready(b'E')])),
        ]
        .into_iter()
        .chain(relayed("ROLLBACK", b'I'))
        .collect(),
    )
    .await;
    assert_eq!(end, End::Released);
    let kept = relay.statements.get(&b"s1"[..]).expect("s1 kept");
    assert_eq!(kept.server_name, name, "the first text stays");
}

#[tokio::test]
async fn deallocate_in_a_transaction_is_answered_as_the_server_would() {
    let (mut relay, mut c) = client(PoolMode::Transaction);
    let (mut conn, mut pg) = server(&[]);
    let s1 = server_statement_name(b"SELECT 1", &[0, 0]);
    let s2 = server_statement_name(b"SELECT 2", &[0, 0]);
    let aborted = error_saying(
        "25P02",
        "current transaction is aborted, commands ignored until end of transaction block",
    );
    let end = run(
        &mut relay,
        &mut c,
        &mut conn,
        &mut pg,
        vec![
            Client(cat(&[
                query("BEGIN"),
                parse("s1", "SELECT 1"),
                parse("s2", "SELECT 2"),
                sync(),
            ])),
            ServerGets(cat(&[
                query("BEGIN"),
                parse(&s1, "SELECT 1"),
                parse(&s2, "SELECT 2"),
                sync(),
            ])),
            Server(cat(&[
                complete("BEGIN"),
                ready(b'T'),
                parse_complete(),
                parse_complete(),
                ready(b'T'),
            ])),
            ClientGets(cat(&[
                complete("BEGIN"),
                ready(b'T'),
                parse_complete(),
                parse_complete(),
                ready(b'T'),
            ])),
            // The client's name only: nothing for the server.
            Client(query("DEALLOCATE s1")),
            ClientGets(cat(&[complete("DEALLOCATE"), ready(b'T')])),
            Client(query("SELECT 1/0")),
            ServerGets(query("SELECT 1/0")),
            Server(cat(&[error("22012"), ready(b'E')])),
            ClientGets(cat(&[error("22012"), ready(b'E')])),
            // In a failed transaction the server would refuse it.
            Client(query("DEALLOCATE PREPARE s2")),
            ClientGets(cat(&[aborted, ready(b'E')])),
        ]
        .into_iter()
        .chain(relayed("ROLLBACK", b'I'))
        .collect(),
    )
    .await;
    assert_eq!(end, End::Released);
    assert!(!relay.statements.contains_key(&b"s1"[..]));
    assert!(relay.statements.contains_key(&b"s2"[..]), "refused: kept");
    assert!(conn.prepared.contains(&s1), "others may use it");
}

#[tokio::test]
async fn notifications_show_the_pids_clients_know() {
    let (mut relay, mut c) = client(PoolMode::Transaction);
    relay.db.note_notifier(77, 5555);
    let (mut conn, mut pg) = server(&[]);
    let server_pid = conn.key.0;
    let end = run(
        &mut relay,
        &mut c,
        &mut conn,
        &mut pg,
        vec![
            Client(query("LISTEN c")),
            ServerGets(query("LISTEN c")),
            Server(cat(&[complete("LISTEN"), ready(b'I')])),
            ClientGets(cat(&[complete("LISTEN"), ready(b'I')])),
            Client(query("NOTIFY c, 'mine'")),
            ServerGets(query("NOTIFY c, 'mine'")),
            Server(cat(&[
                complete("NOTIFY"),
                notification(server_pid, "c", b"mine"),
                ready(b'I'),
            ])),
            // Its own: the pid of its BackendKeyData.
            ClientGets(cat(&[
                complete("NOTIFY"),
                notification(CLIENT_PID, "c", b"mine"),
                ready(b'I'),
            ])),
            // Another gateway client's: that client's; an outsider's: as is.
            Server(cat(&[
                notification(77, "c", b"\xa4"),
                notification(99, "c", b"x"),
            ])),
            ClientGets(cat(&[
                notification(5555, "c", b"\xa4"),
                notification(99, "c", b"x"),
            ])),
            Attached,
            Client(terminate()),
        ],
    )
    .await;
    assert_eq!(end, End::ClientGone(None));
    assert_eq!(relay.db.notifier(server_pid), Some(CLIENT_PID));
}
