//! The relay's core driven in-process: the client and a scripted fake
//! Postgres on the far ends of `tokio::io::duplex` pipes. Each script
//! says what the client sends, what the server must receive (exactly),
//! what the server answers and what the client must receive (exactly),
//! and how the attachment ends.

use super::pump::Relay;
use super::statements::server_statement_name;
use super::{End, Shared};
use crate::config::PoolMode;
use crate::pool::params::Params;
use crate::pool::registry::{AtomicState, ClientInfo, Registry};
use crate::pool::server_conn::{ServerConn, ServerInfo};
use crate::wire::messages;
use bytes::BytesMut;
use ogel_policies::pool::PoolCounters;
use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tokio::io::{duplex, AsyncReadExt, AsyncWriteExt, DuplexStream};

/// The pool's bookkeeping, without a pool.
#[derive(Default)]
struct FakeDb {
    counters: PoolCounters,
    known: Mutex<HashSet<Arc<str>>>,
    notifiers: Mutex<HashMap<u32, u32>>,
}

impl Shared for FakeDb {
    fn name(&self) -> &str {
        "test"
    }
    fn counters(&self) -> &PoolCounters {
        &self.counters
    }
    fn is_known(&self, server_name: &str) -> bool {
        self.known.lock().unwrap().contains(server_name)
    }
    fn mark_known(&self, server_name: &Arc<str>) {
        self.known.lock().unwrap().insert(server_name.clone());
    }
    fn note_notifier(&self, server_pid: u32, client_pid: u32) {
        self.notifiers
            .lock()
            .unwrap()
            .insert(server_pid, client_pid);
    }
    fn notifier(&self, server_pid: u32) -> Option<u32> {
        self.notifiers.lock().unwrap().get(&server_pid).copied()
    }
}

/// The pid in the client's BackendKeyData.
const CLIENT_PID: u32 = 4242;

type TestRelay = Relay<DuplexStream, FakeDb>;

/// Big enough that no script fills a pipe.
const PIPE: usize = 1 << 20;
/// How long a step waits for bytes before the test fails.
const PATIENCE: Duration = Duration::from_secs(5);
/// How long the relay is watched to see that it keeps the connection.
const A_WHILE: Duration = Duration::from_millis(30);

/// A relay for one client and the client's end of its connection.
fn client(mode: PoolMode) -> (TestRelay, DuplexStream) {
    let (ours, theirs) = duplex(PIPE);
    let registry = Arc::new(Registry::<ClientInfo>::default());
    let info = registry.register(|id| ClientInfo {
        id,
        user: "u".into(),
        database: "test".into(),
        addr: None,
        connected_unix: 0,
        mode,
        state: AtomicState::default(),
        server: AtomicU64::new(0),
        application_name: Mutex::new("".into()),
        pinned: Mutex::new(""),
    });
    let relay = Relay::new(
        ours,
        Arc::new(FakeDb::default()),
        mode,
        CLIENT_PID,
        Params::default(),
        HashMap::new(),
        info,
    );
    (relay, theirs)
}

/// A server connection (idle, with `prepared` on it) and the fake
/// Postgres's end of its socket.
fn server(prepared: &[&Arc<str>]) -> (ServerConn<DuplexStream>, DuplexStream) {
    let (ours, theirs) = duplex(PIPE);
    let registry = Arc::new(Registry::<ServerInfo>::default());
    let info = registry.register(|id| ServerInfo {
        id,
        addr: ([127, 0, 0, 1], 5432).into(),
        pid: 1,
        opened_at: SystemTime::now(),
        state: AtomicState::default(),
        client: AtomicU64::new(0),
        generation: 0,
    });
    let conn = ServerConn {
        stream: ours,
        key: (1, 2),
        inbox: BytesMut::new(),
        outbox: BytesMut::new(),
        to_client: BytesMut::new(),
        params: Params::default(),
        extra: HashMap::new(),
        prepared: prepared.iter().map(|n| Arc::clone(n)).collect(),
        status: b'I',
        info,
        fault_epoch: crate::pool::faults::epoch(),
    };
    (conn, theirs)
}

// Messages, as bytes.

fn msg(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut m = vec![tag];
    m.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
    m.extend_from_slice(body);
    m
}

