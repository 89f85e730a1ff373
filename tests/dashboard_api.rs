//! The dashboard's server side (feature `dashboard`): sign-in and its cookie, CSRF, client
//! isolation (pages and the live stream), the stream's events, a job's page and why it waits,
//! approvals applied once, cancel, the operator's workers page and drain, and the bound on open
//! streams.

use std::time::Duration;

use avto::server::config::ClientEntry;
use avto::testing::{TestServer, ADMIN_TOKEN};
use avto::ClientConfig;
use avto_tests::blueprints::{approval_flow, echo_flow};
use avto_tests::SseReader;
use reqwest::header;
use serde_json::{json, Value};

/// How long a test waits for something the server does at once (a bound, not a timing claim).
const WAIT: Duration = Duration::from_secs(15);

fn client(name: &str, token: &str) -> ClientEntry {
    ClientEntry {
        token: token.into(),
        config: ClientConfig { name: name.into(), id: format!("toml:{name}"), ..Default::default() },
        quota: None,
    }
}

async fn server() -> TestServer {
    TestServer::builder()
        .blueprints([echo_flow::blueprint(), approval_flow::blueprint()])
        .config(|c| {
            c.clients.push(client("alice", "alice-token"));
            c.clients.push(client("bob", "bob-token"));
        })
        .start()
        .await
        .unwrap()
}

/// A browser tab: the session cookie (kept by hand, so its flags can be read) and CSRF token.
struct Tab {
    http: reqwest::Client,
    base: String,
    cookie: String,
    csrf: String,
}

/// Signs in with `token`: the tab and the `Set-Cookie` header as sent.
async fn sign_in(s: &TestServer, token: &str) -> (Tab, String, Value) {
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let r = http.post(s.url("/ui/api/session")).json(&json!({"token": token})).send().await.unwrap();
    assert_eq!(r.status(), 200, "sign-in with {token}");
    let set_cookie = r.headers()[header::SET_COOKIE].to_str().unwrap().to_owned();
    let body: Value = r.json().await.unwrap();
    let cookie = set_cookie.split(';').next().unwrap().to_owned();
    let csrf = body["csrf"].as_str().unwrap().to_owned();
    (Tab { http, base: s.base_url().trim_end_matches('/').to_owned(), cookie, csrf }, set_cookie, body)
}

impl Tab {
    async fn get(&self, path: &str) -> (u16, Value) {
        let r =
            self.http.get(format!("{}{path}", self.base)).header(header::COOKIE, &self.cookie).send().await.unwrap();
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }

    fn post_req(&self, path: &str, body: &Value) -> reqwest::RequestBuilder {
        self.http.post(format!("{}{path}", self.base)).header(header::COOKIE, &self.cookie).json(body)
    }

    async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        let r = self.post_req(path, body).header("x-csrf-token", &self.csrf).send().await.unwrap();
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }

    async fn stream(&self) -> reqwest::Response {
        self.http.get(format!("{}/ui/api/stream", self.base)).header(header::COOKIE, &self.cookie).send().await.unwrap()
    }
}

/// Reads server-sent events from a stream.
struct Events(SseReader);

impl Events {
    fn new(resp: reqwest::Response) -> Events {
        Events(SseReader::new(resp))
    }

    /// The next event (kind, data), comments skipped; panics after [`WAIT`].
    async fn next(&mut self) -> (String, Value) {
        self.0.next_within(WAIT).await.expect("an event within the wait")
    }

    /// Job events until one for `id` arrives; the ids of the jobs seen before it.
    async fn until_job(&mut self, id: &str) -> (Value, Vec<String>) {
        let mut before = Vec::new();
        loop {
            let (kind, data) = self.next().await;
            if kind == "job" {
                let seen = data["id"].as_str().unwrap().to_owned();
                if seen == id {
                    return (data, before);
                }
                before.push(seen);
            }
        }
    }
}

