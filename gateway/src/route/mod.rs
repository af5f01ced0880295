//! Where a client is going: from its startup parameters, the TLS server
//! name and the `options` it sent, to a [`Route`] — database, branch, the
//! kind of credential it will present. A pure function of what the client
//! sent, so every front end (wire today; HTTP and WebSocket next) resolves
//! the same way; it runs after `accept` and before `auth`.
//!
//! A branch can be named three ways — `shop@dev` as the database, Neon's
//! `options=branch=dev`, or the TLS server name `shop--dev.<domain>` — and
//! whatever is given must agree (`08P01` otherwise).

use crate::auth::tokens::looks_like_jwt;
use crate::error::ClientError;
use crate::names::{is_admin_database, ComputeName};

/// How the client will prove who it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Credential {
    /// A token in the user name: no password exchange.
    TokenInUser,
    /// The reserved user whose password is a token (cleartext, TLS or loopback).
    TokenInPassword,
    /// A role of the gateway's role store, with SCRAM.
    Password,
    /// The admin console's user, with the API token over SCRAM.
    Console,
    /// A physical replication connection (`replication=true`): another
    /// gateway's standby streaming from this gateway's compute. Relayed to
    /// the compute, which authenticates it (`accept/replication.rs`).
    Replication,
}

/// Where a client asked to go and how it will log in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    /// The user name as sent (a token, for token logins).
    pub user: String,
    /// The database, without any `@branch`; empty when a token login did
    /// not name one (the token's own is meant).
    pub database: String,
    /// The database name as the client typed it, for error messages.
    pub requested: String,
    /// The branch, when one was named.
    pub branch: Option<String>,
    /// The credential the client will present.
    pub credential: Credential,
    /// The startup parameters to carry to the compute: `options` without
    /// `branch=`, everything else as sent.
    pub params: Vec<(String, String)>,
}

