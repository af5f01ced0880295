//! The inputs, each a pure function of the seed and its id: post-auth
//! frame sequences (`post_input`, via `frame` and `mutate`), pre-auth
//! packets (`pre_input`: garbage, lying lengths, SSL/GSS/cancel requests,
//! random startup packets, pipelined SASL, interactive SCRAM cases), and
//! the hostile startup parameters of post-auth logins. Messages are
//! encoded by `ogel::wire::frontend`; only what is broken on purpose is
//! made here.

use crate::mutate::{mutate, plan, Plan, MESSAGE_MAX};
use crate::rng::{Rng, STREAM_POST, STREAM_PRE};
use bytes::BytesMut;
use ogel::wire::frontend::{self, BindParam};
use ogel::wire::messages::put;
use ogel::wire::startup::{GSSENC_REQUEST, PROTOCOL_3_0, SSL_REQUEST};

/// The gateway's default `startup_packet_max_bytes`.
pub const STARTUP_MAX: u32 = 10_000;

pub const SQL: &[&str] = &[
    "SELECT 1",
    "SELECT $1::int",
    "SELECT $1::text, $2::int",
    "BEGIN",
    "COMMIT",
    "ROLLBACK",
    "SAVEPOINT s",
    "ROLLBACK TO SAVEPOINT s",
    "RELEASE SAVEPOINT s",
    "SET search_path TO nowhere",
    "SET application_name TO 'fz'",
    "SET LOCAL work_mem TO '1MB'",
    "SET TIME ZONE 'UTC'",
    "SET client_encoding TO 'LATIN1'",
    "SET client_encoding TO 'UTF8'",
    "SET fz.x = 'a''b'",
    "RESET ALL",
    "RESET search_path",
    "DISCARD ALL",
    "SHOW search_path",
    "SELEC oops",
    "SELECT 1/0",
    "SELECT pg_sleep(0.001)",
    "SELECT 1; SELECT 2",
    "SELECT 1; SELEC 2; SELECT 3",
    "VALUES (1), (2), (3)",
    "SELECT generate_series(1, 50)",
    "COPY (SELECT 1) TO STDOUT",
    "COPY (SELECT generate_series(1, 3)) TO STDOUT",
    "COPY fuzz_t FROM STDIN",
    "COPY fuzz_t FROM STDIN WITH (FORMAT binary)",
    "INSERT INTO fuzz_t VALUES ('x')",
    "DECLARE c2 CURSOR FOR SELECT generate_series(1, 5)",
    "FETCH 2 FROM c2",
    "CLOSE c2",
    "DEALLOCATE s1",
    "DEALLOCATE ALL",
    "DEALLOCATE p",
    "DO $$BEGIN RAISE NOTICE 'n'; END$$",
    "NOTIFY hostile, 'x'",
    "SELECT current_setting('application_name')",
    "/* c */ SELECT 1",
    "SELECT 'unterminated",
    "",
    ";",
    // Session-only features: the pooler pins the server connection (and
    // the fuzzer ends such a connection after its probe).
    "LISTEN hostile",
    "CREATE TEMP TABLE t (a int)",
    "CREATE TEMP TABLE t2 (a int) ON COMMIT DROP",
    "PREPARE p AS SELECT 1",
    "EXECUTE p",
    "DECLARE c CURSOR WITH HOLD FOR SELECT 1",
    "SELECT pg_try_advisory_lock(42)",
    "SET ROLE NONE",
    "SET SESSION AUTHORIZATION DEFAULT",
];

/// Rare and heavier: large rows (relayed in pieces past 64 KiB).
pub const RARE_SQL: &[&str] = &[
    "SELECT repeat('x', 100000)",
    "SELECT generate_series(1, 5000)",
    "COPY (SELECT repeat('y', 70000)) TO STDOUT",
];

/// Portal names of Bind and Execute.
pub const PORTALS: &[&[u8]] = &[b"", b"p1", b"c2"];

/// Statement names (often the unnamed one).
pub const NAMES: &[&[u8]] = &[b"", b"", b"s1", b"s2", b"p", b"c2"];

