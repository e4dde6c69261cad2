"""The dashboard's HTTP surface: a FastAPI app over one run directory.

GET endpoints read the store (read-only connections, so a live loop goes on undisturbed). The three POST
actions (approve, reject, stop) need the token printed at start and call the same code as the CLI
(`successor.oversight.actions`). The page loads nothing from elsewhere; a Content-Security-Policy says so to the
browser, and a Host check keeps other sites' pages (DNS rebinding) from reading the API.
"""
from __future__ import annotations

import io
import math
import secrets
import sqlite3
import threading
import time
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from pydantic import BaseModel, Field
from starlette.middleware.trustedhost import TrustedHostMiddleware

from ...oversight import actions
from ...oversight.verify import verify_run
from ..lineage import acceleration, fidelity, guardrail_points, open_ro, sealed_grid, tree
from ..runconfig import workload_name, workload_of
from ..status import status_dict
from . import live

STATIC = Path(str(resources.files("successor") / "reporting" / "dashboard" / "static"))
PAGES = {"index.html": "text/html", "app.js": "text/javascript", "style.css": "text/css"}
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
AUDIT_RECHECK_S = 10.0  # the audit verification is recomputed at most this often while nothing changes


class Approve(BaseModel):
    generation: int = Field(ge=0)
    who: str = Field("dashboard", min_length=1, max_length=200)
    note: str | None = Field(None, max_length=2000)


class Reject(BaseModel):
    generation: int = Field(ge=0)
    reason: str = Field(min_length=1, max_length=2000)
    who: str = Field("dashboard", min_length=1, max_length=200)


