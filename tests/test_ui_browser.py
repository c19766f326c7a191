"""The page at ``GET /`` in a real headless Chromium against a live server on the tiny model (issue 13,
item 6): what the page shows is what ``/v2/rerank`` answers.

The browser is the system's Chromium driven through its own chromedriver (Debian: ``apt-get install
chromium chromium-driver``); where neither can be found or started, every test here is skipped
with the reason. Each answer the page shows is checked against the API called directly with the
same body: the same order, the same scores (exactly in the cell's title, to the 4 shown decimals in
its text), the same documents, and with chunking the best chunk's characters by the API's offsets.

A script injected before the page's own (DevTools ``Page.addScriptToEvaluateOnNewDocument``, which
the page's CSP does not govern) records each request the page sends and can stand in for the
server's answer where a live one is hard to provoke: a list of several models, a 429, a 503.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from typing import Any

import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
webdriver = pytest.importorskip("selenium.webdriver")

from live_server import serving_in_thread
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
WAIT_S = 60

QUERY = "what do cats eat"
INSTRUCTION = "Judge whether the document says what a pet eats"
DOCS = [
    "Cats are carnivores and eat mostly meat.",
    "The stock market closed higher today.",
    'Kittens need milk, <b>then</b> wet food & "treats".',
    "Paris is the capital of France.",
    "Dry cat food contains protein and fat.",
]
#: long enough for several chunks of 6 tokens; an emoji (two UTF-16 units, one code point) in each
#: sentence, so a highlight placed by UTF-16 units instead of the API's code points would be off
LONG_DOCS = [
    "🐟 Fish is a treat. 🐈 Cats hunt mice at night. 🥛 Milk upsets many adult cats. 🍗 Cooked chicken is fine.",
    "📈 Shares rose. 🏦 Banks lent more. 💶 The euro fell. 🐈 A cat walked across the trading floor today.",
    "🗼 Paris has a tower. 🥐 Bakeries open early. 🐈 Street cats eat what the bakers leave out for them.",
]

#: records every request the page sends; stands in for GET v1/models or POST v2/rerank when told to
RECORDER = """
window.__sent = [];
const realFetch = window.fetch.bind(window);
const stubs = %s;
window.fetch = function (url, init) {
  const path = new URL(String(url), location.href).pathname;
  window.__sent.push({path: path, method: (init && init.method) || "GET",
                      headers: (init && init.headers) || {}, body: (init && init.body) || null});
  if (stubs[path]) {
    const s = stubs[path];
    return Promise.resolve(new Response(s.body, {status: s.status, headers: s.headers}));
  }
  return realFetch(url, init);
};
"""


def _find_browser() -> tuple[str, str] | str:
    """(browser, chromedriver) paths, or why there are none."""
    browser = next((path for name in BROWSERS if (path := shutil.which(name))), None)
    driver = shutil.which("chromedriver")
    if browser is None:
        return f"no Chromium found (looked for {', '.join(BROWSERS)} on PATH; apt-get install chromium)"
    if driver is None:
        return "no chromedriver on PATH (apt-get install chromium-driver)"
    return browser, driver


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    found = _find_browser()
    if isinstance(found, str):
        pytest.skip(found)
    binary, driver_path = found
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(argument)
    options.add_argument("--window-size=1200,900")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    try:
        driver = webdriver.Chrome(service=webdriver.ChromeService(executable_path=driver_path), options=options)
    except WebDriverException as exc:
        why = (exc.msg or str(exc)).strip().splitlines() or [repr(exc)]
        pytest.skip(f"Chromium ({binary}, {driver_path}) could not be started: {why[0]}")
    driver.set_script_timeout(WAIT_S)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="module")
def live(reranker) -> Iterator[str]:
    with serving_in_thread(reranker) as url:
        yield url


@pytest.fixture(scope="module")
def live_with_key(reranker) -> Iterator[str]:
    with serving_in_thread(reranker, api_keys=("browser-key",)) as url:
        yield url


def until(driver: Any, condition: Any) -> Any:
    """Wait for ``condition(driver)`` to be true, looking every 50 ms (Selenium's default: 500 ms)."""
    return WebDriverWait(driver, WAIT_S, poll_frequency=0.05).until(condition)


def open_page(driver: Any, url: str, stubs: dict[str, dict[str, Any]] | None = None) -> None:
    """Load the page with the request recorder (and any stand-in answers) in place before its script."""
    added = driver.execute_cdp_cmd(
        "Page.addScriptToEvaluateOnNewDocument", {"source": RECORDER % json.dumps(stubs or {})}
    )
    try:
        driver.get(url + "/")
    finally:
        driver.execute_cdp_cmd("Page.removeScriptToEvaluateOnNewDocument", {"identifier": added["identifier"]})
    # the list of models asked for and answered (or refused): the page is as it will stay
    until(driver, lambda d: d.find_element(By.ID, "model").get_attribute("data-loaded"))


def fill(driver: Any, query: str, documents: list[str], instruction: str = "") -> None:
    for field, text in (("query", query), ("instruction", instruction), ("documents", "\n".join(documents))):
        element = driver.find_element(By.ID, field)
        element.clear()
        if text:
            element.send_keys(text)


def submit(driver: Any) -> None:
    """Click Rerank and wait until the page has handled the answer (the button is enabled again)."""
    count = "return window.__sent.filter((s) => s.method === 'POST').length"
    before = driver.execute_script(count)
    driver.find_element(By.ID, "submit").click()
    until(
        driver,
        lambda d: (
            d.execute_script(count) > before
            and d.find_element(By.ID, "submit").is_enabled()
            and d.find_element(By.ID, "status").text != ""
            or d.find_element(By.ID, "error").is_displayed()
        ),
    )


def shown_rows(driver: Any) -> list[dict[str, Any]]:
    """The table as the page shows it, read from the DOM."""
    rows: list[dict[str, Any]] = driver.execute_script(
        """
        return Array.from(document.querySelectorAll('#results-body tr')).map((tr) => {
          const doc = tr.querySelector('td.doc');
          const note = doc.querySelector('.chunk-note');
          const mark = doc.querySelector('mark');
          return {
            rank: tr.querySelector('td.rank').textContent,
            score_text: tr.querySelector('.score-value').textContent,
            score_title: tr.querySelector('.score-value').title,
            bar: tr.querySelector('.fill').style.width,
            index: tr.querySelector('td.index').textContent,
            text: doc.textContent.slice(0, doc.textContent.length - (note ? note.textContent.length : 0)),
            mark: mark ? mark.textContent : null,
            note: note ? note.textContent : null,
          };
        });
        """
    )
    return rows


def shown_error(driver: Any) -> str | None:
    element = driver.find_element(By.ID, "error")
    return None if not element.is_displayed() else element.text


def sent_bodies(driver: Any, path: str = "/v2/rerank") -> list[dict[str, Any]]:
    sent = driver.execute_script("return window.__sent")
    return [
        {"headers": s["headers"], "body": json.loads(s["body"])}
        for s in sent
        if s["path"] == path and s["method"] == "POST"
    ]


def api(url: str, body: dict[str, Any], key: str | None = None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.post(url + "/v2/rerank", json=body, headers=headers, timeout=60)


def assert_rows_match(rows: list[dict[str, Any]], answer: dict[str, Any], documents: list[str]) -> None:
    results = answer["results"]
    assert [int(r["index"]) for r in rows] == [r["index"] for r in results]
    assert [r["rank"] for r in rows] == [str(i + 1) for i in range(len(results))]
    for row, result in zip(rows, results, strict=True):
        score = result["relevance_score"]
        assert float(row["score_title"]) == score  # the full value, exactly
        assert abs(float(row["score_text"]) - score) <= 0.5e-4 + 1e-12 and len(row["score_text"].split(".")[1]) == 4
        assert float(row["bar"].rstrip("%")) == pytest.approx(100 * score, abs=0.006)
        assert row["text"] == documents[result["index"]]


def test_a_ranking_in_the_page_is_the_apis(browser, live):
    open_page(browser, live)
    assert not browser.find_element(By.ID, "model-row").is_displayed()  # one model: no picker
    assert not browser.find_element(By.ID, "key-row").is_displayed()  # no key on this server
    fill(browser, QUERY, DOCS[:2] + ["", "   "] + DOCS[2:], INSTRUCTION)  # blank lines are left out
    submit(browser)
    assert shown_error(browser) is None

    sent = sent_bodies(browser)
    assert sent[-1]["body"] == {"query": QUERY, "documents": DOCS, "instruction": INSTRUCTION}
    assert "Authorization" not in sent[-1]["headers"]
    answer = api(live, {"query": QUERY, "documents": DOCS, "instruction": INSTRUCTION})
    assert answer.status_code == 200, answer.text
    rows = shown_rows(browser)
    assert_rows_match(rows, answer.json(), DOCS)
    assert all(r["mark"] is None and r["note"] is None for r in rows)

    # The page's CSS and script ran under its CSP, and nothing was refused.
    assert "system-ui" in browser.execute_script("return getComputedStyle(document.body).fontFamily")
    assert not [e for e in browser.get_log("browser") if "Content Security Policy" in e["message"]]


def test_a_server_error_is_shown_as_its_message(browser, live):
    open_page(browser, live)
    fill(browser, QUERY, ["", "  "])  # no documents at all
    submit(browser)
    answer = api(live, {"query": QUERY, "documents": []})
    assert answer.status_code == 422
    assert shown_error(browser) == f"Error 422: {answer.json()['error']['message']}"
    assert not browser.find_element(By.ID, "results").is_displayed()


@pytest.mark.parametrize(
    ("status", "body", "headers", "expected"),
    [
        (
            429,
            '{"error": {"type": "overloaded", "message": "too many requests in progress"}}',
            {"Content-Type": "application/json", "Retry-After": "1"},
            "Error 429: too many requests in progress (retry after 1 s)",
        ),
        (
            503,
            '{"error": {"type": "unavailable", "message": "the model is not ready"}}',
            {"Content-Type": "application/json"},
            "Error 503: the model is not ready",
        ),
        # uvicorn's own answer past --limit-concurrency is plain text
        (503, "Service Unavailable", {"Content-Type": "text/plain"}, "Error 503: Service Unavailable"),
    ],
    ids=["429", "503-json", "503-text"],
)
def test_overload_answers_are_shown(browser, live, status, body, headers, expected):
    open_page(browser, live, {"/v2/rerank": {"status": status, "body": body, "headers": headers}})
    fill(browser, QUERY, DOCS)
    submit(browser)
    assert shown_error(browser) == expected


def test_the_best_chunk_is_highlighted_where_the_api_says(browser, live):
    open_page(browser, live)
    fill(browser, QUERY, LONG_DOCS)
    browser.find_element(By.ID, "chunking").click()
    for field, value in (("chunk-tokens", "6"), ("chunk-overlap", "2")):
        element = browser.find_element(By.ID, field)
        element.clear()
        element.send_keys(value)
    submit(browser)
    assert shown_error(browser) is None

    body = {"query": QUERY, "documents": LONG_DOCS, "chunking": "max", "chunk_tokens": 6, "chunk_overlap": 2}
    assert sent_bodies(browser)[-1]["body"] == body
    answer = api(live, body).json()
    rows = shown_rows(browser)
    assert_rows_match(rows, answer, LONG_DOCS)
    partial = 0
    for row, result in zip(rows, answer["results"], strict=True):
        chunk, text = result["best_chunk"], LONG_DOCS[result["index"]]
        if chunk["char_start"] > 0 or chunk["char_end"] < len(text):  # a part: marked (edge spaces left out)
            partial += 1
            assert row["mark"] == text[chunk["char_start"] : chunk["char_end"]].strip()
            assert row["note"] == f"best chunk #{chunk['index']}: tokens {chunk['token_start']}–{chunk['token_end']}"
        else:  # the whole document: nothing to point at
            assert row["mark"] is None and row["note"] is None
    assert partial >= 1, "no document's best chunk was a part of it: the highlight went untested"


def test_the_model_picker_appears_with_several_models_and_sends_only_a_picked_model(browser, live):
    served = httpx.get(live + "/v1/models", timeout=10).json()["data"][0]["id"]
    models = {"object": "list", "data": [{"id": served, "object": "model", "created": 0, "owned_by": "x"}]}
    models["data"].append({"id": "another-model", "object": "model", "created": 0, "owned_by": "x"})
    stub = {"status": 200, "body": json.dumps(models), "headers": {"Content-Type": "application/json"}}
    open_page(browser, live, {"/v1/models": stub})
    until(browser, lambda d: d.find_element(By.ID, "model-row").is_displayed())
    options = browser.execute_script("return Array.from(document.getElementById('model').options, o => o.value)")
    assert options == ["", served, "another-model"]

    fill(browser, QUERY, DOCS[:2])
    submit(browser)
    assert "model" not in sent_bodies(browser)[-1]["body"]  # not picked: the server's default

    browser.find_element(By.CSS_SELECTOR, f"#model option[value='{served}']").click()
    submit(browser)
    assert sent_bodies(browser)[-1]["body"]["model"] == served
    assert shown_error(browser) is None
    assert_rows_match(shown_rows(browser), api(live, {"query": QUERY, "documents": DOCS[:2]}).json(), DOCS[:2])


def test_with_an_api_key_the_page_asks_for_it_and_sends_it_as_a_bearer_token(browser, live_with_key):
    open_page(browser, live_with_key)
    until(browser, lambda d: d.find_element(By.ID, "key-row").is_displayed())
    key_field = browser.find_element(By.ID, "api-key")
    assert key_field.get_attribute("type") == "password"

    fill(browser, QUERY, DOCS)
    submit(browser)  # no key yet
    refused = api(live_with_key, {"query": QUERY, "documents": DOCS})
    assert refused.status_code == 401
    assert shown_error(browser) == f"Error 401: {refused.json()['error']['message']}"

    key_field.send_keys("wrong-key")
    submit(browser)
    assert shown_error(browser) == f"Error 401: {refused.json()['error']['message']}"

    key_field.clear()
    key_field.send_keys("browser-key")
    submit(browser)
    assert shown_error(browser) is None
    assert sent_bodies(browser)[-1]["headers"]["Authorization"] == "Bearer browser-key"
    answer = api(live_with_key, {"query": QUERY, "documents": DOCS}, key="browser-key")
    assert_rows_match(shown_rows(browser), answer.json(), DOCS)
    # Kept for this tab only: sessionStorage, never localStorage or a cookie.
    stored = browser.execute_script(
        "return [Object.values(sessionStorage), Object.values(localStorage), document.cookie]"
    )
    assert stored == [["browser-key"], [], ""]

    # A reload in the same tab remembers the key and uses it without asking again.
    open_page(browser, live_with_key)
    fill(browser, QUERY, DOCS)
    submit(browser)
    assert shown_error(browser) is None
    assert sent_bodies(browser)[-1]["headers"]["Authorization"] == "Bearer browser-key"
    browser.execute_script("sessionStorage.clear()")