pub fn name(rng: &mut Rng) -> &'static [u8] {
    if rng.chance(1, 40) {
        b"\xff\xfe" // not UTF-8: the gateway refuses the message
    } else {
        rng.pick(NAMES)
    }
}
pub const KNOWN_TAGS: &[u8] = b"QPBDESHCcdfFX";

pub fn sql(rng: &mut Rng) -> Vec<u8> {
    match rng.below(400) {
        0 => rng.pick(RARE_SQL).as_bytes().to_vec(),
        1..=12 => {
            let n = rng.skewed(80);
            rng.text(n)
        }
        13..=20 => {
            // A known statement with a byte changed.
            let mut s = rng.pick(SQL).as_bytes().to_vec();
            if !s.is_empty() {
                let i = rng.below(s.len());
                s[i] = rng.byte().max(1);
            }
            s
        }
        _ => rng.pick(SQL).as_bytes().to_vec(),
    }
}

/// A Bind: often well formed, sometimes with a lying parameter count or
/// value length, sometimes with an arbitrary rest.
pub fn bind(rng: &mut Rng, out: &mut BytesMut) {
    /// A parameter value before it is encoded.
    enum Value {
        Null,
        /// "42" with a length field that lies.
        Lying(i32),
        Bytes(Vec<u8>),
    }
    let portal = rng.pick(PORTALS);
    let statement = name(rng);
    if rng.chance(1, 4) {
        // Arbitrary (mostly invalid) rest, as tests/tests/hostile.rs does.
        let n = rng.below(12);
        let rest = rng.bytes(n);
        frontend::bind_raw(out, portal, statement, &rest);
        return;
    }
    let formats: Vec<i16> = (0..rng.below(3))
        .map(|_| rng.pick(&[0, 1, 1, 7, -1]))
        .collect();
    let declared = if rng.chance(1, 20) {
        rng.pick(&[3usize, 100, 40_000])
    } else {
        rng.below(3)
    };
    let values: Vec<Value> = (0..declared.min(3))
        .map(|_| match rng.below(6) {
            0 => Value::Null,
            1 => Value::Lying(rng.pick(&[1000i32, -2, 5])),
            _ => Value::Bytes(match rng.below(4) {
                0 => b"42".to_vec(),
                1 => b"abc".to_vec(),
                2 => vec![0, 0, 0, 1],
                _ => {
                    let n = rng.below(9);
                    rng.bytes(n)
                }
            }),
        })
        .collect();
    let params: Vec<BindParam<'_>> = values
        .iter()
        .map(|v| match v {
            Value::Null => BindParam::Null,
            Value::Lying(len) => BindParam::Declaring(*len, b"42"),
            Value::Bytes(b) => BindParam::Value(b),
        })
        .collect();
    let results: Vec<i16> = (0..rng.below(3)).map(|_| rng.pick(&[0i16, 1, 2])).collect();
    frontend::bind_declaring(
        out,
        portal,
        statement,
        &formats,
        declared as i16,
        &params,
        &results,
    );
}

