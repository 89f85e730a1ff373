//! `bench --compile-states 0,10,25,50,100`: the compile-time benchmark of blueprints (issue #19).
//!
//! For each N it writes a binary crate (its own `[workspace]`, a path dependency on this
//! workspace's `avto` with its default features) whose `main.rs` holds one blueprint of N
//! dispatching states `s0`..`s{N-1}`, each a `#[when]`-free handler that dispatches a task with two
//! transitions (`success` to the next state, `failure` to the end state `failed`; the last one's
//! `success` goes to the end state `done`), and a `main` that prints the blueprint's name. Two
//! baselines: `0 (empty)`, an empty `main` with the same dependency (rustc never loads avto), and
//! `0 (rt)`, a `main` that calls `avto::Blueprint::registered()` (avto's runtime linked in, as in
//! any program that serves blueprints). The crates share one target directory, so avto and its
//! dependencies build once (the first run of the bench builds them: minutes). Each crate is built
//! once (warm), then in [`RUNS`] rounds every crate in turn gets two timed incremental debug
//! `cargo build`s: after a comment edit (the first line's text changes, no span moves) and after
//! a line edit (a second comment line appears or goes: every span below moves, so the generated
//! code is type-checked and compiled again). Printed per edit kind and N: the median and the
//! fastest time, the median added over the empty main and over the runtime baseline, the added
//! time per state, the growth per state between consecutive Ns, and the cost per state over the
//! runtime baseline at the largest N over the smallest (about 1 when the growth is linear).
//!
//! `--compile-dylib` measures every crate but the empty main a second time, linked through
//! `avto-dylib` (avto as one shared object; the crate names `avto_dylib` as README.md shows), in
//! the same rounds: a second set of tables, over the same empty main and over `0 (rt)` linked the
//! same way.
//!
//! `AVTO_BENCH_AVTO_DIR=/path/to/avto` makes the crates depend on another checkout's `avto` crate
//! instead (to compare two versions of the macros with one bench binary, in one session; with
//! `--compile-dylib`, that checkout's `avto-dylib` beside it).
//!
//! The crates live in `$TMPDIR/avto-compile-bench/` (kept, so the next run reuses the built
//! dependencies; delete it to start over). The child cargo runs `--offline` with a copy of this
//! workspace's `Cargo.lock`, falling back to resolving online if that fails; `CARGO_BUILD_JOBS`,
//! `CARGO_PROFILE_DEV_DEBUG` and `RUSTFLAGS` of the environment apply to it.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

/// The root of this workspace (examples/ is one of its members).
fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("examples/ has a parent").to_path_buf()
}

/// One measured crate: `n` states (or a baseline), linked statically or through `avto-dylib`.
#[derive(Clone, Copy)]
struct Crate {
    n: usize,
    dylib: bool,
}

/// The `main.rs` of `krate`; `edit` is the comment on the first line, and `extra_line` adds a
/// second comment line (toggling it moves every span below).
fn main_rs(krate: Crate, edit: usize, extra_line: bool) -> String {
    let n = krate.n;
    let mut s = format!("// edit {edit:06}\n");
    if extra_line {
        s.push_str("//\n");
    }
    if krate.dylib {
        s.push_str("use avto_dylib as _;\n");
    }
    if n == 0 {
        s.push_str("fn main() {}\n");
        return s;
    }
    if n == RUNTIME {
        // No blueprint, but avto's runtime linked in (what any program serving blueprints pays).
        s.push_str("fn main() {\n    println!(\"{}\", avto::Blueprint::registered().len());\n}\n");
        return s;
    }
    s.push_str(
        "use avto::prelude::*;\n\n#[avto::blueprint(name = \"compile_bench\")]\nmod flow {\n    use super::*;\n",
    );
    for i in 0..n {
        let start = if i == 0 { ", start" } else { "" };
        let next = if i + 1 == n { "done".to_owned() } else { format!("s{}", i + 1) };
        s.push_str(&format!(
            "\n    #[handler(state = \"s{i}\"{start})]\n    async fn s{i}(ctx: &Context, actions: &mut Actions) {{\n        \
             actions\n            .dispatch_task(\"task_{i}\")\n            .params(ctx.initial_data.clone())\n            \
             .transitions([(\"success\", \"{next}\"), (\"failure\", \"failed\")]);\n    }}\n"
        ));
    }
    s.push_str(
        "\n    #[handler(state = \"done\", end)]\n    async fn done() {}\n\n    \
         #[handler(state = \"failed\", end = \"failed\")]\n    async fn failed() {}\n}\n\n\
         fn main() {\n    println!(\"{}\", flow::blueprint().name());\n}\n",
    );
    s
}

