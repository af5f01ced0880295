#!/usr/bin/env python3
"""psycopg 3 driving the OgelBase gateway: run by tests/tests/drivers.rs.

Usage: psycopg_client.py POSTGRESQL_URL

Connects through the gateway and exercises the simple and extended query
protocols (client-side and server-side binding, named prepared statements),
a rolled-back transaction, COPY FROM STDIN / COPY TO STDOUT and
LISTEN/NOTIFY between two connections. Prints "OK psycopg" when all pass;
any failure exits nonzero with a message on stderr.
"""

import sys
import time
import traceback


def check(cond, what):
    if not cond:
        raise AssertionError(what)


def step(name):
    print(f"psycopg: {name}", flush=True)


def main(url):
    try:
        import psycopg
    except ImportError:
        sys.exit(
            "psycopg_client: the Python module psycopg (psycopg 3) is missing: "
            "run scripts/test, which installs it (python3 -m pip install 'psycopg[binary]>=3.1')"
        )

    step(f"psycopg {psycopg.__version__} ({psycopg.pq.__impl__}), connecting")
    with psycopg.connect(url, connect_timeout=60) as conn:
        # Simple query protocol: no parameters, several statements at once.
        step("simple query")
        with conn.cursor() as cur:
            cur.execute("SELECT 1 AS one, current_user::text AS who")
            check(cur.fetchone() == (1, "app_owner"), "SELECT 1, current_user")
            cur.execute(
                "DROP TABLE IF EXISTS py_items; "
                "CREATE TABLE py_items (id int PRIMARY KEY, name text, score float8)"
            )
        conn.commit()

        # Extended protocol with parameters: client-side prepared statements
        # by default after a few runs; prepare=True forces a named
        # server-side prepared statement on the first run.
        step("parameterized queries")
        with conn.cursor() as cur:
            for i in range(5):
                cur.execute(
                    "INSERT INTO py_items (id, name, score) VALUES (%s, %s, %s)",
                    (i, f"item {i}", i * 1.5),
                )
            for i in range(5, 10):
                cur.execute(
                    "INSERT INTO py_items (id, name, score) VALUES (%s, %s, %s)",
                    (i, f"item {i}", i * 1.5),
                    prepare=True,
                )
            cur.executemany(
                "INSERT INTO py_items (id, name, score) VALUES (%s, %s, %s)",
                [(i, f"item {i}", i * 1.5) for i in range(10, 20)],
            )
            cur.execute("SELECT name, score FROM py_items WHERE id = %s", (7,), prepare=True)
            check(cur.fetchone() == ("item 7", 10.5), "prepared SELECT by id")
            # The same prepared statement again, with another parameter.
            cur.execute("SELECT name, score FROM py_items WHERE id = %s", (3,), prepare=True)
            check(cur.fetchone() == ("item 3", 4.5), "prepared SELECT reused")
            # Binary results, typed parameters and NULLs.
            with conn.cursor(binary=True) as bcur:
                bcur.execute(
                    "SELECT %s::int + 1, %s::text, %s::text IS NULL",
                    (41, "héllo ✓", None),
                )
                check(bcur.fetchone() == (42, "héllo ✓", True), "binary cursor")
            cur.execute("SELECT count(*) FROM py_items")
            check(cur.fetchone() == (20,), "20 rows after inserts")
        conn.commit()

        # A statement error leaves the session usable after rollback.
        step("error then recovery")
        with conn.cursor() as cur:
            try:
                cur.execute("SELECT * FROM py_missing_table")
                raise AssertionError("query on a missing table succeeded")
            except psycopg.errors.UndefinedTable:
                pass
        conn.rollback()

        # A transaction rolled back leaves no trace.
        step("transaction with rollback")
        with conn.transaction(force_rollback=True):
            conn.execute("INSERT INTO py_items (id, name) VALUES (%s, %s)", (100, "doomed"))
            row = conn.execute("SELECT name FROM py_items WHERE id = 100").fetchone()
            check(row == ("doomed",), "row visible inside its transaction")
        conn.commit()
        row = conn.execute("SELECT count(*) FROM py_items WHERE id = 100").fetchone()
        check(row == (0,), "rolled-back row is absent")
        # And the explicit form.
        conn.execute("INSERT INTO py_items (id, name) VALUES (101, 'also doomed')")
        conn.rollback()
        row = conn.execute("SELECT count(*) FROM py_items WHERE id = 101").fetchone()
        check(row == (0,), "explicitly rolled-back row is absent")
        conn.commit()

        # COPY FROM STDIN, row by row and as raw text, then COPY TO STDOUT.
        step("COPY FROM STDIN")
        with conn.cursor() as cur:
            cur.execute("DROP TABLE IF EXISTS py_copy; CREATE TABLE py_copy (a int, b text)")
            with cur.copy("COPY py_copy (a, b) FROM STDIN") as copy:
                for i in range(1000):
                    copy.write_row((i, f"row {i}\twith tab"))
            with cur.copy("COPY py_copy (a, b) FROM STDIN") as copy:
                copy.write("".join(f"{i}\traw {i}\n" for i in range(1000, 1500)))
            cur.execute("SELECT count(*), sum(a) FROM py_copy")
            check(cur.fetchone() == (1500, sum(range(1500))), "1500 rows copied in")
            cur.execute("SELECT b FROM py_copy WHERE a = 5")
            check(cur.fetchone() == ("row 5\twith tab",), "escaped tab survives COPY")
        conn.commit()

        step("COPY TO STDOUT")
        with conn.cursor() as cur:
            rows = []
            with cur.copy("COPY (SELECT a, b FROM py_copy ORDER BY a) TO STDOUT") as copy:
                copy.set_types(["int4", "text"])
                for row in copy.rows():
                    rows.append(row)
            check(len(rows) == 1500, f"1500 rows copied out, got {len(rows)}")
            check(rows[5] == (5, "row 5\twith tab"), f"row 5 copied out: {rows[5]!r}")
            check(rows[1499] == (1499, "raw 1499"), f"last row copied out: {rows[1499]!r}")
            raw = bytearray()
            with cur.copy("COPY (SELECT a FROM py_copy WHERE a < 3 ORDER BY a) TO STDOUT") as copy:
                for block in copy:
                    raw += block
            check(bytes(raw) == b"0\n1\n2\n", f"raw COPY out: {bytes(raw)!r}")
            # A failing COPY FROM STDIN reports the server's error and the
            # session goes on.
            try:
                with cur.copy("COPY py_copy (a, b) FROM STDIN") as copy:
                    copy.write("not a number\tx\n")
                raise AssertionError("COPY of bad data succeeded")
            except psycopg.errors.InvalidTextRepresentation:
                pass
        conn.rollback()
        row = conn.execute("SELECT count(*) FROM py_copy").fetchone()
        check(row == (1500,), "failed COPY added nothing")
        conn.commit()

    # LISTEN/NOTIFY between two connections (autocommit so the LISTEN and
    # the NOTIFY take effect at once).
    step("LISTEN/NOTIFY")
    with psycopg.connect(url, autocommit=True, connect_timeout=60) as listener, psycopg.connect(
        url, autocommit=True, connect_timeout=60
    ) as notifier:
        listener.execute("LISTEN py_chan")
        notifier.execute("NOTIFY py_chan, 'hello'")
        notifier.execute("SELECT pg_notify(%s, %s)", ("py_chan", "second ✓"))
        got = []
        deadline = time.monotonic() + 30
        while len(got) < 2 and time.monotonic() < deadline:
            for n in listener.notifies(timeout=5, stop_after=2 - len(got)):
                got.append(n)
        check(len(got) == 2, f"2 notifications within 30 s, got {len(got)}")
        check(
            [(n.channel, n.payload) for n in got]
            == [("py_chan", "hello"), ("py_chan", "second ✓")],
            f"notifications: {got!r}",
        )
        # Informational: through a pooling gateway the BackendKeyData pid
        # need not be the notifying backend's.
        step(
            f"notification pids {[n.pid for n in got]}, notifier's "
            f"BackendKeyData pid {notifier.info.backend_pid}, "
            f"pg_backend_pid() {notifier.execute('SELECT pg_backend_pid()').fetchone()[0]}"
        )
        # The listener is still a working session afterwards.
        check(listener.execute("SELECT 3").fetchone() == (3,), "listener usable")

    print("OK psycopg", flush=True)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: psycopg_client.py POSTGRESQL_URL")
    try:
        main(sys.argv[1])
    except SystemExit:
        raise
    except BaseException:
        traceback.print_exc()
        sys.exit("FAIL psycopg")
