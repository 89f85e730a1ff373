"""The summary of examples/bench/compare_python.sh: every number of issue #19 from one run, with
its ratio and target. Reads the --json-out files of the run's parts from the folder given."""
import json
import os
import sys

run = sys.argv[1]


def load(name):
    try:
        with open(os.path.join(run, name + ".json")) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


py, avpy, av, redis = load("python"), load("avto-python-workers"), load("avto"), load("avto-redis")
retained, compile_ = load("retained"), load("compile")

print("== same run, same client (examples/bench.rs), same jobs")
print(f"  {'stack':38} {'jobs/s':>9} {'ratio':>7} {'idle p50 ms':>12} {'ratio':>7} {'orch CPU us/job':>16}")
for d, name in [(py, "Python orchestrator + Python workers"), (avpy, "avto + the same Python workers"),
                (av, "avto + Rust workers"), (redis, "avto on Redis + Rust workers")]:
    if d is None:
        print(f"  {name:38} {'not run':>9}")
        continue
    cpu = d.get("orchestrator_cpu_us_per_job")
    cpu = f"{cpu:16.1f}" if cpu is not None else f"{'-':>16}"
    ratio = f"{d['jobs_per_s'] / py['jobs_per_s']:6.1f}x" if py else f"{'-':>7}"
    idle = f"{py['idle_ms']['p50'] / d['idle_ms']['p50']:6.1f}x" if py else f"{'-':>7}"
    print(f"  {name:38} {d['jobs_per_s']:9.0f} {ratio} {d['idle_ms']['p50']:12.3f} {idle} {cpu}")

rows = []  # (what, value text, target text, met: True/False/None)


def row(what, value, fmt, target, ok):
    if value is None:
        rows.append((what, "not run", target, None))
    else:
        rows.append((what, fmt.format(value), target, ok(value)))


def get(d, *path):
    for p in path:
        if d is None:
            return None
        d = d.get(p) if isinstance(d, dict) else None
    return d


ratio = av["jobs_per_s"] / py["jobs_per_s"] if av and py else None
row("memory mode jobs/s / Python's", ratio, "{:.1f}x", ">= 50x", lambda v: v >= 50)
row("orchestrator CPU per job (memory)", get(av, "orchestrator_cpu_us_per_job"), "{:.1f} us", "<= 35 us",
    lambda v: v <= 35)
r = redis["jobs_per_s"] / av["jobs_per_s"] if redis and av else None
row("Redis jobs/s / memory jobs/s", r, "{:.0%}", ">= 50%", lambda v: v >= 0.5)
# What the ratio is bound by on shared cores: the CPU per job of every process in each mode.
rb = get(redis, "cpu_bound_jobs_per_s")
mb = get(av, "cpu_bound_jobs_per_s")
row("  the same, as bound by every process's CPU per job", rb / mb if rb and mb else None, "{:.0%}", ">= 50%",
    lambda v: v >= 0.5)
row("Redis round trips per job", get(redis, "redis_round_trips_per_job"), "{:.2f}", "<= 6", lambda v: v <= 6)
row("Redis CPU per job", get(redis, "redis_cpu_us_per_job"), "{:.1f} us", "<= 80 us", lambda v: v <= 80)
row("memory per retained finished job", get(retained, "retained_bytes_per_job"), "{:.0f} B", "<= 1024 B",
    lambda v: v <= 1024)
row("memory per job waiting for approval", get(av, "bytes_per_waiting_job"), "{:.0f} B", "<= 1536 B",
    lambda v: v <= 1536)
for d, name in [(av, "memory"), (redis, "Redis")]:
    h = get(d, "half_load")
    row(f"p99 at half the peak / idle p50 ({name})", get(h, "p99_over_idle_p50"),
        "{:.1f}x" + (f" ({h['p99']:.2f} / {d['idle_ms']['p50']:.3f} ms)" if h else ""), "<= 5x", lambda v: v <= 5)
for key, edit in [("line_edit", "line edit"), ("comment_edit", "comment edit")]:
    c = get(compile_, key)
    row(f"50 states, {edit}: added over an empty main", get(c, "added_s_at_50"), "{:.2f} s", "<= 0.3 s",
        lambda v: v <= 0.3)
    row(f"50 states, {edit}: added over main + avto runtime", get(c, "added_over_runtime_s_at_50"), "{:.2f} s",
        "<= 0.3 s", lambda v: v <= 0.3)
    row(f"{edit}: per-state cost at 100 / at 10 states", get(c, "linearity"), "{:.2f}", "about 1 (linear)",
        lambda v: v <= 1.5)
    d = get(get(compile_, "dylib"), key)
    if d:
        row(f"50 states, {edit}, avto-dylib: added over an empty main", get(d, "added_s_at_50"),
            "{:.2f} s", "<= 0.3 s", lambda v: v <= 0.3)

print("== issue #19 targets (one run)")
for what, value, target, ok in rows:
    mark = {True: "met", False: "NOT met", None: "-"}[ok]
    print(f"  {what:62} {value:>28}  target {target:18} {mark}")
