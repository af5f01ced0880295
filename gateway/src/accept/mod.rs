//! The Postgres wire front end, and the order of a connection's stages:
//! accept (connection limits) → negotiate (SSL/GSS, cancels: [`negotiate`])
//! → route (`route::resolve`) → authenticate ([`login`]) → admit to the
//! tenant → wake the compute → join its pool → relay (`relay::run`). One
//! task per client; a failing or hostile client ends its own task and
//! nothing else.

pub mod hop;
pub mod limits;
pub mod login;
pub mod negotiate;
pub mod replication;
pub mod tls;

use crate::admin::Console;
use crate::auth::AuthError;
use crate::cancel::CancelRegistry;
use crate::control::access::Access;
use crate::control::databases::Databases;
use crate::error::{ClientError, CANNOT_CONNECT_NOW};
use crate::names::compute_name;
use crate::pool::{DbPool, Pools};
use crate::relay::{self, Login, Parking};
use crate::route::{self, Credential};
use crate::wire::messages::send_fatal;
use crate::wire::ClientStream;
use limits::{Admitted, Limits};
use login::Authenticator;
use ogel_policies::warm::Predictor;
use std::sync::Arc;
use std::time::Duration;
use tls::Tls;
use tokio::net::TcpListener;

/// The front end's own settings.
#[derive(Clone, Debug)]
pub struct FrontendSettings {
    /// Longest from connect to authenticated.
    pub auth_timeout: Duration,
    /// Largest startup packet accepted.
    pub startup_packet_max_bytes: usize,
    /// The reserved user whose password is a token.
    pub token_password_user: String,
}

/// Everything a wire client's stages need, passed in by `app`.
pub struct Frontend {
    settings: FrontendSettings,
    tls: Arc<Tls>,
    limits: Arc<Limits>,
    cancels: Arc<CancelRegistry>,
    auth: Authenticator,
    databases: Arc<Databases>,
    access: Arc<Access>,
    pools: Arc<Pools>,
    predictor: Arc<Predictor>,
    console: Arc<Console>,
    parking: Arc<Parking>,
}

/// An authenticated database client, ready to wake its compute.
struct Session {
    /// The compute: `database` or `database@branch`.
    compute: String,
    /// The role (for a token login, the role it grants, never the token).
    user: String,
    lifecycle: Arc<ogel_policies::Lifecycle>,
    params: Vec<(String, String)>,
    /// Served by the backend's read-only role.
    read_only: bool,
    /// Counts the client against its tenant's limit while it is connected.
    tenant_slot: Admitted,
}

/// What a client asked for, once authenticated.
enum Target {
    /// A database, through its pool.
    Database(Session),
    /// The admin console.
    Console,
    /// A database another gateway of the cluster serves: carried there.
    Forward(hop::Hop),
    /// Another gateway's standby streaming from a compute here.
    Replication(replication::Replication),
}

impl Frontend {
    /// The front end over these services.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        settings: FrontendSettings,
        tls: Arc<Tls>,
        limits: Arc<Limits>,
        cancels: Arc<CancelRegistry>,
        auth: Authenticator,
        databases: Arc<Databases>,
        access: Arc<Access>,
        pools: Arc<Pools>,
        predictor: Arc<Predictor>,
        console: Arc<Console>,
        parking: Arc<Parking>,
    ) -> Self {
        Frontend {
            settings,
            tls,
            limits,
            cancels,
            auth,
            databases,
            access,
            pools,
            predictor,
            console,
            parking,
        }
    }
}

