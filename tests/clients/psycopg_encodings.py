#!/usr/bin/env python3
"""psycopg 3 in client encodings other than UTF-8, through the gateway:
run by tests/tests/encodings.rs, once per pool mode.

Usage: psycopg_encodings.py POSTGRESQL_URL

For LATIN9, EUC_JP, SJIS, BIG5 and GBK: every character the server converts
round-trips through a table (parameters and literals, read back as text and
as UTF-8 bytes), identifiers, notices, error messages and COPY data pass
byte-exact, and two clients in different encodings take turns on the same
server connections. Then: ParameterStatus spellings, notification pids and
prepared-statement churn under concurrency. Prints "OK encodings" when all
pass; any failure exits nonzero with a message on stderr.
"""

import sys
import threading
import traceback

ENCODINGS = {
    # server name: Python codec
    "LATIN9": "iso8859_15",
    "EUC_JP": "euc_jp",
    "SJIS": "shift_jis",
    "BIG5": "big5",
    "GBK": "gbk",
}


def check(cond, what):
    if not cond:
        raise AssertionError(what)


def step(name):
    print(f"encodings: {name}", flush=True)


def candidates(codec):
    """Every BMP character (but NUL) Python can encode in `codec`."""
    chars = []
    for cp in range(1, 0x10000):
        if 0xD800 <= cp < 0xE000:
            continue
        ch = chr(cp)
        try:
            ch.encode(codec)
        except UnicodeEncodeError:
            continue
        chars.append(ch)
    return chars


def server_accepts(conn, encoding, codec, chars):
    """The subset of `chars` the server converts to and from `encoding` as
    Python does (both agree on the bytes), asked in a UTF-8 session with bytea, so the
    answer does not depend on the relay's handling of the encoding."""
    with conn.cursor() as cur:
        cur.execute(
            """
            CREATE OR REPLACE FUNCTION ogel_same_chars(enc text, cs bytea[], us text[])
            RETURNS int[] LANGUAGE plpgsql AS $$
            DECLARE r int[] := '{}'; i int;
            BEGIN
              FOR i IN 1..coalesce(array_length(cs, 1), 0) LOOP
                BEGIN
                  IF convert_from(cs[i], enc) = us[i] AND convert_to(us[i], enc) = cs[i] THEN
                    r := r || i;
                  END IF;
                EXCEPTION WHEN others THEN NULL;
                END;
              END LOOP;
              RETURN r;
            END $$
            """
        )
        cur.execute(
            "SELECT ogel_same_chars(%s, %s, %s)",
            (encoding, [c.encode(codec) for c in chars], chars),
        )
        ok = cur.fetchone()[0]
    return [chars[i - 1] for i in ok]


