"""The engine's scheduler (engine/scheduler.py) on the tiny model: parallel sequences,
cancellation, prefix reuse over the KV ledger (kv.py), the encoding cache, stop strings.

Everything goes through the real llama.cpp context; what was fed to it is counted by the
engine (``AudioModel.stats``), so reuse is checked by counts, never by timing.
"""

from __future__ import annotations

import contextlib
import random
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from qaudio_local.engine.batch.kv import CellLedger
from qaudio_local.engine.batch.sampling import StopText
from qaudio_local.engine.model import AudioModel
from qaudio_local.engine.options import ModelOptions, SamplingOptions
from qaudio_local.engine.prompt import Message, user
from tests.support.audio import tone

Pair = tuple[Path, Path]
GREEDY = SamplingOptions(max_tokens=12, stop_at_end_of_turn=False)


def _requests(n: int) -> list[tuple[str, list[np.ndarray]]]:
    """n different requests: their own question and clip (some without audio)."""
    out = []
    for i in range(n):
        clip = [tone(0.6 + 0.2 * i, 180.0 + 60 * i)] if i % 3 != 2 else []
        out.append((f"Question {i}: what is this?", clip))
    return out


def _in_threads(fn, args_list: list, model: AudioModel | None = None) -> list:
    """Run fn(*args) for each args in its own thread, all released at once.

    With ``model``, its engine is held until every request is queued, so that all of
    them start decoding in the same step (no reliance on thread timing).
    """
    barrier = threading.Barrier(len(args_list))
    results: list = [None] * len(args_list)
    errors: list = []

    def work(i: int) -> None:
        try:
            barrier.wait()
            results[i] = fn(*args_list[i])
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(args_list))]
    with model._scheduler.held() if model is not None else contextlib.nullcontext():
        for t in threads:
            t.start()
        deadline = time.monotonic() + 60
        while model is not None and model._scheduler.queued < len(threads):
            assert time.monotonic() < deadline, "requests were not queued"
            time.sleep(0.005)
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    assert not any(t.is_alive() for t in threads), "a generation hung"
    return results


@pytest.fixture(scope="module")
def solo(tiny_gguf: Pair) -> dict[int, tuple[int, ...]]:
    """Each request run alone, one after another, cold, on a one-sequence model."""
    opts = ModelOptions(n_ctx=2048, n_threads=2, prefix_cache=0, encoder_cache_mb=0)
    tokens = {}
    with AudioModel(*tiny_gguf, opts) as model:
        for i, (q, clip) in enumerate(_requests(8)):
            model.clear_cache()
            tokens[i] = model.generate(q, clip, sampling=GREEDY).tokens
    return tokens


@pytest.fixture(scope="module")
def parallel8(tiny_gguf: Pair):
    with AudioModel(*tiny_gguf, ModelOptions(n_ctx=4096, n_threads=2, n_parallel=8)) as model:
        yield model


@pytest.mark.parametrize("n", [1, 2, 4, 8])
def test_concurrent_generations_equal_each_alone(parallel8: AudioModel, solo: dict, n: int) -> None:
    reqs = _requests(8)[:n]
    parallel8.clear_cache()
    before = parallel8.stats
    results = _in_threads(lambda q, c: parallel8.generate(q, c, sampling=GREEDY), reqs, parallel8)
    for i, res in enumerate(results):
        assert res.tokens == solo[i], f"request {i} of {n} differs from its solo run"
    after = parallel8.stats
    generated = sum(len(r.tokens) for r in results)
    assert after.tokens_fed - before.tokens_fed >= generated - n  # every token but the last
    if n > 1:  # the sequences really shared batches: fewer decode calls than tokens
        assert after.decode_calls - before.decode_calls < generated
        assert after.max_batch_sequences >= n


def test_a_cancelled_request_leaves_the_others_unchanged(parallel8: AudioModel, solo: dict) -> None:
    reqs = _requests(3)
    long = SamplingOptions(max_tokens=200, stop_at_end_of_turn=False)

    def run(i: int) -> tuple:
        q, clip = reqs[i]
        if i == 1:  # break out after 3 tokens: the sequence stops
            gen = parallel8.stream(q, clip, sampling=long)
            got = []
            for chunk in gen:
                got.append(chunk.token)
                if len(got) == 3:
                    break
            return tuple(got)
        return parallel8.generate(q, clip, sampling=GREEDY).tokens

    parallel8.clear_cache()
    out = _in_threads(run, [(0,), (1,), (2,)])
    assert out[0] == solo[0] and out[2] == solo[2]
    assert out[1] == solo[1][:3]


