"""Settings of the example project: ``base`` plus one module per silo (control, region_us, region_eu)."""
