"""Decoding ahead keeps the order of the items and the errors with their own item."""

import threading

import pytest

from face_assets.core.vision.prefetch import ahead


def test_results_come_in_the_order_of_the_items_from_another_thread() -> None:
    caller = threading.get_ident()
    seen = [
        (item, future.result()) for item, future in ahead(range(20), lambda i: (i * i, threading.get_ident()))
    ]
    assert [item for item, _ in seen] == list(range(20))
    assert [square for _, (square, _) in seen] == [i * i for i in range(20)]
    assert all(worker != caller for _, (_, worker) in seen)


def test_with_several_workers_the_order_is_still_the_items_order() -> None:
    """Early items take longest, so later ones finish first on the other thread."""
    import time

    def work(i: int) -> tuple[int, int]:
        time.sleep(0.02 if i % 4 == 0 else 0.0)
        return i, threading.get_ident()

    seen = [future.result() for _, future in ahead(range(24), work, lookahead=6, workers=3)]
    assert [i for i, _ in seen] == list(range(24))
    assert len({worker for _, worker in seen}) > 1


def test_an_error_belongs_to_its_item_and_the_rest_go_on() -> None:
    def work(i: int) -> int:
        if i == 3:
            raise ValueError(f"item {i} is bad")
        return i

    good, bad = [], []
    for item, future in ahead(range(8), work):
        try:
            good.append(future.result())
        except ValueError as error:
            bad.append((item, str(error)))
    assert good == [0, 1, 2, 4, 5, 6, 7]
    assert bad == [(3, "item 3 is bad")]


def test_stopping_early_does_not_work_through_the_rest() -> None:
    started: list[int] = []

    def work(i: int) -> int:
        started.append(i)
        return i

    for item, future in ahead(range(1000), work, lookahead=2):
        future.result()
        if item == 5:
            break
    assert len(started) <= 5 + 1 + 2 + 1


def test_the_caller_s_error_propagates() -> None:
    with pytest.raises(RuntimeError, match="stop"):
        for _item, future in ahead(range(10), lambda i: i):
            future.result()
            raise RuntimeError("stop")
