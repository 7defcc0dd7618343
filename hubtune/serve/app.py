"""The FastAPI app: ``create_app(ServeConfig(...))``.

Routes: ``GET /healthz`` (the process answers), ``GET /readyz`` (503 until the model, indexes and heads
are loaded), ``GET /v1/info``, ``POST /v1/embed``, ``POST /v1/search``, ``POST /v1/predict``,
``GET /v1/datasets/{name}/items/{row}``, the OpenAPI schema at ``/openapi.json`` (no ``/docs``: FastAPI's
Swagger UI loads its scripts from a CDN), and the page: ``GET /`` serves ``static/index.html`` and ``/static/*`` the folder beside it.

Every error answer is the JSON of :func:`hubtune.serve.statuses.error_body`, with the status
:mod:`hubtune.serve.statuses` maps the error class to. The model is loaded in a thread after the
server starts listening, so ``/healthz`` answers at once; a failed load stops the server
(``app.state.on_fatal``), as a failed start should.
"""

import asyncio
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, AsyncIterator, Sequence

from hubtune.errors import HubtuneError, Overloaded, RequestError
from hubtune.serve.config import ServeConfig
from hubtune.serve.service import Service

STATIC = Path(__file__).with_name("static")


def openapi_body(model: str, lists: Sequence[str], scalars: dict[str, str]) -> dict[str, Any]:
    """The request body a route documents: the JSON model, or the same fields as a multipart form."""
    form = {name: {"type": "array", "items": {"type": "string", "format": "binary"},
                   "description": "image files (or text values)"} for name in lists}
    form.update({name: {"type": kind} for name, kind in scalars.items()})
    return {"requestBody": {"required": True, "content": {
        "application/json": {"schema": {"$ref": f"#/components/schemas/{model}"}},
        "multipart/form-data": {"schema": {"type": "object", "properties": form, "required": list(lists)}}}}}


