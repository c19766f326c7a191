"""Request and response bodies of the HTTP API (pydantic), shaped like the APIs clients know.

* ``/v1/rerank``, ``/v2/rerank``: Cohere (v2) and Jina rerank shape.
* ``/rerank``: text-embeddings-inference (TEI) shape, or the Jina / Cohere one (told apart by
  ``texts`` or ``documents``, as llama.cpp's server does).
* ``/score``, ``/v1/score``: vLLM's score shape.

Unknown fields are ignored (and logged at debug level), as TEI (serde's default), Cohere, Jina
and vLLM ignore them: clients written against those servers send extras freely (LiteLLM's
TEI provider sends ``top_n``, vLLM's examples ``encoding_format``). Wrong types, missing fields
and out-of-range values are still refused (422), with no coercion ("2" is not 2). Fields that a
known client sends and that mean nothing for this model (Cohere's ``priority``, a disabled
``relevant_spans``) are accepted and ignored.
"""

from __future__ import annotations

import logging
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, AliasChoices, BaseModel, ConfigDict, Discriminator, Field, Tag, model_validator

MAX_INT = 2**31 - 1

#: what the ``model`` field of a request does (see :meth:`~.state.ServerState.pick`)
MODEL_FIELD = (
    "which served model scores the request (a name from /v1/models; the answer names it); default: the "
    "first. A server of one model takes any name, so clients may send their own"
)

log = logging.getLogger("qwen3_rerank.server")


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
    """A request body: strict types, unknown fields dropped (and named in a debug log line)."""

    model_config = ConfigDict(extra="ignore", strict=True)

    @model_validator(mode="before")
    @classmethod
    def _log_unknown_fields(cls, data: Any) -> Any:
        if isinstance(data, dict) and log.isEnabledFor(logging.DEBUG):
            known = set(cls.model_fields) | {f.alias for f in cls.model_fields.values() if f.alias}
            for f in cls.model_fields.values():
                if isinstance(f.validation_alias, AliasChoices):
                    known.update(str(choice) for choice in f.validation_alias.choices)
            unknown = sorted(str(key) for key in data if key not in known)
            if unknown:
                log.debug("%s: ignored unknown field(s): %s", cls.__name__, ", ".join(unknown))
        return data


class DocumentObject(_Strict):
    """A document given as an object, as Jina and Cohere allow."""

    text: Text


class RelevantSpans(BaseModel):
    """Cohere's relevant-spans option: accepted only when disabled (this model has no spans)."""

    model_config = ConfigDict(extra="allow")
    mode: Literal["disabled"]


class RerankRequest(_Strict):
    """Cohere v2 / Jina rerank request."""

    model: str | None = Field(None, description=MODEL_FIELD)
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

    model: str | None = Field(None, description="extension: " + MODEL_FIELD)
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


#: the tags of :data:`AnyRerankRequest`'s two members; error locations leave them out
RERANK_DIALECT_TAGS = frozenset({"tei", "jina_cohere"})


def _rerank_dialect(body: Any) -> str | None:
    """Which shape a ``/rerank`` body has: ``texts`` is TEI, ``documents`` Jina / Cohere (as in
    llama.cpp's server); both is a conflict (None: the union's one-line error)."""
    if isinstance(body, dict):
        if "texts" in body and "documents" in body:
            return None
        if "documents" in body:
            return "jina_cohere"
    return "tei"  # neither: TEI's own errors ("texts: Field required"), as before


#: ``POST /rerank``'s body: TEI's or Jina / Cohere's (answered in the ``/v1/rerank`` shape). The
#: latter returns documents only when asked (``return_documents``), as infinity's ``/rerank`` and
#: Cohere v2 do: infinity's clients (LiteLLM's included) read a returned document as a string.
AnyRerankRequest = Annotated[
    Annotated[TeiRerankRequest, Tag("tei")] | Annotated[RerankRequest, Tag("jina_cohere")],
    Discriminator(
        _rerank_dialect,
        custom_error_type="rerank_dialect_conflict",
        custom_error_message="texts and documents both given: send texts (TEI shape) or documents "
        "(Jina/Cohere shape), not both",
    ),
]


class ScoreRequest(_Strict):
    """vLLM's score request (``/score``, ``/v1/score``): text_1 against each text_2, or paired."""

    model: str | None = Field(None, description=MODEL_FIELD)
    text_1: Query | Annotated[list[Query], Field(min_length=1)] = Field(
        validation_alias=AliasChoices("text_1", "queries"),
        description="the query, or one query per text_2 (paired); newer vLLM calls it `queries`",
    )
    text_2: Text | Annotated[list[Text], Field(min_length=1)] = Field(
        validation_alias=AliasChoices("text_2", "documents"),
        description="the texts to score against text_1; newer vLLM calls it `documents`",
    )
    truncate_prompt_tokens: int | None = Field(
        None,
        ge=-1,
        le=MAX_INT,
        description="cut each pair's whole prompt (template, instruction, query and text) to at most this many "
        "tokens by cutting the end of its text_2; -1 or none: the model's limit",
    )
    max_tokens_per_doc: int = Field(
        0, ge=0, le=MAX_INT, description="cut each text_2 to this many tokens (at most the server's limit); 0: no cut"
    )
    instruction: Text | None = Field(
        None, description="extension: task instruction for the prompt (default: the model card's web-search one)"
    )

    def queries(self) -> list[str]:
        return self.text_1 if isinstance(self.text_1, list) else [self.text_1]

    def documents(self) -> list[str]:
        return self.text_2 if isinstance(self.text_2, list) else [self.text_2]


class ScoreData(BaseModel):
    index: int = Field(description="the pair's position: text_2's index")
    object: Literal["score"] = "score"
    score: float = Field(description="probability that the text answers the query, in [0, 1]")


class ScoreUsage(BaseModel):
    prompt_tokens: int = Field(description="tokens actually scored, prompt template included")
    total_tokens: int
    completion_tokens: int = 0


class ScoreResponse(BaseModel):
    """vLLM's score response."""

    id: str
    object: Literal["list"] = "list"
    created: int
    model: str
    data: list[ScoreData] = Field(description="one per pair, in input order")
    usage: ScoreUsage


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