/// Writes `krate` under `dir`; returns its directory.
fn write_crate(dir: &Path, krate: Crate) -> PathBuf {
    let n = krate.n;
    let name = format!(
        "{}{}",
        if n == RUNTIME { "runtime".to_owned() } else { n.to_string() },
        if krate.dylib { "_dylib" } else { "" }
    );
    let root = dir.join(format!("states_{name}"));
    std::fs::create_dir_all(root.join("src")).expect("create the crate directory");
    let avto = std::env::var_os("AVTO_BENCH_AVTO_DIR").map_or_else(|| workspace_root().join("avto"), PathBuf::from);
    let mut deps = format!("avto = {{ path = {:?} }}\n", avto.display().to_string());
    if krate.dylib {
        let dylib = avto.parent().expect("avto's directory has a parent").join("avto-dylib");
        deps.push_str(&format!("avto-dylib = {{ path = {:?} }}\n", dylib.display().to_string()));
    }
    let manifest = format!(
        "[package]\nname = \"compile_bench_{name}\"\nversion = \"0.0.0\"\nedition = \"2021\"\npublish = false\n\n\
         [dependencies]\n{deps}\n[workspace]\n"
    );
    std::fs::write(root.join("Cargo.toml"), manifest).expect("write Cargo.toml");
    if !root.join("Cargo.lock").exists() {
        // The workspace's lock: the same dependency versions, resolved without the network.
        let _ = std::fs::copy(workspace_root().join("Cargo.lock"), root.join("Cargo.lock"));
    }
    std::fs::write(root.join("src/main.rs"), main_rs(krate, 0, false)).expect("write main.rs");
    root
}

/// `cargo build` of the crate in `root`; its wall time in seconds.
fn build(root: &Path, target: &Path, offline: bool) -> Result<f64, String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let mut cmd = Command::new(cargo);
    cmd.arg("build").arg("--quiet").current_dir(root).env("CARGO_TARGET_DIR", target);
    if offline {
        cmd.arg("--offline");
    }
    // What `cargo run` set for this program is not the child's business.
    for (k, _) in std::env::vars() {
        if k.starts_with("CARGO_PKG_") || k == "CARGO_MANIFEST_DIR" || k == "CARGO_MANIFEST_PATH" {
            cmd.env_remove(k);
        }
    }
    let started = Instant::now();
    let out = cmd.output().map_err(|e| format!("run cargo: {e}"))?;
    let secs = started.elapsed().as_secs_f64();
    if out.status.success() {
        Ok(secs)
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    }
}

/// The pseudo-N of the second baseline: an empty `main` that links avto's runtime in.
const RUNTIME: usize = usize::MAX;

/// Timed builds per N.
const RUNS: usize = 5;

/// Runs the benchmark for every N of `counts`.
pub(crate) fn run(counts: &[usize], dylib: bool, json_out: Option<&str>) {
    let runs = RUNS;
    let dir = std::env::temp_dir().join("avto-compile-bench");
    let target = dir.join("target");
    let mut counts: Vec<usize> = counts.iter().copied().filter(|&n| n > 0 && n != RUNTIME).collect();
    counts.sort_unstable();
    counts.dedup();
    // The two baselines first: the empty main, and the empty main that links avto's runtime.
    counts.splice(0..0, [0, RUNTIME]);
    let mut crates: Vec<Crate> = counts.iter().map(|&n| Crate { n, dylib: false }).collect();
    if dylib {
        crates.extend(counts.iter().filter(|&&n| n != 0).map(|&n| Crate { n, dylib: true }));
    }
    let avto =
        std::env::var("AVTO_BENCH_AVTO_DIR").unwrap_or_else(|_| workspace_root().join("avto").display().to_string());
    println!(
        "compile bench: incremental debug `cargo build` of a binary crate with an N-state blueprint, \
         median of {runs} rounds (every N built once per round, in turn); avto from {avto}; crates and target in {}",
        dir.display()
    );
    let mut offline = true;
    let mut roots = Vec::new();
    for &krate in &crates {
        let root = write_crate(&dir, krate);
        let warm = Instant::now();
        if let Err(e) = build(&root, &target, offline) {
            if !offline {
                panic!("cargo build of {} failed:\n{e}", root.display());
            }
            eprintln!("offline build failed, resolving online:\n{e}");
            offline = false;
            build(&root, &target, offline).unwrap_or_else(|e| panic!("cargo build of {} failed:\n{e}", root.display()));
        }
        eprintln!("  {}: warm build {:.1} s", label(krate), warm.elapsed().as_secs_f64());
        roots.push(root);
    }
    // Per N: the times after a comment edit (no span moves: rustc reuses most of its work) and
    // after a line edit (every span below the first line moves: the generated code is checked
    // and compiled again). Rounds, so that the machine's load drifts over every N alike.
    let mut comment: Vec<Vec<f64>> = vec![Vec::new(); crates.len()];
    let mut shifted: Vec<Vec<f64>> = vec![Vec::new(); crates.len()];
    let mut extra_line = false;
    let mut edit = 0;
    for _ in 0..runs {
        for (i, (&krate, root)) in crates.iter().zip(&roots).enumerate() {
            let mut timed = |extra: bool| {
                edit += 1;
                std::fs::write(root.join("src/main.rs"), main_rs(krate, edit, extra)).expect("write main.rs");
                build(root, &target, offline).unwrap_or_else(|e| panic!("cargo build failed:\n{e}"))
            };
            comment[i].push(timed(extra_line));
            shifted[i].push(timed(!extra_line));
        }
        extra_line = !extra_line;
    }
    let mut json = serde_json::Map::new();
    let mut dylib_json = serde_json::Map::new();
    for (key, what, times) in [
        ("comment_edit", "a comment edit (no span moves)", comment),
        ("line_edit", "a line edit (every span moves)", shifted),
    ] {
        // Per crate (median, fastest); the empty main is the first row of both tables.
        let all: Vec<(Crate, f64, f64)> = crates
            .iter()
            .zip(times)
            .map(|(&krate, mut t)| {
                let min = t.iter().copied().fold(f64::INFINITY, f64::min);
                (krate, median(&mut t), min)
            })
            .collect();
        let rows = |linked_dylib: bool| -> Vec<(usize, f64, f64)> {
            all.iter().filter(|r| r.0.n == 0 || r.0.dylib == linked_dylib).map(|r| (r.0.n, r.1, r.2)).collect()
        };
        json.insert(key.to_owned(), table(what, "", &rows(false)));
        if dylib {
            dylib_json.insert(key.to_owned(), table(what, ", avto linked through avto-dylib", &rows(true)));
        }
    }
    if dylib {
        json.insert("dylib".to_owned(), serde_json::Value::Object(dylib_json));
    }
    println!("  (0 (rt): an empty main calling avto::Blueprint::registered(), which links avto's runtime in)");
    if let Some(path) = json_out {
        std::fs::write(path, serde_json::to_vec_pretty(&json).unwrap()).expect("write --json-out");
    }
}

