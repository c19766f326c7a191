"""`qwen3-rerank eval` on a small BEIR-format dataset built here.

Expected metric values come from the definitions (trec_eval's nDCG with linear gains, reciprocal
rank, recall) written out in this file, independently of ir-measures, for rankings fixed here or
derived from the library's own scores.
"""

from __future__ import annotations

import json
import math
import sys

import pytest

from qwen3_rerank import evaluation
from qwen3_rerank.cli import main

pytest.importorskip("ir_measures")
pytest.importorskip("bm25s")

CORPUS = [
    {
        "_id": "d1",
        "title": "Solar eclipse",
        "text": "A solar eclipse happens when the moon passes between the sun and earth.",
    },
    {"_id": "d2", "title": "", "text": "Lunar eclipses happen when the earth shadow falls on the moon."},
    {"_id": "d3", "title": "Bread", "text": "Sourdough bread rises with wild yeast and a long fermentation."},
    {"_id": "d4", "title": "Yeast", "text": "Baker's yeast makes bread dough rise quickly."},
    {"_id": "d5", "title": "Volcanoes", "text": "Volcanic eruptions throw ash and lava into the air."},
    {"_id": "d6", "title": "Tea", "text": "Green tea is made from unoxidised leaves of the tea plant."},
    {"_id": "d7", "title": "Coffee", "text": "Coffee beans are roasted seeds of the coffee plant."},
    {"_id": 8, "title": "Eclipse glasses", "text": "Never look at the sun without eclipse glasses."},
]
QUERIES = [
    {"_id": "q1", "text": "what causes a solar eclipse"},
    {"_id": "q2", "text": "how does yeast make bread rise"},
    {"_id": "q3", "text": "which plant is tea made from"},
    {"_id": "q4", "text": "a query without judgements"},
]
# (query, doc, relevance); one graded judgement and one explicit non-relevant one
QRELS = [
    ("q1", "d1", 2),
    ("q1", "8", 1),
    ("q1", "d2", 0),
    ("q2", "d3", 1),
    ("q2", "d4", 1),
    ("q3", "d6", 1),
]
DOC_TEXT = {str(d["_id"]): f"{d['title']} {d['text']}".strip() for d in CORPUS}
QUERY_TEXT = {q["_id"]: q["text"] for q in QUERIES}


