"""Does reranking help on your data? Rerank a first stage on a BEIR-format dataset and measure it.

A dataset folder in the BEIR layout::

    corpus.jsonl    {"_id": ..., "title": ..., "text": ...} per line
    queries.jsonl   {"_id": ..., "text": ...} per line
    qrels/test.tsv  query-id <TAB> corpus-id <TAB> score   (a header line is allowed)

The first stage is a TREC run file (``qid Q0 docid rank score tag``) or BM25 over the corpus
(``bm25s``). Its top ``k`` documents per judged query are reranked with :class:`Reranker`, many
queries per call (:meth:`Reranker.prepare` + :meth:`Reranker.score_requests`), and both rankings
are measured with ``ir-measures`` (nDCG@10, RR@10 = MRR@10, R@k by default): this module writes no
metric code of its own.

Both rankings are the top ``k`` only. Each is measured in exactly the order reported (first stage:
score descending, ties in file order; reranked: score descending, ties in first-stage order) by
handing ``ir-measures`` rank-derived scores, so ties never fall to trec_eval's doc-id order.
Queries are those with judgements (and a text in ``queries.jsonl``); a judged query that the first
stage returns nothing for counts as zero, as trec_eval's ``-c`` does.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._extras import require
from .errors import InputError

if TYPE_CHECKING:
    from ir_measures import Measure

    from .reranker import Reranker

EXTRA = "eval"
DEFAULT_TOP_K = 100
#: pairs handed to one :meth:`Reranker.score_requests` call (several queries batched together)
PAIRS_PER_CALL = 512

Ranking = list[tuple[str, float]]  # (doc id, score), best first


@dataclass
class BeirDataset:
    """A BEIR-format dataset: document texts, query texts and relevance judgements (one split)."""

    corpus: dict[str, str]
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]

    def judged_queries(self) -> list[str]:
        """Ids of queries that have judgements and a text, in ``queries.jsonl`` order."""
        return [qid for qid in self.queries if qid in self.qrels]


@dataclass
class EvalReport:
    """Metrics of the first stage and of the reranked top ``k``, and both rankings."""

    measures: list[str]
    before: dict[str, float]
    after: dict[str, float]
    top_k: int
    first_stage: str
    num_queries: int
    num_pairs: int
    first_rankings: dict[str, Ranking] = field(repr=False)
    reranked: dict[str, Ranking] = field(repr=False)

    def to_dict(self) -> dict[str, Any]:
        """The report as a JSON-ready dict: first stage, top k, counts and, per metric, before/after/change."""
        return {
            "first_stage": self.first_stage,
            "top_k": self.top_k,
            "queries": self.num_queries,
            "pairs": self.num_pairs,
            "metrics": {
                m: {"first_stage": self.before[m], "reranked": self.after[m], "change": self.after[m] - self.before[m]}
                for m in self.measures
            },
        }


# -- reading ---------------------------------------------------------------------------------------


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        raise InputError(f"not a BEIR dataset: {path} is missing")
    records = []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise InputError(f"{path}, line {number}: not valid JSON ({exc.msg})") from None
            if not isinstance(record, dict) or "_id" not in record:
                raise InputError(f'{path}, line {number}: expected an object with an "_id" field')
            records.append(record)
    return records


def load_beir(folder: str | Path, split: str = "test") -> BeirDataset:
    """Read a BEIR dataset folder; a document's text is its title and text joined by a space.

    Args:
        folder: the dataset folder: ``corpus.jsonl``, ``queries.jsonl``, ``qrels/<split>.tsv``.
        split: which qrels file to read.

    Returns:
        The corpus, the queries and the judgements.

    Raises:
        InputError: a missing folder or file, a line that is not a JSON object with ``_id``, or
            qrels that cannot be read or hold no judgement.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"dataset folder not found: {folder}")
    corpus = {}
    for record in _read_jsonl(folder / "corpus.jsonl"):
        title = str(record.get("title") or "").strip()
        text = str(record.get("text") or "").strip()
        corpus[str(record["_id"])] = f"{title} {text}".strip()
    queries = {str(r["_id"]): str(r.get("text") or "") for r in _read_jsonl(folder / "queries.jsonl")}
    qrels_path = folder / "qrels" / f"{split}.tsv"
    if not qrels_path.is_file():
        raise InputError(f"not a BEIR dataset: {qrels_path} is missing")
    qrels: dict[str, dict[str, int]] = {}
    with qrels_path.open(encoding="utf-8", newline="") as handle:
        for number, row in enumerate(csv.reader(handle, delimiter="\t"), 1):
            if not row or not "".join(row).strip():
                continue
            if len(row) < 3:
                raise InputError(f"{qrels_path}, line {number}: expected query-id, corpus-id and score")
            try:
                relevance = int(row[2])
            except ValueError:
                if number == 1:  # the header line
                    continue
                raise InputError(f"{qrels_path}, line {number}: score {row[2]!r} is not an integer") from None
            qrels.setdefault(row[0], {})[row[1]] = relevance
    if not qrels:
        raise InputError(f"{qrels_path} has no judgements")
    return BeirDataset(corpus, queries, qrels)


