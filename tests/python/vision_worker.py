"""Reference Python worker (avtomatika-worker 1.0b20) with one skill, 'consume': version 2.0 of
type 'vision', declaring the custom status 'needs_review' and the property engine=cycles
(tests/interop_python.rs, python_sdk_takes_tasks_with_every_field).

Answers 'needs_review' when the params ask for a review, else 'success', with data
{"consumed": params, "task_metadata": <the task's metadata>}.
Config comes from env: ORCHESTRATOR_URL, WORKER_ID, WORKER_TOKEN, ORCHESTRATOR_SECRET_KEY, ...
"""

from avtomatika_worker import Worker

worker = Worker(worker_type="vision-worker")


@worker.skill(
    "consume",
    version="2.0",
    type="vision",
    output_statuses=["needs_review"],
    properties={"engine": "cycles"},
)
async def consume(params: dict, metadata):
    """Consume a produced file."""
    status = "needs_review" if params.get("review") else "success"
    return {"status": status, "data": {"consumed": params, "task_metadata": metadata}}


if __name__ == "__main__":
    worker.run()
