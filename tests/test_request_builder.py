"""Request building on the tokenizer alone (no model): truncation policy, chunk windows, prefix-reuse marks."""

from __future__ import annotations

import pytest
from server_fakes import WordCutter

from qwen3_rerank import ChunkingOptions, InputError, Truncation
from qwen3_rerank.prompt import format_content
from qwen3_rerank.prompt_tokenizer import PromptTokenizer
from qwen3_rerank.request_builder import RequestBuilder

QUERY = "What is the capital of France?"
LONG = "one two three four five six seven eight nine ten"


@pytest.fixture(scope="module")
def tokenizer(tokenizer_dir) -> PromptTokenizer:
    return PromptTokenizer.from_file(tokenizer_dir / "tokenizer.json")


@pytest.fixture(scope="module")
def builder(tokenizer) -> RequestBuilder:
    return RequestBuilder(tokenizer, 8192)


def content_ids(tokenizer: PromptTokenizer, sequence: tuple[int, ...]) -> list[int]:
    return list(sequence[len(tokenizer.prefix_ids) : len(sequence) - len(tokenizer.suffix_ids)])


# -- the truncation policy ---------------------------------------------------------------------


def test_truncation_cuts_the_side_it_names():
    words = WordCutter()
    assert Truncation(max_doc_tokens=3).apply([LONG, "a b"], words) == ["one two three", "a b"]
    assert Truncation(direction="left", max_doc_tokens=3).apply([LONG], words) == ["eight nine ten"]
    assert Truncation().apply([LONG], words) == [LONG]  # no document limit: only max_length applies


def test_truncation_off_refuses_a_long_document_and_names_it():
    policy = Truncation(enabled=False, max_doc_tokens=3)
    assert policy.apply(["a b c", "d"], WordCutter()) == ["a b c", "d"]
    with pytest.raises(InputError, match="document 1 is longer than 3 tokens and truncation is off"):
        policy.apply(["a b c", LONG], WordCutter())


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"direction": "up"}, "direction"),
        ({"max_doc_tokens": 0}, "at least 1"),
        ({"max_doc_tokens": True}, "at least 1"),
    ],
)
def test_truncation_checks_its_fields(kwargs, message):
    with pytest.raises(InputError, match=message):
        Truncation(**kwargs)


def test_builder_applies_the_policy_with_the_real_tokenizer(builder, tokenizer):
    text = "cats eat fish and meat every day " * 10
    right = builder.build(QUERY, [text], truncation=Truncation(max_doc_tokens=8))
    left = builder.build(QUERY, [text], truncation=Truncation(direction="left", max_doc_tokens=8))
    whole = builder.build(QUERY, [text])
    assert len(right.sequences[0]) < len(whole.sequences[0]) and len(left.sequences[0]) < len(whole.sequences[0])
    assert right.sequences[0] == builder.build(QUERY, [tokenizer.cut_text(text, 8)]).sequences[0]
    assert left.sequences[0] == builder.build(QUERY, [tokenizer.cut_text_start(text, 8)]).sequences[0]
    with pytest.raises(InputError, match="document 0 is longer than 8 tokens"):
        builder.build(QUERY, [text], truncation=Truncation(enabled=False, max_doc_tokens=8))


def test_prompt_limit_cuts_the_content_end_or_refuses(tokenizer):
    limit = len(RequestBuilder(tokenizer, 8192).build(QUERY, ["short"]).sequences[0]) + 5
    short = RequestBuilder(tokenizer, limit)
    text = "word " * 200
    cut = short.build(QUERY, [text, "short"])
    assert cut.truncated == (True, False) and len(cut.sequences[0]) == limit
    assert cut.sequences[0][-len(tokenizer.suffix_ids) :] == tuple(tokenizer.suffix_ids)  # the suffix is kept
    with pytest.raises(InputError, match="truncation is off"):
        short.build(QUERY, [text], truncation=Truncation(enabled=False))


