//go:build !race

package conveyor

const raceEnabled = false
