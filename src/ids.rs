//! Random ids, drawn from the host's `wasi:random` (a cryptographically secure source) on
//! every call: unique across the requests of an instance that the host reuses, and across
//! instances and replicas.

/// A random 128-bit id, as 32 hex digits.
pub fn random_id() -> String {
    format!("{:016x}{:016x}", random_u64(), random_u64())
}

#[cfg(target_arch = "wasm32")]
pub fn random_u64() -> u64 {
    wasi::random::random::get_random_u64()
}

/// Natively (`cargo test`) there is no wasi:random: std's RandomState, seeded by the OS and
/// different for each new one, serves the unit tests.
#[cfg(not(target_arch = "wasm32"))]
pub fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish()
}

#[cfg(test)]
mod tests {
    #[test]
    fn ids_are_32_hex_digits_and_differ() {
        let (a, b) = (super::random_id(), super::random_id());
        assert_eq!(a.len(), 32);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }
}
