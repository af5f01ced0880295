//! The seeded generator every input is a pure function of: SplitMix64,
//! with independent streams for pre-auth inputs, post-auth inputs and
//! logins.

/// SplitMix64: small, fast, and the same everywhere for a seed.
#[derive(Clone)]
pub struct Rng(u64);

pub fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Independent streams of one seed.
pub const STREAM_PRE: u64 = 1;
pub const STREAM_POST: u64 = 2;
pub const STREAM_LOGIN: u64 = 3;

impl Rng {
    pub fn derive(seed: u64, stream: u64, index: u64) -> Rng {
        Rng(mix(mix(mix(seed) ^ stream) ^ index))
    }
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in 0..n (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        ((self.next() as u128 * n as u128) >> 64) as usize
    }
    /// Small numbers more often: 0..n, skewed towards 0.
    pub fn skewed(&mut self, n: usize) -> usize {
        let cap = self.below(n) + 1;
        self.below(cap)
    }
    pub fn chance(&mut self, num: usize, den: usize) -> bool {
        self.below(den) < num
    }
    pub fn byte(&mut self) -> u8 {
        self.next() as u8
    }
    pub fn u32(&mut self) -> u32 {
        self.next() as u32
    }
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.byte()).collect()
    }
    /// Printable ASCII, some of it SQL-significant.
    pub fn text(&mut self, n: usize) -> Vec<u8> {
        const CHARS: &[u8] = b"abcxyzABC019 _-.,;:'\"\\$%()=*/\t";
        (0..n).map(|_| CHARS[self.below(CHARS.len())]).collect()
    }
    pub fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())]
    }
    pub fn weighted(&mut self, weights: &[u32]) -> usize {
        let total: u32 = weights.iter().sum();
        let mut x = self.below(total as usize) as u32;
        for (i, &w) in weights.iter().enumerate() {
            if x < w {
                return i;
            }
            x -= w;
        }
        weights.len() - 1
    }
}
