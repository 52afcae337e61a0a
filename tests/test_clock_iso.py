import math

from chalicelib.clock import epoch_of, iso


def test_iso_never_runs_a_second_ahead():
    just_before = math.nextafter(1700000001.0, 0)
    assert iso(just_before) == "2023-11-14T22:13:20.999Z"
    assert iso(1700000001.0) == "2023-11-14T22:13:21.000Z"
    assert iso(just_before) < iso(1700000001.0)


def test_iso_round_trips_whole_milliseconds():
    for epoch in (0.0, 1700000000.123, 1764633600.5):
        assert abs(epoch_of(iso(epoch)) - epoch) < 0.001