/// Prints one table: per N the median and fastest build, the time added over the empty main and
/// over the runtime baseline, and the growth per state. Returns the same as JSON: per N the
/// median, `added_s_at_50` and `added_over_runtime_s_at_50` (when 50 was measured) and `linearity`.
fn table(what: &str, linked: &str, rows: &[(usize, f64, f64)]) -> serde_json::Value {
    let (base, runtime) = (rows[0].1, rows[1].1);
    println!("after {what}{linked}:");
    println!(
        "  {:>9}  {:>9}  {:>9}  {:>9}  {:>14}  {:>13}",
        "N", "median s", "fastest s", "added s", "added ms/state", "over runtime s"
    );
    for &(n, med, min) in rows {
        let added = med - base;
        let per = if n == 0 || n == RUNTIME { String::from("-") } else { format!("{:.2}", added * 1000.0 / n as f64) };
        let over = if n == 0 { String::from("-") } else { format!("{:.3}", med - runtime) };
        println!("  {:>9}  {med:>9.3}  {min:>9.3}  {added:>9.3}  {per:>14}  {over:>13}", label_n(n));
    }
    // Linearity: the slope between consecutive Ns (from the runtime baseline), and the cost per
    // state over the runtime baseline at the largest N over the smallest non-zero N.
    let states: Vec<(usize, f64, f64)> =
        rows.iter().copied().filter(|r| r.0 != 0).map(|r| if r.0 == RUNTIME { (0, r.1, r.2) } else { r }).collect();
    let slopes: Vec<String> = states
        .windows(2)
        .map(|w| format!("{}->{}: {:.2}", w[0].0, w[1].0, (w[1].1 - w[0].1) * 1000.0 / (w[1].0 - w[0].0) as f64))
        .collect();
    println!("  growth in ms/state (from the runtime baseline): {}", slopes.join(", "));
    let nonzero: Vec<&(usize, f64, f64)> = states.iter().filter(|r| r.0 > 0).collect();
    let mut linearity = None;
    if let (Some(small), Some(large)) = (nonzero.first(), nonzero.last()) {
        if small.0 != large.0 {
            let per = |r: &(usize, f64, f64)| (r.1 - runtime) / r.0 as f64;
            linearity = Some(per(large) / per(small));
            println!(
                "  linearity: time over the runtime baseline per state at N = {} over N = {}: {:.2} (1.0 = linear)",
                large.0,
                small.0,
                per(large) / per(small)
            );
        }
    }
    let at50 = rows.iter().find(|r| r.0 == 50);
    serde_json::json!({
        "median_s": rows.iter().map(|r| (label_n(r.0), serde_json::json!(r.1))).collect::<serde_json::Map<String, serde_json::Value>>(),
        "added_s_at_50": at50.map(|r| r.1 - base),
        "added_over_runtime_s_at_50": at50.map(|r| r.1 - runtime),
        "linearity": linearity,
    })
}

fn label_n(n: usize) -> String {
    match n {
        0 => "0 (empty)".to_owned(),
        RUNTIME => "0 (rt)".to_owned(),
        n => n.to_string(),
    }
}

fn label(krate: Crate) -> String {
    format!("{}{}", label_n(krate.n), if krate.dylib { " (dylib)" } else { "" })
}
