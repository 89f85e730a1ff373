//! The scheduler: `SCHEDULES_CONFIG_PATH` (schedules.toml) creates jobs on a timetable.
//!
//! ```toml
//! [nightly_report]                 # table name = schedule name
//! blueprint = "report_flow"        # required, must be registered
//! input_data = { kind = "daily" }  # optional, default {}
//! daily_at = "02:30"               # exactly one trigger: interval_seconds, daily_at,
//!                                  #   weekly_days + time, or monthly_dates + time
//! timezone = "Europe/Berlin"       # optional, default TZ (default UTC)
//! # optional: dispatch_timeout, result_timeout (seconds), security, metadata (tables)
//!
//! [heartbeat]
//! blueprint = "ping_flow"
//! interval_seconds = 60
//!
//! [weekly]
//! blueprint = "report_flow"
//! weekly_days = ["mon", "fri"]
//! time = "09:00"
//!
//! [billing]
//! blueprint = "billing_flow"
//! monthly_dates = [1, 15]
//! time = "06:00"
//! ```
//!
//! The file is validated at start-up: an unknown blueprint, a bad time or day, a missing or a
//! second trigger, an unknown key or time zone stops the orchestrator with a message naming the
//! schedule.
//!
//! Fire times:
//! * `interval_seconds = N`: at every multiple of N seconds since the Unix epoch (so every
//!   instance computes the same fire times: `3600` fires at the top of each UTC hour); the first
//!   fire is the first such time after start.
//! * calendar triggers: at `HH:MM:00` local time of the schedule's zone on matching days
//!   (`monthly_dates = [31]` skips shorter months). Starting within the due minute still fires.
//!   A local time that does not exist (DST gap) fires at the first instant after the gap.
//!
//! Each `(schedule, fire time)` is claimed through [`ScheduleLocks::claim`], an atomic
//! set-if-absent shared by all instances (in memory for one instance; a Redis implementation
//! makes several instances fire each time exactly once). A fire more than
//! [`MISFIRE_GRACE`] late (the process was stalled) is skipped with a warning.
//!
//! Jobs are created through [`Core::create_job`] as the client `scheduler` (plan `system`), with
//! `metadata.source = "scheduler:<name>"` and `metadata.scheduled_for` (ISO time of the fire).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Datelike, NaiveTime, TimeZone, Timelike, Utc, Weekday};
use chrono_tz::Tz;
use parking_lot::Mutex;
use serde_json::{json, Map, Value};

use super::config::{parse_tz, ClientEntry, ConfigError};
use super::core::{Core, NewJob};
use crate::context::ClientConfig;
use crate::storage::ScheduleLocks;

/// A fire later than this after its due time is skipped (logged).
pub(super) const MISFIRE_GRACE: Duration = Duration::from_secs(300);
/// How often the scheduler loop looks at the clock.
pub(super) const TICK: Duration = Duration::from_secs(1);

/// Where the scheduler reads the time (tests use [`ManualClock`]).
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> DateTime<Utc>;
}

/// The system clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A clock that moves only when told to.
#[derive(Debug)]
pub struct ManualClock(Mutex<DateTime<Utc>>);

impl ManualClock {
    pub fn new(now: DateTime<Utc>) -> Self {
        ManualClock(Mutex::new(now))
    }
    pub fn set(&self, now: DateTime<Utc>) {
        *self.0.lock() = now;
    }
    pub fn advance(&self, by: Duration) {
        let mut t = self.0.lock();
        *t += chrono::Duration::from_std(by).unwrap_or_default();
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.0.lock()
    }
}

/// When a schedule fires.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Trigger {
    /// Every N seconds (epoch-aligned).
    Interval { seconds: u64 },
    /// At `at` local time on days that match (`None` = every day).
    Calendar { at: NaiveTime, weekdays: Option<Vec<Weekday>>, month_days: Option<Vec<u32>> },
}

/// One validated entry of schedules.toml.
#[derive(Debug, Clone, PartialEq)]
pub struct Schedule {
    pub name: String,
    pub blueprint: String,
    pub input_data: Value,
    pub trigger: Trigger,
    pub timezone: Tz,
    pub dispatch_timeout: Option<f64>,
    pub result_timeout: Option<f64>,
    pub security: Option<Value>,
    pub metadata: Option<Value>,
}