def round_trip(psycopg, url, encoding, codec, chars):
    table = f"enc_{encoding.lower()}"
    with psycopg.connect(url, client_encoding=encoding, autocommit=True) as conn:
        status = conn.info.parameter_status("client_encoding")
        check(status == encoding, f"{encoding}: client_encoding reported {status!r}")
        notices = []
        conn.add_notice_handler(lambda d: notices.append(d.message_primary))
        with conn.cursor() as cur:
            cur.execute(f"DROP TABLE IF EXISTS {table}")
            cur.execute(f"CREATE TABLE {table} (id int PRIMARY KEY, s text)")
            chunks = ["".join(chars[i : i + 400]) for i in range(0, len(chars), 400)]
            # Parameters (extended protocol, server-side binding).
            for i, chunk in enumerate(chunks):
                cur.execute(f"INSERT INTO {table} VALUES (%s, %s)", (i, chunk))
            # Literals in the SQL text (simple protocol, client-side binding).
            ccur = psycopg.ClientCursor(conn)
            for i, chunk in enumerate(chunks):
                ccur.execute(f"INSERT INTO {table} VALUES (%s, %s)", (10_000 + i, chunk))
            cur.execute(
                f"SELECT id, s, convert_to(s, 'UTF8') FROM {table} ORDER BY id"
            )
            rows = cur.fetchall()
            check(len(rows) == 2 * len(chunks), f"{encoding}: rows")
            for id_, s, utf8 in rows:
                want = chunks[id_ % 10_000]
                check(s == want, f"{encoding}: row {id_} came back different")
                check(
                    bytes(utf8) == want.encode("utf-8"),
                    f"{encoding}: row {id_} is stored as other characters",
                )
            # Identifiers, notices and errors with a non-ASCII character.
            ch = chars[-1]
            cur.execute(f'SELECT 1 AS "{ch}"')
            check(cur.description[0].name == ch, f"{encoding}: identifier")
            cur.execute(f"DO $$ BEGIN RAISE NOTICE 'note {ch}'; END $$")
            check(notices and notices[-1] == f"note {ch}", f"{encoding}: notice {notices!r}")
            try:
                cur.execute(f"DO $$ BEGIN RAISE EXCEPTION 'fail {ch}'; END $$")
                raise AssertionError(f"{encoding}: no error")
            except psycopg.errors.RaiseException as e:
                check(e.diag.message_primary == f"fail {ch}", f"{encoding}: error text")
            # E-strings whose characters end in a backslash byte (SJIS,
            # BIG5, GBK) and a SET the pooler must carry.
            tricky = [c for c in chars if c.encode(codec).endswith(b"\\") and len(c.encode(codec)) > 1]
            value = "".join(tricky[:20]) or ch
            cur.execute(f"SET ogel.note = E'{value}'")
            cur.execute("SELECT current_setting('ogel.note')")
            check(cur.fetchone()[0] == value, f"{encoding}: SET with an E-string")
            # COPY both ways, as bytes: psycopg's own row formatting escapes
            # backslash bytes, also the second byte of an SJIS character.
            def escape(text):
                for a, b in [("\\", "\\\\"), ("\t", "\\t"), ("\n", "\\n"), ("\r", "\\r")]:
                    text = text.replace(a, b)
                return text

            with cur.copy(f"COPY {table} (id, s) FROM STDIN") as copy:
                copy.write(f"50000\t{escape(chunks[0])}\n".encode(codec))
            with cur.copy(f"COPY (SELECT s FROM {table} WHERE id = 50000) TO STDOUT") as copy:
                got = b"".join(bytes(data) for data in copy)
            check(unescape(got.decode(codec)) == chunks[0] + "\n", f"{encoding}: COPY")
            cur.execute(f"DROP TABLE {table}")
        check(len(conn.execute("SELECT 1").fetchall()) == 1, f"{encoding}: still connected")
    return len(chars)


def unescape(text):
    """COPY text format's escapes, undone."""
    out, chars = [], iter(text)
    escapes = {"b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v"}
    for c in chars:
        if c == "\\":
            c = next(chars)
            c = escapes.get(c, c)
        out.append(c)
    return "".join(out)


def take_turns(psycopg, url):
    """Two clients in different encodings share the pool's connections: each
    keeps its own encoding and settings on every transaction."""
    clients = [
        ("LATIN9", "iso8859_15", "\u20ac\u0160"),
        ("SJIS", "shift_jis", "\u8868\u80fd"),
    ]
    conns = [psycopg.connect(url, client_encoding=e, autocommit=True) for e, _, _ in clients]
    try:
        for conn, (_, _, text) in zip(conns, clients):
            conn.execute(f"SET ogel.note = '{text}'")
        for _ in range(20):
            for conn, (encoding, _, text) in zip(conns, clients):
                got = conn.execute(
                    "SELECT current_setting('client_encoding'), current_setting('ogel.note'), %s::text",
                    (text,),
                ).fetchone()
                check(got == (encoding, text, text), f"{encoding} after a turn: {got!r}")
    finally:
        for conn in conns:
            conn.close()


def spellings(psycopg, url):
    for asked, told in [("utf8", "UTF8"), ("UTF-8", "UTF8"), ("eucjp", "EUC_JP"), ("latin9", "LATIN9")]:
        with psycopg.connect(url, client_encoding=asked) as conn:
            got = conn.info.parameter_status("client_encoding")
            check(got == told, f"client_encoding={asked}: told {got!r}, Postgres says {told!r}")
    # Spelt from the server's default, not from whatever another client
    # left on the connection that answers.
    with psycopg.connect(url, autocommit=True) as other:
        default_order = other.info.parameter_status("DateStyle").split(", ")[1]
        other_order = "YMD" if default_order != "YMD" else "MDY"
        other.execute(f"SET DateStyle TO 'German, {other_order}'")
        with psycopg.connect(url, options="-c DateStyle=ISO") as conn:
            got = conn.info.parameter_status("DateStyle")
            want = f"ISO, {default_order}"
            check(got == want, f"DateStyle=ISO: told {got!r}, Postgres says {want!r}")
    try:
        psycopg.connect(url, client_encoding="no_such_encoding").close()
        raise AssertionError("an unknown client_encoding was accepted")
    except psycopg.OperationalError as e:
        check("no_such_encoding" in str(e), f"unknown encoding: {e}")


