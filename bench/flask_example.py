"""A peer for bench/run.py: the Flask receiver of bitHuman's webhook guide, as a developer
who follows the guide would deploy it.

Copied from the guide "Webhook Integration", section "Implementation Examples", "Flask
Server (Python)" (bitHuman's documentation). The code is the guide's, formatted to this
repository's style; only WEBHOOK_SECRET changed: the guide's placeholder became the
secret bench/run.py signs its bodies with (its SECRET), so the signature check passes for
the benchmark's bodies and fails for any other. The guide already reads the signature
from `X-bitHuman-Signature` as `sha256=<hex HMAC-SHA256 of the raw body>`, which is what
run.py sends.

run.py serves it with gunicorn (2 workers x 8 threads) from the repository's root:

    gunicorn -w 2 --threads 8 -b 127.0.0.1:8082 bench.flask_example:app

Its print() lines go to the log file in run.py's temp dir.
"""

import hashlib
import hmac

from flask import Flask, jsonify, request

app = Flask(__name__)
WEBHOOK_SECRET = "bench-secret-0123456789abcdef"  # bench/run.py's SECRET


@app.route("/webhook", methods=["POST"])
def handle_webhook():
    # Verify signature (recommended)
    signature = request.headers.get("X-bitHuman-Signature", "")
    if not verify_signature(request.data, signature):
        return jsonify({"error": "Invalid signature"}), 401

    data = request.json
    event_type = data.get("event_type")

    # Handle different events
    if event_type == "room.join":
        handle_user_joined(data)
    elif event_type == "chat.push":
        handle_new_message(data)

    return jsonify({"status": "success"})


def handle_user_joined(data):
    agent_id = data.get("agent_id")
    room_data = data.get("data", {})
    session_id = room_data.get("session_id")
    room_name = room_data.get("room_name")
    participant_count = room_data.get("participant_count")  # noqa: F841 (the guide's)

    print(f"User joined agent {agent_id} in room {room_name} (session: {session_id})")
    # Add your logic: Update CRM, send notification, etc.


def handle_new_message(data):
    agent_id = data.get("agent_id")  # noqa: F841 (the guide's)
    message_data = data.get("data", {})
    role = message_data.get("role")
    message = message_data.get("message")
    session_id = message_data.get("session_id")

    print(f"New {role} message in session {session_id}: {message}")
    # Add your logic: Log to database, analyze sentiment, etc.


def verify_signature(payload, signature):
    expected = hmac.new(WEBHOOK_SECRET.encode(), payload, hashlib.sha256).hexdigest()
    return hmac.compare_digest(f"sha256={expected}", signature)


if __name__ == "__main__":
    app.run(port=3000)