fn cstrs(parts: &[&str]) -> Vec<u8> {
    let mut b = Vec::new();
    for p in parts {
        b.extend_from_slice(p.as_bytes());
        b.push(0);
    }
    b
}

fn parse(name: &str, sql: &str) -> Vec<u8> {
    let mut b = cstrs(&[name, sql]);
    b.extend_from_slice(&[0, 0]); // no parameter types
    msg(b'P', &b)
}

fn bind(portal: &str, statement: &str) -> Vec<u8> {
    let mut b = cstrs(&[portal, statement]);
    b.extend_from_slice(&[0, 0, 0, 0, 0, 0]); // no formats, parameters, result formats
    msg(b'B', &b)
}

fn describe(kind: u8, name: &str) -> Vec<u8> {
    let mut b = vec![kind];
    b.extend_from_slice(&cstrs(&[name]));
    msg(b'D', &b)
}

fn execute(portal: &str) -> Vec<u8> {
    let mut b = cstrs(&[portal]);
    b.extend_from_slice(&[0, 0, 0, 0]);
    msg(b'E', &b)
}

fn sync() -> Vec<u8> {
    msg(b'S', &[])
}

fn query(sql: &str) -> Vec<u8> {
    msg(b'Q', &cstrs(&[sql]))
}

fn copy_data(data: &str) -> Vec<u8> {
    msg(b'd', data.as_bytes())
}

fn copy_done() -> Vec<u8> {
    msg(b'c', &[])
}

fn terminate() -> Vec<u8> {
    msg(b'X', &[])
}

fn parse_complete() -> Vec<u8> {
    msg(b'1', &[])
}

fn bind_complete() -> Vec<u8> {
    msg(b'2', &[])
}

fn row_description() -> Vec<u8> {
    let mut b = vec![0, 1];
    b.extend_from_slice(&cstrs(&["?column?"]));
    b.extend_from_slice(&[
        0, 0, 0, 0, 0, 0, 0, 0, 0, 23, 0, 4, 255, 255, 255, 255, 0, 0,
    ]);
    msg(b'T', &b)
}

fn data_row(value: &str) -> Vec<u8> {
    let mut b = vec![0, 1];
    b.extend_from_slice(&(value.len() as u32).to_be_bytes());
    b.extend_from_slice(value.as_bytes());
    msg(b'D', &b)
}

fn complete(tag: &str) -> Vec<u8> {
    msg(b'C', &cstrs(&[tag]))
}

fn ready(status: u8) -> Vec<u8> {
    msg(b'Z', &[status])
}

fn error(code: &str) -> Vec<u8> {
    let mut out = BytesMut::new();
    messages::error_response(&mut out, false, code, "boom", None);
    out.to_vec()
}

fn copy_in_response() -> Vec<u8> {
    msg(b'G', &[0, 0, 1, 0, 0])
}

fn copy_out_response() -> Vec<u8> {
    msg(b'H', &[0, 0, 1, 0, 0])
}

fn cat(parts: &[Vec<u8>]) -> Vec<u8> {
    parts.concat()
}

/// Messages as (tag, body) for readable assertion failures.
fn frames(bytes: &[u8]) -> Vec<(char, String)> {
    let mut out = Vec::new();
    let mut at = 0;
    while let Some((tag, len)) = messages::header(&bytes[at..]) {
        let end = (at + len).min(bytes.len());
        out.push((
            tag as char,
            String::from_utf8_lossy(&bytes[at + 5..end]).into_owned(),
        ));
        at = end;
    }
    if at < bytes.len() {
        out.push(('?', format!("{:?}", &bytes[at..])));
    }
    out
}

/// One step of a script.
enum Step {
    /// The client sends.
    Client(Vec<u8>),
    /// The fake Postgres must receive exactly this next.
    ServerGets(Vec<u8>),
    /// The fake Postgres sends.
    Server(Vec<u8>),
    /// The client must receive exactly this next.
    ClientGets(Vec<u8>),
    /// The relay is still attached (has not given the connection back).
    Attached,
}
use Step::*;

