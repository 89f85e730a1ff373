//! The Lua of the Redis stores: each script runs as a Redis function (Redis 7: `FUNCTION LOAD`,
//! `FCALL`) or, where Redis has none (before 7.0, or an ACL that denies them), as an `EVALSHA`
//! script. Same text, same answers.
//!
//! A script is a body and the helpers it uses (the shared texts: key names, the job lock, the
//! write of a job, the task moves). Sent with `EVALSHA`, Redis runs the whole text on every call,
//! so every helper is made again as a closure before the body starts: 2-4 us of Redis CPU per call
//! for the job writes' helpers (BENCHMARKS.md). As a function, each script is a library of its
//! own whose helpers are made once, when the library is loaded; a call runs the body alone. The
//! library and its function are named after the hash of the script's text (`avto_{sha1}`), so
//! instances of different versions sharing one Redis each find their own, and a library is
//! loaded again (`FUNCTION LOAD REPLACE`: the same text) whenever Redis answers that it has no
//! such function (a restart without persistence, `FUNCTION FLUSH`), as `EVALSHA` scripts are
//! after `NOSCRIPT`.
//!
//! Arguments: `ARGV[1]` the request id (`RID`, after a mark of a first attempt or a retry:
//! `AGAIN`), `ARGV[2]` the key prefix (`P`), then each script's own. The helpers see `RID`,
//! `AGAIN` and `P` as upvalues, set at the start of every call; they must keep no other state
//! between calls (a table filled during a call belongs in the body).
//!
//! Every script is registered ([`Registered`]); at start-up ([`prepare`]) this build's libraries
//! are loaded (a Lua error fails the start, not the first job) and the `avto_*` libraries of other
//! builds are deleted, so upgrades do not pile them up in Redis (an instance of another build still
//! running loads its own again on its next call).

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::LazyLock;

use redis::{ErrorKind, RedisError, ServerErrorKind};

use super::RedisConn;
use crate::storage::StorageError;

/// The first two arguments, read at the start of every call: the request id (`RID`, '' for a
/// script that needs none), sent after a `1` on its first attempt and after a `0` on a retry
/// (`AGAIN`: only a retry can find an answer kept by an earlier attempt, see [`REPLIES`]), and the
/// key prefix (`P`).
const ARGS: &str = "RID, P = string.sub(ARGV[1], 2), ARGV[2]\nAGAIN = string.byte(ARGV[1], 1) == 48";

/// The helpers every script has: a claim's answer kept under the request id for a retry after
/// a lost reply (`cached()` before the work, `answer(res)` to return it).
const REPLIES: &str = r#"
local function cached()
  if RID ~= '' and AGAIN then
    local c = redis.call('GET', RID)
    if c then
      if string.sub(c, 1, 1) == 's' then return string.sub(c, 2) end
      return cjson.decode(string.sub(c, 2))
    end
  end
  return nil
end
local function answer(res)
  if RID ~= '' then
    if type(res) == 'string' then
      redis.call('SET', RID, 's' .. res, 'PX', 60000)
    else
      redis.call('SET', RID, 'j' .. cjson.encode(res), 'PX', 60000)
    end
  end
  return res
end
"#;

/// One script of the Redis stores, in both forms (see the module docs).
pub(crate) struct LuaScript {
    /// The `EVALSHA` text and its SHA-1.
    text: String,
    sha: String,
    /// The function's name, and its library's: `avto_` and the SHA-1 of the `EVALSHA` text.
    name: String,
    /// The `FUNCTION LOAD` text.
    library: String,
}

impl std::fmt::Debug for LuaScript {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LuaScript").field("name", &self.name).finish()
    }
}

/// The script made of `helpers` (shared texts, in order) and `body` (which may `return`).
pub(crate) fn lua(helpers: &[&str], body: &str) -> LuaScript {
    let helpers = helpers.concat();
    let text = format!("local RID, P, AGAIN\n{ARGS}\n{REPLIES}\n{helpers}\n{body}");
    let sha = redis::Script::new(&text).get_hash().to_owned();
    let name = format!("avto_{sha}");
    let library = format!(
        "#!lua name={name}\nlocal RID, P, AGAIN\n{REPLIES}\n{helpers}\nredis.register_function('{name}', function(_, ARGV)\n\
         {ARGS}\n{body}\nend)\n"
    );
    LuaScript { text, sha, name, library }
}

impl LuaScript {
    /// The call, without its arguments (`FCALL name 0` or `EVALSHA sha 0`), with room for `args`
    /// arguments and a job document or two among them. Arguments written into a command without
    /// room grow its buffer a step at a time (7 copies for a 600-byte document; 6k instructions
    /// per job, BENCHMARKS.md).
    pub(super) fn call_with(&self, functions: bool, args: usize) -> redis::Cmd {
        let mut cmd = redis::Cmd::with_capacity(3 + args, 2048);
        cmd.arg(if functions { "FCALL" } else { "EVALSHA" });
        cmd.arg(if functions { self.name.as_str() } else { self.sha.as_str() }).arg(0);
        cmd
    }

