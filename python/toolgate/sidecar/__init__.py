"""The sidecar (``toolgate serve``): its options, the serving loop, and what it runs beside
the Rust data plane: policy reload, metrics, its own logs, the decision log, the counter
store's checks and human approvals (approvals/)."""