/// One protocol message (or deliberately broken bytes).
pub fn frame(rng: &mut Rng, out: &mut BytesMut) {
    const WEIGHTS: &[u32] = &[
        140, // Query
        100, // Parse
        100, // Bind
        60,  // Describe
        80,  // Execute
        100, // Sync
        30,  // Flush
        40,  // Close
        50,  // CopyData
        30,  // CopyDone
        20,  // CopyFail
        8,   // FunctionCall
        8,   // Terminate
        15,  // random tag
        10,  // bad length
        1,   // large CopyData
        1,   // large Query
    ];
    match rng.weighted(WEIGHTS) {
        0 => frontend::query(out, &sql(rng)),
        1 => {
            let statement = name(rng);
            let sql = sql(rng);
            if rng.chance(1, 20) {
                // A parameter count with no types after it.
                let count = rng.pick(&[1u16, 3, 65535]);
                frontend::parse_declaring(out, statement, &sql, count, &[]);
            } else {
                let types: Vec<u32> = (0..rng.below(3))
                    .map(|_| rng.pick(&[0u32, 23, 25, 16, 17, 1_000_000]))
                    .collect();
                frontend::parse(out, statement, &sql, &types);
            }
        }
        2 => bind(rng, out),
        3 => {
            let kind = if rng.chance(1, 10) {
                rng.byte()
            } else {
                rng.pick(b"SP")
            };
            frontend::describe(out, kind, name(rng))
        }
        4 => {
            let portal = rng.pick(PORTALS);
            let max_rows = rng.pick(&[0i32, 0, 1, 2, -1, 0x7fff_ffff]);
            frontend::execute(out, portal, max_rows)
        }
        5 => frontend::sync(out),
        6 => frontend::flush(out),
        7 => {
            let kind = if rng.chance(1, 10) {
                rng.byte()
            } else {
                rng.pick(b"SP")
            };
            frontend::close(out, kind, name(rng))
        }
        8 => {
            let data: Vec<u8> = match rng.below(6) {
                0 => b"a\n".to_vec(),
                1 => b"1\tx\n".to_vec(),
                2 => b"\\.\n".to_vec(),
                3 => b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0".to_vec(),
                4 => b"\xff\xfe\n".to_vec(),
                _ => {
                    let n = rng.skewed(64);
                    rng.bytes(n)
                }
            };
            frontend::copy_data(out, &data)
        }
        9 => frontend::copy_done(out),
        10 => {
            if rng.chance(1, 5) {
                put(out, b'f', &[b"no terminator"])
            } else {
                frontend::copy_fail(out, b"fz")
            }
        }
        11 => {
            // FunctionCall: an object id no built-in function has, then noise.
            let oid = 100_000 + rng.below(1_000_000) as u32;
            let n = rng.below(24);
            frontend::function_call_raw(out, oid, &rng.bytes(n))
        }
        12 => {
            if rng.chance(1, 4) {
                put(out, b'X', &[b"bye"])
            } else {
                frontend::terminate(out)
            }
        }
        13 => {
            let tag = rng.byte();
            let n = rng.skewed(32);
            let body = rng.bytes(n);
            put(out, tag, &[&body])
        }
        14 => {
            let tag = if rng.chance(1, 2) {
                rng.pick(KNOWN_TAGS)
            } else {
                rng.byte()
            };
            let len = match rng.below(6) {
                0 => rng.below(4) as u32,
                1 => rng.u32(),
                2 => 4 + rng.below(200) as u32,
                3 => rng.pick(&[MESSAGE_MAX, MESSAGE_MAX + 1, u32::MAX, MESSAGE_MAX - 1]),
                4 => 4 + rng.below(100_000) as u32,
                _ => 5 + rng.below(8) as u32,
            };
            frontend::header_only(out, tag, len);
        }
        15 => {
            let mut data = vec![b'a'; 70_000];
            for i in (79..data.len()).step_by(80) {
                data[i] = b'\n';
            }
            frontend::copy_data(out, &data)
        }
        _ => {
            let mut q = b"SELECT '".to_vec();
            q.resize(70_008, b'x');
            q.push(b'\'');
            frontend::query(out, &q)
        }
    }
}

/// Post-auth input `k`: its bytes (completed) and what it is owed.
pub fn post_input(seed: u64, k: u64, skip_known: bool) -> (Vec<u8>, Plan) {
    let mut rng = Rng::derive(seed, STREAM_POST, k);
    let frames = 1 + rng.skewed(10);
    let mut out = BytesMut::new();
    for _ in 0..frames {
        frame(&mut rng, &mut out);
    }
    let mut bytes = out.to_vec();
    mutate(&mut rng, &mut bytes);
    let plan = plan(&mut bytes, skip_known);
    (bytes, plan)
}
/// A pre-auth input.
pub enum PreInput {
    /// Bytes written at once, maybe followed by a half-close.
    Raw { bytes: Vec<u8>, half_close: bool },
    /// An interactive SCRAM exchange with mutations.
    Scram(ScramCase),
}

/// Who an interactive SCRAM exchange logs in as.
#[derive(Clone, Copy, Debug)]
pub enum Who {
    /// The --url role and database, right password.
    Owner,
    /// The admin console (right password if --admin-password is given).
    Admin,
    /// A role that does not exist (mock verifier).
    Nobody,
}

