"""The Microsoft Graph transport: identity, per-mailbox limits, the draft, uploads and the exactly-once send."""
