"""The review page, a Starlette app: login, the queue, one decision per item, photos, metrics.

Every form works without JavaScript (POST, then back to the queue); static/review.js only adds
keys 1/2/3, x and / and swaps a decided card for the next one in place.
"""

from __future__ import annotations

import logging
from datetime import date
from pathlib import Path
from urllib.parse import urlencode

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import Engine, select
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from batch_job.ledger import Result
from batch_job.review import decisions
from batch_job.review.auth import CSRF_FIELD, Reviewers, csrf_token, csrf_valid
from batch_job.review.metrics import registry_for
from batch_job.review.photos import Photos, UnsafeName, folder_name
from batch_job.templating import environment

log = logging.getLogger("refund-review")
STATIC = Path(__file__).parent.parent / "static"
FETCH_HEADER = "x-review-fetch"  # set by review.js: answer with a card fragment, not a redirect
SECURITY_HEADERS = {
    "content-security-policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
}


class SecurityHeaders:
    """Adds the strict CSP and friends to every response (pure ASGI: no buffering)."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        async def with_headers(message) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                message["headers"] += [(k.encode(), v.encode()) for k, v in SECURITY_HEADERS.items()]
            await send(message)

        await self.app(scope, receive, send if scope["type"] != "http" else with_headers)


class ReviewApp:
    def __init__(
        self,
        engine: Engine,
        photos: Photos,
        reviewers: Reviewers,
        classes: list[str] | None,
        page_size: int,
        user_header: str,
    ) -> None:
        self.engine = engine
        self.photos = photos
        self.reviewers = reviewers
        self.fixed_classes = classes
        self.page_size = page_size
        self.user_header = user_header.lower()
        self.metrics = registry_for(engine)
        self.templates = Jinja2Templates(env=environment())

    # -- who -----------------------------------------------------------------------------

    def reviewer(self, request: Request) -> str | None:
        if self.user_header and request.headers.get(self.user_header):
            return request.headers[self.user_header]
        return request.session.get("user")

    def require_reviewer(self, request: Request) -> str:
        name = self.reviewer(request)
        if name is None:
            raise HTTPException(303, headers={"location": "/login"})
        return name

    async def checked_form(self, request: Request):
        form = await request.form()
        if not csrf_valid(request.session, form.get(CSRF_FIELD)):
            raise HTTPException(403, "missing or wrong CSRF token: reload the page")
        return form

    def render(self, request: Request, name: str, context: dict, status_code: int = 200) -> Response:
        context = {"csrf": csrf_token(request.session), "user": self.reviewer(request), **context}
        return self.templates.TemplateResponse(request, name, context, status_code=status_code)

    def classes(self) -> list[str]:
        if self.fixed_classes is not None:
            return self.fixed_classes
        with self.engine.connect() as connection:
            seen = connection.scalars(select(Result.category).where(Result.category.is_not(None)).distinct())
            return sorted(seen)

    # -- pages ---------------------------------------------------------------------------

    async def login_page(self, request: Request) -> Response:
        return self.render(request, "review/login.html", {"error": None, "header_mode": bool(self.user_header)})

    async def login(self, request: Request) -> Response:
        form = await self.checked_form(request)
        name, password = str(form.get("username", "")), str(form.get("password", ""))
        if not self.reviewers.verify(name, password):
            log.warning("failed login", extra={"reviewer": name})
            context = {"error": "Wrong name or password.", "header_mode": bool(self.user_header)}
            return self.render(request, "review/login.html", context, status_code=401)
        request.session.clear()  # a fresh session (and CSRF token) after login: no session fixation
        request.session["user"] = name
        return RedirectResponse("/", status_code=303)

    async def logout(self, request: Request) -> Response:
        await self.checked_form(request)
        request.session.clear()
        return RedirectResponse("/login", status_code=303)

    def queue_filter(self, params) -> decisions.QueueFilter:
        try:
            night = date.fromisoformat(params["night"]) if params.get("night") else None
            page = max(1, int(params.get("page") or 1))
        except ValueError as exc:
            raise HTTPException(400, f"bad filter: {exc}") from exc
        return decisions.QueueFilter(night, params.get("category") or None, page, self.page_size)

    async def queue(self, request: Request) -> Response:
        self.require_reviewer(request)
        wanted = self.queue_filter(request.query_params)
        page = decisions.queue_page(self.engine, wanted)
        filters = {"night": wanted.night.isoformat() if wanted.night else "", "category": wanted.category or ""}
        context = {
            "page": page,
            "wanted": wanted,
            "filters": filters,
            "pages": page.pages(self.page_size),
            "classes": self.classes(),
            "night_of": decisions.night_of,
            "query": lambda **changes: urlencode({**filters, **changes}),
            "note": request.session.pop("note", None),
        }
        return self.render(request, "review/queue.html", context)

    async def photo(self, request: Request) -> Response:
        self.require_reviewer(request)
        row = decisions.item(self.engine, request.path_params["item"])
        if row is None:
            raise HTTPException(404, "no such item")
        try:
            data = self.photos.thumbnail(row)
        except FileNotFoundError as exc:
            raise HTTPException(404, str(exc)) from exc
        except Exception as exc:  # an undecodable photo: say so in place of the picture
            raise HTTPException(422, f"cannot make a thumbnail: {exc}") from exc
        return Response(data, media_type="image/jpeg", headers={"cache-control": "private, max-age=86400"})

    async def decide(self, request: Request) -> Response:
        name = self.require_reviewer(request)
        form = await self.checked_form(request)
        final = None if form.get("unusable") == "1" else str(form.get("final", "")).strip()
        if final is not None and final not in self.classes():
            return self.answer(request, form, 400, {"error": f"{final!r} is not one of the model's classes"})
        try:
            if final is not None and self.photos.route != "none":
                folder_name(final)  # before anything is stored
        except UnsafeName as exc:
            return self.answer(request, form, 400, {"error": str(exc)})
        before = decisions.item(self.engine, request.path_params["item"])
        if before is None:
            return self.answer(request, form, 404, {"error": "no such item"})
        destination = self.photos.decision_route(before, final)
        outcome = decisions.decide(self.engine, before.id, name, final, destination)
        row = outcome.row
        note = {"key": row.object_key, "final": row.final_category, "at": f"{row.reviewed_at:%H:%M:%S}"}
        if not outcome.won:
            return self.answer(request, form, 409, {**note, "first": row.reviewed_by})
        if destination is not None:
            try:
                self.photos.route_decision(before, destination)
                decisions.routed(self.engine, row.id, destination)
                note["moved"] = destination
            except Exception as exc:  # the decision stands; where the photo is stays recorded
                log.exception("could not move a decided photo", extra={"key": row.object_key})
                note["error"] = f"{row.object_key} decided, but the photo could not be moved: {exc}"
        log.info("decided", extra={"reviewer": name, "key": row.object_key, "final": final})
        return self.answer(request, form, 200, note)

    def answer(self, request: Request, form, status: int, note: dict) -> Response:
        """A card fragment for review.js, or (without JavaScript) back to the queue with a note."""
        note = {"key": None, "final": None, "at": None, "first": None, "moved": None, "error": None, **note}
        if request.headers.get(FETCH_HEADER):
            return self.render(request, "review/_decided.html", {"note": note}, status_code=status)
        request.session["note"] = note
        back = {"night": form.get("night", ""), "category": form.get("predicted", ""), "page": form.get("page", "")}
        return RedirectResponse(f"/?{urlencode(back)}", status_code=303)

    # -- operations ----------------------------------------------------------------------

    async def healthz(self, request: Request) -> Response:
        return PlainTextResponse("ok")

    async def readyz(self, request: Request) -> Response:
        with self.engine.connect() as connection:
            connection.scalar(select(1))
        return PlainTextResponse("ready")

    async def prometheus(self, request: Request) -> Response:
        return Response(generate_latest(self.metrics), media_type=CONTENT_TYPE_LATEST)


def create_app(review: ReviewApp, session_key: str, secure_cookies: bool) -> Starlette:
    routes = [
        Route("/", review.queue),
        Route("/login", review.login_page, methods=["GET"]),
        Route("/login", review.login, methods=["POST"]),
        Route("/logout", review.logout, methods=["POST"]),
        Route("/photo/{item:int}", review.photo),
        Route("/decide/{item:int}", review.decide, methods=["POST"]),
        Route("/healthz", review.healthz),
        Route("/readyz", review.readyz),
        Route("/metrics", review.prometheus),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    middleware = [
        Middleware(SecurityHeaders),
        Middleware(
            SessionMiddleware,
            secret_key=session_key,
            session_cookie="refund_review",
            max_age=12 * 3600,
            same_site="strict",
            https_only=secure_cookies,
        ),
    ]
    return Starlette(routes=routes, middleware=middleware)
