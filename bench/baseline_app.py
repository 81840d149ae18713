"""The original comments app, as the write-up describes it: two routes, comments kept in a
process-local dict. Written from that documented behaviour so `make bench` measures us side
by side with it from a clone of this repository alone. Only correct under one worker (every
worker would hold its own dict), which is how the bench runs it: `gunicorn -w 1`."""

from flask import Flask, jsonify, request

app = Flask("baseline")
comments_by_content: dict[str, list[dict[str, str]]] = {}


@app.post("/api/comment/new")
def new_comment():
    data = request.get_json()
    content_id = str(data["content_id"])
    comments_by_content.setdefault(content_id, []).append(
        {"email": data["email"], "comment": data["comment"]}
    )
    return jsonify(
        status="SUCCESS", message=f"comment created and associated with content_id {content_id}"
    )


@app.get("/api/comment/list/<content_id>")
def list_comments(content_id: str):
    if content_id in comments_by_content:
        return jsonify(comments_by_content[content_id])
    return jsonify(status="NOT-FOUND", message=f"content_id {content_id} not found"), 404