const KEYS: &[&str] = &[
    "blueprint",
    "input_data",
    "interval_seconds",
    "daily_at",
    "weekly_days",
    "monthly_dates",
    "time",
    "timezone",
    "dispatch_timeout",
    "result_timeout",
    "security",
    "metadata",
];

fn parse_time(v: &toml::Value, what: &str, err: &dyn Fn(String) -> ConfigError) -> Result<NaiveTime, ConfigError> {
    let s = v.as_str().ok_or_else(|| err(format!("`{what}` must be a string \"HH:MM\"")))?;
    let bad = || err(format!("`{what}` = {s:?} is not a time \"HH:MM\" (00:00 to 23:59)"));
    let (h, m) = s.split_once(':').ok_or_else(bad)?;
    if h.is_empty() || h.len() > 2 || m.len() != 2 {
        return Err(bad());
    }
    let (h, m): (u32, u32) = (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
    NaiveTime::from_hms_opt(h, m, 0).ok_or_else(bad)
}

fn parse_weekday(s: &str) -> Option<Weekday> {
    let s = s.to_ascii_lowercase();
    let days = [
        ("mon", Weekday::Mon, "monday"),
        ("tue", Weekday::Tue, "tuesday"),
        ("wed", Weekday::Wed, "wednesday"),
        ("thu", Weekday::Thu, "thursday"),
        ("fri", Weekday::Fri, "friday"),
        ("sat", Weekday::Sat, "saturday"),
        ("sun", Weekday::Sun, "sunday"),
    ];
    days.iter().find(|(short, _, long)| s == *short || s == *long).map(|(_, d, _)| *d)
}

fn seconds(t: &toml::Table, key: &str, err: &dyn Fn(String) -> ConfigError) -> Result<Option<f64>, ConfigError> {
    match t.get(key) {
        None => Ok(None),
        Some(v) => match v.as_float().or_else(|| v.as_integer().map(|i| i as f64)) {
            Some(f) if f > 0.0 && f <= super::config::MAX_CONFIG_SECONDS => Ok(Some(f)),
            _ => Err(err(format!(
                "`{key}` must be a positive number of seconds up to {}",
                super::config::MAX_CONFIG_SECONDS
            ))),
        },
    }
}

fn table(t: &toml::Table, key: &str, err: &dyn Fn(String) -> ConfigError) -> Result<Option<Value>, ConfigError> {
    match t.get(key) {
        None => Ok(None),
        Some(toml::Value::Table(m)) => Ok(Some(serde_json::to_value(m).unwrap_or(Value::Null))),
        Some(_) => Err(err(format!("`{key}` must be a table"))),
    }
}

/// Validates schedules.toml (`blueprints` = the registered names).
pub(super) fn parse_schedules(
    doc: toml::Table,
    origin: &str,
    blueprints: &[&str],
    default_tz: Tz,
) -> Result<Vec<Schedule>, ConfigError> {
    let mut out = Vec::new();
    for (name, value) in doc {
        let err = |m: String| ConfigError(format!("{origin}: [{name}] {m}"));
        let toml::Value::Table(t) = value else {
            return Err(ConfigError(format!("{origin}: `{name}` must be a table ([{name}])")));
        };
        if let Some(k) = t.keys().find(|k| !KEYS.contains(&k.as_str())) {
            return Err(err(format!("unknown key `{k}` (valid keys: {})", KEYS.join(", "))));
        }
        let blueprint = match t.get("blueprint") {
            Some(toml::Value::String(b)) => b.clone(),
            Some(_) => return Err(err("`blueprint` must be a string".into())),
            None => return Err(err("needs `blueprint = \"<name>\"`".into())),
        };
        if !blueprints.contains(&blueprint.as_str()) {
            return Err(err(format!("unknown blueprint `{blueprint}` (registered: {})", blueprints.join(", "))));
        }
        let input_data = match t.get("input_data") {
            None => Value::Object(Map::new()),
            Some(toml::Value::Table(m)) => serde_json::to_value(m).unwrap_or_default(),
            Some(_) => return Err(err("`input_data` must be a table".into())),
        };
        let kinds: Vec<&str> = ["interval_seconds", "daily_at", "weekly_days", "monthly_dates"]
            .into_iter()
            .filter(|k| t.contains_key(*k))
            .collect();
        let trigger = match kinds.as_slice() {
            [] => {
                return Err(err(
                    "needs a trigger: interval_seconds, daily_at, weekly_days + time, or monthly_dates + time".into(),
                ))
            }
            [_, _, ..] => {
                return Err(err(format!("has {} triggers; choose exactly one", kinds.join(" and "))));
            }
            ["interval_seconds"] => {
                if t.contains_key("time") {
                    return Err(err("`time` goes with weekly_days or monthly_dates, not interval_seconds".into()));
                }
                match t["interval_seconds"].as_integer() {
                    Some(n) if (1..=super::config::MAX_CONFIG_SECONDS as i64).contains(&n) => {
                        Trigger::Interval { seconds: n as u64 }
                    }
                    _ => {
                        return Err(err(format!(
                            "`interval_seconds` must be a whole number of seconds from 1 to {}",
                            super::config::MAX_CONFIG_SECONDS
                        )))
                    }
                }
            }
            ["daily_at"] => {
                if t.contains_key("time") {
                    return Err(err(
                        "`time` goes with weekly_days or monthly_dates; daily_at already has the time".into()
                    ));
                }
                Trigger::Calendar {
                    at: parse_time(&t["daily_at"], "daily_at", &err)?,
                    weekdays: None,
                    month_days: None,
                }
            }
            [kind] => {
                let at = match t.get("time") {
                    Some(v) => parse_time(v, "time", &err)?,
                    None => return Err(err(format!("`{kind}` needs `time = \"HH:MM\"`"))),
                };
                let list = t[*kind].as_array().filter(|a| !a.is_empty());
                let Some(list) = list else { return Err(err(format!("`{kind}` must be a non-empty list"))) };
                if *kind == "weekly_days" {
                    let mut days = Vec::new();
                    for d in list {
                        match d.as_str().and_then(parse_weekday) {
                            Some(day) => days.push(day),
                            None => {
                                return Err(err(format!(
                                    "`weekly_days` has {d}; expected mon, tue, wed, thu, fri, sat or sun"
                                )))
                            }
                        }
                    }
                    Trigger::Calendar { at, weekdays: Some(days), month_days: None }
                } else {
                    let mut dates = Vec::new();
                    for d in list {
                        match d.as_integer() {
                            Some(n @ 1..=31) => dates.push(n as u32),
                            _ => return Err(err(format!("`monthly_dates` has {d}; expected days 1 to 31"))),
                        }
                    }
                    Trigger::Calendar { at, weekdays: None, month_days: Some(dates) }
                }
            }
        };
        let timezone = match t.get("timezone") {
            None => default_tz,
            Some(toml::Value::String(z)) => parse_tz(z).map_err(err)?,
            Some(_) => return Err(err("`timezone` must be a string".into())),
        };
        out.push(Schedule {
            trigger,
            timezone,
            input_data,
            dispatch_timeout: seconds(&t, "dispatch_timeout", &err)?,
            result_timeout: seconds(&t, "result_timeout", &err)?,
            security: table(&t, "security", &err)?,
            metadata: table(&t, "metadata", &err)?,
            blueprint,
            name: name.clone(),
        });
    }
    Ok(out)
}

/// Reads and validates a schedules.toml file.
pub(super) fn load_schedules(path: &Path, blueprints: &[&str], default_tz: Tz) -> Result<Vec<Schedule>, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError(format!("SCHEDULES_CONFIG_PATH {}: cannot read: {e}", path.display())))?;
    let doc = text
        .parse::<toml::Table>()
        .map_err(|e| ConfigError(format!("SCHEDULES_CONFIG_PATH {}: {e}", path.display())))?;
    parse_schedules(doc, &path.display().to_string(), blueprints, default_tz)
}

