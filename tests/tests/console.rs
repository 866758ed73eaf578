//! The web console in a real browser: headless Chromium driven through chromedriver
//! (WebDriver, with the fantoccini client), against the real server on port 0.
//!
//! One browser walks through the scenarios in order (each is a step named in its failure):
//! a release manager requests an advance; an approver finds it in the inbox, approves it
//! with a comment and sees it in the decision log; a person who requested an advance is
//! refused their own approval with R2 in words; an auditor filters the audit trail and
//! verifies the chain; a rolled-back rollout's post-mortem replays an earlier stage; a
//! hostile title renders as text; an expired session returns to sign-in. On every page the
//! test reads what a listener installed before any page script recorded: console errors,
//! uncaught errors and Content-Security-Policy violations, and there must be none.
//! Screenshots of each page at 1280x800 and 390x844 go to `target/console-screenshots/`.
//!
//! A second test signs in through the real `oidc-provider` (tests/js/oidc/provider.mjs):
//! a token from another issuer is refused, then the code flow with PKCE runs in the browser
//! and the server, started with `--oidc-issuer`, accepts the provider's ID token. Then the
//! provider rotates its signing key (it starts again on the same issuer with only a new key)
//! while the server keeps running: the next sign-in's token, signed with the new key, is
//! accepted, while tokens of the retired key and of a key never published are refused.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::wd::WebDriverCompatibleCommand;
use fantoccini::{Client, ClientBuilder, Locator};
use reqwest::Method;
use rollgate_e2e::flow::{
    advance_example, ok, readings, running_example, Person, ALICE, BOB, BOT, GINA,
};
use rollgate_e2e::{example_create_body, json, Backend, TestApp};
use serde_json::Value;

const RITA: Person = Person {
    sub: "rita",
    roles: &["release_manager", "approver"],
    teams: &["web"],
};
const AUDREY_ALL: Person = Person {
    sub: "audrey",
    roles: &["auditor"],
    teams: &["*"],
};
const XSS_TITLE: &str = "<img src=x onerror=alert(1)>";

/// Installed by the DevTools protocol before any script of each new document: records
/// console errors, uncaught errors, rejected promises and CSP violations.
const RECORDER: &str = r#"
window.__rg = { errors: [], csp: [] };
document.addEventListener('securitypolicyviolation', (e) => {
  window.__rg.csp.push(`${e.violatedDirective} blocked ${e.blockedURI} at ${e.sourceFile}:${e.lineNumber}`);
});
window.addEventListener('error', (e) => { window.__rg.errors.push(`error: ${e.message} at ${e.filename}:${e.lineno}`); });
window.addEventListener('unhandledrejection', (e) => { window.__rg.errors.push(`unhandled rejection: ${e.reason}`); });
const original = console.error.bind(console);
console.error = (...args) => { window.__rg.errors.push(`console.error: ${args.join(' ')}`); original(...args); };
window.__rg.refused = [];
window.__rg.tokenAnswers = [];
window.__rg.apiBearers = [];
const realFetch = window.fetch.bind(window);
window.fetch = (input, init) => {
  const url = String(input instanceof Request ? input.url : input);
  const auth = init && init.headers && init.headers.Authorization;
  if (auth && url.includes('/v1/')) window.__rg.apiBearers.push(auth);
  return realFetch(input, init).then((r) => {
    if (r.status === 401) r.clone().text().then((t) => window.__rg.refused.push(`${r.status} ${r.url} ${t}`), () => {});
    if (url.endsWith('/token')) r.clone().json().then((j) => window.__rg.tokenAnswers.push({ status: r.status, body: j }), () => {});
    return r;
  });
};
window.alert = (m) => { window.__rg.errors.push(`alert(${m}) was called`); };
"#;

/// `POST /session/{id}/goog/cdp/execute`: a DevTools command through chromedriver.
#[derive(Debug)]
struct Cdp {
    cmd: &'static str,
    params: Value,
}

impl WebDriverCompatibleCommand for Cdp {
    fn endpoint(
        &self,
        base_url: &url::Url,
        session_id: Option<&str>,
    ) -> Result<url::Url, url::ParseError> {
        base_url.join(&format!(
            "session/{}/goog/cdp/execute",
            session_id.unwrap_or_default()
        ))
    }

    fn method_and_body(&self, _: &url::Url) -> (http::Method, Option<String>) {
        (
            http::Method::POST,
            Some(json!({"cmd": self.cmd, "params": self.params}).to_string()),
        )
    }
}

/// A program from its variable, else the usual Debian path; otherwise one clear line.
fn tool(var: &str, fallback: &str, package: &str) -> PathBuf {
    if let Ok(p) = std::env::var(var) {
        if Path::new(&p).is_file() {
            return PathBuf::from(p);
        }
        panic!("{var}={p} is not a file; `cargo xtask test` installs {package}");
    }
    if Path::new(fallback).is_file() {
        return PathBuf::from(fallback);
    }
    panic!("{package} is missing: set {var} or install the Debian package {package} (`cargo xtask test` installs it)");
}

