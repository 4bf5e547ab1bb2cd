use std::sync::Arc;

use axum::extract::{RawQuery, Request, State};
use axum::Json;
use chrono::{NaiveDate, NaiveTime, Utc};
use kiln_domain::{TransactionKind, TransactionPage, TransactionQuery};
use kiln_services::billing::WebhookOutcome;
use serde_json::{json, Value};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::billing_models::*;
use crate::error::{ApiError, ApiResult};
use crate::extract::{check_range, CurrentUser, ValidJson};
use crate::models::{ErrorBody, HTTPValidationError};
use crate::AppState;

/// The billing endpoints, mounted under `/api/v1` by [`crate::router`].
pub fn routes() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new()
        .routes(routes!(pricing))
        .routes(routes!(balance))
        .routes(routes!(deposit))
        .routes(routes!(webhook))
        .routes(routes!(usage))
}

const DEFAULT_LIMIT: i64 = 25;
/// Stripe's events are a few kilobytes.
const MAX_WEBHOOK_BYTES: usize = 1024 * 1024;
const MAX_LIMIT: i64 = 100;
const MAX_ITEMS: i64 = 10_000;
/// More type filters than there are types is a mistake, not a query.
const MAX_TYPE_FILTERS: usize = 20;

/// Get current pricing information (public).
#[utoipa::path(get, path = "/billing/pricing", tag = "billing", operation_id = "get_pricing_info_billing_pricing_get",
    responses((status = 200, body = Object, description = "cost_per_minute_cents, cost_per_minute_dollars, agent_job_cost_cents, min_deposit_cents, currency, billing_enabled")))]
pub async fn pricing(State(state): State<Arc<AppState>>) -> Json<Value> {
    let p = state.kiln.billing.pricing();
    Json(json!({
        "cost_per_minute_cents": p.cost_per_minute_cents,
        "cost_per_minute_dollars": p.cost_per_minute_cents as f64 / 100.0,
        "agent_job_cost_cents": p.agent_job_cost_cents,
        "agent_job_cost_dollars": p.agent_job_cost_cents as f64 / 100.0,
        "min_deposit_cents": p.min_deposit_cents,
        "currency": p.currency,
        "billing_enabled": p.enabled,
    }))
}

/// Get the caller's money balance.
#[utoipa::path(get, path = "/billing/balance", tag = "billing", operation_id = "get_user_balance_billing_balance_get",
    responses((status = 200, body = UserCredits), (status = 401, body = ErrorBody)),
    security(("HTTPBearer" = [])))]
pub async fn balance(
    State(state): State<Arc<AppState>>,
    CurrentUser(me): CurrentUser,
) -> ApiResult<Json<UserCredits>> {
    let balance = state.kiln.billing.balance(&me.user.user_id).await?;
    Ok(Json(UserCredits::new(me.user.user_id, balance)))
}

/// Create a Stripe Checkout Session for a deposit; pay at `checkout_url`. The balance is
/// credited when Stripe reports the payment (the webhook).
#[utoipa::path(post, path = "/billing/deposit", tag = "billing", operation_id = "deposit_money_billing_deposit_post",
    request_body = MoneyDepositRequest,
    responses((status = 200, body = MoneyDepositResponse), (status = 422, body = HTTPValidationError),
              (status = 503, body = ErrorBody)),
    security(("HTTPBearer" = [])))]
pub async fn deposit(
    State(state): State<Arc<AppState>>,
    CurrentUser(me): CurrentUser,
    ValidJson(req): ValidJson<MoneyDepositRequest>,
) -> ApiResult<Json<MoneyDepositResponse>> {
    if !req.currency.eq_ignore_ascii_case("usd") {
        return Err(ApiError::invalid(
            &["body", "currency"],
            "Input should be 'usd'",
            "literal_error",
        ));
    }
    let checkout = state
        .kiln
        .billing
        .deposit(&me.user.user_id, req.amount_cents)
        .await?;
    Ok(Json(MoneyDepositResponse {
        checkout_url: checkout.url,
        amount_cents: req.amount_cents,
        currency: "usd".into(),
        checkout_session_id: checkout.id,
    }))
}