fn floor_minute(t: DateTime<Utc>) -> DateTime<Utc> {
    t.with_second(0).and_then(|t| t.with_nanosecond(0)).unwrap_or(t)
}

impl Schedule {
    fn day_matches(&self, date: chrono::NaiveDate) -> bool {
        match &self.trigger {
            Trigger::Interval { .. } => true,
            Trigger::Calendar { weekdays, month_days, .. } => {
                weekdays.as_ref().is_none_or(|w| w.contains(&date.weekday()))
                    && month_days.as_ref().is_none_or(|m| m.contains(&date.day()))
            }
        }
    }

    /// The fire instant on a local date (a time in a DST gap moves past the gap).
    fn on_date(&self, date: chrono::NaiveDate, at: NaiveTime) -> Option<DateTime<Utc>> {
        let local = date.and_time(at);
        let tz = self.timezone;
        tz.from_local_datetime(&local)
            .earliest()
            .or_else(|| {
                (1..=4).find_map(|h| tz.from_local_datetime(&(local + chrono::Duration::minutes(30 * h))).earliest())
            })
            .map(|t| t.with_timezone(&Utc))
    }

    /// The first fire time at or after `t`.
    pub fn at_or_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match &self.trigger {
            Trigger::Interval { seconds } => {
                let p = *seconds as i64 * 1000;
                let ms = t.timestamp_millis();
                let slot = ms.div_euclid(p) + i64::from(ms.rem_euclid(p) != 0);
                DateTime::from_timestamp_millis(slot * p)
            }
            Trigger::Calendar { at, .. } => {
                let start = t.with_timezone(&self.timezone).date_naive();
                (0..=400)
                    .filter_map(|d| start.checked_add_days(chrono::Days::new(d)))
                    .filter(|d| self.day_matches(*d))
                    .filter_map(|d| self.on_date(d, *at))
                    .find(|f| *f >= t)
            }
        }
    }

    /// The last fire time at or before `t`.
    pub fn at_or_before(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match &self.trigger {
            Trigger::Interval { seconds } => {
                let p = *seconds as i64 * 1000;
                DateTime::from_timestamp_millis(t.timestamp_millis().div_euclid(p) * p)
            }
            Trigger::Calendar { at, .. } => {
                let start = t.with_timezone(&self.timezone).date_naive();
                (0..=400)
                    .filter_map(|d| start.checked_sub_days(chrono::Days::new(d)))
                    .filter(|d| self.day_matches(*d))
                    .filter_map(|d| self.on_date(d, *at))
                    .find(|f| *f <= t)
            }
        }
    }

    /// The first fire time strictly after `t`.
    pub fn after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.at_or_after(t + chrono::Duration::milliseconds(1))
    }

    /// The first due time the scheduler waits for when it starts at `now`.
    pub fn first_due(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match self.trigger {
            Trigger::Interval { .. } => self.after(now),
            Trigger::Calendar { .. } => self.at_or_after(floor_minute(now)),
        }
    }

    /// The claim key of one fire.
    pub fn lock_key(&self, due: DateTime<Utc>) -> String {
        format!("avto:schedule:{}:{}", self.name, due.timestamp_millis())
    }

    fn lock_ttl(&self) -> Duration {
        match self.trigger {
            Trigger::Interval { seconds } => Duration::from_secs(seconds.saturating_mul(2)).max(MISFIRE_GRACE * 2),
            Trigger::Calendar { .. } => Duration::from_secs(25 * 3600),
        }
    }
}

