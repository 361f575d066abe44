"""silo_router.region.bolt: existing Bolt apps, unchanged, in a region silo."""
