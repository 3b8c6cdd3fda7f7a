module github.com/conveyor-dev/conveyor/examples/go

go 1.24

require github.com/conveyor-dev/conveyor/bindings/go v0.0.0

replace github.com/conveyor-dev/conveyor/bindings/go => ../../bindings/go