/// Reads exactly `want.len()` bytes from `from` while the relay runs (if
/// it has not ended yet), and compares.
async fn expect<F: Future<Output = End> + Unpin>(
    what: &str,
    fut: &mut F,
    ended: &mut Option<End>,
    from: &mut DuplexStream,
    want: &[u8],
) {
    let mut got = vec![0u8; want.len()];
    let result = {
        let read = async {
            tokio::time::timeout(PATIENCE, from.read_exact(&mut got))
                .await
                .map(|r| r.map(|_| ()))
        };
        tokio::pin!(read);
        if ended.is_some() {
            read.await
        } else {
            tokio::select! {
                biased;
                r = &mut read => r,
                end = &mut *fut => {
                    *ended = Some(end);
                    read.await
                }
            }
        }
    };
    match result {
        Ok(Ok(())) => {}
        _ => panic!(
            "{what}: wanted {:?}, the relay {}",
            frames(want),
            match ended {
                Some(end) => format!("ended with {end:?}"),
                None => "sent less".into(),
            }
        ),
    }
    assert_eq!(frames(&got), frames(want), "{what}");
}

/// Nothing more is waiting on `stream`.
async fn nothing_more(what: &str, stream: &mut DuplexStream) {
    let mut byte = [0u8; 64];
    if let Ok(Ok(n)) = tokio::time::timeout(A_WHILE, stream.read(&mut byte)).await {
        assert_eq!(n, 0, "{what} got more: {:?}", frames(&byte[..n]));
    }
}

/// Runs `steps` over one attachment of `relay` to `conn` (attached, as by
/// `Session::serve`, once the first step's message is in) and returns how
/// it ended; everything either side got is what the script said, nothing
/// more (what the session would send after the end included).
async fn run(
    relay: &mut TestRelay,
    client: &mut DuplexStream,
    conn: &mut ServerConn<DuplexStream>,
    pg: &mut DuplexStream,
    steps: Vec<Step>,
) -> End {
    let mut ended = None;
    let mut steps = steps.into_iter().peekable();
    // As `Session::serve`: the relay attaches once a whole message is in.
    if let Some(Client(bytes)) = steps.next_if(|s| matches!(s, Client(_))) {
        client.write_all(&bytes).await.unwrap();
        let arrived = tokio::time::timeout(PATIENCE, relay.wait_for_message()).await;
        assert_eq!(arrived.ok(), Some(true), "the first message did not arrive");
    }
    {
        let fut = relay.relay(conn);
        tokio::pin!(fut);
        for (i, step) in steps.enumerate() {
            match step {
                Client(bytes) => client.write_all(&bytes).await.unwrap(),
                Server(bytes) => pg.write_all(&bytes).await.unwrap(),
                ServerGets(want) => {
                    expect(
                        &format!("step {i}: server"),
                        &mut fut,
                        &mut ended,
                        pg,
                        &want,
                    )
                    .await
                }
                ClientGets(want) => {
                    expect(
                        &format!("step {i}: client"),
                        &mut fut,
                        &mut ended,
                        client,
                        &want,
                    )
                    .await
                }
                Attached => {
                    if let Some(end) = &ended {
                        panic!("step {i}: the relay ended with {end:?}");
                    }
                    tokio::select! {
                        end = &mut fut => panic!("step {i}: the relay ended with {end:?}"),
                        _ = tokio::time::sleep(A_WHILE) => {}
                    }
                }
            }
        }
        if ended.is_none() {
            ended = Some(
                tokio::time::timeout(PATIENCE, &mut fut)
                    .await
                    .expect("the relay did not end"),
            );
        }
    }
    // What `Session::serve` sends once the connection is back.
    let rest = conn.to_client.split();
    relay.stream.write_all(&rest).await.unwrap();
    nothing_more("the client", client).await;
    nothing_more("the server", pg).await;
    ended.unwrap()
}

/// One attachment, from a fresh client on a fresh connection.
struct Case {
    name: &'static str,
    steps: Vec<Step>,
    end: End,
}

async fn run_cases(cases: Vec<Case>) {
    for case in cases {
        let (mut relay, mut c) = client(PoolMode::Transaction);
        let (mut conn, mut pg) = server(&[]);
        let end = run(&mut relay, &mut c, &mut conn, &mut pg, case.steps).await;
        assert_eq!(end, case.end, "{}", case.name);
        if end == End::Released {
            assert!(relay.at_rest(&conn), "{}: released busy", case.name);
        }
    }
}

