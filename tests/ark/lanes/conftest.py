"""The lanes' fixtures (moto, the simulator, workers on a frozen clock), for Ark's odd answers through the lanes."""

from tests.lanes.conftest import ark, frozen_clock, lanes, lanes_settings  # noqa: F401 - fixtures used here
