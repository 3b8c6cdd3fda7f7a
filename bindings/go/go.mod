module github.com/conveyor-dev/conveyor/bindings/go

go 1.24
