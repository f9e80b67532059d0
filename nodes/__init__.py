"""The national node: a member's or partner's store, outbox relay, inbox and commands."""