pub struct ScramCase {
    pub who: Who,
    /// How the client-first message is spoiled (0: not at all).
    pub first: usize,
    /// How the client-final message is spoiled (0: not at all).
    pub last: usize,
    pub rng: Rng,
}

pub fn random_value(rng: &mut Rng) -> Vec<u8> {
    match rng.below(8) {
        0 => b"\xff\xfe".to_vec(),
        1 => vec![b'a'; 5000],
        2 => b"a'b\\c\"d".to_vec(),
        3 => Vec::new(),
        _ => {
            let n = rng.skewed(24);
            rng.text(n)
        }
    }
}

/// A startup packet, often malformed.
pub fn random_startup(rng: &mut Rng) -> Vec<u8> {
    let version = match rng.below(10) {
        0 => 3 << 16 | rng.below(4) as u32,
        1 => 2 << 16,
        2 => rng.u32(),
        3 => 4 << 16,
        _ => PROTOCOL_3_0,
    };
    let mut rest = BytesMut::new();
    for _ in 0..rng.below(6) {
        let key: Vec<u8> = match rng.below(14) {
            0..=2 => b"user".to_vec(),
            3..=4 => b"database".to_vec(),
            5 => b"options".to_vec(),
            6 => b"application_name".to_vec(),
            7 => b"client_encoding".to_vec(),
            8 => b"replication".to_vec(),
            9 => b"_pq_.fz".to_vec(),
            10 => b"search_path".to_vec(),
            11 => Vec::new(),
            _ => random_value(rng),
        };
        let value: Vec<u8> = match key.as_slice() {
            b"user" => match rng.below(6) {
                0 => b"app_owner".to_vec(),
                1 => b"ogel".to_vec(),
                2 => b"nobody".to_vec(),
                3 => Vec::new(),
                _ => random_value(rng),
            },
            b"database" => rng
                .pick(&[
                    b"app".as_slice(),
                    b"ogel",
                    b"pgbouncer",
                    b"nosuch",
                    b"app@main",
                    b"app@nope",
                    b"",
                    b"@",
                    b"\xff",
                ])
                .to_vec(),
            b"options" => rng
                .pick(&[
                    b"-c search_path=x".as_slice(),
                    b"branch=main",
                    b"branch=dev",
                    b"branch=main branch=dev",
                    b"-B 100",
                    b"--work-mem=64MB",
                    b"-c",
                    b"\\",
                ])
                .to_vec(),
            b"replication" => rng
                .pick(&[b"true".as_slice(), b"database", b"off", b"0"])
                .to_vec(),
            _ => random_value(rng),
        };
        frontend::cstring(&mut rest, &key);
        frontend::cstring(&mut rest, &value);
    }
    match rng.below(10) {
        0 => {}                                 // no final terminator
        1 => rest.extend_from_slice(b"\0tail"), // trailing bytes
        _ => rest.extend_from_slice(b"\0"),
    }
    let mut out = BytesMut::new();
    frontend::first_packet(&mut out, version, &rest);
    if rng.chance(1, 8) {
        // A lying length.
        let real = out.len() as i64;
        let len = match rng.below(5) {
            0 => real - 1 - rng.below(4) as i64,
            1 => real + 1 + rng.below(64) as i64,
            2 => STARTUP_MAX as i64,
            3 => STARTUP_MAX as i64 + 1,
            _ => 7,
        };
        frontend::set_first_packet_length(&mut out, 0, len.max(0) as u32);
    }
    out.to_vec()
}

