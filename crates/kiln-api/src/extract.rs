//! Request extractors whose rejections speak the API's error language: a malformed
//! body or query is a 422 with FastAPI's `loc`/`msg`/`type`, never axum's plain text.
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequest, FromRequestParts, RawPathParams, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use kiln_services::auth::Principal;
use serde::de::DeserializeOwned;

use crate::error::{ApiError, ApiResult, FieldError};
use crate::AppState;

/// A JSON body, parsed leniently about `Content-Type` (clients differ) but strictly
/// about content: every problem is reported with its location.
pub struct ValidJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ValidJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(body_rejection)?;
        parse_json(&bytes).map(ValidJson)
    }
}

/// Like [`ValidJson`] but an absent or empty body means `T::default()`: the SDK sends
/// `Content-Type: application/json` with no body on some POSTs.
pub struct OptionalJson<T>(pub T);

impl<T: DeserializeOwned + Default, S: Send + Sync> FromRequest<S> for OptionalJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(body_rejection)?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(OptionalJson(T::default()));
        }
        parse_json(&bytes).map(OptionalJson)
    }
}

fn body_rejection(rejection: BytesRejection) -> ApiError {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::PayloadTooLarge("request body is larger than this server accepts".into())
    } else {
        ApiError::invalid(
            &["body"],
            format!("cannot read request body: {rejection}"),
            "body_read",
        )
    }
}

pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::invalid(&["body"], "Field required", "missing"));
    }
    let mut value: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| {
        ApiError::Validation(vec![FieldError {
            loc: vec!["body".into(), e.column().to_string()],
            msg: format!("JSON decode error: {e}"),
            kind: "json_invalid".into(),
        }])
    })?;
    // Every request body of this API is an object; serde alone would also read a
    // struct from a JSON array, which FastAPI (and so the contract) refuses.
    if !value.is_object() {
        return Err(ApiError::invalid(
            &["body"],
            "Input should be a valid dictionary or object to extract fields from",
            "model_attributes_type",
        ));
    }
    integral_floats_as_integers(&mut value);
    serde_path_to_error::deserialize(value).map_err(|err| {
        let path = err.path().to_string();
        ApiError::Validation(vec![describe(&path, &err.into_inner().to_string(), "body")])
    })
}

/// JSON Schema counts `30.0` as an integer, and so does FastAPI (pydantic's lax mode takes
/// a float without a fraction for an `int`); serde does not. Without this, a body the
/// document allows (`"ttl_minutes": 30.0`) would be a 422 (found by API fuzzing).
fn integral_floats_as_integers(value: &mut serde_json::Value) {
    use serde_json::Value;
    match value {
        Value::Number(n) => {
            // i64::MAX as f64 rounds up to 2^63, so the upper bound is exclusive.
            const LIMIT: f64 = 9_223_372_036_854_775_808.0;
            if let Some(f) = n.as_f64().filter(|_| n.is_f64()) {
                if f.fract() == 0.0 && (-LIMIT..LIMIT).contains(&f) {
                    *value = Value::from(f as i64);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(integral_floats_as_integers),
        Value::Object(fields) => fields.values_mut().for_each(integral_floats_as_integers),
        _ => {}
    }
}

/// Query parameters, with the same error shape (`loc: ["query", name]`).
pub struct ValidQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ValidQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let query = parts.uri.query().unwrap_or_default();
        let de = serde_urlencoded::Deserializer::new(form_urlencoded::parse(query.as_bytes()));
        serde_path_to_error::deserialize(de)
            .map(ValidQuery)
            .map_err(|err| {
                let path = err.path().to_string();
                ApiError::Validation(vec![describe(
                    &path,
                    &err.into_inner().to_string(),
                    "query",
                )])
            })
    }
}

/// Turns a serde message into FastAPI's vocabulary.
fn describe(path: &str, message: &str, root: &str) -> FieldError {
    let mut loc = vec![root.to_string()];
    loc.extend(
        path.split('.')
            .filter(|p| !p.is_empty() && *p != "?")
            .map(|p| p.trim_matches(['[', ']']).to_string()),
    );
    if let Some(field) = message
        .strip_prefix("missing field `")
        .and_then(|m| m.split('`').next())
    {
        loc.push(field.to_string());
        return FieldError {
            loc,
            msg: "Field required".into(),
            kind: "missing".into(),
        };
    }
    let (msg, kind) =
        if message.contains("invalid digit") || message.contains("cannot parse integer") {
            (
                "Input should be a valid integer, unable to parse string as an integer".to_string(),
                "int_parsing",
            )
        } else if message.contains("expected a string") {
            ("Input should be a valid string".to_string(), "string_type")
        } else if message.contains("expected i")
            || message.contains("expected u")
            || message.contains("integer")
        {
            (
                format!("Input should be a valid integer ({message})"),
                "int_type",
            )
        } else if message.contains("expected a boolean")
            || message.contains("provided string was not `true` or `false`")
        {
            ("Input should be a valid boolean".to_string(), "bool_type")
        } else if message.contains("expected struct") || message.contains("expected a map") {
            (
                "Input should be a valid dictionary or object to extract fields from".to_string(),
                "model_attributes_type",
            )
        } else {
            (message.to_string(), "value_error")
        };
    FieldError {
        loc,
        msg,
        kind: kind.into(),
    }
}

/// Path parameters; a segment that does not decode (e.g. invalid UTF-8) is a 422.
pub struct ValidPath<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for ValidPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(value)) => Ok(ValidPath(value)),
            Err(rejection) => Err(ApiError::invalid(
                &["path"],
                rejection.body_text(),
                "path_parsing",
            )),
        }
    }
}

