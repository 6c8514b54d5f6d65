import threading

import pytest

from live.params import EVENT_BACKLOG, Event, Param, ParamTree


def tree() -> ParamTree:
    return ParamTree(
        [Param("/a", "float", 0.5, 0.0, 1.0), Param("/b", "float", 0.5, 0.0, 1.0),
         Param("/n", "int", 3, 0, 10), Param("/on", "bool", False),
         Param("/style", "enum", "ink", choices=("ink", "neon", "sepia"))],
        [Event("/note", (("note", "int", 0, 127), ("velocity", "float", 0.0, 1.0)))],
    )


def test_values_are_coerced_and_clipped():
    t = tree()
    assert t.set("/a", 7) == 1.0 and t.get("/a") == 1.0
    assert t.set("/a", "-3") == 0.0
    assert t.set("/n", 4.6) == 5
    assert t.set("/on", 1) is True and t.set("/on", "off") is False
    assert t.set("/style", 1) == "neon" and t.set("/style", "sepia") == "sepia"
    assert t.set("/style", 99) == "sepia"  # index clipped to the last choice


def test_bad_values_and_addresses_raise_and_change_nothing():
    t = tree()
    with pytest.raises(ValueError, match="/a"):
        t.set("/a", "loud")
    with pytest.raises(ValueError, match="not one of"):
        t.set("/style", "cubism")
    with pytest.raises(KeyError):
        t.set("/nope", 1)
    with pytest.raises(ValueError):
        t.update({"/a": 0.1, "/b": "x"})
    assert t.get("/a") == 0.5 and t.get("/b") == 0.5


def test_update_is_atomic_for_readers():
    """A reader never sees half of a two-value write."""
    t = tree()
    stop, torn = threading.Event(), []

    def writer():
        i = 0
        while not stop.is_set():
            v = (i % 100) / 100
            t.update({"/a": v, "/b": v})
            i += 1

    thread = threading.Thread(target=writer)
    thread.start()
    for _ in range(50_000):
        snap = t.snapshot
        if snap["/a"] != snap["/b"]:
            torn.append(snap)
    stop.set()
    thread.join()
    assert not torn


def test_events_reach_matching_listeners_and_stay_bounded():
    t = tree()
    notes, other = t.listen("/no"), t.listen("/video")
    assert t.emit("/note", 60, 2.0) == (60, 1.0)
    assert list(notes) == [("/note", (60, 1.0))] and not other
    for i in range(EVENT_BACKLOG + 50):
        t.emit("/note", i % 128, 0.5)
    assert len(notes) == EVENT_BACKLOG
    with pytest.raises(ValueError, match="expects 2"):
        t.emit("/note", 60)


def test_describe_lists_everything_with_ranges():
    items = {p["address"]: p for p in tree().describe()}
    assert set(items) == {"/a", "/b", "/n", "/on", "/style", "/note"}
    assert items["/style"]["choices"] == ["ink", "neon", "sepia"]
    assert items["/note"]["type"] == "event" and items["/note"]["max"] == 127