/// SASL messages a client that cannot wait for the server's nonce sends.
pub fn pipelined_sasl(rng: &mut Rng) -> Vec<u8> {
    const FIRSTS: &[&[u8]] = &[
        b"n,,n=,r=abc",
        b"y,,n=,r=abc",
        b"p=tls-server-end-point,,n=,r=abc",
        b"n,a=x,n=,r=abc",
        b"n,,m=ext,n=,r=abc",
        b"n,,n=,r=",
        b"n,,n=,r=ab\x7f",
        b"n,,n=,r=abc,x=1",
        b"n,,n=,r=abc,q",
        b"n,,n=user,r=abc,r=def",
        b"n,,",
        b"n",
        b"",
        b"n,,n=,r=\xff",
        b"n,,n=\0,r=abc",
    ];
    const FINALS: &[&[u8]] = &[
        b"c=biws,r=abcXYZ,p=AAAA",
        b"c=biws,r=abc,p=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
        b"c=eSws,r=abc,p=",
        b"c=biws,p=AAAA",
        b"r=abc,c=biws",
        b"c=biws,r=abc,x=1,p=AAAA",
        b",,,,",
        b"",
    ];
    let mut out = BytesMut::new();
    match rng.below(8) {
        0 => {
            let n = rng.skewed(64);
            frontend::sasl_response(&mut out, &rng.bytes(n));
        }
        1 => {
            let mechanism = rng.pick(&[
                b"PLAIN".as_slice(),
                b"SCRAM-SHA-256-PLUS",
                b"",
                b"scram-sha-256",
            ]);
            frontend::sasl_initial_response(&mut out, mechanism, b"n,,n=,r=abc");
        }
        2 => {
            let data = rng.pick(FIRSTS);
            let declared = rng.pick(&[-1, data.len() as i32 + 1, 0, i32::MAX, -100]);
            frontend::sasl_initial_response_declaring(&mut out, b"SCRAM-SHA-256", data, declared);
        }
        3 => {
            frontend::sasl_initial_response(&mut out, b"SCRAM-SHA-256", rng.pick(FIRSTS));
            if rng.chance(2, 3) {
                frontend::sasl_response(&mut out, rng.pick(FINALS));
            }
        }
        4 => frontend::sasl_response(&mut out, &vec![b'n'; 4097 + rng.below(3000)]),
        5 => frontend::query(&mut out, b"SELECT 1"),
        6 => frontend::header_only(&mut out, b'p', rng.below(4) as u32),
        _ => {} // nothing: the gateway waits for the SASL response
    }
    out.to_vec()
}

/// A well-formed StartupMessage (protocol 3.0).
pub fn startup_packet(params: &[(&[u8], &[u8])]) -> Vec<u8> {
    let mut out = BytesMut::new();
    frontend::startup_message(&mut out, params);
    out.to_vec()
}