#[tokio::test]
async fn errors_in_extended_batches_skip_to_sync() {
    run_cases(vec![
        Case {
            name: "error at Execute: the rest of the batch gets no answer",
            steps: vec![
                Client(cat(&[
                    parse("", "SELECT 1/0"),
                    bind("", ""),
                    describe(b'P', ""),
                    execute(""),
                    parse("", "SELECT 2"),
                    bind("", ""),
                    execute(""),
                    sync(),
                ])),
                ServerGets(cat(&[
                    parse("", "SELECT 1/0"),
                    bind("", ""),
                    describe(b'P', ""),
                    execute(""),
                    parse("", "SELECT 2"),
                    bind("", ""),
                    execute(""),
                    sync(),
                ])),
                Server(cat(&[
                    parse_complete(),
                    bind_complete(),
                    row_description(),
                    error("22012"),
                    ready(b'I'),
                ])),
                ClientGets(cat(&[
                    parse_complete(),
                    bind_complete(),
                    row_description(),
                    error("22012"),
                    ready(b'I'),
                ])),
            ],
            end: End::Released,
        },
        Case {
            name: "error at Parse: what the client sends after it, up to Sync, is dropped",
            steps: vec![
                Client(cat(&[parse("", "SELEC 1"), bind("", ""), execute("")])),
                ServerGets(cat(&[parse("", "SELEC 1"), bind("", ""), execute("")])),
                Server(error("42601")),
                ClientGets(error("42601")),
                Attached,
                Client(cat(&[bind("", ""), execute(""), sync()])),
                ServerGets(sync()),
                Server(ready(b'I')),
                ClientGets(ready(b'I')),
            ],
            end: End::Released,
        },
        Case {
            name: "error in a transaction block: the connection stays until it ends",
            steps: vec![
                Client(cat(&[query("BEGIN")])),
                ServerGets(query("BEGIN")),
                Server(cat(&[complete("BEGIN"), ready(b'T')])),
                ClientGets(cat(&[complete("BEGIN"), ready(b'T')])),
                Client(cat(&[
                    parse("", "SELECT 1/0"),
                    bind("", ""),
                    execute(""),
                    sync(),
                ])),
                ServerGets(cat(&[
                    parse("", "SELECT 1/0"),
                    bind("", ""),
                    execute(""),
                    sync(),
                ])),
                Server(cat(&[
                    parse_complete(),
                    bind_complete(),
                    error("22012"),
                    ready(b'E'),
                ])),
                ClientGets(cat(&[
                    parse_complete(),
                    bind_complete(),
                    error("22012"),
                    ready(b'E'),
                ])),
                Attached,
                Client(query("ROLLBACK")),
                ServerGets(query("ROLLBACK")),
                Server(cat(&[complete("ROLLBACK"), ready(b'I')])),
                ClientGets(cat(&[complete("ROLLBACK"), ready(b'I')])),
            ],
            end: End::Released,
        },
    ])
    .await;
}

#[tokio::test]
async fn pipelined_batches_are_relayed_in_order() {
    let batch = |n: usize| -> Vec<u8> {
        let mut b = Vec::new();
        for i in 0..n {
            b.extend(cat(&[
                parse("", &format!("SELECT {i}")),
                bind("", ""),
                describe(b'P', ""),
                execute(""),
            ]));
        }
        b.extend(sync());
        b
    };
    let answers = |n: usize| -> Vec<u8> {
        let mut b = Vec::new();
        for i in 0..n {
            b.extend(cat(&[
                parse_complete(),
                bind_complete(),
                row_description(),
                data_row(&i.to_string()),
                complete("SELECT 1"),
            ]));
        }
        b.extend(ready(b'I'));
        b
    };
    run_cases(vec![
        Case {
            name: "Parse/Bind/Describe/Execute x5, one Sync",
            steps: vec![
                Client(batch(5)),
                ServerGets(batch(5)),
                Server(answers(5)),
                ClientGets(answers(5)),
            ],
            end: End::Released,
        },
        Case {
            name: "answers arriving a message at a time",
            steps: {
                let mut steps = vec![Client(batch(3)), ServerGets(batch(3))];
                let all = answers(3);
                let mut at = 0;
                while let Some((_, len)) = messages::header(&all[at..]) {
                    steps.push(Server(all[at..at + len].to_vec()));
                    steps.push(ClientGets(all[at..at + len].to_vec()));
                    if at + len < all.len() {
                        steps.push(Attached);
                    }
                    at += len;
                }
                steps
            },
            end: End::Released,
        },
    ])
    .await;
}

