"""The HTTP routes: check input, build :class:`RerankParams`, shape the answer.

Each handler is a plain top-level function; what it needs comes in as typed dependencies
(:data:`Server`, the API-key check), so a handler can be read, and tested, on its own. All
scoring happens behind :meth:`ServerState.rerank`, on the model that :meth:`ServerState.pick`
finds for the request's ``model`` field.
"""

from __future__ import annotations

import functools
import hmac
import time
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from ..results import best_first
from .api_errors import ERROR_RESPONSES, ApiError, error_json
from .infer import RerankParams
from .schemas import (
    AnyRerankRequest,
    ErrorResponse,
    Health,
    ModelCard,
    ModelList,
    RerankRequest,
    RerankRequestV1,
    RerankResponse,
    ScoreRequest,
    ScoreResponse,
    TeiRank,
    TeiRerankRequest,
)
from .settings import ServerSettings
from .state import ServerState


def server_state(request: Request) -> ServerState:
    """The app's :class:`ServerState` (set by ``create_app``)."""
    state: ServerState = request.app.state.server
    return state


Server = Annotated[ServerState, Depends(server_state)]


async def check_api_key(request: Request, server: Server) -> None:
    """401 unless ``Authorization: Bearer KEY`` names a configured key (when any are)."""
    keys = server.settings.api_keys
    if not keys:
        return
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    given = token.strip().encode("utf-8", "surrogateescape")
    valid = False
    for key in keys:  # compare with every key, in constant time
        valid |= hmac.compare_digest(given, key.encode("utf-8"))
    if scheme.lower() != "bearer" or not valid:
        raise ApiError(401, "unauthorized", "missing or invalid API key", {"WWW-Authenticate": "Bearer"})


AUTHORIZED = [Depends(check_api_key)]

router = APIRouter()


# -- rerank --------------------------------------------------------------------------------------


async def wait_for_disconnect(request: Request) -> None:
    """Return once the client has gone.

    The body has been read by now, so the app's next ``receive()`` blocks until uvicorn answers
    it with ``http.disconnect`` (the connection closed, or the response sent). uvicorn does not
    cancel a handler whose client left; this is how the handler learns it.
    """
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


async def cohere_rerank(body: RerankRequest, request: Request, server: ServerState) -> dict[str, Any]:
    """The Cohere / Jina answer for ``/v1/rerank`` and ``/v2/rerank``."""
    served = server.pick(body.model)
    settings = server.settings
    texts = body.texts()
    if body.top_n is not None and body.top_n > settings.max_documents:
        raise ApiError(
            422, "invalid_request", f"top_n={body.top_n} is more than the document limit ({settings.max_documents})"
        )
    limit = settings.max_tokens_per_doc
    if body.max_tokens_per_doc is not None:
        limit = min(limit, body.max_tokens_per_doc)
    scored = await server.rerank(
        served,
        RerankParams(
            body.query,
            texts,
            instruction=body.instruction,
            max_doc_tokens=limit,
            chunking=body.chunking,
            chunk_tokens=body.chunk_tokens,
            chunk_overlap=body.chunk_overlap,
        ),
        functools.partial(wait_for_disconnect, request),
    )
    scores = [d.score for d in scored.documents]
    results = []
    for i in best_first(scores, body.top_n):
        item: dict[str, Any] = {"index": i, "relevance_score": scores[i]}
        if body.return_documents:
            item["document"] = {"text": texts[i]}
        best_chunk = scored.documents[i].best_chunk
        if best_chunk is not None:
            item["best_chunk"] = best_chunk.to_dict()
        results.append(item)
    tokens = scored.request.num_tokens
    warnings = []
    if any(scored.request.truncated):
        warnings.append(f"{sum(scored.request.truncated)} document(s) cut to fit max_length={served.model.max_length}")
    return {
        "id": request.state.request_id,
        "model": served.name,
        "results": results,
        "usage": {"total_tokens": tokens},
        "meta": {
            "api_version": {"version": "2"},
            "billed_units": {"search_units": 1},
            "tokens": {"input_tokens": tokens, "output_tokens": 0},
            "warnings": warnings,
        },
    }


