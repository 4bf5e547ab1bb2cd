//! MFA recovery: a mailed link that works only after its cooldown, then removes every
//! second factor and ends every sign-in; the owner's sign-in with the second factor
//! meanwhile cancels it; the request never says whether the address has an account.
use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};

use super::common::assert_error;
use super::common::TestServer;
use super::{access, call, challenge, code_at, login, second_step, signup, start};

async fn enrol_totp(s: &TestServer, token: &str) -> String {
    let (status, begun) = call(
        s,
        Some(token),
        Method::POST,
        "/auth/mfa/totp/enroll/begin",
        None,
    )
    .await;
    assert_eq!(status, 200, "{begun}");
    let uri = begun["otpauth_uri"].as_str().expect("uri").to_string();
    let finish = json!({"factor_id": begun["factor_id"], "code": code_at(&uri, 0)});
    let (status, done) = call(
        s,
        Some(token),
        Method::POST,
        "/auth/mfa/totp/enroll/finish",
        Some(finish),
    )
    .await;
    assert_eq!(status, 200, "{done}");
    uri
}

async fn request(s: &TestServer, email: &str) -> Value {
    let (status, body) = call(
        s,
        None,
        Method::POST,
        "/auth/recovery/request",
        Some(json!({"email": email})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    body
}

async fn complete(s: &TestServer, token: &str) -> (u16, Value) {
    call(
        s,
        None,
        Method::POST,
        "/auth/recovery/complete",
        Some(json!({"token": token})),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mfa_recovery_waits_out_its_cooldown_and_a_sign_in_cancels_it() {
    let cooldown = Duration::from_secs(2);
    let (s, smtp) = start(|c| c.accounts.mfa_recovery_cooldown_secs = 2).await;
    let (email, password) = ("ivy@example.com", "ivy's password!");
    let a = access(&signup(&s, email, password).await);
    let uri = enrol_totp(&s, &a).await;

    // The same answer for an unknown address, and for an account without a factor.
    let unknown = request(&s, "nobody@example.com").await;
    signup(&s, "plain@example.com", "plain password!").await;
    let plain = request(&s, "plain@example.com").await;
    let asked = request(&s, email).await;
    assert_eq!(unknown, asked);
    assert_eq!(plain, asked);
    // Mail #1 is the sign-up's verification; #2 the recovery link.
    let first = smtp.token(email, 2).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        smtp.to("plain@example.com").len(),
        1,
        "only its verification mail"
    );
    assert!(smtp.to("nobody@example.com").is_empty());

    // Before the cooldown the link is refused, saying when it will work.
    let (status, body) = complete(&s, &first).await;
    assert_error(status, &body, 409, "recovery_cooldown");

    // The owner signs in with the second factor meanwhile: that cancels it.
    let pending = challenge(&s, email, password).await;
    let (status, body) = second_step(&s, &pending, &code_at(&uri, 30)).await;
    assert_eq!(status, 200, "{body}");
    tokio::time::sleep(cooldown + Duration::from_millis(200)).await;
    let (status, body) = complete(&s, &first).await;
    assert_error(status, &body, 400, "invalid_token");

    // Asked again and left alone: after the cooldown it removes the factor and ends every
    // sign-in, once.
    request(&s, email).await;
    let second = smtp.token(email, 3).await;
    tokio::time::sleep(cooldown + Duration::from_millis(200)).await;
    let (status, done) = complete(&s, &second).await;
    assert_eq!(status, 200, "{done}");
    assert_eq!(done["factors_removed"], 1, "{done}");
    assert!(
        done["sessions_ended"].as_u64().is_some_and(|n| n >= 2),
        "{done}"
    );
    let (status, body) = complete(&s, &second).await;
    assert_error(status, &body, 400, "invalid_token");
    let (status, _) = call(&s, Some(&a), Method::GET, "/auth/me", None).await;
    assert_eq!(status, 401, "the sign-ins ended");
    // The password alone signs in now; the person enrols a factor again.
    let (status, body) = login(&s, email, password).await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body["access_token"].as_str().is_some_and(|t| !t.is_empty()),
        "{body}"
    );
    let (status, factors) = call(
        &s,
        Some(&access(&body)),
        Method::GET,
        "/auth/mfa/factors",
        None,
    )
    .await;
    assert_eq!(status, 200, "{factors}");
    assert_eq!(
        factors["factors"].as_array().map(Vec::len),
        Some(0),
        "{factors}"
    );
}
