"""Measurement: throughput against the physical floor (benchmark), fidelity against the game
(fidelity, drift), image metrics, and WHAM's plain reference procedure the engine is checked against."""
