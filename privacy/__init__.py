"""Personal information: retention periods, the scheduled purge, one patient's export.

`privacy.retention` is pure (time passed in); `db.retention` purges,
`privacy.export` exports, `privacy.jobs` schedules. See docs/privacy.md.
"""
