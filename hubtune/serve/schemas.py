"""The typed request and response bodies (pydantic): they validate JSON requests and make the
OpenAPI schema at ``/openapi.json``. Validation is strict (no ``"5"`` for 5, no number for a text),
and unknown fields are refused, so a typo is an error that names it rather than a silent default."""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Union

from pydantic import BaseModel, ConfigDict, Field


class Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")


class ImageInput(Strict):
    """An image input in JSON: its file bytes (JPEG, PNG, WebP, ...) in base64."""

    image: str = Field(description="the image file's bytes, base64-encoded")


Input = Union[str, ImageInput]


class EmbedRequest(Strict):
    inputs: List[Input] = Field(description="texts (strings) or images ({\"image\": \"<base64>\"}), one kind per request")


class EmbedResponse(BaseModel):
    model: str = Field(description="the model reference, with the revision it resolved to")
    fingerprint: str = Field(description="the fingerprint of these vectors (what the store files them under)")
    dim: int
    vectors: List[List[float]] = Field(description="one row per input, in order: the vectors `hubtune export` writes")


class SearchRequest(Strict):
    dataset: str
    queries: List[Input] = Field(description="texts, images, or `row:N` / `key:HEX` naming an item of the dataset")
    k: int = Field(5, ge=1, description="neighbours per query")


class Hit(BaseModel):
    row: int = Field(description="the item's row (GET /v1/datasets/{dataset}/items/{row})")
    key: str = Field(description="the item's content key, hex")
    label: Optional[str]
    score: float = Field(description="cosine similarity (higher is nearer), or squared L2 distance for an l2 index")
    origin: str = Field(description="where the item came from: its file, or FILE:LINE for a table row")


class SearchResponse(BaseModel):
    results: List[List[Hit]] = Field(description="for each query, its nearest items, nearest first")


class PredictRequest(Strict):
    head: Optional[str] = Field(None, description="the head's name (GET /v1/info lists them); optional when one is loaded")
    inputs: List[Input]


class Prediction(BaseModel):
    label: str
    score: float = Field(description="the probability of `label`")
    scores: Dict[str, float] = Field(description="every class's probability")


class PredictResponse(BaseModel):
    predictions: List[Prediction]


class ErrorBody(BaseModel):
    error: str = Field(description="the hubtune error class")
    message: str = Field(description="what was given, what was expected, and the fix")
    status: int


#: the error answers each /v1 route documents
ERRORS: Dict[Any, Dict[str, Any]] = {status: {"model": ErrorBody} for status in (400, 401, 404, 413, 415, 422, 503, 504)}
