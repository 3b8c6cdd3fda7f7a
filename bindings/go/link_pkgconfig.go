//go:build conveyor_pkgconfig

package conveyor

// With -tags conveyor_pkgconfig: the shared libconveyor of an installed copy
// (`make install PREFIX=...`), found through pkg-config (PKG_CONFIG_PATH). The header
// is still this module's copy of conveyor.h; the SONAME makes the dynamic loader
// refuse a library with a different ABI.

// #cgo pkg-config: conveyor
import "C"

// Linkage says how libconveyor was linked into this program.
const Linkage = "shared (pkg-config)"
