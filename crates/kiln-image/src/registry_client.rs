//! A minimal client for the OCI distribution API: manifests and blobs, with Bearer-token
//! (`WWW-Authenticate: Bearer realm=…`) and Basic authentication.

use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

use reqwest::header::{HeaderMap, ACCEPT, CONTENT_TYPE, WWW_AUTHENTICATE};
use reqwest::{Response, StatusCode};

use crate::error::{ImageError, Result};
use crate::reference::Reference;

/// Login for one registry.
#[derive(Clone, PartialEq, Eq)]
pub struct RegistryCredentials {
    pub username: String,
    pub password: String,
}

impl fmt::Debug for RegistryCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegistryCredentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// How to reach registries.
#[derive(Clone, Debug, Default)]
pub struct RegistryConfig {
    /// Hosts (`host:port`) spoken to over plain HTTP. Loopback registries (`localhost`,
    /// `127.0.0.0/8`, `[::1]`) always are.
    pub insecure_registries: Vec<String>,
    /// Credentials by registry host (`host:port`).
    pub credentials: HashMap<String, RegistryCredentials>,
}

impl RegistryConfig {
    pub(crate) fn base_url(&self, host: &str) -> String {
        let host_only = host.rsplit_once(':').map_or(host, |(h, port)| {
            if port.bytes().all(|b| b.is_ascii_digit()) {
                h
            } else {
                host
            }
        });
        let loopback =
            host_only == "localhost" || host_only.starts_with("127.") || host_only == "[::1]";
        let scheme = if loopback || self.insecure_registries.iter().any(|r| r == host) {
            "http"
        } else {
            "https"
        };
        // Docker Hub's API does not live at its name.
        let api_host = if host == crate::reference::DEFAULT_REGISTRY {
            "registry-1.docker.io"
        } else {
            host
        };
        format!("{scheme}://{api_host}")
    }
}

/// Largest manifest we accept from a registry.
const MAX_MANIFEST_BYTES: usize = 4 * 1024 * 1024;

pub(crate) struct RegistryClient {
    http: reqwest::Client,
    base: String,
    repository: String,
    credentials: Option<RegistryCredentials>,
    /// What to send: a Bearer token once obtained, or Basic once the registry asked for it.
    authorization: Option<String>,
}

impl RegistryClient {
    pub(crate) fn new(reference: &Reference, config: &RegistryConfig) -> Result<Self> {
        let base = config.base_url(reference.registry_host());
        let http = reqwest::Client::builder()
            .user_agent(concat!("kiln-image/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(15))
            .read_timeout(Duration::from_secs(120))
            .build()
            .map_err(|source| ImageError::Http {
                url: base.clone(),
                source,
            })?;
        Ok(Self {
            http,
            credentials: config.credentials.get(reference.registry_host()).cloned(),
            repository: reference.api_repository(),
            base,
            authorization: None,
        })
    }

    /// Fetches a manifest; returns its bytes and media type.
    pub(crate) async fn manifest(&mut self, reference: &str) -> Result<(Vec<u8>, String)> {
        let url = format!("{}/v2/{}/manifests/{reference}", self.base, self.repository);
        let resp = self
            .get(&url, Some(crate::manifest::ACCEPTED_MANIFESTS))
            .await?;
        let header_type = content_type(resp.headers());
        let mut resp = resp;
        let mut bytes = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(http_err(&url))? {
            bytes.extend_from_slice(&chunk);
            if bytes.len() > MAX_MANIFEST_BYTES {
                return Err(ImageError::BadMetadata {
                    what: "manifest",
                    reason: format!("{url} is larger than {MAX_MANIFEST_BYTES} bytes"),
                });
            }
        }
        let media_type = match header_type {
            Some(t) if crate::manifest::is_index(&t) || crate::manifest::is_manifest(&t) => t,
            _ => crate::manifest::sniff_media_type(&bytes)?,
        };
        Ok((bytes, media_type))
    }

    /// Starts a blob download (redirects followed; the body is the caller's to stream).
    pub(crate) async fn blob(&mut self, digest: &crate::Digest) -> Result<Response> {
        let url = format!("{}/v2/{}/blobs/{digest}", self.base, self.repository);
        self.get(&url, None).await
    }

    async fn get(&mut self, url: &str, accept: Option<&str>) -> Result<Response> {
        let mut retried = false;
        loop {
            let mut req = self.http.get(url);
            if let Some(a) = accept {
                req = req.header(ACCEPT, a);
            }
            if let Some(auth) = &self.authorization {
                req = req.header(reqwest::header::AUTHORIZATION, auth);
            }
            let resp = req.send().await.map_err(http_err(url))?;
            if resp.status() == StatusCode::UNAUTHORIZED && !retried {
                retried = true;
                let challenge = resp
                    .headers()
                    .get(WWW_AUTHENTICATE)
                    .and_then(|v| v.to_str().ok())
                    .and_then(parse_challenge)
                    .ok_or_else(|| auth_err(url, "401 without a usable WWW-Authenticate header"))?;
                self.authorization = Some(self.authorize(url, &challenge).await?);
                continue;
            }
            if resp.status().is_success() {
                return Ok(resp);
            }
            let status = resp.status().as_u16();
            let body = resp.text().await.unwrap_or_default();
            let body: String = body.chars().take(512).collect();
            return Err(if status == 401 {
                auth_err(
                    url,
                    &format!("still unauthorized after authenticating: {body}"),
                )
            } else {
                ImageError::RegistryStatus {
                    url: url.to_owned(),
                    status,
                    body,
                }
            });
        }
    }

    async fn authorize(&self, url: &str, challenge: &Challenge) -> Result<String> {
        match challenge.scheme.as_str() {
            "basic" => {
                let c = self.credentials.as_ref().ok_or_else(|| {
                    auth_err(url, "registry wants Basic auth; no credentials configured")
                })?;
                Ok(basic_header(c))
            }
            "bearer" => {
                let realm = challenge
                    .params
                    .get("realm")
                    .ok_or_else(|| auth_err(url, "Bearer challenge without realm"))?;
                if !(realm.starts_with("https://") || realm.starts_with("http://")) {
                    return Err(auth_err(url, "Bearer realm is not an http(s) URL"));
                }
                let default_scope = format!("repository:{}:pull", self.repository);
                let scope = challenge.params.get("scope").unwrap_or(&default_scope);
                let mut query = vec![("scope", scope.as_str())];
                if let Some(service) = challenge.params.get("service") {
                    query.push(("service", service.as_str()));
                }
                let mut req = self.http.get(realm).query(&query);
                if let Some(c) = &self.credentials {
                    req = req.basic_auth(&c.username, Some(&c.password));
                }
                let resp = req.send().await.map_err(http_err(realm))?;
                if !resp.status().is_success() {
                    return Err(auth_err(
                        url,
                        &format!("token endpoint answered {}", resp.status()),
                    ));
                }
                #[derive(serde::Deserialize)]
                struct TokenResponse {
                    token: Option<String>,
                    access_token: Option<String>,
                }
                let t: TokenResponse = resp.json().await.map_err(http_err(realm))?;
                let token = t
                    .token
                    .or(t.access_token)
                    .ok_or_else(|| auth_err(url, "token endpoint returned no token"))?;
                Ok(format!("Bearer {token}"))
            }
            other => Err(auth_err(url, &format!("unsupported auth scheme {other:?}"))),
        }
    }
}

fn basic_header(c: &RegistryCredentials) -> String {
    use base64::Engine as _;
    let raw = format!("{}:{}", c.username, c.password);
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(raw)
    )
}

fn content_type(headers: &HeaderMap) -> Option<String> {
    let v = headers.get(CONTENT_TYPE)?.to_str().ok()?;
    Some(v.split(';').next().unwrap_or(v).trim().to_owned())
}

fn http_err(url: &str) -> impl Fn(reqwest::Error) -> ImageError + '_ {
    move |source| ImageError::Http {
        url: url.to_owned(),
        source,
    }
}