/// Resolves a client's startup parameters (and the database/branch its TLS
/// server name selects, if any) to a [`Route`]. `password_user` is the
/// reserved user whose password is a token.
pub fn resolve(
    mut params: Vec<(String, String)>,
    sni: Option<(String, Option<String>)>,
    password_user: &str,
) -> Result<Route, ClientError> {
    let param = |name: &str| {
        params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    let user = param("user").filter(|u| !u.is_empty()).ok_or_else(|| {
        ClientError::new(
            "28000",
            "no PostgreSQL user name specified in startup packet",
        )
    })?;
    let replication = match param("replication").as_deref() {
        None | Some("false" | "off" | "no" | "0") => false,
        Some("true" | "on" | "yes" | "1") => true,
        Some(_) => return Err(ClientError::new(
            "0A000",
            "logical replication connections are not supported by the gateway",
        )
        .hint(
            "physical replication (replication=true) is relayed for standbys on another gateway",
        )),
    };
    // Replication tools send `database=replication` whatever dbname says:
    // a standby names its database in `options` (`-c ogel.route=shop`).
    let replication_database = replication
        .then(|| replication_route(param("options").as_deref()))
        .flatten();
    let token_in_user = looks_like_jwt(&user);
    // Without a database name libpq sends the user name: for a token, the
    // token's own database is meant.
    let requested = replication_database
        .or_else(|| param("database"))
        .filter(|d| !(d.is_empty() || token_in_user && *d == user))
        .unwrap_or_else(|| {
            if token_in_user {
                String::new()
            } else {
                user.clone()
            }
        });
    let (options, option_branch) = branch_option(param("options").as_deref());
    // `shop@dev` names a branch; a plain name names none (which the
    // options or the TLS server name may then name).
    let (database, name_branch) = if requested.contains('@') {
        let ComputeName { database, branch } = ComputeName::parse(&requested);
        (database, Some(branch))
    } else {
        (requested.clone(), None)
    };
    let branch = match (name_branch, option_branch) {
        (Some(a), Some(b)) if a != b => {
            return Err(ClientError::protocol(format!(
                "the database name asks for branch \"{a}\" but options ask for \"{b}\""
            )))
        }
        (a, b) => a.or(b),
    };
    let (database, branch) = match (sni, branch) {
        (Some((sni_db, _)), _) if !database.is_empty() && sni_db != database => {
            return Err(ClientError::protocol(format!(
                "the TLS server name selects database \"{sni_db}\" but the startup packet asks for \"{database}\""
            )))
        }
        (Some((_, Some(b))), Some(a)) if b != a => {
            return Err(ClientError::protocol(format!(
                "the TLS server name selects branch \"{b}\" but the connection asks for \"{a}\""
            )))
        }
        (Some((sni_db, sni_branch)), a) => (sni_db, a.or(sni_branch)),
        (None, a) => (database, a),
    };
    let credential = if replication {
        Credential::Replication
    } else if is_admin_database(&database) {
        Credential::Console
    } else if token_in_user {
        Credential::TokenInUser
    } else if user == password_user {
        Credential::TokenInPassword
    } else {
        Credential::Password
    };
    params.retain(|(k, _)| k != "options");
    if let Some(options) = options {
        params.push(("options".to_string(), options));
    }
    Ok(Route {
        user,
        database,
        requested,
        branch,
        credential,
        params,
    })
}

/// Takes `branch=NAME` out of the `options` startup parameter: (the other
/// options, if any; the branch, if given).
fn branch_option(options: Option<&str>) -> (Option<String>, Option<String>) {
    let Some(options) = options else {
        return (None, None);
    };
    let mut branch = None;
    let rest: Vec<&str> = options
        .split_whitespace()
        .filter(|w| match w.strip_prefix("branch=") {
            Some(b) => {
                branch = Some(b.to_string());
                false
            }
            None => true,
        })
        .collect();
    let rest = (!rest.is_empty()).then(|| rest.join(" "));
    (rest, branch)
}

/// The database a replication connection names in its `options`
/// (`-c ogel.route=NAME`, `-cogel.route=NAME` or `--ogel.route=NAME`).
fn replication_route(options: Option<&str>) -> Option<String> {
    options?
        .split_whitespace()
        .filter_map(|w| {
            w.trim_start_matches("-c")
                .trim_start_matches("--")
                .strip_prefix("ogel.route=")
        })
        .find(|name| !name.is_empty())
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn route(
        pairs: &[(&str, &str)],
        sni: Option<(&str, Option<&str>)>,
    ) -> Result<Route, ClientError> {
        resolve(
            params(pairs),
            sni.map(|(d, b)| (d.to_string(), b.map(str::to_string))),
            "token",
        )
    }

    type Sni<'a> = Option<(&'a str, Option<&'a str>)>;
    type Pairs<'a> = &'a [(&'a str, &'a str)];

    const JWT: &str = "eyJhbGciOiJFZERTQSJ9.eyJkYiI6InNob3AifQ.c2ln";

    #[test]
    fn database_branch_and_credential() {
        // (startup parameters, SNI, database, branch, credential)
        let cases: &[(Pairs, Sni, &str, Option<&str>, Credential)] = &[
            (
                &[("user", "u"), ("database", "shop")],
                None,
                "shop",
                None,
                Credential::Password,
            ),
            (
                &[("user", "u"), ("database", "shop@dev")],
                None,
                "shop",
                Some("dev"),
                Credential::Password,
            ),
            (
                &[
                    ("user", "u"),
                    ("database", "shop"),
                    ("options", "branch=dev"),
                ],
                None,
                "shop",
                Some("dev"),
                Credential::Password,
            ),
            (
                &[
                    ("user", "u"),
                    ("database", "shop@dev"),
                    ("options", "branch=dev"),
                ],
                None,
                "shop",
                Some("dev"),
                Credential::Password,
            ),
            (
                &[("user", "shop")],
                None,
                "shop",
                None,
                Credential::Password,
            ),
            (
                &[("user", "shop")],
                Some(("shop", Some("dev"))),
                "shop",
                Some("dev"),
                Credential::Password,
            ),
            (
                &[("user", "u"), ("database", "shop")],
                Some(("shop", None)),
                "shop",
                None,
                Credential::Password,
            ),
            (&[("user", JWT)], None, "", None, Credential::TokenInUser),
            (
                &[("user", JWT), ("database", JWT)],
                None,
                "",
                None,
                Credential::TokenInUser,
            ),
            (
                &[("user", JWT), ("database", "shop")],
                None,
                "shop",
                None,
                Credential::TokenInUser,
            ),
            (
                &[("user", "token"), ("database", "shop")],
                None,
                "shop",
                None,
                Credential::TokenInPassword,
            ),
            (
                &[("user", "ogel"), ("database", "pgbouncer")],
                None,
                "pgbouncer",
                None,
                Credential::Console,
            ),
            (
                &[("user", "ogel"), ("database", "ogel")],
                None,
                "ogel",
                None,
                Credential::Console,
            ),
        ];
        for (pairs, sni, database, branch, credential) in cases {
            let r = route(pairs, *sni).unwrap_or_else(|e| panic!("{pairs:?}: {e:?}"));
            assert_eq!(r.database, *database, "{pairs:?}");
            assert_eq!(r.branch.as_deref(), *branch, "{pairs:?}");
            assert_eq!(r.credential, *credential, "{pairs:?}");
        }
    }

    #[test]
    fn disagreements_and_refusals_have_their_sqlstate() {
        let cases: &[(Pairs, Sni, &str)] = &[
            (
                &[
                    ("user", "u"),
                    ("database", "shop@a"),
                    ("options", "branch=b"),
                ],
                None,
                "08P01",
            ),
            (
                &[("user", "u"), ("database", "other")],
                Some(("shop", None)),
                "08P01",
            ),
            (
                &[("user", "u"), ("database", "shop@a")],
                Some(("shop", Some("b"))),
                "08P01",
            ),
            (&[("database", "shop")], None, "28000"),
            (&[("user", ""), ("database", "shop")], None, "28000"),
            (&[("user", "u"), ("replication", "database")], None, "0A000"),
        ];
        for (pairs, sni, code) in cases {
            let e = route(pairs, *sni).expect_err("refused");
            assert_eq!(e.code, *code, "{pairs:?}: {}", e.message);
        }
        assert!(route(&[("user", "u"), ("replication", "off")], None).is_ok());
        let physical = route(
            &[("user", "u"), ("replication", "true"), ("database", "shop")],
            None,
        )
        .expect("physical replication is routed");
        assert_eq!(physical.credential, Credential::Replication);
        assert_eq!(physical.database, "shop");
        // As pg_basebackup and the walreceiver send it.
        for options in [
            "-c ogel.route=shop@main",
            "-cogel.route=shop",
            "--ogel.route=shop",
        ] {
            let r = route(
                &[
                    ("user", "u"),
                    ("replication", "true"),
                    ("database", "replication"),
                    ("options", options),
                ],
                None,
            )
            .expect("routed by options");
            assert_eq!(r.database, "shop", "{options}");
        }
    }

    #[test]
    fn branch_is_taken_out_of_options() {
        let r = route(
            &[
                ("user", "u"),
                ("database", "shop"),
                ("options", "-c search_path=x branch=dev"),
            ],
            None,
        )
        .unwrap();
        assert_eq!(r.branch.as_deref(), Some("dev"));
        let options: Vec<_> = r.params.iter().filter(|(k, _)| k == "options").collect();
        assert_eq!(
            options,
            [&("options".to_string(), "-c search_path=x".to_string())]
        );
        let r = route(&[("user", "u"), ("options", "branch=dev")], None).unwrap();
        assert!(r.params.iter().all(|(k, _)| k != "options"));
    }
}
