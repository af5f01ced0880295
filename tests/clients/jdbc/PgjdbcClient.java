// pgjdbc driving the OgelBase gateway: run by tests/tests/drivers.rs as a
// single-file program (java -cp postgresql.jar PgjdbcClient.java URL).
//
// Server-side prepared statements from the first use (prepareThreshold=1)
// with a statement cache of two, so pgjdbc closes and re-prepares its
// statements all the time, from several threads; LATIN9, EUC_JP and SJIS
// (SET client_encoding with allowEncodingChanges): every character the
// server converts as Java does is read back in that encoding (pgjdbc sends
// its SQL and parameters as UTF-8 whatever the client_encoding, so the rows
// are written by a UTF-8 connection); notification pids. Prints "OK pgjdbc" when all pass; any failure exits nonzero.

import java.nio.charset.Charset;
import java.nio.charset.CharsetEncoder;
import java.nio.charset.StandardCharsets;
import java.sql.*;
import java.util.*;
import java.util.concurrent.*;

public class PgjdbcClient {
    static void check(boolean cond, String what) {
        if (!cond) throw new AssertionError(what);
    }

    static String jdbcUrl(String url, String extra) {
        // postgresql://user:password@host:port/db
        String rest = url.substring(url.indexOf("://") + 3);
        String userInfo = rest.substring(0, rest.lastIndexOf('@'));
        String hostDb = rest.substring(rest.lastIndexOf('@') + 1);
        String user = userInfo.substring(0, userInfo.indexOf(':'));
        String password = userInfo.substring(userInfo.indexOf(':') + 1);
        return "jdbc:postgresql://" + hostDb + "?user=" + user + "&password=" + password
                + "&sslmode=disable&" + extra;
    }

    static void churn(String url) throws Exception {
        ExecutorService pool = Executors.newFixedThreadPool(4);
        List<Future<?>> done = new ArrayList<>();
        for (int t = 0; t < 4; t++) {
            final int n = t;
            done.add(pool.submit(() -> {
                try (Connection c = DriverManager.getConnection(
                        jdbcUrl(url, "prepareThreshold=1&preparedStatementCacheQueries=2"))) {
                    for (int r = 0; r < 60; r++) {
                        // Four texts through a cache of two: closed and prepared again.
                        String sql = "SELECT ?::int + " + (r % 4) + " AS v";
                        try (PreparedStatement ps = c.prepareStatement(sql)) {
                            ps.setInt(1, n);
                            try (ResultSet rs = ps.executeQuery()) {
                                check(rs.next() && rs.getInt(1) == n + r % 4, "churn " + n + "/" + r);
                            }
                        }
                    }
                    return null;
                }
            }));
        }
        for (Future<?> f : done) f.get(120, TimeUnit.SECONDS);
        pool.shutdown();
    }

