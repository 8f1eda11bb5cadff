"""Jobs, schedules, sensors and automation of the assets, and what is missing or stale."""
