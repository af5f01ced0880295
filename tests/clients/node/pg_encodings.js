#!/usr/bin/env node
// node-postgres in client encodings other than UTF-8, through the gateway:
// run by tests/tests/drivers.rs.
//
// Usage: node pg_encodings.js POSTGRESQL_URL
//
// node-postgres decodes text as UTF-8 only, so the other encodings go as
// bytes: after SET client_encoding, every byte sequence a character of
// LATIN9, EUC_JP or SJIS takes (that the server converts) is sent as a
// binary text parameter, checked as stored (convert_to UTF-8, against a
// UTF-8 client's conversion) and read back raw with COPY TO STDOUT, while a
// second client in UTF-8 takes turns on the same server connections. Then
// the pids of
// notifications: the listener's own carry its BackendKeyData pid, another
// client's carry that client's. Prints "OK node-postgres encodings".
'use strict';

let pg, copyTo;
try {
  pg = require('pg');
  ({ to: copyTo } = require('pg-copy-streams'));
} catch (e) {
  console.error(`pg_encodings: node-postgres is missing (${e.message}): run scripts/test`);
  process.exit(2);
}

function check(cond, what) {
  if (!cond) throw new Error(`check failed: ${what}`);
}

async function connect(url) {
  const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: 60000 });
  await client.connect();
  return client;
}

async function copyOut(client, sql) {
  const chunks = [];
  const stream = client.query(copyTo(sql));
  for await (const chunk of stream) chunks.push(chunk);
  return Buffer.concat(chunks);
}

// Byte sequences of characters in each encoding (lead/trail ranges).
function sequences(encoding) {
  const out = [];
  if (encoding === 'LATIN9') {
    // Not the backslash: COPY would escape it.
    for (let b = 0x20; b <= 0xff; b++) if (b !== 0x5c && b !== 0x7f && (b < 0x80 || b > 0x9f)) out.push([b]);
  } else if (encoding === 'EUC_JP') {
    for (let a = 0xb0; a <= 0xcf; a++) for (let b = 0xa1; b <= 0xfe; b++) out.push([a, b]);
    for (let b = 0xa1; b <= 0xdf; b++) out.push([0x8e, b]); // half-width katakana
  } else if (encoding === 'SJIS') {
    for (let a = 0x88; a <= 0x9f; a++)
      for (let b = 0x40; b <= 0xfc; b++) if (b !== 0x7f && !(a === 0x88 && b < 0x9f)) out.push([a, b]);
    for (let b = 0xa1; b <= 0xdf; b++) out.push([b]);
  }
  return out;
}

async function roundTrip(url, encoding) {
  const client = await connect(url);
  const other = await connect(url);
  try {
    await client.query(`SET client_encoding TO '${encoding}'`);
    // Which sequences the server converts (asked in bytea, UTF-8 session).
    const seqs = sequences(encoding).map((s) => Buffer.from(s));
    const ok = await other.query({
      text: `SELECT array_agg(i) AS ok FROM unnest($1::bytea[]) WITH ORDINALITY AS t(b, i)
             WHERE convert_to(convert_from(b, $2), $2) = b`.replace('convert_from(b, $2)', 'ogel_try_convert(b, $2)'),
      values: [seqs, encoding],
    });
    const good = ok.rows[0].ok.map((i) => seqs[i - 1]);
    check(good.length > seqs.length / 2, `${encoding}: only ${good.length} of ${seqs.length} convert`);
    const text = Buffer.concat(good);
    const table = `enc_node_${encoding.toLowerCase()}`;
    await other.query(`DROP TABLE IF EXISTS ${table}`);
    await other.query(`CREATE TABLE ${table} (turn int, s text)`);
    const want = await other.query({
      text: "SELECT convert_to(convert_from($1::bytea, $2), 'UTF8') AS u",
      values: [text, encoding],
    });
    for (let turn = 0; turn < 3; turn++) {
      await client.query({ text: `INSERT INTO ${table} VALUES ($1, $2::text)`, values: [turn, text] });
      const r = await client.query({
        text: `SELECT convert_to(s, 'UTF8') AS u, current_setting('client_encoding') AS e FROM ${table} WHERE turn = $1`,
        values: [turn],
      });
      check(r.rows[0].e === encoding, `${encoding}: client_encoding ${r.rows[0].e} (turn ${turn})`);
      check(Buffer.compare(r.rows[0].u, want.rows[0].u) === 0, `${encoding}: stored as other characters (turn ${turn})`);
      const copied = await copyOut(client, `COPY (SELECT s FROM ${table} WHERE turn = ${turn}) TO STDOUT`);
      check(
        Buffer.compare(copied, Buffer.concat([text, Buffer.from('\n')])) === 0,
        `${encoding}: COPY TO STDOUT bytes differ (turn ${turn})`
      );
      // The UTF-8 client in between: the connections are shared.
      const mine = await other.query("SELECT current_setting('client_encoding') AS e");
      check(mine.rows[0].e === 'UTF8', `the UTF-8 client sees ${mine.rows[0].e}`);
    }
    await other.query(`DROP TABLE ${table}`);
    console.log(`node-postgres: ${encoding}: ${good.length} characters as bytes`);
  } finally {
    await client.end();
    await other.end();
  }
}

async function notificationPids(url) {
  const listener = await connect(url);
  const other = await connect(url);
  try {
    const got = {};
    const all = new Promise((resolve) => {
      listener.on('notification', (n) => {
        got[n.payload] = n.processId;
        if (Object.keys(got).length === 3) resolve();
      });
    });
    await listener.query('LISTEN ogel_node');
    await listener.query("NOTIFY ogel_node, 'self'");
    await other.query("NOTIFY ogel_node, 'other-1'");
    await other.query("SELECT pg_notify('ogel_node', 'other-2')");
    const timeout = new Promise((_, reject) => setTimeout(() => reject(new Error(`notifications: ${JSON.stringify(got)}`)), 10000));
    await Promise.race([all, timeout]);
    check(got.self === listener.processID, `own notification pid ${got.self} != ${listener.processID}`);
    check(got['other-1'] === other.processID, `other client's pid ${got['other-1']} != ${other.processID}`);
    check(got['other-2'] === other.processID, `other client's second pid ${got['other-2']}`);
    console.log('node-postgres: notification pids');
  } finally {
    await listener.end();
    await other.end();
  }
}

async function main(url) {
  const setup = await connect(url);
  await setup.query(`CREATE OR REPLACE FUNCTION ogel_try_convert(b bytea, enc text) RETURNS text
    LANGUAGE plpgsql AS $$ BEGIN RETURN convert_from(b, enc); EXCEPTION WHEN others THEN RETURN NULL; END $$`);
  await setup.end();
  for (const encoding of ['LATIN9', 'EUC_JP', 'SJIS']) await roundTrip(url, encoding);
  await notificationPids(url);
  console.log('OK node-postgres encodings');
}

main(process.argv[2]).catch((e) => {
  console.error(e.stack || String(e));
  process.exit(1);
});
