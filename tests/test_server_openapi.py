"""`GET /openapi.json` describes what `serve` really answers: every route is exercised on a running
server (successes and errors) and each answer is checked against the document with an OpenAPI 3.1
schema validator: its route and method are described, its status is among the operation's, its
content type is one the document gives, and a JSON body matches the schema. A route, a status or a
field the document does not know fails here, as does the document itself if it is not valid OpenAPI.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import orjson
from openapi_schema_validator import OAS31Validator
from openapi_spec_validator import validate as validate_spec

from notifyctl.security.unsubscribe import make_token
from notifyctl.server.app import create_app
from notifyctl.server.config import ServerSettings
from tests.test_server_harness import JSON, Running, eventually, running
from tests.workspace import Workspace, make_workspace, users_csv

EXERCISED: set[tuple[str, str]] = set()  # (method, route) pairs answered during the test


def route_of(doc: dict[str, Any], path: str) -> str:
    for template in doc["paths"]:
        pattern = "^" + re.sub(r"\{[^}]+\}", "[^/]+", template) + "$"
        if re.match(pattern, path):
            return str(template)
    raise AssertionError(f"{path} is answered by serve but not described in /openapi.json")


async def checked(srv: Running, doc: dict[str, Any], method: str, path: str, **kwargs: Any) -> tuple[int, Any]:
    """Make the request; assert that the document describes the answer; return (status, body)."""
    async with srv.http.request(method, srv.url + path, **kwargs) as resp:
        raw = await resp.read()
        status, content_type = resp.status, resp.content_type
    route = route_of(doc, path.split("?", 1)[0])
    operation = doc["paths"][route].get(method.lower())
    assert operation is not None, f"{method} {route} is not described"
    described = operation["responses"].get(str(status))
    assert described is not None, f"{method} {route} answered {status}, not among {sorted(operation['responses'])}"
    EXERCISED.add((method, route))
    if status == 204:
        assert raw == b"" and "content" not in described
        return status, None
    assert content_type in described.get("content", {}), f"{method} {route} {status}: {content_type}"
    if content_type != "application/json":
        return status, raw.decode()
    body = orjson.loads(raw)
    schema = {"components": doc["components"], **described["content"][content_type]["schema"]}
    errors = [e.message for e in OAS31Validator(schema).iter_errors(body)]
    assert not errors, f"{method} {route} {status}: {errors} in {body}"
    return status, body


def inbox_rows(ws: Workspace) -> int:
    with ws.db() as conn:
        return int(conn.execute("SELECT count(*) FROM inbox WHERE user_id='u1'").fetchone()[0])


def workspace(tmp_path: Path) -> Workspace:
    ws = make_workspace(tmp_path, extra='[events]\n"user.signed_up" = "welcome"\n')
    users = ws.write("users.csv", users_csv(2))
    assert ws.cli("users", "import", str(users)).exit_code == 0
    return ws


async def test_every_answer_of_serve_is_described_by_its_openapi_document(tmp_path: Path) -> None:
    ws = workspace(tmp_path)
    async with running(ws) as srv:
        async with srv.http.get(srv.url + "/openapi.json") as resp:
            assert resp.status == 200
            doc = await resp.json()
        validate_spec(doc)  # a valid OpenAPI 3.1 document
        key, form = srv.headers(), {"Content-Type": "application/x-www-form-urlencoded"}
        notify = {"user_id": "u1", "template": "welcome", "channels": ["inapp"], "data": {"product_name": "A"}}
        seed = {"userId": "u1", "event": "user.signed_up", "channels": ["inapp"], "data": {"product_name": "A"}}

        assert (await checked(srv, doc, "GET", "/openapi.json"))[0] == 200
        assert (await checked(srv, doc, "POST", "/v1/notify", json=notify, headers=key))[0] == 202
        keyed = notify | {"idempotency_key": "k-1"}
        first = await checked(srv, doc, "POST", "/v1/notify", json=keyed, headers=key)
        again = await checked(srv, doc, "POST", "/v1/notify", json=keyed, headers=key)
        assert (first[0], again[0]) == (202, 200) and again[1]["delivery_ids"] == first[1]["delivery_ids"]
        assert (await checked(srv, doc, "POST", "/v1/notify", json=notify))[0] == 401
        assert (await checked(srv, doc, "POST", "/v1/notify", json={"user_id": "u1"}, headers=key))[0] == 422
        bad = {"data": b"{", "headers": key | JSON}
        assert (await checked(srv, doc, "POST", "/v1/notify", **bad))[0] == 400
        assert (await checked(srv, doc, "POST", "/v1/notify", data=b"{}", headers=key))[0] == 415
        unknown = notify | {"template": "nope"}
        assert (await checked(srv, doc, "POST", "/v1/notify", json=unknown, headers=key))[0] == 404

        assert (await checked(srv, doc, "POST", "/api/notify", json=seed, headers=key))[0] == 202
        assert (await checked(srv, doc, "POST", "/api/notify", json=notify, headers=key))[0] == 422
        assert (await checked(srv, doc, "POST", "/api/notify", json=seed | {"event": "x"}, headers=key))[0] == 404

        assert (await checked(srv, doc, "GET", "/v1/users/u1/inbox?limit=5", headers=key))[0] == 200
        assert (await checked(srv, doc, "GET", "/v1/users/u1/inbox?limit=0", headers=key))[0] == 400
        assert (await checked(srv, doc, "GET", "/v1/users/nobody/inbox", headers=key))[0] == 404
        await eventually(lambda: inbox_rows(ws) > 0, timeout_s=30)  # the in-app messages sent above
        status, inbox = await checked(srv, doc, "GET", "/v1/users/u1/inbox", headers=key)
        assert status == 200 and inbox["messages"], inbox
        read_path = f"/v1/users/u1/inbox/{inbox['messages'][0]['id']}/read"
        assert (await checked(srv, doc, "POST", read_path, headers=key))[0] == 200
        assert (await checked(srv, doc, "POST", "/v1/users/u1/inbox/999999/read", headers=key))[0] == 404

        device = {"token": "tok-1", "platform": "ios"}
        assert (await checked(srv, doc, "POST", "/v1/users/u1/devices", json=device, headers=key))[0] == 201
        assert (await checked(srv, doc, "POST", "/v1/users/u1/devices", json=device, headers=key))[0] == 200
        assert (await checked(srv, doc, "POST", "/v1/users/u1/devices", json={"x": 1}, headers=key))[0] == 422
        assert (await checked(srv, doc, "DELETE", "/v1/users/u1/devices/tok-1", headers=key))[0] == 204
        assert (await checked(srv, doc, "DELETE", "/v1/users/u1/devices/tok-1", headers=key))[0] == 404

        assert (await checked(srv, doc, "POST", "/hooks/twilio/inbound", data=b"Body=STOP", headers=form))[0] == 503
        assert (await checked(srv, doc, "POST", "/hooks/twilio/status", data=b"", headers=form))[0] == 503
        assert (await checked(srv, doc, "POST", "/hooks/ses", data=b"not json"))[0] == 400

        token = make_token(srv.ctx.secret.current, "u1", "email", "marketing")
        assert (await checked(srv, doc, "GET", f"/u/{token}"))[0] == 200
        assert (await checked(srv, doc, "GET", "/u/not-a-token"))[0] == 404
        assert (await checked(srv, doc, "POST", f"/u/{token}", data=b"", headers=form))[0] == 400
        one_click = {"data": b"List-Unsubscribe=One-Click", "headers": form | {"Accept": "application/json"}}
        assert (await checked(srv, doc, "POST", f"/u/{token}", **one_click))[0] == 200

        assert (await checked(srv, doc, "GET", "/healthz"))[0] == 200
        assert (await checked(srv, doc, "GET", "/metrics"))[0] == 200

    # Every route and method the document describes was answered, and serve has no other route.
    described = {(m.upper(), p) for p, ops in doc["paths"].items() for m in ops}
    assert described == EXERCISED, described ^ EXERCISED
    app = create_app(srv.ctx, ServerSettings())
    served = {
        (route.method, route.resource.canonical)
        for route in app.router.routes()
        if route.method != "HEAD" and route.resource is not None
    }
    assert served == described, served ^ described
