//! The scheduler: schedules.toml validated at start-up, a 1 s interval firing on the real clock,
//! calendar triggers on a manual clock, and each fire happening once across instances.

use std::sync::Arc;
use std::time::Duration;

use avto::history::MemoryHistory;
use avto::prelude::*;
use avto::server::ManualClock;
use avto::server::{Orchestrator, ServeError};
use avto::storage::memory::MemoryScheduleLocks;
use avto::storage::ScheduleLocks;
use avto_tests::{test_config, Server};
use chrono::{DateTime, TimeZone, Utc};
use serde_json::json;

#[avto::blueprint(name = "report_flow")]
pub mod report_flow {
    use super::*;

    #[handler(state = "start", start)]
    async fn start(actions: &mut Actions) {
        actions.transition_to("done");
    }

    #[handler(state = "done", end)]
    async fn done() {}
}

/// A schedules.toml in the temp dir, removed on drop.
struct TomlFile(std::path::PathBuf);

impl TomlFile {
    fn new(text: &str) -> TomlFile {
        let p = std::env::temp_dir().join(format!("avto-schedules-{}.toml", uuid::Uuid::new_v4().simple()));
        std::fs::write(&p, text).unwrap();
        TomlFile(p)
    }
}

impl Drop for TomlFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn build(
    toml: &TomlFile,
    clock: Arc<ManualClock>,
    locks: Arc<dyn ScheduleLocks>,
    instance: &str,
) -> Result<Orchestrator, ServeError> {
    let mut cfg = test_config();
    cfg.schedules_config_path = Some(toml.0.clone());
    cfg.instance_id = instance.into();
    Orchestrator::builder()
        .blueprint(report_flow::blueprint())
        .config(cfg)
        .clock(clock)
        .schedule_locks(locks)
        .history(Arc::new(MemoryHistory::new()))
        .build()
}

async fn scheduled_jobs(o: &Orchestrator) -> Vec<avto::Job> {
    o.core().jobs().list("system:scheduler", 1000, 0).await.unwrap()
}

