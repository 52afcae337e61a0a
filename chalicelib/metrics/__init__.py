"""Per-model figures of what the fleet did (docs/design.md, "Metrics"): roll-ups applied off the request path
(`rollup`), read back by the admin's routes and by the task bodies' `eta_s` and `progress` (`figures`)."""
