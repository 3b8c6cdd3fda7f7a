//! The C ABI (see include/conveyor.h). The only module with `extern "C"` and `unsafe`.
