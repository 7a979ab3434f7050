"""Process managers of the embedded stack (tansu, Triton, the ClickHouse owner).

Each part is a small class that can be started and stopped on its own, so the
``modelbus up`` supervisor and the test fixtures share one implementation.
"""
