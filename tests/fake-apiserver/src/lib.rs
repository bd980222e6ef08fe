//! A fake Kubernetes API server for tests (being built).
