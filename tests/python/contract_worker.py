"""Reference Python worker (avtomatika-worker 1.0b20) whose 'echo' skill declares a contract:
input_schema {required: [width]}, output_schema {width: integer}. It echoes params.width back as
data.width, so {"width": "wide"} keeps the input contract and breaks the output one.
Config comes from env: ORCHESTRATOR_URL, WORKER_ID, WORKER_TOKEN, ...
"""

from avtomatika_worker import Worker

worker = Worker(worker_type="contract-worker")

INPUT = {"type": "object", "required": ["width"]}
OUTPUT = {"type": "object", "required": ["width"], "properties": {"width": {"type": "integer"}}}


@worker.skill("echo", input_schema=INPUT, output_schema=OUTPUT)
async def echo(params: dict):
    """Echo the width back."""
    return {"status": "success", "data": {"width": params.get("width")}}


if __name__ == "__main__":
    worker.run()
