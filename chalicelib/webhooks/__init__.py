"""Signed webhooks of task changes (docs/api.md, "Webhooks"): which changes become events (`events`), where a
webhook may go (`addresses`), one attempt (`sender`), the users' signing secrets (`secrets`), and the queue's
consumer that delivers, retries and records (`delivery`)."""
