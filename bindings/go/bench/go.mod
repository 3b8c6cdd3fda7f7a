module github.com/conveyor-dev/conveyor/bindings/go/bench

go 1.24

require (
	github.com/conveyor-dev/conveyor/bindings/go v0.0.0
	github.com/docker/go-events v0.1.0
)

require (
	github.com/sirupsen/logrus v1.10.2 // indirect
	golang.org/x/sys v0.13.0 // indirect
)

replace github.com/conveyor-dev/conveyor/bindings/go => ../