#[tokio::test]
async fn connections_go_back_only_at_rest() {
    run_cases(vec![
        Case {
            name: "two Syncs pipelined: not at the first ReadyForQuery",
            steps: vec![
                Client(cat(&[
                    parse("", "SELECT 1"),
                    bind("", ""),
                    execute(""),
                    sync(),
                ])),
                Client(cat(&[
                    parse("", "SELECT 2"),
                    bind("", ""),
                    execute(""),
                    sync(),
                ])),
                ServerGets(cat(&[
                    parse("", "SELECT 1"),
                    bind("", ""),
                    execute(""),
                    sync(),
                    parse("", "SELECT 2"),
                    bind("", ""),
                    execute(""),
                    sync(),
                ])),
                Server(cat(&[
                    parse_complete(),
                    bind_complete(),
                    complete("SELECT 1"),
                    ready(b'I'),
                ])),
                ClientGets(cat(&[
                    parse_complete(),
                    bind_complete(),
                    complete("SELECT 1"),
                    ready(b'I'),
                ])),
                Attached,
                Server(cat(&[
                    parse_complete(),
                    bind_complete(),
                    complete("SELECT 1"),
                    ready(b'I'),
                ])),
                ClientGets(cat(&[
                    parse_complete(),
                    bind_complete(),
                    complete("SELECT 1"),
                    ready(b'I'),
                ])),
            ],
            end: End::Released,
        },
        Case {
            name: "in a transaction (ReadyForQuery T): kept until COMMIT",
            steps: vec![
                Client(query("BEGIN")),
                ServerGets(query("BEGIN")),
                Server(cat(&[complete("BEGIN"), ready(b'T')])),
                ClientGets(cat(&[complete("BEGIN"), ready(b'T')])),
                Attached,
                Client(query("SELECT 1")),
                ServerGets(query("SELECT 1")),
                Server(cat(&[
                    row_description(),
                    data_row("1"),
                    complete("SELECT 1"),
                    ready(b'T'),
                ])),
                ClientGets(cat(&[
                    row_description(),
                    data_row("1"),
                    complete("SELECT 1"),
                    ready(b'T'),
                ])),
                Attached,
                Client(query("COMMIT")),
                ServerGets(query("COMMIT")),
                Server(cat(&[complete("COMMIT"), ready(b'I')])),
                ClientGets(cat(&[complete("COMMIT"), ready(b'I')])),
            ],
            end: End::Released,
        },
    ])
    .await;
}

#[tokio::test]
async fn copy_is_relayed_both_ways() {
    run_cases(vec![
        Case {
            name: "COPY FROM STDIN",
            steps: vec![
                Client(query("COPY t FROM STDIN")),
                ServerGets(query("COPY t FROM STDIN")),
                Server(copy_in_response()),
                ClientGets(copy_in_response()),
                Attached,
                Client(cat(&[copy_data("1\n"), copy_data("2\n")])),
                Client(copy_done()),
                ServerGets(cat(&[copy_data("1\n"), copy_data("2\n"), copy_done()])),
                Attached,
                Server(cat(&[complete("COPY 2"), ready(b'I')])),
                ClientGets(cat(&[complete("COPY 2"), ready(b'I')])),
            ],
            end: End::Released,
        },
        Case {
            name: "COPY TO STDOUT",
            steps: vec![
                Client(query("COPY t TO STDOUT")),
                ServerGets(query("COPY t TO STDOUT")),
                Server(cat(&[
                    copy_out_response(),
                    copy_data("1\n"),
                    copy_data("2\n"),
                    copy_done(),
                ])),
                ClientGets(cat(&[
                    copy_out_response(),
                    copy_data("1\n"),
                    copy_data("2\n"),
                    copy_done(),
                ])),
                Attached,
                Server(cat(&[complete("COPY 2"), ready(b'I')])),
                ClientGets(cat(&[complete("COPY 2"), ready(b'I')])),
            ],
            end: End::Released,
        },
        Case {
            name: "COPY FROM STDIN in the extended protocol: its Sync gets its answer",
            steps: vec![
                Client(cat(&[
                    parse("", "COPY t FROM STDIN"),
                    bind("", ""),
                    execute(""),
                    sync(),
                ])),
                ServerGets(cat(&[
                    parse("", "COPY t FROM STDIN"),
                    bind("", ""),
                    execute(""),
                    sync(),
                ])),
                Server(cat(&[
                    parse_complete(),
                    bind_complete(),
                    copy_in_response(),
                ])),
                ClientGets(cat(&[
                    parse_complete(),
                    bind_complete(),
                    copy_in_response(),
                ])),
                Client(cat(&[copy_data("1\n"), copy_done(), sync()])),
                ServerGets(cat(&[copy_data("1\n"), copy_done(), sync()])),
                Attached,
                Server(cat(&[complete("COPY 1"), ready(b'I')])),
                ClientGets(cat(&[complete("COPY 1"), ready(b'I')])),
            ],
            end: End::Released,
        },
    ])
    .await;
}

