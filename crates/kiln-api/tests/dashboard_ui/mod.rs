//! The dashboard's usage charts, rendered problem statements and two-step sign-in, each
//! checked by one function that `dashboard_in_a_real_browser` calls from its flow.

pub mod deposit;
pub mod regrade;

use kiln_services::datasets::ImportRequest;
use reqwest::Method;
use serde_json::{json, Value};

use crate::browser::Browser;
use crate::common::TestServer;

/// On a live session's page (a usage sample a second): a chart per series, each an SVG
/// with a `<title>` it is labelled by, data points that grow as the page refreshes, and
/// no overflow on a phone.
pub async fn metrics_charts(b: &Browser) {
    let count = "const e = document.querySelector(arguments[0]);
                 return e ? Number(e.getAttribute('data-points')) : 0;";
    b.until(
        "a CPU point (two samples) and a memory point",
        "const n = (id) => { const e = document.querySelector(id); return e ? Number(e.getAttribute('data-points')) : 0; };
         return n('#metric-cpu') >= 1 && n('#metric-memory') >= 1 && n('#metric-pids') >= 1
           && document.querySelector('#metric-cpu polyline[points]') ? true : null;",
        json!([]),
    )
    .await;
    let title = b
        .js(
            "const svg = document.querySelector('#metric-cpu');
             const t = svg.querySelector('title');
             return svg.getAttribute('role') + '|' + (svg.getAttribute('aria-labelledby') === t.id) + '|' + t.textContent;",
            json!([]),
        )
        .await;
    let title = title.as_str().unwrap_or_default();
    assert!(
        title.starts_with("img|true|CPU use (% of a core): now "),
        "{title}"
    );
    let before = b.js(count, json!(["#metric-memory"])).await;
    let before = before.as_u64().unwrap_or_default();
    b.until(
        "the charts to refresh with newer samples",
        "const e = document.querySelector('#metric-memory');
         return e && Number(e.getAttribute('data-points')) > arguments[0] ? true : null;",
        json!([before]),
    )
    .await;
    b.js(
        "document.querySelector('#metrics-charts').scrollIntoView(); return null",
        json!([]),
    )
    .await;
    b.screenshot("05a-session-charts").await;
    b.window_size(390, 844).await;
    let fits = b
        .js(
            "const r = document.querySelector('#metric-disk').getBoundingClientRect();
             return r.width > 200 && r.right <= document.documentElement.clientWidth;",
            json!([]),
        )
        .await;
    assert_eq!(fits, true, "the disk chart does not fit a phone's width");
    let no_sideways = b
        .js(
            "const d = document.documentElement; return d.scrollWidth <= d.clientWidth;",
            json!([]),
        )
        .await;
    assert_eq!(
        no_sideways, true,
        "the session page scrolls sideways on a phone (a long id or command?)"
    );
    b.js(
        "document.querySelector('#metrics-charts').scrollIntoView(); return null",
        json!([]),
    )
    .await;
    b.screenshot("05b-session-charts-phone").await;
    b.window_size(1280, 900).await;
}

/// Markup a problem statement may hold: rendered headings, code and links; HTML and
/// `javascript:` links left as inert text.
const STATEMENT: &str = "Parser drops **bold** text

# Steps to reproduce

Run `kiln eval` on:

```python
print(\"<b>hi</b>\")
```

