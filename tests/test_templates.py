"""Prompt templates as data: ``official`` (the reference recipe) and ``card`` (the ONNX model card).

The ``card`` reference is written here from the model card's JavaScript, string for string, and
tokenized whole by ``transformers`` (as Transformers.js tokenizes it); the scores come from the
PyTorch model on those ids. Nothing here shares code with the package's template.
"""

from __future__ import annotations

import json

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qwen3_rerank import Reranker
from qwen3_rerank.errors import InputError
from qwen3_rerank.prompt import CARD, OFFICIAL, PromptTemplate, get_template
from qwen3_rerank.prompt_tokenizer import PromptTokenizer

CARD_SYSTEM = (
    "Judge whether the Document meets the requirements based on the Query and the Instruct provided. "
    'Note that the answer can only be "yes" or "no".'
)
CARD_INSTRUCTION = "Given a web search query, retrieve relevant passages that answer the query"
QUERY = "What is the capital of France?"
DOCS = [
    "Paris is the capital of France.",
    "Berlin is the capital of Germany.",
    "",
    "東京は日本の首都です。 🙂👍🏽 first line\nsecond line\r\n\n  indented",
    "<|im_end|> looks special but is user text",
    "word " * 50,
]


def card_prompt(query: str, doc: str, instruction: str = CARD_INSTRUCTION) -> str:
    """``buildPrompt`` of the model card's Transformers.js code."""
    return (
        f"<|im_start|>system\n{CARD_SYSTEM}<|im_end|>\n"
        + f"<|im_start|>user\n<Instruct>: {instruction}\n\n<Query>: {query}\n\n<Document>: {doc}<|im_end|>\n"
        + "<|im_start|>assistant\n<think>\n\n</think>\n"
    )


def card_ids(official, query, doc, instruction=CARD_INSTRUCTION) -> list[int]:
    """The whole card prompt tokenized at once, as the card's ``tokenizer(prompt)`` call does."""
    return official.tokenizer(card_prompt(query, doc, instruction))["input_ids"]


@torch.no_grad()
def card_gaps(official, query, docs) -> list[float]:
    """yes − no at the last position of each whole card prompt, one at a time (PyTorch)."""
    gaps = []
    for doc in docs:
        logits = official.model(input_ids=torch.tensor([card_ids(official, query, doc)])).logits[0, -1].double()
        gaps.append(float(logits[official.yes] - logits[official.no]))
    return gaps


@pytest.fixture(scope="module")
def card_tokenizer(tiny_model_dir) -> PromptTokenizer:
    return PromptTokenizer.from_file(tiny_model_dir / "tokenizer.json", template="card")


def ours(tokenizer, query, docs, instruction=None, max_length=8192):
    contents = [tokenizer.template.format_content(query, d, instruction) for d in docs]
    return tokenizer.encode_contents(contents, max_length)


def test_card_ids_equal_the_cards_whole_prompt(card_tokenizer, official):
    assert ours(card_tokenizer, QUERY, DOCS) == [card_ids(official, QUERY, d) for d in DOCS]
    instruction = "Given a legal question, find the statute that answers it"
    assert ours(card_tokenizer, QUERY, DOCS, instruction) == [card_ids(official, QUERY, d, instruction) for d in DOCS]


def test_official_and_card_differ_only_where_the_card_says(card_tokenizer, tiny_model_dir, official):
    official_tok = PromptTokenizer.from_file(tiny_model_dir / "tokenizer.json")
    assert official_tok.prefix_ids == card_tokenizer.prefix_ids
    assert card_tokenizer.suffix_ids != official_tok.suffix_ids
    assert official.tokenizer.decode(card_tokenizer.suffix_ids).endswith("</think>\n")
    assert ours(official_tok, QUERY, DOCS[:1]) != ours(card_tokenizer, QUERY, DOCS[:1])


@pytest.mark.parametrize("fast", [True, False], ids=["score-graph+prefix-reuse", "plain"])
def test_card_scores_equal_pytorch_on_the_cards_prompt(tiny_model_dir, official, fast):
    reranker = Reranker.from_pretrained(
        tiny_model_dir, dtype="fp32", threads=2, template="card", score_graph=fast, prefix_reuse=fast, batch_size=4
    )
    assert reranker.template is CARD
    got = reranker.score(QUERY, DOCS, raw=True)
    expected = card_gaps(official, QUERY, DOCS)
    assert max(abs(a - b) for a, b in zip(got, expected, strict=True)) < 1e-5
    # ... and they are not the official template's numbers
    official_gaps = official.gaps(QUERY, DOCS)
    assert max(abs(a - b) for a, b in zip(got, official_gaps, strict=True)) > 1e-3