#[tokio::test]
async fn a_sync_inside_copy_data_makes_the_connection_uncertain() {
    let (mut relay, mut c) = client(PoolMode::Transaction);
    let (mut conn, mut pg) = server(&[]);
    let steps = vec![
        Client(query("COPY t FROM STDIN")),
        ServerGets(query("COPY t FROM STDIN")),
        Server(copy_in_response()),
        ClientGets(copy_in_response()),
        Client(cat(&[copy_data("1\n"), sync(), copy_done()])),
        ServerGets(cat(&[copy_data("1\n"), sync(), copy_done()])),
        Server(cat(&[complete("COPY 1"), ready(b'I')])),
        ClientGets(cat(&[complete("COPY 1"), ready(b'I')])),
        // Idle, nothing queued, yet the server may still answer that Sync:
        // the client keeps the connection...
        Attached,
        Client(query("SELECT 1")),
        ServerGets(query("SELECT 1")),
        Server(cat(&[complete("SELECT 1"), ready(b'I')])),
        ClientGets(cat(&[complete("SELECT 1"), ready(b'I')])),
        Attached,
        Client(terminate()),
    ];
    let end = run(&mut relay, &mut c, &mut conn, &mut pg, steps).await;
    assert_eq!(end, End::ClientGone(None));
    assert!(relay.uncertain);
    assert_eq!(relay.pinned, Some("a Sync inside COPY data"));
    // ...and it is closed after it, never given to another client.
    assert!(!relay.at_rest(&conn));
}

