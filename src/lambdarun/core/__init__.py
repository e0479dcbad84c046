"""The state machines of one environment: the runtime channel and the extension registry (SPEC 1, 2).

Nothing here knows HTTP, processes or sandboxes: API handlers call these methods, the lifecycle awaits their
futures, and every illegal move raises `InvalidStateTransition`. This package imports nothing else of lambdarun.
"""