/// One job created by the scheduler.
#[derive(Debug, Clone, PartialEq)]
pub struct Fired {
    pub schedule: String,
    pub due: DateTime<Utc>,
    pub job_id: String,
}

/// The client scheduled jobs belong to.
pub(super) fn scheduler_client() -> ClientEntry {
    let mut config = Map::new();
    config.insert("plan".into(), json!("system"));
    ClientEntry {
        token: String::new(),
        config: ClientConfig {
            name: "scheduler".into(),
            id: "system:scheduler".into(),
            plan: "system".into(),
            params: Value::Null,
            config,
        },
        quota: None,
    }
}

/// Runs schedules against one orchestrator core.
pub struct Scheduler {
    core: Arc<Core>,
    schedules: Vec<Schedule>,
    locks: Arc<dyn ScheduleLocks>,
    clock: Arc<dyn Clock>,
    next_due: tokio::sync::Mutex<Vec<Option<DateTime<Utc>>>>,
}

impl std::fmt::Debug for Scheduler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scheduler").field("schedules", &self.schedules).finish()
    }
}

impl Scheduler {
    /// A scheduler; its first due times are computed from the clock now.
    pub fn new(
        core: Arc<Core>,
        schedules: Vec<Schedule>,
        locks: Arc<dyn ScheduleLocks>,
        clock: Arc<dyn Clock>,
    ) -> Scheduler {
        let now = clock.now();
        let next_due = schedules.iter().map(|s| s.first_due(now)).collect();
        Scheduler { core, schedules, locks, clock, next_due: tokio::sync::Mutex::new(next_due) }
    }

