//! The pure Portcullis policy engine (being built).