def read_trec_run(path: str | Path) -> dict[str, Ranking]:
    """A TREC run file as rankings: per query, (doc id, score) by score descending, ties in file order."""
    ir_measures = require("ir_measures", EXTRA, "evaluation")
    path = Path(path)
    if not path.is_file():
        raise InputError(f"run file not found: {path}")
    runs: dict[str, Ranking] = {}
    try:
        for doc in ir_measures.read_trec_run(str(path)):
            runs.setdefault(doc.query_id, []).append((doc.doc_id, float(doc.score)))
    except (ValueError, IndexError) as exc:
        raise InputError(f"{path}: not a TREC run file (qid Q0 docid rank score tag): {exc}") from None
    return {qid: sorted(ranking, key=lambda item: -item[1]) for qid, ranking in runs.items()}


def write_trec_run(rankings: Mapping[str, Ranking], path: str | Path, tag: str = "qwen3-rerank") -> None:
    """Write rankings as a TREC run file, ranks from 1 in the given order."""
    with Path(path).open("w", encoding="utf-8") as out:
        for qid, ranking in rankings.items():
            for rank, (doc_id, score) in enumerate(ranking, 1):
                out.write(f"{qid} Q0 {doc_id} {rank} {score:.10g} {tag}\n")


# -- first stage and reranking ---------------------------------------------------------------------


def bm25_rankings(dataset: BeirDataset, query_ids: Sequence[str], k: int) -> dict[str, Ranking]:
    """BM25 (``bm25s``, English stop words) top ``k`` per query; documents scoring 0 are left out."""
    bm25s = require("bm25s", EXTRA, "BM25 first stage")
    doc_ids = list(dataset.corpus)
    if not doc_ids:
        raise InputError("the corpus is empty")
    retriever = bm25s.BM25()
    retriever.index(
        bm25s.tokenize([dataset.corpus[d] for d in doc_ids], stopwords="en", show_progress=False), show_progress=False
    )
    if not query_ids:
        return {}
    tokens = bm25s.tokenize([dataset.queries[q] for q in query_ids], stopwords="en", show_progress=False)
    indices, scores = retriever.retrieve(tokens, k=min(k, len(doc_ids)), show_progress=False)
    rankings = {}
    for qid, row, row_scores in zip(query_ids, indices, scores, strict=True):
        rankings[qid] = [(doc_ids[int(i)], float(s)) for i, s in zip(row, row_scores, strict=True) if s > 0]
    return rankings


def rerank_rankings(
    reranker: Reranker,
    dataset: BeirDataset,
    candidates: Mapping[str, Ranking],
    *,
    instruction: str | None = None,
    max_doc_tokens: int | None = None,
    show_progress: bool = False,
) -> dict[str, Ranking]:
    """Score each query's candidates with the reranker, batching many queries per call.

    Returns, per query, (doc id, reranker score) by score descending, ties in candidate order.
    """
    for qid, ranking in candidates.items():
        for doc_id, _ in ranking:
            if doc_id not in dataset.corpus:
                raise InputError(f"document {doc_id!r} (query {qid!r}) is not in the corpus")
    work = [qid for qid, ranking in candidates.items() if ranking]
    reranked: dict[str, Ranking] = {qid: [] for qid in candidates}
    progress = None
    if show_progress and work:
        from tqdm.auto import tqdm

        progress = tqdm(total=len(work), desc="reranking", unit="query")
    try:
        start = 0
        while start < len(work):
            group: list[str] = []
            pairs = 0
            while start < len(work) and (not group or pairs + len(candidates[work[start]]) <= PAIRS_PER_CALL):
                group.append(work[start])
                pairs += len(candidates[work[start]])
                start += 1
            requests = [
                reranker.prepare(
                    dataset.queries[qid],
                    [dataset.corpus[doc_id] for doc_id, _ in candidates[qid]],
                    instruction=instruction,
                    max_doc_tokens=max_doc_tokens,
                )
                for qid in group
            ]
            for qid, scores in zip(group, reranker.score_requests(requests), strict=True):
                docs = [doc_id for doc_id, _ in candidates[qid]]
                order = sorted(range(len(docs)), key=lambda i: (-scores[i], i))
                reranked[qid] = [(docs[i], scores[i]) for i in order]
            if progress is not None:
                progress.update(len(group))
    finally:
        if progress is not None:
            progress.close()
    return reranked


