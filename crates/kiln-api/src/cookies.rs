//! Browser sign-ins in cookies. A browser that signs in with `X-Kiln-Session: cookie`
//! (`/v1/auth/signup`, `/login`, `/login/mfa`, `/refresh`) gets its tokens as `HttpOnly`,
//! `SameSite=Strict` cookies (`Secure` when the request came over HTTPS or to a loopback
//! address, where browsers keep them) instead of in the body, so a script on the page
//! cannot read them. Programs keep sending `Authorization: Bearer`, which always wins.
//!
//! CSRF: a request authenticated by the cookie that can change something (any method but
//! GET, HEAD, OPTIONS) must carry `X-CSRF-Token` equal to the token derived from its
//! session cookie (SHA-256 of it, so it reveals nothing of it). The page reads that value
//! from the `kiln_csrf` cookie, which is not `HttpOnly`; another site can neither read it
//! nor forge it, and a cookie planted by a sibling domain does not help, since the check is
//! against the session cookie, not against the `kiln_csrf` cookie.
use axum::http::header::{AUTHORIZATION, COOKIE, SET_COOKIE};
use axum::http::{HeaderMap, HeaderValue, Method};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use sha2::{Digest, Sha256};

use crate::error::ApiError;

/// The access token.
pub const SESSION: &str = "kiln_session";
/// The refresh token, sent only to the refresh route.
pub const REFRESH: &str = "kiln_refresh";
/// What the page echoes in `X-CSRF-Token`.
pub const CSRF: &str = "kiln_csrf";
/// The header a browser signs in with to get cookies.
pub const MODE_HEADER: &str = "x-kiln-session";
pub const CSRF_HEADER: &str = "x-csrf-token";
const REFRESH_PATH: &str = "/v1/auth/refresh";

/// The request's credential: the `Authorization` header's bearer token, or else the
/// session cookie (with the CSRF check for a request that can change something).
pub(crate) fn credential<'a>(headers: &'a HeaderMap, method: &Method) -> Result<&'a str, ApiError> {
    if headers.contains_key(AUTHORIZATION) {
        return bearer_token(headers);
    }
    let Some(token) = cookie(headers, SESSION) else {
        // The usual answer for a missing credential.
        return bearer_token(headers);
    };
    let safe = matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS);
    if !safe {
        let sent = headers.get(CSRF_HEADER).and_then(|v| v.to_str().ok());
        if sent != Some(csrf_token(token).as_str()) {
            return Err(ApiError::Denied {
                code: "csrf_failed",
                message: format!(
                    "a request signed in by cookie must send the {CSRF} cookie's value in \
                     X-CSRF-Token"
                ),
            });
        }
    }
    Ok(token)
}

/// The token of an `Authorization: Bearer …` header.
pub(crate) fn bearer_token(headers: &HeaderMap) -> Result<&str, ApiError> {
    let header = headers.get(AUTHORIZATION).ok_or_else(|| {
        ApiError::Unauthorized(
            "missing Authorization header: send `Authorization: Bearer <API key or access token>`"
                .into(),
        )
    })?;
    let value = header
        .to_str()
        .map_err(|_| ApiError::Unauthorized("the Authorization header is not valid text".into()))?;
    match value.split_once(' ') {
        Some((scheme, token))
            if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() =>
        {
            Ok(token.trim())
        }
        _ => Err(ApiError::Unauthorized(
            "malformed Authorization header: expected `Bearer <API key or access token>`".into(),
        )),
    }
}

/// The value of cookie `name` in the request's `Cookie` headers.
pub(crate) fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value.trim_matches('"'))
        .filter(|value| !value.is_empty())
}

/// Whether the browser asked for its sign-in in cookies.
pub(crate) fn wanted(headers: &HeaderMap) -> bool {
    headers
        .get(MODE_HEADER)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("cookie"))
}

/// How a sign-in answers: in cookies (a browser that asked), or in the body; and whether
/// its cookies are `Secure`.
pub struct CookieMode {
    pub wanted: bool,
    pub secure: bool,
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for CookieMode {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _state: &S,
    ) -> Result<Self, Self::Rejection> {
        Ok(Self {
            wanted: wanted(&parts.headers),
            secure: secure_request(&parts.headers),
        })
    }
}

impl CookieMode {
    /// In cookie mode, moves a sign-in's tokens out of the answer's body into cookies:
    /// the `Set-Cookie` headers (none otherwise).
    pub(crate) fn hand_over(
        &self,
        access: &mut String,
        refresh: &mut String,
        max_age_secs: u64,
    ) -> HeaderMap {
        let mut headers = HeaderMap::new();
        if self.wanted {
            let (access, refresh) = (std::mem::take(access), std::mem::take(refresh));
            sign_in(&mut headers, &access, &refresh, max_age_secs, self.secure);
        }
        headers
    }

    /// The headers that remove a sign-in's cookies (sent on every sign-out).
    pub(crate) fn removal(&self) -> HeaderMap {
        let mut headers = HeaderMap::new();
        sign_out(&mut headers, self.secure);
        headers
    }
}

