"""Signs and verifies messages with the Python SDK's own functions (rxon 1.0b17), for
tests/protocol_props.rs (`python_sdk_signer_agrees_on_generated_messages`).

Usage: python rxon_sign.py CASES.jsonl
Each input line: {"kind": "registration|heartbeat|result|event|task", "token": str, "body": str,
"sdk_task": bool}, where "body" is the JSON text of a message signed by avto. Each output line (same order):
  canonical  orjson.dumps(to_dict(body), option=OPT_SORT_KEYS), what rxon's sign_payload HMACs (before it
             drops the ignored top-level fields)
  signature  rxon.security.sign_payload(body, token, ignore_fields) (the orchestrator's and the SDK's signer)
  verifies   rxon.security.verify_signature(body, <avto's signature>, token, ignore_fields)
  sdk_verifies  (with "sdk_task") the SDK's check of a polled task: verify_signature over
             from_dict(TaskPayload, body)
  wire       the message as the Python side sends it: the body without avto's signature, signed again by
             sign_payload and serialised by rxon.utils.json_dumps (the SDK's aiohttp json_serialize)
  ws         the same message as the SDK's WebSocket frames carry it (json.dumps of to_dict)
or {"error": "..."} when Python refused the message.
"""

import json
import sys

import orjson
from orjson import OPT_SORT_KEYS
from rxon.security import sign_payload, verify_signature
from rxon.models import TaskPayload
from rxon.utils import from_dict, json_dumps, to_dict

# The ignore_fields the orchestrator and the SDK pass (worker_service.py, worker.py, dispatcher.py).
IGNORE = {
    "registration": None,
    "heartbeat": None,
    "result": None,
    "event": ["bubbling_chain"],
    "task": ["sig", "orchestrator_signature"],
}


def one(case):
    kind = case["kind"]
    token = case["token"]
    ignore = IGNORE[kind]
    # The orchestrator reads request bodies with orjson.loads (aiohttp request.json(loads=loads)).
    body = orjson.loads(case["body"])
    out = {"canonical": orjson.dumps(to_dict(body), option=OPT_SORT_KEYS).decode("utf-8")}
    out["signature"] = sign_payload(body, token, ignore_fields=ignore)
    if kind == "task":
        theirs = body.get("sig")
        unsigned = {k: v for k, v in body.items() if k != "sig"}
        unsigned["sig"] = sign_payload(unsigned, token, ignore_fields=ignore)
    else:
        theirs = (body.get("security") or {}).get("signature")
        unsigned = {k: v for k, v in body.items() if k != "security"}
        unsigned["security"] = {"signature": sign_payload(unsigned, token, ignore_fields=ignore), "signer_id": "py"}
    out["verifies"] = verify_signature(body, theirs, token, ignore_fields=ignore)
    if case.get("sdk_task"):
        # The SDK's own check of a task it polled (avtomatika_worker/worker.py): the signature is
        # verified over the payload parsed into rxon's TaskPayload struct.
        task = from_dict(TaskPayload, body)
        out["sdk_verifies"] = verify_signature(task, theirs, token, ignore_fields=ignore)
    out["wire"] = json_dumps(unsigned)
    # Over the WebSocket the SDK sends aiohttp's send_json(to_dict(event)): stdlib json.dumps, so
    # spaces, \uXXXX escapes for everything non-ASCII (surrogate pairs) and repr() floats (1e-07).
    out["ws"] = json.dumps(to_dict(unsigned))
    return out


def main():
    with open(sys.argv[1], "rb") as f:
        for line in f:
            try:
                out = one(orjson.loads(line))
            except Exception as e:  # reported per case, so the Rust side names the message
                out = {"error": f"{type(e).__name__}: {e}"}
            sys.stdout.write(orjson.dumps(out).decode("utf-8") + "\n")


if __name__ == "__main__":
    main()