# -- metrics -----------------------------------------------------------------------------------------


def default_measures(top_k: int) -> list[str]:
    """The metrics reported when none are asked for: nDCG@10, RR@10 and recall at ``top_k``."""
    return ["nDCG@10", "RR@10", f"R@{top_k}"]


def parse_measures(names: Sequence[str]) -> list[Measure]:
    """ir-measures objects for names such as ``nDCG@10``, ``MRR@10`` (= ``RR@10``), ``R@100``, ``P@5``."""
    ir_measures = require("ir_measures", EXTRA, "evaluation")
    measures: list[Measure] = []
    for name in names:
        try:
            measures.append(ir_measures.parse_measure(name))
        except Exception:  # ir-measures raises several kinds for an unknown name
            raise InputError(f"unknown metric {name!r} (ir-measures names, e.g. nDCG@10, RR@10, R@100, P@5)") from None
    return measures


def measure_rankings(
    qrels: Mapping[str, Mapping[str, int]], rankings: Mapping[str, Ranking], measures: Sequence[Measure]
) -> dict[str, float]:
    """Mean of each measure over the queries of ``qrels``, each ranking taken in its given order."""
    ir_measures = require("ir_measures", EXTRA, "evaluation")
    run = {qid: {doc_id: float(len(r) - i) for i, (doc_id, _) in enumerate(r)} for qid, r in rankings.items()}
    run = {qid: docs for qid, docs in run.items() if docs}
    values = ir_measures.calc_aggregate(measures, {q: dict(d) for q, d in qrels.items()}, run)
    return {str(m): float(values.get(m, 0.0)) for m in measures}


def evaluate_reranker(
    reranker: Reranker,
    dataset: BeirDataset,
    *,
    run: Mapping[str, Ranking] | None = None,
    top_k: int = DEFAULT_TOP_K,
    measures: Sequence[str] | None = None,
    instruction: str | None = None,
    max_doc_tokens: int | None = None,
    max_queries: int | None = None,
    show_progress: bool = False,
    first_stage_name: str | None = None,
) -> EvalReport:
    """Rerank the first stage's top ``top_k`` (``run``, or BM25 when ``None``) and measure both.

    Args:
        reranker: the reranker to evaluate.
        dataset: a BEIR dataset (:func:`load_beir`); only judged queries are used.
        run: the first stage's rankings per query (e.g. :func:`read_trec_run`); ``None``: BM25.
        top_k: candidates per query taken from the first stage.
        measures: ir-measures names (default: :func:`default_measures`).
        instruction: the task instruction (default: the template's).
        max_doc_tokens: cut each document to this many tokens.
        max_queries: use only the first judged queries.
        show_progress: a progress bar over the queries.
        first_stage_name: the first stage's name in the report (default: ``bm25`` or ``run``).

    Returns:
        Each metric before and after reranking, with both rankings.

    Raises:
        InputError: ``top_k`` below 1, an unknown metric, no judged query, or a candidate that is
            not in the corpus.
        MissingExtraError: the ``eval`` extra (ir-measures, bm25s) is not installed.
    """
    if top_k < 1:
        raise InputError("top_k must be at least 1")
    names = list(measures) if measures else default_measures(top_k)
    parsed = parse_measures(names)
    query_ids = dataset.judged_queries()
    if max_queries is not None:
        query_ids = query_ids[:max_queries]
    if not query_ids:
        raise InputError("no query has both a text in queries.jsonl and judgements in the qrels")
    if run is None:
        first = bm25_rankings(dataset, query_ids, top_k)
        first_stage_name = first_stage_name or "bm25"
    else:
        first = {qid: list(run.get(qid, []))[:top_k] for qid in query_ids}
        first_stage_name = first_stage_name or "run"
    first = {qid: first.get(qid, []) for qid in query_ids}
    reranked = rerank_rankings(
        reranker, dataset, first, instruction=instruction, max_doc_tokens=max_doc_tokens, show_progress=show_progress
    )
    qrels = {qid: dataset.qrels[qid] for qid in query_ids}
    return EvalReport(
        measures=[str(m) for m in parsed],
        before=measure_rankings(qrels, first, parsed),
        after=measure_rankings(qrels, reranked, parsed),
        top_k=top_k,
        first_stage=first_stage_name,
        num_queries=len(query_ids),
        num_pairs=sum(len(r) for r in first.values()),
        first_rankings=first,
        reranked=reranked,
    )
