package conveyor

// #include "conveyor.h"
import "C"

// HeaderVersion is the version of conveyor.h this package was built with.
const HeaderVersion = C.CONVEYOR_VERSION_STRING

// Version returns the version of the libconveyor linked into the program.
func Version() string { return C.GoString(C.conveyor_version()) }
