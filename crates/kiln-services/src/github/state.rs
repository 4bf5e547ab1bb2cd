//! The OAuth `state` of a GitHub sign-in, self-verifying so the server keeps nothing per
//! sign-in: a random nonce and an expiry time, and an HMAC-SHA256 over them and the
//! redirect URI, under a key derived from the server secret. A state this server did not
//! issue, one that was edited, one past its expiry, or one issued for another redirect URI
//! is refused before GitHub is called.
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;

const PURPOSE: &str = "kiln github oauth state v1";
const NONCE_LEN: usize = 16;
const PAYLOAD_LEN: usize = NONCE_LEN + 8;
/// Anything longer is not a state this server issued; refused before any decoding work.
pub(crate) const MAX_STATE_LEN: usize = 256;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum StateError {
    Malformed,
    Forged,
    Expired,
}

pub(crate) struct StateSigner {
    key: [u8; 32],
}

impl StateSigner {
    pub(crate) fn new(server_secret: &[u8]) -> Self {
        Self {
            key: crate::secret_box::purpose_key(server_secret, PURPOSE),
        }
    }

    pub(crate) fn issue(&self, redirect_uri: &str, expires_at: DateTime<Utc>) -> String {
        let mut payload = [0u8; PAYLOAD_LEN];
        rand::rngs::OsRng.fill_bytes(&mut payload[..NONCE_LEN]);
        payload[NONCE_LEN..].copy_from_slice(&expires_at.timestamp().to_be_bytes());
        let tag = self.mac(&payload, redirect_uri).finalize().into_bytes();
        format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(payload),
            URL_SAFE_NO_PAD.encode(tag)
        )
    }

    pub(crate) fn verify(
        &self,
        state: &str,
        redirect_uri: &str,
        now: DateTime<Utc>,
    ) -> Result<(), StateError> {
        if state.len() > MAX_STATE_LEN {
            return Err(StateError::Malformed);
        }
        let (payload, tag) = state.split_once('.').ok_or(StateError::Malformed)?;
        let payload = URL_SAFE_NO_PAD
            .decode(payload)
            .map_err(|_| StateError::Malformed)?;
        let tag = URL_SAFE_NO_PAD
            .decode(tag)
            .map_err(|_| StateError::Malformed)?;
        if payload.len() != PAYLOAD_LEN {
            return Err(StateError::Malformed);
        }
        // Constant-time comparison, so the tag cannot be guessed byte by byte.
        self.mac(&payload, redirect_uri)
            .verify_slice(&tag)
            .map_err(|_| StateError::Forged)?;
        let mut expiry = [0u8; 8];
        expiry.copy_from_slice(&payload[NONCE_LEN..]);
        if now.timestamp() >= i64::from_be_bytes(expiry) {
            return Err(StateError::Expired);
        }
        Ok(())
    }

    fn mac(&self, payload: &[u8], redirect_uri: &str) -> Hmac<Sha256> {
        // new_from_slice accepts keys of any length for HMAC; 32 bytes always fit.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.key)
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        mac.update(payload);
        // Length-prefixed, so that payload and URI cannot be re-split.
        mac.update(&(redirect_uri.len() as u64).to_be_bytes());
        mac.update(redirect_uri.as_bytes());
        mac
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Duration;

    const SECRET: &[u8] = b"a server secret that is long enough";

    #[test]
    fn issued_states_verify_until_they_expire() {
        let s = StateSigner::new(SECRET);
        let now = Utc::now();
        let state = s.issue("https://app/cb", now + Duration::seconds(600));
        assert_eq!(s.verify(&state, "https://app/cb", now), Ok(()));
        assert_ne!(
            state,
            s.issue("https://app/cb", now + Duration::seconds(600))
        );
        assert_eq!(
            s.verify(&state, "https://app/cb", now + Duration::seconds(600)),
            Err(StateError::Expired)
        );
    }

    #[test]
    fn forged_edited_foreign_or_misdirected_states_are_refused() {
        let s = StateSigner::new(SECRET);
        let now = Utc::now();
        let state = s.issue("https://app/cb", now + Duration::seconds(600));
        assert_eq!(
            s.verify(&state, "https://evil/cb", now),
            Err(StateError::Forged)
        );
        let other = StateSigner::new(b"another server's secret, also long");
        assert_eq!(
            other.verify(&state, "https://app/cb", now),
            Err(StateError::Forged)
        );
        // Pushing the expiry forward breaks the tag.
        let (payload, tag) = state.split_once('.').expect("dot");
        let mut bytes = URL_SAFE_NO_PAD.decode(payload).expect("b64");
        bytes[PAYLOAD_LEN - 1] ^= 0x40;
        let edited = format!("{}.{tag}", URL_SAFE_NO_PAD.encode(bytes));
        assert_eq!(
            s.verify(&edited, "https://app/cb", now),
            Err(StateError::Forged)
        );
        for bad in ["", "x", "a.b", "....", &"A".repeat(MAX_STATE_LEN + 1)] {
            assert!(s.verify(bad, "https://app/cb", now).is_err(), "{bad}");
        }
    }
}
