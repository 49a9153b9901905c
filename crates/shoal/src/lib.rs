//! The shoal binaries live in `src/bin`; this library is empty and exists so the lab tests
//! in `tests/` can name both binaries (`CARGO_BIN_EXE_shoal`, `CARGO_BIN_EXE_shoald`).
#![forbid(unsafe_code)]