@router.post(
    "/v1/rerank",
    response_model=RerankResponse,
    response_model_exclude_none=True,
    responses=ERROR_RESPONSES,
    dependencies=AUTHORIZED,
    tags=["rerank"],
    summary="Rerank (Cohere / Jina shape; documents returned by default)",
)
async def rerank_v1(body: RerankRequestV1, request: Request, server: Server) -> dict[str, Any]:
    return await cohere_rerank(body, request, server)


@router.post(
    "/v2/rerank",
    response_model=RerankResponse,
    response_model_exclude_none=True,
    responses=ERROR_RESPONSES,
    dependencies=AUTHORIZED,
    tags=["rerank"],
    summary="Rerank (Cohere v2 shape)",
)
async def rerank_v2(body: RerankRequest, request: Request, server: Server) -> dict[str, Any]:
    return await cohere_rerank(body, request, server)


async def tei_rerank(body: TeiRerankRequest, request: Request, server: ServerState) -> list[dict[str, Any]]:
    """The text-embeddings-inference answer: ``[{"index", "score"}]``, best first."""
    scored = await server.rerank(
        server.pick(body.model),
        RerankParams(
            body.query,
            list(body.texts),
            instruction=body.instruction,
            raw=body.raw_scores,
            truncate=True if body.truncate is None else body.truncate,
            max_doc_tokens=server.settings.max_tokens_per_doc,
            truncation_direction="left" if body.truncation_direction.lower() == "left" else "right",
        ),
        functools.partial(wait_for_disconnect, request),
    )
    scores = [d.score for d in scored.documents]
    out = []
    for i in best_first(scores):
        item: dict[str, Any] = {"index": i, "score": scores[i]}
        if body.return_text:
            item["text"] = body.texts[i]
        out.append(item)
    return out


_RERANK_EXAMPLES: dict[str, Any] = {
    "tei": {
        "summary": "text-embeddings-inference shape (texts): answered as a list of {index, score}",
        "value": {"query": "what do cats eat", "texts": ["Cats eat meat.", "Paris is in France."]},
    },
    "jina_cohere": {
        "summary": "Jina / Cohere shape (documents): answered as /v2/rerank answers",
        "value": {"query": "what do cats eat", "documents": ["Cats eat meat.", "Paris is in France."], "top_n": 1},
    },
}


@router.post(
    "/rerank",
    response_model=list[TeiRank] | RerankResponse,
    response_model_exclude_none=True,
    responses=ERROR_RESPONSES,
    dependencies=AUTHORIZED,
    tags=["rerank"],
    summary="Rerank (TEI shape with texts, or Jina / Cohere shape with documents)",
    description="A body with `texts` is text-embeddings-inference's and gets TEI's answer; one with "
    "`documents` is Jina's / Cohere's and gets the `/v1/rerank` shape (documents only with "
    "`return_documents: true`, as infinity and Cohere v2); one with both is a 422.",
)
async def rerank_any(
    body: Annotated[AnyRerankRequest, Body(openapi_examples=_RERANK_EXAMPLES)], request: Request, server: Server
) -> list[dict[str, Any]] | dict[str, Any]:
    if isinstance(body, TeiRerankRequest):
        return await tei_rerank(body, request, server)
    return await cohere_rerank(body, request, server)


# -- vLLM score ----------------------------------------------------------------------------------


