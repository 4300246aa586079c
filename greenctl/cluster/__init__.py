"""A local cluster without Docker: `greenctl up` starts the scheduler, the
estimator, N workers and Flower as background processes; `down` stops exactly
those; `ps` lists them with their health.

Every process has a record (pid file, JSON) and a log under
`<state dir>/cluster/`. A record names its process by pid AND start time, so a
pid the system reused for something else is never signalled.
"""
