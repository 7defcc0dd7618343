"""Request inputs: JSON bodies and multipart forms decoded to what the service embeds (``str``: a text,
``bytes``: an image file's bytes), every limit checked before any model work.

An image is checked from its header only (Pillow reads the size without decoding): not an image is
415, more pixels than ``max_image_pixels`` (a decompression bomb) is 413, and a truncated file that
passes the header fails later as that input's own 422. Nothing here reads a path: a string is a text.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any, Sequence

from hubtune.errors import ImageTooLarge, InputError, MalformedRequest, PayloadTooLarge, RequestError, UnsupportedInput
from hubtune.serve.config import ServeConfig

Value = Any  # str (a text) or bytes (an image)
INPUT_HELP = 'a text (a string) or an image ({"image": "<base64>"})'


def _where(loc: Sequence[Any]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "the body"


def validation_message(errors: Sequence[Any]) -> str:
    """pydantic's errors as one line: each problem where it is and what was expected (an input that
    matches neither a text nor an image is named once, not once per alternative)."""
    seen: dict[str, str] = {}
    for error in errors:
        loc = list(error.get("loc", ()))
        if len(loc) >= 2 and loc[0] in ("inputs", "queries") and isinstance(loc[1], int):
            where = _where(loc[:2])
            given = error.get("input")
            shown = type(given).__name__ if len(loc) == 3 and loc[2] == "str" else None
            if len(loc) > 3:  # inside {"image": ...}
                seen[where] = f"{_where(loc[:2] + [loc[3]])}: {error['msg'].lower()}; expected {INPUT_HELP}"
            elif where not in seen:
                seen[where] = f"{where}: expected {INPUT_HELP}" + (f", got {shown}" if shown else "")
            continue
        where = _where(loc)
        seen.setdefault(where, f"{where}: {error['msg'].lower()}"
                        + (f" (got {type(error.get('input')).__name__})" if error["type"].endswith("_type") else ""))
    return "; ".join(seen.values())


def parse_json(body: bytes, model: Any) -> Any:
    """``body`` validated as ``model``: malformed JSON is 400, a wrong field or type 422."""
    from pydantic import ValidationError

    if not body.strip():
        raise MalformedRequest("empty body; send JSON (Content-Type: application/json) or a multipart form")
    try:
        return model.model_validate_json(body)
    except ValidationError as error:
        problems = error.errors()
        if any(problem["type"] == "json_invalid" for problem in problems):
            detail = next(problem["msg"] for problem in problems if problem["type"] == "json_invalid")
            raise MalformedRequest(f"malformed JSON: {detail.removeprefix('Invalid JSON: ')}") from None
        raise RequestError(validation_message(problems)) from None


def check_image(data: bytes, where: str, max_pixels: int) -> bytes:
    """``data`` when its header is an image of at most ``max_pixels``; else why not (hubtune's own image
    checks, :func:`hubtune.imageio.image_size`: a bomb is 413, anything else not an image 415)."""
    from hubtune.imageio import image_size

    if not data:
        raise UnsupportedInput(f"{where} is empty; expected an image file's bytes")
    try:
        width, height = image_size(data)
    except ImageTooLarge as error:
        raise PayloadTooLarge(f"{where}: {error}") from None
    except InputError as error:
        raise UnsupportedInput(f"{where} is {error}; send JPEG, PNG, WebP, GIF, BMP or TIFF") from None
    if width * height > max_pixels:
        raise PayloadTooLarge(f"{where} is {width}x{height} = {width * height:,} pixels; at most {max_pixels:,} "
                              "(a decompression bomb?); send a smaller image")
    return data


def check_values(values: Sequence[Any], field: str, config: ServeConfig) -> list[Value]:
    """Validated inputs, in order: texts within ``max_text_chars``, images (base64 decoded, or uploaded
    bytes) with an image header of at most ``max_image_pixels``; at most ``max_inputs`` of them."""
    if not values:
        raise RequestError(f"{field} is empty; give at least one input")
    if len(values) > config.max_inputs:
        raise PayloadTooLarge(f"{len(values):,} {field} in one request; at most {config.max_inputs} "
                              "(--max-inputs): split them over several requests")
    out: list[Value] = []
    for index, value in enumerate(values):
        where = f"{field}[{index}]"
        if isinstance(value, str):
            if len(value) > config.max_text_chars:
                raise PayloadTooLarge(f"{where} has {len(value):,} characters; at most {config.max_text_chars:,} "
                                      "(--max-text-chars)")
            out.append(value)
        elif isinstance(value, (bytes, bytearray)):
            out.append(check_image(bytes(value), where, config.max_image_pixels))
        elif hasattr(value, "image") and isinstance(value.image, str):
            try:
                data = base64.b64decode(value.image, validate=True)
            except (binascii.Error, ValueError):
                raise RequestError(f"{where}.image is not valid base64; expected the image file's bytes, "
                                   "base64-encoded") from None
            out.append(check_image(data, where, config.max_image_pixels))
        else:
            raise RequestError(f"{where}: expected {INPUT_HELP}, got {type(value).__name__}")
    return out


async def read_form(request: Any, config: ServeConfig) -> dict[str, list[Any]]:
    """A multipart form as ``{field: [values]}``: uploaded files as bytes, other fields as strings."""
    from starlette.datastructures import UploadFile

    try:
        form = await request.form(max_files=config.max_inputs + 1, max_fields=config.max_inputs + 8)
    except PayloadTooLarge:
        raise
    except Exception as error:  # starlette's MultiPartException, and python-multipart's parse errors
        if "too many" in str(error).lower():
            raise PayloadTooLarge(f"{error}: at most {config.max_inputs} inputs per request (--max-inputs)") from None
        raise MalformedRequest(f"malformed multipart form: {error}") from None
    fields: dict[str, list[Any]] = {}
    try:
        for name, value in form.multi_items():
            if isinstance(value, UploadFile):
                fields.setdefault(name, []).append(await value.read())
            else:
                fields.setdefault(name, []).append(value)
    finally:
        await form.close()
    return fields


def form_body(fields: dict[str, list[Any]], lists: Sequence[str], scalars: dict[str, type]) -> dict[str, Any]:
    """A form's fields as the JSON body they stand for: ``lists`` repeat (a file or a text each),
    ``scalars`` appear at most once and are converted (``k=5``)."""
    unknown = sorted(set(fields) - set(lists) - set(scalars))
    if unknown:
        raise RequestError(f"unknown form field{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))}; "
                           f"expected {', '.join([*lists, *scalars])}")
    body: dict[str, Any] = {name: fields.get(name, []) for name in lists}
    for name, kind in scalars.items():
        given = fields.get(name)
        if given is None:
            continue
        if len(given) > 1 or not isinstance(given[0], str):
            raise RequestError(f"form field {name!r} must be given once, as a value (not a file)")
        try:
            body[name] = kind(given[0])
        except ValueError:
            kinds = {"int": "an integer", "float": "a number", "str": "a text"}
            raise RequestError(f"form field {name!r}: {given[0]!r} is not {kinds.get(kind.__name__, kind.__name__)}") from None
    return body


def is_multipart(request: Any) -> bool:
    return request.headers.get("content-type", "").lower().startswith("multipart/form-data")
