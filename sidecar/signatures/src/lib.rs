//! HTTP message signatures: signing and verification, pure functions, no I/O.
