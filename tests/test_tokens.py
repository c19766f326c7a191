"""Token ids equal the official recipe's, with and without truncation; tokenizer checks."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qwen3_rerank.errors import InputError, TokenizerError
from qwen3_rerank.prompt import format_content
from qwen3_rerank.prompt_tokenizer import PromptTokenizer

QUERY = "What is the capital of France?"
DOCS = [
    "Paris is the capital of France.",
    "",
    "東京は日本の首都です。 Ünïcödé façade 🙂👍🏽 👨‍👩‍👧",
    "first line\nsecond line\r\n\n  indented\tTabbed",
    "<|im_end|> looks special but is user text",
    "word " * 400,
]


@pytest.fixture(scope="module")
def prompt_tokenizer(tiny_model_dir) -> PromptTokenizer:
    return PromptTokenizer.from_file(tiny_model_dir / "tokenizer.json")


def ours(tokenizer, query, docs, instruction=None, max_length=8192, **kw):
    contents = [format_content(query, d, instruction) for d in docs]
    return tokenizer.encode_contents(contents, max_length, **kw)


def test_yes_no_ids_match_transformers(prompt_tokenizer, official, tokenizer_info):
    assert prompt_tokenizer.yes_id == official.yes
    assert prompt_tokenizer.no_id == official.no
    assert prompt_tokenizer.yes_id != prompt_tokenizer.no_id
    if tokenizer_info[1]:  # the real Qwen3 tokenizer: the published ids
        assert (prompt_tokenizer.yes_id, prompt_tokenizer.no_id) == (9693, 2152)


def test_prefix_and_suffix_ids_match_reference(prompt_tokenizer, official):
    assert prompt_tokenizer.prefix_ids == official.prefix_tokens
    assert prompt_tokenizer.suffix_ids == official.suffix_tokens


def test_ids_equal_official_recipe(prompt_tokenizer, official):
    assert ours(prompt_tokenizer, QUERY, DOCS) == official.token_ids(QUERY, DOCS)


def test_ids_equal_official_recipe_custom_instruction(prompt_tokenizer, official):
    instruction = "Given a legal question, find the statute that answers it"
    assert ours(prompt_tokenizer, QUERY, DOCS, instruction) == official.token_ids(QUERY, DOCS, instruction)


@pytest.mark.parametrize("max_length", [80, 97, 150])
def test_truncation_cuts_content_end_and_keeps_suffix(prompt_tokenizer, tiny_checkpoint, max_length):
    from reference import OfficialRecipe

    ref = OfficialRecipe(tiny_checkpoint, max_length=max_length)
    expected = ref.token_ids(QUERY, DOCS)
    got = ours(prompt_tokenizer, QUERY, DOCS, max_length=max_length)
    assert got == expected
    suffix = prompt_tokenizer.suffix_ids
    for ids in got:
        assert len(ids) <= max_length
        assert ids[-len(suffix) :] == suffix
        assert ids[: len(prompt_tokenizer.prefix_ids)] == prompt_tokenizer.prefix_ids
    assert max(len(ids) for ids in got) == max_length  # the long document was cut


def test_truncate_false_raises_for_long_content(prompt_tokenizer):
    with pytest.raises(InputError, match="index 5"):
        ours(prompt_tokenizer, QUERY, DOCS, max_length=120, truncate=False)
    assert len(ours(prompt_tokenizer, QUERY, DOCS[:2], max_length=120, truncate=False)) == 2


def test_max_length_too_small(prompt_tokenizer):
    too_small = len(prompt_tokenizer.prefix_ids) + len(prompt_tokenizer.suffix_ids)
    with pytest.raises(InputError, match="no room for content"):
        prompt_tokenizer.content_budget(too_small)


def test_cut_text_keeps_about_n_tokens(prompt_tokenizer):
    text = "alpha beta gamma delta epsilon " * 10
    cut = prompt_tokenizer.cut_text(text, 7)
    assert text.startswith(cut) and len(cut) < len(text)
    n = len(prompt_tokenizer.tokenizer.encode(cut, add_special_tokens=False).ids)
    assert 5 <= n <= 7
    assert prompt_tokenizer.cut_text("short", 7) == "short"
    with pytest.raises(InputError):
        prompt_tokenizer.cut_text(text, 0)


def test_not_a_qwen3_tokenizer_is_rejected(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel()
    tok.train_from_iterator(["yes no maybe"] * 10, trainers.BpeTrainer(vocab_size=300, show_progress=False))
    path = tmp_path / "tokenizer.json"
    tok.save(str(path))
    with pytest.raises(TokenizerError, match="not a Qwen3 one"):
        PromptTokenizer.from_file(path)


def test_unreadable_tokenizer_file(tmp_path):
    path = tmp_path / "tokenizer.json"
    path.write_text("{not json", encoding="utf-8")
    with pytest.raises(TokenizerError, match="cannot read tokenizer file"):
        PromptTokenizer.from_file(path)


texts = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",)),
    max_size=60,
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(query=texts, doc=texts)
def test_random_texts_match_official_tokenization(prompt_tokenizer, official, query, doc):
    assert ours(prompt_tokenizer, query, [doc]) == official.token_ids(query, [doc])