def test_cancel_from_another_thread(parallel8: AudioModel) -> None:
    gen = parallel8.stream("Count to a thousand.", sampling=SamplingOptions(max_tokens=5000))
    seen = []
    for chunk in gen:
        seen.append(chunk)
        if len(seen) == 2:
            threading.Thread(target=gen.cancel).start()
    assert gen.result is not None and gen.result.finish_reason == "cancelled"
    assert 2 <= gen.result.usage.completion_tokens < 200


@pytest.fixture(scope="module")
def exact(tiny_gguf: Pair):
    """f32 KV cache and no flash attention: what exactness checks need."""
    opts = ModelOptions(n_ctx=2048, n_threads=2, kv_type="f32", n_parallel=2)
    with AudioModel(*tiny_gguf, opts) as model:
        yield model


def test_prefix_reuse_equals_a_cold_run(exact: AudioModel) -> None:
    clip = tone(2.0, 250)
    exact.clear_cache()
    cold_logits = exact.prompt_logits("What is it?", [clip])
    exact.clear_cache()
    cold = exact.generate("What is it?", [clip], sampling=GREEDY)
    assert cold.usage.cached_tokens == 0
    # the same clip, another question: everything up to the question is reused
    warm_other = exact.generate("Describe it.", [clip], sampling=GREEDY)
    assert warm_other.usage.cached_tokens >= warm_other.usage.audio_tokens
    warm_logits = exact.prompt_logits("What is it?", [clip])
    np.testing.assert_allclose(warm_logits, cold_logits, atol=1e-4, rtol=0)
    warm = exact.generate("What is it?", [clip], sampling=GREEDY)
    assert warm.tokens == cold.tokens
    assert warm.usage.cached_tokens == warm.usage.prompt_tokens - 1  # all but the last


def test_the_second_turn_feeds_only_what_is_new(exact: AudioModel) -> None:
    clip = tone(1.5, 300)
    exact.clear_cache()
    turn1 = [user(clip, "What is this sound?")]
    first = exact.generate(messages=turn1, sampling=GREEDY)
    calls, stats = exact.encoder_calls, exact.stats
    turn2 = [*turn1, Message("assistant", (first.text,)), user("And how long is it?")]
    second = exact.generate(messages=turn2, sampling=GREEDY)
    fed = exact.stats
    assert exact.encoder_calls == calls  # the clip was not encoded again
    assert fed.embeddings_fed == stats.embeddings_fed  # nor fed again
    u = second.usage
    assert u.cached_tokens >= first.usage.prompt_tokens  # all of turn 1's prompt, at least
    new_prompt = u.prompt_tokens - u.cached_tokens
    assert fed.tokens_fed - stats.tokens_fed == new_prompt + len(second.tokens) - 1
    exact.clear_cache()
    cold = exact.generate(messages=turn2, sampling=GREEDY)
    assert cold.tokens == second.tokens and cold.usage.cached_tokens == 0


def test_a_cold_request_starts_alone_from_an_empty_cache(tiny_gguf: Pair) -> None:
    """cold=True: nothing reused, no batch shared: the tokens of a fresh model's first run."""
    clip = tone(1.2, 330)
    opts = ModelOptions(n_ctx=2048, n_threads=2, kv_type="f32", n_parallel=2)
    with AudioModel(*tiny_gguf, opts) as model:
        first = model.generate("What is it?", [clip], sampling=GREEDY)
        with model._scheduler.held():  # both queued before either starts
            long = model.stream("Count.", sampling=SamplingOptions(max_tokens=150)).start()
            gen = model.stream("What is it?", [clip], sampling=GREEDY, cold=True).start()
        cold = gen.wait()
        assert long.wait().usage.completion_tokens > 0
        assert cold.usage.cached_tokens == 0 and cold.tokens == first.tokens
        assert model.stats.max_batch_sequences == 1  # it waited for the long answer to end
        warm = model.generate("What is it?", [clip], sampling=GREEDY)
        assert warm.usage.cached_tokens > 0  # an ordinary request still reuses


