"""The cookbook's workers on the real Python SDK (avtomatika-worker 1.0b20), for tests/recipes_http.rs.

Skills:
  simple_task            recipe 1: {"doubled": x * 2}; without `x` an INVALID_INPUT_ERROR failure.
  long_video_processing  recipe 10: `frames` frames of 50 ms. Returns status `cancelled` by itself at
                         frame `cancel_at`; when the orchestrator cancels the task (WebSocket push or
                         heartbeat), the SDK cancels the coroutine and a marker file
                         $MARKER_DIR/<job_id>.cancelled is written.
  train_model            recipe 11: `epochs` epochs, one progress event per epoch
                         ("Epoch N completed", progress N/epochs).
  fetch_external_data    recipe 13: no api_key -> INVALID_INPUT_ERROR, "bad" -> PERMANENT_ERROR,
                         "flaky" -> TRANSIENT_ERROR every time, "flaky_once" -> TRANSIENT_ERROR on the
                         first attempt of a job, then success; else success.
  video_montage          recipe 19: success with the worker id.
Every attempt is appended to $MARKER_DIR/attempts.jsonl as {"skill", "job_id", "task_id", "t"}.
The error format is the SDK's ({"code", "message"}); the cookbook's flat `error_type` is not read by
SDK 1.0b20.
"""

import asyncio
import json
import os
import time

from avtomatika_worker import Worker

worker = Worker(worker_type="recipe-worker")
WORKER_ID = os.environ.get("WORKER_ID", "?")
MARKER_DIR = os.environ.get("MARKER_DIR", "/tmp")
_seen_jobs: set[str] = set()


def record(skill: str, job_id: str, task_id: str) -> None:
    with open(os.path.join(MARKER_DIR, "attempts.jsonl"), "a") as f:
        f.write(json.dumps({"skill": skill, "job_id": job_id, "task_id": task_id, "t": time.time()}) + "\n")


def failure(code: str, message: str) -> dict:
    return {"status": "failure", "error": {"code": code, "message": message}}


@worker.skill("simple_task")
async def simple_task(params: dict, task_id: str, job_id: str):
    record("simple_task", job_id, task_id)
    if "x" not in params:
        return failure("INVALID_INPUT_ERROR", "x is missing")
    return {"status": "success", "data": {"doubled": params["x"] * 2, "worker": WORKER_ID}}


@worker.skill("long_video_processing")
async def long_video_processing(params: dict, task_id: str, job_id: str):
    record("long_video_processing", job_id, task_id)
    frames = int(params.get("frames", 100))
    cancel_at = params.get("cancel_at")
    try:
        for frame in range(frames):
            if cancel_at is not None and frame == cancel_at:
                return {"status": "cancelled", "data": {"stopped_at": frame}}
            await asyncio.sleep(0.05)
    except asyncio.CancelledError:
        with open(os.path.join(MARKER_DIR, f"{job_id}.cancelled"), "w") as f:
            f.write(task_id)
        raise
    return {"status": "success", "data": {"frames": frames}}


@worker.skill("train_model")
async def train_model(params: dict, task_id: str, job_id: str, send_progress):
    record("train_model", job_id, task_id)
    epochs = int(params.get("epochs", 3))
    for epoch in range(epochs):
        await asyncio.sleep(0.05)
        await send_progress(task_id, job_id, (epoch + 1) / epochs, f"Epoch {epoch + 1} completed")
    return {"status": "success", "data": {"epochs": epochs}}


@worker.skill("fetch_external_data")
async def fetch_external_data(params: dict, task_id: str, job_id: str):
    record("fetch_external_data", job_id, task_id)
    api_key = params.get("api_key")
    if not api_key:
        return failure("INVALID_INPUT_ERROR", "API key is missing")
    if api_key == "bad":
        return failure("PERMANENT_ERROR", "Invalid API key")
    if api_key == "flaky":
        return failure("TRANSIENT_ERROR", "API timed out")
    if api_key == "flaky_once" and job_id not in _seen_jobs:
        _seen_jobs.add(job_id)
        return failure("TRANSIENT_ERROR", "API timed out")
    return {"status": "success", "data": {"response": {"ok": True, "worker": WORKER_ID}}}


@worker.skill("video_montage")
async def video_montage(params: dict, task_id: str, job_id: str):
    record("video_montage", job_id, task_id)
    return {"status": "success", "data": {"rendered_by": WORKER_ID}}


if __name__ == "__main__":
    worker.run()