/// Accepts clients until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    frontend: Arc<Frontend>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            _ = &mut shutdown => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => {
                let frontend = frontend.clone();
                tokio::spawn(async move {
                    let admitted = match frontend.limits.admit(peer.ip()) {
                        Ok(admitted) => admitted,
                        Err(e) => {
                            let mut stream = ClientStream::Plain(stream);
                            return send_fatal(&mut stream, &e).await;
                        }
                    };
                    let _ = stream.set_nodelay(true);
                    handle_client(ClientStream::Plain(stream), frontend, admitted).await;
                });
            }
            Err(e) => {
                // Out of file descriptors and the like: back off, keep serving.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Logs the client in and hands it to the relay, which serves it in a task
/// of its own (holding `admitted` and the tenant's slot until it leaves):
/// this task, with the login's state, ends once the client is logged in.
async fn handle_client(stream: ClientStream, frontend: Arc<Frontend>, admitted: Admitted) {
    // Boxed: its state (SCRAM, startup packet) is freed once done.
    let Some((pool, login, tenant_slot)) = Box::pin(log_in(stream, &frontend)).await else {
        return;
    };
    relay::run(
        pool,
        login,
        &frontend.pools.clients,
        Box::new((admitted, tenant_slot)),
        &frontend.parking,
    )
    .await;
}

/// Authenticates and wakes; `None` once the client was answered (an error,
/// a cancel, the admin console).
async fn log_in(
    mut stream: ClientStream,
    frontend: &Frontend,
) -> Option<(Arc<DbPool>, Login, Admitted)> {
    let timeout = frontend.settings.auth_timeout;
    let target = match tokio::time::timeout(timeout, startup(&mut stream, frontend)).await {
        Ok(Ok(Some(target))) => target,
        Ok(Ok(None)) => return None, // a cancel request: done
        Ok(Err(AuthError::Closed)) => return None,
        Ok(Err(AuthError::Client(e))) => {
            send_fatal(&mut stream, &e).await;
            return None;
        }
        Err(_) => {
            let e = ClientError::protocol("authentication timed out")
                .hint(format!("log in within {timeout:?}"));
            send_fatal(&mut stream, &e).await;
            return None;
        }
    };
    let session = match target {
        Target::Console => {
            frontend.console.serve(stream).await;
            return None;
        }
        Target::Forward(to) => {
            hop::run(stream, to, &frontend.cancels).await;
            return None;
        }
        Target::Replication(to) => {
            replication::run(stream, to).await;
            return None;
        }
        Target::Database(session) => session,
    };
    // Wakes the compute now, so a client learns at login if it cannot
    // start, and keeps it awake while the client is connected.
    let after_idle = session.lifecycle.stats(&session.compute).active_clients == 0;
    frontend.predictor.arrived(&session.compute, after_idle);
    let active = match session.lifecycle.connect(&session.compute).await {
        Ok((_, active)) => active,
        Err(e) => {
            tracing::warn!(database = %session.compute, error = %e, cause = ?e.source, "wake failed");
            send_fatal(&mut stream, &ClientError::from(&e)).await;
            return None;
        }
    };
    let pool = frontend
        .pools
        .get(&session.compute, &session.lifecycle, session.read_only);
    let login = Login {
        stream,
        mode: frontend
            .pools
            .config()
            .mode(&session.compute, &session.user),
        user: session.user,
        params: session.params,
        cancel: frontend.cancels.register(),
        active,
    };
    Some((pool, login, session.tenant_slot))
}

/// Negotiates, routes and authenticates. `Ok(None)` for a cancel.
async fn startup(
    stream: &mut ClientStream,
    frontend: &Frontend,
) -> Result<Option<Target>, AuthError> {
    let Some(params) = negotiate::startup_params(
        stream,
        &frontend.tls,
        &frontend.cancels,
        frontend.settings.startup_packet_max_bytes,
    )
    .await?
    else {
        return Ok(None);
    };
    // The TLS server name may name the database and branch too
    // (`shop--dev.<domain>`).
    let sni = stream
        .sni()
        .and_then(|sni| frontend.tls.route(sni))
        .map(|(d, b)| (d.to_string(), b.map(str::to_string)));
    let route = route::resolve(params, sni, &frontend.settings.token_password_user)?;
    let remote = stream.peer_addr().is_some_and(|a| !a.ip().is_loopback());
    if remote && !stream.is_tls() && frontend.tls.config.require_for_remote {
        return Err(
            ClientError::new("28000", "connections from other hosts must use TLS")
                .hint("connect with sslmode=require (or verify-full with the gateway's CA)")
                .into(),
        );
    }
    if route.credential == Credential::Console {
        frontend.auth.console(stream, &route.user).await?;
        return Ok(Some(Target::Console));
    }
    // Another gateway's database: that gateway authenticates and serves.
    if let Some(node) = frontend
        .databases
        .served_elsewhere(&route.database)
        .map_err(|e| ClientError::new(CANNOT_CONNECT_NOW, e.to_string()))?
    {
        let compute = compute_name(
            &route.database,
            route.branch.as_deref().unwrap_or(crate::names::MAIN_BRANCH),
        );
        let mut params = route.params;
        params.retain(|(k, _)| k != "database");
        params.push(("database".to_string(), compute));
        return Ok(Some(Target::Forward(hop::Hop { node, params })));
    }
    if route.credential == Credential::Replication {
        return replication_target(frontend, route, remote, stream.is_tls()).map(Some);
    }
    let identity = frontend.auth.database(stream, &route, remote).await?;
    let record = identity.record;
    if !frontend
        .databases
        .branch_exists(&record.name, &identity.branch)
    {
        return Err(ClientError::new(
            "3D000",
            format!(
                "database \"{}\" has no branch \"{}\"",
                record.name, identity.branch
            ),
        )
        .hint(format!("see `ogel branch list {}`", record.name))
        .into());
    }
    let tenant_slot = frontend.limits.admit_tenant(
        &record.tenant,
        frontend.access.tenant_client_limit(&record.tenant),
    )?;
    let lifecycle = frontend
        .databases
        .lifecycle(&record)
        .map_err(|e| ClientError::new(CANNOT_CONNECT_NOW, e.to_string()))?;
    Ok(Some(Target::Database(Session {
        compute: compute_name(&record.name, &identity.branch),
        user: identity.role,
        lifecycle,
        params: route.params,
        read_only: identity.read_only,
        tenant_slot,
    })))
}

/// Where a standby's replication connection goes: the compute of a
/// database this gateway serves, in a cluster, over TLS or loopback.
fn replication_target(
    frontend: &Frontend,
    route: route::Route,
    remote: bool,
    tls: bool,
) -> Result<Target, AuthError> {
    if !frontend.databases.is_clustered() {
        return Err(ClientError::new(
            "0A000",
            "replication connections are relayed only between the gateways of a cluster",
        )
        .hint("a standby of a single gateway runs beside its primary")
        .into());
    }
    if remote && !tls {
        return Err(ClientError::new(
            "28000",
            "replication connections from other hosts must use TLS",
        )
        .into());
    }
    let record = frontend
        .databases
        .ready(&route.database)
        .map_err(|e| ClientError::from(&e))?;
    let branch = route
        .branch
        .unwrap_or_else(|| crate::names::MAIN_BRANCH.to_string());
    let lifecycle = frontend
        .databases
        .lifecycle(&record)
        .map_err(|e| ClientError::new(CANNOT_CONNECT_NOW, e.to_string()))?;
    Ok(Target::Replication(replication::Replication {
        compute: compute_name(&record.name, &branch),
        lifecycle,
        params: route.params,
    }))
}
