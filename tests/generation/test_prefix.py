"""The prefix store: which leading blocks of prompts are kept, which row a prompt matches, what is evicted."""

from __future__ import annotations

from sqltune.generation.prefix import PrefixStore

SCHEMA = list(range(100, 148))  # three 16-token blocks shared by every prompt


def test_a_prompt_matches_the_longest_run_of_held_blocks():
    store = PrefixStore(rows=2, block=16)
    assert store.lookup(SCHEMA + [1, 2, 3]) == (None, 0)
    row = store.insert(SCHEMA + list(range(20)), store.usable(len(SCHEMA) + 20))
    assert row is not None
    # Same schema, another question: the three shared blocks match, the row's fourth block does not.
    assert store.lookup(SCHEMA + [7] * 20) == (row, 48)
    # The row's own prompt: four blocks, but one token is always left to prefill.
    assert store.lookup(SCHEMA + list(range(16))) == (row, 48)
    assert store.lookup(SCHEMA + list(range(17))) == (row, 64)
    assert store.lookup([5] + SCHEMA) == (None, 0)


def test_usable_leaves_one_token_and_whole_blocks():
    store = PrefixStore(rows=1, block=16)
    assert [store.usable(n) for n in (0, 1, 16, 17, 33, 48, 49)] == [0, 0, 0, 16, 32, 32, 48]


def test_insert_skips_what_is_held_and_evicts_the_least_recently_used():
    store = PrefixStore(rows=2, block=16)
    a = store.insert(SCHEMA + [1] * 16, 64)
    assert store.insert(SCHEMA + [1] * 16, 48) is None  # already held
    b = store.insert([9] * 32, 32)
    assert {a, b} == {0, 1}
    store.lookup(SCHEMA + [1] * 17)  # a is used again: b is now the least recently used
    c = store.insert([8] * 32, 32)
    assert c == b
    assert store.lookup([9] * 33) == (None, 0)  # b's blocks are gone
    assert store.lookup(SCHEMA + [1] * 17) == (a, 64)


def test_pinned_rows_are_never_overwritten():
    store = PrefixStore(rows=1, block=16)
    row = store.insert(SCHEMA, 48)
    store.pin(row)
    assert store.insert([3] * 32, 32) is None
    assert store.lookup(SCHEMA + [0]) == (row, 48)
    store.unpin_all()
    assert store.insert([3] * 32, 32) == row
