// A real browser for the dashboard tests: Debian's chromium, headless, driven through
// chromedriver (WebDriver, the fantoccini crate). Included inside `mod browser { … }` by
// `dashboard/tests/browser.rs` and `aggregator/tests/cluster_e2e.rs`. A file, not a crate:
// the app crates share it without depending on each other.
//
// Fails loudly when chromium or chromedriver is missing (scripts/test.sh installs them).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::elements::Element;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

/// The cargo target directory (`target/debug/deps/<test>` → `target`).
pub fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.ancestors().nth(3).unwrap().to_path_buf()
}

/// A browser session; chromedriver is stopped and the profile removed when dropped.
pub struct Browser {
    pub client: Client,
    driver: Child,
    profile: PathBuf,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
        // chromedriver's browser outlives it when the session was not closed (a test that
        // failed, or one that ended without closing): stop it by its profile directory.
        let _ = Command::new("pkill")
            .args(["-KILL", "-f", &format!("user-data-dir={}", self.profile.display())])
            .status();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

impl Browser {
    /// chromedriver on a free port and a headless chromium session through it, 1280×1000.
    pub async fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        // The profile lives under target/, so that scripts/test.sh can find and stop a
        // browser that a failed test left behind.
        let profile = target_dir()
            .join("browser-profiles")
            .join(format!("{}-{port}", std::process::id()));
        std::fs::create_dir_all(&profile).unwrap();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "chromedriver: {e}; install Debian's chromium and chromium-driver \
                     (scripts/test.sh does)"
                )
            });
        let caps: serde_json::Map<String, Value> = serde_json::from_value(json!({
            "browserName": "chrome",
            "goog:loggingPrefs": {"browser": "ALL"},
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--window-size=1280,1000", "--no-first-run",
                         "--disable-extensions", format!("--user-data-dir={}", profile.display())]
            }
        }))
        .unwrap();
        let start = Instant::now();
        loop {
            let connector = hyper_util::client::legacy::connect::HttpConnector::new();
            match ClientBuilder::new(connector)
                .capabilities(caps.clone())
                .connect(&format!("http://127.0.0.1:{port}"))
                .await
            {
                Ok(client) => return Self { client, driver, profile },
                Err(e) => {
                    assert!(start.elapsed() < Duration::from_secs(30), "no browser session: {e}");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    }
}

/// chromedriver's browser console log (`/session/{id}/se/log`).
#[derive(Debug)]
struct BrowserLog;

impl fantoccini::wd::WebDriverCompatibleCommand for BrowserLog {
    fn endpoint(
        &self,
        base: &url::Url,
        session: Option<&str>,
    ) -> Result<url::Url, url::ParseError> {
        base.join(&format!("session/{}/se/log", session.unwrap_or_default()))
    }
    fn method_and_body(&self, _: &url::Url) -> (http::Method, Option<String>) {
        (http::Method::POST, Some(json!({"type": "browser"}).to_string()))
    }
}

/// Fails on any console error or warning since the last call (CSP violations included).
pub async fn no_console_errors(c: &Client, page: &str) {
    let log = c.issue_cmd(BrowserLog).await.expect("read the browser log");
    let bad: Vec<&Value> = log
        .as_array()
        .map(|a| {
            a.iter().filter(|e| matches!(e["level"].as_str(), Some("SEVERE" | "WARNING"))).collect()
        })
        .unwrap_or_default();
    assert!(bad.is_empty(), "{page}: console errors: {bad:#?}");
}

/// Saves the page as `target/screenshots/NAME.png`.
pub async fn screenshot(c: &Client, name: &str) {
    let png = c.screenshot().await.expect("screenshot");
    let dir = target_dir().join("screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(format!("{name}.png")), png).unwrap();
}

/// The first element matching `css`, waiting up to 15 s for it.
pub async fn wait_css(c: &Client, css: &str) -> Element {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Ok(e) = c.find(Locator::Css(css)).await {
            return e;
        }
        assert!(Instant::now() < deadline, "no `{css}` on the page within 15 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The text of the first element matching `css` once it contains `needle`, up to 15 s.
///
/// Reads the text in the page's own script rather than through an element handle: after a
/// client-side navigation the previous view's element may still match for a moment and then
/// be replaced, and a handle to it goes stale.
pub async fn wait_text(c: &Client, css: &str, needle: &str) -> String {
    let script = format!(
        "const e = document.querySelector({css}); \
         return e && e.textContent.includes({needle}) ? e.textContent : null;",
        css = json!(css),
        needle = json!(needle)
    );
    let v = wait_js(c, &format!("`{css}` containing {needle:?}"), &script).await;
    v.as_str().unwrap_or_default().to_owned()
}

/// Runs `script` until it returns something other than null or false, up to 15 s.
pub async fn wait_js(c: &Client, what: &str, script: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let v = c.execute(script, vec![]).await.expect("run script");
        if !(v.is_null() || v == json!(false)) {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Signs in to the dashboard at `base` with `token` (dropping any earlier session's token)
/// and waits for the overview.
pub async fn sign_in(c: &Client, base: &str, token: &str) {
    c.goto(&format!("{base}/#/overview")).await.unwrap();
    c.execute("sessionStorage.clear()", vec![]).await.unwrap();
    c.refresh().await.unwrap();
    let input = wait_css(c, "#token").await;
    input.send_keys(token).await.unwrap();
    c.find(Locator::Css("#signin")).await.unwrap().click().await.unwrap();
    wait_css(c, "#card-open").await;
}
