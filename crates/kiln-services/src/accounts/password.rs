//! Password hashing: Argon2id with the configured cost, in PHC strings (the parameters and
//! salt travel with each hash, so raising the cost later only affects new hashes).
use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use kiln_config::AccountsConfig;

use crate::error::{ServiceError, ServiceResult};

#[derive(Clone)]
pub(crate) struct Passwords {
    params: Params,
    /// A hash of nothing anyone knows, verified when the account does not exist, so an
    /// unknown address takes as long to refuse as a wrong password.
    decoy: String,
}

impl Passwords {
    pub(crate) fn new(config: &AccountsConfig) -> ServiceResult<Self> {
        let params = Params::new(
            config.argon2_memory_kib,
            config.argon2_iterations,
            config.argon2_parallelism,
            None,
        )
        .map_err(|e| ServiceError::Internal(format!("argon2 parameters: {e}")))?;
        let decoy = hash_with(&params, &crate::ids::random_token(32))?;
        Ok(Self { params, decoy })
    }

    /// Hashes on a blocking thread: one hash is tens of milliseconds of CPU and memory.
    pub(crate) async fn hash(&self, password: &str) -> ServiceResult<String> {
        let params = self.params.clone();
        let password = password.to_string();
        tokio::task::spawn_blocking(move || hash_with(&params, &password))
            .await
            .map_err(|e| ServiceError::Internal(format!("hashing task: {e}")))?
    }

    /// Whether `password` matches `hash`; `None` checks against the decoy (always false).
    pub(crate) async fn verify(&self, password: &str, hash: Option<&str>) -> ServiceResult<bool> {
        let known = hash.is_some();
        let hash = hash.unwrap_or(&self.decoy).to_string();
        let password = password.to_string();
        let matched = tokio::task::spawn_blocking(move || {
            let parsed = PasswordHash::new(&hash)
                .map_err(|e| ServiceError::Internal(format!("stored password hash: {e}")))?;
            Ok::<_, ServiceError>(
                Argon2::default()
                    .verify_password(password.as_bytes(), &parsed)
                    .is_ok(),
            )
        })
        .await
        .map_err(|e| ServiceError::Internal(format!("hashing task: {e}")))??;
        Ok(known && matched)
    }
}

fn hash_with(params: &Params, password: &str) -> ServiceResult<String> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone())
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| ServiceError::Internal(format!("cannot hash password: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cheap() -> AccountsConfig {
        AccountsConfig {
            argon2_memory_kib: 64,
            argon2_iterations: 1,
            ..AccountsConfig::default()
        }
    }

    #[tokio::test]
    async fn hashes_are_argon2id_salted_and_verify() {
        let p = Passwords::new(&cheap()).expect("params");
        let a = p.hash("correct horse").await.expect("hash");
        let b = p.hash("correct horse").await.expect("hash");
        assert!(a.starts_with("$argon2id$v=19$m=64,t=1,p=1$"), "{a}");
        assert_ne!(a, b, "a fresh salt each time");
        assert!(p.verify("correct horse", Some(&a)).await.expect("verify"));
        assert!(!p.verify("correct horsf", Some(&a)).await.expect("verify"));
        assert!(!p.verify("anything", None).await.expect("decoy"));
    }
}