def test_max_length_too_small_fails_when_the_builder_is_made(tokenizer):
    with pytest.raises(InputError, match="leaves no room"):
        RequestBuilder(tokenizer, 10)


# -- input checks --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "query, documents, message",
    [
        (QUERY, "one string", "not one string"),
        (QUERY, [], "no documents"),
        (QUERY, ["ok", 3], "document 1 must be a string"),
        (None, ["ok"], "query must be a string"),
    ],
)
def test_bad_input_is_an_input_error(builder, query, documents, message):
    with pytest.raises(InputError, match=message):
        builder.build(query, documents)


# -- chunking ------------------------------------------------------------------------------------


def test_chunking_options_check_and_resolve_keywords():
    assert ChunkingOptions.from_keywords(None) is None
    assert ChunkingOptions.from_keywords("mean", 100, 10) == ChunkingOptions("mean", 100, 10)
    options = ChunkingOptions("first", 64, 8)
    assert ChunkingOptions.from_keywords(options) is options
    with pytest.raises(InputError, match="inside ChunkingOptions"):
        ChunkingOptions.from_keywords(options, chunk_tokens=100)
    for bad in (("median", 10, 1), ("max", 0, 0), ("max", 10, 10)):
        with pytest.raises(InputError):
            ChunkingOptions(*bad)


def test_chunking_expands_documents_into_windows(builder, tokenizer):
    long_doc = "The committee met on Tuesday to discuss the budget. " * 20
    request = builder.build(QUERY, ["short one", long_doc], chunking=ChunkingOptions("mean", 40, 10))
    n_long = len(tokenizer.tokenizer.encode(long_doc, add_special_tokens=False).ids)
    assert request.documents == 2 and request.window_counts is not None and request.window_counts[0] == 1
    assert request.window_counts[1] == len(range(0, n_long - 10, 30))  # stride 40 - 10 over the long document
    assert len(request) == sum(request.window_counts) == len(request.chunks) and request.aggregation == "mean"
    # each window is scored as a document of its own: its sequence is the prompt of the window's text
    for chunk, sequence in zip(request.chunks[1:], request.sequences[1:], strict=True):
        window = long_doc[chunk.char_start : chunk.char_end]
        assert sequence == builder.build(QUERY, [window]).sequences[0]


# -- prefix-reuse eligibility --------------------------------------------------------------------


def test_sequences_that_start_with_the_query_prefix_are_marked(builder, tokenizer):
    request = builder.build(QUERY, ["Paris is the capital.", "Berlin.", ""])
    head = tokenizer.tokenizer.encode(
        format_content(QUERY, "").rstrip(" "), add_special_tokens=False
    ).ids  # the query's shared part
    assert request.shared_prefix == len(tokenizer.prefix_ids) + len(head)
    assert request.reuses_prefix[:2] == (True, True)
    for seq, reuses in zip(request.sequences, request.reuses_prefix, strict=True):
        if reuses:
            assert list(seq[: request.shared_prefix]) == tokenizer.prefix_ids + head


def test_a_prompt_cut_inside_its_prefix_is_not_marked(tokenizer):
    long_query = "capital " * 40
    short = RequestBuilder(tokenizer, len(tokenizer.prefix_ids) + len(tokenizer.suffix_ids) + 20)
    request = short.build(long_query, ["Paris.", "Berlin."])
    assert request.truncated == (True, True) and request.reuses_prefix == (False, False)


def test_pairs_become_one_request_per_query_in_first_seen_order(builder):
    pairs = [("q1", "a"), ("q2", "b"), ("q1", "c")]
    requests, groups = builder.build_pairs(pairs)
    assert groups == [[0, 2], [1]]
    assert requests[0].sequences == builder.build("q1", ["a", "c"]).sequences
    assert requests[1].sequences == builder.build("q2", ["b"]).sequences
    with pytest.raises(InputError, match="pair 1 is not"):
        builder.build_pairs([("q", "a"), ("q",)])
    with pytest.raises(InputError, match="no \\(query, document\\) pairs"):
        builder.build_pairs([])