fn tokyo(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> DateTime<Utc> {
    chrono_tz::Asia::Tokyo.with_ymd_and_hms(y, mo, d, h, mi, s).unwrap().with_timezone(&Utc)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interval_fires_every_second_on_the_real_clock() {
    let toml = TomlFile::new(
        r#"
        [every_second]
        blueprint = "report_flow"
        interval_seconds = 1
        input_data = { kind = "tick" }
        metadata = { team = "ops" }
        "#,
    );
    let mut cfg = test_config();
    cfg.schedules_config_path = Some(toml.0.clone());
    let s = Server::with_config([report_flow::blueprint()], cfg).await;
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let jobs = s.core.jobs().list("system:scheduler", 100, 0).await.unwrap();
    assert!((2..=5).contains(&jobs.len()), "{} jobs in 3.5 s", jobs.len());
    for j in &jobs {
        assert_eq!(j.blueprint, "report_flow");
        assert_eq!(j.initial_data, json!({"kind": "tick"}));
        let meta = j.metadata.as_ref().unwrap();
        assert_eq!(meta["source"], "scheduler:every_second");
        assert_eq!(meta["team"], "ops");
        assert!(meta["scheduled_for"].as_str().unwrap().ends_with('Z'));
    }
    // Fire times are distinct whole seconds.
    let mut due: Vec<&str> =
        jobs.iter().map(|j| j.metadata.as_ref().unwrap()["scheduled_for"].as_str().unwrap()).collect();
    due.sort();
    due.dedup();
    assert_eq!(due.len(), jobs.len());
    let done = jobs.iter().filter(|j| j.status == avto::JobStatus::Finished).count();
    assert!(done >= 1, "scheduled jobs run like any other");
    let metrics = reqwest::Client::new().get(s.url("/metrics")).bearer_auth(avto_tests::ADMIN_TOKEN).send().await;
    let text = metrics.unwrap().text().await.unwrap();
    assert!(text.contains("avto_scheduler_jobs_triggered_total{schedule=\"every_second\"}"), "{text}");
}

#[tokio::test]
async fn daily_weekly_monthly_on_a_manual_clock() {
    let toml = TomlFile::new(
        r#"
        [daily]
        blueprint = "report_flow"
        daily_at = "12:00"
        timezone = "Asia/Tokyo"

        [weekly]
        blueprint = "report_flow"
        weekly_days = ["sat"]
        time = "12:00"
        timezone = "Asia/Tokyo"

        [monthly]
        blueprint = "report_flow"
        monthly_dates = [2]
        time = "12:00"
        timezone = "Asia/Tokyo"
        "#,
    );
    // 2026-05-01 is a Friday; the 2nd a Saturday.
    let clock = Arc::new(ManualClock::new(tokyo(2026, 5, 1, 11, 59, 30)));
    let o = build(&toml, clock.clone(), Arc::new(MemoryScheduleLocks::new()), "a").unwrap();
    let sched = o.scheduler().expect("scheduler configured").clone();

    assert!(sched.tick().await.is_empty(), "30 s early");
    clock.set(tokyo(2026, 5, 1, 12, 0, 5));
    let fired = sched.tick().await;
    assert_eq!(fired.iter().map(|f| f.schedule.as_str()).collect::<Vec<_>>(), ["daily"]);
    assert_eq!(fired[0].due, tokyo(2026, 5, 1, 12, 0, 0));
    assert!(sched.tick().await.is_empty(), "once per fire time");
    clock.set(tokyo(2026, 5, 1, 12, 0, 59));
    assert!(sched.tick().await.is_empty());

    // Next day (Saturday the 2nd): all three.
    clock.set(tokyo(2026, 5, 2, 12, 0, 1));
    let mut names: Vec<String> = sched.tick().await.into_iter().map(|f| f.schedule).collect();
    names.sort();
    assert_eq!(names, ["daily", "monthly", "weekly"]);

    // A stall of more than the grace period skips the missed fire instead of firing late...
    clock.set(tokyo(2026, 5, 3, 12, 30, 0));
    assert!(sched.tick().await.is_empty());
    // ...and the schedule carries on the next day.
    clock.set(tokyo(2026, 5, 4, 12, 0, 0));
    assert_eq!(sched.tick().await.len(), 1);

    let jobs = scheduled_jobs(&o).await;
    assert_eq!(jobs.len(), 5);
    assert!(jobs.iter().any(|j| j.metadata.as_ref().unwrap()["scheduled_for"] == "2026-05-02T12:00:00+09:00"));

    // The history tells where the job came from.
    let h = o.core().history().unwrap();
    let rows = h.job_history(&jobs[0].id).await.unwrap();
    assert_eq!(rows[0].event_type, "job_created");
    assert_eq!(rows[0].client.as_deref(), Some("scheduler"));
    assert!(rows[0].details.as_ref().unwrap()["source"].as_str().unwrap().starts_with("scheduler:"));
}

#[tokio::test]
async fn each_fire_happens_once_across_instances() {
    let toml = TomlFile::new(
        r#"
        [often]
        blueprint = "report_flow"
        interval_seconds = 10

        [noon]
        blueprint = "report_flow"
        daily_at = "12:00"
        "#,
    );
    let start = Utc.with_ymd_and_hms(2026, 6, 1, 11, 59, 55).unwrap();
    let clock = Arc::new(ManualClock::new(start));
    let locks: Arc<dyn ScheduleLocks> = Arc::new(MemoryScheduleLocks::new());
    let instances: Vec<Orchestrator> =
        ["a", "b", "c"].iter().map(|i| build(&toml, clock.clone(), locks.clone(), i).unwrap()).collect();

    let mut total = 0;
    for step in 1..=30 {
        clock.advance(Duration::from_secs(2));
        // All instances tick concurrently at the same instant.
        let fired = futures::future::join_all(instances.iter().map(|o| {
            let s = o.scheduler().unwrap().clone();
            async move { s.tick().await }
        }))
        .await;
        let n: usize = fired.iter().map(Vec::len).sum();
        total += n;
        let now = start + chrono::Duration::seconds(2 * step);
        let t = now.timestamp();
        let expected = usize::from(t.div_euclid(10) > (t - 2).div_euclid(10))
            + usize::from(now == Utc.with_ymd_and_hms(2026, 6, 1, 12, 0, 1).unwrap());
        assert_eq!(n, expected, "step {step} at {now}: {fired:?}");
    }
    // 60 s of 10 s slots after 11:59:55 = 6, plus noon once.
    assert_eq!(total, 7);
    let mut jobs = 0;
    for o in &instances {
        jobs += scheduled_jobs(o).await.len();
    }
    assert_eq!(jobs, 7);
}

#[tokio::test]
async fn invalid_schedules_stop_the_start() {
    let clock = Arc::new(ManualClock::new(Utc::now()));
    let locks: Arc<dyn ScheduleLocks> = Arc::new(MemoryScheduleLocks::new());
    let cases = [
        ("[a]\nblueprint = \"nope\"\ninterval_seconds = 5", "[a] unknown blueprint `nope` (registered: report_flow)"),
        ("[a]\nblueprint = \"report_flow\"\ndaily_at = \"24:00\"", "not a time \"HH:MM\""),
        ("[a]\nblueprint = \"report_flow\"\ndaily_at = \"10:00\"\ninterval_seconds = 5", "choose exactly one"),
        (
            "[a]\nblueprint = \"report_flow\"\ninterval_seconds = 5\ntimezone = \"Moon/Base\"",
            "unknown time zone `Moon/Base`",
        ),
        ("[a]\nblueprint = \"report_flow\"\nevery = 5", "unknown key `every`"),
        ("[a\n", "TOML"),
    ];
    for (text, want) in cases {
        let toml = TomlFile::new(text);
        let err = build(&toml, clock.clone(), locks.clone(), "x").unwrap_err().to_string();
        assert!(err.contains(want) || (want == "TOML" && err.contains("SCHEDULES_CONFIG_PATH")), "{text:?}: {err}");
        assert!(err.contains(&toml.0.display().to_string()), "names the file: {err}");
    }
    let mut cfg = test_config();
    cfg.schedules_config_path = Some("/nonexistent/schedules.toml".into());
    let err = Orchestrator::builder().blueprint(report_flow::blueprint()).config(cfg).build().unwrap_err();
    assert!(err.to_string().contains("cannot read"), "{err}");
    // TZ is validated with the rest of the environment.
    let e = avto::server::Config::from_lookup(&|k| (k == "TZ").then(|| "Not/AZone".to_string())).unwrap_err();
    assert!(e.0.contains("TZ: unknown time zone"), "{e}");
}