def create_app(config: ServeConfig, service: Service | None = None) -> Any:
    """The app for ``config``; ``service`` reuses one already loaded (tests share a model this way).

    The routes are closures over this call's service and batcher; their annotations are evaluated here
    (no ``from __future__ import annotations`` in this module), as FastAPI reads them."""
    from fastapi import APIRouter, FastAPI, Request, Security
    from fastapi.exceptions import RequestValidationError
    from fastapi.openapi.utils import get_openapi
    from fastapi.responses import FileResponse, JSONResponse, Response
    from fastapi.security import HTTPBearer
    from fastapi.staticfiles import StaticFiles
    from starlette.exceptions import HTTPException

    from hubtune import __version__
    from hubtune.serve import answers, schemas
    from hubtune.serve.auth import check_token
    from hubtune.serve.batcher import Batcher
    from hubtune.serve.inputs import check_values, form_body, is_multipart, parse_json, read_form, validation_message
    from hubtune.serve.items import Items
    from hubtune.serve.limits import BodyLimit
    from hubtune.serve.logs import AccessLog, logger, startup_line
    from hubtune.serve.statuses import error_body, error_headers, status_of

    svc = service or Service(config)
    setup = Service.thread_setup()  # the threads that load and run the model get this thread's torch threads
    batcher = Batcher(svc.run, config.max_batch_size, config.max_wait_ms, config.max_queue, thread_setup=setup)
    items = Items(config.thumbnail_px)

    def loaded(task: "asyncio.Future[None]") -> None:
        if task.cancelled():  # the server stopped while loading
            return
        error = task.exception()
        if error is not None:
            svc.error = error
            logger.error("hubtune serve: cannot start: %s", error, exc_info=not isinstance(error, HubtuneError))
            app.state.on_fatal(error)
        else:
            startup_line(app.state.url, svc.info())

    @asynccontextmanager
    async def lifespan(_: Any) -> AsyncIterator[None]:
        batcher.start()
        if svc.ready:
            startup_line(app.state.url, svc.info())
        else:
            logger.info("hubtune serve: loading %s (listening at %s; /readyz answers 200 once loaded)",
                        config.ref, app.state.url)

            def load() -> None:
                setup()
                svc.load()

            asyncio.get_running_loop().run_in_executor(None, load).add_done_callback(loaded)
        yield
        await batcher.stop()

    # no /docs or /redoc: their pages load scripts from a CDN; the service works offline and the page is at /
    app = FastAPI(title="hubtune serve", version=__version__, lifespan=lifespan, docs_url=None, redoc_url=None,
                  description="Embeddings, search and heads of one hubtune backbone. Errors are "
                  "`{error, message, status}`; `/v1` routes need `Authorization: Bearer TOKEN` when the "
                  "service was started with a token.")
    app.state.url = config.url()
    app.state.on_fatal = lambda error: None
    app.state.service = svc
    app.state.batcher = batcher

    # -- errors: one JSON shape, the status from statuses.py ----------------------------------------------
    def answer(error: BaseException, status: int | None = None) -> JSONResponse:
        status = status if status is not None else status_of(error)
        if status >= 500 and not isinstance(error, HubtuneError):
            logger.error("unexpected error: %s", error, exc_info=error)
        return JSONResponse(error_body(error, status), status, headers=error_headers(error))

    @app.exception_handler(HubtuneError)
    async def hubtune_error(_: Request, error: HubtuneError) -> JSONResponse:
        return answer(error)

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, error: RequestValidationError) -> JSONResponse:
        return answer(RequestError(validation_message(list(error.errors()))))

    @app.exception_handler(HTTPException)
    async def http_error(_: Request, error: HTTPException) -> JSONResponse:
        body = {"error": "HTTPException", "message": str(error.detail), "status": error.status_code}
        return JSONResponse(body, error.status_code, headers=getattr(error, "headers", None))

    @app.exception_handler(Exception)
    async def unexpected(_: Request, error: Exception) -> JSONResponse:
        return answer(error)

    # -- open routes --------------------------------------------------------------------------------------
    @app.get("/healthz", tags=["health"])
    async def healthz() -> dict[str, str]:
        """The process is up (the model may still be loading: see /readyz)."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"], responses={503: {"model": schemas.ErrorBody}})
    async def readyz() -> JSONResponse:
        """200 once the model, the datasets' indexes and the heads are loaded; 503 before."""
        if svc.ready:
            return JSONResponse({"ready": True, "model": config.ref, "datasets": sorted(svc.datasets),
                                 "heads": sorted(svc.heads)})
        return answer(Overloaded(f"not ready: {'loading failed: ' + str(svc.error) if svc.error else 'loading'} "
                                 f"{config.ref}", retry_after=2))

    @app.get("/", include_in_schema=False)
    async def page() -> Response:
        index = STATIC / "index.html"
        if not index.is_file():
            return JSONResponse({"error": "NotFound", "message": "the page is not installed (no "
                                 "hubtune/serve/static/index.html); the API's schema is at /openapi.json", "status": 404}, 404)
        return FileResponse(index, media_type="text/html")

    app.mount("/static", StaticFiles(directory=STATIC, check_dir=False), name="static")

    # -- /v1: token-guarded --------------------------------------------------------------------------------
    bearer = HTTPBearer(auto_error=False, description="the token of --token-env VAR / HUBTUNE_SERVE_TOKEN")

    async def guard(request: Request, _: Any = Security(bearer)) -> None:  # noqa: B008 (FastAPI's idiom)
        check_token(config.token, request.headers.get("authorization"))
        if not svc.ready:
            raise Overloaded(f"the service is still loading {config.ref}; retry shortly", retry_after=2)

    v1 = APIRouter(prefix="/v1", dependencies=[Security(guard)], responses=schemas.ERRORS)

    async def body(request: Request, model: Any, lists: Sequence[str], scalars: dict[str, type]) -> dict[str, Any]:
        """The request's fields: a multipart form's, or the JSON body's (validated by ``model``)."""
        if is_multipart(request):
            return form_body(await read_form(request, config), lists, scalars)
        return dict(parse_json(await request.body(), model))

    async def submit(request: Request, key: Any, inputs: Any, size: int) -> Any:
        result, batch = await batcher.submit(key, inputs, size, config.request_timeout)
        request.state.batch_size = batch
        return result

    @v1.get("/info")
    async def info() -> dict[str, Any]:
        """The model, the datasets and heads served, and the request limits (what the page offers)."""
        return svc.info()

    @v1.post("/embed", response_model=schemas.EmbedResponse,
             openapi_extra=openapi_body("EmbedRequest", ["inputs"], {}))
    async def embed(request: Request) -> Response:
        """Vectors of texts or images: the rows `hubtune export` writes for the same inputs."""
        fields = await body(request, schemas.EmbedRequest, ["inputs"], {})
        values = check_values(fields["inputs"], "inputs", config)
        kind = svc.embed_kind(values)
        return answers.response(await submit(request, ("embed", kind), values, len(values)))

    @v1.post("/search", response_model=schemas.SearchResponse,
             openapi_extra=openapi_body("SearchRequest", ["queries"], {"dataset": "string", "k": "integer"}))
    async def search(request: Request) -> Response:
        """The k nearest items of a dataset to each query, as `hubtune search --json` finds them."""
        fields = await body(request, schemas.SearchRequest, ["queries"], {"dataset": str, "k": int})
        if "dataset" not in fields:
            raise RequestError("dataset: field required (GET /v1/info lists the served datasets)")
        dataset = svc.dataset(fields["dataset"])
        k = fields.get("k", 5)
        if not 1 <= k <= config.max_k:
            raise RequestError(f"k={k}; expected 1..{config.max_k}")
        queries = check_values(fields["queries"], "queries", config)
        svc.check_queries(dataset, queries)
        return answers.response(await submit(request, ("search", dataset.name), (queries, k), len(queries)))

    @v1.post("/predict", response_model=schemas.PredictResponse,
             openapi_extra=openapi_body("PredictRequest", ["inputs"], {"head": "string"}))
    async def predict(request: Request) -> Response:
        """Each input's class and class probabilities from a head, as `hubtune predict --json`."""
        fields = await body(request, schemas.PredictRequest, ["inputs"], {"head": str})
        name, head = svc.head(fields.get("head"))
        values = check_values(fields["inputs"], "inputs", config)
        svc.check_head_inputs(name, head, values)
        return answers.response(await submit(request, ("predict", name), values, len(values)))

    @v1.get("/datasets/{name}/items/{row}", responses={200: {"content": {"image/jpeg": {}}}})
    async def item(name: str, row: int) -> Response:
        """A dataset item by its row (a search hit's `row`): the text as JSON, or a JPEG thumbnail of the
        image. Only items the store's manifest records; never a path given by the client."""
        found = await asyncio.to_thread(items.get, svc.dataset(name), row)
        if found.image is not None:
            return Response(found.image, media_type=found.media_type,
                            headers={"Cache-Control": "private, max-age=3600"})
        return JSONResponse({"row": found.row, "key": found.key, "label": found.label, "origin": found.origin,
                             "text": found.text})

    app.include_router(v1)

    def openapi() -> dict[str, Any]:
        """The schema, with the request models the routes read themselves (JSON or multipart)."""
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            for model in (schemas.EmbedRequest, schemas.SearchRequest, schemas.PredictRequest):
                made = model.model_json_schema(ref_template="#/components/schemas/{model}")
                components.update(made.pop("$defs", {}))
                components[model.__name__] = made
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    app.add_middleware(BodyLimit, limit=config.max_body_bytes)
    app.add_middleware(AccessLog)  # the last added is outermost: it times everything, 413s included
    return app
