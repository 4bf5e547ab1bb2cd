//! An organization's money (document 004: "members, balance, transactions"): its balance,
//! shared by its members and charged once per session, and its ledger. Any member sees the
//! balance; the ledger (who spent what) is for owners and admins. Another org is a 404.
use std::sync::Arc;

use axum::extract::State;
use axum::Json;
use chrono::{DateTime, Utc};
use kiln_domain::TransactionQuery;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::{ApiError, ApiResult};
use crate::extract::{check_range, OrgNamed, ValidQuery};
use crate::models::{rfc3339, ErrorBody, HTTPValidationError};
use crate::routes::billing_models::UsageTransaction;
use crate::AppState;

pub fn routes() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new()
        .routes(routes!(org_balance))
        .routes(routes!(org_transactions))
}

/// An organization's balance.
#[derive(Serialize, ToSchema)]
pub struct OrgBalanceView {
    pub org_id: String,
    pub slug: String,
    /// Cents.
    pub balance_cents: i64,
    pub total_deposited_cents: i64,
    /// Charges less refunds.
    pub total_spent_cents: i64,
    #[serde(serialize_with = "rfc3339")]
    pub as_of: DateTime<Utc>,
}

#[derive(Deserialize, IntoParams, Default)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct TransactionsQuery {
    /// 1 to 100 (default 50).
    #[serde(default)]
    pub limit: Option<i64>,
    /// 1-based (default 1).
    #[serde(default)]
    pub page: Option<i64>,
}

/// A page of an organization's ledger, newest first.
#[derive(Serialize, ToSchema)]
pub struct OrgTransactionPage {
    pub items: Vec<UsageTransaction>,
    pub total_items: u64,
    pub page: i64,
    pub has_next: bool,
}

/// The organization's balance (any member).
#[utoipa::path(get, path = "/orgs/{org}/balance", tag = "orgs",
    params(("org" = String, Path, description = "id, slug, or `me` (the org the request acts in)")),
    responses((status = 200, body = OrgBalanceView), (status = 404, body = ErrorBody)),
    security(("HTTPBearer" = [])))]
pub async fn org_balance(
    State(state): State<Arc<AppState>>,
    named: OrgNamed,
) -> ApiResult<Json<OrgBalanceView>> {
    let ctx = named.context(&state).await?;
    let balance = state.kiln.billing.balance(&ctx.org.account_user_id).await?;
    Ok(Json(OrgBalanceView {
        org_id: ctx.org.org_id,
        slug: ctx.org.slug,
        balance_cents: balance.balance_cents,
        total_deposited_cents: balance.total_deposited_cents,
        total_spent_cents: balance.total_spent_cents,
        as_of: Utc::now(),
    }))
}

/// The organization's ledger, newest first (owners and admins; 403 for a member).
#[utoipa::path(get, path = "/orgs/{org}/transactions", tag = "orgs",
    params(("org" = String, Path, description = "id, slug, or `me`"), TransactionsQuery),
    responses((status = 200, body = OrgTransactionPage), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 422, body = HTTPValidationError)),
    security(("HTTPBearer" = [])))]
pub async fn org_transactions(
    State(state): State<Arc<AppState>>,
    named: OrgNamed,
    ValidQuery(q): ValidQuery<TransactionsQuery>,
) -> ApiResult<Json<OrgTransactionPage>> {
    let limit = q.limit.unwrap_or(50);
    check_range(&["query", "limit"], limit, Some(1), Some(100))?;
    let page = q.page.unwrap_or(1);
    check_range(&["query", "page"], page, Some(1), Some(1_000_000))?;
    let ctx = named.context(&state).await?;
    if !ctx.role.can_manage() {
        return Err(ApiError::Forbidden(
            "only an owner or admin of this organization may see its ledger".into(),
        ));
    }
    let query = TransactionQuery {
        user_id: ctx.org.account_user_id,
        kinds: Vec::new(),
        from: None,
        until: None,
        max_items: None,
        limit: limit.unsigned_abs(),
        offset: (page.unsigned_abs() - 1).saturating_mul(limit.unsigned_abs()),
    };
    let found = state.kiln.billing.usage(&query).await?;
    let shown = page.unsigned_abs().saturating_mul(limit.unsigned_abs());
    Ok(Json(OrgTransactionPage {
        has_next: shown < found.total,
        total_items: found.total,
        page,
        items: found.transactions.into_iter().map(Into::into).collect(),
    }))
}