@pytest.fixture(scope="module")
def beir_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("beir") / "tiny-beir"
    (root / "qrels").mkdir(parents=True)
    (root / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in CORPUS), encoding="utf-8")
    (root / "queries.jsonl").write_text("".join(json.dumps(q) + "\n" for q in QUERIES), encoding="utf-8")
    lines = ["query-id\tcorpus-id\tscore"] + [f"{q}\t{d}\t{r}" for q, d, r in QRELS]
    (root / "qrels" / "test.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root


# -- independent reference metrics -----------------------------------------------------------------


def qrels_of(qid):
    return {d: r for q, d, r in QRELS if q == qid}


def ref_ndcg10(ranking, judged):
    dcg = sum(judged.get(d, 0) / math.log2(i + 2) for i, d in enumerate(ranking[:10]))
    ideal = sorted((r for r in judged.values() if r > 0), reverse=True)[:10]
    idcg = sum(r / math.log2(i + 2) for i, r in enumerate(ideal))
    return dcg / idcg


def ref_rr10(ranking, judged):
    for i, d in enumerate(ranking[:10]):
        if judged.get(d, 0) > 0:
            return 1.0 / (i + 1)
    return 0.0


def ref_recall(ranking, judged, k):
    relevant = {d for d, r in judged.items() if r > 0}
    return len(relevant & set(ranking[:k])) / len(relevant)


def ref_metrics(rankings, k):
    qids = ["q1", "q2", "q3"]
    return {
        "nDCG@10": sum(ref_ndcg10(rankings.get(q, []), qrels_of(q)) for q in qids) / 3,
        "RR@10": sum(ref_rr10(rankings.get(q, []), qrels_of(q)) for q in qids) / 3,
        f"R@{k}": sum(ref_recall(rankings.get(q, []), qrels_of(q), k) for q in qids) / 3,
    }


def library_order(reranker, qid, doc_ids):
    scores = reranker.score(QUERY_TEXT[qid], [DOC_TEXT[d] for d in doc_ids])
    assert len(set(scores)) == len(scores), "test data must give distinct scores"
    order = sorted(range(len(doc_ids)), key=lambda i: -scores[i])
    return [doc_ids[i] for i in order], [scores[i] for i in order]


def read_run(path):
    rankings = {}
    for line in path.read_text().splitlines():
        qid, q0, doc, rank, score, tag = line.split()
        assert q0 == "Q0" and tag == "qwen3-rerank"
        rankings.setdefault(qid, []).append((int(rank), doc, float(score)))
    for ranks in rankings.values():
        assert [r for r, _, _ in ranks] == list(range(1, len(ranks) + 1))
    return {q: [(d, s) for _, d, s in ranks] for q, ranks in rankings.items()}


# -- tests -------------------------------------------------------------------------------------------


def test_reference_metrics_by_hand():
    # the reference functions themselves, on numbers worked out by hand
    judged = {"a": 2, "b": 1, "c": 0}
    assert ref_rr10(["c", "b", "a"], judged) == 0.5
    assert ref_ndcg10(["c", "b", "a"], judged) == pytest.approx((1 / math.log2(3) + 2 / 2) / (2 + 1 / math.log2(3)))
    assert ref_recall(["c", "b", "x"], judged, 2) == 0.5


def test_load_beir(beir_dir):
    data = evaluation.load_beir(beir_dir)
    assert data.corpus["d1"] == "Solar eclipse A solar eclipse happens when the moon passes between the sun and earth."
    assert data.corpus["d2"] == "Lunar eclipses happen when the earth shadow falls on the moon."  # no title
    assert data.corpus["8"].startswith("Eclipse glasses")  # integer ids become strings
    assert data.qrels["q1"] == {"d1": 2, "8": 1, "d2": 0}
    assert data.judged_queries() == ["q1", "q2", "q3"]


def test_measures_of_a_fixed_ranking_match_the_definitions():
    import ir_measures  # noqa: F401  (the module under test wraps it)

    rankings = {"q1": ["d2", "8", "d5", "d1"], "q2": ["d4", "d7"], "q3": ["d7", "d5", "d1", "d2"]}
    got = evaluation.measure_rankings(
        {q: qrels_of(q) for q in ("q1", "q2", "q3")},
        {q: [(d, 0.0) for d in r] for q, r in rankings.items()},  # equal scores: the order given must count
        evaluation.parse_measures(["nDCG@10", "MRR@10", "R@2"]),
    )
    expected = ref_metrics(rankings, 2)
    assert got["nDCG@10"] == pytest.approx(expected["nDCG@10"], abs=1e-9)
    assert got["RR@10"] == pytest.approx((1 / 2 + 1 + 0) / 3, abs=1e-9)
    assert got["R@2"] == pytest.approx((1 / 2 + 1 / 2 + 0) / 3, abs=1e-9)


def test_eval_with_a_trec_run_file(beir_dir, tmp_path, tiny_model_dir, reranker, capsys):
    # a first stage given in file order different from score order, with more than top-k documents
    run_lines = [
        "q1 Q0 d5 3 7.0 bm25",
        "q1 Q0 d2 1 9.0 bm25",
        "q1 Q0 8 2 8.0 bm25",
        "q1 Q0 d1 4 6.0 bm25",
        "q1 Q0 d6 5 1.0 bm25",  # beyond top 4
        "q2 Q0 d4 1 5.0 bm25",
        "q2 Q0 d7 2 4.0 bm25",
        "q4 Q0 d3 1 3.0 bm25",  # not judged: not evaluated
    ]  # q3 has no first-stage documents: counts as zero
    run_file = tmp_path / "first.run"
    run_file.write_text("\n".join(run_lines) + "\n")
    saved = tmp_path / "reranked.run"
    code = main(
        [
            "eval",
            str(beir_dir),
            "--run",
            str(run_file),
            "--model",
            str(tiny_model_dir),
            "--dtype",
            "fp32",
            "--threads",
            "2",
            "--top-k",
            "4",
            "--json",
            "--save-run",
            str(saved),
            "--no-progress",
        ]
    )
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert report["queries"] == 3 and report["top_k"] == 4 and report["pairs"] == 6
    metrics = report["metrics"]
    assert list(metrics) == ["nDCG@10", "RR@10", "R@4"]

    first = {"q1": ["d2", "8", "d5", "d1"], "q2": ["d4", "d7"]}
    expected_before = ref_metrics(first, 4)
    for name, value in expected_before.items():
        assert metrics[name]["first_stage"] == pytest.approx(value, abs=1e-9), name
    assert metrics["RR@10"]["first_stage"] == pytest.approx((1 / 2 + 1) / 3, abs=1e-9)

    reranked = read_run(saved)
    assert set(reranked) == {"q1", "q2"}
    after = {}
    for qid, docs in first.items():
        order, scores = library_order(reranker, qid, docs)
        assert [d for d, _ in reranked[qid]] == order
        assert [s for _, s in reranked[qid]] == pytest.approx(scores, abs=1e-6)
        after[qid] = order
    for name, value in ref_metrics(after, 4).items():
        assert metrics[name]["reranked"] == pytest.approx(value, abs=1e-9), name
        assert metrics[name]["change"] == pytest.approx(value - expected_before[name], abs=1e-9)
    # recall at the reranking depth cannot change: the same documents, reordered
    assert metrics["R@4"]["reranked"] == pytest.approx(metrics["R@4"]["first_stage"])


def test_eval_with_bm25_first_stage(beir_dir, reranker):
    data = evaluation.load_beir(beir_dir)
    report = evaluation.evaluate_reranker(reranker, data, top_k=3, measures=["nDCG@10", "RR@10", "R@3", "P@1"])
    # BM25: documents sharing no term with the query are left out; more shared terms rank higher
    first = {q: [d for d, _ in r] for q, r in report.first_rankings.items()}
    assert set(first) == {"q1", "q2", "q3"}
    assert first["q1"][0] == "d1"  # "solar" and "eclipse" (twice)
    assert set(first["q1"]) <= {"d1", "d2", "8"}
    assert first["q2"][:2] in (["d4", "d3"], ["d3", "d4"]) and len(first["q2"]) <= 3
    assert first["q3"][0] == "d6" and set(first["q3"]) <= {"d6", "d7"}
    scores = [s for r in report.first_rankings.values() for _, s in r]
    assert all(s > 0 for s in scores)
    for r in report.first_rankings.values():
        assert [s for _, s in r] == sorted((s for _, s in r), reverse=True)

    for name, value in ref_metrics(first, 3).items():
        assert report.before[name] == pytest.approx(value, abs=1e-9), name
    after = {}
    for qid, docs in first.items():
        order, scores = library_order(reranker, qid, docs)
        assert [d for d, _ in report.reranked[qid]] == order
        assert [s for _, s in report.reranked[qid]] == pytest.approx(scores, abs=1e-6)
        after[qid] = order
    for name, value in ref_metrics(after, 3).items():
        assert report.after[name] == pytest.approx(value, abs=1e-9), name
    p1 = sum(qrels_of(q).get(after[q][0], 0) > 0 for q in after) / 3
    assert report.after["P@1"] == pytest.approx(p1, abs=1e-9)


def test_eval_cli_table_and_max_queries(beir_dir, tiny_model_dir, capsys):
    code = main(
        [
            "eval",
            str(beir_dir),
            "--model",
            str(tiny_model_dir),
            "--dtype",
            "fp32",
            "--top-k",
            "5",
            "--max-queries",
            "2",
            "--metric",
            "MRR@10",
            "--metric",
            "R@5",
        ]
    )
    assert code == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("2 queries, first stage: bm25, top 5 reranked")
    assert out[1].split() == ["metric", "first", "stage", "reranked", "change"]
    assert [line.split()[0] for line in out[2:]] == ["RR@10", "R@5"]


@pytest.mark.parametrize(
    "extra_args, message",
    [
        (["--metric", "nDCG@ten"], "unknown metric"),
        (["--run", "missing.run"], "run file not found"),
        (["--split", "dev"], "qrels/dev.tsv is missing"),
    ],
)
def test_eval_cli_user_errors(beir_dir, tiny_model_dir, capsys, extra_args, message):
    code = main(["eval", str(beir_dir), "--model", str(tiny_model_dir), "--dtype", "fp32", *extra_args])
    assert code == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_eval_run_naming_unknown_document(beir_dir, tmp_path, tiny_model_dir, capsys):
    run_file = tmp_path / "bad.run"
    run_file.write_text("q1 Q0 nope 1 1.0 x\n")
    code = main(["eval", str(beir_dir), "--run", str(run_file), "--model", str(tiny_model_dir), "--dtype", "fp32"])
    assert code == 2
    assert "document 'nope' (query 'q1') is not in the corpus" in capsys.readouterr().err


@pytest.mark.parametrize("module", ["ir_measures", "bm25s"])
def test_eval_without_the_extra(beir_dir, monkeypatch, capsys, module):
    monkeypatch.setitem(sys.modules, module, None)  # import now fails as if not installed
    code = main(["eval", str(beir_dir)])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "pip install 'qwen3-rerank[eval]'" in err
