"""chatlane's platform-free core: keys, config, store, reservation, lanes, the turn pipeline."""
