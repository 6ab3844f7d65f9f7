"""The review page, a Starlette app: login, the queue, one decision per item (and its undo), photos,
the nights; its metrics registry (`app.state.metrics`) is served on a port of its own (review/serve.py).

Every form works without JavaScript (POST, then back to the queue); static/review.js only adds
keys and swaps a decided card for the next one in place. Whatever blocks (the results store, the
object store, PIL, Argon2) runs in the threadpool: plain `def` endpoints, or `run_in_threadpool`
after the form is read, so one slow photo never stalls other reviewers or /healthz.
"""

from __future__ import annotations

import difflib
import logging
import re
import secrets
from datetime import date
from pathlib import Path
from urllib.parse import urlencode

from sqlalchemy import Engine, select
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from batch_job.ledger.routing import mark_routed
from batch_job.ledger.schema import NEEDS_REVIEW, Category, Result
from batch_job.photos.layout import UnsafeName, folder_name
from batch_job.photos.located import Photos
from batch_job.photos.objects import ObjectTooLarge
from batch_job.review import decisions, sessions
from batch_job.review.auth import CSRF_FIELD, Reviewers, csrf_token, csrf_valid
from batch_job.review.metrics import registry_for
from batch_job.review.settings import ReviewSettings
from batch_job.review.throttle import LoginThrottle
from batch_job.templating import environment
from common.objectstore import open_store, read_object
from common.registry import Registry

log = logging.getLogger("refund-review")
STATIC = Path(__file__).parent.parent / "static"
RETRAININGS_SHOWN = 5  # on the nights page: about a month of weekly retrainings
FETCH_HEADER = "x-review-fetch"  # set by review.js: answer with a card fragment, not a redirect
PROXY_SECRET_HEADER = "x-review-proxy-secret"  # header mode: what the auth proxy proves itself with
LARGEST_ID = 2**63 - 1  # ids a request carries beyond this are no item (and would overflow the database)
# ASCII digits, no more than LARGEST_ID has: int() refuses "²" (str.isdigit accepts it) and over 4300 digits.
ITEM_NUMBER = re.compile(r"[0-9]{1,19}")
RUN_ID = re.compile(r"[0-9A-Za-z._-]{1,64}")
SECURITY_HEADERS = {
    "content-security-policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
}
# A night's report is a generated document with its own inline styles and data: thumbnails: it may style
# itself, but it runs nothing (sandbox) and loads nothing from anywhere.
REPORT_POLICY = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; sandbox; frame-ancestors 'none'"


