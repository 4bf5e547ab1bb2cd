//! Sealing secrets that Kiln must keep but not store in the clear (users' GitHub tokens):
//! XChaCha20-Poly1305 under a key derived from the server secret and a purpose string, so
//! that a copy of the database alone opens nothing, and a key made for one purpose cannot
//! open what was sealed for another.
//!
//! A sealed value is text, `v1:<base64 of nonce ‖ ciphertext+tag>`. The version prefix lets
//! a later scheme live beside this one; the 24-byte random nonce is fresh for every seal
//! (XChaCha's nonce is long enough for random nonces to never repeat in practice).
use base64::engine::general_purpose::STANDARD_NO_PAD;
use base64::Engine;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::RngCore;
use sha2::{Digest, Sha256};

const PREFIX: &str = "v1:";
const NONCE_LEN: usize = 24;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    /// Not a sealed value at all (no known version prefix): a value stored before sealing
    /// existed, which the caller may accept as it is.
    #[error("the value is not sealed")]
    NotSealed,
    /// Sealed, but not by this key and context, or altered since.
    #[error("the sealed value cannot be opened with this server's key")]
    Undecryptable,
}

/// A 32-byte key for one purpose, derived from the server secret: SHA-256 of the secret,
/// a zero byte and the purpose (the separator keeps any secret/purpose pair from being
/// re-split into another). Keys of different purposes are unrelated.
pub(crate) fn purpose_key(server_secret: &[u8], purpose: &str) -> [u8; 32] {
    let mut hash = Sha256::new();
    hash.update(server_secret);
    hash.update([0u8]);
    hash.update(purpose.as_bytes());
    hash.finalize().into()
}

pub struct SecretBox {
    cipher: XChaCha20Poly1305,
}

impl SecretBox {
    /// The key is [`purpose_key`] of the server secret and `purpose`.
    pub fn new(server_secret: &[u8], purpose: &str) -> Self {
        let key = purpose_key(server_secret, purpose);
        Self {
            cipher: XChaCha20Poly1305::new(&key.into()),
        }
    }

    /// Seals `plaintext`, bound to `context` (e.g. the owner's user id): opening it under
    /// another context fails, so a sealed value copied to another row is useless.
    pub fn seal(&self, plaintext: &str, context: &[u8]) -> String {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let payload = Payload {
            msg: plaintext.as_bytes(),
            aad: context,
        };
        // Encryption with a valid key and nonce only fails past ~256 GiB of plaintext.
        let ciphertext = self
            .cipher
            .encrypt(XNonce::from_slice(&nonce), payload)
            .unwrap_or_default();
        let mut bytes = nonce.to_vec();
        bytes.extend_from_slice(&ciphertext);
        format!("{PREFIX}{}", STANDARD_NO_PAD.encode(bytes))
    }

    pub fn open(&self, sealed: &str, context: &[u8]) -> Result<String, OpenError> {
        let body = sealed.strip_prefix(PREFIX).ok_or(OpenError::NotSealed)?;
        let bytes = STANDARD_NO_PAD
            .decode(body)
            .map_err(|_| OpenError::Undecryptable)?;
        if bytes.len() < NONCE_LEN {
            return Err(OpenError::Undecryptable);
        }
        let (nonce, ciphertext) = bytes.split_at(NONCE_LEN);
        let plaintext = self
            .cipher
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad: context,
                },
            )
            .map_err(|_| OpenError::Undecryptable)?;
        String::from_utf8(plaintext).map_err(|_| OpenError::Undecryptable)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"server secret of at least thirty-two bytes";

    #[test]
    fn round_trip() {
        let b = SecretBox::new(SECRET, "github-token");
        let sealed = b.seal("gho_abc123", b"usr_1");
        assert!(sealed.starts_with("v1:"), "{sealed}");
        assert!(!sealed.contains("gho_abc123"));
        assert_eq!(b.open(&sealed, b"usr_1").as_deref(), Ok("gho_abc123"));
        assert_eq!(b.open(&b.seal("", b""), b"").as_deref(), Ok(""));
    }

    #[test]
    fn every_seal_has_a_fresh_nonce() {
        let b = SecretBox::new(SECRET, "github-token");
        let sealed: std::collections::HashSet<String> =
            (0..50).map(|_| b.seal("same", b"ctx")).collect();
        assert_eq!(sealed.len(), 50, "equal plaintexts must not seal alike");
        let nonces: std::collections::HashSet<Vec<u8>> = sealed
            .iter()
            .map(|s| STANDARD_NO_PAD.decode(&s[3..]).expect("base64")[..NONCE_LEN].to_vec())
            .collect();
        assert_eq!(nonces.len(), 50);
    }

    #[test]
    fn another_key_purpose_context_or_an_edit_cannot_open() {
        let b = SecretBox::new(SECRET, "github-token");
        let sealed = b.seal("gho_abc123", b"usr_1");
        let other_key = SecretBox::new(b"another server secret, also long enough", "github-token");
        let other_purpose = SecretBox::new(SECRET, "something-else");
        assert_eq!(
            other_key.open(&sealed, b"usr_1"),
            Err(OpenError::Undecryptable)
        );
        assert_eq!(
            other_purpose.open(&sealed, b"usr_1"),
            Err(OpenError::Undecryptable)
        );
        assert_eq!(b.open(&sealed, b"usr_2"), Err(OpenError::Undecryptable));

        // Flip each byte of nonce and ciphertext in turn: every edit is detected.
        let bytes = STANDARD_NO_PAD.decode(&sealed[3..]).expect("base64");
        for i in 0..bytes.len() {
            let mut edited = bytes.clone();
            edited[i] ^= 0x01;
            let edited = format!("v1:{}", STANDARD_NO_PAD.encode(edited));
            assert_eq!(
                b.open(&edited, b"usr_1"),
                Err(OpenError::Undecryptable),
                "byte {i}"
            );
        }
        let truncated = &sealed[..sealed.len() - 4];
        assert_eq!(b.open(truncated, b"usr_1"), Err(OpenError::Undecryptable));
        assert_eq!(b.open("v1:!!", b"usr_1"), Err(OpenError::Undecryptable));
        assert_eq!(b.open("v1:", b"usr_1"), Err(OpenError::Undecryptable));
    }

    #[test]
    fn unsealed_values_are_told_apart() {
        let b = SecretBox::new(SECRET, "github-token");
        assert_eq!(b.open("gho_plain", b"usr_1"), Err(OpenError::NotSealed));
    }
}