/// chromedriver on a free loopback port, stopped when dropped.
struct Driver {
    child: Child,
    url: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn start_driver() -> Driver {
    let bin = tool(
        "ROLLGATE_CHROMEDRIVER",
        "/usr/bin/chromedriver",
        "chromium-driver",
    );
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(bin)
        .arg(format!("--port={port}"))
        .arg("--allowed-ips=127.0.0.1")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver starts");
    let driver = Driver {
        child,
        url: format!("http://127.0.0.1:{port}"),
    };
    let http = reqwest::Client::new();
    for _ in 0..100 {
        if let Ok(r) = http.get(format!("{}/status", driver.url)).send().await {
            if r.status().is_success() {
                return driver;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("chromedriver did not answer on {} within 10 s", driver.url);
}

async fn start_browser(driver: &Driver, profile: &Path) -> Client {
    let chromium = tool("ROLLGATE_CHROMIUM", "/usr/bin/chromium", "chromium");
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": chromium,
            "args": [
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage", "--hide-scrollbars",
                format!("--user-data-dir={}", profile.display()),
                "--window-size=1280,800",
            ],
        }),
    );
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    let client = ClientBuilder::new(connector)
        .capabilities(caps)
        .connect(&driver.url)
        .await
        .expect("a Chromium session");
    client
        .issue_cmd(Cdp {
            cmd: "Page.addScriptToEvaluateOnNewDocument",
            params: json!({ "source": RECORDER }),
        })
        .await
        .expect("the recorder is installed");
    client
}

/// The browser and the server under test.
struct Ui {
    c: Client,
    base: String,
    shots: PathBuf,
}

impl Ui {
    /// Waits (bounded) for an element matching `css`.
    async fn el(&self, css: &str) -> fantoccini::elements::Element {
        self.c
            .wait()
            .at_most(Duration::from_secs(10))
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no element {css} within 10 s: {e}"))
    }