/// The principal that owns what this request makes and sees: the account of the
/// organization the request acts in (document 004's order: the API key's org → the
/// `X-Org-Slug` header → the caller's default org; in their personal org, the caller
/// themself). Sessions, instances, agent jobs and the ledger go by it, so they belong to the
/// org. Rejects with 401 when the credential is missing or bad, 404 for an org the caller is
/// not a member of.
pub struct CurrentUser(pub Principal);

/// The person (or program) behind the credential, whatever org the request acts in: for
/// their account, sign-ins, personal keys and org memberships.
pub struct SignedIn(pub Principal);

/// A caller the rate-limit middleware already authenticated (request extension).
#[derive(Clone)]
pub(crate) struct Authenticated(pub Principal);

impl FromRequestParts<Arc<AppState>> for SignedIn {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        let principal = match parts.extensions.get::<Authenticated>() {
            Some(Authenticated(principal)) => principal.clone(),
            None => {
                let credential = crate::cookies::credential(&parts.headers, &parts.method)?;
                state.kiln.auth.authenticate(credential).await?
            }
        };
        // An org key is bound to its org's IP allowlist wherever it is used.
        let address = request_address(&parts.extensions, &parts.headers, state);
        state
            .kiln
            .orgs
            .check_key_address(&principal, &address)
            .await?;
        Ok(SignedIn(principal))
    }
}

/// The client's address as the server sees it (through trusted proxies); empty when the
/// connection's peer is unknown (in-process requests).
pub(crate) fn request_address(
    extensions: &axum::http::Extensions,
    headers: &HeaderMap,
    state: &AppState,
) -> String {
    extensions
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|axum::extract::ConnectInfo(peer)| {
            crate::server::client_address(peer.ip(), headers, &state.kiln.config.server).to_string()
        })
        .unwrap_or_default()
}

impl FromRequestParts<Arc<AppState>> for CurrentUser {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        let SignedIn(principal) = SignedIn::from_request_parts(parts, state).await?;
        let slug = org_header(&parts.headers)?;
        Ok(CurrentUser(state.kiln.orgs.acting(principal, slug).await?))
    }
}

/// The person and the organization the request acts in, resolved as for [`CurrentUser`].
pub struct CurrentOrg {
    pub principal: Principal,
    pub org: kiln_services::orgs::OrgContext,
}

/// The account a route that also answers anonymous callers shows things for: the account
/// of the org a valid credential acts in (so its org's private datasets show), or `None`
/// for a caller without one (public things only). A bad credential is anonymous here,
/// as the rate limiter left it; `X-Org-Slug` naming an org the caller is not in is a 404.
pub struct Viewer(pub Option<String>);

impl FromRequestParts<Arc<AppState>> for Viewer {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        let Some(Authenticated(principal)) = parts.extensions.get::<Authenticated>().cloned()
        else {
            return Ok(Viewer(None));
        };
        let slug = org_header(&parts.headers)?;
        let acting = state.kiln.orgs.acting(principal, slug).await?;
        Ok(Viewer(Some(acting.user.user_id)))
    }
}

/// The header a JWT caller pins its organization with.
pub const ORG_HEADER: &str = "x-org-slug";

