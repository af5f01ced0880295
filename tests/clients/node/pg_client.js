#!/usr/bin/env node
// node-postgres driving the OgelBase gateway: run by tests/tests/drivers.rs.
//
// Usage: node pg_client.js POSTGRESQL_URL
//
// Connects through the gateway and exercises the simple query protocol, the
// extended protocol (parameters, named prepared statements), a rolled-back
// transaction, COPY FROM STDIN / COPY TO STDOUT (pg-copy-streams) and
// LISTEN/NOTIFY between two connections. Prints "OK node-postgres" when all
// pass; any failure exits nonzero with a message on stderr.
'use strict';

let pg, copyFrom, copyTo;
try {
  pg = require('pg');
  ({ from: copyFrom, to: copyTo } = require('pg-copy-streams'));
} catch (e) {
  console.error(
    `pg_client: node-postgres is missing (${e.message}): run scripts/test, ` +
      'which installs it (npm ci --prefix tests/clients/node)'
  );
  process.exit(2);
}
const { pipeline } = require('node:stream/promises');
const { Readable, Writable } = require('node:stream');

function check(cond, what) {
  if (!cond) throw new Error(`check failed: ${what}`);
}

function step(name) {
  console.log(`node-postgres: ${name}`);
}

async function connect(url) {
  const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: 60000 });
  await client.connect();
  return client;
}