    /// What loads it: `FUNCTION LOAD REPLACE library` or `SCRIPT LOAD text`.
    pub(super) fn load(&self, functions: bool) -> redis::Cmd {
        if functions {
            let mut cmd = redis::cmd("FUNCTION");
            cmd.arg("LOAD").arg("REPLACE").arg(&self.library);
            cmd
        } else {
            let mut cmd = redis::cmd("SCRIPT");
            cmd.arg("LOAD").arg(&self.text);
            cmd
        }
    }
}

/// A script of the stores: `inventory::submit! { Registered(&SCRIPT) }` beside each.
pub(crate) struct Registered(pub(crate) &'static LazyLock<LuaScript>);
inventory::collect!(Registered);

/// Loads this build's libraries and deletes the `avto_*` libraries no script of this build has
/// (see the module docs). A Redis without functions for this user switches `conn` to `EVALSHA`.
pub(super) async fn prepare(conn: &RedisConn) -> Result<(), StorageError> {
    if !conn.inner.functions.load(Ordering::Relaxed) {
        return Ok(());
    }
    let ours: HashSet<&str> = inventory::iter::<Registered>().map(|r| r.0.name.as_str()).collect();
    let list = redis::cmd("FUNCTION").arg("LIST").arg("LIBRARYNAME").arg("avto_*").clone();
    let listed: redis::Value = match conn.query(&list).await {
        Ok(v) => v,
        Err(StorageError::Redis(e)) if failed(&e, true) == Failed::NoFunctions => {
            conn.without_functions(&e);
            return Ok(());
        }
        Err(e) => return Err(e),
    };
    let mut present = HashSet::new();
    library_names(&listed, &mut present);
    for name in present.iter().filter(|n| !ours.contains(n.as_str())) {
        // Gone already (another instance pruned it first) is as good.
        let _ = conn.query::<()>(redis::cmd("FUNCTION").arg("DELETE").arg(name)).await;
    }
    for script in inventory::iter::<Registered>().map(|r| &**r.0) {
        if present.contains(&script.name) {
            continue;
        }
        match conn.query::<()>(&script.load(true)).await {
            Ok(()) => {}
            Err(StorageError::Redis(e)) if failed(&e, true) == Failed::NoFunctions => {
                conn.without_functions(&e);
                return Ok(());
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The names in a `FUNCTION LIST` reply that are avto's (`avto_` and 40 hex digits): the
/// libraries and their one function each.
fn library_names(v: &redis::Value, out: &mut HashSet<String>) {
    use redis::Value;
    match v {
        Value::Array(items) | Value::Set(items) => items.iter().for_each(|i| library_names(i, out)),
        Value::Map(pairs) => {
            for (k, v) in pairs {
                library_names(k, out);
                library_names(v, out);
            }
        }
        Value::BulkString(b) => {
            if let Some(hex) = b.strip_prefix(b"avto_") {
                if hex.len() == 40 && hex.iter().all(u8::is_ascii_hexdigit) {
                    out.insert(String::from_utf8_lossy(b).into_owned());
                }
            }
        }
        _ => {}
    }
}

/// What an error of a call (or of a load) asks for.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Failed {
    /// Redis does not have the script (yet, or any more): load it, call again.
    NotLoaded,
    /// Redis has no functions for us (no such command, or the ACL denies it): use `EVALSHA`.
    NoFunctions,
    /// Anything else (the script's own error, the connection): as any other command's.
    Other,
}

pub(super) fn failed(e: &RedisError, functions: bool) -> Failed {
    let detail = e.detail().unwrap_or_default().to_ascii_lowercase();
    match e.kind() {
        ErrorKind::Server(ServerErrorKind::NoScript) if !functions => Failed::NotLoaded,
        ErrorKind::Server(ServerErrorKind::ResponseError) if functions && detail.starts_with("function not found") => {
            Failed::NotLoaded
        }
        ErrorKind::Server(ServerErrorKind::ResponseError)
            if functions
                && (detail.starts_with("unknown command") || detail.starts_with("unknown subcommand"))
                && (detail.contains("fcall") || detail.contains("function")) =>
        {
            Failed::NoFunctions
        }
        // `NOPERM ... no permissions to run the 'fcall' command` (not a key the script touched).
        ErrorKind::Server(ServerErrorKind::NoPerm)
            if functions && (detail.contains("fcall") || detail.contains("function")) =>
        {
            Failed::NoFunctions
        }
        _ => Failed::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server_error(line: &str) -> RedisError {
        // The parser's own reading of an error line, as a reply would bring it.
        let frame = format!("-{line}\r\n");
        match redis::parse_redis_value(frame.as_bytes()) {
            Ok(redis::Value::ServerError(e)) => e.into(),
            other => panic!("not a server error: {other:?}"),
        }
    }

    #[test]
    fn both_forms_carry_the_same_body_and_helpers() {
        let s = lua(&["local function twice(x) return x .. x end\n"], "return twice(P)");
        assert!(s.name.starts_with("avto_") && s.name.len() == 45, "{}", s.name);
        assert!(s.library.starts_with(&format!("#!lua name={}\n", s.name)));
        assert!(s.library.contains(&format!("redis.register_function('{}', function(_, ARGV)", s.name)));
        // The helper sits at the library's top level, before the function; the body inside it.
        let (top, function) = s.library.split_once("redis.register_function").unwrap();
        assert!(top.contains("local function twice") && top.contains("local function answer"));
        assert!(function.contains(&format!("{ARGS}\nreturn twice(P)\nend)")));
        // Another text, another name: versions sharing one Redis do not replace each other's.
        assert_ne!(lua(&[], "return 1").name, lua(&[], "return 2").name);
    }

    #[test]
    fn every_script_is_registered() {
        // Each `static ...: LazyLock<LuaScript>` of the Redis stores has its `inventory::submit!`,
        // so that start-up loads it and does not delete its library as another build's.
        let sources = [
            include_str!("combined.rs"),
            include_str!("data.rs"),
            include_str!("jobs/mod.rs"),
            include_str!("jobs/scripts.rs"),
            include_str!("limits.rs"),
            include_str!("mod.rs"),
            include_str!("query.rs"),
            include_str!("workers/scripts.rs"),
            include_str!("workers/mod.rs"),
            include_str!("bus.rs"),
            include_str!("schedule.rs"),
            include_str!("sts.rs"),
        ];
        let declared: usize = sources.iter().map(|s| s.matches(": LazyLock<LuaScript> =").count()).sum();
        let submitted: usize = sources.iter().map(|s| s.matches("lua::Registered(&").count()).sum();
        let registered = inventory::iter::<Registered>().count();
        assert!(declared >= 40, "{declared}");
        assert_eq!((submitted, registered), (declared, declared));
    }

    #[test]
    fn errors_are_told_apart() {
        let f = |line: &str, functions: bool| failed(&server_error(line), functions);
        assert_eq!(f("ERR Function not found", true), Failed::NotLoaded);
        assert_eq!(f("NOSCRIPT No matching script. Please use EVAL.", false), Failed::NotLoaded);
        assert_eq!(
            f("ERR unknown command 'FCALL', with args beginning with: 'avto_x' '0' ", true),
            Failed::NoFunctions
        );
        assert_eq!(f("ERR unknown command 'FUNCTION', with args beginning with: 'LOAD' ", true), Failed::NoFunctions);
        assert_eq!(f("NOPERM User app has no permissions to run the 'fcall' command", true), Failed::NoFunctions);
        assert_eq!(
            f("NOPERM User app has no permissions to run the 'function|load' command", true),
            Failed::NoFunctions
        );
        // A key the script may not touch, or the script's own error: the caller's error.
        assert_eq!(f("NOPERM No permissions to access a key", true), Failed::Other);
        assert_eq!(f("ERR user_script:3: Unknown Redis command called from script", true), Failed::Other);
        // In EVALSHA mode nothing switches back.
        assert_eq!(f("ERR Function not found", false), Failed::Other);
        assert_eq!(f("ERR unknown command 'FCALL'", false), Failed::Other);
    }

    /// Needs the Redis of the tests (`REDIS_URL`, default 127.0.0.1:6379), like every Redis test.
    #[tokio::test]
    async fn the_request_id_arrives_without_its_mark_and_only_a_retry_looks_for_a_kept_answer() {
        let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/0".into());
        let conn = RedisConn::open(&url, "avto-test:again:").unwrap();
        let s = lua(&[], "return {RID, P, tostring(AGAIN)}");
        for functions in [true, false] {
            for (sent, want) in [("1avto:rid:x", ("avto:rid:x", "false")), ("0avto:rid:x", ("avto:rid:x", "true"))] {
                let _: () = conn.query(&s.load(functions)).await.unwrap();
                let got: Vec<String> = conn.query(s.call_with(functions, 2).arg(sent).arg("pfx:")).await.unwrap();
                assert_eq!(got, [want.0, "pfx:", want.1], "{sent} (functions: {functions})");
            }
            // A script without a request id: '' and no retry.
            let got: Vec<String> = conn.query(s.call_with(functions, 2).arg("").arg("pfx:")).await.unwrap();
            assert_eq!(got, ["", "pfx:", "false"]);
        }
        // Through the connection: the first attempt is marked as such.
        let got: Vec<String> = conn.script(&s, true, &[]).await.unwrap();
        assert!(got[0].starts_with("avto-test:again:rid:") && got[2] == "false", "{got:?}");
    }
}
