//! Reported session parameters (ParameterStatus) of a client or a server
//! connection: a short ordered list of shared values, itself shared until
//! changed. Clients start from their pool's list, so ten thousand idle
//! clients that changed nothing share one list. Values are bytes as the server sent them (in
//! the client encoding of the time), never required to be UTF-8.

use std::sync::Arc;

/// Parameter name → value, in the order the server first reported them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Params(Arc<Vec<Param>>);

/// One parameter: (name, value).
type Param = (Arc<str>, Arc<[u8]>);

impl Params {
    /// The value of `name`.
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.0.iter().find(|(k, _)| &**k == name).map(|(_, v)| &**v)
    }

    /// Sets `name`; allocates only for a new value.
    pub fn set(&mut self, name: &str, value: &[u8]) {
        match self.0.iter().position(|(k, _)| &**k == name) {
            Some(i) if &*self.0[i].1 == value => {}
            Some(i) => Arc::make_mut(&mut self.0)[i].1 = value.into(),
            None => Arc::make_mut(&mut self.0).push((name.into(), value.into())),
        }
    }

    /// Whether both are the same shared list (so equal without looking).
    pub fn same_list(&self, other: &Params) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }

    /// Every parameter, in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.0.iter().map(|(k, v)| (&**k, &**v))
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unchanged_values_stay_shared() {
        let mut pool = Params::default();
        pool.set("TimeZone", b"UTC");
        pool.set("DateStyle", b"ISO, MDY");
        let mut client = pool.clone();
        client.set("TimeZone", b"UTC");
        assert!(pool.same_list(&client), "one list until changed");
        client.set("application_name", b"x");
        assert!(
            Arc::ptr_eq(&pool.0[0].1, &client.0[0].1),
            "values still shared"
        );
        let mut client = pool.clone();
        client.set("TimeZone", b"Asia/Tokyo");
        assert_eq!(client.get("TimeZone"), Some(&b"Asia/Tokyo"[..]));
        assert_eq!(pool.get("TimeZone"), Some(&b"UTC"[..]));
        client.set("application_name", b"\xe9t\xe9"); // LATIN1
        assert_eq!(
            client.iter().map(|(k, _)| k).collect::<Vec<_>>(),
            ["TimeZone", "DateStyle", "application_name"]
        );
    }
}