def notification_pids(psycopg, url):
    with psycopg.connect(url, autocommit=True) as listener, psycopg.connect(
        url, autocommit=True
    ) as other:
        listener.execute("LISTEN ogel_chan")
        listener.execute("NOTIFY ogel_chan, 'self'")
        other.execute("NOTIFY ogel_chan, 'other-1'")
        other.execute("SELECT pg_notify('ogel_chan', 'other-2')")
        got = {}
        for n in listener.notifies(timeout=10, stop_after=3):
            got[n.payload] = n.pid
        check(len(got) == 3, f"notifications: {got!r}")
        check(
            got["self"] == listener.info.backend_pid,
            f"own notification pid {got['self']} != BackendKeyData pid {listener.info.backend_pid}",
        )
        check(got["other-1"] == got["other-2"], f"the other client's pid changed: {got!r}")
        check(
            got["other-1"] == other.info.backend_pid,
            f"the other client's pid {got['other-1']} != its BackendKeyData pid {other.info.backend_pid}",
        )


def churn(psycopg, url, threads=6, rounds=40):
    """Statements closed, deallocated and prepared again under other texts,
    and one text under many names, by several clients at once."""
    errors = []

    def worker(n):
        try:
            with psycopg.connect(url, autocommit=True) as conn:
                pg = conn.pgconn
                conn.prepared_max = 4  # psycopg DEALLOCATEs what falls out
                for r in range(rounds):
                    got = conn.execute(
                        f"SELECT %s::int + {r % 9}", (n,), prepare=True
                    ).fetchone()[0]
                    check(got == n + r % 9, f"cached statement {r}: {got}")
                    name = f"churn_{n}".encode()
                    res = pg.prepare(name, f"SELECT {r}::int, {n}::int".encode())
                    check(res.status == psycopg.pq.ExecStatus.COMMAND_OK, f"prepare {r}: {res.error_message}")
                    res = pg.prepare(name, b"SELECT 0")
                    check(
                        res.error_field(psycopg.pq.DiagnosticField.SQLSTATE) == b"42P05",
                        f"a second prepare of {name!r}: {res.status} {res.error_message}",
                    )
                    res = pg.exec_prepared(name, [])
                    check(res.get_value(0, 0) == str(r).encode(), f"{name!r} after churn: {res.get_value(0, 0)}")
                    # The same text under another name, then away.
                    alias = f"alias_{n}_{r}".encode()
                    pg.prepare(alias, f"SELECT {r}::int, {n}::int".encode())
                    res = pg.exec_prepared(alias, [])
                    check(res.ntuples == 1 and res.get_value(0, 1) == str(n).encode(), "alias")
                    if r % 3 == 0:
                        # psycopg empties its own statement cache on this.
                        conn.execute("DEALLOCATE ALL")
                    else:
                        res = pg.exec_(b"DEALLOCATE " + name)
                        check(res.status == psycopg.pq.ExecStatus.COMMAND_OK, f"DEALLOCATE: {res.error_message}")
                        res = pg.exec_(b"DEALLOCATE PREPARE " + alias)
                        check(res.status == psycopg.pq.ExecStatus.COMMAND_OK, f"DEALLOCATE alias: {res.error_message}")
                    res = pg.exec_prepared(name, [])
                    check(
                        res.error_field(psycopg.pq.DiagnosticField.SQLSTATE) == b"26000",
                        f"{name!r} used after DEALLOCATE: {res.status}",
                    )
        except Exception:
            errors.append(traceback.format_exc())

    ts = [threading.Thread(target=worker, args=(n,)) for n in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    check(not errors, "churn:\n" + "\n".join(errors))


def main(url):
    import psycopg

    step(f"psycopg {psycopg.__version__} ({psycopg.pq.__impl__})")
    with psycopg.connect(url, autocommit=True) as conn:
        per_encoding = {
            e: server_accepts(conn, e, codec, candidates(codec)) for e, codec in ENCODINGS.items()
        }
    for encoding, codec in ENCODINGS.items():
        n = round_trip(psycopg, url, encoding, codec, per_encoding[encoding])
        step(f"{encoding}: {n} characters round-trip")
    take_turns(psycopg, url)
    step("two encodings take turns on shared connections")
    spellings(psycopg, url)
    step("ParameterStatus spellings")
    notification_pids(psycopg, url)
    step("notification pids")
    churn(psycopg, url)
    step("statement churn")
    print("OK encodings", flush=True)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    try:
        main(sys.argv[1])
    except Exception:
        traceback.print_exc()
        sys.exit(1)