/// Stripe's webhook. Authenticated by the `Stripe-Signature` header, not a bearer token;
/// a paid checkout is credited once however often Stripe delivers it.
#[utoipa::path(post, path = "/billing/webhook", tag = "billing", operation_id = "stripe_webhook_billing_webhook_post",
    responses((status = 200, body = Object, description = "received, and whether it credited"),
              (status = 400, body = ErrorBody), (status = 413, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn webhook(
    State(state): State<Arc<AppState>>,
    request: Request,
) -> ApiResult<Json<Value>> {
    let (parts, body) = request.into_parts();
    // Read raw: the signature is over the exact bytes Stripe sent.
    let body = axum::body::to_bytes(body, MAX_WEBHOOK_BYTES)
        .await
        .map_err(|_| {
            ApiError::PayloadTooLarge(format!(
                "a webhook body may hold at most {MAX_WEBHOOK_BYTES} bytes"
            ))
        })?;
    let signature = parts
        .headers
        .get("stripe-signature")
        .map(|v| {
            v.to_str().map_err(|_| ApiError::BadRequest {
                code: "malformed_signature",
                message: "the Stripe-Signature header is not valid text".into(),
            })
        })
        .transpose()?;
    let outcome = state
        .kiln
        .billing
        .webhook(&body, signature, Utc::now())
        .await?;
    Ok(Json(match outcome {
        WebhookOutcome::Credited {
            user_id,
            amount_cents,
        } => {
            json!({"received": true, "credited": true, "user_id": user_id, "amount_cents": amount_cents})
        }
        WebhookOutcome::AlreadyProcessed => {
            json!({"received": true, "credited": false, "duplicate": true})
        }
        WebhookOutcome::Ignored => json!({"received": true, "credited": false}),
    }))
}

/// The caller's ledger, newest first, with totals and a summary of what the filters select.
#[utoipa::path(get, path = "/billing/usage", tag = "billing", operation_id = "get_usage_history_billing_usage_get",
    params(UsageParams),
    responses((status = 200, body = UsageHistory), (status = 422, body = HTTPValidationError)),
    security(("HTTPBearer" = [])))]
pub async fn usage(
    State(state): State<Arc<AppState>>,
    CurrentUser(me): CurrentUser,
    RawQuery(query): RawQuery,
) -> ApiResult<Json<UsageHistory>> {
    let params = parse_usage_query(query.as_deref().unwrap_or_default())?;
    let user_id = me.user.user_id;
    let dated = params.start.is_some() || params.end.is_some();
    let query = TransactionQuery {
        user_id: user_id.clone(),
        kinds: params.kinds,
        from: params.start.map(|d| d.and_time(NaiveTime::MIN).and_utc()),
        until: params.end.and_then(|d| {
            d.and_hms_micro_opt(23, 59, 59, 999_999)
                .map(|t| t.and_utc())
        }),
        max_items: params
            .max_items
            .filter(|_| !dated)
            .map(|m| m.unsigned_abs()),
        limit: params.limit.unsigned_abs(),
        offset: (params.page.unsigned_abs() - 1).saturating_mul(params.limit.unsigned_abs()),
    };
    let billing = &state.kiln.billing;
    let balance = billing.balance(&user_id).await?;
    let page = billing.usage(&query).await?;
    let summary = summary(&page);
    let total_pages = page.total.div_ceil(params.limit.unsigned_abs());
    let pagination = json!({
        "page": params.page,
        "limit": params.limit,
        "total_items": page.total,
        "total_pages": total_pages,
        "has_next": params.page.unsigned_abs() < total_pages,
        "has_previous": params.page > 1,
    });
    Ok(Json(UsageHistory {
        current_balance_cents: balance.balance_cents,
        total_deposits_cents: balance.total_deposited_cents,
        total_usage_cents: balance.total_spent_cents,
        transactions: page
            .transactions
            .into_iter()
            .map(UsageTransaction::from)
            .collect(),
        summary,
        pagination,
    }))
}

