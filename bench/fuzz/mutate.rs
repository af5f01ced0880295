//! Mutations of a post-auth input's bytes (flips, truncation, insertions,
//! duplications), and `plan`: walking the result as the gateway frames it,
//! completing a message cut short, and saying what the gateway owes it.

use crate::rng::Rng;

/// A message cut short is completed with zero bytes up to this many.
pub const PAD_MAX: usize = 64 * 1024;
/// The largest message length field the gateway accepts after login.
pub const MESSAGE_MAX: u32 = 1 << 30;

/// Byte flips (with, half the time, a truncation), insertions and
/// duplications.
pub fn mutate(rng: &mut Rng, bytes: &mut Vec<u8>) {
    if bytes.is_empty() {
        return;
    }
    if rng.chance(1, 5) {
        for _ in 0..1 + rng.below(3) {
            let i = rng.below(bytes.len());
            bytes[i] ^= rng.byte().max(1);
        }
        if rng.chance(1, 2) {
            let keep = rng.below(bytes.len()) + 1;
            bytes.truncate(keep);
        }
    }
    if rng.chance(1, 30) {
        let at = rng.below(bytes.len() + 1);
        let n = 1 + rng.below(8);
        let noise = rng.bytes(n);
        bytes.splice(at..at, noise);
    }
    if rng.chance(1, 30) {
        let from = rng.below(bytes.len());
        let to = (from + 1 + rng.below(64)).min(bytes.len());
        let piece = bytes[from..to].to_vec();
        let at = rng.below(bytes.len() + 1);
        bytes.splice(at..at, piece);
    }
}

/// What the gateway owes a post-auth input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Plan {
    /// Every message is complete: the probe must be answered (or the
    /// connection closed).
    Probe,
    /// A bad length or a Terminate: the connection must be closed (a FATAL
    /// error first, unless `silent_ok`).
    Close { silent_ok: bool },
    /// A message too long to complete: we half-close; the gateway must
    /// close.
    HalfClose,
}

/// Walks the messages of `bytes` as the gateway frames them, completing a
/// message cut short (at most [`PAD_MAX`] zero bytes), and says what the
/// gateway owes it. With `skip_known`, the triggers of the known hangs
/// (see `--skip-known-hangs`) are changed into harmless neighbours.
pub fn plan(bytes: &mut Vec<u8>, skip_known: bool) -> Plan {
    let mut at = 0;
    while at < bytes.len() {
        let have = bytes.len() - at;
        if have < 5 {
            // Complete the header, with a length of 4 where the missing
            // bytes allow it.
            let template = [0u8, 0, 0, 0, 4];
            bytes.extend_from_slice(&template[have..]);
        }
        let mut tag = bytes[at];
        let mut field =
            u32::from_be_bytes([bytes[at + 1], bytes[at + 2], bytes[at + 3], bytes[at + 4]]);
        if skip_known && field == MESSAGE_MAX {
            // Known hang 1: one more is a plain bad length.
            field += 1;
            bytes[at + 1..at + 5].copy_from_slice(&field.to_be_bytes());
        }
        if skip_known && tag == b'H' && field > 4 {
            // Known hang 2: CopyData outside COPY, which the server ignores.
            tag = b'd';
            bytes[at] = tag;
        }
        if !(4..=MESSAGE_MAX).contains(&field) {
            // A Terminate first in line may end the session before its
            // length is looked at.
            return Plan::Close {
                silent_ok: tag == b'X',
            };
        }
        let end = at + 1 + field as usize;
        if end > bytes.len() {
            if end - bytes.len() > PAD_MAX {
                return Plan::HalfClose;
            }
            bytes.resize(end, 0);
        }
        if tag == b'X' {
            return Plan::Close { silent_ok: true };
        }
        at = end;
    }
    Plan::Probe
}
