//go:build !conveyor_pkgconfig

package conveyor

// The default: libconveyor from this repository's build tree (`make c-lib`, or
// `cargo build --release`), linked statically so that programs and test binaries run
// without a library search path. The shared library's SONAME (libconveyor.so.0.MINOR)
// names a file only `make install` creates, so a -lconveyor link against
// target/release would not start. The libraries after the archive are what the Rust
// standard library needs (`pkg-config --static --libs conveyor`, docs/c-api.md).

// #cgo LDFLAGS: ${SRCDIR}/../../target/release/libconveyor.a -lgcc_s -lutil -lrt -lpthread -lm -ldl -lc
import "C"

// Linkage says how libconveyor was linked into this program.
const Linkage = "static (build tree)"