/// Whether the browser came over HTTPS (as a proxy in front says), or to a loopback
/// address, where browsers keep `Secure` cookies over plain HTTP. A false claim only
/// makes the caller's own browser drop its cookies.
fn secure_request(headers: &HeaderMap) -> bool {
    let https = headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|proto| proto.trim().eq_ignore_ascii_case("https"));
    let host = headers
        .get(axum::http::header::HOST)
        .and_then(|v| v.to_str().ok())
        .and_then(|host| host.parse::<axum::http::uri::Authority>().ok());
    let loopback = host.is_some_and(|authority| {
        let name = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']');
        name.eq_ignore_ascii_case("localhost")
            || name
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback())
    });
    https || loopback
}

/// The CSRF token of a session token.
pub fn csrf_token(session_token: &str) -> String {
    let digest = Sha256::digest(format!("kiln-csrf:{session_token}").as_bytes());
    URL_SAFE_NO_PAD.encode(&digest[..24])
}

/// The `Set-Cookie` headers of a sign-in: session, CSRF and refresh cookies, kept as long
/// as the refresh token lives.
pub(crate) fn sign_in(
    headers: &mut HeaderMap,
    access_token: &str,
    refresh_token: &str,
    max_age_secs: u64,
    secure: bool,
) {
    let csrf = csrf_token(access_token);
    for (name, value, path, http_only) in [
        (SESSION, access_token, "/", true),
        (CSRF, csrf.as_str(), "/", false),
        (REFRESH, refresh_token, REFRESH_PATH, true),
    ] {
        set(headers, name, value, path, http_only, max_age_secs, secure);
    }
}

/// The `Set-Cookie` headers that remove the sign-in's cookies.
pub(crate) fn sign_out(headers: &mut HeaderMap, secure: bool) {
    for (name, path, http_only) in [
        (SESSION, "/", true),
        (CSRF, "/", false),
        (REFRESH, REFRESH_PATH, true),
    ] {
        set(headers, name, "", path, http_only, 0, secure);
    }
}

fn set(
    headers: &mut HeaderMap,
    name: &str,
    value: &str,
    path: &str,
    http_only: bool,
    max_age_secs: u64,
    secure: bool,
) {
    let mut cookie =
        format!("{name}={value}; Path={path}; Max-Age={max_age_secs}; SameSite=Strict");
    if http_only {
        cookie.push_str("; HttpOnly");
    }
    if secure {
        cookie.push_str("; Secure");
    }
    // Tokens are URL-safe base64 and JWTs: always a valid header value.
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        headers.append(SET_COOKIE, value);
    }
}

/// The `Cookie` header without Kiln's own cookies (what the port proxy passes on: the
/// service inside must never see a credential for Kiln); `None` when nothing is left.
pub(crate) fn without_ours(headers: &HeaderMap) -> Option<HeaderValue> {
    let kept: Vec<&str> = headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .map(str::trim)
        .filter(|pair| !pair.is_empty())
        .filter(|pair| {
            let name = pair.split_once('=').map_or(*pair, |(name, _)| name);
            ![SESSION, REFRESH, CSRF].contains(&name)
        })
        .collect();
    if kept.is_empty() {
        return None;
    }
    HeaderValue::from_str(&kept.join("; ")).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.append(
                axum::http::HeaderName::from_bytes(name.as_bytes()).unwrap_or(COOKIE),
                HeaderValue::from_str(value).unwrap_or(HeaderValue::from_static("")),
            );
        }
        headers
    }

    #[test]
    fn cookies_are_found_among_others_and_ours_are_never_passed_on() {
        let headers = with(&[
            ("cookie", "a=1; kiln_session=tok; b=2"),
            ("cookie", "kiln_csrf=c"),
        ]);
        assert_eq!(cookie(&headers, SESSION), Some("tok"));
        assert_eq!(cookie(&headers, CSRF), Some("c"));
        assert_eq!(cookie(&headers, "missing"), None);
        assert_eq!(
            without_ours(&headers)
                .as_ref()
                .and_then(|v| v.to_str().ok()),
            Some("a=1; b=2")
        );
        assert!(without_ours(&with(&[("cookie", "kiln_refresh=r")])).is_none());
    }

    #[test]
    fn a_cookie_request_that_changes_something_needs_the_csrf_token() {
        let csrf = csrf_token("tok");
        let plain = with(&[("cookie", "kiln_session=tok")]);
        assert!(credential(&plain, &Method::GET).is_ok_and(|t| t == "tok"));
        assert!(credential(&plain, &Method::POST).is_err());
        let wrong = with(&[("cookie", "kiln_session=tok"), ("x-csrf-token", "nope")]);
        assert!(credential(&wrong, &Method::DELETE).is_err());
        // The kiln_csrf cookie itself proves nothing: only the header is compared.
        let planted = with(&[
            ("cookie", "kiln_session=tok; kiln_csrf=x"),
            ("x-csrf-token", "x"),
        ]);
        assert!(credential(&planted, &Method::POST).is_err());
        let right = with(&[("cookie", "kiln_session=tok"), ("x-csrf-token", &csrf)]);
        assert!(credential(&right, &Method::POST).is_ok_and(|t| t == "tok"));
        // A bearer token needs no CSRF token and wins over the cookie.
        let bearer = with(&[
            ("cookie", "kiln_session=tok"),
            ("authorization", "Bearer key"),
        ]);
        assert!(credential(&bearer, &Method::POST).is_ok_and(|t| t == "key"));
    }
}
