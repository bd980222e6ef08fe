//! draft-cavage-http-signatures-10.