fn auth_err(url: &str, reason: &str) -> ImageError {
    ImageError::Auth {
        url: url.to_owned(),
        reason: reason.to_owned(),
    }
}

/// A parsed `WWW-Authenticate` challenge: lower-cased scheme and its parameters.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Challenge {
    pub(crate) scheme: String,
    pub(crate) params: HashMap<String, String>,
}

/// Parses `Bearer realm="…",service="…",scope="repository:a:pull,push"` (quoted values may
/// hold commas).
pub(crate) fn parse_challenge(header: &str) -> Option<Challenge> {
    let header = header.trim();
    let (scheme, rest) = header.split_once(' ').unwrap_or((header, ""));
    let mut params = HashMap::new();
    let mut chars = rest.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
        if key.is_empty() {
            break;
        }
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => value.extend(chars.next()),
                    '"' => break,
                    c => value.push(c),
                }
            }
        } else {
            value = chars.by_ref().take_while(|c| *c != ',').collect();
        }
        params.insert(key.trim().to_ascii_lowercase(), value.trim().to_owned());
    }
    Some(Challenge {
        scheme: scheme.to_ascii_lowercase(),
        params,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_bearer_challenge_with_commas_in_quotes() {
        let c = parse_challenge(
            r#"Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull,push""#,
        )
        .unwrap();
        assert_eq!(c.scheme, "bearer");
        assert_eq!(c.params["realm"], "https://auth.example/token");
        assert_eq!(c.params["service"], "registry.example");
        assert_eq!(c.params["scope"], "repository:a/b:pull,push");
        let c = parse_challenge(r#"Basic realm="Registry Realm""#).unwrap();
        assert_eq!(c.scheme, "basic");
        assert_eq!(c.params["realm"], "Registry Realm");
    }

    #[test]
    fn loopback_and_listed_registries_use_plain_http() {
        let mut cfg = RegistryConfig::default();
        assert_eq!(cfg.base_url("127.0.0.1:5000"), "http://127.0.0.1:5000");
        assert_eq!(cfg.base_url("localhost"), "http://localhost");
        assert_eq!(
            cfg.base_url("registry.example:5000"),
            "https://registry.example:5000"
        );
        assert_eq!(cfg.base_url("docker.io"), "https://registry-1.docker.io");
        cfg.insecure_registries.push("registry.example:5000".into());
        assert_eq!(
            cfg.base_url("registry.example:5000"),
            "http://registry.example:5000"
        );
    }
}
