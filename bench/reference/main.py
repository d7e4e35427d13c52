"""The reference for bench/: the DACA course's "hello Dapr" FastAPI app, kept as the course
wrote it (FastAPI + httpx against the Dapr sidecar's HTTP API), so that bench/run.py measures
the Spin component against the original, not against an improved Python service.

Run as the course did, with uvicorn and one worker (bench/run.py starts it):
    DAPR_HTTP_PORT=3500 uvicorn main:app --app-dir bench/reference --workers 1

Kept from the original, bugs included, because they are its behaviour on the request path:
- POST /messages saves only the latest message under the user's key, a plain last-write-wins
  save: concurrent POSTs for one user keep one of them (the Spin app keeps a history with
  ETag concurrency, one read and one conditional write per POST).
- A new httpx.AsyncClient per request: each one loads the CA bundle for an SSL context it
  never uses (tens of ms of CPU) and reuses no connection to the sidecar. It dominates the
  cost of a POST, so bench/run.py also measures the obvious fix, one client for the app's
  life (REFERENCE_SHARED_CLIENT=1), and reports both.
- GET /messages/{unknown user} answers 500, not 404: Dapr answers 204 with no body and
  response.json() raises.
- Only Dapr's HTTP errors are caught: with the sidecar down the answer is a bare 500.

Fixed, because it would put load on the machine that is not the request path: the original
subscriber json.loads() the CloudEvent's `data`, which Dapr delivers as a JSON object for a
JSON publish, so it raised and answered 500; and it answered {"status": "Event processed"},
which is no Dapr status. Either makes Dapr redeliver every event while the benchmark runs.
Here it accepts `data` as an object (or a string of JSON) and answers SUCCESS.
The subscription is declarative, as in the course (bench/reference/subscription.yaml).
"""
import contextlib
import json
import os

import httpx
from fastapi import FastAPI, HTTPException

app = FastAPI(title="Dapr FastAPI Hello World")

DAPR_HTTP_PORT = os.getenv("DAPR_HTTP_PORT", "3500")
STATE_URL = f"http://localhost:{DAPR_HTTP_PORT}/v1.0/state/statestore"
PUBSUB_URL = f"http://localhost:{DAPR_HTTP_PORT}/v1.0/publish/pubsub/message-updated"
SHARED_CLIENT = httpx.AsyncClient() if os.getenv("REFERENCE_SHARED_CLIENT") == "1" else None


@contextlib.asynccontextmanager
async def dapr_client():
    """The original's `async with httpx.AsyncClient() as client`, or the shared client."""
    if SHARED_CLIENT:
        yield SHARED_CLIENT
    else:
        async with httpx.AsyncClient() as client:
            yield client


@app.get("/")
async def root():
    return {"message": "Hello from Live AGI!"}


@app.post("/messages")
async def save_message(user_id: str, message: str):
    async with dapr_client() as client:
        try:
            state_payload = [{"key": user_id, "value": {"user_id": user_id, "message": message}}]
            response = await client.post(STATE_URL, json=state_payload)
            response.raise_for_status()
            event_payload = {"user_id": user_id, "message": message}
            response = await client.post(PUBSUB_URL, json=event_payload)
            response.raise_for_status()
            return {"status": f"Stored and published message for {user_id}"}
        except httpx.HTTPStatusError as e:
            raise HTTPException(status_code=500, detail=str(e))


@app.get("/messages/{user_id}")
async def get_message(user_id: str):
    async with dapr_client() as client:
        try:
            response = await client.get(f"{STATE_URL}/{user_id}")
            response.raise_for_status()
            return response.json()
        except httpx.HTTPStatusError:
            raise HTTPException(status_code=404, detail="Message not found")


@app.post("/subscribe")
async def subscribe_message(data: dict):
    event_data = data.get("data", {})
    if isinstance(event_data, str):
        try:
            event_data = json.loads(event_data)
        except json.JSONDecodeError as e:
            print("Failed to decode event data:", e)
            return {"status": "DROP"}
    user_id = event_data.get("user_id", "unknown")
    message = event_data.get("message", "no message")
    print(f"Received event: User {user_id} updated message to '{message}'")
    return {"status": "SUCCESS"}
