//! [`SplitMix64`]: the one deterministic pseudo-random generator of the project — the data
//! generator, synthetic benchmark projects and DAGs, and randomized tests draw from it. Its
//! sequence is fixed by the algorithm (Steele, Lea & Flood, "Fast splittable pseudorandom number
//! generators", 2014), never by a crate upgrade: the same seed gives the same rows, projects
//! and requests forever. Not for anything secret.

/// SplitMix64 with the helpers its users need.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in [0, n) (0 when `n` is 0; the slight modulo bias is irrelevant here).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// [`SplitMix64::below`] for indexes.
    pub fn index(&mut self, n: usize) -> usize {
        self.below(n as u64) as usize
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }

    /// An index into `weights`, drawn proportionally to them (the last index when all are 0).
    pub fn weighted(&mut self, weights: &[u32]) -> usize {
        let total: u32 = weights.iter().sum();
        let mut x = self.below(u64::from(total)) as u32;
        for (i, w) in weights.iter().enumerate() {
            if x < *w {
                return i;
            }
            x -= w;
        }
        weights.len().saturating_sub(1)
    }

    /// One of `items`, uniformly. Panics on an empty slice (a caller's bug).
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.index(items.len())]
    }
}

#[cfg(test)]
mod tests {
    use super::SplitMix64;

    #[test]
    fn the_sequence_is_pinned_and_weights_are_followed() {
        let mut a = SplitMix64::new(42);
        let first: Vec<u64> = (0..3).map(|_| a.next_u64()).collect();
        // Pinned: it must never change with a build or an upgrade.
        assert_eq!(
            first,
            [
                13679457532755275413,
                2949826092126892291,
                5139283748462763858
            ]
        );
        let mut counts = [0u32; 3];
        for _ in 0..30_000 {
            counts[a.weighted(&[1, 2, 7])] += 1;
        }
        assert!(
            counts[2] > 5 * counts[0] && counts[1] > counts[0],
            "{counts:?}"
        );
        assert_eq!(a.weighted(&[0, 0]), 1);
    }
}
