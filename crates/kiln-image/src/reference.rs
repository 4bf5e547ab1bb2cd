//! Image references: `[registry/]repository[:tag][@digest]`.

use std::fmt;

use crate::digest::Digest;
use crate::error::ImageError;

/// The registry assumed when a reference names none (Docker's convention).
pub const DEFAULT_REGISTRY: &str = "docker.io";

/// A parsed image reference.
///
/// Its `Display` form is the key of the store's index: the tag defaults to `latest`, and
/// `docker.io/library/` is left out, so `ubuntu`, `ubuntu:latest` and
/// `docker.io/library/ubuntu:latest` all name the same image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reference {
    /// Registry host (with port), if the reference names one.
    pub registry: Option<String>,
    /// Repository path, e.g. `library/ubuntu` or `kiln/python`.
    pub repository: String,
    /// Tag; `latest` when neither tag nor digest was given.
    pub tag: Option<String>,
    /// Digest pin, if any.
    pub digest: Option<Digest>,
}

impl Reference {
    /// Parses a reference the way Docker does: the first path component is a registry host
    /// if it contains `.` or `:` or is `localhost`.
    pub fn parse(input: &str) -> Result<Self, ImageError> {
        let bad = |reason: &str| ImageError::InvalidReference {
            reference: input.to_owned(),
            reason: reason.to_owned(),
        };
        if input.is_empty() || input.len() > 512 {
            return Err(bad("must be 1 to 512 characters"));
        }
        let (rest, digest) = match input.split_once('@') {
            Some((rest, d)) => (rest, Some(Digest::parse(d)?)),
            None => (input, None),
        };
        let (registry, path) = match rest.split_once('/') {
            Some((first, path))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                (Some(first.to_owned()), path)
            }
            _ => (None, rest),
        };
        let (repository, tag) = match path.rsplit_once(':') {
            Some((repo, tag)) if !tag.contains('/') => (repo, Some(tag.to_owned())),
            _ => (path, None),
        };
        if repository.is_empty() {
            return Err(bad("empty repository"));
        }
        let repo_ok = repository.split('/').all(|c| {
            !c.is_empty()
                && c.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')
                })
                && c != "."
                && c != ".."
        });
        if !repo_ok {
            return Err(bad("repository must be lowercase [a-z0-9._-] components"));
        }
        if let Some(t) = &tag {
            let tag_ok = !t.is_empty()
                && t.len() <= 128
                && t.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
                && !t.starts_with(['.', '-']);
            if !tag_ok {
                return Err(bad("tag must be [A-Za-z0-9_.-], at most 128 characters"));
            }
        }
        let registry = registry.filter(|r| r != DEFAULT_REGISTRY && r != "index.docker.io");
        let repository = match (&registry, repository.strip_prefix("library/")) {
            (None, Some(short)) if !short.contains('/') => short.to_owned(),
            _ => repository.to_owned(),
        };
        let tag = match (&tag, &digest) {
            (None, None) => Some("latest".to_owned()),
            _ => tag,
        };
        Ok(Self {
            registry,
            repository,
            tag,
            digest,
        })
    }

    /// Registry host to contact.
    pub fn registry_host(&self) -> &str {
        self.registry.as_deref().unwrap_or(DEFAULT_REGISTRY)
    }

    /// Repository path as the distribution API wants it (`library/` added on Docker Hub).
    pub fn api_repository(&self) -> String {
        if self.registry.is_none() && !self.repository.contains('/') {
            format!("library/{}", self.repository)
        } else {
            self.repository.clone()
        }
    }

    /// What to ask the registry for: the digest if pinned, else the tag.
    pub fn manifest_reference(&self) -> String {
        match (&self.digest, &self.tag) {
            (Some(d), _) => d.to_string(),
            (None, Some(t)) => t.clone(),
            (None, None) => "latest".to_owned(),
        }
    }

    /// This reference with another tag (used for `org.opencontainers.image.ref.name` tags).
    pub fn with_tag(&self, tag: &str) -> Result<Self, ImageError> {
        let name = match &self.registry {
            Some(r) => format!("{r}/{}:{tag}", self.repository),
            None => format!("{}:{tag}", self.repository),
        };
        Self::parse(&name)
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(r) = &self.registry {
            write!(f, "{r}/")?;
        }
        write!(f, "{}", self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_docker_hub_names() {
        for r in [
            "ubuntu",
            "ubuntu:latest",
            "docker.io/library/ubuntu:latest",
            "library/ubuntu",
        ] {
            assert_eq!(
                Reference::parse(r).unwrap().to_string(),
                "ubuntu:latest",
                "{r}"
            );
        }
        let r = Reference::parse("ubuntu").unwrap();
        assert_eq!(r.api_repository(), "library/ubuntu");
        assert_eq!(r.registry_host(), "docker.io");
    }

    #[test]
    fn parses_registry_port_tag_and_digest() {
        let d = Digest::of_bytes(b"x");
        let r = Reference::parse(&format!("127.0.0.1:5000/kiln/py:3.11@{d}")).unwrap();
        assert_eq!(r.registry.as_deref(), Some("127.0.0.1:5000"));
        assert_eq!(r.repository, "kiln/py");
        assert_eq!(r.tag.as_deref(), Some("3.11"));
        assert_eq!(r.manifest_reference(), d.to_string());
        let r = Reference::parse("localhost/x").unwrap();
        assert_eq!(r.to_string(), "localhost/x:latest");
    }

    #[test]
    fn rejects_garbage() {
        for r in ["", "UPPER", "a/../b", "a:", "a:b/c:", "a//b", "x:-t"] {
            assert!(Reference::parse(r).is_err(), "{r}");
        }
    }
}
