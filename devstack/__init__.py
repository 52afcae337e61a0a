"""arkflow's local stack (`make run`): moto, the Ark simulator, the REST API and the web app on one machine.

Local-only: nothing under `chalicelib/` imports this package.
"""
