//! Consent: scopes, requests, the owner log, receipts.