    pub fn schedules(&self) -> &[Schedule] {
        &self.schedules
    }

    /// The next due time of each schedule.
    pub async fn next_due(&self) -> Vec<(String, Option<DateTime<Utc>>)> {
        let due = self.next_due.lock().await;
        self.schedules.iter().zip(due.iter()).map(|(s, d)| (s.name.clone(), *d)).collect()
    }

    /// Looks at the clock once and fires what is due (called every second by the loop).
    pub async fn tick(&self) -> Vec<Fired> {
        let now = self.clock.now();
        let mut fired = Vec::new();
        let mut due_list = self.next_due.lock().await;
        for (s, next) in self.schedules.iter().zip(due_list.iter_mut()) {
            let Some(due) = *next else { continue };
            if now < due {
                continue;
            }
            // After a stall, fire only the latest due time, and only if it is recent.
            let due = s.at_or_before(now).filter(|d| *d >= due).unwrap_or(due);
            *next = s.after(now);
            let late = (now - due).to_std().unwrap_or_default();
            if late > MISFIRE_GRACE {
                tracing::warn!(schedule = %s.name, due = %due, late_secs = late.as_secs(), "schedule missed (too late); skipped");
                continue;
            }
            let key = s.lock_key(due);
            match self.locks.claim(&key, &self.core.config().instance_id, s.lock_ttl()).await {
                Ok(true) => match self.fire(s, due).await {
                    Ok(job_id) => fired.push(Fired { schedule: s.name.clone(), due, job_id }),
                    Err(e) => tracing::error!(schedule = %s.name, error = %e, "scheduled job not created"),
                },
                Ok(false) => tracing::debug!(schedule = %s.name, %due, "fired by another instance"),
                Err(e) => tracing::error!(schedule = %s.name, error = %e, "schedule lock unavailable; not fired"),
            }
        }
        fired
    }

