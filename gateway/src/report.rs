//! How an error is told to an operator: one line with its causes. A leaf
//! every module may use (the catalog too, which `error` itself imports).

/// An error and its causes on one line (`a: b: c`), for logs and for
/// operators (never for clients: causes may name paths and addresses).
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cause = c.source();
    }
    out
}
