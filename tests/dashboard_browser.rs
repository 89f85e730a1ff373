//! The dashboard (`/ui/`, feature `dashboard`) in a real browser: Debian's Chromium, headless,
//! driven through its WebDriver (`chromedriver`, started here on a free port) with fantoccini.
//!
//! Needs `chromium`, `chromium-driver` and axe-core (`bash .ci/browser.sh` installs them).
//! Without them the tests fail under CI (`CI=true`) and print what is missing otherwise.
//! Environment: `AVTO_CHROMIUM` (default `/usr/bin/chromium`), `AVTO_CHROMEDRIVER`
//! (`/usr/bin/chromedriver`), `AVTO_AXE_JS` (`/var/cache/avto/npm/node_modules/axe-core/axe.min.js`),
//! `AVTO_ARTIFACTS_DIR` (where the screenshots go; default `<target dir>/ui-screenshots`).
//!
//! Every page is checked with axe-core (no serious or critical violation) and saved as a PNG.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use avto::server::config::ClientEntry;
use avto::testing::{test_config, TestServer, ADMIN_TOKEN};
use avto::ClientConfig;
use avto_tests::blueprints::{approval_flow, echo_flow};
use avto_tests::RedisPrefix;
use fantoccini::actions::{InputSource, KeyAction, KeyActions};
use fantoccini::key::Key;
use fantoccini::{Client as Browser, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{json, Value};

/// How long a page may take to show what a step waits for (a bound, not an expectation).
const PATIENCE: Duration = Duration::from_secs(30);

/// One browser at a time: the machines running the tests are small.
static ONE_BROWSER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn env_path(var: &str, default: &str) -> PathBuf {
    std::env::var_os(var).map(PathBuf::from).unwrap_or_else(|| PathBuf::from(default))
}

fn artifacts_dir() -> PathBuf {
    let dir = std::env::var_os("AVTO_ARTIFACTS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("..").join("ui-screenshots"));
    std::fs::create_dir_all(&dir).expect("the screenshot directory can be created");
    dir
}

/// The browser, its driver and axe-core, or why the test cannot run: a failure under CI, a
/// message (and no run) elsewhere.
fn tools() -> Option<(PathBuf, PathBuf, String)> {
    let chromium = env_path("AVTO_CHROMIUM", "/usr/bin/chromium");
    let driver = env_path("AVTO_CHROMEDRIVER", "/usr/bin/chromedriver");
    let axe = env_path("AVTO_AXE_JS", "/var/cache/avto/npm/node_modules/axe-core/axe.min.js");
    let missing: Vec<String> =
        [&chromium, &driver, &axe].iter().filter(|p| !p.exists()).map(|p| p.display().to_string()).collect();
    if missing.is_empty() {
        let axe = std::fs::read_to_string(&axe).expect("axe-core is readable");
        return Some((chromium, driver, axe));
    }
    let msg =
        format!("the browser tests need {missing:?}: run `bash .ci/browser.sh` (Chromium, chromedriver, axe-core)");
    if std::env::var("CI").is_ok_and(|v| v == "true" || v == "1") {
        panic!("{msg}");
    }
    eprintln!("NOT RUN: {msg}");
    None
}

/// `chromedriver` on a free port, stopped when dropped (with its browsers: see [`Driver::shut_down`]).
struct Driver {
    child: Child,
    url: String,
    port: u16,
}

impl Drop for Driver {
    fn drop(&mut self) {
        self.shut_down();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Driver {
    /// Asks chromedriver to end every session and exit (`GET /shutdown`), and waits a few seconds
    /// for it. Killing it alone leaves its Chromium processes running, orphaned (a test that
    /// panics never closes its session): CI machines gathered a browser per run.
    fn shut_down(&mut self) {
        use std::io::{Read as _, Write as _};
        let timeout = Duration::from_secs(5);
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], self.port));
        if let Ok(mut tcp) = std::net::TcpStream::connect_timeout(&addr, timeout) {
            let _ = tcp.set_read_timeout(Some(timeout));
            let _ = tcp.set_write_timeout(Some(timeout));
            let request =
                format!("GET /shutdown HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nConnection: close\r\n\r\n", self.port);
            if tcp.write_all(request.as_bytes()).is_ok() {
                let _ = tcp.read_to_end(&mut Vec::new());
            }
        }
        let deadline = std::time::Instant::now() + timeout;
        while std::time::Instant::now() < deadline {
            if !matches!(self.child.try_wait(), Ok(None)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    async fn start(driver: &PathBuf) -> Driver {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = Command::new(driver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let d = Driver { child, url: format!("http://127.0.0.1:{port}"), port };
        let deadline = tokio::time::Instant::now() + PATIENCE;
        while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
            assert!(tokio::time::Instant::now() < deadline, "chromedriver did not listen on {port}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        d
    }
}

/// A headless Chromium session on the dashboard of `server`.
struct Page {
    b: Browser,
    base: String,
    axe: String,
    // dropped after the session: the driver goes last
    _driver: Driver,
}

impl Page {
    async fn open(server: &TestServer, (chromium, driver, axe): &(PathBuf, PathBuf, String)) -> Page {
        let driver = Driver::start(driver).await;
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({"binary": chromium, "args": ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                "--disable-gpu", "--no-first-run", "--window-size=1280,1000", "--lang=en-US"]}),
        );
        let b = ClientBuilder::new(HttpConnector::new())
            .capabilities(caps)
            .connect(&driver.url)
            .await
            .expect("a Chromium session");
        Page { b, base: server.base_url().to_owned(), axe: axe.clone(), _driver: driver }
    }

    async fn goto(&self, path: &str) {
        self.b.goto(&format!("{}{path}", self.base)).await.unwrap();
    }

    async fn js(&self, script: &str) -> Value {
        self.b.execute(script, vec![]).await.unwrap_or_else(|e| panic!("script failed: {e}\n{script}"))
    }

    /// Waits until `expr` (a JavaScript expression) is truthy; returns its value.
    async fn until(&self, what: &str, expr: &str) -> Value {
        let script = format!("return ({expr});");
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let v = self.js(&script).await;
            if !(v.is_null() || v == json!(false) || v == json!("") || v == json!(0)) {
                return v;
            }
            if tokio::time::Instant::now() > deadline {
                let text = self.js("return document.body.innerText").await;
                let _ = self.shot("timeout").await;
                panic!("waited {PATIENCE:?} for {what} ({expr}); the page says:\n{}", text.as_str().unwrap_or(""));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn text(&self, css: &str) -> String {
        self.b.find(Locator::Css(css)).await.unwrap_or_else(|e| panic!("{css}: {e}")).text().await.unwrap()
    }

    async fn click(&self, css: &str) {
        self.b.find(Locator::Css(css)).await.unwrap_or_else(|e| panic!("{css}: {e}")).click().await.unwrap();
    }

    async fn shot(&self, name: &str) -> PathBuf {
        let png = self.b.screenshot().await.unwrap();
        let path = artifacts_dir().join(format!("{name}.png"));
        std::fs::write(&path, png).unwrap();
        path
    }

    /// axe-core on the page as it is: panics on a serious or critical violation (and on
    /// anything the page's Content-Security-Policy refused so far).
    async fn axe(&self, page: &str) {
        let refused = self.js("return document.documentElement.dataset.cspViolations || null").await;
        assert_eq!(refused, Value::Null, "the {page} page had Content-Security-Policy violations");
        // WebDriver scripts run outside the page's Content-Security-Policy.
        let loaded = self.js(&format!("{}\n;return typeof window.axe;", self.axe)).await;
        assert_eq!(loaded, json!("object"), "axe-core loads into the page");
        let found = self
            .b
            .execute_async(
                "const done = arguments[arguments.length - 1];
                 axe.run(document, {resultTypes: ['violations']})
                   .then(r => done(r.violations.filter(v => v.impact === 'serious' || v.impact === 'critical')
                     .map(v => `${v.impact} ${v.id}: ${v.help} — ${v.nodes.slice(0, 5).map(n => n.target.join(' ')).join(' | ')}`)))
                   .catch(e => done(['axe failed: ' + e]));",
                vec![],
            )
            .await
            .unwrap();
        let found: Vec<String> = serde_json::from_value(found).unwrap();
        assert!(found.is_empty(), "axe-core on the {page} page:\n{}", found.join("\n"));
    }

    async fn sign_in(&self, token: &str) {
        self.goto("/ui/login").await;
        self.until("the sign-in form", "document.querySelector('#token')").await;
        self.b.find(Locator::Css("#token")).await.unwrap().send_keys(token).await.unwrap();
        self.click(".login button[type=submit]").await;
        self.until("the signed-in navigation", "document.querySelector('#nav')?.hidden === false").await;
        self.until("the live stream", "document.querySelector('#conn')?.dataset.state === 'live'").await;
    }

    /// Presses (down and up) each key on the keyboard, as a person would: to the focused element.
    async fn keys(&self, keys: &str) {
        let mut seq = KeyActions::new("keyboard".into());
        for k in keys.chars() {
            seq = seq.then(KeyAction::Down { value: k }).then(KeyAction::Up { value: k });
        }
        self.b.perform_actions(seq).await.unwrap();
    }

    /// Presses Tab until `css` has the focus (at most 80 times), then Enter.
    async fn tab_to_and_enter(&self, css: &str) {
        for _ in 0..80 {
            let on =
                self.js(&format!("return document.activeElement && document.activeElement.matches({css:?})")).await;
            if on == json!(true) {
                self.keys(&Key::Enter.to_string()).await;
                return;
            }
            self.keys(&Key::Tab.to_string()).await;
        }
        panic!("Tab never reached {css}");
    }
}

fn two_clients() -> avto::server::config::Config {
    let mut cfg = test_config();
    let mk = |name: &str, token: &str| ClientEntry {
        token: token.into(),
        config: ClientConfig { name: name.into(), plan: "free".into(), ..Default::default() },
        quota: None,
    };
    cfg.clients = vec![mk("alice", "alice-token"), mk("bob", "bob-token")];
    cfg
}

async fn server() -> TestServer {
    TestServer::builder()
        .blueprints([echo_flow::blueprint(), approval_flow::blueprint()])
        .with_config(two_clients())
        .start()
        .await
        .unwrap()
}

/// A client signs in, sees a job created through the API arrive without a reload, opens it
/// (graph, why it waits), cancels it, approves another from the inbox and sees it finish.
#[tokio::test]
async fn a_client_follows_its_jobs_live() {
    let Some(tools) = tools() else { return };
    let _one = ONE_BROWSER.lock().await;
    let s = server().await;
    let alice = s.client().with_token("alice-token");
    let p = Page::open(&s, &tools).await;

    p.goto("/ui/jobs").await;
    p.until("the sign-in form", "document.querySelector('#token')").await;
    p.shot("login").await;
    p.axe("sign-in").await;
    // a wrong token is refused with a visible error
    p.b.find(Locator::Css("#token")).await.unwrap().send_keys("not-a-token").await.unwrap();
    p.click(".login button[type=submit]").await;
    p.until("the sign-in error", "document.querySelector('#login-error')?.hidden === false").await;
    p.sign_in("alice-token").await;

    // the list, then a job created through the API: announced, shown on request, no reload
    p.goto("/ui/jobs").await;
    p.until("the empty list", "document.querySelector('#jobs-summary')?.textContent.startsWith('No jobs')").await;
    p.js("window.__sameDocument = 'yes'; return 1").await;
    let id = alice.create("jobs/echo", json!({"text": "hello", "n": 1})).await.unwrap();
    p.until("the new-jobs banner", "document.querySelector('#new-jobs')").await;
    assert!(p.text("#new-jobs").await.starts_with("1 new job"), "{}", p.text("#new-jobs").await);
    p.click("#new-jobs button").await;
    let row = format!("#jobs-table tr[data-id='{id}']");
    p.until("the new job's row", &format!("document.querySelector({row:?})")).await;
    assert_eq!(p.js("return window.__sameDocument").await, json!("yes"), "the page was not reloaded");
    assert!(p.text(&row).await.contains("Waiting for worker"), "{}", p.text(&row).await);
    p.shot("jobs").await;
    p.axe("jobs list").await;

    // the job page: status, graph with the current state, why it waits (no worker offers echo)
    p.click(&format!("{row} a")).await;
    p.until("the job page", &format!("document.querySelector('#page-title')?.textContent.includes('{id}')")).await;
    p.until("the graph", "document.querySelector('#graph svg')").await;
    let caption = p.text("#graph-caption").await;
    assert!(caption.contains("Current state: start"), "{caption}");
    // the graph's current state is its own shape (an outer border) and class, not only a colour
    let current =
        p.js("return [...document.querySelectorAll('#graph svg g.node.current')].map(g => g.dataset.state)").await;
    assert_eq!(current, json!(["start"]), "the current state on the graph");
    p.until("the why panel", "document.querySelector('#why')").await;
    let why = p.text("#why").await;
    assert!(why.contains("echo") && why.contains("no live worker offers this skill"), "{why}");
    p.shot("job-waiting").await;
    p.axe("job").await;

    // cancel, with the confirmation dialog
    p.click("#cancel-job").await;
    p.until("the confirmation dialog", "document.querySelector('dialog[open]')").await;
    p.shot("job-cancel-dialog").await;
    p.click("dialog[open] button[value=ok]").await;
    p.until("the cancelled status", "document.querySelector('#page-title .status')?.textContent === 'Cancelled'").await;
    assert_eq!(alice.get(&id).await.unwrap().status, avto::JobStatus::Cancelled);

    // the approvals inbox: one button per decision; approve, see it finish
    let waiting = alice.create("jobs/approval", json!({"order": 42})).await.unwrap();
    p.click("#nav a[data-nav=approvals]").await;
    let arow = format!("#approvals-table tr[data-id='{waiting}']");
    p.until("the waiting job in the inbox", &format!("document.querySelector({arow:?})")).await;
    let decisions =
        p.js(&format!("return [...document.querySelectorAll({arow:?} + ' button')].map(b => b.textContent)")).await;
    assert_eq!(decisions, json!(["approved", "rejected"]));
    p.shot("approvals").await;
    p.axe("approvals").await;
    // a double click applies once
    p.js(&format!("const b = document.querySelector({arow:?} + ' button[data-decision=approved]'); b.click(); b.click(); return 1"))
        .await;
    p.until(
        "the finished status in the inbox",
        &format!("document.querySelector({arow:?}).textContent.includes('Finished')"),
    )
    .await;
    let view = alice.wait(&waiting, PATIENCE).await.unwrap();
    assert_eq!((view.status, view.current_state.as_str()), (avto::JobStatus::Finished, "approved"));
    assert!(p.text(&arow).await.contains("(approved)"), "{}", p.text(&arow).await);

    // its page: the path taken and the current (end) state on the graph
    p.click(&format!("{arow} a")).await;
    p.until("the finished job page", "document.querySelector('#page-title .status')?.textContent === 'Finished'").await;
    p.until("the graph", "document.querySelector('#graph svg')").await;
    let caption = p.text("#graph-caption").await;
    assert!(caption.contains("start → approved") && caption.contains("Current state: approved"), "{caption}");
    let current =
        p.js("return [...document.querySelectorAll('#graph svg g.node.current')].map(g => g.dataset.state)").await;
    assert_eq!(current, json!(["approved"]), "the current state on the graph");
    let taken = p.js("return [...new Set([...document.querySelectorAll('#graph svg g.edge.taken')].map(g => `${g.dataset.from}->${g.dataset.to}`))].sort()").await;
    // The start marker's edge counts as taken once the start state is visited.
    assert_eq!(taken, json!(["__start->start", "start->approved"]), "the path taken on the graph");
    p.shot("job-finished").await;
    p.axe("finished job").await;
    s.stop().await.unwrap();
}

/// A second client sees none of the first one's jobs: not in its list, not by id, not in its
/// inbox, not on its stream.
#[tokio::test]
async fn a_client_sees_none_of_anothers_jobs() {
    let Some(tools) = tools() else { return };
    let _one = ONE_BROWSER.lock().await;
    let s = server().await;
    let alice = s.client().with_token("alice-token");
    let bob = s.client().with_token("bob-token");
    let hers = alice.create("jobs/approval", json!({"secret": true})).await.unwrap();
    let p = Page::open(&s, &tools).await;
    p.sign_in("bob-token").await;
    p.goto("/ui/jobs").await;
    p.until("bob's empty list", "document.querySelector('#jobs-summary')?.textContent.startsWith('No jobs')").await;
    // alice's next job, then bob's: bob's stream announces only his own (events keep their order)
    alice.create("jobs/echo", json!({})).await.unwrap();
    let his = bob.create("jobs/echo", json!({})).await.unwrap();
    p.until("bob's banner", "document.querySelector('#new-jobs')").await;
    assert!(p.text("#new-jobs").await.starts_with("1 new job"), "{}", p.text("#new-jobs").await);
    p.click("#new-jobs button").await;
    p.until("bob's job", &format!("document.querySelector(\"#jobs-table tr[data-id='{his}']\")")).await;
    assert_eq!(p.js("return document.querySelectorAll('#jobs-table tbody tr').length").await, json!(1));
    p.shot("jobs-second-client").await;

    p.goto(&format!("/ui/jobs/{hers}")).await;
    p.until("the not-found page", "document.querySelector('#page-title')?.textContent === 'Job not found'").await;
    p.goto("/ui/approvals").await;
    p.until("bob's empty inbox", "document.querySelector('#approvals-summary')?.textContent.startsWith('Nothing')")
        .await;
    s.stop().await.unwrap();
}

/// The operator: the workers page (table, drain with a reason, live chart), every action from
/// the keyboard (skip link, Tab to a decision, Enter), axe-core on each page.
#[tokio::test]
async fn the_operator_works_from_the_keyboard() {
    let Some(tools) = tools() else { return };
    let _one = ONE_BROWSER.lock().await;
    let s = server().await;
    let alice = s.client().with_token("alice-token");
    let worker = s.raw_worker("gpu-worker-1", &["echo", "resize"]);
    assert_eq!(worker.register().await.0, 200);
    let p = Page::open(&s, &tools).await;
    p.sign_in(ADMIN_TOKEN).await;

    // workers: the table, the live chart from `stats` events
    p.click("#nav a[data-nav=workers]").await;
    p.until("the worker's row", "document.querySelector(\"#workers-table tr[data-id='gpu-worker-1']\")").await;
    let row = p.text("#workers-table tr[data-id='gpu-worker-1']").await;
    assert!(row.contains("echo") && row.contains("resize"), "{row}");
    p.until("the live chart", "document.querySelector('.chart .legend')").await;
    p.shot("workers").await;
    p.axe("workers").await;

    // drain from the keyboard: Tab to the button, Enter, type the reason, Enter on "Drain"
    p.tab_to_and_enter("#workers-table tr[data-id='gpu-worker-1'] button").await;
    p.until("the drain dialog", "document.activeElement?.id === 'drain-reason'").await;
    p.keys("maintenance window").await;
    p.shot("workers-drain-dialog").await;
    p.tab_to_and_enter("dialog[open] button[value=ok]").await;
    p.until("the draining worker", "document.querySelector(\"#workers-table tr[data-id='gpu-worker-1']\")?.textContent.includes('maintenance window')")
        .await;

    // a job page from the keyboard only: the skip link first, then Tab to "approved" and Enter
    let id = alice.create("jobs/approval", json!({})).await.unwrap();
    p.goto(&format!("/ui/jobs/{id}")).await;
    p.until("the approval buttons", "document.querySelector('#decide-approved')").await;
    // the page puts the focus on its title; Shift+Tab back to the skip link, Enter: the focus is on <main>
    p.until("the focus on the title", "document.activeElement?.id === 'page-title'").await;
    let mut back = 0;
    while p.js("return document.activeElement.textContent").await != json!("Skip to content") {
        back += 1;
        assert!(back < 20, "Shift+Tab never reached the skip link");
        let mut seq = KeyActions::new("keyboard".into());
        for a in [KeyAction::Down { value: Key::Shift.into() }, KeyAction::Down { value: Key::Tab.into() }] {
            seq = seq.then(a);
        }
        for a in [KeyAction::Up { value: Key::Tab.into() }, KeyAction::Up { value: Key::Shift.into() }] {
            seq = seq.then(a);
        }
        p.b.perform_actions(seq).await.unwrap();
    }
    p.keys(&Key::Enter.to_string()).await;
    p.until("the focus on <main>", "document.activeElement?.id === 'main'").await;
    p.shot("job-approval").await;
    p.axe("job awaiting approval").await;
    p.tab_to_and_enter("#decide-approved").await;
    p.until("the finished status", "document.querySelector('#page-title .status')?.textContent === 'Finished'").await;
    assert_eq!(alice.get(&id).await.unwrap().status, avto::JobStatus::Finished);

    // the operator's list shows every client's jobs, with their client
    p.goto("/ui/jobs").await;
    p.until("the operator's list", &format!("document.querySelector(\"#jobs-table tr[data-id='{id}']\")")).await;
    p.shot("jobs-operator").await;
    p.axe("operator's jobs list").await;
    s.stop().await.unwrap();
}

/// A job that went round a loop (`check -> wait -> check` three times, its first `poll` attempt
/// failing transiently): the graph carries `×2` on the loop's edges, the timeline every attempt
/// with its worker, attempt n of N, the error class and the retry's time. Its screenshot
/// (`job-loop.png`, the whole page) is the README's `docs/dashboard-job.png`.
#[tokio::test]
async fn a_loop_shows_its_counts_and_attempts() {
    use avto::worker::{TaskHandle, TaskOutcome};
    use std::sync::atomic::{AtomicU32, Ordering};
    let Some(tools) = tools() else { return };
    let _one = ONE_BROWSER.lock().await;
    let calls = std::sync::Arc::new(AtomicU32::new(0));
    let s = TestServer::builder()
        .blueprints([avto_tests::blueprints::poll_flow::blueprint()])
        .with_config(two_clients())
        .config(|c| c.history_database_uri = Some("memory:".into()))
        .worker("poll", move |_p: Value, _t: TaskHandle| {
            let n = calls.fetch_add(1, Ordering::SeqCst);
            async move {
                match n {
                    0 => TaskOutcome::failure("TRANSIENT_ERROR", "the service is busy"),
                    1 | 2 => TaskOutcome::status("pending", json!({"ready": false})),
                    _ => TaskOutcome::status("ready", json!({"report": "s3://reports/42.pdf"})),
                }
            }
        })
        .start()
        .await
        .unwrap();
    let alice = s.client().with_token("alice-token");
    let id = alice.create("jobs/poll", json!({"order": 42})).await.unwrap();
    assert_eq!(alice.wait(&id, PATIENCE).await.unwrap().status, avto::JobStatus::Finished);
    let p = Page::open(&s, &tools).await;
    p.sign_in("alice-token").await;
    p.goto(&format!("/ui/jobs/{id}")).await;
    p.until("the finished job page", "document.querySelector('#page-title .status')?.textContent === 'Finished'").await;
    p.until("the graph", "document.querySelector('#graph svg')").await;
    // the loop's edges were taken twice: `×2` on each
    let count = |from: &str, to: &str| {
        format!(
            "return [...document.querySelectorAll('#graph svg g.edge.taken[data-from={from}][data-to={to}] text')]\
             .map(t => t.textContent).join(' ')"
        )
    };
    let pending = p.js(&count("check", "wait")).await;
    assert!(pending.as_str().unwrap().contains("×2"), "check -> wait: {pending}");
    let back = p.js(&count("wait", "check")).await;
    assert!(back.as_str().unwrap().contains("×2"), "wait -> check: {back}");
    let ready = p.js(&count("check", "done")).await;
    assert!(!ready.as_str().unwrap().contains('×'), "check -> done was taken once: {ready}");
    let caption = p.text("#graph-caption").await;
    assert!(caption.contains("check → wait → check → wait → check → done"), "{caption}");
    // the timeline: every row has a time; the four attempts of `poll` with their worker
    let rows = p
        .js("return [...document.querySelectorAll('#timeline tbody tr')].map(r => [r.dataset.kind, ...[...r.cells].map(c => c.textContent)])")
        .await;
    let rows: Vec<Vec<String>> = serde_json::from_value(rows).unwrap();
    assert!(rows.len() > 10, "{rows:?}");
    for r in &rows {
        assert!(r[1].starts_with("20"), "a timeline row without a time: {r:?}");
    }
    let attempts: Vec<&Vec<String>> = rows.iter().filter(|r| r[0] == "task_finished").collect();
    assert_eq!(attempts.len(), 4, "{rows:?}");
    assert!(attempts.iter().all(|r| r[4] == "poll-worker"), "{attempts:?}");
    assert_eq!(attempts[0][5], "1 of 4", "{attempts:?}");
    assert!(attempts[0][6].contains("TRANSIENT_ERROR") && attempts[0][6].contains("transient"), "{attempts:?}");
    assert_eq!(attempts[1][5], "2 of 4", "{attempts:?}");
    let retry = rows.iter().find(|r| r[0] == "task_retry").expect("the retry on the timeline");
    assert!(retry[7].starts_with("20"), "the retry's time: {retry:?}");
    p.axe("loop job").await;
    // the whole page in the screenshot
    // (the page as tall as its content, plus what the window's frame takes)
    let height = p
        .js("return document.documentElement.scrollHeight + window.outerHeight - window.innerHeight")
        .await
        .as_u64()
        .unwrap();
    p.b.set_window_size(1280, (height as u32).min(4000)).await.unwrap();
    p.shot("job-loop").await;
    s.stop().await.unwrap();
}

/// After an orchestrator restart the page says "reconnecting", then catches up: a transition
/// made (through another instance on the same Redis) while its orchestrator was down shows.
#[tokio::test]
async fn the_page_catches_up_after_a_restart() {
    let Some(tools) = tools() else { return };
    let _one = ONE_BROWSER.lock().await;
    let redis = RedisPrefix::new();
    let start = |listener: Option<tokio::net::TcpListener>| {
        let mut cfg = two_clients();
        cfg.redis_key_prefix = redis.prefix.clone();
        // sessions outlive a restart only with a fixed key
        cfg.dashboard_secret = Some("browser-test-dashboard-secret".into());
        let url = redis.url.clone();
        let mut b = TestServer::builder()
            .blueprints([echo_flow::blueprint(), approval_flow::blueprint()])
            .with_config(cfg)
            .orchestrator(move |b| b.redis(&url));
        if let Some(l) = listener {
            b = b.listener(l);
        }
        b.start()
    };
    let s = start(None).await.unwrap();
    let other = start(None).await.unwrap();
    let alice = s.client().with_token("alice-token");
    let id = alice.create("jobs/approval", json!({})).await.unwrap();
    let p = Page::open(&s, &tools).await;
    p.sign_in("alice-token").await;
    p.goto(&format!("/ui/jobs/{id}")).await;
    p.until("the waiting job", "document.querySelector('#page-title .status')?.textContent === 'Waiting for human'")
        .await;

    let addr = s.addr();
    s.stop().await.unwrap();
    p.until("the reconnecting status", "document.querySelector('#conn')?.dataset.state === 'reconnecting'").await;
    assert_eq!(p.text("#conn").await, "Reconnecting…");
    p.shot("reconnecting").await;
    // the job moves on while this page's orchestrator is down
    other.client().with_token("alice-token").approve(&id, "approved").await.unwrap();
    assert_eq!(
        other.client().with_token("alice-token").wait(&id, PATIENCE).await.unwrap().status,
        avto::JobStatus::Finished
    );

    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    let s = start(Some(listener)).await.unwrap();
    p.until("the live status again", "document.querySelector('#conn')?.dataset.state === 'live'").await;
    p.until("the caught-up status", "document.querySelector('#page-title .status')?.textContent === 'Finished'").await;
    s.stop().await.unwrap();
    other.stop().await.unwrap();
}

/// Filters kept in the URL (a reload keeps them), cursor paging that keeps its place, and
/// cancelling every job of a filter after a dry-run count.
#[tokio::test]
async fn filters_paging_and_bulk_cancel() {
    let Some(tools) = tools() else { return };
    let _one = ONE_BROWSER.lock().await;
    let s = server().await;
    let alice = s.client().with_token("alice-token");
    let mut echo = Vec::new();
    for i in 0..53 {
        echo.push(alice.create("jobs/echo", json!({"i": i})).await.unwrap().to_string());
    }
    let waiting = alice.create("jobs/approval", json!({})).await.unwrap();
    let p = Page::open(&s, &tools).await;
    p.sign_in("alice-token").await;
    let ids = "[...document.querySelectorAll('#jobs-table tbody tr')].map(r => r.dataset.id)";

    // a status filter through the form: in the URL, kept by a reload
    p.goto("/ui/jobs").await;
    p.until("the first page", "document.querySelector('#jobs-summary')?.textContent.startsWith('Showing 50 jobs')")
        .await;
    p.click("input[name=status][value=waiting_for_human]").await;
    p.click("#apply-filters").await;
    p.until("the filtered list", &format!("{ids}.join() === '{waiting}'")).await;
    assert_eq!(p.js("return location.search").await, json!("?status=waiting_for_human"));
    p.b.refresh().await.unwrap();
    p.until("the filtered list after a reload", &format!("{ids}.join() === '{waiting}'")).await;
    assert_eq!(p.js("return document.querySelector('input[value=waiting_for_human]').checked").await, json!(true));

    // paging: older, then newer again, neither repeating nor skipping
    p.goto("/ui/jobs?blueprint=echo_flow").await;
    p.until("the first page", "document.querySelector('#jobs-summary')?.textContent.startsWith('Showing 50 jobs')")
        .await;
    let first: Vec<String> = serde_json::from_value(p.js(&format!("return {ids}")).await).unwrap();
    p.click("#jobs-older").await;
    p.until("the older page", &format!("location.search.includes('after=') && {ids}.length === 3")).await;
    let older: Vec<String> = serde_json::from_value(p.js(&format!("return {ids}")).await).unwrap();
    let mut all: Vec<String> = first.iter().chain(&older).cloned().collect();
    all.sort();
    let mut expected = echo.clone();
    expected.sort();
    assert_eq!(all, expected, "two pages hold every echo job once");
    p.shot("jobs-older-page").await;
    p.click("#jobs-newer").await;
    p.until("the first page again", &format!("!location.search.includes('after=') && {ids}.length === 50")).await;
    assert_eq!(serde_json::from_value::<Vec<String>>(p.js(&format!("return {ids}")).await).unwrap(), first);

    // cancel every job of the filter: the dry run's count in the confirmation, then the cancel
    p.click("#bulk-cancel").await;
    p.until("the confirmation", "document.querySelector('dialog[open]')").await;
    let asked = p.text("dialog[open]").await;
    assert!(asked.contains("53 active jobs match"), "{asked}");
    p.shot("jobs-bulk-cancel").await;
    p.axe("bulk cancel confirmation").await;
    p.click("dialog[open] button[value=ok]").await;
    p.until(
        "the bulk cancel's answer",
        "document.querySelector('.notice')?.textContent.startsWith('Cancelled 53 jobs')",
    )
    .await;
    for id in [&echo[0], &echo[52]] {
        assert_eq!(alice.get(id).await.unwrap().status, avto::JobStatus::Cancelled);
    }
    assert_eq!(alice.get(&waiting).await.unwrap().status, avto::JobStatus::WaitingForHuman, "outside the filter");
    s.stop().await.unwrap();
}
