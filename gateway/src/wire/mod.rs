//! The one Postgres wire codec, both sides: the untyped first packets a
//! client sends (`startup`), the typed messages the gateway reads, writes
//! and inspects while relaying (`messages`), and the two kinds of socket —
//! a client's (`ClientStream`: plain or TLS) and a compute's
//! (`ServerStream`). `frontend` is the client side — the messages a client
//! sends, for test clients and the fuzzer. Nothing here knows about
//! databases, pools or auth.

pub mod client_stream;
pub mod frontend;
pub mod messages;
pub mod server_stream;
pub mod startup;

pub use client_stream::ClientStream;
pub use server_stream::ServerStream;