def score_groups(body: ScoreRequest, settings: ServerSettings) -> tuple[list[RerankParams], list[list[int]]]:
    """The request as one group per distinct query, and each group's pair indices.

    One text_1 goes with every text_2; N text_1 go pairwise with N text_2 (vLLM's two forms).
    Grouping by query, as :meth:`Reranker.score_pairs` does, lets each query's prompt prefix
    run once for all its texts.
    """
    queries, texts = body.queries(), body.documents()
    if len(queries) != 1 and len(queries) != len(texts):
        raise ApiError(
            422,
            "invalid_request",
            f"text_1 has {len(queries)} texts and text_2 has {len(texts)}: give one text_1, or one per text_2",
        )
    limit = settings.max_tokens_per_doc
    if body.max_tokens_per_doc:
        limit = min(limit, body.max_tokens_per_doc)
    budget = body.truncate_prompt_tokens if body.truncate_prompt_tokens not in (None, -1) else None
    by_query: dict[str, list[int]] = {}
    for i in range(len(texts)):
        by_query.setdefault(queries[0] if len(queries) == 1 else queries[i], []).append(i)
    groups = [
        RerankParams(
            query,
            [texts[i] for i in indices],
            instruction=body.instruction,
            max_doc_tokens=limit,
            max_prompt_tokens=budget,
        )
        for query, indices in by_query.items()
    ]
    return groups, list(by_query.values())


@router.post(
    "/score",
    response_model=ScoreResponse,
    responses=ERROR_RESPONSES,
    dependencies=AUTHORIZED,
    tags=["score"],
    summary="Score text pairs (vLLM's score API)",
    description="`text_1` against each `text_2`, or N `text_1` paired with N `text_2`; scores in input order.",
)
async def score(body: ScoreRequest, request: Request, server: Server) -> dict[str, Any]:
    served = server.pick(body.model)
    groups, indices = score_groups(body, server.settings)
    scored = await server.rerank_groups(served, groups, functools.partial(wait_for_disconnect, request))
    scores = [0.0] * sum(len(group) for group in indices)
    for group, result in zip(indices, scored, strict=True):
        for i, document in zip(group, result.documents, strict=True):
            scores[i] = document.score
    tokens = sum(result.request.num_tokens for result in scored)
    return {
        "id": f"score-{request.state.request_id}",
        "object": "list",
        "created": int(time.time()),
        "model": served.name,
        "data": [{"index": i, "object": "score", "score": value} for i, value in enumerate(scores)],
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens, "completion_tokens": 0},
    }


@router.post(
    "/v1/score",
    response_model=ScoreResponse,
    responses=ERROR_RESPONSES,
    dependencies=AUTHORIZED,
    tags=["score"],
    summary="Score text pairs (vLLM's score API, its older path)",
)
async def score_v1(body: ScoreRequest, request: Request, server: Server) -> dict[str, Any]:
    return await score(body, request, server)


# -- service -------------------------------------------------------------------------------------


@router.get("/health", response_model=Health, tags=["service"], summary="The process is up")
async def health() -> dict[str, Any]:
    return {"status": "ok"}


@router.get(
    "/ready",
    response_model=Health,
    responses={
        503: {
            "model": ErrorResponse,
            "description": "not ready (a model still loading, the server stopping, or a model's files "
            "overwritten in place)",
        }
    },
    tags=["service"],
    summary="Every model is loaded and warmed up, and the server is not stopping",
)
async def ready(server: Server) -> dict[str, Any] | JSONResponse:
    failure = server.model_failure()
    if failure is not None:
        return error_json(503, "model_changed", failure)
    if server.draining:
        return error_json(503, "unavailable", "stopping")
    waiting = server.not_ready()
    if not waiting:
        return {"status": "ready"}
    if len(server.models) == 1:
        return error_json(503, "unavailable", "the model is not ready")
    return error_json(503, "unavailable", f"model(s) not ready: {', '.join(waiting)}")


@router.get("/metrics", tags=["service"], summary="Prometheus metrics", response_class=Response)
async def metrics(server: Server) -> Response:
    return Response(generate_latest(server.metrics.registry), media_type=CONTENT_TYPE_LATEST)


@router.get(
    "/v1/models",
    response_model=ModelList,
    dependencies=AUTHORIZED,
    tags=["service"],
    summary="The served models (OpenAI-style list), the default first",
    responses={401: ERROR_RESPONSES[401]},
)
async def models(server: Server) -> dict[str, Any]:
    return {"object": "list", "data": [ModelCard(id=name, created=server.started) for name in server.models]}
