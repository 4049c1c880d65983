"""Human approvals in the sidecar: the durable store, recording the engine's news into it,
the admin listener approvers use, the webhook that tells them, and the runtime that runs
these beside the engine."""
