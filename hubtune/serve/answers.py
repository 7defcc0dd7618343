"""The JSON bytes of an answer: orjson, with vectors kept as the float32 arrays they are.

``/v1/embed`` answers thousands of numbers per request; the standard library's encoder, on the
vectors as Python floats, took a third of the event loop's time under load (benchmarks/bench_serve.py)
and wrote each float32 with a double's 17 digits. orjson writes a float32 array with the shortest
decimal that reads back as the same float32 (so ``np.array(body["vectors"], dtype=np.float32)`` is the
exported array, bit for bit), at half the bytes and about 20x the speed.
"""

from __future__ import annotations

from typing import Any


def dumps(payload: Any) -> bytes:
    """``payload`` (dicts, lists, numbers, strings and numpy arrays) as JSON bytes."""
    import orjson

    return orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY)


def response(payload: Any, status: int = 200) -> Any:
    """A Starlette response of ``payload`` encoded by :func:`dumps`."""
    from starlette.responses import Response

    return Response(dumps(payload), status, media_type="application/json")