async fn create(s: &TestServer, token: &str, path: &str, data: Value) -> String {
    let r = reqwest::Client::new()
        .post(s.url(&format!("/api/v1/{path}")))
        .header("x-client-token", token)
        .json(&data)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    r.json::<Value>().await.unwrap()["job_id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn sign_in_sets_a_strict_cookie_and_wrong_tokens_are_refused() {
    let s = server().await;
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let r = http.post(s.url("/ui/api/session")).json(&json!({"token": "wrong"})).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.headers().get(header::SET_COOKIE).is_none());
    assert!(r.json::<Value>().await.unwrap()["error"].as_str().unwrap().contains("wrong token"));

    let (alice, set_cookie, body) = sign_in(&s, "alice-token").await;
    assert_eq!((body["role"].as_str(), body["client_id"].as_str()), (Some("client"), Some("toml:alice")), "{body}");
    for flag in ["HttpOnly", "SameSite=Strict", "Path=/ui", "Max-Age=43200"] {
        assert!(set_cookie.contains(flag), "{flag} in {set_cookie}");
    }
    assert!(!set_cookie.contains("Secure"), "no Secure without TLS: {set_cookie}");
    let (status, me) = alice.get("/ui/api/me").await;
    assert_eq!((status, &me["client_id"], &me["csrf"]), (200, &body["client_id"], &body["csrf"]));
    // The session's answers carry the strict headers.
    let r = http.get(s.url("/ui/api/me")).send().await.unwrap();
    assert_eq!(r.status(), 401, "no cookie");
    assert!(r.headers()[header::CONTENT_SECURITY_POLICY].to_str().unwrap().contains("script-src 'self'"));
    assert_eq!(r.headers()[header::CACHE_CONTROL], "no-store");
    assert_eq!(r.headers()[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
    assert_eq!(r.headers()[header::REFERRER_POLICY], "no-referrer");
    let page = http.get(s.url("/ui/jobs")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.headers()[header::CONTENT_SECURITY_POLICY].to_str().unwrap().contains("frame-ancestors 'none'"));

    // A cookie changed by one character is refused.
    let mut forged = alice.cookie.clone().into_bytes();
    let i = forged.len() - 3;
    forged[i] = if forged[i] == b'0' { b'1' } else { b'0' };
    let r =
        http.get(s.url("/ui/api/me")).header(header::COOKIE, String::from_utf8(forged).unwrap()).send().await.unwrap();
    assert_eq!(r.status(), 401);

    let (_, _, op) = sign_in(&s, ADMIN_TOKEN).await;
    assert_eq!((op["role"].as_str(), &op["client_id"]), (Some("operator"), &Value::Null), "{op}");

    // The quickstart's link: signed in and sent to /ui/ without the token in the address.
    let r = http.get(s.url("/ui/login?token=bob-token")).send().await.unwrap();
    assert_eq!((r.status().as_u16(), r.headers()[header::LOCATION].to_str().unwrap()), (303, "/ui/"));
    let cookie = r.headers()[header::SET_COOKIE].to_str().unwrap().split(';').next().unwrap().to_owned();
    let r = http.get(s.url("/ui/api/me")).header(header::COOKIE, &cookie).send().await.unwrap();
    assert_eq!(r.json::<Value>().await.unwrap()["client_id"], "toml:bob");
    let r = http.get(s.url("/ui/login?token=nope")).send().await.unwrap();
    assert_eq!((r.status().as_u16(), r.headers()[header::LOCATION].to_str().unwrap()), (303, "/ui/login?failed=1"));
    assert!(r.headers().get(header::SET_COOKIE).is_none());

    // Signing out clears the cookie.
    let (status, _) = alice.post("/ui/api/logout", &json!({})).await;
    assert_eq!(status, 200);
    s.stop().await.unwrap();
}

#[tokio::test]
async fn posts_need_the_csrf_header_and_this_origin() {
    let s = server().await;
    let (alice, _, _) = sign_in(&s, "alice-token").await;
    let id = create(&s, "alice-token", "jobs/echo", json!({})).await;
    let path = format!("/ui/api/jobs/{id}/cancel");
    let r = alice.post_req(&path, &json!({})).send().await.unwrap();
    assert_eq!(r.status(), 403, "no CSRF header");
    let r = alice.post_req(&path, &json!({})).header("x-csrf-token", "0".repeat(64)).send().await.unwrap();
    assert_eq!(r.status(), 403, "a wrong CSRF header");
    let r = alice
        .post_req(&path, &json!({}))
        .header("x-csrf-token", &alice.csrf)
        .header(header::ORIGIN, "http://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403, "another Origin");
    assert!(r.json::<Value>().await.unwrap()["error"].as_str().unwrap().contains("Origin"));
    // Another session's CSRF token is no good either.
    let (other, _, _) = sign_in(&s, "alice-token").await;
    let r = alice.post_req(&path, &json!({})).header("x-csrf-token", &other.csrf).send().await.unwrap();
    assert_eq!(r.status(), 403);
    let origin = s.base_url().trim_end_matches('/').to_owned();
    let r = alice
        .post_req(&path, &json!({}))
        .header("x-csrf-token", &alice.csrf)
        .header(header::ORIGIN, origin)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "the right header from this origin");
    s.stop().await.unwrap();
}

/// Client B gets 404 for A's job (as for an unknown one) and its stream never carries A's jobs;
/// A's stream delivers the job A creates through the API.
#[tokio::test]
async fn clients_see_only_their_own_jobs_live_and_on_pages() {
    let s = server().await;
    let (alice, _, _) = sign_in(&s, "alice-token").await;
    let (bob, _, _) = sign_in(&s, "bob-token").await;
    let mut alice_events = Events::new(alice.stream().await);
    let mut bob_events = Events::new(bob.stream().await);

    let a_job = create(&s, "alice-token", "jobs/echo", json!({"secret": 1})).await;
    let (row, _) = alice_events.until_job(&a_job).await;
    assert_eq!((row["blueprint"].as_str(), row["client_id"].as_str()), (Some("echo_flow"), Some("toml:alice")));

    let b_job = create(&s, "bob-token", "jobs/echo", json!({})).await;
    let (_, before) = bob_events.until_job(&b_job).await;
    assert!(!before.contains(&a_job), "bob's stream carried alice's job: {before:?}");

    let (status, body) = bob.get(&format!("/ui/api/jobs/{a_job}")).await;
    let unknown = bob.get(&format!("/ui/api/jobs/{}", uuid::Uuid::new_v4())).await;
    assert_eq!((status, &body), (404, &unknown.1), "as unknown as a random id");
    let (status, _) = bob.post(&format!("/ui/api/jobs/{a_job}/cancel"), &json!({})).await;
    assert_eq!(status, 404);
    let (status, page) = alice.get(&format!("/ui/api/jobs/{a_job}")).await;
    assert_eq!((status, page["job"]["id"].as_str()), (200, Some(a_job.as_str())), "{page}");
    let (status, _) = bob.get("/ui/api/jobs/not-a-uuid").await;
    assert_eq!(status, 400);
    s.stop().await.unwrap();
}

/// A job whose skill no worker offers says so; with workers offering it, each one's reason.
#[tokio::test]
async fn why_a_job_waits_names_each_workers_reason() {
    let s = server().await;
    let (op, _, _) = sign_in(&s, ADMIN_TOKEN).await;
    let big = "x".repeat(20_000);
    let lonely = create(&s, "alice-token", "jobs/echo", json!({"big": big})).await;
    let page = tokio::time::timeout(WAIT, async {
        loop {
            let (_, page) = op.get(&format!("/ui/api/jobs/{lonely}")).await;
            if page["job"]["status"] == "waiting_for_worker" {
                return page;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .unwrap();
    let why = &page["why"];
    assert_eq!((why["kind"].as_str(), why["skill"].as_str()), (Some("worker"), Some("echo")), "{why}");
    assert_eq!(why["live_workers_with_skill"], 0, "{why}");
    assert!(why["deadline_ms"].as_u64().is_some(), "{why}");
    let initial = &page["job"]["initial_data"];
    assert_eq!(initial["$truncated"], true, "a 20 KB value is truncated");
    assert!(initial["bytes"].as_u64().unwrap() > 20_000);
    assert_eq!(initial["preview"].as_str().unwrap().len(), 2048);
    assert!(page["timeline"].as_array().unwrap().iter().any(|e| e["kind"] == "job_created"), "{}", page["timeline"]);
    s.core().cancel_job(&lonely).await.unwrap();

    // A busy worker, one the operator drains and one of low reputation: none takes the task.
    let busy = s.raw_worker("w-busy", &["echo"]);
    let drained = s.raw_worker("w-drained", &["echo"]);
    let low = s.raw_worker("w-low", &["echo"]);
    for w in [&busy, &drained, &low] {
        assert_eq!(w.register().await.0, 200);
    }
    assert_eq!(busy.heartbeat(&["some-task"]).await.0, 200);
    let (status, body) = op.post("/ui/api/workers/w-drained/drain", &json!({"reason": "maintenance"})).await;
    assert_eq!((status, body["status"].as_str()), (200, Some("draining")), "{body}");
    s.core().dispatcher().adjust_reputation("w-low", -0.9).await;
    let waiting = create(&s, "alice-token", "jobs/echo", json!({})).await;
    let why = tokio::time::timeout(WAIT, async {
        loop {
            let (_, page) = op.get(&format!("/ui/api/jobs/{waiting}")).await;
            if page["why"]["kind"] == "worker" {
                return page["why"].clone();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .unwrap();
    assert_eq!(why["live_workers_with_skill"], 3, "{why}");
    let reason = |id: &str| {
        why["workers"].as_array().unwrap().iter().find(|w| w["worker_id"] == id).unwrap()["reason"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    assert_eq!(reason("w-busy"), "busy");
    assert_eq!(reason("w-drained"), "draining (by the operator: maintenance)");
    assert!(reason("w-low").starts_with("low reputation 0.10 < "), "{}", reason("w-low"));
    // The drained worker takes nothing new even when it reports idle again.
    assert_eq!(drained.heartbeat(&[]).await.0, 200);
    let (status, _) = drained.poll().await;
    assert_eq!(status, 204, "a drained worker gets no task");
    s.stop().await.unwrap();
}

/// Two approvals at once (a double click): one applies, the other is a 409.
#[tokio::test]
async fn an_approval_applies_once_and_cancel_answers_409_when_ended() {
    let s = server().await;
    let (alice, _, _) = sign_in(&s, "alice-token").await;
    let id = create(&s, "alice-token", "jobs/approval", json!({})).await;
    let page = tokio::time::timeout(WAIT, async {
        loop {
            let (_, page) = alice.get(&format!("/ui/api/jobs/{id}")).await;
            if page["job"]["status"] == "waiting_for_human" {
                return page;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .unwrap();
    assert_eq!(page["why"]["kind"], "approval", "{page}");
    assert_eq!(page["why"]["message"], "please approve");
    assert_eq!(page["why"]["decisions"], json!(["approved", "rejected"]));
    // The wait is counted from when the approval was requested, as recorded on the job.
    let since = page["job"]["approval"]["since_ms"].as_u64().expect("the approval's start");
    assert_eq!(page["why"]["since_ms"].as_u64(), Some(since), "{page}");
    assert!(since >= page["job"]["created_at_ms"].as_u64().unwrap(), "{page}");
    let asked = page["timeline"].as_array().unwrap().iter().find(|e| e["kind"] == "approval_requested");
    assert_eq!(asked.map(|e| e["at_ms"].as_u64()), Some(Some(since)), "{}", page["timeline"]);
    assert_timed(&page["timeline"]);
    let (_, inbox) = alice.get("/ui/api/approvals").await;
    let row = inbox["jobs"].as_array().unwrap().iter().find(|j| j["id"] == id.as_str()).cloned();
    assert_eq!(row.map(|r| r["approval"]["since_ms"].as_u64()), Some(Some(since)), "{inbox}");
    let path = format!("/ui/api/jobs/{id}/approval");
    let body = json!({"decision": "approved"});
    let (a, b) = tokio::join!(alice.post(&path, &body), alice.post(&path, &body));
    let mut statuses = [a.0, b.0];
    statuses.sort();
    assert_eq!(statuses, [200, 409], "{a:?} {b:?}");
    let (_, page) = alice.get(&format!("/ui/api/jobs/{id}")).await;
    assert_eq!(
        (page["job"]["status"].as_str(), page["job"]["current_state"].as_str()),
        (Some("finished"), Some("approved"))
    );
    assert_eq!(page["why"], Value::Null);
    let (status, body) = alice.post(&format!("/ui/api/jobs/{id}/cancel"), &json!({})).await;
    assert_eq!(status, 409, "an ended job: {body}");

    let other = create(&s, "alice-token", "jobs/echo", json!({})).await;
    let (status, body) = alice.post(&format!("/ui/api/jobs/{other}/cancel"), &json!({})).await;
    assert_eq!((status, body), (200, json!({"status": "cancelled"})));
    let (_, page) = alice.get(&format!("/ui/api/jobs/{other}")).await;
    assert_eq!(page["job"]["status"], "cancelled");
    s.stop().await.unwrap();
}

/// Every timeline row has its time.
fn assert_timed(timeline: &Value) {
    let rows = timeline.as_array().expect("a timeline");
    assert!(!rows.is_empty());
    for r in rows {
        assert!(r["at_ms"].as_u64().is_some_and(|t| t > 0), "a row without a time: {r}");
    }
}

/// `/ui/api/jobs/{id}` once `done` holds for it.
async fn page_when(tab: &Tab, id: &str, done: impl Fn(&Value) -> bool) -> Value {
    tokio::time::timeout(WAIT, async {
        loop {
            let (_, page) = tab.get(&format!("/ui/api/jobs/{id}")).await;
            if done(&page) {
                return page;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("job {id} never got there"))
}

/// The `poll` worker of `poll_flow`: `{"mode": "flaky"}` fails transiently every time; else the
/// first answer is a transient failure, the next two `pending` and then `ready`.
fn poll_server(history: bool) -> avto::testing::TestServerBuilder {
    use avto::worker::{TaskHandle, TaskOutcome};
    use std::sync::atomic::{AtomicU32, Ordering};
    let calls = std::sync::Arc::new(AtomicU32::new(0));
    let b = TestServer::builder()
        .blueprints([avto_tests::blueprints::poll_flow::blueprint(), approval_flow::blueprint()])
        .config(|c| {
            c.clients.push(client("alice", "alice-token"));
            c.job_max_retries = 5;
        })
        .worker("poll", move |p: Value, _t: TaskHandle| {
            let n = calls.fetch_add(1, Ordering::SeqCst);
            async move {
                match (p["mode"].as_str(), n) {
                    (Some("flaky"), _) | (_, 0) => TaskOutcome::failure("TRANSIENT_ERROR", "the service is busy"),
                    (_, 1 | 2) => TaskOutcome::status("pending", json!({})),
                    _ => TaskOutcome::status("ready", json!({"polls": n})),
                }
            }
        });
    if history {
        b.env("HISTORY_DATABASE_URI", "memory:")
    } else {
        b
    }
}

/// A loop (`check -> wait -> check`, three times round) with the history on: every transition
/// and task attempt on the timeline with its time, the worker, attempt n of N, the error class
/// of the failed attempt and when it was retried.
#[tokio::test]
async fn a_loop_s_timeline_has_every_attempt_with_its_time() {
    let s = poll_server(true).start().await.unwrap();
    let (alice, _, _) = sign_in(&s, "alice-token").await;
    let id = create(&s, "alice-token", "jobs/poll", json!({})).await;
    let page = page_when(&alice, &id, |p| p["job"]["status"] == "finished").await;
    let timeline = &page["timeline"];
    assert_timed(timeline);
    let rows = timeline.as_array().unwrap();
    let of = |kind: &str| rows.iter().filter(|r| r["kind"] == kind).collect::<Vec<_>>();
    let checks = of("state_started").iter().filter(|r| r["state"] == "check").count();
    assert_eq!(checks, 3, "the loop went round three times: {timeline}");
    assert_eq!(
        page["job"]["path"],
        json!(["check", "wait", "check", "wait", "check", "done"]),
        "{}",
        page["job"]["path"]
    );
    // four attempts of `poll`: the first failed (transient) and was retried
    let finished = of("task_finished");
    assert_eq!(finished.len(), 4, "{timeline}");
    for f in &finished {
        assert_eq!(f["worker_id"], "poll-worker", "{f}");
        assert_eq!(f["max_attempts"], 6, "JOB_MAX_RETRIES 5: six attempts at most: {f}");
        assert_eq!(f["task_type"], "poll", "{f}");
    }
    let failed = finished[0];
    assert_eq!((failed["result"].as_str(), failed["attempt"].as_u64()), (Some("failure"), Some(1)), "{failed}");
    assert_eq!(
        (failed["error_code"].as_str(), failed["error_class"].as_str()),
        (Some("TRANSIENT_ERROR"), Some("transient"))
    );
    assert_eq!(finished[1]["attempt"], 2, "the retry is attempt 2: {}", finished[1]);
    let retry = of("task_retry");
    assert_eq!(retry.len(), 1, "{timeline}");
    let next = retry[0]["next_retry_at_ms"].as_u64().expect("the retry's time");
    assert!(next >= retry[0]["at_ms"].as_u64().unwrap(), "{}", retry[0]);
    s.stop().await.unwrap();
}

/// Without history the timeline comes from the job's record: every row has its time, a task
/// being retried shows its attempt, the last error's class and when it goes out; a failed
/// handler awaiting its retry has the retry's time.
#[tokio::test]
async fn the_record_s_timeline_has_times_attempts_and_retry_times() {
    let s = poll_server(false).start().await.unwrap();
    let (alice, _, _) = sign_in(&s, "alice-token").await;

    let looped = create(&s, "alice-token", "jobs/poll", json!({})).await;
    let page = page_when(&alice, &looped, |p| p["job"]["status"] == "finished").await;
    assert_timed(&page["timeline"]);
    let entered: Vec<&str> = page["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["kind"] == "state_entered")
        .map(|r| r["state"].as_str().unwrap())
        .collect();
    assert_eq!(entered, ["wait", "check", "wait", "check", "done"]);

    let flaky = create(&s, "alice-token", "jobs/poll", json!({"mode": "flaky"})).await;
    let page = page_when(&alice, &flaky, |p| p["job"]["current_task"]["attempt"].as_u64() >= Some(2)).await;
    assert_timed(&page["timeline"]);
    let task = page["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["task_id"] == page["job"]["current_task"]["task_id"] && r["attempt"].is_u64())
        .cloned()
        .unwrap_or_else(|| panic!("the retried task on the timeline: {}", page["timeline"]));
    assert!(task["attempt"].as_u64().unwrap() >= 2, "{task}");
    assert_eq!(task["max_attempts"], 6, "{task}");
    assert_eq!(
        (task["error_code"].as_str(), task["error_class"].as_str()),
        (Some("TRANSIENT_ERROR"), Some("transient"))
    );
    assert_eq!(task["next_retry_at_ms"], page["job"]["current_task"]["dispatched_at_ms"], "{task}");
    s.core().cancel_job(&flaky).await.unwrap();

    let broken = create(&s, "alice-token", "jobs/poll", json!({"mode": "broken"})).await;
    let page = page_when(&alice, &broken, |p| p["job"]["status"] == "awaiting_retry").await;
    assert_timed(&page["timeline"]);
    let next = page["job"]["next_retry_at_ms"].as_u64().expect("the retry's time on the job");
    assert_eq!(page["why"]["kind"], "retry", "{}", page["why"]);
    assert_eq!(page["why"]["next_retry_at_ms"].as_u64(), Some(next), "{}", page["why"]);
    assert_eq!(page["why"]["max_attempts"], 6, "{}", page["why"]);
    let failed = page["timeline"].as_array().unwrap().iter().find(|r| r["kind"] == "state_failed").cloned();
    assert_eq!(failed.map(|r| r["next_retry_at_ms"].as_u64()), Some(Some(next)), "{}", page["timeline"]);
    s.core().cancel_job(&broken).await.unwrap();
    let (_, page) = alice.get(&format!("/ui/api/jobs/{broken}")).await;
    assert_eq!(page["job"]["next_retry_at_ms"], Value::Null, "an ended job waits for no retry");
    s.stop().await.unwrap();
}

#[tokio::test]
async fn workers_are_the_operators() {
    let s = server().await;
    let (alice, _, _) = sign_in(&s, "alice-token").await;
    let (op, _, _) = sign_in(&s, ADMIN_TOKEN).await;
    let w = s.raw_worker("w-listed", &["echo"]);
    assert_eq!(w.register().await.0, 200);
    assert_eq!(alice.get("/ui/api/workers").await.0, 403);
    assert_eq!(alice.post("/ui/api/workers/w-listed/drain", &json!({"reason": "x"})).await.0, 403);
    let (status, body) = op.get("/ui/api/workers").await;
    assert_eq!(status, 200);
    let listed = body["workers"].as_array().unwrap().iter().find(|w| w["worker_id"] == "w-listed").unwrap().clone();
    assert_eq!(listed["skills"][0]["name"], "echo");
    assert_eq!((listed["status"].as_str(), listed["stale"].as_bool()), (Some("idle"), Some(false)), "{listed}");
    assert_eq!(listed["reputation_trend"], json!([1.0]), "{listed}");
    assert!(listed["heartbeat_age_ms"].as_u64().is_some(), "{listed}");
    assert_eq!(listed["resources"], json!({"properties": {"cpu_cores": 1}}));
    assert_eq!(op.post("/ui/api/workers/nobody/drain", &json!({})).await.0, 404);
    assert_eq!(op.post("/ui/api/workers/bad id!/drain", &json!({})).await.0, 400);
    let (status, _) = op.post("/ui/api/workers/w-listed/drain", &json!({"reason": "disk"})).await;
    assert_eq!(status, 200);
    let (_, body) = op.get("/ui/api/workers").await;
    let listed = body["workers"].as_array().unwrap().iter().find(|w| w["worker_id"] == "w-listed").unwrap().clone();
    assert_eq!((listed["status"].as_str(), listed["draining_reason"].as_str()), (Some("draining"), Some("disk")));
    s.stop().await.unwrap();
}

/// The operator's stream carries worker changes and once-a-second stats.
#[tokio::test]
async fn the_operators_stream_has_workers_and_stats() {
    let s = server().await;
    let (op, _, _) = sign_in(&s, ADMIN_TOKEN).await;
    let mut events = Events::new(op.stream().await);
    let w = s.raw_worker("w-streamed", &["echo"]);
    assert_eq!(w.register().await.0, 200);
    let (mut worker, mut stats) = (None, None);
    while worker.is_none() || stats.is_none() {
        let (kind, data) = events.next().await;
        match kind.as_str() {
            "worker" if data["worker_id"] == "w-streamed" => worker = Some(data),
            "stats" => stats = Some(data),
            _ => {}
        }
    }
    assert_eq!(worker.unwrap(), json!({"worker_id": "w-streamed", "status": "idle", "removed": false}));
    let stats = stats.unwrap();
    assert!(stats["jobs_per_sec"].as_f64().is_some() && stats["queues"].is_object(), "{stats}");
    s.stop().await.unwrap();
}

/// At most 64 streams per session: the 65th is a 429 with a JSON body; closing streams frees them.
#[tokio::test]
async fn open_streams_are_bounded() {
    let s = server().await;
    let (alice, _, _) = sign_in(&s, "alice-token").await;
    let mut open = Vec::new();
    for _ in 0..64 {
        let r = alice.stream().await;
        assert_eq!(r.status(), 200);
        open.push(r);
    }
    let r = alice.stream().await;
    assert_eq!(r.status(), 429);
    assert!(r.json::<Value>().await.unwrap()["error"].as_str().unwrap().contains("too many open streams"));
    // Another session is not affected.
    let (bob, _, _) = sign_in(&s, "bob-token").await;
    assert_eq!(bob.stream().await.status(), 200);
    drop(open);
    // The server notices closed streams when it next writes to them (stats, every second).
    tokio::time::timeout(WAIT, async {
        while alice.stream().await.status() != 200 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("a stream again once the others closed");
    s.stop().await.unwrap();
}

/// An open stream does not hold up the graceful shutdown: it ends with a `shutdown` event.
#[tokio::test]
async fn a_stream_ends_at_shutdown() {
    let s = server().await;
    let (alice, _, _) = sign_in(&s, "alice-token").await;
    let mut events = Events::new(alice.stream().await);
    let stopping = tokio::spawn(s.stop());
    loop {
        if events.next().await.0 == "shutdown" {
            break;
        }
    }
    tokio::time::timeout(WAIT, stopping).await.expect("the server stops").unwrap().unwrap();
}

/// Wrong tokens count against the caller's address like the client API's: past
/// `RATE_LIMIT_LIMIT`, sign-in answers 429.
#[tokio::test]
async fn wrong_sign_ins_are_rate_limited() {
    let s = TestServer::builder()
        .blueprint(echo_flow::blueprint())
        .env("RATE_LIMITING_ENABLED", "true")
        .env("RATE_LIMIT_LIMIT", "3")
        .env("RATE_LIMIT_PERIOD", "60")
        .start()
        .await
        .unwrap();
    let http = reqwest::Client::new();
    let mut statuses = Vec::new();
    for _ in 0..5 {
        let r = http.post(s.url("/ui/api/session")).json(&json!({"token": "guess"})).send().await.unwrap();
        statuses.push(r.status().as_u16());
    }
    assert_eq!(statuses, [401, 401, 401, 429, 429]);
    s.stop().await.unwrap();
}
