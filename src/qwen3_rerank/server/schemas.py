"""Request and response bodies of the HTTP API (pydantic), shaped like the APIs clients know.

* ``/v1/rerank``, ``/v2/rerank``: Cohere (v2) and Jina rerank shape.
* ``/rerank``: text-embeddings-inference (TEI) shape.

Requests are strict: unknown fields, wrong types and out-of-range values are refused (422), so a
typo never silently changes a result. Fields that a known client sends and that mean nothing for
this model (Cohere's ``priority``, a disabled ``relevant_spans``) are accepted and ignored.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

MAX_INT = 2**31 - 1


def _valid_unicode(text: str) -> str:
    # JSON can carry lone surrogates ("\ud800"); they are not text and no tokenizer takes them.
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("text is not valid Unicode (lone surrogate)") from None
    return text


def _not_blank(text: str) -> str:
    if not text.strip():
        raise ValueError("must not be empty")
    return text


Text = Annotated[str, AfterValidator(_valid_unicode)]
Query = Annotated[str, AfterValidator(_valid_unicode), AfterValidator(_not_blank)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class DocumentObject(_Strict):
    """A document given as an object, as Jina and Cohere allow."""

    text: Text


class RelevantSpans(BaseModel):
    """Cohere's relevant-spans option: accepted only when disabled (this model has no spans)."""

    model_config = ConfigDict(extra="allow")
    mode: Literal["disabled"]


class RerankRequest(_Strict):
    """Cohere v2 / Jina rerank request."""

    model: str | None = Field(None, description="accepted and echoed as the served model's name")
    query: Query = Field(description="the search query")
    documents: list[Text | DocumentObject] = Field(
        description='texts to rank, as strings or {"text": ...} objects', min_length=1
    )
    top_n: int | None = Field(
        None, ge=1, le=MAX_INT, description="return only the best N (at most the document limit); default: all"
    )
    return_documents: bool = Field(False, description="include each document's text in the results")
    max_tokens_per_doc: int | None = Field(
        None, ge=1, le=MAX_INT, description="cut each document to this many tokens (at most the server's limit)"
    )
    instruction: Text | None = Field(
        None, description="extension: task instruction for the prompt (default: the model card's web-search one)"
    )
    chunking: Literal["max", "mean", "first"] | None = Field(
        None,
        description="extension: split documents longer than chunk_tokens into overlapping windows, score each, "
        "and combine their scores (max, mean or first); each result then names its best window",
    )
    chunk_tokens: int = Field(512, ge=1, le=MAX_INT, description="extension: window length in tokens")
    chunk_overlap: int = Field(64, ge=0, le=MAX_INT, description="extension: tokens shared by consecutive windows")
    # Accepted for client compatibility; they change nothing.
    priority: int | None = Field(None, ge=0, le=MAX_INT, description="Cohere's priority: accepted, ignored")
    relevant_spans: RelevantSpans | None = Field(None, description="Cohere's relevant spans: only mode=disabled")
    rank_fields: list[Literal["text"]] | None = Field(None, description='Cohere v1: only ["text"]')
    max_chunks_per_doc: int | None = Field(None, ge=1, le=MAX_INT, description="Cohere v1: accepted, ignored")

    def texts(self) -> list[str]:
        return [d if isinstance(d, str) else d.text for d in self.documents]


class RerankRequestV1(RerankRequest):
    """``/v1/rerank``: as v2, but documents come back by default (Jina's default)."""

    return_documents: bool = Field(True, description="include each document's text in the results")


class ResultDocument(BaseModel):
    text: str


class BestChunk(BaseModel):
    index: int
    token_start: int
    token_end: int
    char_start: int
    char_end: int


class RerankResponseItem(BaseModel):
    """One entry of :class:`RerankResponse` ``results`` (Cohere / Jina shape).

    Not the library's :class:`qwen3_rerank.RerankResult`: this is the wire format of one result.
    """

    index: int
    relevance_score: float
    document: ResultDocument | None = None
    best_chunk: BestChunk | None = Field(None, description="extension: with chunking, the best window")


class Usage(BaseModel):
    total_tokens: int = Field(description="tokens actually scored, prompt template included")


class ApiVersion(BaseModel):
    version: str = "2"


class BilledUnits(BaseModel):
    search_units: int = 1


class MetaTokens(BaseModel):
    input_tokens: int
    output_tokens: int = 0


class Meta(BaseModel):
    api_version: ApiVersion = ApiVersion()
    billed_units: BilledUnits = BilledUnits()
    tokens: MetaTokens
    warnings: list[str] = []


class RerankResponse(BaseModel):
    id: str
    model: str
    results: list[RerankResponseItem] = Field(description="best first; ties keep input order")
    usage: Usage
    meta: Meta


class TeiRerankRequest(_Strict):
    """text-embeddings-inference ``/rerank`` request."""

    query: Query
    texts: list[Text] = Field(min_length=1)
    raw_scores: bool = Field(False, description="the raw logit gap yes - no instead of a probability")
    return_text: bool = False
    truncate: bool | None = Field(
        None, description="cut texts longer than the limits (default: true); false: refuse them with 422"
    )
    truncation_direction: Literal["right", "left", "Right", "Left"] = Field(
        "right", description="which end of a too-long text to cut: right keeps its start, left keeps its end"
    )
    instruction: Text | None = Field(None, description="extension: task instruction for the prompt")


class TeiRank(BaseModel):
    index: int
    score: float
    text: str | None = None


class ErrorDetail(BaseModel):
    type: str
    message: str


class ErrorResponse(BaseModel):
    error: ErrorDetail


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "qwen3-rerank"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class Health(BaseModel):
    status: str
