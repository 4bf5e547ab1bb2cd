//! The usage page's deposit form, on a server without Stripe (the browser test's): the
//! amount is bounded by the server's minimum before anything is sent, and the server's
//! "not configured" answer (503) is shown in the page.
use serde_json::json;

use crate::browser::Browser;

/// On the usage page: a labelled amount field that refuses less than the minimum
/// ($5.00 by default), then a deposit whose 503 shows as the server's message.
pub async fn deposit_form(b: &Browser) {
    b.text_of("label[for=deposit-amount]", "Amount (USD)").await;
    let under = b
        .js(
            "const a = document.querySelector('#deposit-amount');
             a.value = '1'; const under = a.validity.rangeUnderflow;
             a.value = '1000000'; const over = a.validity.rangeOverflow;
             a.value = '12.50';
             return [a.min, under, over, a.checkValidity()];",
            json!([]),
        )
        .await;
    assert_eq!(under, json!(["5.00", true, true, true]), "{under}");
    b.click("#deposit-form button[type=submit]").await;
    b.text_of(
        "#deposit-error",
        "deposits are not configured on this server",
    )
    .await;
    b.screenshot("09a-usage-deposit").await;
}
