//! Placeholder: the alert outbox.
