"""``hubtune serve``: embeddings, heads and search as an HTTP service, with a page at ``/``.

One backbone per process, loaded once; concurrent requests are coalesced into model batches; every
result is computed by the same functions the CLI's ``export``, ``search`` and ``predict`` call.

Modules: ``config`` (:class:`ServeConfig`, every setting), ``service`` (the loaded model, indexes and
heads, and the batch calls run in a worker thread), ``batcher`` (the asyncio micro-batcher and its
bounded queue), ``inputs`` (decoding and checking request inputs), ``limits`` (the body-size guard),
``auth`` (the bearer token), ``items`` (a dataset item's text or thumbnail), ``statuses`` (hubtune errors
-> HTTP statuses, in one place), ``schemas`` (the typed request and response bodies), ``logs`` (startup
and access lines), ``app`` (the FastAPI app factory) and ``runner`` (uvicorn, in the foreground or in a
thread). Importing this package imports neither FastAPI nor torch.
"""
