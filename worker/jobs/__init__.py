"""The job records and files that the API and the workers share, below the web layer.

`db` (tables, engine, migrations), `store` (every read and write of them), `storage` (the files),
`keys` (the one storage key layout), `status` (the job, item and picture states) and `housekeeping`
(purge of expired data). Nothing here imports a web framework or the scoring code.
"""