/// Pre-auth input `j`; `keys` are cancel keys seen at logins.
pub fn pre_input(seed: u64, j: u64, keys: &[(u32, u32)]) -> PreInput {
    let mut rng = Rng::derive(seed, STREAM_PRE, j);
    let mut bytes = Vec::new();
    match rng.weighted(&[10, 10, 8, 5, 15, 10, 5]) {
        0 => {
            let n = rng.below(65);
            bytes = rng.bytes(n);
        }
        1 => {
            let len = match rng.below(6) {
                0 => rng.u32(),
                1 => rng.below(16) as u32,
                2 => 8 + rng.below(STARTUP_MAX as usize - 7) as u32,
                3 => STARTUP_MAX,
                4 => STARTUP_MAX + 1,
                _ => 0x8000_0000,
            };
            bytes.extend_from_slice(&len.to_be_bytes());
            let n = rng.below(65);
            bytes.extend(rng.bytes(n));
        }
        2 => {
            for _ in 0..1 + rng.below(4) {
                let code = rng.pick(&[SSL_REQUEST, GSSENC_REQUEST]);
                let mut packet = BytesMut::new();
                if rng.chance(1, 6) {
                    frontend::first_packet(&mut packet, code, &[rng.byte()]);
                } else {
                    frontend::first_packet(&mut packet, code, &[]);
                }
                bytes.extend_from_slice(&packet);
            }
            match rng.below(4) {
                0 => bytes.extend(random_startup(&mut rng)),
                1 => {
                    let n = rng.below(32);
                    bytes.extend(rng.bytes(n));
                }
                2 => bytes.extend(startup_packet(&[
                    (b"user", b"app_owner"),
                    (b"database", b"app"),
                ])),
                _ => {}
            }
        }
        3 => {
            let (pid, secret) = if !keys.is_empty() && rng.chance(1, 3) {
                keys[rng.below(keys.len())]
            } else {
                (rng.u32(), rng.u32())
            };
            let mut key = pid.to_be_bytes().to_vec();
            key.extend_from_slice(&secret.to_be_bytes());
            match rng.below(6) {
                0 => key.truncate(4),
                1 => key.extend_from_slice(b"more"),
                _ => {}
            }
            let mut packet = BytesMut::new();
            frontend::cancel_request_raw(&mut packet, &key);
            bytes = packet.to_vec();
        }
        4 => {
            bytes = random_startup(&mut rng);
            if rng.chance(1, 3) {
                let n = rng.below(32);
                bytes.extend(rng.bytes(n));
            }
        }
        5 => {
            let (user, database): (&[u8], &[u8]) = match rng.below(10) {
                0..=5 => (b"app_owner", b"app"),
                6..=7 => (b"ogel", b"ogel"),
                8 => (b"nobody", b"app"),
                _ => (b"app_owner", b"nosuch"),
            };
            bytes = startup_packet(&[(b"user", user), (b"database", database)]);
            bytes.extend(pipelined_sasl(&mut rng));
        }
        _ => {
            let who = match rng.below(10) {
                0..=5 => Who::Owner,
                6..=7 => Who::Admin,
                _ => Who::Nobody,
            };
            let first = if rng.chance(3, 10) {
                1 + rng.below(8)
            } else {
                0
            };
            let last = if rng.chance(1, 10) {
                0
            } else {
                1 + rng.below(8)
            };
            return PreInput::Scram(ScramCase {
                who,
                first,
                last,
                rng,
            });
        }
    }
    let half_close = rng.chance(1, 2);
    PreInput::Raw { bytes, half_close }
}
/// Startup parameters a hostile (but well-formed) client may send.
pub fn hostile_params(rng: &mut Rng) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut params = Vec::new();
    for _ in 0..1 + rng.below(3) {
        let (key, value): (&[u8], Vec<u8>) = match rng.below(14) {
            0 => (
                b"application_name",
                rng.pick(&[
                    b"fz".as_slice(),
                    b"",
                    b"a'b\\c",
                    "\u{fc}n\u{ef}".as_bytes(),
                    &[b'n'; 70],
                ])
                .to_vec(),
            ),
            1 => (
                b"client_encoding",
                rng.pick(&[
                    b"UTF8".as_slice(),
                    b"LATIN1",
                    b"SQL_ASCII",
                    b"WIN1252",
                    b"BOGUS",
                    b"utf-8",
                ])
                .to_vec(),
            ),
            2 => (
                b"DateStyle",
                rng.pick(&[b"ISO, MDY".as_slice(), b"German", b"bogus"])
                    .to_vec(),
            ),
            3 => (
                b"TimeZone",
                rng.pick(&[b"UTC".as_slice(), b"Europe/Berlin", b"Mars/Olympus"])
                    .to_vec(),
            ),
            4 => (
                b"IntervalStyle",
                rng.pick(&[b"postgres".as_slice(), b"iso_8601", b"bogus"])
                    .to_vec(),
            ),
            5 => (
                b"search_path",
                rng.pick(&[b"public".as_slice(), b"\"odd name\", public", b"x'y"])
                    .to_vec(),
            ),
            6 => (b"fz.custom", {
                let n = rng.skewed(20);
                rng.text(n)
            }),
            7 => (b"bogus_param", b"1".to_vec()),
            8 => (
                b"work_mem",
                rng.pick(&[b"64kB".as_slice(), b"bogus"]).to_vec(),
            ),
            9 => (
                b"options",
                rng.pick(&[
                    b"-c search_path=a,b".as_slice(),
                    b"-c fz.x=1 --fz.y=2",
                    b"-c application_name=a\\ b",
                    b"-B 100",
                    b"-c =x",
                    b"branch=main",
                    b"-c work_mem=64MB",
                    b"-c lock_timeout=bogus",
                    b"-c fz.q='\\''",
                ])
                .to_vec(),
            ),
            10 => (b"_pq_.fz", b"on".to_vec()),
            11 => (b"bad name", b"x".to_vec()),
            12 => (b"server_version", b"1".to_vec()),
            _ => (
                b"standard_conforming_strings",
                rng.pick(&[b"off".as_slice(), b"on", b"bogus"]).to_vec(),
            ),
        };
        params.push((key.to_vec(), value));
    }
    params
}
