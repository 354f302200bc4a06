"""manycore's test suite (a package, so spawned workers can import ``tests.workloads``)."""