#[tokio::test]
async fn named_statements_follow_the_client_across_connections() {
    let sql = "SELECT $1::int";
    let name = server_statement_name(sql.as_bytes(), &[0, 0]);
    let (mut relay, mut c) = client(PoolMode::Transaction);

    // First transaction: the Parse goes to the server, renamed.
    let (mut first, mut pg) = server(&[]);
    let end = run(
        &mut relay,
        &mut c,
        &mut first,
        &mut pg,
        vec![
            Client(cat(&[
                parse("s1", sql),
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
            Server(cat(&[
                parse_complete(),
                bind_complete(),
                complete("SELECT 1"),
                ready(b'I'),
            ])),
            ClientGets(cat(&[
                parse_complete(),
                bind_complete(),
                complete("SELECT 1"),
                ready(b'I'),
            ])),
        ],
    )
    .await;
    assert_eq!(end, End::Released);
    assert!(relay.db.is_known(&name));
    assert!(first.prepared.contains(&name));

    // On a connection that lacks it, its Parse is injected before the
    // Bind and the ParseComplete swallowed.
    let (mut second, mut pg) = server(&[]);
    let end = run(
        &mut relay,
        &mut c,
        &mut second,
        &mut pg,
        vec![
            Client(cat(&[
                bind("", "s1"),
                describe(b'S', "s1"),
                execute(""),
                sync(),
            ])),
            ServerGets(cat(&[
                parse(&name, sql),
                bind("", &name),
                cat(&[msg(b'D', &cat(&[vec![b'S'], cstrs(&[&name])]))]),
                execute(""),
                sync(),
            ])),
            Server(cat(&[
                parse_complete(),
                bind_complete(),
                msg(b't', &[0, 1, 0, 0, 0, 23]),
                row_description(),
                data_row("7"),
                complete("SELECT 1"),
                ready(b'I'),
            ])),
            ClientGets(cat(&[
                bind_complete(),
                msg(b't', &[0, 1, 0, 0, 0, 23]),
                row_description(),
                data_row("7"),
                complete("SELECT 1"),
                ready(b'I'),
            ])),
        ],
    )
    .await;
    assert_eq!(end, End::Released);
    assert!(second.prepared.contains(&name));

    // An injected Parse that fails: the error is the client's (its Bind
    // failed), the statement is not on the connection after all.
    let (mut third, mut pg) = server(&[]);
    let end = run(
        &mut relay,
        &mut c,
        &mut third,
        &mut pg,
        vec![
            Client(cat(&[bind("", "s1"), execute(""), sync()])),
            ServerGets(cat(&[
                parse(&name, sql),
                bind("", &name),
                execute(""),
                sync(),
            ])),
            Server(cat(&[error("42P01"), ready(b'I')])),
            ClientGets(cat(&[error("42P01"), ready(b'I')])),
        ],
    )
    .await;
    assert_eq!(end, End::Released);
    assert!(!third.prepared.contains(&name));
}

#[tokio::test]
async fn a_parse_the_connection_has_is_answered_in_order_by_the_pooler() {
    let sql = "SELECT $1::int";
    let name = server_statement_name(sql.as_bytes(), &[0, 0]);
    let (mut relay, mut c) = client(PoolMode::Transaction);
    let (mut conn, mut pg) = server(&[&name]);
    let end = run(
        &mut relay,
        &mut c,
        &mut conn,
        &mut pg,
        vec![
            Client(cat(&[
                parse("", "SELECT 0"),
                bind("", ""),
                parse("s1", sql),
                bind("", "s1"),
                execute(""),
                msg(b'C', &cat(&[vec![b'S'], cstrs(&["s1"])])),
                sync(),
            ])),
            // No Parse and no Close for the server: it has the statement,
            // and other clients may use it.
            ServerGets(cat(&[
                parse("", "SELECT 0"),
                bind("", ""),
                bind("", &name),
                execute(""),
                sync(),
            ])),
            Server(cat(&[
                parse_complete(),
                bind_complete(),
                bind_complete(),
                complete("SELECT 1"),
                ready(b'I'),
            ])),
            // The pooler's ParseComplete after the first BindComplete, its
            // CloseComplete after the CommandComplete: where the client
            // expects them.
            ClientGets(cat(&[
                parse_complete(),
                bind_complete(),
                parse_complete(),
                bind_complete(),
                complete("SELECT 1"),
                msg(b'3', &[]),
                ready(b'I'),
            ])),
        ],
    )
    .await;
    assert_eq!(end, End::Released);
    assert!(relay.statements.is_empty(), "closed");
    assert!(conn.prepared.contains(&name), "still on the server");
}

/// Found while writing these tests (then fixed: `Relay::in_batch`): after
/// Execute and Flush, with every answer in and the last ReadyForQuery idle,
/// the connection counted as at rest although the server is inside the
/// batch's implicit transaction until the Sync, which then went to whichever
/// connection the client leased next.
#[tokio::test]
async fn an_extended_batch_keeps_its_connection_until_sync() {
    run_cases(vec![Case {
        name: "an Execute without Sync yet: kept",
        steps: vec![
            Client(cat(&[
                parse("", "SELECT 1"),
                bind("", ""),
                execute(""),
                msg(b'H', &[]),
            ])),
            ServerGets(cat(&[
                parse("", "SELECT 1"),
                bind("", ""),
                execute(""),
                msg(b'H', &[]),
            ])),
            Server(cat(&[
                parse_complete(),
                bind_complete(),
                complete("SELECT 1"),
            ])),
            ClientGets(cat(&[
                parse_complete(),
                bind_complete(),
                complete("SELECT 1"),
            ])),
            Attached,
            Client(sync()),
            ServerGets(sync()),
            Server(ready(b'I')),
            ClientGets(ready(b'I')),
        ],
        end: End::Released,
    }])
    .await;
}

mod exact;