    async fn fire(&self, s: &Schedule, due: DateTime<Utc>) -> Result<String, String> {
        let bp = self
            .core
            .blueprint(&s.blueprint)
            .ok_or_else(|| format!("blueprint `{}` is not registered", s.blueprint))?;
        let mut metadata = match &s.metadata {
            Some(Value::Object(m)) => m.clone(),
            _ => Map::new(),
        };
        metadata.insert("source".into(), json!(format!("scheduler:{}", s.name)));
        metadata.insert(
            "scheduled_for".into(),
            json!(due.with_timezone(&s.timezone).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
        );
        let req = NewJob {
            initial_data: s.input_data.clone(),
            webhook_url: None,
            dispatch_timeout: s.dispatch_timeout,
            result_timeout: s.result_timeout,
            security: s.security.clone(),
            metadata: Some(Value::Object(metadata)),
            traceparent: None,
        };
        let id = self.core.create_job(bp, req, &scheduler_client()).await.map_err(|e| e.to_string())?;
        self.core.metrics().schedule_fired(&s.name);
        tracing::info!(schedule = %s.name, blueprint = %s.blueprint, job_id = %id, %due, "scheduled job created");
        Ok(id)
    }

    /// Ticks every second until the returned handle is aborted (supervised: restarted when
    /// a tick panics, see [`crate::supervise`]).
    pub fn start(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let me = self.clone();
        crate::supervise::supervise(self.core.health(), "scheduler", move || {
            let me = me.clone();
            async move {
                let mut tick = tokio::time::interval(TICK);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tick.tick().await;
                    me.tick().await;
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(toml_text: &str) -> Result<Vec<Schedule>, ConfigError> {
        parse_schedules(toml_text.parse().unwrap(), "schedules.toml", &["flow"], chrono_tz::UTC)
    }

    fn err(toml_text: &str) -> String {
        parse(toml_text).unwrap_err().0
    }

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn validation_messages() {
        assert!(err("[a]\nblueprint = \"nope\"\ninterval_seconds = 5")
            .contains("[a] unknown blueprint `nope` (registered: flow)"));
        assert!(err("[a]\nblueprint = \"flow\"\ndaily_at = \"25:00\"").contains("not a time"));
        assert!(err("[a]\nblueprint = \"flow\"\ndaily_at = \"9:5\"").contains("not a time"));
        assert!(
            err("[a]\nblueprint = \"flow\"\ndaily_at = \"09:00\"\ninterval_seconds = 5").contains("choose exactly one")
        );
        assert!(err("[a]\nblueprint = \"flow\"").contains("needs a trigger"));
        assert!(err("[a]\nblueprint = \"flow\"\nweekly_days = [\"mon\"]").contains("needs `time"));
        assert!(err("[a]\nblueprint = \"flow\"\nweekly_days = [\"funday\"]\ntime = \"10:00\"").contains("funday"));
        assert!(err("[a]\nblueprint = \"flow\"\nmonthly_dates = [32]\ntime = \"10:00\"").contains("1 to 31"));
        assert!(err("[a]\nblueprint = \"flow\"\ninterval_seconds = 0").contains("from 1 to"));
        assert!(err("[a]\nblueprint = \"flow\"\ninterval_second = 5").contains("unknown key `interval_second`"));
        assert!(err("[a]\nblueprint = \"flow\"\ninterval_seconds = 5\ntimezone = \"Mars/Olympus\"")
            .contains("unknown time zone"));
        assert!(err("a = 1").contains("must be a table"));
        let s = parse("[a]\nblueprint = \"flow\"\nweekly_days = [\"Mon\", \"friday\"]\ntime = \"9:30\"\ntimezone = \"Europe/Berlin\"\ninput_data = { x = 1 }\n[a.metadata]\nk = \"v\"").unwrap();
        assert_eq!(
            s[0].trigger,
            Trigger::Calendar {
                at: NaiveTime::from_hms_opt(9, 30, 0).unwrap(),
                weekdays: Some(vec![Weekday::Mon, Weekday::Fri]),
                month_days: None
            }
        );
        assert_eq!(s[0].timezone, chrono_tz::Europe::Berlin);
        assert_eq!(s[0].input_data, json!({"x": 1}));
        assert_eq!(s[0].metadata, Some(json!({"k": "v"})));
    }

    #[test]
    fn fire_times() {
        let s = parse("[a]\nblueprint = \"flow\"\ninterval_seconds = 10").unwrap().remove(0);
        assert_eq!(s.first_due(utc("2026-01-01T00:00:03Z")), Some(utc("2026-01-01T00:00:10Z")));
        assert_eq!(s.at_or_before(utc("2026-01-01T00:00:13Z")), Some(utc("2026-01-01T00:00:10Z")));

        let d =
            parse("[a]\nblueprint = \"flow\"\ndaily_at = \"02:30\"\ntimezone = \"Europe/Berlin\"").unwrap().remove(0);
        // Winter: UTC+1.
        assert_eq!(d.first_due(utc("2026-01-10T00:00:00Z")), Some(utc("2026-01-10T01:30:00Z")));
        // Starting inside the due minute still fires.
        assert_eq!(d.first_due(utc("2026-01-10T01:30:40Z")), Some(utc("2026-01-10T01:30:00Z")));
        // 2026-03-29 02:30 does not exist in Berlin (DST gap): fires right after the gap (03:00 CEST).
        assert_eq!(d.after(utc("2026-03-28T12:00:00Z")), Some(utc("2026-03-29T01:00:00Z")));

        let w = parse("[a]\nblueprint = \"flow\"\nweekly_days = [\"mon\"]\ntime = \"09:00\"").unwrap().remove(0);
        // 2026-01-01 is a Thursday; the next Monday is the 5th.
        assert_eq!(w.after(utc("2026-01-01T10:00:00Z")), Some(utc("2026-01-05T09:00:00Z")));
        let m = parse("[a]\nblueprint = \"flow\"\nmonthly_dates = [31]\ntime = \"00:00\"").unwrap().remove(0);
        assert_eq!(m.after(utc("2026-01-31T00:00:00Z")), Some(utc("2026-03-31T00:00:00Z")));
        assert_eq!(m.at_or_before(utc("2026-03-30T00:00:00Z")), Some(utc("2026-01-31T00:00:00Z")));
    }

    #[test]
    fn time_zones() {
        assert_eq!(parse_tz("UTC").unwrap(), chrono_tz::UTC);
        assert_eq!(parse_tz(":Europe/Paris").unwrap(), chrono_tz::Europe::Paris);
        assert!(parse_tz("Nowhere/City").unwrap_err().contains("unknown time zone"));
    }
}
