//! Placeholder: signed webhook delivery.
