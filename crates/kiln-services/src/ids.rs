//! Identifiers and secrets. Ids are URL-safe (lowercase hex with a type prefix) so they
//! can stand in a path without escaping; secrets come from the OS CSPRNG.
use rand::distributions::Alphanumeric;
use rand::Rng;
use sha2::{Digest, Sha256};

/// A new id such as `usr_0190f1d2c3b44e5f8a6b7c8d9e0f1a2b`: time-ordered (UUIDv7), so
/// ids sort roughly by creation, which keeps index inserts cheap.
pub fn new_id(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::now_v7().simple())
}

/// `len` random alphanumeric characters from the thread's CSPRNG.
pub fn random_token(len: usize) -> String {
    rand::thread_rng()
        .sample_iter(&Alphanumeric)
        .take(len)
        .map(char::from)
        .collect()
}

/// Hex SHA-256. API keys carry 190 bits of entropy, so a fast hash is enough: there is
/// nothing to brute-force that a slow hash would protect.
pub fn sha256_hex(data: &str) -> String {
    hex::encode(Sha256::digest(data.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_url_safe_and_unique() {
        let a = new_id("usr");
        let b = new_id("usr");
        assert_ne!(a, b);
        assert!(a.starts_with("usr_") && a.len() == 36, "{a}");
        assert!(a.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'));
    }

    #[test]
    fn tokens_are_random() {
        assert_ne!(random_token(32), random_token(32));
        assert_eq!(random_token(32).len(), 32);
    }
}