    /// Waits (bounded) until the text of `css` contains `needle`; answers the text.
    async fn text_contains(&self, css: &str, needle: &str) -> String {
        let mut last = String::new();
        for _ in 0..100 {
            if let Ok(e) = self.c.find(Locator::Css(css)).await {
                if let Ok(t) = e.text().await {
                    if t.contains(needle) {
                        return t;
                    }
                    last = t;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("{css} never contained {needle:?} within 10 s; last text: {last:?}");
    }

    async fn js(&self, script: &str) -> Value {
        self.c
            .execute(script, vec![])
            .await
            .unwrap_or_else(|e| panic!("script failed: {e}: {script}"))
    }

    async fn go(&self, hash: &str) {
        self.c
            .goto(&format!("{}/console/{hash}", self.base))
            .await
            .expect("navigation");
    }

    /// Signs out (if signed in) and signs in by pasting `token`.
    async fn sign_in(&self, token: &str) {
        self.go("#/signin").await;
        if let Ok(b) = self
            .c
            .find(Locator::Css("#who:not([hidden]) #sign-out"))
            .await
        {
            b.click().await.unwrap();
            self.text_contains("main", "You are signed out").await;
        }
        let area = self.el("#token-input").await;
        area.send_keys(token).await.unwrap();
        self.el("#token-submit").await.click().await.unwrap();
        self.el("#nav:not([hidden])").await;
    }

    /// No console error, uncaught error or CSP violation so far on this document.
    async fn clean(&self, page: &str) {
        let r = self.js("return window.__rg || null").await;
        assert!(
            r.is_object(),
            "{page}: the recorder is missing, so nothing was checked"
        );
        assert_eq!(r["csp"], json!([]), "{page}: CSP violations");
        assert_eq!(r["errors"], json!([]), "{page}: console errors");
    }

    /// Screenshots at both viewports (the page is left at the wide one), without a live
    /// notice left from an earlier step (they clear themselves after a few seconds).
    async fn shoot(&self, name: &str) {
        self.js("document.getElementById('live').textContent = ''; return null")
            .await;
        for (w, h, tag) in [(390u32, 844u32, "narrow"), (1280, 800, "wide")] {
            self.c.set_window_size(w, h).await.unwrap();
            tokio::time::sleep(Duration::from_millis(250)).await;
            let png = self.c.screenshot().await.expect("screenshot");
            std::fs::write(self.shots.join(format!("{name}-{tag}.png")), png).unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_in_a_real_browser() {
    let app = TestApp::spawn(Backend::Sqlite).await;

    // Every clock move first: tokens live an hour from the clock's now.
    // A rollout that reached stage 1, then breached a rollback criterion and rolled back.
    // Argo Rollouts is bound to it and asks the gate before the advance and after the
    // rollback (gate answers are drawn on the post-mortem's timeline).
    let rolled_back = running_example(&app).await;
    let argo = ok(
        &app,
        Method::POST,
        "/v1/bindings",
        GINA,
        json!({"rollout_id": rolled_back, "target": {"kind": "argo_rollout", "namespace": "shop", "name": "checkout"}}),
    )
    .await;
    let ask_argo = || {
        let path = format!(
            "/v1/integrations/argo/{}/gate?stage=1",
            argo.body["binding_id"].as_str().unwrap()
        );
        let secret = argo.body["secret"].as_str().unwrap().to_owned();
        let app = &app;
        async move {
            let r = app.get(&path, &secret).await;
            r.assert_status(200);
            r.body["verdict"].as_str().unwrap().to_owned()
        }
    };
    assert_eq!(ask_argo().await, "wait");
    advance_example(&app, &rolled_back, 0).await;
    ok(
        &app,
        Method::POST,
        &format!("/v1/rollouts/{rolled_back}/metrics"),
        BOT,
        readings(&app, &[("error_rate", 0.08, 5_000)]),
    )
    .await;
    let after_rollback = ask_argo().await;
    assert_ne!(
        after_rollback, "wait",
        "the answer after the rollback changed"
    );
    // The rollout the release manager works on in the browser, and Rita's own request.
    let main = running_example(&app).await;
    let own = running_example(&app).await;
    let live = running_example(&app).await;
    ok(
        &app,
        Method::POST,
        &format!("/v1/rollouts/{own}/advance-requests"),
        RITA,
        json!({}),
    )
    .await;
    // A title written to attack the page.
    let mut hostile = example_create_body();
    hostile["title"] = json!(XSS_TITLE);
    hostile["feature_key"] = json!("hostile-title");
    let hostile = rollgate_e2e::flow::create(&app, hostile).await;

    let base = app.address.clone();
    let driver = start_driver().await;
    let profile = tempfile::tempdir().unwrap();
    let shots = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/console-screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    let ui = Ui {
        c: start_browser(&driver, profile.path()).await,
        base,
        shots,
    };

    let scenarios = std::panic::AssertUnwindSafe(async {
        // The sign-in page, and the security headers the browser sees.
        ui.go("").await;
        ui.el("#token-input").await;
        ui.text_contains("#token-form", "rollgate token").await;
        ui.clean("sign-in").await;
        ui.shoot("signin").await;

        // 1. The release manager requests the advance of `main` from its page.
        eprintln!("step 1");
        ui.sign_in(&ALICE.token(&app)).await;
        ui.go(&format!("#/rollouts/{main}")).await;
        ui.text_contains("#rollout-title", "One-click checkout")
            .await;
        ui.text_contains(".pipeline [aria-current=step]", "internal")
            .await;
        ui.el("form.action button.request-advance")
            .await
            .click()
            .await
            .unwrap();
        ui.text_contains("form.action .message", "Advance requested")
            .await;
        ui.text_contains(".open-request", "Requested by alice")
            .await;
        ui.clean("rollout (release manager)").await;
        ui.shoot("rollout").await;

        // 2. The approver finds it in the inbox, approves with a comment, sees the decision.
        eprintln!("step 2");
        ui.sign_in(&BOB.token(&app)).await;
        ui.go("#/inbox").await;
        let card = format!(".inbox-item[data-request] a[href='#/rollouts/{main}']");
        ui.el(&card).await;
        let card_css = format!("#inbox-list article:has(a[href='#/rollouts/{main}'])");
        ui.text_contains(&card_css, "Requested by").await;
        ui.text_contains(&card_css, "alice").await;
        ui.text_contains(&card_css, "0 of 2 approver").await;
        // Soak by the server's clock (the test's clock, months behind this browser's): the
        // stage was entered just now for the server, with a day of minimum soak.
        ui.text_contains(&format!("{card_css} .soak"), "1 d of soak remaining")
            .await;
        ui.shoot("inbox").await;
        // A request made elsewhere appears without a reload (the event stream).
        let marker = ui.js("window.__same_document = true; return null").await;
        assert_eq!(marker, Value::Null);
        ok(
            &app,
            Method::POST,
            &format!("/v1/rollouts/{live}/advance-requests"),
            ALICE,
            json!({}),
        )
        .await;
        ui.el(&format!("#inbox-list a[href='#/rollouts/{live}']"))
            .await;
        assert_eq!(
            ui.js("return window.__same_document === true").await,
            json!(true),
            "the page was reloaded"
        );
        // Approving without a comment is refused by the page.
        ui.el(&format!("{card_css} button.approve"))
            .await
            .click()
            .await
            .unwrap();
        ui.text_contains(&format!("{card_css} .message"), "comment is required")
            .await;
        ui.el(&format!("{card_css} textarea"))
            .await
            .send_keys("metrics look healthy, go")
            .await
            .unwrap();
        ui.el(&format!("{card_css} button.approve"))
            .await
            .click()
            .await
            .unwrap();
        ui.text_contains(&format!("{card_css} .message"), "Approved")
            .await;
        ui.clean("inbox").await;
        ui.go("#/audit").await;
        let row = ui.text_contains("#decisions-table", "bob").await;
        assert!(row.contains("approval"), "decision log: {row}");
        ui.clean("decision log (approver)").await;

        // 3. Approving one's own request: the R2 refusal in words.
        eprintln!("step 3");
        ui.sign_in(&RITA.token(&app)).await;
        ui.go(&format!("#/rollouts/{own}")).await;
        ui.el(".open-request textarea")
            .await
            .send_keys("my own")
            .await
            .unwrap();
        ui.el(".open-request button.approve")
            .await
            .click()
            .await
            .unwrap();
        ui.text_contains(
            ".open-request .message.error",
            "R2: you cannot approve your own request",
        )
        .await;
        ui.clean("rollout (self-approval)").await;

        // 4. The auditor filters the audit trail and verifies the chain.
        eprintln!("step 4");
        ui.sign_in(&AUDREY_ALL.token(&app)).await;
        ui.go("#/audit").await;
        ui.el("#a-actor").await.send_keys("bob").await.unwrap();
        ui.el("#a-apply").await.click().await.unwrap();
        ui.text_contains("#audit-table", "AdvanceApproved").await;
        let actors = ui
            .js("return [...document.querySelectorAll('#audit-table tbody td.actor')].map(e => e.textContent)")
            .await;
        let actors = actors.as_array().unwrap();
        assert!(!actors.is_empty());
        assert!(
            actors.iter().all(|a| a == "bob"),
            "filtered by actor bob: {actors:?}"
        );
        ui.el("#verify-chain").await.click().await.unwrap();
        ui.text_contains("#audit-result", "Chain verified through position")
            .await;
        // The export is fetched with the token and saved from a Blob.
        ui.el("#export-csv").await.click().await.unwrap();
        ui.text_contains("#audit-result", "as CSV").await;
        ui.clean("audit").await;
        ui.shoot("audit").await;

        // 5. The post-mortem of the rolled-back rollout, replayed before the rollback.
        eprintln!("step 5");
        ui.go(&format!("#/postmortem/{rolled_back}")).await;
        // The breach on the guardrail lane, said in words, not only in red.
        let breach = ui
            .el("#timeline-chart .m-breach[data-outcome=breach]")
            .await;
        let title = breach
            .find(Locator::Css("title"))
            .await
            .unwrap()
            .prop("textContent")
            .await
            .unwrap()
            .unwrap_or_default();
        assert!(
            title.starts_with("guardrail breach: breach") && title.contains("error_rate"),
            "breach marker title: {title}"
        );
        let words = ui
            .js("return [...document.querySelectorAll('#timeline-chart .marker-word')].map(e => e.textContent)")
            .await;
        assert!(
            words.as_array().unwrap().contains(&json!("breach")),
            "the breach's word on the timeline: {words}"
        );
        ui.el("#timeline-chart .m-rollback").await;
        // Argo's two answers on the gate lane, and listed with their verdicts in words.
        ui.el("#timeline-chart .m-gate[data-verdict=wait]").await;
        ui.el(&format!(
            "#timeline-chart .m-gate[data-verdict={after_rollback}]"
        ))
        .await;
        ui.text_contains("#gate-answers", "gate: wait").await;
        ui.text_contains("#gate-answers", &format!("gate: {after_rollback}"))
            .await;
        // Verdict entries (from rollgate's own Prometheus evaluations, not run here) are
        // drawn by the same code: given entries shaped as the timeline projection writes
        // them, breach and pass get their own markers and words.
        let drawn = ui
            .c
            .execute_async(
                r#"const done = arguments[arguments.length - 1];
                import('/console/js/pages/postmortem.js').then((m) => {
                  const at = (s) => `2026-03-01T09:00:0${s}Z`;
                  const steps = [1, 2, 3].map((p) => ({ position: p, at: at(p), event_type: 'ReadingsRecorded', state: { stage_index: 0, exposure: 5 } }));
                  const entry = (position, summary) => ({ position, at: at(position), offset_seconds: position, event_type: 'ReadingsRecorded', actor: { id: 'rollgate', roles: [] }, summary, kind: 'verdict' });
                  const timeline = [
                    entry(2, 'rollback criterion error_rate > 0.05: value 0.08 over 500 samples (min 100 samples): inconclusive -> fail; query `sum(rate(x[5m]))`'),
                    entry(3, 'rollback criterion error_rate > 0.05: value 0.01 over 500 samples (min 100 samples): fail -> pass; query `sum(rate(x[5m]))`; success criterion p95 < 300: value 120 over 500 samples (min 100 samples): inconclusive -> pass; query `q`'),
                  ];
                  const { svg } = m.drawTimeline(steps, timeline, null, []);
                  done({
                    outcomes: [...svg.querySelectorAll('.m-verdict')].map((e) => e.getAttribute('data-outcome')),
                    words: [...svg.querySelectorAll('.marker-word')].map((e) => e.textContent),
                    markdown: m.markdownSection(timeline, []),
                  });
                }, (e) => done({ error: String(e) }));"#,
                vec![],
            )
            .await
            .expect("the post-mortem module draws a timeline");
        assert_eq!(drawn["outcomes"], json!(["breach", "pass"]), "{drawn}");
        assert_eq!(drawn["words"], json!(["breach", "pass"]), "{drawn}");
        let section = drawn["markdown"].as_str().unwrap();
        assert!(
            section.contains("T+0:00:02 (position 2) guardrail **breach**")
                && section.contains("T+0:00:03 (position 3) guardrail **pass**"),
            "{section}"
        );
        let now_stage = ui.text_contains("#replay-stage", "").await;
        let steps = ui
            .js(&format!(
                "return fetch('/v1/rollouts/{rolled_back}/replay?limit=1000', {{headers: {{Authorization: 'Bearer ' + sessionStorage.getItem('rollgate.token')}}}}).then(r => r.json()).then(p => p.items.map(i => i.event_type))"
            ))
            .await;
        let steps: Vec<&str> = steps
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap())
            .collect();
        let rollback_at = steps
            .iter()
            .position(|t| *t == "RolledBack")
            .expect("a RolledBack event");
        assert!(
            !now_stage.contains("stage 1"),
            "after the rollback the rollout is no longer at stage 1: {now_stage}"
        );
        // Scrub with the keyboard from the last event back to the one before the rollback.
        // (Focus, not a click: a click on a range input moves it to where it lands.)
        ui.el("#replay-slider").await;
        ui.js("document.getElementById('replay-slider').focus(); return null")
            .await;
        let lefts = steps.len() - rollback_at;
        let keys: String = std::iter::repeat_n('\u{E012}', lefts).collect();
        ui.c.active_element()
            .await
            .unwrap()
            .send_keys(&keys)
            .await
            .unwrap();
        ui.text_contains("#replay-stage", "stage 1 · beta-5").await;
        ui.text_contains("#replay-exposure", "5 %").await;
        ui.el("#export-markdown").await.click().await.unwrap();
        ui.text_contains("#postmortem-markdown", "One-click checkout")
            .await;
        let report = ui
            .text_contains(
                "#postmortem-markdown",
                "## Guardrail verdicts and gate answers",
            )
            .await;
        let line = |needle: &str| {
            report
                .lines()
                .find(|l| l.contains(needle))
                .unwrap_or_else(|| panic!("no line with {needle:?} in the report: {report}"))
                .to_owned()
        };
        // Offsets from the start by the decision times: Argo asked at the start, and again
        // after the day of soak that preceded the advance, breach and rollback.
        assert!(line("guardrail **breach** (GuardrailBreached)").starts_with("- T+24:00:00"));
        assert!(line("**gate: wait**").starts_with("- T+0:00:00"));
        assert!(line(&format!("**gate: {after_rollback}**")).starts_with("- T+24:00:00"));
        ui.clean("post-mortem").await;
        // The picture shows the timeline (not the slider that has focus).
        ui.js("document.getElementById('timeline-chart').scrollIntoView(); return null")
            .await;
        ui.shoot("postmortem").await;

        // 6. The hostile title renders as text, in the list and on its page.
        eprintln!("step 6");
        ui.go("#/rollouts").await;
        let link = ui
            .el(&format!("#rollouts-table a[href='#/rollouts/{hostile}']"))
            .await;
        assert_eq!(link.text().await.unwrap(), XSS_TITLE);
        let imgs = ui
            .js("return document.querySelectorAll('main img').length")
            .await;
        assert_eq!(imgs, json!(0), "the title became markup");
        ui.clean("rollouts").await;
        ui.shoot("rollouts").await;
        ui.go(&format!("#/rollouts/{hostile}")).await;
        ui.text_contains("#rollout-title", XSS_TITLE).await;
        let imgs = ui
            .js("return document.querySelectorAll('main img').length")
            .await;
        assert_eq!(imgs, json!(0), "the title became markup");
        ui.clean("rollout (hostile title)").await;

        // 7. A token the server no longer accepts: back to sign-in, with the reason.
        eprintln!("step 7");
        ui.js(
            "sessionStorage.setItem('rollgate.token', 'e30.e30.bm90LWEtc2lnbmF0dXJl'); return null",
        )
        .await;
        ui.go("#/rollouts").await;
        ui.text_contains("main", "session expired").await;
        ui.el("#token-input").await;
        let stored = ui
            .js("return sessionStorage.getItem('rollgate.token')")
            .await;
        assert_eq!(stored, Value::Null, "the refused token is gone");
        ui.clean("expired session").await;
    });
    let outcome = tokio::time::timeout(
        Duration::from_secs(100),
        futures::FutureExt::catch_unwind(scenarios),
    )
    .await;
    if !matches!(outcome, Ok(Ok(()))) {
        // What the browser showed when it went wrong.
        if let Ok(png) = ui.c.screenshot().await {
            let _ = std::fs::write(ui.shots.join("failure.png"), png);
        }
        if let Ok(rec) = ui.c.execute("return window.__rg || null", vec![]).await {
            eprintln!("recorded at failure: {rec}");
        }
        if let Ok(text) = ui.c.find(Locator::Css("body")).await {
            eprintln!(
                "page at failure:\n{}",
                text.text().await.unwrap_or_default()
            );
        }
    }
    let _ = ui.c.clone().close().await;
    drop(driver);
    match outcome {
        Ok(Ok(())) => {}
        Ok(Err(panic)) => std::panic::resume_unwind(panic),
        Err(_) => panic!("the browser scenarios did not finish within 100 s"),
    }
}

/// The OpenID provider of `tests/js/oidc/provider.mjs` (the real `oidc-provider`), signing
/// with a fresh RSA key named `kid`; stopped when dropped.
struct OpenIdProvider {
    child: Child,
    issuer: String,
    /// The `kid` of the one key in its JWKS.
    kid: String,
    redirect_uri: String,
    client_id: String,
    /// Kept open: the provider's standard output.
    _stdout: std::io::BufReader<std::process::ChildStdout>,
}

impl OpenIdProvider {
    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Rotates the signing key the way a provider restarted with a new key set does: this
    /// one stops and another starts on the same address (so the same issuer), publishing
    /// only a new key named `kid`.
    fn rotate_to(&mut self, kid: &str) {
        self.stop();
        let port = url::Url::parse(&self.issuer)
            .unwrap()
            .port()
            .expect("the issuer names its port");
        let next = start_provider(&self.redirect_uri, &self.client_id, Some(port), kid);
        assert_eq!(next.issuer, self.issuer, "the provider came back elsewhere");
        // The old process is already gone: its drop finds nothing left to stop.
        *self = next;
    }
}

impl Drop for OpenIdProvider {
    fn drop(&mut self) {
        self.stop();
    }
}

fn start_provider(
    redirect_uri: &str,
    client_id: &str,
    port: Option<u16>,
    kid: &str,
) -> OpenIdProvider {
    use std::io::BufRead;
    let modules = std::env::var("ROLLGATE_NODE_MODULES").unwrap_or_else(|_| {
        panic!("ROLLGATE_NODE_MODULES is not set: a node_modules folder with oidc-provider is needed (`cargo xtask test` installs it)")
    });
    assert!(
        Path::new(&modules).join("oidc-provider").is_dir(),
        "{modules} holds no oidc-provider (`cargo xtask test` installs it)"
    );
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("js/oidc/provider.mjs");
    let mut child = Command::new("node")
        .arg(script)
        .env("ROLLGATE_NODE_MODULES", &modules)
        .env("REDIRECT_URI", redirect_uri)
        .env("CLIENT_ID", client_id)
        .env("PORT", port.unwrap_or(0).to_string())
        .env("SIGNING_KID", kid)
        .stdout(Stdio::piped())
        .stderr(
            std::fs::File::create(std::env::temp_dir().join("rollgate-oidc-provider.log")).unwrap(),
        )
        .spawn()
        .expect("node runs (the system `node`)");
    let mut line = String::new();
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    stdout
        .read_line(&mut line)
        .expect("the provider prints its issuer");
    let started = serde_json::from_str::<Value>(&line).unwrap_or(Value::Null);
    let issuer = started["issuer"]
        .as_str()
        .map(str::to_owned)
        .unwrap_or_else(|| panic!("the provider did not start: {line:?}"));
    assert_eq!(started["kid"], json!(kid), "the provider's signing key");
    OpenIdProvider {
        child,
        issuer,
        kid: kid.to_owned(),
        redirect_uri: redirect_uri.to_owned(),
        client_id: client_id.to_owned(),
        _stdout: stdout,
    }
}

/// The claims of a JWT (its signature is the server's business; here the flow's own checks).
fn jwt_claims(jwt: &str) -> Value {
    jwt_part(jwt, 1)
}

/// The JOSE header of a JWT.
fn jwt_header(jwt: &str) -> Value {
    jwt_part(jwt, 0)
}

fn jwt_part(jwt: &str, index: usize) -> Value {
    use base64::Engine;
    let part = jwt.split('.').nth(index).expect("a JWT");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(part)
        .expect("base64url JWT part");
    serde_json::from_slice(&bytes).expect("a JSON JWT part")
}

#[derive(clap::Parser)]
struct ServeCli {
    #[command(flatten)]
    serve: rollgate_server::config::ServeArgs,
}

/// A minimal wait before the server may fetch the provider's keys again: started with
/// `--oidc-jwks-refresh-seconds 1`, it fetches at most once a second for unknown key ids.
const JWKS_REFRESH: Duration = Duration::from_millis(1_100);

/// The code flow with PKCE in the browser, from the sign-in page: `user` signs in at the
/// provider (its development login and consent pages) and the console exchanges the code.
/// Consent is given no earlier than `not_before`. Answers the ID token the console received.
async fn provider_sign_in(
    ui: &Ui,
    issuer: &str,
    user: &str,
    not_before: Option<std::time::Instant>,
) -> String {
    ui.el("#oidc-sign-in").await.click().await.unwrap();
    // The provider's own pages (development interactions): login, then consent.
    let login = ui.el("input[name=login]").await;
    let url = ui.c.current_url().await.unwrap();
    assert!(url.as_str().starts_with(issuer), "{url}");
    login.send_keys(user).await.unwrap();
    ui.el("input[name=password]")
        .await
        .send_keys("any")
        .await
        .unwrap();
    ui.el("form:has(input[name=prompt][value=login]) button[type=submit]")
        .await
        .click()
        .await
        .unwrap();
    let consent = ui
        .el("form:has(input[name=prompt][value=consent]) button[type=submit]")
        .await;
    if let Some(t) = not_before {
        tokio::time::sleep(t.saturating_duration_since(std::time::Instant::now())).await;
    }
    consent.click().await.unwrap();
    // Back in the console: the code was exchanged from the browser with the verifier.
    let mut answers = Value::Null;
    for _ in 0..100 {
        let r =
            ui.c.execute(
                "return (window.__rg && window.__rg.tokenAnswers) || []",
                vec![],
            )
            .await
            .unwrap_or(Value::Null);
        if r.as_array().is_some_and(|a| !a.is_empty()) {
            answers = r;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let answer = &answers[0];
    assert_eq!(answer["status"], 200, "token endpoint: {answer}");
    answer["body"]["id_token"]
        .as_str()
        .expect("an ID token")
        .to_owned()
}

/// Waits (bounded) until the console has called the API with `token`.
async fn api_called_with(ui: &Ui, token: &str) {
    let bearer = json!(format!("Bearer {token}"));
    for _ in 0..100 {
        let r = ui.js("return window.__rg.apiBearers").await;
        if r.as_array().is_some_and(|a| a.contains(&bearer)) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the API was never called with the ID token");
}

/// The status of `GET /v1/approvals/inbox` with `token`, from outside the browser.
async fn inbox_status(base: &str, token: &str) -> u16 {
    reqwest::Client::new()
        .get(format!("{base}/v1/approvals/inbox"))
        .bearer_auth(token)
        .send()
        .await
        .expect("the server answers")
        .status()
        .as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oidc_sign_in_with_code_and_pkce_in_the_browser() {
    use clap::Parser;
    const CLIENT: &str = "rollgate-console";
    // The server's address comes first: the provider registers the console's redirect URI,
    // and the server discovers the provider when it starts.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let origin = format!("http://127.0.0.1:{port}");
    let mut provider = start_provider(
        &format!("{origin}/console/"),
        CLIENT,
        None,
        "provider-key-1",
    );
    let db = rollgate_testkit::TestDb::new(Backend::Sqlite).await;
    let cli = ServeCli::try_parse_from([
        "rollgate",
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--database-url",
        &db.url,
        "--oidc-issuer",
        &provider.issuer,
        "--oidc-client-id",
        CLIENT,
        "--oidc-jwks-refresh-seconds",
        "1",
    ])
    .unwrap_or_else(|e| panic!("serve arguments: {e}"));
    let server = rollgate_server::Application::build(
        &cli.serve,
        std::sync::Arc::new(rollgate_store::SystemClock)
            as std::sync::Arc<dyn rollgate_store::Clock>,
    )
    .await
    .expect("the server starts with the OpenID provider's keys");
    tokio::spawn(server.run_until_stopped());
    let base = origin;

    let driver = start_driver().await;
    let profile = tempfile::tempdir().unwrap();
    let ui = Ui {
        c: start_browser(&driver, profile.path()).await,
        base,
        shots: PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/console-screenshots"),
    };
    std::fs::create_dir_all(&ui.shots).unwrap();

    let scenario = std::panic::AssertUnwindSafe(async {
        ui.go("").await;
        ui.text_contains("main", &provider.issuer).await;
        ui.clean("sign-in with OpenID Connect").await;
        // A well-formed token from another issuer (rollgate's development key) is refused.
        let other = tempfile::tempdir().unwrap();
        let other_key = rollgate_auth::DevKeys::load_or_create(other.path()).unwrap();
        let mint = |issuer: &str| {
            other_key
                .mint(rollgate_e2e::MintRequest {
                    sub: "bob".into(),
                    roles: vec!["approver".into()],
                    teams: vec!["web".into()],
                    ttl_seconds: 600,
                    now: chrono::Utc::now().timestamp(),
                    issuer: issuer.into(),
                    audience: CLIENT.into(),
                })
                .unwrap()
        };
        let stranger = mint("rollgate");
        ui.el("#token-input")
            .await
            .send_keys(&stranger)
            .await
            .unwrap();
        ui.el("#token-submit").await.click().await.unwrap();
        ui.text_contains(
            "#token-form .message.error",
            "The server refused this token",
        )
        .await;
        // Its unknown kid may have made the server fetch the JWKS (unchanged) again: the
        // last fetch (this one or the one at start-up) began before now.
        let last_fetch_before = std::time::Instant::now();
        assert_eq!(
            ui.js("return sessionStorage.getItem('rollgate.token')")
                .await,
            Value::Null
        );
        let id_token = provider_sign_in(&ui, &provider.issuer, "bob", None).await;
        let claims = jwt_claims(&id_token);
        assert_eq!(jwt_header(&id_token)["kid"], json!(provider.kid));
        assert_eq!(claims["iss"], json!(provider.issuer));
        assert_eq!(claims["aud"], json!(CLIENT));
        assert_eq!(claims["sub"], "bob");
        assert_eq!(claims["roles"], json!(["approver"]));
        assert_eq!(claims["teams"], json!(["web"]));
        assert!(claims["nonce"].as_str().is_some_and(|n| n.len() >= 16));
        // The code and state are gone from the address; the token was never in it.
        let url = ui.c.current_url().await.unwrap();
        assert_eq!(url.query(), None, "{url}");
        assert!(!url.as_str().contains(&id_token));
        // The console called the API with that token.
        api_called_with(&ui, &id_token).await;
        // The server accepted the provider's token: bob is signed in and sees his inbox.
        ui.text_contains("#who-name", "bob · approver · teams web")
            .await;
        ui.text_contains("main h1", "Inbox").await;
        ui.text_contains("#inbox-list", "Nothing waits for you")
            .await;
        let refused = ui.js("return window.__rg.refused").await;
        assert_eq!(refused, json!([]), "the API refused the token");
        let cookies = ui.js("return document.cookie").await;
        assert_eq!(cookies, json!(""), "no cookie on the console's origin");
        ui.clean("after the OpenID Connect redirect").await;

        // The provider rotates its signing key while rollgate keeps running: it comes back
        // on the same issuer publishing only a new key, and signs the next sign-in with it.
        eprintln!("key rotation");
        let old_token = id_token;
        provider.rotate_to("provider-key-2");
        ui.el("#sign-out").await.click().await.unwrap();
        ui.text_contains("main", "You are signed out").await;
        // The server fetches the keys again for the new kid, at most once a second: the
        // console must not present it before a second has passed since the last fetch.
        let new_token = provider_sign_in(
            &ui,
            &provider.issuer,
            "bob",
            Some(last_fetch_before + JWKS_REFRESH),
        )
        .await;
        assert_eq!(jwt_header(&new_token)["kid"], json!("provider-key-2"));
        assert_eq!(jwt_claims(&new_token)["iss"], json!(provider.issuer));
        api_called_with(&ui, &new_token).await;
        // Accepted without a restart of rollgate: the console shows bob's inbox, no 401.
        ui.text_contains("#who-name", "bob · approver · teams web")
            .await;
        ui.text_contains("#inbox-list", "Nothing waits for you")
            .await;
        let refused = ui.js("return window.__rg.refused").await;
        assert_eq!(refused, json!([]), "the API refused the new key's token");
        assert_eq!(inbox_status(&ui.base, &new_token).await, 200);
        ui.clean("after the key rotation").await;
        // A key the provider no longer publishes is refused (its token was accepted and
        // remembered before the rotation), and so is a key it never published, even with
        // the provider's issuer and the console's audience; fetching again changes nothing.
        let forged = mint(&provider.issuer);
        assert_eq!(
            jwt_claims(&forged)["iss"],
            json!(provider.issuer),
            "the forged token names the provider"
        );
        for attempt in 0..2 {
            assert_eq!(
                inbox_status(&ui.base, &old_token).await,
                401,
                "the retired key's token, attempt {attempt}"
            );
            assert_eq!(
                inbox_status(&ui.base, &forged).await,
                401,
                "a token signed by a key the provider never published, attempt {attempt}"
            );
            // The second attempt comes after the refresh interval, so it may fetch again.
            if attempt == 0 {
                tokio::time::sleep(JWKS_REFRESH).await;
            }
        }
        // The new key still works after those refreshes.
        assert_eq!(inbox_status(&ui.base, &new_token).await, 200);
    });
    let outcome = tokio::time::timeout(
        Duration::from_secs(90),
        futures::FutureExt::catch_unwind(scenario),
    )
    .await;
    if !matches!(outcome, Ok(Ok(()))) {
        if let Ok(png) = ui.c.screenshot().await {
            let _ = std::fs::write(ui.shots.join("failure-oidc.png"), png);
        }
        if let Ok(rec) = ui.c.execute("return window.__rg || null", vec![]).await {
            eprintln!("recorded at failure: {rec}");
        }
    }
    let _ = ui.c.clone().close().await;
    drop(driver);
    drop(provider);
    match outcome {
        Ok(Ok(())) => {}
        Ok(Err(panic)) => std::panic::resume_unwind(panic),
        Err(_) => panic!("the OpenID Connect scenario did not finish within 90 s"),
    }
}
