//! The URLs the gateway hands out: `postgresql://role[:password]@host:port/db`
//! and token URLs, all naming the Postgres listener's real address.

use crate::catalog::DatabaseRecord;
use std::net::{IpAddr, SocketAddr};

/// Builds URLs for the Postgres listener at one address.
#[derive(Clone, Copy, Debug)]
pub struct Urls {
    listen: SocketAddr,
}

impl Urls {
    /// URLs for a listener bound to `listen` (an unspecified address is
    /// shown as 127.0.0.1).
    pub fn new(listen: SocketAddr) -> Self {
        Urls { listen }
    }

    /// `host:port`, IPv6 in brackets.
    pub fn host_port(&self) -> String {
        let host = match self.listen.ip() {
            ip if ip.is_unspecified() => "127.0.0.1".to_string(),
            IpAddr::V6(ip) => format!("[{ip}]"),
            ip => ip.to_string(),
        };
        format!("{host}:{}", self.listen.port())
    }

    /// A database's URL; with the owner's password when it is known.
    pub fn database(&self, record: &DatabaseRecord, password: Option<&str>) -> String {
        self.database_on(record, password, &[])
    }

    /// A database's URL naming this listener and then `others` (the other
    /// gateways of a cluster, `host:port`): libpq, pgjdbc, node-postgres
    /// and tokio-postgres try them in turn, so a dead gateway is skipped.
    pub fn database_on(
        &self,
        record: &DatabaseRecord,
        password: Option<&str>,
        others: &[String],
    ) -> String {
        let credentials = match password {
            Some(p) => format!("{}:{p}", record.owner),
            None => record.owner.clone(),
        };
        let mut hosts = self.host_port();
        for other in others {
            hosts.push(',');
            hosts.push_str(other);
        }
        format!("postgresql://{credentials}@{hosts}/{}", record.name)
    }

    /// A token URL: the token in the user name, TLS required.
    pub fn token(&self, token: &str, database: &str) -> String {
        format!(
            "postgresql://{token}@{}/{database}?sslmode=require",
            self.host_port()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_printable() {
        let urls = |a: &str| Urls::new(a.parse().unwrap()).host_port();
        assert_eq!(urls("0.0.0.0:6432"), "127.0.0.1:6432");
        assert_eq!(urls("[::1]:6432"), "[::1]:6432");
        assert_eq!(urls("10.0.0.5:5"), "10.0.0.5:5");
    }
}
