"""Admin tools that steer the fleet: dead letters (`dlq`)."""