class SecurityHeaders:
    """Adds the strict CSP and friends to every response that sets no stricter one (pure ASGI: no buffering)."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        async def with_headers(message) -> None:
            if message["type"] == "http.response.start":
                headers = message.setdefault("headers", [])
                present = {name.decode().lower() for name, _ in headers}
                headers += [(k.encode(), v.encode()) for k, v in SECURITY_HEADERS.items() if k not in present]
            await send(message)

        await self.app(scope, receive, send if scope["type"] != "http" else with_headers)


def shown(row: Result) -> bool:
    """Photos are shown only of items that are or were in review: not every photo of the inbox."""
    return row.status == NEEDS_REVIEW or row.reviewed_by is not None


def bounded_id(text: str | None, what: str) -> int | None:
    """A row id from a request: digits only and at most LARGEST_ID; anything else answers 400."""
    if not text:
        return None
    if not ITEM_NUMBER.fullmatch(text) or int(text) > LARGEST_ID:
        raise HTTPException(400, f"bad {what}: expected an item number")
    return int(text)


def path_id(request: Request) -> int:
    """The item in the path; an id no row can have is no such item."""
    number = request.path_params["item"]
    if number > LARGEST_ID:
        raise HTTPException(404, "no such item")
    return number


class ReviewApp:
    def __init__(
        self, engine: Engine, photos: Photos, reviewers: Reviewers, settings: ReviewSettings, runs_prefix: str
    ) -> None:
        self.engine = engine
        self.photos = photos
        self.reviewers = reviewers
        self.fixed_classes = settings.class_names()
        self.page_size = settings.page_size
        self.user_header = settings.user_header.lower()
        self.proxy_secret = settings.proxy_secret
        self.runs_prefix = runs_prefix.rstrip("/")
        self.metrics = registry_for(engine)
        self.throttle = LoginThrottle(settings.login_limit_per_name, settings.login_limit_per_address, self.metrics)
        self.models = Registry(open_store(settings.registry)) if settings.registry else None
        self.templates = Jinja2Templates(env=environment())

    # -- who -----------------------------------------------------------------------------

    def reviewer(self, request: Request) -> str | None:
        """Who sends the request: the proxy's header (only with the proxy's secret), or a live session of a
        reviewer still in the users file. Reads the results store: call it in the threadpool."""
        if self.user_header and request.headers.get(self.user_header):
            sent = request.headers.get(PROXY_SECRET_HEADER, "")
            if not secrets.compare_digest(sent.encode(), self.proxy_secret.encode()):
                raise HTTPException(403, f"the user header came without the auth proxy's {PROXY_SECRET_HEADER}")
            return request.headers[self.user_header]
        name = sessions.reviewer_of(self.engine, request.session.get("sid"))
        if name is not None and self.reviewers.path is not None and not self.reviewers.has(name):
            sessions.end(self.engine, request.session.get("sid"))  # removed from the users file: out now
            request.session.clear()
            return None
        return name

    def require_reviewer(self, request: Request) -> str:
        name = self.reviewer(request)
        if name is None:
            raise HTTPException(303, headers={"location": "/login"})
        request.state.reviewer = name
        return name

    async def checked_form(self, request: Request):
        form = await request.form()
        if not csrf_valid(request.session, form.get(CSRF_FIELD)):
            raise HTTPException(403, "missing or wrong CSRF token: reload the page")
        return form

    def render(self, request: Request, name: str, context: dict, status_code: int = 200, headers=None) -> Response:
        user = getattr(request.state, "reviewer", None)
        context = {"csrf": csrf_token(request.session), "user": user, **context}
        return self.templates.TemplateResponse(request, name, context, status_code=status_code, headers=headers)

    def classes(self) -> list[str]:
        """The classes a reviewer may choose: --classes, else those of the models the nights were served by."""
        if self.fixed_classes is not None:
            return self.fixed_classes
        with self.engine.connect() as connection:
            return list(connection.scalars(select(Category.name).order_by(Category.name)))

    def class_named(self, typed: str) -> str | None:
        """The class a reviewer typed, whatever its case; None when there is none such."""
        by_lower = {name.lower(): name for name in self.classes()}
        return by_lower.get(typed.lower())

    def suggestions(self, typed: str) -> list[str]:
        by_lower = {name.lower(): name for name in self.classes()}
        return [by_lower[close] for close in difflib.get_close_matches(typed.lower(), list(by_lower), n=3, cutoff=0.6)]

    # -- logging in ----------------------------------------------------------------------

    def login_page(self, request: Request) -> Response:
        return self.render(request, "review/login.html", {"error": None, "header_mode": bool(self.user_header)})

    async def login(self, request: Request) -> Response:
        form = await self.checked_form(request)
        return await run_in_threadpool(
            self.log_in, request, str(form.get("username", "")), str(form.get("password", ""))
        )

    def log_in(self, request: Request, name: str, password: str) -> Response:
        address = request.client.host if request.client else "unknown"
        header_mode = bool(self.user_header)
        wait = self.throttle.retry_after(name, address)
        if wait is not None:
            context = {"error": f"Too many wrong passwords: try again in {wait} s.", "header_mode": header_mode}
            return self.render(request, "review/login.html", context, 429, headers={"retry-after": str(wait)})
        if not self.reviewers.verify(name, password):
            self.throttle.failed(name, address)
            log.warning("failed login", extra={"reviewer": name, "address": address})
            context = {"error": "Wrong name or password.", "header_mode": header_mode}
            return self.render(request, "review/login.html", context, status_code=401)
        request.session.clear()  # a fresh session (and CSRF token) after login: no session fixation
        request.session["sid"] = sessions.start(self.engine, name)
        return RedirectResponse("/", status_code=303)

    async def logout(self, request: Request) -> Response:
        await self.checked_form(request)
        await run_in_threadpool(sessions.end, self.engine, request.session.get("sid"))
        request.session.clear()
        return RedirectResponse("/login", status_code=303)

    # -- the queue -----------------------------------------------------------------------

    def queue_filter(self, params) -> decisions.QueueFilter:
        try:
            night = date.fromisoformat(params["night"]) if params.get("night") else None
        except ValueError as exc:
            raise HTTPException(400, f"bad filter: {exc}") from exc
        after = bounded_id(params.get("after"), "after")
        return decisions.QueueFilter(night, params.get("category") or None, after, self.page_size)

    def queue(self, request: Request) -> Response:
        self.require_reviewer(request)
        wanted = self.queue_filter(request.query_params)
        page = decisions.queue_page(self.engine, wanted)
        filters = {"night": wanted.night.isoformat() if wanted.night else "", "category": wanted.category or ""}
        context = {
            "page": page,
            "wanted": wanted,
            "filters": filters,
            "classes": self.classes(),
            "night_of": decisions.night_of,
            "query": lambda **changes: urlencode({**filters, **changes}),
            "note": request.session.pop("note", None),
        }
        return self.render(request, "review/queue.html", context)

    def waiting(self, request: Request) -> Response:
        """How many wait under the page's filters now (review.js keeps the sticky count fresh with it)."""
        self.require_reviewer(request)
        return PlainTextResponse(str(decisions.waiting(self.engine, self.queue_filter(request.query_params))))

    def shown_item(self, request: Request) -> Result:
        row = decisions.item(self.engine, path_id(request))
        if row is None or not shown(row):
            raise HTTPException(404, "no such item in review")
        return row

    def photo_answer(self, request: Request, make) -> Response:
        self.require_reviewer(request)
        row = self.shown_item(request)
        try:
            data = make(row)
        except FileNotFoundError as exc:
            raise HTTPException(404, str(exc)) from exc
        except ObjectTooLarge as exc:
            raise HTTPException(413, str(exc)) from exc
        except Exception as exc:  # an undecodable photo: say so in place of the picture
            raise HTTPException(422, f"cannot show the photo: {exc}") from exc
        return Response(data, media_type="image/jpeg", headers={"cache-control": "private, max-age=86400"})

    def photo(self, request: Request) -> Response:
        return self.photo_answer(request, self.photos.thumbnail)

    def whole_photo(self, request: Request) -> Response:
        return self.photo_answer(request, self.photos.whole)

    # -- decisions -----------------------------------------------------------------------

    async def decide(self, request: Request) -> Response:
        name = await run_in_threadpool(self.require_reviewer, request)
        form = await self.checked_form(request)
        return await run_in_threadpool(self.decide_item, request, form, name, path_id(request))

    def decide_item(self, request: Request, form, name: str, item: int) -> Response:
        typed = None if form.get("unusable") == "1" else str(form.get("final", "")).strip()
        final = None if typed is None else self.class_named(typed)
        if typed is not None and final is None:
            note = {"error": f"{typed!r} is not one of the model's classes", "item": item}
            return self.answer(request, form, 400, {**note, "suggestions": self.suggestions(typed)})
        try:
            if final is not None and self.photos.route != "none":
                folder_name(final)  # before anything is stored
        except UnsafeName as exc:
            return self.answer(request, form, 400, {"error": str(exc), "item": item})
        before = decisions.item(self.engine, item)
        if before is None:
            return self.answer(request, form, 404, {"error": "no such item"})
        if not shown(before):
            return self.answer(request, form, 409, {"error": f"{before.object_key} is not in review"})
        destination = self.photos.decision_route(before, final)
        written = decisions.decide(self.engine, before.id, name, final, destination, self.photos.current_key(before))
        row = written.row
        note = {"key": row.object_key, "final": row.final_category, "at": decisions.clock(row.reviewed_at)}
        if not written.won:
            if row.reviewed_by is None:  # undone meanwhile and waiting again, or never in review
                return self.answer(request, form, 409, {"error": f"{row.object_key} changed meanwhile: reload"})
            return self.answer(request, form, 409, {**note, "first": row.reviewed_by})
        if destination is not None:
            try:
                source = self.photos.route_decision(row, destination)
                mark_routed(self.engine, row.id, source, destination)
                note["moved"] = destination
            except Exception as exc:  # the decision stands; where the photo is stays recorded
                log.exception("could not move a decided photo", extra={"key": row.object_key})
                note["error"] = f"{row.object_key} decided, but the photo could not be moved: {exc}"
        log.info("decided", extra={"reviewer": name, "key": row.object_key, "final": final})
        return self.answer(request, form, 200, {**note, "undo": row.id})

    async def undo(self, request: Request) -> Response:
        name = await run_in_threadpool(self.require_reviewer, request)
        form = await self.checked_form(request)
        return await run_in_threadpool(self.undo_item, request, form, name, path_id(request))

    def undo_item(self, request: Request, form, name: str, item: int) -> Response:
        try:
            written = decisions.undo(self.engine, item, name, self.photos.put_back, self.photos.route != "none")
        except Exception as exc:  # the photo could not go back: the transaction rolled back, the decision stands
            log.exception("could not undo a decision", extra={"reviewer": name, "item": item})
            return self.answer(request, form, 503, {"error": f"not undone, the photo could not be moved back: {exc}"})
        row = written.row
        if row is None:
            return self.answer(request, form, 404, {"error": "no such item"})
        if not written.won:
            why = "10 minutes, a night has run or an export taken it since, or its photo is still moving"
            note = {"error": f"{row.object_key}: too late to undo ({why}), or not yours"}
            return self.answer(request, form, 409, note)
        log.info("undone", extra={"reviewer": name, "key": row.object_key})
        if request.headers.get(FETCH_HEADER):  # the card again, to decide anew
            context = {"row": row, **self.card_context(form)}
            return self.render(request, "review/_card.html", context)
        return self.answer(request, form, 200, {"key": row.object_key, "undone": True})

    def card_context(self, form) -> dict:
        filters = {"night": form.get("night", ""), "category": form.get("predicted", "")}
        return {"filters": filters, "after": form.get("after", ""), "night_of": decisions.night_of}

    def answer(self, request: Request, form, status: int, note: dict) -> Response:
        """A card fragment for review.js, or (without JavaScript) back to the queue with a note."""
        empty = {"key": None, "final": None, "at": None, "first": None, "moved": None, "error": None}
        note = {**empty, "undo": None, "undone": False, "item": None, "suggestions": [], **note}
        if request.headers.get(FETCH_HEADER):
            context = {"note": note, **self.card_context(form)}
            return self.render(request, "review/_decided.html", context, status_code=status)
        request.session["note"] = note
        back = {"night": form.get("night", ""), "category": form.get("predicted", ""), "after": form.get("after", "")}
        return RedirectResponse(f"/?{urlencode(back)}", status_code=303)

    # -- the nights ----------------------------------------------------------------------

    def nights(self, request: Request) -> Response:
        self.require_reviewer(request)
        context = {
            "runs": decisions.nights(self.engine),
            "today": decisions.decided_today(self.engine),
            "night_of": decisions.night_of,
            **self.retrainings(),
        }
        return self.render(request, "review/nights.html", context)

    def retrainings(self) -> dict:
        """The latest retrainings from the registry; a registry that cannot be read costs the page only this part."""
        if self.models is None:
            return {"retrainings": None, "registry_error": None}
        try:
            return {"retrainings": self.models.retrainings(RETRAININGS_SHOWN), "registry_error": None}
        except Exception as exc:
            log.exception("could not read the model registry")
            return {"retrainings": [], "registry_error": str(exc)}

    def report(self, request: Request) -> Response:
        """A night's HTML report from the store, through the app: reviewers need no bucket access."""
        self.require_reviewer(request)
        run_id = request.path_params["run_id"]
        if not RUN_ID.fullmatch(run_id) or decisions.run(self.engine, run_id) is None:
            raise HTTPException(404, "no such night")
        try:
            html = read_object(self.photos.store, f"{self.runs_prefix}/{run_id}/report.html")
        except FileNotFoundError as exc:
            raise HTTPException(404, "this night wrote no report") from exc
        return Response(html, media_type="text/html", headers={"content-security-policy": REPORT_POLICY})

    # -- operations ----------------------------------------------------------------------

    async def healthz(self, request: Request) -> Response:
        return PlainTextResponse("ok")

    def readyz(self, request: Request) -> Response:
        with self.engine.connect() as connection:
            connection.scalar(select(1))
        return PlainTextResponse("ready")


def create_app(review: ReviewApp, session_key: str, secure_cookies: bool) -> Starlette:
    routes = [
        Route("/", review.queue),
        Route("/waiting", review.waiting),
        Route("/login", review.login_page, methods=["GET"]),
        Route("/login", review.login, methods=["POST"]),
        Route("/logout", review.logout, methods=["POST"]),
        Route("/photo/{item:int}", review.photo),
        Route("/photo/{item:int}/whole", review.whole_photo),
        Route("/decide/{item:int}", review.decide, methods=["POST"]),
        Route("/undo/{item:int}", review.undo, methods=["POST"]),
        Route("/nights", review.nights),
        Route("/nights/{run_id}/report", review.report),
        Route("/healthz", review.healthz),
        Route("/readyz", review.readyz),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    middleware = [
        Middleware(SecurityHeaders),
        Middleware(
            SessionMiddleware,
            secret_key=session_key,
            session_cookie="refund_review",
            max_age=int(sessions.LIFETIME.total_seconds()),
            same_site="strict",
            https_only=secure_cookies,
        ),
    ]
    app = Starlette(routes=routes, middleware=middleware)
    # Served on the metrics port, never the page's: whoever may scrape need not reach the page, and the reverse.
    app.state.metrics = review.metrics
    return app