async function main(url) {
  step(`pg ${require('pg/package.json').version}, connecting`);
  const client = await connect(url);
  try {
    // Simple query protocol: no parameters, several statements at once.
    step('simple query');
    let res = await client.query('SELECT 1 AS one, current_user::text AS who');
    check(res.rows[0].one === 1 && res.rows[0].who === 'app_owner', 'SELECT 1, current_user');
    res = await client.query(
      'DROP TABLE IF EXISTS js_items; CREATE TABLE js_items (id int PRIMARY KEY, name text, score float8)'
    );
    check(Array.isArray(res) && res.length === 2, 'two results for two statements');

    // Extended protocol: unnamed statements with parameters, then a named
    // prepared statement (parsed once, executed many times).
    step('parameterized queries');
    for (let i = 0; i < 5; i++) {
      await client.query('INSERT INTO js_items (id, name, score) VALUES ($1, $2, $3)', [
        i,
        `item ${i}`,
        i * 1.5,
      ]);
    }
    for (let i = 5; i < 20; i++) {
      await client.query({
        name: 'js-insert',
        text: 'INSERT INTO js_items (id, name, score) VALUES ($1, $2, $3)',
        values: [i, `item ${i}`, i * 1.5],
      });
    }
    const byId = (id) =>
      client.query({ name: 'js-by-id', text: 'SELECT name, score FROM js_items WHERE id = $1', values: [id] });
    res = await byId(7);
    check(res.rows[0].name === 'item 7' && res.rows[0].score === 10.5, 'prepared SELECT by id');
    res = await byId(3);
    check(res.rows[0].name === 'item 3' && res.rows[0].score === 4.5, 'prepared SELECT reused');
    res = await client.query({
      text: 'SELECT $1::int + 1 AS n, $2::text AS t, $3::text IS NULL AS isnull',
      values: [41, 'héllo ✓', null],
      rowMode: 'array',
    });
    check(
      JSON.stringify(res.rows[0]) === JSON.stringify([42, 'héllo ✓', true]),
      `typed parameters: ${JSON.stringify(res.rows[0])}`
    );
    res = await client.query('SELECT count(*)::int AS n FROM js_items');
    check(res.rows[0].n === 20, '20 rows after inserts');

    // A statement error is reported and the session goes on.
    step('error then recovery');
    let err = null;
    try {
      await client.query('SELECT * FROM js_missing_table');
    } catch (e) {
      err = e;
    }
    check(err && err.code === '42P01', `missing table error: ${err && err.code}`);
    res = await client.query('SELECT 2 AS n');
    check(res.rows[0].n === 2, 'session usable after an error');

    // A transaction rolled back leaves no trace.
    step('transaction with rollback');
    await client.query('BEGIN');
    await client.query('INSERT INTO js_items (id, name) VALUES ($1, $2)', [100, 'doomed']);
    res = await client.query('SELECT name FROM js_items WHERE id = 100');
    check(res.rows.length === 1, 'row visible inside its transaction');
    await client.query('ROLLBACK');
    res = await client.query('SELECT count(*)::int AS n FROM js_items WHERE id = 100');
    check(res.rows[0].n === 0, 'rolled-back row is absent');
    // An error inside a transaction aborts it until ROLLBACK.
    await client.query('BEGIN');
    await client.query("INSERT INTO js_items (id, name) VALUES (101, 'doomed too')");
    err = null;
    try {
      await client.query('INSERT INTO js_items (id, name) VALUES (1, $1)', ['duplicate']);
    } catch (e) {
      err = e;
    }
    check(err && err.code === '23505', `duplicate key error: ${err && err.code}`);
    err = null;
    try {
      await client.query('SELECT 1');
    } catch (e) {
      err = e;
    }
    check(err && err.code === '25P02', `aborted transaction error: ${err && err.code}`);
    await client.query('ROLLBACK');
    res = await client.query('SELECT count(*)::int AS n FROM js_items WHERE id = 101');
    check(res.rows[0].n === 0, 'row of the aborted transaction is absent');

    // COPY FROM STDIN and COPY TO STDOUT.
    step('COPY FROM STDIN');
    await client.query('DROP TABLE IF EXISTS js_copy; CREATE TABLE js_copy (a int, b text)');
    const lines = [];
    for (let i = 0; i < 1000; i++) lines.push(`${i}\trow ${i}\\twith tab\n`);
    await pipeline(Readable.from(lines), client.query(copyFrom('COPY js_copy (a, b) FROM STDIN')));
    res = await client.query('SELECT count(*)::int AS n, sum(a)::int AS s FROM js_copy');
    check(res.rows[0].n === 1000 && res.rows[0].s === 499500, `1000 rows copied in: ${JSON.stringify(res.rows[0])}`);
    res = await client.query('SELECT b FROM js_copy WHERE a = 5');
    check(res.rows[0].b === 'row 5\twith tab', 'escaped tab survives COPY');

    step('COPY TO STDOUT');
    const chunks = [];
    await pipeline(
      client.query(copyTo('COPY (SELECT a, b FROM js_copy ORDER BY a) TO STDOUT')),
      new Writable({
        write(chunk, _enc, cb) {
          chunks.push(chunk);
          cb();
        },
      })
    );
    const out = Buffer.concat(chunks).toString('utf8');
    check(out === lines.join(''), `COPY out matches COPY in (${out.length} vs ${lines.join('').length} chars)`);
    // A failing COPY FROM STDIN reports the server's error; the session goes on.
    err = null;
    try {
      await pipeline(
        Readable.from(['not a number\tx\n']),
        client.query(copyFrom('COPY js_copy (a, b) FROM STDIN'))
      );
    } catch (e) {
      err = e;
    }
    check(err && err.code === '22P02', `bad COPY data error: ${err && err.code}`);
    res = await client.query('SELECT count(*)::int AS n FROM js_copy');
    check(res.rows[0].n === 1000, 'failed COPY added nothing');
  } finally {
    await client.end();
  }

  // LISTEN/NOTIFY between two connections.
  step('LISTEN/NOTIFY');
  const listener = await connect(url);
  const notifier = await connect(url);
  try {
    const got = [];
    let wake = null;
    listener.on('notification', (n) => {
      got.push(n);
      if (wake) wake();
    });
    await listener.query('LISTEN js_chan');
    await notifier.query("NOTIFY js_chan, 'hello'");
    await notifier.query('SELECT pg_notify($1, $2)', ['js_chan', 'second ✓']);
    const deadline = Date.now() + 30000;
    while (got.length < 2 && Date.now() < deadline) {
      await new Promise((resolve) => {
        wake = resolve;
        setTimeout(resolve, 1000);
      });
    }
    check(got.length === 2, `2 notifications within 30 s, got ${got.length}`);
    const seen = JSON.stringify(got.map((n) => [n.channel, n.payload]));
    check(seen === JSON.stringify([['js_chan', 'hello'], ['js_chan', 'second ✓']]), `notifications: ${seen}`);
    const res = await listener.query('SELECT 3 AS n');
    check(res.rows[0].n === 3, 'listener usable');
  } finally {
    await listener.end();
    await notifier.end();
  }

  console.log('OK node-postgres');
}

if (process.argv.length !== 3) {
  console.error('usage: node pg_client.js POSTGRESQL_URL');
  process.exit(2);
}
main(process.argv[2]).then(
  () => process.exit(0),
  (e) => {
    console.error(e && e.stack ? e.stack : e);
    if (e && e.code) console.error(`code ${e.code}`);
    console.error('FAIL node-postgres');
    process.exit(1);
  }
);
