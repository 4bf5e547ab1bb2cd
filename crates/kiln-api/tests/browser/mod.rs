//! A headless Chromium driven over WebDriver (W3C, through `chromedriver`), for the
//! dashboard's browser test. A few WebDriver commands over `reqwest` rather than a
//! WebDriver crate: `fantoccini` 0.22 pulls in the `webdriver` crate with ICU
//! segmentation data, HTTP 0.2 and two `cookie` versions — minutes of build on CI's two
//! cores for the dozen commands used here.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{json, Value};

/// Debian's paths; `KILN_CHROMIUM` / `KILN_CHROMEDRIVER` name others.
fn chromium() -> String {
    std::env::var("KILN_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into())
}

fn chromedriver() -> String {
    std::env::var("KILN_CHROMEDRIVER").unwrap_or_else(|_| "/usr/bin/chromedriver".into())
}
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";
/// How long a wait for something on the page lasts before the test fails.
pub const WAIT: Duration = Duration::from_secs(20);

/// Whether the browser test can run here: Debian's `chromium` and `chromium-driver`.
/// With `KILN_REQUIRE_BROWSER=1` (CI) a missing browser fails the test instead.
pub fn available() -> bool {
    let missing = [chromium(), chromedriver()]
        .into_iter()
        .find(|p| !Path::new(p).exists());
    match missing {
        None => true,
        Some(path) if std::env::var("KILN_REQUIRE_BROWSER").as_deref() == Ok("1") => {
            panic!("KILN_REQUIRE_BROWSER=1 but {path} is missing (apt-get install chromium chromium-driver)")
        }
        Some(path) => {
            eprintln!("SKIPPED: {path} is missing (apt-get install chromium chromium-driver)");
            false
        }
    }
}

pub struct Browser {
    driver: Child,
    base: String,
    session: String,
    http: reqwest::Client,
    pub shots: PathBuf,
}

impl Browser {
    /// Starts chromedriver and a headless Chromium (1280×900) that resolves no host name
    /// (`--host-resolver-rules`) and makes no background requests of its own.
    pub async fn start(shots: PathBuf) -> Browser {
        std::fs::create_dir_all(&shots).expect("screenshot dir");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let driver = Command::new(chromedriver())
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let base = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        let deadline = Instant::now() + WAIT;
        loop {
            let ready = http.get(format!("{base}/status")).send().await;
            if let Ok(r) = ready {
                let status: Value = r.json().await.unwrap_or_default();
                if status["value"]["ready"] == true {
                    break;
                }
            }
            assert!(Instant::now() < deadline, "chromedriver did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:loggingPrefs": {"browser": "ALL"},
            "goog:chromeOptions": {"binary": chromium(), "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1280,900", "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--disable-default-apps",
                "--disable-features=Translate,OptimizationHints,MediaRouter",
                "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
            ]},
        }}});
        let mut browser = Browser {
            driver,
            base,
            session: String::new(),
            http,
            shots,
        };
        let created = browser.call("POST", "/session", Some(caps)).await;
        browser.session = created["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no WebDriver session: {created}"))
            .to_string();
        browser
    }

    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let url = if path == "/session" {
            format!("{}/session", self.base)
        } else {
            format!("{}/session/{}{path}", self.base, self.session)
        };
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut request = self.http.request(method, url);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let answer: Value = request
            .send()
            .await
            .expect("WebDriver request")
            .json()
            .await
            .expect("WebDriver JSON");
        answer["value"].clone()
    }

    pub async fn goto(&self, url: &str) {
        self.call("POST", "/url", Some(json!({"url": url}))).await;
    }

    pub async fn window_size(&self, width: u32, height: u32) {
        self.call(
            "POST",
            "/window/rect",
            Some(json!({"width": width, "height": height})),
        )
        .await;
    }

    /// Runs `script` (a function body; `arguments` are `args`) in the page.
    pub async fn js(&self, script: &str, args: Value) -> Value {
        self.call(
            "POST",
            "/execute/sync",
            Some(json!({"script": script, "args": args})),
        )
        .await
    }

    /// Waits until `script` returns something truthy; returns it.
    /// Calls the API from the page, as the page would: its cookies go along, and the
    /// `kiln_csrf` cookie's value in `X-CSRF-Token` when `csrf` (a synchronous
    /// XMLHttpRequest, so the call ends before this returns): (status, JSON body or null).
    pub async fn api(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
        csrf: bool,
    ) -> (u16, Value) {
        let script = "const [method, path, body, csrf] = arguments;
            const x = new XMLHttpRequest();
            x.open(method, path, false);
            if (body !== null) x.setRequestHeader('Content-Type', 'application/json');
            const c = document.cookie.split(';').map((s) => s.trim()).find((s) => s.startsWith('kiln_csrf='));
            if (csrf && c) x.setRequestHeader('X-CSRF-Token', c.slice('kiln_csrf='.length));
            x.send(body === null ? null : JSON.stringify(body));
            return [x.status, x.responseText];";
        let answer = self
            .js(script, serde_json::json!([method, path, body, csrf]))
            .await;
        let status = answer[0].as_u64().expect("status") as u16;
        let text = answer[1].as_str().unwrap_or_default();
        (status, serde_json::from_str(text).unwrap_or(Value::Null))
    }

    pub async fn until(&self, what: &str, script: &str, args: Value) -> Value {
        let deadline = Instant::now() + WAIT;
        loop {
            let v = self.js(script, args.clone()).await;
            let truthy = !(v.is_null()
                || v == false
                || v == ""
                || v.get("error").is_some() && v.get("message").is_some());
            if truthy {
                return v;
            }
            if Instant::now() > deadline {
                let page = self
                    .js(
                        "return document.body ? document.body.innerText : ''",
                        json!([]),
                    )
                    .await;
                panic!("timed out waiting for {what}; the page says:\n{page}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits for an element matching `css` whose text contains `text`; its text.
    pub async fn text_of(&self, css: &str, text: &str) -> String {
        let v = self
            .until(
                &format!("{css} containing {text:?}"),
                "const e = document.querySelector(arguments[0]);
                 return e && e.textContent.includes(arguments[1]) ? e.textContent : null;",
                json!([css, text]),
            )
            .await;
        v.as_str().unwrap_or_default().to_string()
    }

    async fn element(&self, css: &str) -> String {
        self.until(
            &format!("element {css}"),
            "return document.querySelector(arguments[0]);",
            json!([css]),
        )
        .await;
        let found = self
            .call(
                "POST",
                "/element",
                Some(json!({"using": "css selector", "value": css})),
            )
            .await;
        found[ELEMENT]
            .as_str()
            .unwrap_or_else(|| panic!("no element {css}: {found}"))
            .to_string()
    }

    /// Clicks the element matching `css` (as a user would: WebDriver's click).
    pub async fn click(&self, css: &str) {
        let id = self.element(css).await;
        let answer = self
            .call("POST", &format!("/element/{id}/click"), Some(json!({})))
            .await;
        assert!(answer.is_null(), "click on {css}: {answer}");
    }

    /// Types `text` into the element matching `css`, after clearing it.
    pub async fn type_into(&self, css: &str, text: &str) {
        let id = self.element(css).await;
        self.call("POST", &format!("/element/{id}/clear"), Some(json!({})))
            .await;
        self.call(
            "POST",
            &format!("/element/{id}/value"),
            Some(json!({"text": text})),
        )
        .await;
    }

    /// Saves a PNG of the viewport as `<shots>/<name>.png`.
    pub async fn screenshot(&self, name: &str) {
        let data = self.call("GET", "/screenshot", None).await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(data.as_str().expect("screenshot data"))
            .expect("base64 screenshot");
        std::fs::write(self.shots.join(format!("{name}.png")), png).expect("write screenshot");
    }

    /// The browser's console messages since the last call (chromedriver's log endpoint).
    pub async fn console(&self) -> Vec<Value> {
        let v = self
            .call("POST", "/se/log", Some(json!({"type": "browser"})))
            .await;
        v.as_array().cloned().unwrap_or_default()
    }

    /// Every URL this document loaded (Resource Timing), and its own.
    pub async fn requested_urls(&self) -> Vec<String> {
        let v = self
            .js(
                "return [location.href].concat(performance.getEntriesByType('resource').map(e => e.name));",
                json!([]),
            )
            .await;
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|u| u.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Ends Chromium through chromedriver's own exit, then the driver.
        let _ = std::process::Command::new("curl")
            .args(["-s", "-X", "DELETE"])
            .arg(format!("{}/session/{}", self.base, self.session))
            .stdout(Stdio::null())
            .status();
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
