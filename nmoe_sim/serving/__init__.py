"""Serving queries over the network: which experts a query goes to (routing policies), what
the querying client knows when it decides (its view of links and experts), and how queries
arrive (load). :mod:`nmoe_sim.inference` runs them in simulated time."""