- first item
- see [the docs](https://example.com/docs)

> quoted _text_

<script>window.__pwned = 1</script>
<img src=x onerror=\"window.__pwned = 2\">
[click me](javascript:window.__pwned=3)
";

/// A dataset of its own with that statement and a markdown description: the sample page
/// renders them as elements, never as HTML.
pub async fn markdown_statement(b: &Browser, root: &str, s: &TestServer) {
    let record = json!({"instance_id": "md-1", "repo": "test/markdown",
        "base_commit": "0000000000000000000000000000000000000000",
        "problem_statement": STATEMENT, "FAIL_TO_PASS": ["t1"], "PASS_TO_PASS": []});
    s.kiln
        .datasets
        .import(ImportRequest {
            dataset: "markdown",
            description: Some("Samples with **markup** in their statements.".into()),
            version_description: None,
            text: &record.to_string(),
            repos_dir: None,
        })
        .await
        .expect("import the markdown sample");
    b.goto(&format!("{root}/#/samples?dataset=markdown")).await;
    b.text_of("#dataset-description strong", "markup").await;
    b.goto(&format!("{root}/#/sample/markdown/md-1")).await;
    b.text_of("#problem h3", "Steps to reproduce").await;
    let shown = b
        .js(
            "const p = document.querySelector('#problem');
             const link = p.querySelector('a');
             return {
               strong: p.querySelector('p strong').textContent,
               code: p.querySelector('pre code').textContent,
               lang: p.querySelector('pre code').getAttribute('data-lang'),
               inline: p.querySelector('p code').textContent,
               items: p.querySelectorAll('ul > li').length,
               quote: p.querySelector('blockquote em').textContent,
               href: link.getAttribute('href'), rel: link.getAttribute('rel'), links: p.querySelectorAll('a').length,
               scripts: document.querySelectorAll('#main script, #main img, [onerror]').length,
               jsLinks: document.querySelectorAll('a[href^=\"javascript\" i]').length,
               pwned: window.__pwned === undefined ? null : window.__pwned,
               text: p.textContent,
             };",
            json!([]),
        )
        .await;
    let field = |k: &str| shown[k].clone();
    assert_eq!(field("strong"), "bold", "{shown}");
    assert_eq!(field("code"), "print(\"<b>hi</b>\")", "{shown}");
    assert_eq!(field("lang"), "python", "{shown}");
    assert_eq!(field("inline"), "kiln eval", "{shown}");
    assert_eq!(field("items"), 2, "{shown}");
    assert_eq!(field("quote"), "text", "{shown}");
    assert_eq!(field("href"), "https://example.com/docs", "{shown}");
    assert_eq!(field("rel"), "noopener noreferrer", "{shown}");
    assert_eq!(field("links"), 1, "only the https link is a link: {shown}");
    assert_eq!(field("scripts"), 0, "{shown}");
    assert_eq!(field("jsLinks"), 0, "{shown}");
    assert_eq!(field("pwned"), Value::Null, "{shown}");
    let text = shown["text"].as_str().unwrap_or_default();
    for inert in [
        "<script>window.__pwned = 1</script>",
        "onerror=",
        "[click me](javascript:",
    ] {
        assert!(text.contains(inert), "{inert:?} not shown as text: {text}");
    }
    b.screenshot("04a-sample-markdown").await;
}

fn totp_code(uri: &str, offset_secs: i64) -> String {
    let totp = totp_rs::TOTP::from_url(uri).expect("otpauth uri");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    totp.generate(now.saturating_add_signed(offset_secs))
}

/// An account with TOTP enrolled (through the API, codes computed from its URI) signs
/// in through the form: password, then a wrong code (an error in the form), then a
/// right one, and reaches the sessions page.
pub async fn mfa_sign_in(b: &Browser, root: &str, s: &TestServer) {
    const EMAIL: &str = "mfa@example.com";
    const PASSWORD: &str = "two factors are better";
    let (status, signed) = s
        .v1_call(
            None,
            None,
            Method::POST,
            "/auth/signup",
            Some(json!({"email": EMAIL, "password": PASSWORD})),
        )
        .await;
    assert_eq!(status, 201, "{signed}");
    let access = signed["access_token"].as_str().expect("access token");
    let (status, begun) = s
        .v1_call(
            Some(access),
            None,
            Method::POST,
            "/auth/mfa/totp/enroll/begin",
            None,
        )
        .await;
    assert_eq!(status, 200, "{begun}");
    let uri = begun["otpauth_uri"].as_str().expect("otpauth uri");
    let finish = json!({"factor_id": begun["factor_id"], "code": totp_code(uri, 0)});
    let (status, done) = s
        .v1_call(
            Some(access),
            None,
            Method::POST,
            "/auth/mfa/totp/enroll/finish",
            Some(finish),
        )
        .await;
    assert_eq!(status, 200, "{done}");

    b.goto(&format!("{root}/#/sessions")).await;
    b.click("#signout").await;
    b.type_into("#email", EMAIL).await;
    b.type_into("#password", &format!("{PASSWORD}\u{E007}"))
        .await;
    b.until(
        "the code field, focused",
        "return document.activeElement && document.activeElement.id === 'mfa-code' ? true : null",
        json!([]),
    )
    .await;
    b.text_of("label[for=mfa-code]", "Code").await;
    let nav = b
        .js(
            "return getComputedStyle(document.getElementById('nav')).display",
            json!([]),
        )
        .await;
    assert_eq!(nav, "none", "the menu shows before the sign-in is done");
    b.screenshot("14-sign-in-code").await;
    // A code of none of the steps the server accepts (the enrolment's step is spent).
    let valid: Vec<String> = [-30, 0, 30, 60]
        .iter()
        .map(|o| totp_code(uri, *o))
        .collect();
    let wrong = ["000000", "111111", "222222"]
        .into_iter()
        .find(|c| !valid.iter().any(|v| v == c))
        .expect("a wrong code");
    b.type_into("#mfa-code", &format!("{wrong}\u{E007}")).await;
    b.text_of("#mfa-error", "wrong").await;
    b.screenshot("15-sign-in-wrong-code").await;
    b.type_into("#mfa-code", &format!("{}\u{E007}", totp_code(uri, 30)))
        .await;
    b.text_of("#live-count", "live").await;
    let (status, me) = b.api("GET", "/v1/auth/me", None, false).await;
    assert_eq!((status, &me["email"]), (200, &json!(EMAIL)), "{me}");
}

/// A password sign-in is kept in cookies the page's scripts cannot read: no token in
/// localStorage, no session cookie in `document.cookie`; the page's calls work, and one
/// that changes something without the CSRF token is refused.
pub async fn cookie_sign_in(b: &Browser, email: &str) {
    let stored = b
        .js("return localStorage.getItem('kiln.token')", json!([]))
        .await;
    assert!(stored.is_null(), "a token in localStorage: {stored}");
    let cookies = b.js("return document.cookie", json!([])).await;
    let cookies = cookies.as_str().unwrap_or_default();
    assert!(cookies.contains("kiln_csrf="), "{cookies}");
    assert!(
        !cookies.contains("kiln_session") && !cookies.contains("kiln_refresh"),
        "the sign-in's tokens are readable by scripts: {cookies}"
    );
    let (status, me) = b.api("GET", "/v1/auth/me", None, false).await;
    assert_eq!((status, &me["email"]), (200, &json!(email)), "{me}");
    let rename = json!({"name": "Ada L."});
    let (status, refused) = b
        .api("PATCH", "/v1/auth/me", Some(rename.clone()), false)
        .await;
    assert_eq!(
        (status, &refused["detail"]["code"]),
        (403, &json!("csrf_failed")),
        "{refused}"
    );
    // The browser logs that refusal (as it logs any 4xx): taken off the log here, where
    // it was asked for, so the page's no-console-error check still means what it says.
    let logged = b.console().await;
    assert!(
        logged
            .iter()
            .filter(|e| e["level"] == "SEVERE")
            .all(|e| e["message"]
                .as_str()
                .is_some_and(|m| m.contains("status of 403"))),
        "{logged:?}"
    );
    let (status, renamed) = b.api("PATCH", "/v1/auth/me", Some(rename), true).await;
    assert_eq!(
        (status, &renamed["name"]),
        (200, &json!("Ada L.")),
        "{renamed}"
    );
}