    static void encoding(String url, String pgName, String javaName) throws Exception {
        Charset cs = Charset.forName(javaName);
        CharsetEncoder enc = cs.newEncoder();
        List<String> chars = new ArrayList<>();
        for (int cp = 0x20; cp < 0x10000; cp++) {
            if (cp >= 0xd800 && cp < 0xe000) continue;
            if (cp >= 0x7f && cp < 0xa0) continue;
            String ch = new String(Character.toChars(cp));
            if (enc.canEncode(ch)) chars.add(ch);
        }
        List<String> good = new ArrayList<>();
        try (Connection utf8 = DriverManager.getConnection(jdbcUrl(url, ""))) {
            try (Statement st = utf8.createStatement()) {
                st.execute("CREATE OR REPLACE FUNCTION ogel_same(b bytea, enc text, u text) RETURNS bool "
                        + "LANGUAGE plpgsql AS $$ BEGIN RETURN convert_from(b, enc) = u AND convert_to(u, enc) = b; "
                        + "EXCEPTION WHEN others THEN RETURN false; END $$");
            }
            try (PreparedStatement ps = utf8.prepareStatement(
                    "SELECT array_agg(i) FROM unnest(?::bytea[], ?::text[]) WITH ORDINALITY AS t(b, u, i) WHERE ogel_same(b, ?, u)")) {
                byte[][] bytes = new byte[chars.size()][];
                for (int i = 0; i < chars.size(); i++) bytes[i] = chars.get(i).getBytes(cs);
                ps.setObject(1, bytes);
                ps.setArray(2, utf8.createArrayOf("text", chars.toArray()));
                ps.setString(3, pgName);
                try (ResultSet rs = ps.executeQuery()) {
                    rs.next();
                    for (Long i : (Long[]) rs.getArray(1).getArray()) good.add(chars.get((int) (i - 1)));
                }
            }
        }
        String text = String.join("", good);
        String table = "enc_jdbc_" + pgName.toLowerCase();
        try (Connection c = DriverManager.getConnection(jdbcUrl(url, "allowEncodingChanges=true&prepareThreshold=1"))) {
            try (Statement st = c.createStatement()) {
                st.execute("SET client_encoding TO '" + pgName + "'");
                st.execute("DROP TABLE IF EXISTS " + table);
                st.execute("CREATE TABLE " + table + " (id int, s text)");
            }
            for (int turn = 0; turn < 3; turn++) {
                try (Connection utf8 = DriverManager.getConnection(jdbcUrl(url, ""));
                     PreparedStatement ps = utf8.prepareStatement("INSERT INTO " + table + " VALUES (?, ?)")) {
                    ps.setInt(1, turn);
                    ps.setString(2, text);
                    ps.executeUpdate();
                }
                try (PreparedStatement ps = c.prepareStatement(
                        "SELECT s, convert_to(s, 'UTF8'), current_setting('client_encoding') FROM " + table + " WHERE id = ?")) {
                    ps.setInt(1, turn);
                    try (ResultSet rs = ps.executeQuery()) {
                        check(rs.next(), pgName + ": row");
                        check(rs.getString(3).equals(pgName), pgName + ": client_encoding " + rs.getString(3));
                        String back = rs.getString(1);
                        int at = 0;
                        while (at < Math.min(back.length(), text.length()) && back.charAt(at) == text.charAt(at)) at++;
                        check(back.equals(text), pgName + ": text came back different at " + at + " of " + text.length() + "/" + back.length() + ": " + (at < back.length() ? Integer.toHexString(back.charAt(at)) : "end") + " for " + (at < text.length() ? Integer.toHexString(text.charAt(at)) : "end"));
                        check(Arrays.equals(rs.getBytes(2), text.getBytes(StandardCharsets.UTF_8)),
                                pgName + ": stored as other characters");
                    }
                }
            }
            try (Statement st = c.createStatement()) {
                st.execute("DROP TABLE " + table);
            }
        }
        System.out.println("pgjdbc: " + pgName + ": " + good.size() + " characters round-trip");
    }

    static void notificationPids(String url) throws Exception {
        try (Connection listener = DriverManager.getConnection(jdbcUrl(url, ""));
             Connection other = DriverManager.getConnection(jdbcUrl(url, ""))) {
            org.postgresql.PGConnection pgListener = listener.unwrap(org.postgresql.PGConnection.class);
            org.postgresql.PGConnection pgOther = other.unwrap(org.postgresql.PGConnection.class);
            try (Statement st = listener.createStatement()) {
                st.execute("LISTEN ogel_jdbc");
                st.execute("NOTIFY ogel_jdbc, 'self'");
            }
            try (Statement st = other.createStatement()) {
                st.execute("NOTIFY ogel_jdbc, 'other'");
            }
            Map<String, Integer> got = new HashMap<>();
            long deadline = System.currentTimeMillis() + 10_000;
            while (got.size() < 2 && System.currentTimeMillis() < deadline) {
                org.postgresql.PGNotification[] ns = pgListener.getNotifications(1000);
                if (ns != null) for (org.postgresql.PGNotification n : ns) got.put(n.getParameter(), n.getPID());
            }
            check(got.size() == 2, "notifications: " + got);
            check(got.get("self") == pgListener.getBackendPID(),
                    "own notification pid " + got.get("self") + " != " + pgListener.getBackendPID());
            check(got.get("other") == pgOther.getBackendPID(),
                    "other client's pid " + got.get("other") + " != " + pgOther.getBackendPID());
        }
    }

    public static void main(String[] args) throws Exception {
        String url = args[0];
        churn(url);
        System.out.println("pgjdbc: statement churn");
        encoding(url, "LATIN9", "ISO-8859-15");
        encoding(url, "EUC_JP", "EUC-JP");
        encoding(url, "SJIS", "Shift_JIS");
        notificationPids(url);
        System.out.println("pgjdbc: notification pids");
        System.out.println("OK pgjdbc");
    }
}