def test_the_same_clip_is_encoded_once(tiny_gguf: Pair) -> None:
    with AudioModel(*tiny_gguf, ModelOptions(n_ctx=2048, n_threads=2, prefix_cache=0)) as model:
        clip = tone(3.0, 400)
        model.generate("One?", [clip], sampling=SamplingOptions(max_tokens=2))
        calls = model.encoder_calls
        model.generate("Two?", [tone(1.0), clip], sampling=SamplingOptions(max_tokens=2))
        assert model.encoder_calls == calls + 1  # only the new clip
    opts = ModelOptions(n_ctx=2048, n_threads=2, encoder_cache_mb=0)
    with AudioModel(*tiny_gguf, opts) as model:
        model.generate("One?", [clip], sampling=SamplingOptions(max_tokens=2))
        model.clear_cache()
        model.generate("One?", [clip], sampling=SamplingOptions(max_tokens=2))
        assert model.encoder_calls == 2  # the cache is off


def test_eviction_in_a_small_context_corrupts_nothing(tiny_gguf: Pair, solo: dict) -> None:
    """512 cells for 2 running sequences and 4 cached ones: prefixes must be dropped."""
    reqs = _requests(8)
    opts = ModelOptions(n_ctx=512, n_threads=2, n_parallel=2, prefix_cache=4)
    with AudioModel(*tiny_gguf, opts) as model:
        order = [0, 1, 3, 4, 0, 6, 7, 1, 3, 0] * 2
        for i in order:
            res = model.generate(*reqs[i], sampling=GREEDY)
            assert res.tokens == solo[i], f"request {i} after eviction"
            st = model.stats
            assert st.cells_used <= st.n_ctx
        assert model.stats.evictions > 0  # the context really was too small to keep all
        pairs = [(reqs[i][0], reqs[i][1]) for i in (4, 6, 0, 7)]
        out = _in_threads(lambda q, c: model.generate(q, c, sampling=GREEDY).tokens, pairs, model)
        assert out == [solo[4], solo[6], solo[0], solo[7]]


def test_a_full_context_ends_the_newest_answer(tiny_gguf: Pair) -> None:
    opts = ModelOptions(n_ctx=256, n_threads=2, n_parallel=2, prefix_cache=0)
    long = SamplingOptions(max_tokens=400, stop_at_end_of_turn=False)
    with AudioModel(*tiny_gguf, opts) as model:
        gens = [model.stream(q, sampling=long) for q in ("Hi", "Hello")]
        for g in gens:
            g.start()  # both queued before either can fill the context alone
        out = [g.wait() for g in gens]
        assert all(r.finish_reason == "length" for r in out)
        # the context, not max_tokens, ended both; once the newest is ended its cells are
        # free, so the older answer may go on into them: each alone stays within n_ctx
        assert all(len(r.tokens) < 400 for r in out)
        assert all(r.usage.prompt_tokens + len(r.tokens) <= 256 + 1 for r in out)
        assert model.stats.cells_used <= 256


def test_stop_strings_end_the_answer(tiny_model: AudioModel) -> None:
    free = tiny_model.generate("Tell me.", sampling=SamplingOptions(max_tokens=24))
    assert len(free.text) > 4
    stop = free.text[3:5]
    cut = tiny_model.generate("Tell me.", sampling=SamplingOptions(max_tokens=24, stop=(stop,)))
    assert cut.finish_reason == "stop"
    assert cut.text == free.text[: free.text.find(stop)]
    assert stop not in cut.text


def test_stop_text_holds_back_a_possible_start() -> None:
    s = StopText(("END",))
    assert s.feed("abcE") == ("abc", False)  # "E" could start "END"
    assert s.feed("N") == ("", False)
    assert s.feed("Dxyz") == ("", True)
    s = StopText(("END", "STOP"))
    assert s.feed("xE") == ("x", False) and s.feed("Q") == ("EQ", False)
    assert s.feed("ST") == ("", False) and s.flush() == "ST"
    assert StopText(()).feed("END") == ("END", False)


