"""End-to-end tests: the example project's silos as real processes on loopback (``example_project.cluster``)."""
