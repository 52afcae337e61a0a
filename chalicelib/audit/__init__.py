"""The audit trail of admin actions and quota refunds (`trail`)."""
