"""The abuse suite reuses the lane fixtures: the simulator, workers on a frozen clock, the publish listener."""

from tests.lanes.conftest import ark, dynamodb_faults, frozen_clock, lanes, lanes_settings, listen

__all__ = ["ark", "dynamodb_faults", "frozen_clock", "lanes", "lanes_settings", "listen"]