def _clean(x: Any) -> Any:
    """JSON has no NaN or infinity: they become null."""
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {str(k): _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    return x


class _AuditCache:
    """verify_run hashes every artifact; it is redone when the audit log changes or AUDIT_RECHECK_S has passed."""

    def __init__(self, run_dir: Path):
        self.run_dir, self.lock, self.key, self.value = run_dir, threading.Lock(), None, None

    def get(self) -> dict:
        log = self.run_dir / "audit.jsonl"
        st = log.stat() if log.exists() else None
        key = (st.st_size, st.st_mtime_ns) if st else None
        with self.lock:
            if self.value is None or key != self.key or time.time() - self.value["checked"] > AUDIT_RECHECK_S:
                ok, lines = verify_run(self.run_dir)
                self.key, self.value = key, {"ok": ok, "lines": lines[:50], "problems": 0 if ok else len(lines),
                                             "checked": time.time()}
            return self.value


def create_app(run_dir: Path, token: str) -> FastAPI:
    """The dashboard of `run_dir`; `token` authorises the POST actions (Authorization: Bearer TOKEN)."""
    run_dir = Path(run_dir).resolve()
    if len(token) < 16:
        raise ValueError("the dashboard token must be at least 16 characters")
    app = FastAPI(title="successor dashboard", docs_url=None, redoc_url=None, openapi_url=None)
    app.add_middleware(TrustedHostMiddleware, allowed_hosts=["127.0.0.1", "localhost"])
    audit_cache = _AuditCache(run_dir)

    @app.middleware("http")
    async def headers(request: Request, call_next):
        response = await call_next(request)
        response.headers["Content-Security-Policy"] = CSP
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"
        response.headers["Cache-Control"] = "no-store"
        return response

    def db():
        try:
            conn = open_ro(run_dir)
        except FileNotFoundError:
            raise HTTPException(404, f"{run_dir} has no lineage.db yet: start the run")
        try:
            yield conn
        finally:
            conn.close()

    def authorised(request: Request) -> None:
        got = request.headers.get("authorization", "")
        scheme, _, value = got.partition(" ")
        if scheme.lower() != "bearer" or not secrets.compare_digest(value.strip().encode(), token.encode()):
            raise HTTPException(401, "this action needs the token the dashboard printed at start "
                                "(Authorization: Bearer TOKEN)", headers={"WWW-Authenticate": "Bearer"})

    def config() -> dict:
        path = run_dir / "config.yaml"
        try:
            return (yaml.safe_load(path.read_text()) or {}) if path.exists() else {}
        except yaml.YAMLError:
            return {}

    def reply(data: Any) -> JSONResponse:
        return JSONResponse(_clean(data))

    @app.get("/")
    def index() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html")

    @app.get("/static/{name}")
    def static(name: str) -> FileResponse:
        if name not in PAGES:
            raise HTTPException(404, "no such file")
        return FileResponse(STATIC / name, media_type=PAGES[name])

    @app.get("/api/status")
    def status(conn: sqlite3.Connection = Depends(db)) -> JSONResponse:
        st, cfg = status_dict(run_dir), config()
        state = live.run_state(run_dir, conn)
        planned = (cfg.get("loop") or {}).get("generations")
        planned = planned + 1 if isinstance(planned, int) else None
        return reply({
            "run": str(cfg.get("name") or run_dir.name), "run_dir": str(run_dir),
            "workload": workload_name(cfg), "score": workload_of(cfg).SCORE,  # score: "frontier" or "metric"
            "state": state, "planned_generations": planned,
            "generations_done": sum(1 for g in st["generations"] if g["status"] == "done"),
            "in_progress": st["in_progress"], "waiting_for_approval": st["waiting_for_approval"],
            "champion": st["champion"], "frontier": st["frontier"], "metric": st["metric"],
            "promoted": st["promoted"], "violations": st["violations"], "upper_bound": st["upper_bound"],
            "eta_s": live.eta_s(conn, planned, state), "budgets": live.budgets(run_dir, conn, st, state),
            "compute": st["compute"], "experiments": live.experiments_now(run_dir, conn),
        })

    @app.get("/api/lineage")
    def lineage(conn: sqlite3.Connection = Depends(db)) -> JSONResponse:
        return reply({"generations": tree(conn)})

    @app.get("/api/node/{cid}")
    def node(cid: str, conn: sqlite3.Connection = Depends(db)) -> JSONResponse:
        found = live.node(run_dir, conn, cid)
        if found is None:
            raise HTTPException(404, f"no candidate {cid!r} in this run")
        return reply(found)

    @app.get("/api/capability")
    def capability(conn: sqlite3.Connection = Depends(db)) -> JSONResponse:
        levels, gens, grid = sealed_grid(conn)
        st = status_dict(run_dir)
        return reply({"levels": levels, "generations": gens, "accuracy": grid.tolist(),
                      "frontier": [{"generation": g["generation"], "frontier": g["frontier"], "metric": g["metric"],
                                    "promoted": g["promoted"], "status": g["status"]} for g in st["generations"]]})

    @app.get("/api/guardrail")
    def guardrail(conn: sqlite3.Connection = Depends(db)) -> JSONResponse:
        from ..report import HORIZON, guardrail_note

        points = guardrail_points(conn)
        f, k = fidelity(points or [])
        return reply({"points": points, "fidelity": f, "promotions": k, "horizon": HORIZON,
                      "note": guardrail_note(points)})

    @app.get("/api/acceleration")
    def accel() -> JSONResponse:
        return reply(acceleration(status_dict(run_dir)))

    @app.get("/api/audit")
    def audit() -> JSONResponse:
        return reply(audit_cache.get())

    @app.get("/plots/{name}.png")
    def plot(name: str, conn: sqlite3.Connection = Depends(db)) -> Response:
        from ..plots import PLOT_NAMES, render_plot

        if name not in PLOT_NAMES:
            raise HTTPException(404, f"no plot {name!r}; there are {', '.join(PLOT_NAMES)}")
        buf = io.BytesIO()
        render_plot(run_dir, name, buf)
        return Response(buf.getvalue(), media_type="image/png")

    def act(fn, *args) -> JSONResponse:
        try:
            return reply({"ok": True, "message": fn(*args)})
        except ValueError as e:
            raise HTTPException(409, str(e))

    @app.post("/api/approve", dependencies=[Depends(authorised)])
    def approve(body: Approve) -> JSONResponse:
        return act(actions.decide, run_dir, body.generation, "approved", body.who, body.note, "dashboard")

    @app.post("/api/reject", dependencies=[Depends(authorised)])
    def reject(body: Reject) -> JSONResponse:
        return act(actions.decide, run_dir, body.generation, "rejected", body.who, body.reason, "dashboard")

    @app.post("/api/stop", dependencies=[Depends(authorised)])
    def stop() -> JSONResponse:
        if not (run_dir / "lineage.db").exists():
            raise HTTPException(404, f"{run_dir} has no lineage.db: nothing to stop")
        return act(actions.stop_run, run_dir)

    app.state.run_dir, app.state.token = run_dir, token
    return app