fn summary(page: &TransactionPage) -> Value {
    let sum = |kinds: &[TransactionKind]| -> i64 {
        page.by_kind
            .iter()
            .filter(|k| kinds.contains(&k.kind))
            .map(|k| k.amount_cents)
            .sum()
    };
    let sessions = page
        .by_kind
        .iter()
        .find(|k| k.kind == TransactionKind::SessionUsage);
    let by_type: serde_json::Map<String, Value> = page
        .by_kind
        .iter()
        .map(|k| {
            (
                k.kind.as_str().to_string(),
                json!({"count": k.count, "amount_cents": k.amount_cents}),
            )
        })
        .collect();
    json!({
        "total_transactions": page.total,
        "deposits_cents": sum(&[TransactionKind::Deposit]),
        "usage_cents": -sum(&[TransactionKind::SessionUsage, TransactionKind::AgentJobUsage]),
        "refunds_cents": sum(&[TransactionKind::Refund, TransactionKind::AgentJobRefund]),
        "session_count": sessions.map_or(0, |k| k.count),
        "session_minutes": sessions.map_or(0.0, |k| k.minutes),
        "by_type": by_type,
    })
}

struct UsageQuery {
    page: i64,
    limit: i64,
    start: Option<NaiveDate>,
    end: Option<NaiveDate>,
    kinds: Vec<TransactionKind>,
    max_items: Option<i64>,
}

/// Reads the query by hand: `transaction_types` may repeat, which a struct cannot take.
/// Unknown parameters are ignored, as FastAPI does.
fn parse_usage_query(raw: &str) -> ApiResult<UsageQuery> {
    let mut q = UsageQuery {
        page: 1,
        limit: DEFAULT_LIMIT,
        start: None,
        end: None,
        kinds: Vec::new(),
        max_items: None,
    };
    let mut filters = 0;
    for (name, value) in form_urlencoded::parse(raw.as_bytes()) {
        let int = |v: &str| {
            v.trim().parse::<i64>().map_err(|_| {
                ApiError::invalid(
                    &["query", &name],
                    "Input should be a valid integer, unable to parse string as an integer",
                    "int_parsing",
                )
            })
        };
        let date = |v: &str| {
            NaiveDate::parse_from_str(v.trim(), "%Y-%m-%d").map_err(|_| {
                ApiError::invalid(
                    &["query", &name],
                    "Input should be a valid date in the format YYYY-MM-DD",
                    "date_from_datetime_parsing",
                )
            })
        };
        match name.as_ref() {
            "page" => {
                q.page = int(&value)?;
                check_range(
                    &["query", "page"],
                    q.page,
                    Some(1),
                    Some(i64::from(u32::MAX)),
                )?;
            }
            "limit" => {
                q.limit = int(&value)?;
                check_range(&["query", "limit"], q.limit, Some(1), Some(MAX_LIMIT))?;
            }
            "max_items" => {
                let max = int(&value)?;
                check_range(&["query", "max_items"], max, Some(1), Some(MAX_ITEMS))?;
                q.max_items = Some(max);
            }
            "start_date" => q.start = Some(date(&value)?),
            "end_date" => q.end = Some(date(&value)?),
            "transaction_types" => {
                for word in value.split(',').map(str::trim).filter(|w| !w.is_empty()) {
                    filters += 1;
                    if filters > MAX_TYPE_FILTERS {
                        return Err(ApiError::invalid(
                            &["query", "transaction_types"],
                            format!("List should have at most {MAX_TYPE_FILTERS} items"),
                            "too_long",
                        ));
                    }
                    for kind in kinds_named(word).ok_or_else(|| {
                        ApiError::invalid(
                            &["query", "transaction_types"],
                            format!(
                                "unknown transaction type {word:?}: expected deposit, usage, charge, \
                                 refund, session_usage, agent_job_usage or agent_job_refund"
                            ),
                            "enum",
                        )
                    })? {
                        if !q.kinds.contains(kind) {
                            q.kinds.push(*kind);
                        }
                    }
                }
            }
            _ => {}
        }
    }
    if let (Some(start), Some(end)) = (q.start, q.end) {
        if start > end {
            return Err(ApiError::invalid(
                &["query", "end_date"],
                "end_date must not be before start_date",
                "value_error",
            ));
        }
    }
    Ok(q)
}

/// The kinds a `transaction_types` word selects.
fn kinds_named(word: &str) -> Option<&'static [TransactionKind]> {
    use TransactionKind::*;
    Some(match word {
        "deposit" => &[Deposit],
        "usage" | "session_usage" => &[SessionUsage],
        "charge" => &[SessionUsage, AgentJobUsage],
        "refund" => &[Refund],
        "agent_job_usage" => &[AgentJobUsage],
        "agent_job_refund" => &[AgentJobRefund],
        _ => return None,
    })
}
