"""The outside contract: the Voice-Call compatible HTTP API, admin API, storage, webhooks,
CDRs, billing and metrics. It composes the node (switch + media) in ``control_api.daemon``."""