pub(crate) fn org_header(headers: &HeaderMap) -> Result<Option<&str>, ApiError> {
    let Some(value) = headers.get(ORG_HEADER) else {
        return Ok(None);
    };
    let value = value.to_str().map_err(|_| {
        ApiError::invalid(
            &["header", "X-Org-Slug"],
            "Input should be a valid string",
            "string_type",
        )
    })?;
    Ok(Some(value.trim()).filter(|s| !s.is_empty()))
}

impl FromRequestParts<Arc<AppState>> for CurrentOrg {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        let SignedIn(principal) = SignedIn::from_request_parts(parts, state).await?;
        let slug = org_header(&parts.headers)?;
        let org = state.kiln.orgs.resolve(&principal, slug).await?;
        Ok(CurrentOrg { principal, org })
    }
}

/// The caller and the organization an `/orgs/{org}/…` route names: by id or slug, or `me`
/// for the org the request acts in (resolved as for [`CurrentOrg`], and only then, so a
/// route naming another org costs no extra lookup). Membership is the service's check.
pub struct OrgNamed {
    pub principal: Principal,
    /// The id or slug to hand the service (`me` replaced by the acting org's id).
    pub org: String,
    /// The acting org's context when the path said `me`.
    pub acting: Option<kiln_services::orgs::OrgContext>,
}

impl OrgNamed {
    /// The named org as its member (the caller) sees it; 404 for a non-member.
    pub async fn context(self, state: &AppState) -> ApiResult<kiln_services::orgs::OrgContext> {
        match self.acting {
            Some(ctx) => Ok(ctx),
            None => Ok(state
                .kiln
                .orgs
                .member_context(&self.principal, &self.org)
                .await?),
        }
    }
}

impl FromRequestParts<Arc<AppState>> for OrgNamed {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        let SignedIn(principal) = SignedIn::from_request_parts(parts, state).await?;
        let params = RawPathParams::from_request_parts(parts, state)
            .await
            .map_err(|e| {
                ApiError::Internal(format!("{{org}} route without path parameters: {e}"))
            })?;
        let named = params
            .iter()
            .find(|(name, _)| *name == "org")
            .map(|(_, value)| value.to_string())
            .ok_or_else(|| ApiError::Internal("route has no {org} segment".into()))?;
        if named != "me" {
            return Ok(OrgNamed {
                principal,
                org: named,
                acting: None,
            });
        }
        let slug = org_header(&parts.headers)?;
        let ctx = state.kiln.orgs.resolve(&principal, slug).await?;
        Ok(OrgNamed {
            principal,
            org: ctx.org.org_id.clone(),
            acting: Some(ctx),
        })
    }
}

/// Checks an integer against a range, FastAPI style.
pub fn check_range(
    loc: &[&str],
    value: i64,
    min: Option<i64>,
    max: Option<i64>,
) -> Result<(), ApiError> {
    if let Some(min) = min.filter(|min| value < *min) {
        return Err(ApiError::invalid(
            loc,
            format!("Input should be greater than or equal to {min}"),
            "greater_than_equal",
        ));
    }
    if let Some(max) = max.filter(|max| value > *max) {
        return Err(ApiError::invalid(
            loc,
            format!("Input should be less than or equal to {max}"),
            "less_than_equal",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Deserialize, Debug)]
    struct Body {
        n: i64,
        #[serde(default)]
        ratio: Option<f64>,
    }

    fn kind(err: ApiError) -> String {
        match err {
            ApiError::Validation(errors) => errors[0].kind.clone(),
            other => panic!("not a validation error: {other:?}"),
        }
    }

    #[test]
    fn integral_floats_are_integers_as_in_json_schema() {
        let body: Body = parse_json(br#"{"n": 30.0, "ratio": 2.0}"#).expect("30.0 is an integer");
        assert_eq!(body.n, 30);
        assert_eq!(body.ratio, Some(2.0));
        let body: Body = parse_json(br#"{"n": -1e3}"#).expect("-1e3 is an integer");
        assert_eq!(body.n, -1000);
    }

    #[test]
    fn fractions_and_out_of_range_floats_are_still_refused() {
        for text in [
            &br#"{"n": 30.5}"#[..],
            br#"{"n": 1e300}"#,
            br#"{"n": 9.3e18}"#,
        ] {
            let err = parse_json::<Body>(text).expect_err("not an i64");
            assert_eq!(kind(err), "int_type", "{}", String::from_utf8_lossy(text));
        }
    }
}