def test_the_ledger_counts_shared_cells_exactly() -> None:
    """Random operations against a brute-force model of cells (sets of sequences)."""
    rng = random.Random(7)
    for _ in range(200):
        ledger = CellLedger(10_000)
        cells: dict[int, list[object]] = {}  # seq -> the cell objects at its positions
        for _ in range(30):
            op, s, t = rng.choice("atcx"), rng.randrange(5), rng.randrange(5)
            if op == "a":
                n = rng.randrange(1, 9)
                ledger.append(s, n)
                cells.setdefault(s, []).extend(object() for _ in range(n))
            elif op == "t":
                keep = rng.randrange(0, len(cells.get(s, [])) + 2)
                ledger.truncate(s, keep)
                cells[s] = cells.get(s, [])[:keep]
            elif op == "c" and s != t:
                n = rng.randrange(0, len(cells.get(s, [])) + 2)
                ledger.copy_prefix(s, t, n)
                cells[t] = cells.get(s, [])[:n]
            elif op == "x":
                ledger.clear(s)
                cells[s] = []
            live = {id(c) for seq in cells.values() for c in seq}
            assert ledger.used == len(live)
            for seq, held in cells.items():
                assert ledger.length(seq) == len(held)


@pytest.mark.slow
def test_a_thousand_mixed_requests_from_eight_threads(tiny_gguf: Pair) -> None:
    clips = [tone(0.3 + 0.4 * i, 200 + 90 * i) for i in range(5)]
    opts = ModelOptions(n_ctx=2048, n_threads=2, n_parallel=8, prefix_cache=8)
    errors: list[BaseException] = []
    rss: list[int] = []

    def rss_bytes() -> int:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * 4096

    with AudioModel(*tiny_gguf, opts) as model:

        def worker(seed: int, n: int) -> None:
            rng = random.Random(seed)
            try:
                for _ in range(n):
                    audio = rng.sample(clips, rng.randrange(0, 3))
                    kind = rng.randrange(5)
                    sampling = SamplingOptions(
                        max_tokens=rng.randrange(1, 8),
                        temperature=rng.choice([0.0, 0.8]),
                        seed=rng.randrange(100),
                        stop=("e",) if kind == 3 else (),
                    )
                    if kind == 0:
                        assert model.prompt_logits("Hi?", audio).shape == (768,)
                    elif kind == 1:  # leave early
                        for _chunk in model.stream("Go on.", audio, sampling=sampling):
                            break
                    else:
                        res = model.generate(f"Q{rng.randrange(9)}", audio, sampling=sampling)
                        assert res.finish_reason in ("stop", "length")
            except BaseException as exc:
                errors.append(exc)

        def wave(n: int, seed: int) -> None:
            threads = [threading.Thread(target=worker, args=(seed + i, n)) for i in range(8)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(timeout=300)
            assert not any(t.is_alive() for t in threads), "requests hung"

        wave(25, 0)  # 200 requests: warm up (caches fill, arenas grow)
        rss.append(rss_bytes())
        wave(100, 100)  # 800 more
        rss.append(rss_bytes())
        st = model.stats
    assert not errors, errors[:3]
    assert st.requests >= 1000 and st.cells_used <= st.n_ctx
    assert rss[1] - rss[0] < 0.1 * rss[0], f"RSS grew from {rss[0]} to {rss[1]} bytes"


def test_logprobs_are_the_models(exact: AudioModel) -> None:
    clip = tone(1.0, 440)
    exact.clear_cache()
    logits = exact.prompt_logits("Name it.", [clip]).astype(np.float64)
    exact.clear_cache()
    res = exact.generate("Name it.", [clip], sampling=SamplingOptions(max_tokens=4, logprobs=True))
    assert len(res.logprobs) == len(res.tokens) == 4 and all(lp <= 0 for lp in res.logprobs)
    log_softmax = logits - logits.max() - np.log(np.exp(logits - logits.max()).sum())
    assert res.logprobs[0] == pytest.approx(log_softmax[res.tokens[0]], abs=1e-4)
    assert res.tokens[0] == int(np.argmax(logits))  # greedy: the most likely token
    plain = exact.generate("Name it.", [clip], sampling=SamplingOptions(max_tokens=4))
    assert plain.logprobs == () and plain.tokens == res.tokens