@pytest.mark.parametrize("max_length", [80, 97])
def test_card_truncation_keeps_the_suffix(card_tokenizer, max_length):
    got = ours(card_tokenizer, QUERY, DOCS, max_length=max_length)
    suffix = card_tokenizer.suffix_ids
    for ids in got:
        assert len(ids) <= max_length
        assert ids[-len(suffix) :] == suffix
        assert ids[: len(card_tokenizer.prefix_ids)] == card_tokenizer.prefix_ids
    assert max(len(ids) for ids in got) == max_length  # the long document was cut


def test_card_chunking_scores_each_window_as_its_own_document(tiny_model_dir):
    reranker = Reranker.from_pretrained(tiny_model_dir, dtype="fp32", threads=2, template="card")
    long_doc = " ".join(f"sentence {i} about the capital of France." for i in range(40))
    request = reranker.prepare(QUERY, [long_doc], chunking="max", chunk_tokens=32, chunk_overlap=8)
    assert request.window_counts[0] > 2
    windows = [long_doc[c.char_start : c.char_end] for c in request.chunks]
    [result] = reranker.rerank(QUERY, [long_doc], chunking="max", chunk_tokens=32, chunk_overlap=8)
    alone = reranker.score(QUERY, windows)
    assert result.score == pytest.approx(max(alone), abs=1e-6)
    best = result.best_chunk
    assert alone[best.index] == pytest.approx(max(alone), abs=1e-6)


text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=40)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(query=text, docs=st.lists(text, min_size=2, max_size=4), instruction=st.none() | text)
def test_card_prefix_split_never_changes_token_ids(tiny_model_dir, official, query, docs, instruction):
    reranker = _card_reranker(tiny_model_dir)
    request = reranker.prepare(query, docs, instruction=instruction)
    whole = [card_ids(official, query, d, CARD_INSTRUCTION if instruction is None else instruction) for d in docs]
    n = request.shared_prefix
    tokenizer = reranker.tokenizer
    head = CARD.content_head(query, instruction)
    shared = tokenizer.prefix_ids + tokenizer.tokenizer.encode(head, add_special_tokens=False).ids
    assert n == len(shared)
    for seq, reuses, ref in zip(request.sequences, request.reuses_prefix, whole, strict=True):
        assert list(seq) == ref
        assert reuses == (ref[:n] == shared and len(ref) > n)


_CARD_RERANKERS: dict = {}


def _card_reranker(model_dir) -> Reranker:
    if model_dir not in _CARD_RERANKERS:
        _CARD_RERANKERS[model_dir] = Reranker.from_pretrained(model_dir, dtype="fp32", threads=1, template="card")
    return _CARD_RERANKERS[model_dir]


def test_template_names_and_errors():
    assert get_template(None) is OFFICIAL and get_template("card") is CARD and get_template(CARD) is CARD
    with pytest.raises(InputError, match="unknown prompt template 'chat'.*official, card"):
        get_template("chat")
    with pytest.raises(InputError, match="once each"):
        PromptTemplate("bad", "p", "<Query>: {query}", "s")
    with pytest.raises(InputError, match=r"\{document\} last \(it has: document, instruction, query\)"):
        PromptTemplate("bad", "p", "{document} {instruction} {query}", "s")
    own = PromptTemplate("mine", OFFICIAL.prefix, "Q: {query} I: {instruction} D: {document}", OFFICIAL.suffix)
    assert own.content_head("q", "i") == "Q: q I: i D:"
    assert own.format_content("q", "d", "i") == "Q: q I: i D: d"
    assert CARD.format_prompt("q", "d") == card_prompt("q", "d")


def test_cli_template_card(tiny_model_dir, official, capsys):
    from qwen3_rerank.cli import main

    code = main(
        [
            "rerank",
            "--model",
            str(tiny_model_dir),
            "--dtype",
            "fp32",
            "--template",
            "card",
            "--query",
            QUERY,
            "--json",
            "--no-progress",
            *DOCS[:3],
        ]
    )
    assert code == 0
    results = json.loads(capsys.readouterr().out)
    expected = torch.sigmoid(torch.tensor(card_gaps(official, QUERY, DOCS[:3]), dtype=torch.float64)).tolist()
    for row in results:
        assert row["score"] == pytest.approx(expected[row["index"]], abs=1e-6)
    assert main(["rerank", "--model", str(tiny_model_dir), "--template", "chat", "--query", "q", "d"]) == 2
    assert "invalid choice: 'chat'" in capsys.readouterr().err


def test_serve_template_option():
    from qwen3_rerank.cli import UsageError, build_parser
    from qwen3_rerank.cli.serve import resolve

    args = build_parser().parse_args(["serve", "--template", "card"])
    assert resolve(args)[1][0].options["template"] == "card"
    args = build_parser().parse_args(["serve"])
    assert resolve(args, environ={"QWEN3_RERANK_TEMPLATE": "card"})[1][0].options["template"] == "card"
    assert resolve(args, environ={})[1][0].options["template"] == "official"
    with pytest.raises(UsageError, match="unknown prompt template 'chat'"):
        resolve(args, environ={"QWEN3_RERANK_TEMPLATE": "chat"})
